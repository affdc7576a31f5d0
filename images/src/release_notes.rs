//! The release notes JSON (`release-notes/vX.Y.Z.json`): every reference a release pushed and its digests. The
//! xtask writes it and `20i pin` reads it; this one type is the contract between them, and a malformed value is
//! refused when the file is read, naming the file and the field.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::{
    dist::{DistManifest, DistSigning, Sha256, Target},
    matrix::{check_platform, Attestations},
    tags::{Skipped, TagKind},
    CommitId, Digest, ImageRef, Namespace, PhpLine, ReleaseVersion, RepoName, Tag,
};

/// The annotation of a republished index that says why it was rebuilt (`cargo xtask republish` writes it, the
/// launcher shows it).
pub const REPUBLISH_REASON: &str = "io.20i-stack.republish.reason";
/// The annotation of a republished index that says when (a UTC day).
pub const REPUBLISH_DATE: &str = "io.20i-stack.republish.date";

/// What to do about a notes file that does not read: it is generated, so the fix is the published copy.
const FIX: &str = "the file is written by `cargo xtask release`: use the copy the release published \
                   (release-notes/vX.Y.Z.json in the repository, also attached to the GitHub release)";

/// What a release published, for tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseNotes {
    pub version: ReleaseVersion,
    pub prerelease: bool,
    pub revision: CommitId,
    /// The day the release was published (UTC), `YYYY-MM-DD`.
    pub date: String,
    /// The commit time, which is the images' `created`, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
    pub image: RepoName,
    pub canonical: Namespace,
    pub mirrors: Vec<Namespace>,
    pub attestations: Attestations,
    /// The BuildKit scanner that made the SPDX SBOM attached to every platform image; absent: no SBOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_scanner: Option<ImageRef>,
    pub bases: Vec<BaseRecord>,
    /// One entry per PHP line: the canonical index and its platform images.
    pub images: Vec<ImageRecord>,
    /// Every reference pushed, in every registry.
    pub references: Vec<Reference>,
    pub skipped: Vec<Skipped>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub republished: Vec<Republish>,
    /// How the pins were signed; absent in notes from before releases were signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningRecord>,
    /// The launcher's archives attached to the release; absent in notes from before releases shipped it, and
    /// in a release merged without `--launcher-dist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<LauncherRecord>,
}

/// The `20i` archives of a release (`cargo xtask dist seal`'s `dist-manifest.json`), where they are and how to
/// install and verify them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherRecord {
    /// The line that installs this release's launcher.
    pub install: String,
    /// The address of `SHA256SUMS`.
    pub checksums: String,
    /// How each archive was signed with cosign `sign-blob`.
    pub signing: DistSigning,
    pub archives: Vec<LauncherArchive>,
}

/// One archive of the release's launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherArchive {
    pub target: Target,
    pub name: String,
    pub sha256: Sha256,
    /// The signature's file name, beside the archive.
    pub signature: String,
    /// Where it is downloaded from (the GitHub release's asset).
    pub url: String,
    /// The command that verifies it, run where the archive and its signature were downloaded.
    pub verify: String,
}

impl From<&DistManifest> for LauncherRecord {
    fn from(manifest: &DistManifest) -> LauncherRecord {
        LauncherRecord {
            install: manifest.install.clone(),
            checksums: manifest.url(crate::dist::SHA256SUMS),
            signing: manifest.signing.clone(),
            archives: manifest
                .archives
                .iter()
                .map(|a| LauncherArchive {
                    target: a.target,
                    name: a.name.clone(),
                    sha256: a.sha256.clone(),
                    signature: a.signature.clone(),
                    url: manifest.url(&a.name),
                    verify: manifest.signing.verify_command(&a.name),
                })
                .collect(),
        }
    }
}

/// How every pin of a release was signed, and so how to verify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SigningRecord {
    /// With a private key; `public_key` is the file name of its public half, published with the release.
    Key { public_key: String },
    /// Keyless, by the release workflow: the certificate's identity and its OIDC issuer.
    Keyless { identity: String, issuer: String },
    /// Not signed (`--signing none`).
    None,
}

