//! Release notes in the repository: `release-notes/vX.Y.Z.json` (the type is
//! `stack_images::release_notes::ReleaseNotes`, shared with `20i pin`), the Markdown page generated from it (and
//! from the previous release's JSON, for sizes), size flags, and `notes [--check]`, which catches an edited page.

use std::{
    fmt::{self, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::Args;
use stack_images::{dist::DistSigning, matrix::Attestations, PhpLine, ReleaseVersion};
use xshell::Shell;

pub use stack_images::release_notes::{
    BaseRecord, DigestChange, ImageRecord, LauncherArchive, LauncherRecord, PlatformRecord,
    Reference, ReleaseNotes, Republish, SignatureRecord, SigningRecord,
};

use crate::{display_path, project_root};

/// Images above this compressed size are flagged (SC-005: under 700 MB per PHP line and platform).
pub const SIZE_LIMIT: u64 = 700_000_000;
/// Growth over this share of the previous release's size is flagged.
pub const GROWTH_LIMIT: f64 = 0.10;

/// A size worth a maintainer's look: over the limit, or grown too much since the previous release.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeFlag {
    pub php: PhpLine,
    pub platform: String,
    pub size: u64,
    pub previous: Option<(ReleaseVersion, u64)>,
    pub why: String,
}

/// The newest release in `dir` older than `notes`: what sizes are compared with.
pub fn previous_in(notes: &ReleaseNotes, dir: &Path) -> anyhow::Result<Option<ReleaseNotes>> {
    Ok(all_in(dir)?
        .into_iter()
        .filter(|other| other.version < notes.version)
        .max_by(|a, b| a.version.cmp(&b.version)))
}

/// The size `previous` recorded for the same line and platform.
fn previous_size(previous: Option<&ReleaseNotes>, php: PhpLine, platform: &str) -> Option<u64> {
    let image = previous?.images.iter().find(|i| i.php == php)?;
    let record = image.platforms.iter().find(|p| p.platform == platform)?;
    Some(record.size)
}

/// Sizes over the limit or grown by more than 10 % since `previous`.
pub fn size_flags(notes: &ReleaseNotes, previous: Option<&ReleaseNotes>) -> Vec<SizeFlag> {
    let mut flags = Vec::new();
    for image in &notes.images {
        for platform in &image.platforms {
            let before = previous.zip(previous_size(previous, image.php, &platform.platform));
            let before = before.map(|(p, size)| (p.version.clone(), size));
            let mut why = Vec::new();
            if platform.size > SIZE_LIMIT {
                why.push(format!("over {} MB", SIZE_LIMIT / 1_000_000));
            }
            if let Some((_, old)) = &before {
                if let Some(growth) = growth(*old, platform.size).filter(|g| *g > GROWTH_LIMIT) {
                    why.push(format!("grew {:.1} %", growth * 100.0));
                }
            }
            if !why.is_empty() {
                flags.push(SizeFlag {
                    php: image.php,
                    platform: platform.platform.clone(),
                    size: platform.size,
                    previous: before,
                    why: why.join(", "),
                });
            }
        }
    }
    flags
}

/// The page a user reads, generated from `notes` alone (plus the previous release's for sizes).
pub fn render_page(notes: &ReleaseNotes, previous: Option<&ReleaseNotes>) -> String {
    let mut md = String::new();
    page(&mut md, notes, previous).expect("writing to a String cannot fail");
    md.trim_end().to_owned() + "\n"
}

fn page(w: &mut String, notes: &ReleaseNotes, previous: Option<&ReleaseNotes>) -> fmt::Result {
    let platforms: Vec<&str> = notes
        .images
        .first()
        .map(|i| i.platforms.iter().map(|p| p.platform.as_str()).collect())
        .unwrap_or_default();
    header(w, notes, &platforms)?;
    registries(w, notes, &platforms)?;
    pull_and_verify(w, notes)?;
    signatures(w, notes)?;
    launcher(w, notes)?;
    attestations(w, notes)?;
    sizes(w, notes, previous)?;
    end_of_life_and_skipped(w, notes)?;
    bases(w, notes)?;
    for republish in &notes.republished {
        republished(w, republish)?;
    }
    Ok(())
}

fn header(w: &mut String, notes: &ReleaseNotes, platforms: &[&str]) -> fmt::Result {
    let version = &notes.version;
    writeln!(w, "<!-- Generated from {version}.json by `cargo xtask notes {version}`: edit the JSON, not this page. -->")?;
    writeln!(w, "# {} {version}\n", notes.image)?;
    let kind = if notes.prerelease {
        "Prerelease"
    } else {
        "Release"
    };
    writeln!(
        w,
        "{kind} of {version}, built from revision `{}` (committed {}), published {}.\n",
        notes.revision, notes.created, notes.date
    )?;
    writeln!(
        w,
        "Every tag below is an index for {}; the same digest is served by every registry. \
         Attestations: {}.\n",
        platforms.join(" and "),
        attestations_name(notes)
    )
}

/// `provenance` or `none`, as the matrix spells it, and the SBOM when there is one.
/// The first reference of the release, for the commands the page shows.
fn example_reference(notes: &ReleaseNotes) -> String {
    notes
        .references
        .first()
        .map(|r| r.reference.to_string())
        .unwrap_or_default()
}

fn attestations_name(notes: &ReleaseNotes) -> String {
    let provenance = serde_json::to_value(notes.attestations)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match (&notes.sbom_scanner, notes.attestations) {
        (None, _) => provenance,
        (Some(_), Attestations::None) => "SBOM (SPDX)".to_owned(),
        (Some(_), Attestations::Provenance) => format!("{provenance} and SBOM (SPDX)"),
    }
}

/// Where each platform image's SBOM and provenance are, and how to read them.
fn attestations(w: &mut String, notes: &ReleaseNotes) -> fmt::Result {
    let attested: Vec<(&PhpLine, &PlatformRecord)> = notes
        .images
        .iter()
        .flat_map(|i| i.platforms.iter().map(move |p| (&i.php, p)))
        .filter(|(_, p)| p.attestation.is_some())
        .collect();
    if attested.is_empty() {
        return Ok(());
    }
    writeln!(
        w,
        "## SBOM and provenance
"
    )?;
    let mut holds = Vec::new();
    if let Some(scanner) = &notes.sbom_scanner {
        holds.push(format!("an SPDX SBOM made by `{scanner}`"));
    }
    if notes.attestations == Attestations::Provenance {
        holds.push("SLSA provenance (mode=min)".to_owned());
    }
    writeln!(
        w,
        "Every platform image has an attestation manifest (an `unknown/unknown` entry of the index) holding {}; \
         the release checked it in every registry before any tag moved. Read them with:\n",
        holds.join(" and ")
    )?;
    let example = example_reference(notes);
    writeln!(w, "```sh")?;
    if notes.sbom_scanner.is_some() {
        writeln!(
            w,
            "docker buildx imagetools inspect {example} --format '{{{{ json .SBOM }}}}'"
        )?;
    }
    if notes.attestations == Attestations::Provenance {
        writeln!(
            w,
            "docker buildx imagetools inspect {example} --format '{{{{ json .Provenance }}}}'"
        )?;
    }
    writeln!(w, "```\n")?;
    writeln!(
        w,
        "| PHP | Platform | Attestation manifest |\n|---|---|---|"
    )?;
    for (php, platform) in attested {
        let digest = platform.attestation.as_ref().expect("filtered on it");
        writeln!(w, "| {php} | {} | `{digest}` |", platform.platform)?;
    }
    writeln!(w)
}

fn registries(w: &mut String, notes: &ReleaseNotes, platforms: &[&str]) -> fmt::Result {
    for (n, registry) in std::iter::once(&notes.canonical)
        .chain(&notes.mirrors)
        .enumerate()
    {
        let role = if n == 0 { "canonical" } else { "mirror" };
        writeln!(w, "## {registry}/{} ({role})\n", notes.image)?;
        write!(w, "| Tag | Index digest |")?;
        for platform in platforms {
            write!(w, " {platform} |")?;
        }
        writeln!(w, "\n|---|---|{}", "---:|".repeat(platforms.len()))?;
        for reference in notes.references.iter().filter(|r| &r.registry == registry) {
            write!(w, "| `{}` | `{}` |", reference.tag, reference.digest)?;
            for platform in platforms {
                let size = reference
                    .platforms
                    .iter()
                    .find(|p| p.platform == *platform)
                    .map(|p| megabytes(p.size));
                write!(w, " {} |", size.as_deref().unwrap_or("missing"))?;
            }
            writeln!(w)?;
        }
        writeln!(w)?;
    }
    writeln!(
        w,
        "Sizes are compressed: what a pull downloads for that platform.\n"
    )
}

fn pull_and_verify(w: &mut String, notes: &ReleaseNotes) -> fmt::Result {
    writeln!(w, "## Pull by digest\n")?;
    writeln!(
        w,
        "A tag can move; a digest cannot. To pin exactly what this release published:\n"
    )?;
    writeln!(w, "```sh")?;
    for image in &notes.images {
        writeln!(
            w,
            "docker pull {}/{}@{}   # PHP {}",
            notes.canonical, notes.image, image.digest, image.php
        )?;
    }
    writeln!(w, "```\n")?;
    writeln!(w, "## Verify\n")?;
    writeln!(
        w,
        "The digest is the sha256 of the index bytes the registry serves, in any registry above:\n"
    )?;
    let example = example_reference(notes);
    writeln!(w, "```sh")?;
    writeln!(
        w,
        "docker buildx imagetools inspect --raw {example} | sha256sum"
    )?;
    writeln!(w, "skopeo inspect --raw docker://{example} | sha256sum")?;
    writeln!(w, "```\n")?;
    writeln!(
        w,
        "Both print the digest listed for that tag, without the `sha256:` prefix.\n"
    )
}

/// How the pins were signed and the command that checks each, in the registry it names.
fn signatures(w: &mut String, notes: &ReleaseNotes) -> fmt::Result {
    let Some(signing) = &notes.signing else {
        return Ok(());
    };
    writeln!(
        w,
        "## Signatures
"
    )?;
    match signing {
        SigningRecord::None => {
            return writeln!(
                w,
                "**This release is not signed** (it was published with `--signing none`).\n"
            )
        }
        SigningRecord::Key { public_key } => writeln!(
            w,
            "Every pin is signed with cosign and a key; `{public_key}`, its public key, is attached to the \
             release. Each command below exits 0 only if the pin's signature verifies:\n"
        )?,
        SigningRecord::Keyless { identity, issuer } => writeln!(
            w,
            "Every pin is signed with cosign, keyless, by `{identity}` (issuer `{issuer}`), logged in Rekor. \
             Each command below exits 0 only if the pin's signature verifies:\n"
        )?,
    }
    writeln!(w, "```sh")?;
    for reference in &notes.references {
        if let Some(signature) = &reference.signature {
            writeln!(
                w,
                "{}   # {} (signature {})",
                signature.verify, reference.reference, signature.digest
            )?;
        }
    }
    writeln!(w, "```\n")
}

/// The launcher's archives attached to the release: the install line, each archive with its sha256, and the
/// command that verifies its signature.
fn launcher(w: &mut String, notes: &ReleaseNotes) -> fmt::Result {
    let Some(launcher) = &notes.launcher else {
        return Ok(());
    };
    writeln!(w, "## The 20i launcher\n")?;
    writeln!(
        w,
        "Install `20i` {} (into `~/.local/bin`, no root; the sha256 is always checked, the signature when \
         cosign is installed):\n",
        notes.version
    )?;
    writeln!(w, "```sh\n{}\n```\n", launcher.install)?;
    writeln!(w, "| Platform | Archive | sha256 |")?;
    writeln!(w, "|---|---|---|")?;
    for archive in &launcher.archives {
        writeln!(
            w,
            "| {} (`{}`) | [{}]({}) | `{}` |",
            archive.target.describe(),
            archive.target,
            archive.name,
            archive.url,
            archive.sha256
        )?;
    }
    writeln!(w, "\nAll of them in [SHA256SUMS]({}).", launcher.checksums)?;
    match &launcher.signing {
        DistSigning::Key { public_key } => writeln!(
            w,
            "Each archive is signed with cosign and a key; `{public_key}`, its public key, is attached to the \
             release. With the archive and its signature downloaded, this exits 0 only if it verifies:\n"
        )?,
        DistSigning::Keyless { identity, issuer } => writeln!(
            w,
            "Each archive is signed with cosign, keyless, by `{identity}` (issuer `{issuer}`), logged in \
             Rekor; its Sigstore bundle is attached beside it. With both downloaded, this exits 0 only if it \
             verifies:\n"
        )?,
    }
    writeln!(w, "```sh")?;
    for archive in &launcher.archives {
        writeln!(w, "{}", archive.verify)?;
    }
    writeln!(w, "```\n")
}

fn sizes(w: &mut String, notes: &ReleaseNotes, previous: Option<&ReleaseNotes>) -> fmt::Result {
    writeln!(w, "## Sizes\n")?;
    match previous {
        Some(previous) => writeln!(
            w,
            "Compared with {}. Flagged: over {} MB, or grown by more than {:.0} %.\n",
            previous.version,
            SIZE_LIMIT / 1_000_000,
            GROWTH_LIMIT * 100.0
        )?,
        None => writeln!(
            w,
            "No earlier release to compare with. Flagged: over {} MB.\n",
            SIZE_LIMIT / 1_000_000
        )?,
    }
    let flags = size_flags(notes, previous);
    writeln!(
        w,
        "| PHP | Platform | Size | Previous | Change | |\n|---|---|---:|---:|---:|---|"
    )?;
    for image in &notes.images {
        for platform in &image.platforms {
            let before = previous_size(previous, image.php, &platform.platform);
            let change = before
                .and_then(|b| growth(b, platform.size))
                .map(|g| format!("{:+.1} %", g * 100.0))
                .unwrap_or_else(|| "new".to_owned());
            let flag = flags
                .iter()
                .find(|f| f.php == image.php && f.platform == platform.platform)
                .map(|f| format!("⚠ {}", f.why))
                .unwrap_or_default();
            writeln!(
                w,
                "| {} | {} | {} | {} | {change} | {flag} |",
                image.php,
                platform.platform,
                megabytes(platform.size),
                before.map(megabytes).unwrap_or_else(|| "–".to_owned())
            )?;
        }
    }
    writeln!(w)
}

fn end_of_life_and_skipped(w: &mut String, notes: &ReleaseNotes) -> fmt::Result {
    let eol: Vec<(&PhpLine, &str)> = notes
        .images
        .iter()
        .filter_map(|i| Some((&i.php, i.end_of_life.as_deref()?)))
        .collect();
    if !eol.is_empty() {
        writeln!(w, "## End of life\n")?;
        for (php, why) in eol {
            writeln!(w, "- PHP {php}: {why}")?;
        }
        writeln!(w)?;
    }
    if !notes.skipped.is_empty() {
        writeln!(w, "## Tags not moved\n")?;
        for skipped in &notes.skipped {
            writeln!(w, "- {}", skipped.reason)?;
        }
        writeln!(w)?;
    }
    Ok(())
}

fn bases(w: &mut String, notes: &ReleaseNotes) -> fmt::Result {
    writeln!(
        w,
        "## Base images\n\n| PHP | Base | Digest |\n|---|---|---|"
    )?;
    for base in &notes.bases {
        // The digest has its own column; the name is what a reader recognises.
        let repository = base.reference.repository();
        let name = match base.reference.tag() {
            Some(tag) => repository.tagged(tag).to_string(),
            None => repository.to_string(),
        };
        writeln!(w, "| {} | `{name}` | `{}` |", base.php, base.digest)?;
    }
    writeln!(w)
}

fn republished(w: &mut String, republish: &Republish) -> fmt::Result {
    writeln!(
        w,
        "## Republished {}\n\n{}\n",
        republish.date, republish.reason
    )?;
    if !republish.lines.is_empty() {
        let lines: Vec<String> = republish.lines.iter().map(ToString::to_string).collect();
        writeln!(
            w,
            "Rebuilt: PHP {}; every other line kept its digests.\n",
            lines.join(", ")
        )?;
    }
    for base in &republish.bases {
        writeln!(w, "- PHP {} on `{}`", base.php, base.reference)?;
    }
    if !republish.bases.is_empty() {
        writeln!(w)?;
    }
    writeln!(w, "| Reference | Old digest | New digest |\n|---|---|---|")?;
    for change in &republish.changes {
        writeln!(
            w,
            "| `{}` | `{}` | `{}` |",
            change.reference, change.old, change.new
        )?;
    }
    writeln!(
        w,
        "\nThe old digests stay pullable: `docker pull REPOSITORY@OLD_DIGEST`.\n"
    )
}

/// Writes the JSON and the page generated from it.
pub fn write(notes: &ReleaseNotes, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = ReleaseNotes::json_path(dir, &notes.version);
    std::fs::write(&json, notes.to_json())
        .with_context(|| format!("writing {}", json.display()))?;
    let previous = previous_in(notes, dir)?;
    let page = ReleaseNotes::page_path(dir, &notes.version);
    std::fs::write(&page, render_page(notes, previous.as_ref()))
        .with_context(|| format!("writing {}", page.display()))?;
    Ok((json, page))
}

/// Every release's notes in `dir`, oldest first. A missing directory is an error (a typo in `--notes-dir` must
/// not pass a check), and so is a `vX.Y.Z.json` whose `version` is another release.
pub fn all_in(dir: &Path) -> anyhow::Result<Vec<ReleaseNotes>> {
    if !dir.is_dir() {
        bail!(
            "the release notes directory {} does not exist: pass --notes-dir DIR (default release-notes, in the \
             repository root)",
            display_path(dir)
        );
    }
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let Some(named) = path
            .extension()
            .is_some_and(|e| e == "json")
            .then(|| path.file_stem()?.to_str()?.parse::<ReleaseVersion>().ok())
            .flatten()
        else {
            continue;
        };
        let notes = ReleaseNotes::load(&path)?;
        if notes.version != named {
            bail!(
                "in release notes {}: version is {}, but the file is named for {named}: rename the file, or \
                 restore its version",
                display_path(&path),
                notes.version
            );
        }
        all.push(notes);
    }
    all.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(all)
}

