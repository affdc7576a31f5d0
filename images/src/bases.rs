//! Base image locks: the digest-pinned upstream `php:<M.m>-fpm-alpine` each line builds on, one lock per source.

use std::{collections::BTreeMap, path::Path};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::{release_notes::is_date, Digest, ImageRef, PhpLine, Repository, Tag};

/// The matrix's base lock as shipped, compiled in, so a launcher's local build passes the `PHP_BASE` a release does.
pub const SHIPPED_LOCK_TOML: &str = include_str!("../bases/docker-hub.lock.toml");

/// The upstream tag a PHP line's base comes from.
pub fn base_tag(line: PhpLine) -> Tag {
    format!("{line}-fpm-alpine")
        .parse()
        .expect("a PHP line and -fpm-alpine make a tag")
}

/// The PHP line a base tag starts with: `8.4` for `8.4-fpm-alpine`, `8.4.1-fpm` or `8.4`.
fn tag_line(tag: &Tag) -> Option<PhpLine> {
    let tag = tag.as_str();
    let version = tag.split('-').next().unwrap_or(tag);
    let mut parts = version.splitn(3, '.');
    let line = format!("{}.{}", parts.next()?, parts.next()?);
    let patch_ok = parts
        .next()
        .is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    patch_ok.then(|| line.parse().ok()).flatten()
}

/// A lock file: where the bases come from and the digest of each line's base at the time it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseLock {
    /// The repository the tags are read from and pulled from, e.g. `docker.io/library/php`.
    pub source: Repository,
    /// When the digests were read (`YYYY-MM-DD`).
    pub read_on: String,
    /// How they were read: a registry, or a public record of it.
    pub read_from: String,
    pub lines: BTreeMap<PhpLine, LockedBase>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedBase {
    pub tag: Tag,
    pub digest: Digest,
    /// The PHP version the base says it holds (its `PHP_VERSION` or `org.opencontainers.image.version`), when
    /// it says one: what a base update's pull request shows next to the digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub php_version: Option<String>,
}

/// The base one build uses: the reference passed as the `PHP_BASE` build argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// `source:tag@digest`: the tag says what it is, the digest decides what is pulled.
    pub reference: ImageRef,
    pub digest: Digest,
}

const HEADER: &str = "\
# Base images of images/php-fpm/Dockerfile, pinned by index digest per PHP line.
# Builds read this file, so a release never picks up a different base silently.
# Regenerate with: cargo xtask bases refresh   (see docs/maintaining.md)
";

