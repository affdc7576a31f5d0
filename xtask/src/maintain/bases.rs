//! `cargo xtask bases`: show the digest-pinned base images, refresh the pins from a registry, or check
//! (read-only, for the scheduled workflow) whether any line's base moved since the lock was read.
//!
//! Registry reads are in process (`stack_images::registry`, the shared timeout and retry policy): per line, the
//! index its tag names, then (unless the index says its version) one platform manifest and its config blob for
//! the PHP patch version. No layer is downloaded, nothing is pulled into docker.
//!
//! End-of-life lines (`eol` in the matrix) keep their pin: upstream no longer rebuilds them, so a moved tag is
//! more likely a retag than a security fix. They are read only with `--include-eol`, or when the lock has no pin
//! for them yet (a build needs one); `--check` lists them apart.

use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{Args, Subcommand};
use stack_images::{
    bases::{base_tag, LockedBase},
    matrix::MATRIX_PATH,
    registry::RegistryClient,
    BaseLock, Digest, ImageRef, IndexSummary, Matrix, PhpLine, Repository,
};
use xshell::Shell;

use crate::{display_path, project_root, table, Exit};

#[derive(Subcommand, Debug)]
pub enum BasesCmd {
    /// Print the pinned base of every PHP line
    Show(LockArgs),
    /// Read the current index digest of every line's base tag from its registry and rewrite the lock
    /// (--check: only compare; exit 0 when nothing moved, 1 when a base changed, 2 when it could not tell)
    Refresh(RefreshArgs),
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock file (default: the matrix's, images/bases/docker-hub.lock.toml)
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// Image matrix file (default: images/matrix.toml)
    #[arg(long, value_name = "FILE")]
    matrix: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RefreshArgs {
    #[command(flatten)]
    lock: LockArgs,
    /// Repository to read the bases from, e.g. a Docker Hub mirror (default: the lock's source)
    #[arg(long, value_name = "REPOSITORY")]
    source: Option<Repository>,
    /// Print the new lock instead of writing it
    #[arg(long, conflicts_with = "check")]
    dry_run: bool,
    /// Write nothing; exit 1 with the old and new digest of every line whose base moved, 0 when none did
    #[arg(long)]
    check: bool,
    /// Also read (and refresh) the end-of-life lines, which otherwise keep their pin
    #[arg(long)]
    include_eol: bool,
    /// Also write what changed as Markdown (a pull request's body) to FILE
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

impl LockArgs {
    fn load(&self) -> anyhow::Result<(Matrix, PathBuf)> {
        let matrix_path = self
            .matrix
            .clone()
            .unwrap_or_else(|| project_root().join(MATRIX_PATH));
        let matrix = Matrix::load(&matrix_path)?;
        let default = matrix_path
            .parent()
            .unwrap_or(&project_root())
            .join(&matrix.bases);
        Ok((matrix, self.lock.clone().unwrap_or(default)))
    }
}

impl BasesCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        match self {
            BasesCmd::Show(args) => {
                let (matrix, path) = args.load()?;
                let lock = BaseLock::load(&path)?;
                println!(
                    "{} read on {} from {} ({})",
                    lock.source,
                    lock.read_on,
                    lock.read_from,
                    display_path(&path)
                );
                let rows: Vec<Vec<String>> = lock
                    .lines
                    .iter()
                    .map(|(php, base)| {
                        vec![
                            php.to_string(),
                            base.tag.to_string(),
                            base.digest.to_string(),
                            base.php_version.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&rows, "  "));
                // A release would stop at the missing line: say so here, not only when releasing.
                lock.require_lines(&matrix.php_lines(), &path)
            }
            BasesCmd::Refresh(args) if args.check => {
                // 1 means "a base moved", so anything that kept the check from telling must not look like it.
                args.check()
                    .map_err(|error| match error.downcast::<Exit>() {
                        Ok(exit) => exit.into(),
                        Err(error) => Exit::new(2, error).into(),
                    })
            }
            BasesCmd::Refresh(args) => args.run(),
        }
    }
}

/// Whether end-of-life lines are read like the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eol {
    /// They keep their pin (read only when the lock has none for them).
    Keep,
    Include,
}

/// What was read for one line: the index digest its tag names now and the PHP version it says it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub reference: ImageRef,
    pub digest: Digest,
    pub php_version: Option<String>,
}