/// `(new - old) / old`, when there was something before.
fn growth(old: u64, new: u64) -> Option<f64> {
    (old > 0).then(|| (new as f64 - old as f64) / old as f64)
}

/// `45.2 MB` (decimal megabytes, as registries show sizes).
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// `cargo xtask notes`: regenerate release pages from their JSON, or check that they are current.
#[derive(Args, Debug)]
pub struct NotesCmd {
    /// The release whose page to write (default: every release in the notes directory)
    version: Option<ReleaseVersion>,
    /// Fail, showing the difference, when a page is not what its JSON generates
    #[arg(long)]
    check: bool,
    /// Where the notes live
    #[arg(long, value_name = "DIR", default_value = "release-notes")]
    notes_dir: PathBuf,
}

impl NotesCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let dir = project_root().join(&self.notes_dir);
        let mut releases = all_in(&dir)?;
        if let Some(version) = &self.version {
            releases.retain(|r| r.version == *version);
            if releases.is_empty() {
                bail!(
                    "no {} in {}: a release writes it",
                    ReleaseNotes::json_path(&dir, version).display(),
                    display_path(&dir)
                );
            }
        }
        if releases.is_empty() {
            println!("no release notes in {}", display_path(&dir));
        }
        let mut stale = Vec::new();
        for notes in &releases {
            let previous = previous_in(notes, &dir)?;
            let page = ReleaseNotes::page_path(&dir, &notes.version);
            let expected = render_page(notes, previous.as_ref());
            let actual = match std::fs::read_to_string(&page) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", page.display())),
            };
            if actual.as_deref() == Some(expected.as_str()) {
                continue;
            }
            if self.check {
                let difference = match &actual {
                    Some(actual) => first_difference(&expected, actual),
                    None => "  the page does not exist".to_owned(),
                };
                stale.push(format!("{}:\n{difference}", display_path(&page)));
            } else {
                std::fs::write(&page, expected)
                    .with_context(|| format!("writing {}", page.display()))?;
                println!("wrote {}", display_path(&page));
            }
        }
        if !stale.is_empty() {
            bail!(
                "{} not what the JSON generates:\n{}\nrun `cargo xtask notes` to regenerate (edit the JSON, not the page)",
                if stale.len() == 1 { "a release page is" } else { "release pages are" },
                stale.join("\n")
            );
        }
        Ok(())
    }
}

