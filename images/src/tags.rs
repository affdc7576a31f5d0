//! The tag scheme: which tags a release gets in every registry. The xtask and the launcher both use it; no
//! other code spells a tag.
//!
//! For release `vX.Y.Z` and PHP line `M.m`, under `<namespace>/<image>` in every registry:
//! - `vX.Y.Z-php-M.m`: the release pin, pushed once and never moved (except by a documented republish);
//! - `vX.Y.Z`: the release's default PHP line;
//! - `php-M.m`: the newest stable release's image of that line;
//! - `latest`: the newest stable release's default line.

use std::{cmp::Ordering, fmt, str::FromStr};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::{reference::TAG_MAX, PhpLine, Tag};

/// `latest`: the tag every consumer of the newest stable release's default line uses.
pub fn latest() -> Tag {
    Tag::from_scheme("latest".to_owned())
}

/// The longest `-php-M.m` a pin tag can end with (`PhpLine` is two `u16`s).
const LINE_SUFFIX_MAX: usize = "-php-65535.65535".len();

/// A stack release version, `vX.Y.Z` with an optional prerelease (`v2.1.0-rc.1`), compared as semver.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReleaseVersion(semver::Version);

impl ReleaseVersion {
    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    pub fn semver(&self) -> &semver::Version {
        &self.0
    }
}

impl fmt::Display for ReleaseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl FromStr for ReleaseVersion {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<ReleaseVersion> {
        let hint = "use vX.Y.Z or X.Y.Z, for example v2.0.0 or v2.1.0-rc.1";
        let text = input.strip_prefix('v').unwrap_or(input);
        let Ok(version) = semver::Version::parse(text) else {
            bail!("`{input}` is not a release version: {hint}");
        };
        let tag_length = 1 + text.len() + LINE_SUFFIX_MAX;
        if tag_length > TAG_MAX {
            bail!(
                "release version `{}…` is {} characters long: its pin tags (vX.Y.Z-php-M.m) could reach \
                 {tag_length} characters and docker allows {TAG_MAX}; shorten it by {} characters",
                &text[..text.len().min(24)],
                input.len(),
                tag_length - TAG_MAX
            );
        }
        if !version.build.is_empty() {
            // `+` is not allowed in an image tag, so build metadata could never be published.
            bail!(
                "`{input}` has build metadata (`+{}`), which image tags cannot carry: {hint}",
                version.build
            );
        }
        Ok(ReleaseVersion(version))
    }
}

impl PartialOrd for ReleaseVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ReleaseVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl Serialize for ReleaseVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReleaseVersion {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ReleaseVersion, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `vX.Y.Z-php-M.m`: the immutable tag of one line of one release. A release version is short enough and made
/// of tag characters (semver's prerelease grammar is a subset), so this is always a valid tag.
pub fn pin_tag(version: &ReleaseVersion, line: PhpLine) -> Tag {
    Tag::from_scheme(format!("{version}-php-{line}"))
}

/// A pin tag read back from a registry's tag list: `vX.Y.Z-php-M.m`, parsed once into its release and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinTag {
    pub version: ReleaseVersion,
    pub php: PhpLine,
}

/// The release and line of a pin tag; `None` for every other tag (moving tags, signatures, `X.Y.Z-php-M.m`
/// without its `v`, anything [`pin_tag`] would not spell exactly so).
pub fn parse_pin_tag(tag: &Tag) -> Option<PinTag> {
    let text = tag.as_str();
    if !text.starts_with('v') {
        return None;
    }
    let (version, line) = text.rsplit_once("-php-")?;
    let version: ReleaseVersion = version.parse().ok()?;
    let php: PhpLine = line.parse().ok()?;
    (pin_tag(&version, php) == *tag).then_some(PinTag { version, php })
}

/// The newest stable release among `tags` that has a pin (a release tag alone, or a prerelease, does not count).
pub fn newest_stable_pinned<'a>(tags: impl IntoIterator<Item = &'a Tag>) -> Option<ReleaseVersion> {
    tags.into_iter()
        .filter_map(parse_pin_tag)
        .map(|pin| pin.version)
        .filter(|version| !version.is_prerelease())
        .max()
}

/// `php-M.m`: the moving tag of a PHP line.
pub fn line_tag(line: PhpLine) -> Tag {
    Tag::from_scheme(format!("php-{line}"))
}

