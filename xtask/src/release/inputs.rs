//! The inputs of a release, gathered from flags, the matrix, the base lock, the workspace manifest and git: all
//! a plan is computed from. Every flag is parsed here, once, into its type (`ReleaseVersion`, `Published`,
//! `Revision`, `CommitTime`).

use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{bail, Context};
use chrono::DateTime;
use clap::Args;
use serde::{Deserialize, Serialize};
use stack_images::{
    matrix::{Attestations, Sbom, MATRIX_PATH},
    tags, BaseLock, CommitId, ImageRef, Matrix, Namespace, ReleaseVersion,
};
use xshell::Shell;

use crate::{
    display_path, project_root,
    release::git::{self, Revision},
    release::signing::{Signing, SigningFlag},
};

/// Flags shared by every command that plans a release.
#[derive(Args, Debug, Clone)]
pub struct ReleaseArgs {
    /// The release, `vX.Y.Z` or `X.Y.Z`, with an optional prerelease (`v2.1.0-rc.1`)
    pub version: ReleaseVersion,
    /// Releases already published, comma-separated (default: the git tags `v*`, less the release's own)
    #[arg(long, value_name = "LIST")]
    pub published: Option<Published>,
    /// The git revision the images are built from: a commit id or a ref (default: HEAD)
    #[arg(long)]
    pub revision: Option<Revision>,
    /// The commit time, as seconds since the epoch or RFC 3339 (default: the revision's commit time)
    #[arg(long)]
    pub time: Option<CommitTime>,
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
    /// Release without SBOMs, whatever the matrix's `[sbom]` says
    #[arg(long, conflicts_with = "sbom_scanner")]
    pub no_sbom: bool,
    /// The BuildKit SBOM scanner image, pinned by digest, replacing the matrix's (SBOMs on): the tests and the demo
    /// run the stand-in in testkit/standins/sbom-scanner
    #[arg(long, value_name = "IMAGE:TAG@DIGEST")]
    pub sbom_scanner: Option<ImageRef>,
    /// Neither read nor write the registry build cache (`<image>-cache` next to the images): a cold build
    #[arg(long)]
    pub no_build_cache: bool,
    /// Do not copy each base image's blobs into the registries while building (the push and the mirror copy then
    /// send them after the build): for registries that bill unreferenced blobs, and to measure what seeding saves
    #[arg(long)]
    pub no_seed: bool,
    /// How the pins are signed with cosign: key:PATH (or key:env://COSIGN_KEY; the password in COSIGN_PASSWORD),
    /// keyless (GitHub Actions' OIDC identity: the release workflow) or none (unsigned, said in the notes)
    #[arg(long, value_name = "MODE", default_value = "keyless")]
    pub signing: SigningFlag,
    /// With --signing key:PATH: its public key, which verifies every pin and is named in the notes
    #[arg(long, value_name = "FILE")]
    pub signing_public_key: Option<PathBuf>,
    /// Release a version other than Cargo.toml's [workspace.package] version (what this checkout's launcher pulls): for tests
    #[arg(long)]
    pub allow_version_mismatch: bool,
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
    pub revision: CommitId,
    pub commit_time: i64,
    pub launcher: LauncherVersion,
    /// Whether builds read and write the registry build cache.
    pub build_cache: bool,
    /// Whether the registries are seeded with the bases' blobs while building.
    pub seed: bool,
    pub signing: Signing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedFrom {
    Flag,
    GitTags,
}

impl ReleaseArgs {
    pub fn gather(&self, sh: &Shell) -> anyhow::Result<PlanInputs> {
        let version = self.version.clone();

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
        if self.no_sbom {
            if let Some(sbom) = &mut matrix.sbom {
                sbom.enabled = false;
            }
        }
        if let Some(scanner) = &self.sbom_scanner {
            anyhow::ensure!(
                scanner.digest().is_some(),
                "--sbom-scanner {scanner} is not pinned by digest: add `@sha256:…` (`docker buildx imagetools \
                 inspect {scanner}` prints it), so that the release runs the scanner it names"
            );
            matrix.sbom = Some(Sbom {
                enabled: true,
                scanner: scanner.clone(),
            });
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
            Some(list) => (list.0.clone(), PublishedFrom::Flag),
            None => {
                // The release workflow runs on the release's own tag: that tag is this release, not a published one.
                let mut tags = git::release_tags(sh)?;
                tags.retain(|tag| *tag != version);
                (tags, PublishedFrom::GitTags)
            }
        };

        let revision = match &self.revision {
            Some(revision) => git::resolve(sh, revision)?,
            None => {
                let head = git::head_revision(sh)?;
                // A release is built from its own tag: images labelled vX.Y.Z must come from what vX.Y.Z names.
                if let Some(tagged) = git::tag_revision(sh, &version) {
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
            Some(time) => time.0,
            None => {
                CommitTime::check(git::commit_time(sh, &revision)?)
                    .with_context(|| {
                        format!("the commit time of {revision}, read from git: pass --time")
                    })?
                    .0
            }
        };
        let launcher = LauncherVersion::of(
            &version,
            &project_root().join(WORKSPACE_MANIFEST),
            self.allow_version_mismatch,
        )?;

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
            launcher,
            build_cache: !self.no_build_cache,
            seed: !self.no_seed,
            signing: Signing::from_flags(Some(&self.signing), self.signing_public_key.as_ref())?,
        })
    }
}

/// `--published`: releases already out, comma-separated (`v1.0.0,v2.0.0`; empty for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published(pub Vec<ReleaseVersion>);

impl FromStr for Published {
    type Err = anyhow::Error;

