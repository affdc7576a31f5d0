//! `cargo xtask sizes`: the compressed size of every image across releases, and `--check`, which fails on a
//! size regression that no entry of `release-notes/size-justifications.toml` explains.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use stack_images::{PhpLine, ReleaseVersion};
use xshell::Shell;

use crate::{
    display_path,
    maintain::notes::{self, megabytes, ReleaseNotes, SizeFlag},
    project_root, table,
};

/// Where justified regressions are recorded, relative to the notes directory.
pub const JUSTIFICATIONS: &str = "size-justifications.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Justifications {
    #[serde(default)]
    pub justify: Vec<Justification>,
}

/// Why a release's images may be bigger; without `php` or `platform` it covers every line or platform.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Justification {
    pub release: ReleaseVersion,
    pub php: Option<PhpLine>,
    pub platform: Option<String>,
    pub reason: String,
}

impl Justification {
    fn covers(&self, release: &ReleaseVersion, flag: &SizeFlag) -> bool {
        self.release == *release
            && self.php.is_none_or(|php| php == flag.php)
            && self.platform.as_ref().is_none_or(|p| *p == flag.platform)
    }
}

/// Every flagged size of every release, with the justification that covers it, if any.
pub fn review<'a>(
    releases: &[ReleaseNotes],
    justifications: &'a Justifications,
) -> Vec<(ReleaseVersion, SizeFlag, Option<&'a Justification>)> {
    let mut out = Vec::new();
    for (n, release) in releases.iter().enumerate() {
        let previous = n.checked_sub(1).map(|p| &releases[p]);
        for flag in notes::size_flags(release, previous) {
            let justified = justifications
                .justify
                .iter()
                .find(|j| j.covers(&release.version, &flag));
            out.push((release.version.clone(), flag, justified));
        }
    }
    out
}

#[derive(Args, Debug)]
pub struct SizesCmd {
    /// Fail when a flagged size (over 700 MB, or grown over 10 %) has no justification
    #[arg(long)]
    check: bool,
    /// Where the notes live
    #[arg(long, value_name = "DIR", default_value = "release-notes")]
    notes_dir: PathBuf,
}

impl SizesCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let dir = project_root().join(&self.notes_dir);
        let releases = notes::all_in(&dir)?;
        let justifications = load_justifications(&dir.join(JUSTIFICATIONS))?;
        let mut rows = vec![vec![
            "release".to_owned(),
            "PHP".to_owned(),
            "platform".to_owned(),
            "size".to_owned(),
        ]];
        for notes in &releases {
            for image in &notes.images {
                for platform in &image.platforms {
                    rows.push(vec![
                        notes.version.to_string(),
                        image.php.to_string(),
                        platform.platform.clone(),
                        megabytes(platform.size),
                    ]);
                }
            }
        }
        if releases.is_empty() {
            println!("no releases in {}", display_path(&dir));
        } else {
            print!("{}", table::render(&rows, ""));
        }
        let reviewed = review(&releases, &justifications);
        let mut unjustified = Vec::new();
        for (version, flag, justified) in &reviewed {
            let before = flag
                .previous
                .as_ref()
                .map(|(v, s)| format!(" (was {} in {v})", megabytes(*s)))
                .unwrap_or_default();
            let line = format!(
                "{version} PHP {} {}: {}{before}, {}",
                flag.php,
                flag.platform,
                megabytes(flag.size),
                flag.why
            );
            match justified {
                Some(j) => println!("justified: {line}: {}", j.reason),
                None => {
                    println!("flagged:   {line}");
                    unjustified.push(line);
                }
            }
        }
        if self.check && !unjustified.is_empty() {
            bail!(
                "{} size regression(s) without a justification:\n  {}\nmake the image smaller, or explain it in {} \
                 ([[justify]] release = \"vX.Y.Z\", php = \"M.m\", platform = \"os/arch\", reason = \"...\")",
                unjustified.len(),
                unjustified.join("\n  "),
                display_path(&dir.join(JUSTIFICATIONS))
            );
        }
        Ok(())
    }
}