/// One line of a refresh: its pin before, what was read (nothing for a kept end-of-life line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineReport {
    pub php: PhpLine,
    /// The matrix's end-of-life sentence.
    pub eol: Option<String>,
    pub before: Option<LockedBase>,
    pub read: Option<Read>,
}

/// What happened to a line's pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Changed,
    /// No pin before (a new line, a new lock or another source).
    New,
    /// End of life, not read: the pin stays.
    Kept,
}

impl LineReport {
    pub fn change(&self) -> Change {
        match (&self.before, &self.read) {
            (_, None) => Change::Kept,
            (None, Some(_)) => Change::New,
            (Some(before), Some(read)) if before.digest == read.digest => Change::Unchanged,
            (Some(_), Some(_)) => Change::Changed,
        }
    }

    fn version_before(&self) -> &str {
        version_or_unknown(self.before.as_ref().and_then(|b| b.php_version.as_deref()))
    }

    fn version_now(&self) -> &str {
        version_or_unknown(self.read.as_ref().and_then(|r| r.php_version.as_deref()))
    }

    /// What an end-of-life line keeps, and why: the digest its lock pins (empty without one) and the matrix's
    /// end-of-life sentence.
    fn kept(&self) -> (&str, &str) {
        (
            self.before.as_ref().map_or("", |b| b.digest.as_str()),
            self.eol.as_deref().unwrap_or_default(),
        )
    }
}

fn version_or_unknown(version: Option<&str>) -> &str {
    version.unwrap_or("version not stated")
}

/// Reads the index digest of every line's base tag under `source`, checking that every matrix platform is
/// there, and returns the new lock with a row per line saying what changed since `previous`.
pub fn refresh(
    matrix: &Matrix,
    source: &Repository,
    previous: Option<&BaseLock>,
) -> anyhow::Result<(BaseLock, Vec<LineReport>)> {
    refresh_lines(
        &RegistryClient::from_env()?,
        matrix,
        source,
        previous,
        Eol::Keep,
    )
}

/// [`refresh`], with the end-of-life policy and the client given.
pub fn refresh_lines(
    client: &RegistryClient,
    matrix: &Matrix,
    source: &Repository,
    previous: Option<&BaseLock>,
    eol: Eol,
) -> anyhow::Result<(BaseLock, Vec<LineReport>)> {
    // A pin read from another source says nothing about this one.
    let previous = previous.filter(|p| p.source == *source);
    let mut lines = BTreeMap::new();
    let mut reports = Vec::new();
    for line in &matrix.lines {
        let php = line.php;
        let before = previous.and_then(|p| p.lines.get(&php)).cloned();
        let keep = line.eol.is_some() && eol == Eol::Keep && before.is_some();
        let read = if keep {
            None
        } else {
            Some(read_base(client, matrix, source, php)?)
        };
        let pinned = match (&read, &before) {
            (Some(read), _) => LockedBase {
                tag: base_tag(php),
                digest: read.digest.clone(),
                php_version: read.php_version.clone(),
            },
            (None, Some(before)) => before.clone(),
            (None, None) => unreachable!("a line without a pin is always read"),
        };
        lines.insert(php, pinned);
        reports.push(LineReport {
            php,
            eol: line.eol.clone(),
            before,
            read,
        });
    }
    let lock = BaseLock {
        source: source.clone(),
        read_on: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        read_from: "registry, by cargo xtask bases refresh (index, platform manifest and config)"
            .to_owned(),
        lines,
    };
    Ok((lock, reports))
}