    fn from_str(list: &str) -> anyhow::Result<Published> {
        // clap prints only the outermost message: one flat sentence, naming the list and the bad item.
        tags::parse_releases(list)
            .map(Published)
            .map_err(|e| anyhow::anyhow!("{e} (in the list `{list}`)"))
    }
}

/// A commit time, in seconds since the epoch, inside the window a release can have been committed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitTime(pub i64);

/// The window of believable commit times: before 2000 is a wrong unit or sign, after 9999 does not fit RFC 3339.
const TIME_WINDOW: (i64, i64) = (946_684_800, 253_402_300_799);
const TIME_HELP: &str =
    "give seconds since the epoch (1764064800) or RFC 3339 (2025-11-25T10:00:00Z), \
                         between 2000-01-01T00:00:00Z and 9999-12-31T23:59:59Z";

impl CommitTime {
    /// Refuses a time outside the window, naming the window and an example.
    pub fn check(seconds: i64) -> anyhow::Result<CommitTime> {
        let (first, last) = TIME_WINDOW;
        if seconds < first {
            bail!("{seconds} seconds since the epoch, before 2000-01-01T00:00:00Z: {TIME_HELP}");
        }
        if seconds > last {
            bail!("{seconds} seconds since the epoch, after 9999-12-31T23:59:59Z: {TIME_HELP}");
        }
        Ok(CommitTime(seconds))
    }
}

impl FromStr for CommitTime {
    type Err = anyhow::Error;

    /// Seconds since the epoch, or an RFC 3339 date.
    fn from_str(text: &str) -> anyhow::Result<CommitTime> {
        // clap prints only the outermost message: one flat sentence, naming the value.
        let named = |e: anyhow::Error| anyhow::anyhow!("`{text}` is {e}");
        if let Ok(seconds) = text.parse::<i64>() {
            return CommitTime::check(seconds).map_err(named);
        }
        match DateTime::parse_from_rfc3339(text) {
            Ok(time) => CommitTime::check(time.timestamp()).map_err(named),
            Err(_) => {
                bail!("`{text}` is neither seconds since the epoch nor RFC 3339: {TIME_HELP}")
            }
        }
    }
}

/// The workspace manifest, whose `[workspace.package] version` the 20i launcher is built with.
pub const WORKSPACE_MANIFEST: &str = "Cargo.toml";

/// The release the 20i launcher built from this checkout pulls (`v<workspace version>-php-M.m`), and whether it
/// is the one being released: if not, that launcher would pull images that do not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LauncherVersion {
    /// `[workspace.package] version` in Cargo.toml.
    pub workspace: String,
    /// The release's version is the workspace's.
    pub matches: bool,
    /// `--allow-version-mismatch`: a mismatch goes ahead, with a warning (tests only).
    pub allowed: bool,
}