/// The first line where two texts part, as a two-line diff. Lines are compared with their endings, so a page
/// saved with CRLF is reported as such instead of looking identical.
pub fn first_difference(expected: &str, actual: &str) -> String {
    let (mut e, mut a) = (expected.split_inclusive('\n'), actual.split_inclusive('\n'));
    for n in 1.. {
        match (e.next(), a.next()) {
            (None, None) => break,
            (x, y) if x == y => continue,
            (Some(x), Some(y))
                if x.trim_end_matches(['\r', '\n']) == y.trim_end_matches(['\r', '\n']) =>
            {
                // Git's autocrlf or a Windows editor: worth naming, since nothing else differs.
                let hint = if y.ends_with("\r\n") {
                    " (core.autocrlf, or an editor that saves CRLF?)"
                } else {
                    ""
                };
                return format!(
                    "  line {n}: line endings differ: expected {}, found {}{hint}\n  - {}\n  + {}",
                    ending(x),
                    ending(y),
                    y.escape_debug(),
                    x.escape_debug()
                );
            }
            (x, y) => {
                let shown = |line: Option<&str>| {
                    line.map_or_else(
                        || "(end of file)".to_owned(),
                        |l| l.trim_end_matches(['\r', '\n']).to_owned(),
                    )
                };
                return format!("  line {n}\n  - {}\n  + {}", shown(y), shown(x));
            }
        }
    }
    "  (identical)".to_owned()
}