/// The index a line's base tag names (every matrix platform listed) and the PHP version it says it holds.
fn read_base(
    client: &RegistryClient,
    matrix: &Matrix,
    source: &Repository,
    php: PhpLine,
) -> anyhow::Result<Read> {
    let reference = source.tagged(&base_tag(php));
    let context = || format!("reading the base of PHP {php}");
    let index = client.get_manifest(&reference).with_context(context)?;
    let summary = IndexSummary::parse(&index.bytes)
        .with_context(|| format!("base {reference}"))
        .with_context(context)?;
    summary
        .require_platforms(&matrix.platforms)
        .with_context(|| format!("base {reference}"))
        .with_context(context)?;
    let php_version = match annotation_version(&index.bytes, php) {
        Some(version) => Some(version),
        None => config_version(client, &reference, &summary, php)
            .with_context(|| format!("reading the PHP version of {reference}"))
            .with_context(context)?,
    };
    Ok(Read {
        reference,
        digest: index.digest,
        php_version,
    })
}

/// `org.opencontainers.image.version` from the index's own annotations.
fn annotation_version(index: &[u8], php: PhpLine) -> Option<String> {
    let index: serde_json::Value = serde_json::from_slice(index).ok()?;
    index["annotations"]["org.opencontainers.image.version"]
        .as_str()
        .and_then(|v| php_version(v, php))
}

/// The version the first platform's config states: its `PHP_VERSION` variable, else its version label.
fn config_version(
    client: &RegistryClient,
    reference: &ImageRef,
    index: &IndexSummary,
    php: PhpLine,
) -> anyhow::Result<Option<String>> {
    let Some(platform) = index.platforms.first() else {
        return Ok(None);
    };
    let manifest = client.get_manifest(&reference.repository().at(&platform.digest))?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes)
        .with_context(|| format!("the {} manifest is not JSON", platform.platform))?;
    let config = manifest["config"]["digest"]
        .as_str()
        .with_context(|| format!("the {} manifest names no config", platform.platform))?;
    let config = Digest::parse(config)
        .with_context(|| format!("the config digest of the {} manifest", platform.platform))?;
    let config = client.get_blob(reference.repository(), &config)?;
    let config: serde_json::Value =
        serde_json::from_slice(&config).context("the image config is not JSON")?;
    Ok(version_in_config(&config, php))
}

fn version_in_config(config: &serde_json::Value, php: PhpLine) -> Option<String> {
    let from_env = config["config"]["Env"].as_array().and_then(|env| {
        env.iter()
            .filter_map(|v| v.as_str()?.strip_prefix("PHP_VERSION="))
            .find_map(|v| php_version(v, php))
    });
    from_env.or_else(|| {
        config["config"]["Labels"]["org.opencontainers.image.version"]
            .as_str()
            .and_then(|v| php_version(v, php))
    })
}

/// `value` when it is a version of this line (`8.4.15`, `8.4.0RC1`), else `None`: a label that says something
/// else (a date, another line) is not shown as the PHP version.
fn php_version(value: &str, php: PhpLine) -> Option<String> {
    let rest = value.strip_prefix(&format!("{php}."))?;
    let patch_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let suffix = &rest[patch_len..];
    let ok = patch_len > 0
        && value.len() <= 32
        && suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    ok.then(|| value.to_owned())
}

/// The aligned table a refresh prints: line, reference, digest, what changed.
fn rows(reports: &[LineReport], source: &Repository) -> Vec<Vec<String>> {
    reports
        .iter()
        .map(|r| {
            let (reference, digest) = match (&r.read, &r.before) {
                (Some(read), _) => (read.reference.to_string(), read.digest.to_string()),
                (None, Some(before)) => (
                    source.tagged(&before.tag).to_string(),
                    before.digest.to_string(),
                ),
                (None, None) => (String::new(), String::new()),
            };
            let change = match r.change() {
                Change::Unchanged => "unchanged".to_owned(),
                Change::Changed => {
                    format!("was {}", r.before.as_ref().map_or("", |b| b.digest.short()))
                }
                Change::New => "new".to_owned(),
                Change::Kept => "end of life: kept (--include-eol reads it)".to_owned(),
            };
            vec![
                r.php.to_string(),
                reference,
                digest,
                r.version_now().to_owned(),
                change,
            ]
        })
        .collect()
}

