//! The inputs of a release, gathered from flags, the matrix, the base lock and git: all a plan is computed from.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::DateTime;
use clap::Args;
use stack_images::{
    matrix::{Attestations, MATRIX_PATH},
    tags, BaseLock, Matrix, Namespace, ReleaseVersion,
};
use xshell::Shell;

use crate::{display_path, git, project_root};

/// Flags shared by every command that plans a release.
#[derive(Args, Debug, Clone)]
pub struct ReleaseArgs {
    /// The release, `vX.Y.Z` or `X.Y.Z`, with an optional prerelease (`v2.1.0-rc.1`)
    pub version: String,
    /// Releases already published, comma-separated (default: the git tags `v*`, less the release's own)
    #[arg(long, value_name = "LIST")]
    pub published: Option<String>,
    /// The git revision the images are built from (default: HEAD)
    #[arg(long)]
    pub revision: Option<String>,
    /// The commit time, as seconds since the epoch or RFC 3339 (default: the revision's commit time)
    #[arg(long)]
    pub time: Option<String>,
    /// Canonical registry namespace, replacing the matrix's (e.g. 127.0.0.1:5000/test)
    #[arg(long, value_name = "NAMESPACE")]
    pub registry: Option<Namespace>,
    /// Mirror namespace, replacing the matrix's mirrors; repeat for several
    #[arg(long, value_name = "NAMESPACE")]
    pub mirror: Vec<Namespace>,
    /// Push to the canonical registry only
    #[arg(long, conflicts_with = "mirror")]
    pub no_mirrors: bool,
    /// Base image lock to build from (default: the matrix's, images/bases/docker-hub.lock.toml)
    #[arg(long, value_name = "FILE")]
    pub bases: Option<PathBuf>,
    /// Image matrix file (default: images/matrix.toml)
    #[arg(long, value_name = "FILE")]
    pub matrix: Option<PathBuf>,
    /// Build context replacing the matrix's (its Dockerfile is used): for stand-in images in tests and the demo
    #[arg(long, value_name = "DIR")]
    pub context: Option<PathBuf>,
    /// Attestations pushed with the images, replacing the matrix's setting
    #[arg(long, value_enum)]
    pub attestations: Option<Attestations>,
}

/// Everything a plan depends on, and nothing else: the plan is a pure function of this.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    pub matrix: Matrix,
    pub bases: BaseLock,
    pub bases_path: String,
    /// The build context, relative to the project root when inside it; its `Dockerfile` is built.
    pub context: String,
    pub version: ReleaseVersion,
    pub published: Vec<ReleaseVersion>,
    pub published_from: PublishedFrom,
    pub revision: String,
    pub commit_time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedFrom {
    Flag,
    GitTags,
}

impl ReleaseArgs {
    pub fn gather(&self, sh: &Shell) -> anyhow::Result<PlanInputs> {
        let version: ReleaseVersion = self.version.parse()?;

        let matrix_path = self
            .matrix
            .clone()
            .unwrap_or_else(|| project_root().join(MATRIX_PATH));
        let mut matrix = Matrix::load(&matrix_path)?;
        let mirrors = if self.no_mirrors {
            Some(&[][..])
        } else {
            Some(&self.mirror[..]).filter(|m| !m.is_empty())
        };
        matrix.override_registries(self.registry.as_ref(), mirrors)?;
        let matrix_dir = matrix_path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        if let Some(attestations) = self.attestations {
            matrix.attestations = attestations;
        }
        let dockerfile_name = matrix.dockerfile.file_name().unwrap_or_default().to_owned();
        let context = match &self.context {
            Some(dir) => {
                let dir = std::path::absolute(dir)
                    .with_context(|| format!("--context {}", dir.display()))?;
                anyhow::ensure!(
                    dir.join(&dockerfile_name).is_file(),
                    "--context {} has no {}",
                    dir.display(),
                    dockerfile_name.to_string_lossy()
                );
                dir
            }
            None => matrix_dir.join(
                matrix
                    .dockerfile
                    .parent()
                    .unwrap_or(std::path::Path::new(".")),
            ),
        };

        let bases_path = self
            .bases
            .clone()
            .unwrap_or_else(|| matrix_dir.join(&matrix.bases));
        let bases = BaseLock::load(&bases_path)?;

        let (published, published_from) = match &self.published {
            Some(list) => (
                tags::parse_releases(list).context("in --published")?,
                PublishedFrom::Flag,
            ),
            None => {
                // The release workflow runs on the release's own tag: that tag is this release, not a published one.
                let mut tags = git::release_tags(sh)?;
                tags.retain(|tag| *tag != version);
                (tags, PublishedFrom::GitTags)
            }
        };

        let revision = match &self.revision {
            Some(revision) => revision.clone(),
            None => {
                let head = git::head_revision(sh)?;
                // A release is built from its own tag: images labelled vX.Y.Z must come from what vX.Y.Z names.
                if let Some(tagged) = git::tag_revision(sh, &version.to_string()) {
                    if tagged != head {
                        bail!(
                            "the git tag {version} is {tagged} but HEAD is {head}: run `git checkout {version}` first \
                             (or pass --revision to build another commit on purpose)"
                        );
                    }
                }
                head
            }
        };
        let commit_time = match &self.time {
            Some(time) => parse_time(time)?,
            None => git::commit_time(sh, &revision)?,
        };

        Ok(PlanInputs {
            matrix,
            bases,
            bases_path: display_path(&bases_path),
            context: display_path(&context),
            version,
            published,
            published_from,
            revision,
            commit_time,
        })
    }
}

/// Seconds since the epoch, or an RFC 3339 date.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    match DateTime::parse_from_rfc3339(text) {
        Ok(time) => Ok(time.timestamp()),
        Err(_) => bail!("--time `{text}` is neither seconds since the epoch nor RFC 3339 (2026-11-25T10:00:00Z)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times() {
        assert_eq!(super::parse_time("1764064800").unwrap(), 1764064800);
        assert_eq!(
            super::parse_time("2025-11-25T10:00:00Z").unwrap(),
            1764064800
        );
        assert_eq!(
            super::parse_time("2025-11-25T11:00:00+01:00").unwrap(),
            1764064800
        );
        assert!(super::parse_time("yesterday")
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
    }
}
