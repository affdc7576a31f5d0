//! The image matrix (`images/matrix.toml`): image name, PHP lines, platforms and registries, read and checked.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

use crate::{ImageRef, Namespace, PhpLine, RepoName};

/// The matrix file as shipped, compiled in so the launcher knows the lines and registries without a checkout.
pub const MATRIX_TOML: &str = include_str!("../matrix.toml");

/// Where the matrix lives, relative to the workspace root.
pub const MATRIX_PATH: &str = "images/matrix.toml";

/// What images exist: one image name, built for every line and platform, pushed to every registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    pub image: RepoName,
    pub title: String,
    pub description: String,
    pub source: String,
    /// The Dockerfile, relative to the matrix file; its directory is the build context.
    pub dockerfile: PathBuf,
    /// The default base lock, relative to the matrix file.
    pub bases: PathBuf,
    pub default_line: PhpLine,
    pub platforms: Vec<String>,
    #[serde(default)]
    pub attestations: Attestations,
    /// An SPDX SBOM per platform image, made at build time by a BuildKit scanner image; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Sbom>,
    pub registries: Registries,
    pub lines: Vec<Line>,
}

/// What is attested alongside each image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Attestations {
    /// No attestation: the index lists the platform images only.
    None,
    /// SLSA provenance in mode=min, one attestation manifest per platform.
    #[default]
    Provenance,
}

impl Attestations {
    /// The provenance entry of a bake target's `attest`.
    pub fn attest_entry(self) -> &'static str {
        match self {
            Attestations::None => "type=provenance,disabled=true",
            Attestations::Provenance => "type=provenance,mode=min",
        }
    }
}

/// The `[sbom]` table: whether each platform image gets an SBOM attestation, and which scanner makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sbom {
    pub enabled: bool,
    /// The BuildKit SBOM generator image (`attest type=sbom,generator=…`), pinned by digest so every release runs
    /// the same scanner. BuildKit pulls it during the build, so it must be pullable from the builder.
    pub scanner: ImageRef,
}

impl Matrix {
    /// The scanner the release runs when SBOMs are on.
    pub fn sbom_scanner(&self) -> Option<&ImageRef> {
        self.sbom
            .as_ref()
            .filter(|sbom| sbom.enabled)
            .map(|sbom| &sbom.scanner)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// The namespace pushed first, verified, and pulled by default (`ghcr.io/20i-stack`).
    pub canonical: Namespace,
    /// Namespaces that get a digest-identical copy of every tag.
    #[serde(default)]
    pub mirrors: Vec<Namespace>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub php: PhpLine,
    /// Set when the line's upstream base is end of life: why, in a sentence plans and notes repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eol: Option<String>,
}

impl Matrix {
    /// The matrix compiled into this binary.
    pub fn embedded() -> Matrix {
        Matrix::parse(MATRIX_TOML).expect("images/matrix.toml is checked by the test suite")
    }