/// The lines of a refresh as both renderings group them: moved (or new), unchanged, and end of life left alone.
struct Partition<'a> {
    changed: Vec<&'a LineReport>,
    unchanged: Vec<String>,
    kept: Vec<&'a LineReport>,
}

impl<'a> Partition<'a> {
    fn of(reports: &'a [LineReport]) -> Partition<'a> {
        let mut partition = Partition {
            changed: Vec::new(),
            unchanged: Vec::new(),
            kept: Vec::new(),
        };
        for report in reports {
            match report.change() {
                Change::Changed | Change::New => partition.changed.push(report),
                Change::Unchanged => partition.unchanged.push(report.php.to_string()),
                Change::Kept => partition.kept.push(report),
            }
        }
        partition
    }
}

/// What `--check` prints: the lines whose base moved, old and new, then the others in a word.
pub fn check_report(reports: &[LineReport], source: &Repository) -> Result<String, fmt::Error> {
    let mut out = String::new();
    let Partition {
        changed,
        unchanged,
        kept,
    } = Partition::of(reports);
    if changed.is_empty() {
        writeln!(out, "every base is as {source} pins it")?;
    } else {
        writeln!(out, "changed since the lock was read:")?;
    }
    for report in &changed {
        let Some(read) = &report.read else { continue };
        writeln!(out, "  PHP {}  {}", report.php, read.reference)?;
        match &report.before {
            Some(before) => writeln!(out, "    - {}  {}", before.digest, report.version_before())?,
            None => writeln!(out, "    - (not pinned)")?,
        }
        writeln!(out, "    + {}  {}", read.digest, report.version_now())?;
    }
    if !unchanged.is_empty() && !changed.is_empty() {
        writeln!(out, "unchanged: {}", unchanged.join(", "))?;
    }
    if !kept.is_empty() {
        writeln!(
            out,
            "end of life, not read (their pins stay; --include-eol reads them):"
        )?;
        for report in kept {
            let (pinned, why) = report.kept();
            writeln!(out, "  PHP {}  {pinned}  {why}", report.php)?;
        }
    }
    Ok(out)
}

/// The pull request's body: a table of the lines whose base moved, then the end-of-life lines left alone.
pub fn markdown(reports: &[LineReport], source: &Repository) -> Result<String, fmt::Error> {
    let mut out = String::new();
    let Partition {
        changed,
        unchanged,
        kept,
    } = Partition::of(reports);
    writeln!(out, "## Base image updates from `{source}`\n")?;
    if changed.is_empty() {
        writeln!(out, "Every base is as the lock pins it.")?;
    } else {
        writeln!(
            out,
            "| PHP line | tag | old digest | new digest | old PHP | new PHP |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|")?;
        for report in &changed {
            let Some(read) = &report.read else { continue };
            let old = report
                .before
                .as_ref()
                .map_or("(not pinned)".to_owned(), |b| format!("`{}`", b.digest));
            writeln!(
                out,
                "| {} | `{}` | {old} | `{}` | {} | {} |",
                report.php,
                base_tag(report.php),
                read.digest,
                report.version_before(),
                report.version_now()
            )?;
        }
    }
    if !unchanged.is_empty() {
        writeln!(out, "\nUnchanged: {}.", unchanged.join(", "))?;
    }
    if !kept.is_empty() {
        writeln!(
            out,
            "\n### End of life, not refreshed\n\nThese keep their pin (`cargo xtask bases refresh --include-eol` reads them):\n"
        )?;
        for report in kept {
            let (pinned, why) = report.kept();
            writeln!(out, "- PHP {}: `{pinned}`. {why}", report.php)?;
        }
    }
    writeln!(
        out,
        "\nMerging pins these bases; the next release builds on them, or `republish` rebuilds a published release \
         on them (docs/maintaining.md, \"Base updates\")."
    )?;
    Ok(out)
}

impl RefreshArgs {
    fn eol(&self) -> Eol {
        if self.include_eol {
            Eol::Include
        } else {
            Eol::Keep
        }
    }

