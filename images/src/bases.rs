//! Base image locks: the digest-pinned upstream `php:<M.m>-fpm-alpine` each line builds on, one lock per source.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::{Digest, PhpLine};

/// The matrix's base lock as shipped, compiled in, so a launcher's local build passes the `PHP_BASE` a release does.
pub const SHIPPED_LOCK_TOML: &str = include_str!("../bases/docker-hub.lock.toml");

/// The upstream tag a PHP line's base comes from.
pub fn base_tag(line: PhpLine) -> String {
    format!("{line}-fpm-alpine")
}

/// A lock file: where the bases come from and the digest of each line's base at the time it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseLock {
    /// The repository the tags are read from and pulled from, e.g. `docker.io/library/php`.
    pub source: String,
    /// When the digests were read (`YYYY-MM-DD`).
    pub read_on: String,
    /// How they were read: a registry, or a public record of it.
    pub read_from: String,
    pub lines: BTreeMap<PhpLine, LockedBase>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedBase {
    pub tag: String,
    pub digest: Digest,
}

/// The base one build uses: the reference passed as the `PHP_BASE` build argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// `source:tag@digest`: the tag says what it is, the digest decides what is pulled.
    pub reference: String,
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
        let lock: BaseLock = toml::from_str(text).context("the base lock is not valid")?;
        crate::matrix::check_namespace(&lock.source)?;
        Ok(lock)
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
            reference: format!("{}:{}@{}", self.source, locked.tag, locked.digest),
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
            base.reference,
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

    #[test]
    fn refuses_bad_digests() {
        let error = BaseLock::parse(&LOCK.replace("sha256:e3b0", "sha256:E3B0")).unwrap_err();
        assert!(
            format!("{error:#}").contains("is not a sha256 digest"),
            "{error:#}"
        );
    }
}