/// A pin's signature in one registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    /// The digest of the signature manifest (cosign's `sha256-<pin digest>.sig` tag), the same in every registry.
    pub digest: Digest,
    /// The exact command that verifies it.
    pub verify: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRecord {
    pub php: PhpLine,
    /// `source:tag@digest`, as the build's `PHP_BASE`.
    pub reference: ImageRef,
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
    /// The image's attestation manifest (SBOM, provenance), verified in every registry before a tag moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The full reference with its tag, e.g. `ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5`.
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    pub registry: Namespace,
    pub tag: Tag,
    pub kind: TagKind,
    pub php: PhpLine,
    /// The index digest.
    pub digest: Digest,
    pub platforms: Vec<PlatformRecord>,
    /// Pins of a signed release: the signature, verified in this registry before any tag moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureRecord>,
}

/// An out-of-band rebuild of a published release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Republish {
    pub date: String,
    pub reason: String,
    /// The PHP lines rebuilt; the others kept their digests. Empty in notes from before per-line republishing,
    /// which rebuilt every line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<PhpLine>,
    /// The bases the rebuilt lines were built on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<BaseRecord>,
    pub changes: Vec<DigestChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestChange {
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    pub old: Digest,
    pub new: Digest,
}

impl ReleaseNotes {
    pub fn json_path(dir: &Path, version: &ReleaseVersion) -> PathBuf {
        dir.join(format!("{version}.json"))
    }

    pub fn page_path(dir: &Path, version: &ReleaseVersion) -> PathBuf {
        dir.join(format!("{version}.md"))
    }

    /// Reads and checks a notes file; an error names the file, the field (and the entry's `ref`) and the fix.
    pub fn load(path: &Path) -> anyhow::Result<ReleaseNotes> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading release notes {}", path.display()))?;
        ReleaseNotes::parse(&text).with_context(|| format!("in release notes {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<ReleaseNotes> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let notes: ReleaseNotes = match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(notes) => notes,
            Err(error) => {
                let field = error.path().to_string();
                let entry = entry_ref(text, &field);
                if field == "." {
                    bail!("{}: {FIX}", error.inner());
                }
                bail!("{field}{entry}: {}: {FIX}", error.inner());
            }
        };
        if let Err(error) = deserializer.end() {
            bail!("{error} after the notes: {FIX}");
        }
        if let Err(problem) = notes.problem() {
            bail!("{problem}: {FIX}");
        }
        Ok(notes)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("release notes always serialise") + "\n"
    }

    /// The index digest recorded for `reference` (`namespace/image:tag`), if the release pushed it.
    pub fn digest_of(&self, reference: &ImageRef) -> Option<&Digest> {
        self.references
            .iter()
            .find(|r| r.reference == *reference)
            .map(|r| &r.digest)
    }

    /// The first value that contradicts the rest, as `field: what is wrong`.
    fn problem(&self) -> Result<(), String> {
        if self.prerelease != self.version.is_prerelease() {
            return Err(format!(
                "prerelease: {} says {}, but {} is {}a prerelease",
                self.prerelease,
                if self.prerelease {
                    "it is"
                } else {
                    "it is not"
                },
                self.version,
                if self.version.is_prerelease() {
                    ""
                } else {
                    "not "
                }
            ));
        }
        if !is_date(&self.date) {
            return Err(format!(
                "date: `{}` is not a day as YYYY-MM-DD (2026-11-25)",
                self.date
            ));
        }
        if !is_utc_time(&self.created) {
            return Err(format!(
                "created: `{}` is not a UTC time as YYYY-MM-DDTHH:MM:SSZ (2026-11-25T10:00:00Z)",
                self.created
            ));
        }
        for (n, base) in self.bases.iter().enumerate() {
            if base.reference.digest() != Some(&base.digest) {
                return Err(format!(
                    "bases[{n}].reference: `{}` does not end with its digest @{}",
                    base.reference, base.digest
                ));
            }
        }
        for (n, image) in self.images.iter().enumerate() {
            check_platforms(&image.platforms, &format!("images[{n}]"))?;
        }
        let namespaces: Vec<&Namespace> = std::iter::once(&self.canonical)
            .chain(&self.mirrors)
            .collect();
        let mut seen: BTreeMap<&ImageRef, usize> = BTreeMap::new();
        for (n, entry) in self.references.iter().enumerate() {
            let field = format!("references[{n}]");
            if !namespaces.contains(&&entry.registry) {
                return Err(format!(
                    "{field}.registry: `{}` is neither the canonical registry nor a mirror of these notes",
                    entry.registry
                ));
            }
            let expected = entry.registry.repository(&self.image).tagged(&entry.tag);
            if entry.reference != expected {
                return Err(format!(
                    "{field}.ref: `{}` is not its registry, image and tag ({expected})",
                    entry.reference
                ));
            }
            check_platforms(&entry.platforms, &field)?;
            if let Some(&first) = seen.get(&entry.reference) {
                let other = &self.references[first];
                if other.digest != entry.digest {
                    return Err(format!(
                        "references[{first}] and references[{n}] both record {} with different digests ({} and \
                         {}): one of them was edited",
                        entry.reference, other.digest, entry.digest
                    ));
                }
            } else {
                seen.insert(&entry.reference, n);
            }
        }
        let signed = !matches!(self.signing, None | Some(SigningRecord::None));
        if let Some(n) = self
            .references
            .iter()
            .position(|r| r.signature.is_some() && !signed)
        {
            return Err(format!(
                "references[{n}].signature: the release says it was not signed (signing), yet records a signature"
            ));
        }
        for (n, republish) in self.republished.iter().enumerate() {
            if !is_date(&republish.date) {
                return Err(format!(
                    "republished[{n}].date: `{}` is not a day as YYYY-MM-DD (2026-11-25)",
                    republish.date
                ));
            }
            if republish.reason.trim().is_empty() {
                return Err(format!(
                    "republished[{n}].reason is empty: it says why the release was rebuilt"
                ));
            }
        }
        Ok(())
    }
}