    /// The matrix, the lock's path, the lock (when it exists) and the source to read.
    fn inputs(&self) -> anyhow::Result<(Matrix, PathBuf, Option<BaseLock>, Repository)> {
        let (matrix, path) = self.lock.load()?;
        let previous = if path.exists() {
            Some(BaseLock::load(&path)?)
        } else {
            None
        };
        let source = match (&self.source, &previous) {
            (Some(source), _) => source.clone(),
            (None, Some(previous)) => previous.source.clone(),
            (None, None) => anyhow::bail!(
                "{} does not exist yet: pass --source REPOSITORY",
                display_path(&path)
            ),
        };
        Ok((matrix, path, previous, source))
    }

    fn write_markdown(&self, reports: &[LineReport], source: &Repository) -> anyhow::Result<()> {
        if let Some(file) = &self.markdown {
            let text = markdown(reports, source).context("rendering the markdown")?;
            std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
        }
        Ok(())
    }

    fn check(self) -> anyhow::Result<()> {
        let (matrix, path, previous, source) = self.inputs()?;
        let Some(previous) = previous else {
            anyhow::bail!(
                "{} does not exist: there is nothing to check; run `cargo xtask bases refresh --source {source}`",
                display_path(&path)
            );
        };
        let client = RegistryClient::from_env()?;
        let (_, reports) = refresh_lines(&client, &matrix, &source, Some(&previous), self.eol())?;
        print!(
            "{}",
            check_report(&reports, &source).context("rendering the report")?
        );
        self.write_markdown(&reports, &source)?;
        let moved: Vec<String> = reports
            .iter()
            .filter(|r| matches!(r.change(), Change::Changed | Change::New))
            .map(|r| r.php.to_string())
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        Err(Exit::new(
            1,
            anyhow::anyhow!(
                "the base of PHP {} moved since {} was read: run `cargo xtask bases refresh --lock {}` and commit the lock",
                moved.join(", "),
                display_path(&path),
                display_path(&path)
            ),
        )
        .into())
    }