fn load_justifications(path: &Path) -> anyhow::Result<Justifications> {
    if !path.exists() {
        return Ok(Justifications::default());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Justifications::parse(&text).with_context(|| format!("in {}", display_path(path)))
}

impl Justifications {
    /// Parses the file and refuses an entry that justifies nothing: no reason, or a platform that is not one.
    pub fn parse(text: &str) -> anyhow::Result<Justifications> {
        let justifications: Justifications = toml::from_str(text)?;
        for (n, entry) in justifications.justify.iter().enumerate() {
            let name = format!(
                "[[justify]] entry {} (release = \"{}\")",
                n + 1,
                entry.release
            );
            if entry.reason.trim().is_empty() {
                bail!(
                    "{name}: reason is empty: say why the images grew, for example \
                     reason = \"imagick added for image resizing (issue #123)\""
                );
            }
            if let Some(platform) = &entry.platform {
                stack_images::matrix::check_platform(platform).with_context(|| {
                    format!("{name}: platform: leave it out to cover every platform")
                })?;
            }
        }
        Ok(justifications)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintain::notes::tests::sample;

    const MB: u64 = 1_000_000;

    #[track_caller]
    fn check(justifications: &str, expected: &[&str]) {
        let releases = vec![
            sample("v1.0.0", [40 * MB; 4]),
            sample("v1.1.0", [40 * MB, 50 * MB, 40 * MB, 40 * MB]),
            sample("v2.0.0", [40 * MB, 50 * MB, 40 * MB, 800 * MB]),
        ];
        let justifications = Justifications::parse(justifications).unwrap();
        let reviewed: Vec<String> = review(&releases, &justifications)
            .iter()
            .map(|(v, f, j)| {
                format!(
                    "{v} {} {} {}",
                    f.php,
                    f.platform,
                    if j.is_some() { "justified" } else { "flagged" }
                )
            })
            .collect();
        assert_eq!(reviewed, expected);
    }

    #[track_caller]
    fn check_invalid(justifications: &str, expected: &str) {
        let error = format!("{:#}", Justifications::parse(justifications).unwrap_err());
        assert!(error.contains(expected), "`{error}` lacks `{expected}`");
    }

    #[test]
    fn justifications_that_justify_nothing_are_refused() {
        let empty = "reason is empty: say why the images grew, for example reason = ";
        check_invalid(
            "[[justify]]\nrelease = \"v2.0.0\"\nreason = \"\"\n",
            &format!("[[justify]] entry 1 (release = \"v2.0.0\"): {empty}"),
        );
        check_invalid(
            "[[justify]]\nrelease = \"v1.0.0\"\nreason = \"x\"\n[[justify]]\nrelease = \"v2.0.0\"\nreason = \" \\n\\t\"\n",
            &format!("[[justify]] entry 2 (release = \"v2.0.0\"): {empty}"),
        );
        check_invalid(
            "[[justify]]\nrelease = \"v2.0.0\"\nplatform = \"arm64\"\nreason = \"x\"\n",
            "[[justify]] entry 1 (release = \"v2.0.0\"): platform: leave it out to cover every platform: platform `arm64` is not of the form os/arch",
        );
        check_invalid(
            "[[justify]]\nrelease = \"2.0\"\nreason = \"x\"\n",
            "`2.0` is not a release version",
        );
        check_invalid(
            "[[justify]]\nrelease = \"v2.0.0\"\nphp = \"8.5.1\"\nreason = \"x\"\n",
            "PHP version `8.5.1` is not a PHP line: use `8.5`",
        );
        check_invalid(
            "[[justify]]\nrelease = \"v2.0.0\"\n",
            "missing field `reason`",
        );
        check_invalid(
            "[[justify]]\nrelease = \"v2.0.0\"\nreason = \"x\"\nwhy = \"y\"\n",
            "unknown field `why`",
        );
    }

    #[test]
    fn regressions_need_a_justification() {
        check(
            "",
            &[
                "v1.1.0 8.1 linux/arm64 flagged",
                "v2.0.0 8.5 linux/arm64 flagged",
            ],
        );
        check(
            "[[justify]]\nrelease = \"v1.1.0\"\nreason = \"imagick added\"\n",
            &[
                "v1.1.0 8.1 linux/arm64 justified",
                "v2.0.0 8.5 linux/arm64 flagged",
            ],
        );
        check(
            "[[justify]]\nrelease = \"v2.0.0\"\nphp = \"8.5\"\nplatform = \"linux/amd64\"\nreason = \"wrong platform\"\n",
            &["v1.1.0 8.1 linux/arm64 flagged", "v2.0.0 8.5 linux/arm64 flagged"],
        );
        check(
            "[[justify]]\nrelease = \"v2.0.0\"\nphp = \"8.5\"\nreason = \"x\"\n[[justify]]\nrelease = \"v1.1.0\"\nphp = \"8.1\"\nplatform = \"linux/arm64\"\nreason = \"y\"\n",
            &["v1.1.0 8.1 linux/arm64 justified", "v2.0.0 8.5 linux/arm64 justified"],
        );
    }
}
