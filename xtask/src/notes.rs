//! Release notes: `release-notes/vX.Y.Z.json` records every pushed reference and its digests; the Markdown page
//! is generated from it (and from the previous release's JSON, for sizes), and `notes --check` catches an edit.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use stack_images::{
    tags::{Skipped, TagKind},
    Digest, PhpLine, ReleaseVersion,
};
use xshell::Shell;

use crate::{display_path, project_root};

/// Images above this compressed size are flagged (SC-005: under 700 MB per PHP line and platform).
pub const SIZE_LIMIT: u64 = 700_000_000;
/// Growth over this share of the previous release's size is flagged.
pub const GROWTH_LIMIT: f64 = 0.10;

/// What a release published, for tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseNotes {
    pub version: ReleaseVersion,
    pub prerelease: bool,
    pub revision: String,
    /// The day the release was published (UTC).
    pub date: String,
    /// The commit time, which is the images' `created`.
    pub created: String,
    pub image: String,
    pub canonical: String,
    pub mirrors: Vec<String>,
    pub attestations: String,
    pub bases: Vec<BaseRecord>,
    /// One entry per PHP line: the canonical index and its platform images.
    pub images: Vec<ImageRecord>,
    /// Every reference pushed, in every registry.
    pub references: Vec<Reference>,
    pub skipped: Vec<Skipped>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub republished: Vec<Republish>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRecord {
    pub php: PhpLine,
    pub reference: String,
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    pub php: PhpLine,
    pub digest: Digest,
    pub platforms: Vec<PlatformRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_life: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformRecord {
    pub platform: String,
    pub digest: Digest,
    /// Compressed size in bytes: config and layers, as pulled.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The full reference with its tag, e.g. `ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5`.
    #[serde(rename = "ref")]
    pub reference: String,
    pub registry: String,
    pub tag: String,
    pub kind: TagKind,
    pub php: PhpLine,
    /// The index digest.
    pub digest: Digest,
    pub platforms: Vec<PlatformRecord>,
}

/// An out-of-band rebuild of a published release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Republish {
    pub date: String,
    pub reason: String,
    pub changes: Vec<DigestChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestChange {
    #[serde(rename = "ref")]
    pub reference: String,
    pub old: Digest,
    pub new: Digest,
}

/// A size worth a maintainer's look: over the limit, or grown too much since the previous release.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeFlag {
    pub php: PhpLine,
    pub platform: String,
    pub size: u64,
    pub previous: Option<(ReleaseVersion, u64)>,
    pub why: String,
}

impl ReleaseNotes {
    pub fn json_path(dir: &Path, version: &ReleaseVersion) -> PathBuf {
        dir.join(format!("{version}.json"))
    }

    pub fn page_path(dir: &Path, version: &ReleaseVersion) -> PathBuf {
        dir.join(format!("{version}.md"))
    }