/// `vX.Y.Z`: the release's default line.
pub fn release_tag(version: &ReleaseVersion) -> Tag {
    Tag::from_scheme(version.to_string())
}

/// `<namespace>/<image>:<tag>` as text, for the launcher until it carries [`crate::ImageRef`] too.
pub fn reference(namespace: &str, image: &str, tag: &str) -> String {
    format!("{}/{image}:{tag}", namespace.trim_end_matches('/'))
}

/// What a tag is for; decides when it is pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagKind {
    /// `vX.Y.Z-php-M.m`, pushed first and verified before anything moves.
    Pin,
    /// `vX.Y.Z`, the release's default line.
    Release,
    /// `php-M.m`.
    Line,
    /// `latest`.
    Latest,
}

impl TagKind {
    /// Everything but a pin is an alias that is moved onto a verified pin.
    pub fn is_moving(self) -> bool {
        self != TagKind::Pin
    }
}

/// One tag of a release, and the PHP line whose pin it points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseTag {
    pub tag: Tag,
    pub kind: TagKind,
    pub php: PhpLine,
}

/// A tag the release does not touch, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub tag: Tag,
    pub reason: String,
}

/// The tags of one release: the same in every registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagSet {
    /// Pins first (in line order), then the moving tags in the order they are moved.
    pub tags: Vec<ReleaseTag>,
    pub skipped: Vec<Skipped>,
}

impl TagSet {
    pub fn pins(&self) -> impl Iterator<Item = &ReleaseTag> {
        self.tags.iter().filter(|t| t.kind == TagKind::Pin)
    }

    pub fn moving(&self) -> impl Iterator<Item = &ReleaseTag> {
        self.tags.iter().filter(|t| t.kind.is_moving())
    }
}

/// Applies the tag rules to a release.
///
/// `published` lists the releases already out (prereleases included; their order does not matter). A prerelease
/// gets only its own tags; a stable release moves `php-M.m` and `latest` only when it is newer than every
/// published stable release. Releasing a version that is already published is an error.
pub fn tags_for(
    version: &ReleaseVersion,
    published: &[ReleaseVersion],
    lines: &[PhpLine],
    default_line: PhpLine,
) -> anyhow::Result<TagSet> {
    if published.contains(version) {
        bail!(
            "{version} is already published: release a new version, for example v{}",
            next_patch(version)
        );
    }
    if !lines.contains(&default_line) {
        bail!("default PHP line {default_line} is not one of the release's lines");
    }

    let mut tags: Vec<ReleaseTag> = lines
        .iter()
        .map(|&php| ReleaseTag {
            tag: pin_tag(version, php),
            kind: TagKind::Pin,
            php,
        })
        .collect();
    tags.push(ReleaseTag {
        tag: release_tag(version),
        kind: TagKind::Release,
        php: default_line,
    });

    let newest_stable = published.iter().filter(|v| !v.is_prerelease()).max();
    let mut moving = Vec::new();
    for &php in lines {
        moving.push(ReleaseTag {
            tag: line_tag(php),
            kind: TagKind::Line,
            php,
        });
    }
    moving.push(ReleaseTag {
        tag: latest(),
        kind: TagKind::Latest,
        php: default_line,
    });

    let blocker = if version.is_prerelease() {
        Some(format!("{version} is a prerelease"))
    } else {
        match newest_stable {
            Some(newest) if newest > version => Some(format!("{version} is not the newest stable")),
            _ => None,
        }
    };
    let mut skipped = Vec::new();
    match blocker {
        None => tags.extend(moving),
        Some(why) => {
            for tag in moving {
                let reason = match newest_stable {
                    Some(newest) => format!("{} stays on {newest}: {why}", tag.tag),
                    None => format!(
                        "{} is not created: {why} and no stable release is published",
                        tag.tag
                    ),
                };
                skipped.push(Skipped {
                    tag: tag.tag,
                    reason,
                });
            }
        }
    }
    Ok(TagSet { tags, skipped })
}

fn next_patch(version: &ReleaseVersion) -> semver::Version {
    let v = version.semver();
    if v.pre.is_empty() {
        semver::Version::new(v.major, v.minor, v.patch + 1)
    } else {
        semver::Version::new(v.major, v.minor, v.patch)
    }
}