#[derive(Deserialize)]
struct Manifest {
    workspace: Workspace,
}

#[derive(Deserialize)]
struct Workspace {
    package: WorkspacePackage,
}

#[derive(Deserialize)]
struct WorkspacePackage {
    version: String,
}

impl LauncherVersion {
    /// Reads the workspace version from `manifest` and compares it with `version`.
    pub fn of(
        version: &ReleaseVersion,
        manifest: &Path,
        allowed: bool,
    ) -> anyhow::Result<LauncherVersion> {
        let text = std::fs::read_to_string(manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        LauncherVersion::parse(version, &text, allowed).with_context(|| {
            format!(
                "in {}: the 20i launcher's version is [workspace.package] version",
                display_path(manifest)
            )
        })
    }

    fn parse(
        version: &ReleaseVersion,
        manifest: &str,
        allowed: bool,
    ) -> anyhow::Result<LauncherVersion> {
        let manifest: Manifest = toml::from_str(manifest)?;
        let workspace = manifest.workspace.package.version;
        let parsed = semver::Version::parse(&workspace)
            .with_context(|| format!("version = \"{workspace}\" is not a semver version"))?;
        Ok(LauncherVersion {
            matches: parsed == *version.semver(),
            workspace,
            allowed,
        })
    }

    /// What the plan table says about it.
    pub fn describe(&self, version: &ReleaseVersion) -> String {
        if self.matches {
            format!(
                "v{} (Cargo.toml [workspace.package] version)",
                self.workspace
            )
        } else {
            format!(
                "MISMATCH: Cargo.toml [workspace.package] version is {}, so the 20i launcher built from it pulls \
                 v{}-php-M.m, not {version}; {}",
                self.workspace,
                self.workspace,
                if self.allowed {
                    "--allow-version-mismatch lets release go ahead (tests only)"
                } else {
                    "release refuses this"
                }
            )
        }
    }
}

impl PlanInputs {
    /// Refuses, before anything is pushed, a release whose version is not the workspace's: the launcher built
    /// from this checkout would pull `v<workspace version>-php-M.m`, which this release does not publish.
    /// `--allow-version-mismatch` (tests, never a real release) lets it through with a warning.
    pub fn require_launcher_version(&self) -> anyhow::Result<()> {
        let LauncherVersion {
            workspace,
            matches,
            allowed,
        } = &self.launcher;
        let version = &self.version;
        if *matches {
            return Ok(());
        }
        if *allowed {
            eprintln!(
                "warning: --allow-version-mismatch: releasing {version} from a workspace at {workspace}; the 20i \
                 launcher built from this checkout pulls v{workspace}-php-M.m, not these images"
            );
            return Ok(());
        }
        bail!(
            "{version} is not the workspace's version ({workspace}): the 20i launcher built from this checkout \
             would pull v{workspace}-php-M.m, which this release does not publish. Set `version = \"{}\"` under \
             [workspace.package] in {WORKSPACE_MANIFEST}, commit it and tag that commit {version} (or release \
             v{workspace})",
            version.semver()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_time(input: &str, expected: Result<i64, &str>) {
        let actual = input
            .parse::<CommitTime>()
            .map(|t| t.0)
            .map_err(|e| format!("{e:#}"));
        match (actual, expected) {
            (Ok(seconds), Ok(expected)) => assert_eq!(seconds, expected, "{input}"),
            (Err(error), Err(part)) => {
                assert!(error.contains(part), "{input}: `{error}` lacks `{part}`");
                assert!(error.contains(TIME_HELP), "{input}: {error}");
            }
            (actual, expected) => panic!("{input}: {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn times() {
        check_time("1764064800", Ok(1764064800));
        check_time("2025-11-25T10:00:00Z", Ok(1764064800));
        check_time("2025-11-25T11:00:00+01:00", Ok(1764064800));
        check_time("946684800", Ok(946684800));
        check_time("2000-01-01T00:00:00Z", Ok(946684800));
        check_time("9999-12-31T23:59:59Z", Ok(253402300799));
        check_time(
            "yesterday",
            Err("`yesterday` is neither seconds since the epoch nor RFC 3339"),
        );
        check_time(
            "-1",
            Err("`-1` is -1 seconds since the epoch, before 2000-01-01T00:00:00Z"),
        );
        check_time(
            "0",
            Err("`0` is 0 seconds since the epoch, before 2000-01-01T00:00:00Z"),
        );
        check_time(
            "1999-12-31T23:59:59Z",
            Err("`1999-12-31T23:59:59Z` is 946684799 seconds since the epoch, before 2000-01-01T00:00:00Z"),
        );
        check_time(
            "1764064800000",
            Err("`1764064800000` is 1764064800000 seconds since the epoch, after 9999-12-31T23:59:59Z"),
        );
        check_time(
            "253402300800",
            Err("253402300800 seconds since the epoch, after 9999-12-31T23:59:59Z"),
        );
        check_time(
            "10000-01-01T00:00:00Z",
            Err("`10000-01-01T00:00:00Z` is neither"),
        );
        check_time("2025-11-25", Err("`2025-11-25` is neither"));
        check_time("", Err("`` is neither"));
    }

    #[track_caller]
    fn check_launcher(version: &str, manifest: &str, expected: Result<bool, &str>) {
        let version: ReleaseVersion = version.parse().unwrap();
        let actual = LauncherVersion::parse(&version, manifest, false)
            .map(|l| l.matches)
            .map_err(|e| format!("{e:#}"));
        match (actual, expected) {
            (Ok(matches), Ok(expected)) => assert_eq!(matches, expected, "{version}"),
            (Err(error), Err(part)) => assert!(error.contains(part), "`{error}` lacks `{part}`"),
            (actual, expected) => panic!("{version}: {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn the_launcher_version_is_the_workspace_version() {
        let manifest = |v: &str| {
            format!("[workspace]\nmembers = []\n[workspace.package]\nversion = \"{v}\"\n")
        };
        check_launcher("v2.0.0", &manifest("2.0.0"), Ok(true));
        check_launcher("2.0.0", &manifest("2.0.0"), Ok(true));
        check_launcher("v2.0.0", &manifest("0.1.0"), Ok(false));
        check_launcher("v2.1.0-rc.1", &manifest("2.1.0-rc.1"), Ok(true));
        check_launcher("v2.1.0-rc.1", &manifest("2.1.0"), Ok(false));
        check_launcher("v2.1.0", &manifest("2.1.0-rc.1"), Ok(false));
        check_launcher(
            "v2.0.0",
            &manifest("two"),
            Err("version = \"two\" is not a semver version"),
        );
        check_launcher(
            "v2.0.0",
            "[workspace]\nmembers = []\n",
            Err("missing field `package`"),
        );
    }

    #[test]
    fn the_launcher_is_built_with_the_workspace_version() {
        // The check compares with [workspace.package] version: the launcher must not carry a version of its own.
        let manifest = std::fs::read_to_string(project_root().join("launcher/Cargo.toml")).unwrap();
        assert!(
            manifest.contains("\nversion.workspace = true\n"),
            "launcher/Cargo.toml must say version.workspace = true"
        );
    }

    #[track_caller]
    fn check_describe(workspace: &str, matches: bool, allowed: bool, expected: &str) {
        let version: ReleaseVersion = "v2.0.0".parse().unwrap();
        let launcher = LauncherVersion {
            workspace: workspace.to_owned(),
            matches,
            allowed,
        };
        assert_eq!(launcher.describe(&version), expected);
    }

    #[test]
    fn the_plan_names_a_mismatch_and_the_file() {
        let mismatch = "MISMATCH: Cargo.toml [workspace.package] version is 0.1.0, so the 20i launcher built from \
                        it pulls v0.1.0-php-M.m, not v2.0.0";
        check_describe(
            "2.0.0",
            true,
            false,
            "v2.0.0 (Cargo.toml [workspace.package] version)",
        );
        check_describe(
            "0.1.0",
            false,
            false,
            &format!("{mismatch}; release refuses this"),
        );
        check_describe(
            "0.1.0",
            false,
            true,
            &format!("{mismatch}; --allow-version-mismatch lets release go ahead (tests only)"),
        );
    }
}