fn check_platforms(platforms: &[PlatformRecord], field: &str) -> Result<(), String> {
    for (m, platform) in platforms.iter().enumerate() {
        check_platform(&platform.platform)
            .map_err(|e| format!("{field}.platforms[{m}].platform: {e}"))?;
    }
    Ok(())
}

/// ` (ref …)` when the failing field is inside an entry that has a `ref`, so the message names the entry.
fn entry_ref(text: &str, field: &str) -> String {
    let Some((list, rest)) = field.split_once('[') else {
        return String::new();
    };
    let Some(index) = rest
        .split_once(']')
        .and_then(|(index, _)| index.parse::<usize>().ok())
    else {
        return String::new();
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return String::new();
    };
    match value[list][index]["ref"].as_str() {
        Some(reference) => format!(" (ref {reference})"),
        None => String::new(),
    }
}

/// `YYYY-MM-DD` with a month and day that exist in some year.
pub(crate) fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let number = |part: &str, len: usize| {
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u32>().ok())
            .flatten()
    };
    match parts[..] {
        [y, m, d] => {
            number(y, 4).is_some()
                && number(m, 2).is_some_and(|m| (1..=12).contains(&m))
                && number(d, 2).is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as the plan writes `created`.
fn is_utc_time(text: &str) -> bool {
    let Some((day, time)) = text.split_once('T') else {
        return false;
    };
    let Some(time) = time.strip_suffix('Z') else {
        return false;
    };
    let parts: Vec<&str> = time.split(':').collect();
    let in_range = |part: &str, max: u32| {
        part.len() == 2
            && part.bytes().all(|b| b.is_ascii_digit())
            && part.parse::<u32>().is_ok_and(|v| v <= max)
    };
    is_date(day)
        && matches!(parts[..], [h, m, s] if in_range(h, 23) && in_range(m, 59) && in_range(s, 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notes of a one-line, one-platform release with a mirror: the smallest valid file.
    const NOTES: &str = r#"{
  "version": "v2.0.0", "prerelease": false, "revision": "0123456789abcdef0123456789abcdef01234567",
  "date": "2026-11-25", "created": "2026-11-25T10:00:00Z", "image": "php-fpm",
  "canonical": "ghcr.io/20i-stack", "mirrors": ["docker.io/20istack"], "attestations": "provenance",
  "bases": [{"php": "8.5", "reference": "docker.io/library/php:8.5-fpm-alpine@sha256:1111111111111111111111111111111111111111111111111111111111111111",
             "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111"}],
  "skipped": [],
  "images": [{"php": "8.5", "digest": "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
              "platforms": [{"platform": "linux/amd64", "size": 41000000,
                             "digest": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]}],
  "references": [
    {"ref": "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5", "registry": "ghcr.io/20i-stack",
     "tag": "v2.0.0-php-8.5", "kind": "pin", "php": "8.5",
     "digest": "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "platforms": []},
    {"ref": "docker.io/20istack/php-fpm:v2.0.0-php-8.5", "registry": "docker.io/20istack",
     "tag": "v2.0.0-php-8.5", "kind": "pin", "php": "8.5",
     "digest": "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "platforms": []}
  ]
}"#;

    /// Parses `NOTES` edited by `from → to` (which must occur) and checks the error holds `expected`.
    #[track_caller]
    fn check(from: &str, to: &str, expected: Result<(), &str>) {
        assert!(NOTES.contains(from), "`{from}` is not in the sample notes");
        let text = NOTES.replacen(from, to, 1);
        match (ReleaseNotes::parse(&text), expected) {
            (Ok(_), Ok(())) => {}
            (Ok(_), Err(expected)) => panic!("accepted; expected an error with `{expected}`"),
            (Err(error), Ok(())) => panic!("refused: {error:#}"),
            (Err(error), Err(expected)) => {
                let error = format!("{error:#}");
                assert!(error.contains(expected), "`{error}` lacks `{expected}`");
                assert!(
                    error.ends_with(FIX),
                    "`{error}` does not end with what to do"
                );
            }
        }
    }

    const AAA: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn malformed_notes_name_the_field() {
        check("\"v2.0.0\",", "\"v2.0.0\",", Ok(()));
        check(
            "\"v2.0.0\",",
            "\"2.0\",",
            Err("version: `2.0` is not a release version"),
        );
        check(
            "\"prerelease\": false",
            "\"prerelease\": true",
            Err("prerelease: true says it is, but v2.0.0 is not a prerelease"),
        );
        check(
            "\"0123456789abcdef0123456789abcdef01234567\"",
            "\"HEAD\"",
            Err("revision: `HEAD` is not a full commit id"),
        );
        check(
            "\"2026-11-25\",",
            "\"25/11/2026\",",
            Err("date: `25/11/2026` is not a day as YYYY-MM-DD"),
        );
        check(
            "\"2026-11-25T10:00:00Z\"",
            "\"2026-11-25 10:00\"",
            Err("created: `2026-11-25 10:00` is not a UTC time"),
        );
        check(
            "\"php-fpm\",",
            "\"PHP-FPM\",",
            Err("image: image name `PHP-FPM` is not a valid repository name"),
        );
        check(
            "\"ghcr.io/20i-stack\", \"mirrors\"",
            "\"https://ghcr.io/20i-stack\", \"mirrors\"",
            Err("canonical: registry namespace `https://ghcr.io/20i-stack` is not valid"),
        );
        check(
            "[\"docker.io/20istack\"]",
            "[\"docker.io/20istack/\"]",
            Err("mirrors[0]: registry namespace `docker.io/20istack/` is not valid"),
        );
        check(
            "\"provenance\"",
            "\"sbom\"",
            Err("attestations: unknown variant `sbom`"),
        );
        check(
            "fpm-alpine@sha256:1111",
            "fpm-alpine@sha256:2222",
            Err("bases[0].reference: `docker.io/library/php:8.5-fpm-alpine@sha256:2222"),
        );
        check(
            "\"linux/amd64\"",
            "\"amd64\"",
            Err("images[0].platforms[0].platform: platform `amd64` is not of the form os/arch"),
        );
        check(
            "\"size\": 41000000",
            "\"size\": -1",
            Err("images[0].platforms[0].size: invalid value: integer `-1`"),
        );
        check(
            &format!("\"pin\", \"php\": \"8.5\",\n     \"digest\": \"{AAA}\""),
            "\"pin\", \"php\": \"8.5\",\n     \"digest\": \"sha256:zz\"",
            Err("references[0].digest (ref ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5): `sha256:zz` is not a sha256 digest"),
        );
        check(
            "\"kind\": \"pin\"",
            "\"kind\": \"pinned\"",
            Err("references[0].kind (ref ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5): unknown variant `pinned`"),
        );
        check(
            "\"registry\": \"ghcr.io/20i-stack\"",
            "\"registry\": \"quay.io/20i-stack\"",
            Err("references[0].registry: `quay.io/20i-stack` is neither the canonical registry nor a mirror"),
        );
        check(
            "\"tag\": \"v2.0.0-php-8.5\"",
            "\"tag\": \"-v2\"",
            Err("references[0].tag (ref ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5): the tag `-v2` must start with a letter"),
        );
        check(
            "\"ref\": \"ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5\"",
            "\"ref\": \"ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.4\"",
            Err("references[0].ref: `ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.4` is not its registry, image and tag (ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5)"),
        );
        check(
            "\"skipped\": [],",
            "\"skipped\": [], \"signed\": true,",
            Err("unknown field `signed`"),
        );
        let signed = r#""platforms": [], "signature": {"digest": "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc", "verify": "cosign verify --key=cosign.pub --insecure-ignore-tlog=true -- ghcr.io/20i-stack/php-fpm@sha256:aaaa"}}"#;
        let keyless = r#""skipped": [], "signing": {"mode": "keyless", "identity": "https://github.com/20i/stack/.github/workflows/release.yml@refs/tags/v2.0.0", "issuer": "https://token.actions.githubusercontent.com"},"#;
        check("\"skipped\": [],", keyless, Ok(()));
        check(
            "\"skipped\": [],",
            r#""skipped": [], "signing": {"mode": "key", "public_key": "cosign.pub"},"#,
            Ok(()),
        );
        check(
            "\"skipped\": [],",
            r#""skipped": [], "signing": {"mode": "sigstore"},"#,
            Err("signing.mode: unknown variant `sigstore`"),
        );
        check(
            "\"platforms\": []}",
            signed,
            Err("references[0].signature: the release says it was not signed (signing), yet records a signature"),
        );
        let both = NOTES.replacen("\"skipped\": [],", keyless, 1).replacen(
            "\"platforms\": []}",
            signed,
            1,
        );
        let notes = ReleaseNotes::parse(&both).unwrap();
        assert_eq!(ReleaseNotes::parse(&notes.to_json()).unwrap(), notes);
        check("\"image\": \"php-fpm\",", "", Err("missing field `image`"));
        check("\n}", "\n}\n{}", Err("trailing characters"));
    }

    #[test]
    fn one_reference_with_two_digests_is_refused_naming_both_entries() {
        let edited = NOTES.replacen(
            "\"ref\": \"docker.io/20istack/php-fpm:v2.0.0-php-8.5\", \"registry\": \"docker.io/20istack\"",
            "\"ref\": \"ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5\", \"registry\": \"ghcr.io/20i-stack\"",
            1,
        );
        let digests = edited.rfind(AAA).unwrap();
        let edited = format!(
            "{}sha256:{}{}",
            &edited[..digests],
            "c".repeat(64),
            &edited[digests + AAA.len()..]
        );
        let error = format!("{:#}", ReleaseNotes::parse(&edited).unwrap_err());
        assert!(
            error.contains(
                "references[0] and references[1] both record ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5 with different digests"
            ),
            "{error}"
        );
        // The same entry twice, same digest, is harmless.
        let same = NOTES.replacen(
            "\"ref\": \"docker.io/20istack/php-fpm:v2.0.0-php-8.5\", \"registry\": \"docker.io/20istack\"",
            "\"ref\": \"ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5\", \"registry\": \"ghcr.io/20i-stack\"",
            1,
        );
        assert!(ReleaseNotes::parse(&same).is_ok());
    }

    #[test]
    fn round_trips_and_finds_digests() {
        let notes = ReleaseNotes::parse(NOTES).unwrap();
        assert_eq!(ReleaseNotes::parse(&notes.to_json()).unwrap(), notes);
        assert_eq!(
            notes
                .digest_of(&"docker.io/20istack/php-fpm:v2.0.0-php-8.5".parse().unwrap())
                .map(Digest::as_str),
            Some(AAA)
        );
        assert_eq!(
            notes.digest_of(&"docker.io/20istack/php-fpm:v2.0.0-php-8.4".parse().unwrap()),
            None
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("release-notes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v2.0.0.json");
        std::fs::write(&path, NOTES.replacen("\"v2.0.0\"", "\"v2\"", 1)).unwrap();
        let error = format!("{:#}", ReleaseNotes::load(&path).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            error.starts_with(&format!(
                "in release notes {}: version: `v2`",
                path.display()
            )),
            "{error}"
        );
    }
}