    fn run(self) -> anyhow::Result<()> {
        let (matrix, path, previous, source) = self.inputs()?;
        let client = RegistryClient::from_env()?;
        // Read every line before writing anything: a failed refresh leaves the lock as it was.
        let (lock, reports) =
            refresh_lines(&client, &matrix, &source, previous.as_ref(), self.eol())?;
        print!("{}", table::render(&rows(&reports, &source), "  "));
        self.write_markdown(&reports, &source)?;
        if self.dry_run {
            print!("\n{}", lock.render());
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Written aside and renamed over: an interrupted refresh leaves the old lock whole.
        let mut aside = path.clone().into_os_string();
        aside.push(".refresh-tmp");
        std::fs::write(&aside, lock.render())
            .with_context(|| format!("writing {}", Path::new(&aside).display()))?;
        std::fs::rename(&aside, &path).with_context(|| format!("replacing {}", path.display()))?;
        println!("wrote {}", display_path(&path));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_version(value: &str, expected: Option<&str>) {
        assert_eq!(
            php_version(value, PhpLine::new(8, 4)).as_deref(),
            expected,
            "{value}"
        );
    }

    #[test]
    fn only_a_version_of_the_line_is_taken_for_its_php_version() {
        check_version("8.4.15", Some("8.4.15"));
        check_version("8.4.0RC1", Some("8.4.0RC1"));
        check_version("8.4.1-dev", Some("8.4.1-dev"));
        check_version("8.4", None);
        check_version("8.4.", None);
        check_version("8.3.9", None);
        check_version("8.40.1", None);
        check_version("2026-11-25", None);
        check_version("8.4.1 $(rm -rf /)", None);
        check_version(&format!("8.4.1{}", "a".repeat(40)), None);
    }

    #[track_caller]
    fn check_config(config: &str, expected: Option<&str>) {
        let config: serde_json::Value = serde_json::from_str(config).unwrap();
        assert_eq!(
            version_in_config(&config, PhpLine::new(8, 4)).as_deref(),
            expected
        );
    }

    #[test]
    fn the_version_comes_from_php_version_then_the_label() {
        check_config(
            r#"{"config":{"Env":["PATH=/bin","PHP_VERSION=8.4.15"]}}"#,
            Some("8.4.15"),
        );
        check_config(
            r#"{"config":{"Env":["PHP_VERSION=8.4.15"],"Labels":{"org.opencontainers.image.version":"8.4.14"}}}"#,
            Some("8.4.15"),
        );
        check_config(
            r#"{"config":{"Labels":{"org.opencontainers.image.version":"8.4.14"}}}"#,
            Some("8.4.14"),
        );
        check_config(
            r#"{"config":{"Env":["PHP_VERSION=latest"],"Labels":{"org.opencontainers.image.version":"8.4.14"}}}"#,
            Some("8.4.14"),
        );
        check_config(r#"{"config":{"Env":["PHP_VERSIONS=8.4.1"]}}"#, None);
        check_config(r#"{"config":{}}"#, None);
        check_config(r#"{}"#, None);
    }

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn report(php: (u16, u16), before: Option<u8>, now: Option<u8>, eol: bool) -> LineReport {
        let php = PhpLine::new(php.0, php.1);
        let source: Repository = "docker.io/library/php".parse().unwrap();
        LineReport {
            php,
            eol: eol.then(|| format!("PHP {php} is end of life")),
            before: before.map(|n| LockedBase {
                tag: base_tag(php),
                digest: digest(n),
                php_version: Some(format!("{php}.{n}")),
            }),
            read: now.map(|n| Read {
                reference: source.tagged(&base_tag(php)),
                digest: digest(n),
                php_version: Some(format!("{php}.{n}")),
            }),
        }
    }

    #[track_caller]
    fn check_change(report: LineReport, expected: Change) {
        assert_eq!(report.change(), expected);
    }

    #[test]
    fn changes() {
        check_change(report((8, 4), Some(1), Some(1), false), Change::Unchanged);
        check_change(report((8, 4), Some(1), Some(2), false), Change::Changed);
        check_change(report((8, 4), None, Some(2), false), Change::New);
        check_change(report((8, 1), Some(1), None, true), Change::Kept);
        check_change(report((8, 1), Some(1), Some(2), true), Change::Changed);
    }

    fn sample() -> Vec<LineReport> {
        vec![
            report((8, 1), Some(1), None, true),
            report((8, 3), Some(3), Some(3), false),
            report((8, 4), Some(4), Some(14), false),
        ]
    }

    #[test]
    fn check_report_names_old_and_new_and_the_eol_lines_apart() {
        let source = "docker.io/library/php".parse().unwrap();
        let text = check_report(&sample(), &source).unwrap();
        let expected = format!(
            "changed since the lock was read:\n\
             \x20 PHP 8.4  docker.io/library/php:8.4-fpm-alpine\n\
             \x20   - {}  8.4.4\n\
             \x20   + {}  8.4.14\n\
             unchanged: 8.3\n\
             end of life, not read (their pins stay; --include-eol reads them):\n\
             \x20 PHP 8.1  {}  PHP 8.1 is end of life\n",
            digest(4),
            digest(14),
            digest(1)
        );
        assert_eq!(text, expected);
        let quiet = check_report(&sample()[..2], &source).unwrap();
        assert!(
            quiet.starts_with("every base is as docker.io/library/php pins it\n"),
            "{quiet}"
        );
    }

    #[test]
    fn markdown_body_lists_old_and_new_digests_and_versions() {
        let source = "docker.io/library/php".parse().unwrap();
        let text = markdown(&sample(), &source).unwrap();
        assert!(
            text.contains(&format!(
                "| 8.4 | `8.4-fpm-alpine` | `{}` | `{}` | 8.4.4 | 8.4.14 |",
                digest(4),
                digest(14)
            )),
            "{text}"
        );
        assert!(text.contains("Unchanged: 8.3."), "{text}");
        assert!(
            text.contains(&format!(
                "- PHP 8.1: `{}`. PHP 8.1 is end of life",
                digest(1)
            )),
            "{text}"
        );
    }
}