/// Parses a comma-separated list of releases (`v1.0.0,v2.0.0`), as `--published` takes it.
pub fn parse_releases(list: &str) -> anyhow::Result<Vec<ReleaseVersion>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<PhpLine> {
        vec![PhpLine::new(8, 4), PhpLine::new(8, 5)]
    }

    /// Renders a tag set as one short line: `tags | skipped tags`, or the error.
    fn summary(version: &str, published: &str) -> String {
        let version: ReleaseVersion = match version.parse() {
            Ok(v) => v,
            Err(e) => return format!("error: {e}"),
        };
        let published = parse_releases(published).unwrap();
        match tags_for(&version, &published, &lines(), PhpLine::new(8, 5)) {
            Ok(set) => {
                let tags: Vec<String> = set
                    .tags
                    .iter()
                    .map(|t| format!("{}={}", t.tag, t.php))
                    .collect();
                let skipped: Vec<&str> = set.skipped.iter().map(|s| s.reason.as_str()).collect();
                format!("{} | {}", tags.join(" "), skipped.join("; "))
            }
            Err(e) => format!("error: {e}"),
        }
    }

    #[track_caller]
    fn check(version: &str, published: &str, expected: &str) {
        assert_eq!(
            summary(version, published),
            expected,
            "release {version} after [{published}]"
        );
    }

    const ALL: &str = "php-8.4=8.4 php-8.5=8.5 latest=8.5";

    #[test]
    fn tag_rules() {
        // First release: everything.
        check(
            "v1.0.0",
            "",
            &format!("v1.0.0-php-8.4=8.4 v1.0.0-php-8.5=8.5 v1.0.0=8.5 {ALL} | "),
        );
        // `X.Y.Z` is accepted and spelled `vX.Y.Z`.
        check(
            "1.0.0",
            "",
            &format!("v1.0.0-php-8.4=8.4 v1.0.0-php-8.5=8.5 v1.0.0=8.5 {ALL} | "),
        );
        // A later stable moves the line tags and latest.
        check(
            "v2.0.0",
            "v1.0.0",
            &format!("v2.0.0-php-8.4=8.4 v2.0.0-php-8.5=8.5 v2.0.0=8.5 {ALL} | "),
        );
        // An older patch moves nothing.
        check(
            "v1.9.5",
            "v1.0.0,v2.0.0",
            "v1.9.5-php-8.4=8.4 v1.9.5-php-8.5=8.5 v1.9.5=8.5 | \
             php-8.4 stays on v2.0.0: v1.9.5 is not the newest stable; \
             php-8.5 stays on v2.0.0: v1.9.5 is not the newest stable; \
             latest stays on v2.0.0: v1.9.5 is not the newest stable",
        );
        // A prerelease gets only its own tags.
        check(
            "v2.1.0-rc.1",
            "v2.0.0",
            "v2.1.0-rc.1-php-8.4=8.4 v2.1.0-rc.1-php-8.5=8.5 v2.1.0-rc.1=8.5 | \
             php-8.4 stays on v2.0.0: v2.1.0-rc.1 is a prerelease; \
             php-8.5 stays on v2.0.0: v2.1.0-rc.1 is a prerelease; \
             latest stays on v2.0.0: v2.1.0-rc.1 is a prerelease",
        );
        check(
            "v1.0.0-rc.1",
            "",
            "v1.0.0-rc.1-php-8.4=8.4 v1.0.0-rc.1-php-8.5=8.5 v1.0.0-rc.1=8.5 | \
             php-8.4 is not created: v1.0.0-rc.1 is a prerelease and no stable release is published; \
             php-8.5 is not created: v1.0.0-rc.1 is a prerelease and no stable release is published; \
             latest is not created: v1.0.0-rc.1 is a prerelease and no stable release is published",
        );
        // A stable after its prerelease, and after a higher prerelease, moves everything.
        check(
            "v2.1.0",
            "v2.0.0,v2.1.0-rc.1",
            &format!("v2.1.0-php-8.4=8.4 v2.1.0-php-8.5=8.5 v2.1.0=8.5 {ALL} | "),
        );
        check(
            "v2.1.0",
            "v2.0.0,v3.0.0-beta.1",
            &format!("v2.1.0-php-8.4=8.4 v2.1.0-php-8.5=8.5 v2.1.0=8.5 {ALL} | "),
        );
        // Semver, not strings: v1.10.0 is newer than v1.9.0, and v1.9.1 is older than v1.10.0.
        check(
            "v1.10.0",
            "v1.9.0",
            &format!("v1.10.0-php-8.4=8.4 v1.10.0-php-8.5=8.5 v1.10.0=8.5 {ALL} | "),
        );
        assert!(summary("v1.9.1", "v1.10.0")
            .contains("latest stays on v1.10.0: v1.9.1 is not the newest stable"));
        // The published list's order does not matter.
        assert!(summary("v1.9.1", "v1.10.0,v1.0.0").contains("latest stays on v1.10.0"));
        // The same version twice.
        check(
            "v2.0.0",
            "v1.0.0,v2.0.0",
            "error: v2.0.0 is already published: release a new version, for example v2.0.1",
        );
        check(
            "2.0.0",
            "v2.0.0",
            "error: v2.0.0 is already published: release a new version, for example v2.0.1",
        );
        check(
            "v2.1.0-rc.1",
            "v2.1.0-rc.1",
            "error: v2.1.0-rc.1 is already published: release a new version, for example v2.1.0",
        );
    }

    #[test]
    fn invalid_versions_show_a_valid_example() {
        let hint = "use vX.Y.Z or X.Y.Z, for example v2.0.0 or v2.1.0-rc.1";
        for input in [
            "2.0",
            "v2",
            "version-2.0.0",
            "V2.0.0",
            "",
            "v2.0.0.1",
            "vv2.0.0",
            "v02.0.0",
            "latest",
        ] {
            check(
                input,
                "",
                &format!("error: `{input}` is not a release version: {hint}"),
            );
        }
        let long = format!("v1.0.0-{}", "a".repeat(300));
        assert!(summary(&long, "").contains("is 307 characters long: its pin tags (vX.Y.Z-php-M.m) could reach 323 characters and docker allows 128; shorten it by 195 characters"), "{}", summary(&long, ""));
        let longest = format!("v1.0.0-{}", "a".repeat(105));
        assert!(summary(&longest, "").starts_with(&longest));
        check("v2.0.0+build.5", "", &format!("error: `v2.0.0+build.5` has build metadata (`+build.5`), which image tags cannot carry: {hint}"));
    }

    #[test]
    fn pin_tags_read_back() {
        let pin = |v: &str, line: &str| {
            Some(PinTag {
                version: v.parse().unwrap(),
                php: line.parse().unwrap(),
            })
        };
        let cases = [
            ("v2.0.0-php-8.4", pin("v2.0.0", "8.4")),
            ("v2.1.0-rc.1-php-8.5", pin("v2.1.0-rc.1", "8.5")),
            ("v2.1.0-php-rc-php-8.5", pin("v2.1.0-php-rc", "8.5")),
            ("2.0.0-php-8.4", None),
            ("v2.0.0", None),
            ("php-8.4", None),
            ("latest", None),
            ("v2.0.0-php-8", None),
            ("v2.0.0-php-08.4", None),
            ("v02.0.0-php-8.4", None),
            ("sha256-abc.sig", None),
            ("v2.0.0-php-8.4-extra", None),
        ];
        for (text, expected) in cases {
            let tag: Tag = text.parse().unwrap();
            assert_eq!(parse_pin_tag(&tag), expected, "{text}");
        }
    }

    #[test]
    fn the_newest_stable_release_has_a_pin() {
        let cases = [
            ("", None),
            ("latest php-8.5 v3.0.0", None),
            (
                "v1.0.0-php-8.4 v1.10.0-php-8.4 v1.9.0-php-8.5",
                Some("v1.10.0"),
            ),
            ("v1.0.0-php-8.4 v2.0.0-rc.1-php-8.4 v2.0.0", Some("v1.0.0")),
            ("v2.0.0-rc.1-php-8.4", None),
        ];
        for (list, expected) in cases {
            let tags: Vec<Tag> = list
                .split_whitespace()
                .map(|t| t.parse().unwrap())
                .collect();
            let newest = newest_stable_pinned(&tags).map(|v| v.to_string());
            assert_eq!(newest.as_deref(), expected, "{list}");
        }
    }

    #[test]
    fn references() {
        let v: ReleaseVersion = "v2.0.0".parse().unwrap();
        assert_eq!(
            reference(
                "ghcr.io/20i-stack",
                "php-fpm",
                pin_tag(&v, PhpLine::new(8, 4)).as_str()
            ),
            "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.4"
        );
        assert_eq!(
            reference("127.0.0.1:5000/ns/", "php-fpm", latest().as_str()),
            "127.0.0.1:5000/ns/php-fpm:latest"
        );
    }
}