    pub fn load(path: &Path) -> anyhow::Result<Matrix> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Matrix::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Matrix> {
        let mut matrix: Matrix = toml::from_str(text).context("the image matrix is not valid")?;
        matrix.lines.sort_by_key(|line| line.php);
        matrix.validate()?;
        Ok(matrix)
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.lines.is_empty(), "the matrix lists no PHP lines");
        for pair in self.lines.windows(2) {
            ensure!(
                pair[0].php != pair[1].php,
                "PHP line {} is listed twice",
                pair[0].php
            );
        }
        ensure!(
            self.line(self.default_line).is_some(),
            "default line {} is not one of the PHP lines ({})",
            self.default_line,
            self.php_lines()
                .iter()
                .map(PhpLine::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        ensure!(!self.platforms.is_empty(), "the matrix lists no platforms");
        for (n, platform) in self.platforms.iter().enumerate() {
            check_platform(platform)?;
            ensure!(
                !self.platforms[..n].contains(platform),
                "platform `{platform}` is listed twice in platforms: list each platform once"
            );
        }
        if let Some(sbom) = &self.sbom {
            ensure!(
                sbom.scanner.digest().is_some(),
                "sbom.scanner `{}` is not pinned by digest: add `@sha256:…` (`docker buildx imagetools inspect {}` \
                 prints it) so that every release runs the same scanner",
                sbom.scanner,
                sbom.scanner
            );
        }
        for (n, mirror) in self.registries.mirrors.iter().enumerate() {
            ensure!(
                *mirror != self.registries.canonical,
                "mirror `{mirror}` is the canonical registry too: a registry is either canonical or a mirror; \
             remove it from the mirrors (`--mirror`, or `[registries] mirrors` in the matrix)"
            );
            ensure!(
                !self.registries.mirrors[..n].contains(mirror),
                "mirror `{mirror}` is listed twice in registries.mirrors (or --mirror): list each mirror once"
            );
        }
        Ok(())
    }

    pub fn line(&self, php: PhpLine) -> Option<&Line> {
        self.lines.iter().find(|line| line.php == php)
    }

    pub fn php_lines(&self) -> Vec<PhpLine> {
        self.lines.iter().map(|line| line.php).collect()
    }

    /// Replaces the canonical registry and/or the mirrors, as `--registry` and `--mirror` do.
    pub fn override_registries(
        &mut self,
        canonical: Option<&Namespace>,
        mirrors: Option<&[Namespace]>,
    ) -> anyhow::Result<()> {
        if let Some(canonical) = canonical {
            self.registries.canonical = canonical.clone();
        }
        if let Some(mirrors) = mirrors {
            self.registries.mirrors = mirrors.to_vec();
        }
        self.validate()
    }

    /// The canonical namespace first, then the mirrors.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        std::iter::once(&self.registries.canonical).chain(&self.registries.mirrors)
    }
}

/// `os/arch` or `os/arch/variant`, lowercase.
pub fn check_platform(platform: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = platform.split('/').collect();
    let well_formed = (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !well_formed {
        bail!("platform `{platform}` is not of the form os/arch, for example linux/arm64");
    }
    Ok(())
}

/// A registry namespace such as `ghcr.io/20i-stack`, checked as [`Namespace`] does; for callers that still hold
/// it as text.
pub fn check_namespace(namespace: &str) -> anyhow::Result<()> {
    namespace.parse::<Namespace>().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned scanner's digest in the shipped matrix, with its `@`.
    const SCANNER_DIGEST: &str =
        "@sha256:ae4f3b554449e7e25548e7d8ccc029d17357348e30c6e3df01b92bc93654d6a9";

    #[test]
    fn the_shipped_matrix_makes_sboms_with_a_pinned_scanner() {
        let matrix = Matrix::embedded();
        let scanner = matrix
            .sbom_scanner()
            .expect("SBOMs are on in the shipped matrix");
        assert_eq!(
            scanner.to_string(),
            format!("docker.io/docker/buildkit-syft-scanner:1.12.0{SCANNER_DIGEST}")
        );
        let off = Matrix::parse(&MATRIX_TOML.replace("enabled = true", "enabled = false")).unwrap();
        assert_eq!(off.sbom_scanner(), None);
        let absent = MATRIX_TOML
            .lines()
            .filter(|l| {
                !l.starts_with("[sbom]") && !l.starts_with("enabled") && !l.starts_with("scanner")
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(Matrix::parse(&absent).unwrap().sbom_scanner(), None);
    }

    #[test]
    fn the_shipped_matrix_is_valid() {
        let matrix = Matrix::embedded();
        assert_eq!(matrix.image.as_str(), "php-fpm");
        let lines: Vec<String> = matrix.php_lines().iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["8.1", "8.2", "8.3", "8.4", "8.5"]);
        assert_eq!(matrix.default_line, PhpLine::new(8, 5));
        assert_eq!(matrix.platforms, ["linux/amd64", "linux/arm64"]);
        assert!(
            matrix.line(PhpLine::new(8, 1)).unwrap().eol.is_some(),
            "8.1 is end of life upstream"
        );
        assert_eq!(matrix.registries.canonical.host(), "ghcr.io");
        assert!(matrix
            .registries
            .mirrors
            .iter()
            .all(|m| m.host() == "docker.io"));
    }

    #[track_caller]
    fn check_invalid(edit: impl Fn(&str) -> String, expected: &str) {
        let text = edit(MATRIX_TOML);
        assert_ne!(text, MATRIX_TOML, "the edit changed nothing");
        let error = format!("{:#}", Matrix::parse(&text).unwrap_err());
        assert!(
            error.contains(expected),
            "error `{error}` does not contain `{expected}`"
        );
    }

    #[test]
    fn invalid_matrices_are_refused_with_the_reason() {
        check_invalid(
            |t| t.replace("default_line = \"8.5\"", "default_line = \"7.4\""),
            "default line 7.4 is not one of the PHP lines (8.1, 8.2, 8.3, 8.4, 8.5)",
        );
        check_invalid(
            |t| t.replace("default_line = \"8.5\"", "default_line = \"8.5.1\""),
            "use `8.5`",
        );
        check_invalid(
            |t| t.replace("php = \"8.2\"", "php = \"8.3\""),
            "PHP line 8.3 is listed twice",
        );
        check_invalid(
            |t| t.replace("\"linux/arm64\"", "\"arm64\""),
            "platform `arm64` is not of the form os/arch",
        );
        check_invalid(
            |t| t.replace("\"ghcr.io/20i-stack\"", "\"https://ghcr.io/20i-stack\""),
            "registry namespace `https://ghcr.io/20i-stack` is not valid",
        );
        check_invalid(
            |t| t.replace("image = \"php-fpm\"", "image = \"PHP FPM\""),
            "image name `PHP FPM` is not a valid repository name",
        );
        check_invalid(
            |t| t.replace("enabled = true", "enabled = \"yes\""),
            "invalid type: string \"yes\", expected a boolean",
        );
        check_invalid(
            |t| t.replace("enabled = true", "enable = true"),
            "unknown field `enable`",
        );
        check_invalid(
            |t| t.replace(SCANNER_DIGEST, ""),
            "sbom.scanner `docker.io/docker/buildkit-syft-scanner:1.12.0` is not pinned by digest: add `@sha256:…`",
        );
        check_invalid(
            |t| t.replace("scanner = \"docker.io/", "scanner = \"-docker.io/"),
            "is not an image reference",
        );
        check_invalid(
            |t| t.replace("platforms =", "platform ="),
            "unknown field `platform`",
        );
        check_invalid(
            |t| t.replace("\"linux/arm64\"", "\"linux/amd64\""),
            "platform `linux/amd64` is listed twice in platforms: list each platform once",
        );
        check_invalid(
            |t| t.replace("mirrors = [\"docker.io/20istack\"]", "mirrors = [\"docker.io/20istack\", \"docker.io/20istack\"]"),
            "mirror `docker.io/20istack` is listed twice in registries.mirrors (or --mirror): list each mirror once",
        );
        check_invalid(
            |t| {
                t.replace(
                    "mirrors = [\"docker.io/20istack\"]",
                    "mirrors = [\"ghcr.io/20i-stack\"]",
                )
            },
            "mirror `ghcr.io/20i-stack` is the canonical registry too",
        );
    }

    #[test]
    fn registries_can_be_overridden() {
        let mut matrix = Matrix::embedded();
        let ns = |text: &str| text.parse::<Namespace>().unwrap();
        matrix
            .override_registries(
                Some(&ns("127.0.0.1:5000/test")),
                Some(&[ns("127.0.0.1:5001/mirror")]),
            )
            .unwrap();
        let namespaces: Vec<String> = matrix.namespaces().map(ToString::to_string).collect();
        assert_eq!(namespaces, ["127.0.0.1:5000/test", "127.0.0.1:5001/mirror"]);
        let error = matrix
            .override_registries(None, Some(&[ns("127.0.0.1:5000/test")]))
            .unwrap_err();
        assert!(
            error.to_string().contains("is the canonical registry too"),
            "{error}"
        );
    }
}
