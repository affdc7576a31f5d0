//! What the release inputs read from git: the published releases (the stack's `v*` tags), the revision and its
//! commit time.

use anyhow::Context;
use stack_images::ReleaseVersion;
use xshell::{cmd, Shell};

/// Every `v*` tag that is a release version; other tags (`vnext`, `v1`) are not releases and are left out.
pub fn release_tags(sh: &Shell) -> anyhow::Result<Vec<ReleaseVersion>> {
    let list = cmd!(sh, "git tag --list v*").quiet().read().context(
        "listing release tags (git tag --list 'v*'); outside a git checkout pass --published",
    )?;
    Ok(list
        .lines()
        .filter_map(|tag| tag.trim().parse().ok())
        .collect())
}

pub fn head_revision(sh: &Shell) -> anyhow::Result<String> {
    cmd!(sh, "git rev-parse HEAD")
        .quiet()
        .read()
        .context("reading the revision (git rev-parse HEAD); pass --revision")
}

/// The commit time in seconds since the epoch: the images' `created` date and `SOURCE_DATE_EPOCH`.
pub fn commit_time(sh: &Shell, revision: &str) -> anyhow::Result<i64> {
    let text = cmd!(sh, "git show --no-patch --format=%ct {revision}")
        .quiet()
        .read()
        .with_context(|| format!("reading the commit time of {revision}; pass --time"))?;
    text.trim()
        .parse()
        .with_context(|| format!("git printed `{text}` as the commit time of {revision}"))
}