impl BaseLock {
    pub fn load(path: &Path) -> anyhow::Result<BaseLock> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading base lock {}", path.display()))?;
        BaseLock::parse(&text).with_context(|| format!("in base lock {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<BaseLock> {
        let refresh = "run `cargo xtask bases refresh` to rewrite the lock";
        let lock: BaseLock = toml::from_str(text).context("the base lock is not valid")?;
        if !is_date(&lock.read_on) {
            bail!(
                "read_on = \"{}\" is not a day as YYYY-MM-DD (2026-11-25): {refresh}",
                lock.read_on
            );
        }
        for (line, base) in &lock.lines {
            let field = format!("lines.\"{line}\".tag = \"{}\"", base.tag);
            match tag_line(&base.tag) {
                Some(named) if named == *line => {}
                Some(named) => bail!(
                    "{field} is a PHP {named} base, not a PHP {line} one: {refresh}, or fix the tag to {}",
                    base_tag(*line)
                ),
                None => bail!(
                    "{field} does not start with the PHP line ({}): {refresh}",
                    base_tag(*line)
                ),
            }
        }
        Ok(lock)
    }

    /// Fails unless every one of `lines` is pinned, naming the missing ones and the command that pins them.
    pub fn require_lines(&self, lines: &[PhpLine], lock_path: &Path) -> anyhow::Result<()> {
        let missing: Vec<String> = lines
            .iter()
            .filter(|line| !self.lines.contains_key(line))
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} pins no base for PHP {} (a line of the matrix): run `cargo xtask bases refresh --lock {}`",
                lock_path.display(),
                missing.join(", "),
                lock_path.display()
            );
        }
        Ok(())
    }

    /// The file's text: a fixed header, then the data.
    pub fn render(&self) -> String {
        let body = toml::to_string(self).expect("a base lock always serialises");
        format!("{HEADER}{body}")
    }

    /// The pinned base of a line, or an error that says how to pin it.
    pub fn base_for(&self, line: PhpLine, lock_path: &Path) -> anyhow::Result<Base> {
        let locked = self.lines.get(&line).with_context(|| {
            format!(
                "no base digest for PHP {line} in {}: run `cargo xtask bases refresh --lock {}` to pin {}:{}",
                lock_path.display(),
                lock_path.display(),
                self.source,
                base_tag(line)
            )
        })?;
        Ok(Base {
            reference: self.source.tagged(&locked.tag).with_digest(&locked.digest),
            digest: locked.digest.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
source = "docker.io/library/php"
read_on = "2026-11-25"
read_from = "test"

[lines."8.4"]
tag = "8.4-fpm-alpine"
digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
"#;

    #[test]
    fn round_trips_and_resolves_bases() {
        let lock = BaseLock::parse(LOCK).unwrap();
        assert_eq!(BaseLock::parse(&lock.render()).unwrap(), lock);
        let base = lock
            .base_for(PhpLine::new(8, 4), Path::new("bases.lock"))
            .unwrap();
        assert_eq!(
            base.reference.to_string(),
            "docker.io/library/php:8.4-fpm-alpine@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let error = lock
            .base_for(PhpLine::new(8, 5), Path::new("bases.lock"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "no base digest for PHP 8.5 in bases.lock: run `cargo xtask bases refresh --lock bases.lock` \
             to pin docker.io/library/php:8.5-fpm-alpine"
        );
    }

    #[test]
    fn the_shipped_lock_is_as_refresh_writes_it() {
        let text = SHIPPED_LOCK_TOML;
        let matrix = crate::Matrix::embedded();
        assert_eq!(
            Path::new("images").join(&matrix.bases),
            Path::new("images/bases/docker-hub.lock.toml"),
            "SHIPPED_LOCK_TOML is the matrix's lock"
        );
        let lock = BaseLock::parse(text).unwrap();
        assert_eq!(
            lock.render(),
            text,
            "images/bases/docker-hub.lock.toml differs from `cargo xtask bases refresh` output"
        );
        let lines: Vec<PhpLine> = lock.lines.keys().copied().collect();
        assert_eq!(
            lines,
            crate::Matrix::embedded().php_lines(),
            "every line of the matrix has a pinned base"
        );
    }

    /// Parses `LOCK` edited by `from → to` (which must occur): `Ok(())` or an error containing `expected`.
    #[track_caller]
    fn check(from: &str, to: &str, expected: Result<(), &str>) {
        assert!(LOCK.contains(from), "`{from}` is not in the sample lock");
        let result = BaseLock::parse(&LOCK.replacen(from, to, 1)).map_err(|e| format!("{e:#}"));
        match (result, expected) {
            (Ok(_), Ok(())) => {}
            (Ok(_), Err(expected)) => panic!("accepted; expected `{expected}`"),
            (Err(error), Ok(())) => panic!("refused: {error}"),
            (Err(error), Err(expected)) => {
                assert!(error.contains(expected), "`{error}` lacks `{expected}`")
            }
        }
    }

    #[test]
    fn malformed_locks_name_the_field_and_the_fix() {
        let refresh = "run `cargo xtask bases refresh` to rewrite the lock";
        check("8.4-fpm-alpine", "8.4.1-fpm-alpine", Ok(()));
        check("8.4-fpm-alpine", "8.4", Ok(()));
        check("sha256:e3b0", "sha256:E3B0", Err("is not a sha256 digest"));
        check(
            "tag = \"8.4-fpm-alpine\"",
            "tag = \"8.1-fpm-alpine\"",
            Err(&format!("lines.\"8.4\".tag = \"8.1-fpm-alpine\" is a PHP 8.1 base, not a PHP 8.4 one: {refresh}, or fix the tag to 8.4-fpm-alpine")),
        );
        check(
            "tag = \"8.4-fpm-alpine\"",
            "tag = \"fpm-alpine\"",
            Err(&format!("lines.\"8.4\".tag = \"fpm-alpine\" does not start with the PHP line (8.4-fpm-alpine): {refresh}")),
        );
        check(
            "tag = \"8.4-fpm-alpine\"",
            "tag = \"8.4-fpm alpine\"",
            Err("the tag `8.4-fpm alpine` has a character other than letters, digits"),
        );
        check(
            "[lines.\"8.4\"]",
            "[lines.\"8.4.1\"]",
            Err("PHP version `8.4.1` is not a PHP line: use `8.4`"),
        );
        check(
            "read_on = \"2026-11-25\"",
            "read_on = \"yesterday\"",
            Err(&format!(
                "read_on = \"yesterday\" is not a day as YYYY-MM-DD (2026-11-25): {refresh}"
            )),
        );
        check(
            "source = \"docker.io/library/php\"",
            "source = \"docker.io/library/php:8.4\"",
            Err("`docker.io/library/php:8.4` is not a repository"),
        );
        check(
            "read_from = \"test\"",
            "read_from = \"test\"\nsigned = true",
            Err("unknown field `signed`"),
        );
    }

    #[test]
    fn every_line_of_the_matrix_must_be_pinned() {
        let lock = BaseLock::parse(LOCK).unwrap();
        lock.require_lines(&[PhpLine::new(8, 4)], Path::new("b.lock"))
            .unwrap();
        let error = lock
            .require_lines(
                &[PhpLine::new(8, 3), PhpLine::new(8, 4), PhpLine::new(8, 5)],
                Path::new("b.lock"),
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "b.lock pins no base for PHP 8.3, 8.5 (a line of the matrix): run `cargo xtask bases refresh --lock b.lock`"
        );
    }
}