/// How a line ends, in words.
fn ending(line: &str) -> &'static str {
    if line.ends_with("\r\n") {
        "CRLF (\\r\\n)"
    } else if line.ends_with('\n') {
        "LF (\\n)"
    } else {
        "no line ending"
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use stack_images::{
        dist::{self, DistArchive, DistManifest, Sha256, Target},
        tags::TagKind,
        Digest, Namespace, RepoName, Tag,
    };

    fn digest(seed: &str) -> Digest {
        Digest::of(seed.as_bytes())
    }

    const IDENTITY: &str =
        "https://github.com/20i/stack/.github/workflows/release.yml@refs/tags/v2.0.0";

    /// Notes of a small release (two lines, two platforms, one mirror) with sizes chosen per test.
    pub fn sample(version: &str, sizes: [u64; 4]) -> ReleaseNotes {
        let version: ReleaseVersion = version.parse().unwrap();
        let lines = [PhpLine::new(8, 1), PhpLine::new(8, 5)];
        let platforms = ["linux/amd64", "linux/arm64"];
        let images: Vec<ImageRecord> = lines
            .iter()
            .enumerate()
            .map(|(n, php)| ImageRecord {
                php: *php,
                digest: digest(&format!("{version} {php}")),
                platforms: platforms
                    .iter()
                    .enumerate()
                    .map(|(m, platform)| PlatformRecord {
                        platform: platform.to_string(),
                        digest: digest(&format!("{version} {php} {platform}")),
                        size: sizes[n * 2 + m],
                        attestation: Some(digest(&format!(
                            "{version} {php} {platform} attestations"
                        ))),
                    })
                    .collect(),
                end_of_life: (php.minor == 1).then(|| "PHP 8.1 is end of life".to_owned()),
            })
            .collect();
        let mut references = Vec::new();
        let name: RepoName = "php-fpm".parse().unwrap();
        let canonical: Namespace = "ghcr.io/20i-stack".parse().unwrap();
        let mirror: Namespace = "docker.io/20istack".parse().unwrap();
        for registry in [&canonical, &mirror] {
            for image in &images {
                let tag: Tag = format!("{version}-php-{}", image.php).parse().unwrap();
                let pin = registry.repository(&name).at(&image.digest);
                references.push(Reference {
                    reference: registry.repository(&name).tagged(&tag),
                    registry: registry.clone(),
                    tag,
                    kind: TagKind::Pin,
                    php: image.php,
                    digest: image.digest.clone(),
                    platforms: image.platforms.clone(),
                    signature: Some(SignatureRecord {
                        digest: digest(&format!("signature of {}", image.digest)),
                        verify: format!(
                            "cosign verify --certificate-identity={IDENTITY} \
                             --certificate-oidc-issuer={} -- {pin}",
                            stack_images::cosign::GITHUB_ISSUER
                        ),
                    }),
                });
            }
            let latest = &images[1];
            let latest_tag: Tag = "latest".parse().unwrap();
            references.push(Reference {
                reference: registry.repository(&name).tagged(&latest_tag),
                registry: registry.clone(),
                tag: latest_tag,
                kind: TagKind::Latest,
                php: latest.php,
                digest: latest.digest.clone(),
                platforms: latest.platforms.clone(),
                signature: None,
            });
        }
        ReleaseNotes {
            version: version.clone(),
            prerelease: false,
            revision: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
            date: "2026-11-25".to_owned(),
            created: "2026-11-25T10:00:00Z".to_owned(),
            image: name,
            canonical,
            mirrors: vec![mirror],
            attestations: stack_images::matrix::Attestations::Provenance,
            sbom_scanner: Some(
                "docker.io/docker/buildkit-syft-scanner:1.12.0@sha256:ae4f3b554449e7e25548e7d8ccc029d17357348e30c6e3df01b92bc93654d6a9"
                    .parse()
                    .unwrap(),
            ),
            bases: lines
                .iter()
                .map(|php| BaseRecord {
                    php: *php,
                    reference: format!(
                        "docker.io/library/php:{php}-fpm-alpine@{}",
                        digest(&php.to_string())
                    )
                    .parse()
                    .unwrap(),
                    digest: digest(&php.to_string()),
                })
                .collect(),
            images,
            references,
            skipped: Vec::new(),
            republished: Vec::new(),
            signing: Some(SigningRecord::Keyless {
                identity: IDENTITY.to_owned(),
                issuer: stack_images::cosign::GITHUB_ISSUER.to_owned(),
            }),
            launcher: Some(launcher_sample(&version)),
        }
    }

    /// The launcher's four archives, sealed keyless by the release workflow.
    fn launcher_sample(version: &ReleaseVersion) -> LauncherRecord {
        let archives = Target::ALL
            .into_iter()
            .map(|target| {
                let name = dist::archive_name(version, target);
                DistArchive {
                    target,
                    signature: format!("{name}.sigstore.json"),
                    sha256: Sha256::of(name.as_bytes()),
                    name,
                }
            })
            .collect();
        let base_url =
            format!("https://github.com/20i-stack/20i-stack/releases/download/{version}");
        LauncherRecord::from(&DistManifest {
            version: version.clone(),
            install: format!("curl -fsSL {base_url}/install.sh | sh"),
            base_url,
            signing: DistSigning::Keyless {
                identity: IDENTITY.to_owned(),
                issuer: stack_images::cosign::GITHUB_ISSUER.to_owned(),
            },
            archives,
        })
    }

    #[test]
    fn notes_without_the_launcher_section_still_read_and_render() {
        let mut notes = sample("v2.0.0", [1, 2, 3, 4]);
        notes.launcher = None;
        let json = notes.to_json();
        assert!(!json.contains("\"launcher\""));
        assert_eq!(ReleaseNotes::parse(&json).unwrap(), notes);
        assert!(!render_page(&notes, None).contains("## The 20i launcher"));
    }

    #[test]
    fn page_snapshot() {
        let previous = sample("v1.0.0", [40_000_000, 39_000_000, 41_000_000, 40_000_000]);
        let mut notes = sample("v2.0.0", [41_000_000, 45_000_000, 41_000_000, 720_000_000]);
        notes.republished.push(Republish {
            date: "2026-12-01".to_owned(),
            reason: "bases rebuilt for a libxml2 fix".to_owned(),
            lines: vec![PhpLine::new(8, 5)],
            bases: vec![notes.bases[0].clone()],
            changes: vec![DigestChange {
                reference: "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5".parse().unwrap(),
                old: digest("old"),
                new: digest("new"),
            }],
        });
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[digest]");
        settings.bind(|| insta::assert_snapshot!(render_page(&notes, Some(&previous))));
    }

    #[track_caller]
    fn check_flags(before: Option<[u64; 4]>, after: [u64; 4], expected: &[&str]) {
        let previous = before.map(|sizes| sample("v1.0.0", sizes));
        let notes = sample("v2.0.0", after);
        let flags: Vec<String> = size_flags(&notes, previous.as_ref())
            .iter()
            .map(|f| format!("{} {}: {}", f.php, f.platform, f.why))
            .collect();
        assert_eq!(flags, expected);
    }

    #[test]
    fn size_rules() {
        const MB: u64 = 1_000_000;
        check_flags(None, [40 * MB; 4], &[]);
        check_flags(
            None,
            [40 * MB, 40 * MB, 40 * MB, 701 * MB],
            &["8.5 linux/arm64: over 700 MB"],
        );
        check_flags(
            Some([40 * MB; 4]),
            [44 * MB, 44 * MB + 1, 40 * MB, 36 * MB],
            &["8.1 linux/arm64: grew 10.0 %"],
        );
        check_flags(
            Some([40 * MB, 40 * MB, 40 * MB, 650 * MB]),
            [40 * MB, 40 * MB, 40 * MB, 750 * MB],
            &["8.5 linux/arm64: over 700 MB, grew 15.4 %"],
        );
    }

    #[track_caller]
    fn check_difference(expected: &str, actual: &str, difference: &str) {
        assert_eq!(first_difference(expected, actual), difference);
    }

    #[test]
    fn differences_show_line_endings() {
        check_difference("a\nb\n", "a\nb\n", "  (identical)");
        check_difference("a\nb\n", "a\nc\n", "  line 2\n  - c\n  + b");
        check_difference("a\nb\n", "a\n", "  line 2\n  - (end of file)\n  + b");
        check_difference(
            "a\nb\n",
            "a\r\nb\r\n",
            "  line 1: line endings differ: expected LF (\\n), found CRLF (\\r\\n) (core.autocrlf, or an editor that saves CRLF?)\n  - a\\r\\n\n  + a\\n",
        );
        check_difference(
            "a\nb\n",
            "a\nb",
            "  line 2: line endings differ: expected LF (\\n), found no line ending\n  - b\n  + b\\n",
        );
    }

    #[test]
    fn json_round_trips() {
        let notes = sample("v2.0.0", [1, 2, 3, 4]);
        let text = notes.to_json();
        assert_eq!(serde_json::from_str::<ReleaseNotes>(&text).unwrap(), notes);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = &value["references"][0];
        assert_eq!(first["ref"], "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.1");
        assert!(first["digest"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(first["platforms"][0]["platform"], "linux/amd64");
        assert_eq!(first["platforms"][0]["size"], 1);
    }
}
