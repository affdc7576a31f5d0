//! `20i version [--check]`: this launcher's version; with `--check`, whether a newer stable stack release is out
//! (the newest `vX.Y.Z` with pins in the tag list of IMAGE_REGISTRY, else of its mirrors) and the one command
//! that installs it. Nothing is ever installed from here. `PULL_POLICY`'s check says the same (`newer_hint`).

use std::{fmt, io::Write, time::Duration};

use anyhow::Context;
use stack_images::{
    failure::Policy,
    registry::{RegistryClient, RegistryError},
    tags, Matrix, Namespace, ReleaseVersion,
};

use crate::{config::Config, exit::Exit};

/// The longest a check may take per registry: a version check is a courtesy, not worth minutes.
const CHECK_BUDGET: Duration = Duration::from_secs(20);
/// Attempts per registry, at most (the policy's, when fewer).
const CHECK_ATTEMPTS: u32 = 3;
/// `PULL_POLICY`'s hint: one request, and never long, since a start waits for it.
const HINT_BUDGET: Duration = Duration::from_secs(10);

/// This launcher's release: what `20i --version` prints, as a release version.
pub fn own_version() -> ReleaseVersion {
    env!("CARGO_PKG_VERSION")
        .parse()
        .expect("the workspace version is a release version")
}

/// The one command that installs the latest stable release of `20i`.
pub fn install_command() -> String {
    format!(
        "curl -fsSL {}/releases/latest/download/install.sh | sh",
        Matrix::embedded().source.trim_end_matches('/')
    )
}

/// What a registry's tag list says about this launcher's release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A newer stable release has pins: install it.
    Newer(ReleaseVersion),
    /// This is the newest stable release.
    Current,
    /// This launcher is newer than any stable release listed (a prerelease or a build from source).
    Ahead(ReleaseVersion),
    /// The registry lists no stable release at all.
    NoneListed,
}

/// Compares this launcher's release with the newest stable release a registry lists.
pub fn judge(current: &ReleaseVersion, newest: Option<ReleaseVersion>) -> Verdict {
    match newest {
        None => Verdict::NoneListed,
        Some(newest) if newest > *current => Verdict::Newer(newest),
        Some(newest) if newest == *current => Verdict::Current,
        Some(newest) => Verdict::Ahead(newest),
    }
}

/// What a check found, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub current: ReleaseVersion,
    pub verdict: Verdict,
    pub registry: Namespace,
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Checked {
            current,
            verdict,
            registry,
        } = self;
        match verdict {
            Verdict::Newer(newest) => write!(
                f,
                "a newer stable release is out: {newest} (this launcher is {current}, checked {registry}); \
                 install it with:\n  {}",
                install_command()
            ),
            Verdict::Current => write!(
                f,
                "{current} is the newest stable release (checked {registry})"
            ),
            Verdict::Ahead(newest) => write!(
                f,
                "{current} is newer than the newest stable release {registry} lists ({newest})"
            ),
            Verdict::NoneListed => write!(f, "{registry} lists no stable release yet"),
        }
    }
}

/// A client whose policy is the shared one, shortened to `budget` and `attempts` per operation.
fn client(budget: Duration, attempts: u32) -> anyhow::Result<RegistryClient> {
    let mut policy = Policy::from_env()?;
    policy.operation_timeout = policy.operation_timeout.min(budget);
    policy.attempts = policy.attempts.min(attempts);
    Ok(RegistryClient::new(policy))
}

/// The newest stable release with pins in `registry`'s repository of the image.
fn newest_in(
    client: &RegistryClient,
    registry: &Namespace,
) -> Result<Option<ReleaseVersion>, RegistryError> {
    let repository = registry.repository(&Matrix::embedded().image);
    let listed = client.list_tags(&repository)?;
    Ok(tags::newest_stable_pinned(&listed))
}

/// Asks IMAGE_REGISTRY, then each mirror until one answers; the errors of all when none does.
pub fn check(config: &Config) -> anyhow::Result<Result<Checked, Vec<(Namespace, RegistryError)>>> {
    let client = client(CHECK_BUDGET, CHECK_ATTEMPTS).map_err(Exit::config)?;
    let current = own_version();
    let mut failures = Vec::new();
    for registry in std::iter::once(&config.registry).chain(&config.mirrors) {
        match newest_in(&client, registry) {
            Ok(newest) => {
                return Ok(Ok(Checked {
                    verdict: judge(&current, newest),
                    current,
                    registry: registry.clone(),
                }))
            }
            Err(error) => failures.push((registry.clone(), error)),
        }
    }
    Ok(Err(failures))
}

/// `20i version --check`: prints the version, then what the check found; exits 1 when no registry answered.
pub fn run_check(config: &Config) -> anyhow::Result<()> {
    println!("20i {}", env!("CARGO_PKG_VERSION"));
    match check(config)? {
        Ok(checked) => {
            println!("{checked}");
            Ok(())
        }
        Err(failures) => {
            let reasons: Vec<String> = failures
                .iter()
                .map(|(registry, error)| format!("{registry}: {error}"))
                .collect();
            anyhow::bail!(
                "could not check for a newer release ({}); the releases are listed at {}/releases",
                reasons.join("; "),
                Matrix::embedded().source.trim_end_matches('/')
            )
        }
    }
}

/// For `PULL_POLICY`'s check, one tag list of IMAGE_REGISTRY (one attempt, within [`HINT_BUDGET`]): a line
/// saying a newer stable release is out and how to install it, or nothing (current, or no answer: the start goes
/// on either way).
pub fn newer_hint(config: &Config, log: &mut dyn Write) -> anyhow::Result<()> {
    let current = own_version();
    let client = client(HINT_BUDGET, 1).map_err(Exit::config)?;
    if let Ok(newest) = newest_in(&client, &config.registry) {
        if let Verdict::Newer(newest) = judge(&current, newest) {
            writeln!(
                log,
                "a newer stable release is out: {newest} (this launcher is {current}); install it with: {}",
                install_command()
            )
            .context("writing the log")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let v = |text: &str| text.parse::<ReleaseVersion>().unwrap();
        let cases = [
            ("v1.0.0", None, Verdict::NoneListed),
            ("v1.0.0", Some("v1.0.0"), Verdict::Current),
            ("v1.0.0", Some("v1.0.1"), Verdict::Newer(v("v1.0.1"))),
            ("v1.9.0", Some("v1.10.0"), Verdict::Newer(v("v1.10.0"))),
            ("v2.0.0", Some("v1.10.0"), Verdict::Ahead(v("v1.10.0"))),
            ("v2.0.0-rc.1", Some("v1.0.0"), Verdict::Ahead(v("v1.0.0"))),
            ("v2.0.0-rc.1", Some("v2.0.0"), Verdict::Newer(v("v2.0.0"))),
        ];
        for (current, newest, expected) in cases {
            assert_eq!(
                judge(&v(current), newest.map(v)),
                expected,
                "{current} against {newest:?}"
            );
        }
    }

    #[test]
    fn the_install_command_names_the_release_download() {
        assert_eq!(
            install_command(),
            "curl -fsSL https://github.com/20i-stack/20i-stack/releases/latest/download/install.sh | sh"
        );
    }
}
