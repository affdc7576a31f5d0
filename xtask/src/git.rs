//! What the release inputs read from git: the published releases (the stack's `v*` tags), the revision and its
//! commit time.

use anyhow::Context;
use stack_images::ReleaseVersion;
use xshell::{cmd, Shell};

/// The releases among the `v*` tags of the checkout.
pub fn release_tags(sh: &Shell) -> anyhow::Result<Vec<ReleaseVersion>> {
    let list = cmd!(sh, "git tag --list v*").quiet().read().context(
        "listing release tags (git tag --list 'v*'); outside a git checkout pass --published",
    )?;
    Ok(parse_release_tags(&list))
}

/// Every tag that is a release version; other `v*` tags (`vnext`, `v1`, `v2.0.0+meta`) are not releases.
fn parse_release_tags(list: &str) -> Vec<ReleaseVersion> {
    list.lines()
        .filter_map(|tag| tag.trim().parse().ok())
        .collect()
}

pub fn head_revision(sh: &Shell) -> anyhow::Result<String> {
    cmd!(sh, "git rev-parse HEAD")
        .quiet()
        .read()
        .context("reading the revision (git rev-parse HEAD); pass --revision")
}

/// The commit a tag names, if the tag exists.
pub fn tag_revision(sh: &Shell, tag: &str) -> Option<String> {
    let rev = format!("refs/tags/{tag}^{{commit}}");
    cmd!(sh, "git rev-parse --verify --quiet {rev}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .filter(|r| !r.is_empty())
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

#[cfg(test)]
mod tests {
    #[test]
    fn only_release_versions_are_releases() {
        let tags =
            super::parse_release_tags("v1.0.0\nv1\nvnext\nv2.0.0-rc.1\nv1.10.0\nv2.0.0+meta\n");
        let tags: Vec<String> = tags.iter().map(ToString::to_string).collect();
        assert_eq!(tags, ["v1.0.0", "v2.0.0-rc.1", "v1.10.0"]);
    }
}