    pub fn load(path: &Path) -> anyhow::Result<ReleaseNotes> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("release notes always serialise") + "\n"
    }

    /// The newest release in `dir` older than this one: what sizes are compared with.
    pub fn previous_in(&self, dir: &Path) -> anyhow::Result<Option<ReleaseNotes>> {
        let mut best: Option<ReleaseNotes> = None;
        for notes in all_in(dir)? {
            if notes.version < self.version
                && best.as_ref().is_none_or(|b| notes.version > b.version)
            {
                best = Some(notes);
            }
        }
        Ok(best)
    }

    /// Sizes over the limit or grown by more than 10 % since `previous`.
    pub fn size_flags(&self, previous: Option<&ReleaseNotes>) -> Vec<SizeFlag> {
        let mut flags = Vec::new();
        for image in &self.images {
            for platform in &image.platforms {
                let before = previous.and_then(|p| {
                    let old = p.images.iter().find(|i| i.php == image.php)?;
                    let old = old
                        .platforms
                        .iter()
                        .find(|o| o.platform == platform.platform)?;
                    Some((p.version.clone(), old.size))
                });
                let mut why = Vec::new();
                if platform.size > SIZE_LIMIT {
                    why.push(format!("over {} MB", SIZE_LIMIT / 1_000_000));
                }
                if let Some((_, old)) = &before {
                    if let Some(growth) = growth(*old, platform.size).filter(|g| *g > GROWTH_LIMIT)
                    {
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

    /// The page a user reads, generated from this record alone (plus the previous release's for sizes).
    pub fn render_page(&self, previous: Option<&ReleaseNotes>) -> String {
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "<!-- Generated from {}.json by `cargo xtask notes {}`: edit the JSON, not this page. -->", self.version, self.version);
        let _ = writeln!(w, "# {} {}\n", self.image, self.version);
        let kind = if self.prerelease {
            "Prerelease"
        } else {
            "Release"
        };
        let _ = writeln!(
            w,
            "{kind} of {}, built from revision `{}` (committed {}), published {}.\n",
            self.version, self.revision, self.created, self.date
        );
        let platforms = self.images.first().map(|i| {
            i.platforms
                .iter()
                .map(|p| p.platform.as_str())
                .collect::<Vec<_>>()
        });
        let platforms = platforms.unwrap_or_default();
        let _ = writeln!(
            w,
            "Every tag below is an index for {}; the same digest is served by every registry. \
             Attestations: {}.\n",
            platforms.join(" and "),
            self.attestations
        );

        for (n, registry) in std::iter::once(&self.canonical)
            .chain(&self.mirrors)
            .enumerate()
        {
            let role = if n == 0 { "canonical" } else { "mirror" };
            let _ = writeln!(w, "## {registry}/{} ({role})\n", self.image);
            let mut header = "| Tag | Index digest |".to_owned();
            let mut rule = "|---|---|".to_owned();
            for platform in &platforms {
                let _ = write!(header, " {platform} |");
                rule.push_str("---:|");
            }
            let _ = writeln!(w, "{header}\n{rule}");
            for reference in self.references.iter().filter(|r| &r.registry == registry) {
                let mut row = format!("| `{}` | `{}` |", reference.tag, reference.digest);
                for platform in &platforms {
                    let size = reference
                        .platforms
                        .iter()
                        .find(|p| p.platform == *platform)
                        .map(|p| megabytes(p.size));
                    let _ = write!(row, " {} |", size.unwrap_or_else(|| "missing".to_owned()));
                }
                let _ = writeln!(w, "{row}");
            }
            let _ = writeln!(w);
        }
        let _ = writeln!(
            w,
            "Sizes are compressed: what a pull downloads for that platform.\n"
        );

        let _ = writeln!(w, "## Pull by digest\n");
        let _ = writeln!(
            w,
            "A tag can move; a digest cannot. To pin exactly what this release published:\n"
        );
        let _ = writeln!(w, "```sh");
        for image in &self.images {
            let _ = writeln!(
                w,
                "docker pull {}/{}@{}   # PHP {}",
                self.canonical, self.image, image.digest, image.php
            );
        }
        let _ = writeln!(w, "```\n");
        let _ = writeln!(w, "## Verify\n");
        let _ = writeln!(w, "The digest is the sha256 of the index bytes the registry serves, in any registry above:\n");
        let example = self
            .references
            .first()
            .map(|r| r.reference.as_str())
            .unwrap_or_default();
        let _ = writeln!(w, "```sh");
        let _ = writeln!(
            w,
            "docker buildx imagetools inspect --raw {example} | sha256sum"
        );
        let _ = writeln!(w, "skopeo inspect --raw docker://{example} | sha256sum");
        let _ = writeln!(w, "```\n");
        let _ = writeln!(
            w,
            "Both print the digest listed for that tag, without the `sha256:` prefix.\n"
        );

        let _ = writeln!(w, "## Sizes\n");
        match previous {
            Some(previous) => {
                let _ = writeln!(
                    w,
                    "Compared with {}. Flagged: over {} MB, or grown by more than {:.0} %.\n",
                    previous.version,
                    SIZE_LIMIT / 1_000_000,
                    GROWTH_LIMIT * 100.0
                );
            }
            None => {
                let _ = writeln!(
                    w,
                    "No earlier release to compare with. Flagged: over {} MB.\n",
                    SIZE_LIMIT / 1_000_000
                );
            }
        }
        let flags = self.size_flags(previous);
        let _ = writeln!(
            w,
            "| PHP | Platform | Size | Previous | Change | |\n|---|---|---:|---:|---:|---|"
        );
        for image in &self.images {
            for platform in &image.platforms {
                let before = previous
                    .and_then(|p| p.images.iter().find(|i| i.php == image.php))
                    .and_then(|i| i.platforms.iter().find(|p| p.platform == platform.platform))
                    .map(|p| p.size);
                let change = before
                    .and_then(|b| growth(b, platform.size))
                    .map(|g| format!("{:+.1} %", g * 100.0))
                    .unwrap_or_else(|| "new".to_owned());
                let flag = flags
                    .iter()
                    .find(|f| f.php == image.php && f.platform == platform.platform)
                    .map(|f| format!("⚠ {}", f.why))
                    .unwrap_or_default();
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {change} | {flag} |",
                    image.php,
                    platform.platform,
                    megabytes(platform.size),
                    before.map(megabytes).unwrap_or_else(|| "–".to_owned())
                );
            }
        }
        let _ = writeln!(w);

        let eol: Vec<&ImageRecord> = self
            .images
            .iter()
            .filter(|i| i.end_of_life.is_some())
            .collect();
        if !eol.is_empty() {
            let _ = writeln!(w, "## End of life\n");
            for image in eol {
                let _ = writeln!(
                    w,
                    "- PHP {}: {}",
                    image.php,
                    image.end_of_life.as_deref().unwrap_or_default()
                );
            }
            let _ = writeln!(w);
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(w, "## Tags not moved\n");
            for skipped in &self.skipped {
                let _ = writeln!(w, "- {}", skipped.reason);
            }
            let _ = writeln!(w);
        }
        let _ = writeln!(
            w,
            "## Base images\n\n| PHP | Base | Digest |\n|---|---|---|"
        );
        for base in &self.bases {
            let name = base.reference.split('@').next().unwrap_or(&base.reference);
            let _ = writeln!(w, "| {} | `{name}` | `{}` |", base.php, base.digest);
        }
        let _ = writeln!(w);
        for republish in &self.republished {
            let _ = writeln!(
                w,
                "## Republished {}\n\n{}\n\n| Reference | Old digest | New digest |\n|---|---|---|",
                republish.date, republish.reason
            );
            for change in &republish.changes {
                let _ = writeln!(
                    w,
                    "| `{}` | `{}` | `{}` |",
                    change.reference, change.old, change.new
                );
            }
            let _ = writeln!(
                w,
                "\nThe old digests stay pullable: `docker pull REPOSITORY@OLD_DIGEST`.\n"
            );
        }
        md.trim_end().to_owned() + "\n"
    }

    /// Writes the JSON and the page generated from it.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = ReleaseNotes::json_path(dir, &self.version);
        std::fs::write(&json, self.to_json())
            .with_context(|| format!("writing {}", json.display()))?;
        let previous = self.previous_in(dir)?;
        let page = ReleaseNotes::page_path(dir, &self.version);
        std::fs::write(&page, self.render_page(previous.as_ref()))
            .with_context(|| format!("writing {}", page.display()))?;
        Ok((json, page))
    }
}

/// Every release's notes in `dir`.
pub fn all_in(dir: &Path) -> anyhow::Result<Vec<ReleaseNotes>> {
    let mut all = Vec::new();
    if !dir.exists() {
        return Ok(all);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let is_release = path.extension().is_some_and(|e| e == "json")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.parse::<ReleaseVersion>().is_ok());
        if is_release {
            all.push(ReleaseNotes::load(&path)?);
        }
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
    version: Option<String>,
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
            let version: ReleaseVersion = version.parse()?;
            releases.retain(|r| r.version == version);
            if releases.is_empty() {
                bail!(
                    "no {} in {}: a release writes it",
                    ReleaseNotes::json_path(&dir, &version).display(),
                    display_path(&dir)
                );
            }
        }
        let mut stale = Vec::new();
        for notes in &releases {
            let previous = notes.previous_in(&dir)?;
            let page = ReleaseNotes::page_path(&dir, &notes.version);
            let expected = notes.render_page(previous.as_ref());
            let actual = std::fs::read_to_string(&page).unwrap_or_default();
            if actual == expected {
                continue;
            }
            if self.check {
                stale.push(format!(
                    "{}:\n{}",
                    display_path(&page),
                    first_difference(&expected, &actual)
                ));
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

/// The first line where two texts part, as a two-line diff.
pub fn first_difference(expected: &str, actual: &str) -> String {
    let (mut e, mut a) = (expected.lines(), actual.lines());
    for n in 1.. {
        match (e.next(), a.next()) {
            (None, None) => break,
            (x, y) if x == y => continue,
            (x, y) => {
                return format!(
                    "  line {n}\n  - {}\n  + {}",
                    y.unwrap_or("(end of file)"),
                    x.unwrap_or("(end of file)")
                )
            }
        }
    }
    "  (identical)".to_owned()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    fn digest(seed: &str) -> Digest {
        Digest::of(seed.as_bytes())
    }

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
                    })
                    .collect(),
                end_of_life: (php.minor == 1).then(|| "PHP 8.1 is end of life".to_owned()),
            })
            .collect();
        let mut references = Vec::new();
        for registry in ["ghcr.io/20i-stack", "docker.io/20istack"] {
            for image in &images {
                let tag = format!("{version}-php-{}", image.php);
                references.push(Reference {
                    reference: format!("{registry}/php-fpm:{tag}"),
                    registry: registry.to_owned(),
                    tag,
                    kind: TagKind::Pin,
                    php: image.php,
                    digest: image.digest.clone(),
                    platforms: image.platforms.clone(),
                });
            }
            let latest = &images[1];
            references.push(Reference {
                reference: format!("{registry}/php-fpm:latest"),
                registry: registry.to_owned(),
                tag: "latest".to_owned(),
                kind: TagKind::Latest,
                php: latest.php,
                digest: latest.digest.clone(),
                platforms: latest.platforms.clone(),
            });
        }
        ReleaseNotes {
            version,
            prerelease: false,
            revision: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            date: "2026-11-25".to_owned(),
            created: "2026-11-25T10:00:00Z".to_owned(),
            image: "php-fpm".to_owned(),
            canonical: "ghcr.io/20i-stack".to_owned(),
            mirrors: vec!["docker.io/20istack".to_owned()],
            attestations: "provenance".to_owned(),
            bases: lines
                .iter()
                .map(|php| BaseRecord {
                    php: *php,
                    reference: format!(
                        "docker.io/library/php:{php}-fpm-alpine@{}",
                        digest(&php.to_string())
                    ),
                    digest: digest(&php.to_string()),
                })
                .collect(),
            images,
            references,
            skipped: Vec::new(),
            republished: Vec::new(),
        }
    }

    #[test]
    fn page_snapshot() {
        let previous = sample("v1.0.0", [40_000_000, 39_000_000, 41_000_000, 40_000_000]);
        let mut notes = sample("v2.0.0", [41_000_000, 45_000_000, 41_000_000, 720_000_000]);
        notes.republished.push(Republish {
            date: "2026-12-01".to_owned(),
            reason: "bases rebuilt for a libxml2 fix".to_owned(),
            changes: vec![DigestChange {
                reference: "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5".to_owned(),
                old: digest("old"),
                new: digest("new"),
            }],
        });
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[digest]");
        settings.bind(|| insta::assert_snapshot!(notes.render_page(Some(&previous))));
    }

    #[track_caller]
    fn check_flags(before: Option<[u64; 4]>, after: [u64; 4], expected: &[&str]) {
        let previous = before.map(|sizes| sample("v1.0.0", sizes));
        let notes = sample("v2.0.0", after);
        let flags: Vec<String> = notes
            .size_flags(previous.as_ref())
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
