//! What the release inputs read from git: the published releases (the stack's `v*` tags), the revision (a
//! `Revision` from `--revision`, resolved to a `CommitId`) and its commit time.
//!
//! A value from a flag reaches git only as a `Revision`, which cannot start with `-`, and after
//! `--end-of-options`, so it is never taken for an option (`--revision=--output=FILE` writes nothing).

use std::{fmt, str::FromStr};

use anyhow::{bail, Context};
use stack_images::{CommitId, ReleaseVersion};
use xshell::{cmd, Shell};

/// What `--revision` names: a full commit id (taken as is, no git needed, so `plan` runs anywhere), or an
/// abbreviated id or ref name that `git rev-parse` resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revision {
    Full(CommitId),
    /// An abbreviated hex id, a tag, a branch or `HEAD~1`: never empty, never starting with `-`, no whitespace.
    Name(String),
}

impl FromStr for Revision {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Revision> {
        let example =
            "give a commit id (0123abcd…, full or abbreviated) or a ref such as v2.0.0 or HEAD";
        if CommitId::is_full_hex(text) {
            return Ok(Revision::Full(text.parse()?));
        }
        if text.is_empty() {
            bail!("the revision is empty: {example}");
        }
        if text.starts_with('-') {
            bail!("`{text}` starts with `-`, which git would take for an option: {example}");
        }
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
            bail!(
                "`{}` contains {:?}, which no git revision does: {example}",
                text.escape_debug(),
                c
            );
        }
        Ok(Revision::Name(text.to_owned()))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revision::Full(id) => id.fmt(f),
            Revision::Name(name) => f.write_str(name),
        }
    }
}

/// The commit a revision names: a full id as is, anything else through `git rev-parse`.
pub fn resolve(sh: &Shell, revision: &Revision) -> anyhow::Result<CommitId> {
    match revision {
        Revision::Full(id) => Ok(id.clone()),
        Revision::Name(name) => {
            let rev = format!("{name}^{{commit}}");
            let out = cmd!(sh, "git rev-parse --verify --quiet --end-of-options {rev}")
                .quiet()
                .ignore_stderr()
                .read()
                .ok()
                .filter(|out| !out.is_empty());
            let Some(out) = out else {
                bail!(
                    "--revision `{name}` names no commit of this repository (git rev-parse --verify {name}^{{commit}}): \
                     fetch it (git fetch --tags), or give another commit id or ref"
                );
            };
            out.parse()
                .with_context(|| format!("git rev-parse printed `{out}` for --revision `{name}`"))
        }
    }
}

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

pub fn head_revision(sh: &Shell) -> anyhow::Result<CommitId> {
    let out = cmd!(sh, "git rev-parse --verify HEAD")
        .quiet()
        .read()
        .context("reading the revision (git rev-parse HEAD); pass --revision")?;
    out.parse()
        .with_context(|| format!("git rev-parse HEAD printed `{out}`"))
}

/// The commit a tag names, if the tag exists.
pub fn tag_revision(sh: &Shell, tag: &ReleaseVersion) -> Option<CommitId> {
    let rev = format!("refs/tags/{tag}^{{commit}}");
    cmd!(sh, "git rev-parse --verify --quiet --end-of-options {rev}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .and_then(|r| r.parse().ok())
}

/// The commit time in seconds since the epoch: the images' `created` date and `SOURCE_DATE_EPOCH`.
pub fn commit_time(sh: &Shell, revision: &CommitId) -> anyhow::Result<i64> {
    let id = revision.as_str();
    let text = cmd!(sh, "git show --no-patch --format=%ct --end-of-options {id}")
        .quiet()
        .read()
        .with_context(|| format!("reading the commit time of {revision}; pass --time"))?;
    text.trim().parse().with_context(|| {
        format!("git printed `{text}` as the commit time of {revision}; pass --time")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_release_versions_are_releases() {
        let tags = parse_release_tags("v1.0.0\nv1\nvnext\nv2.0.0-rc.1\nv1.10.0\nv2.0.0+meta\n");
        let tags: Vec<String> = tags.iter().map(ToString::to_string).collect();
        assert_eq!(tags, ["v1.0.0", "v2.0.0-rc.1", "v1.10.0"]);
    }

    /// `Ok(kind)` is `full` or `name`; `Err` holds part of the message.
    #[track_caller]
    fn check(input: &str, expected: Result<&str, &str>) {
        let actual = input.parse::<Revision>().map_err(|e| e.to_string());
        match (actual, expected) {
            (Ok(Revision::Full(id)), Ok("full")) => assert_eq!(id.as_str(), input),
            (Ok(Revision::Name(name)), Ok("name")) => assert_eq!(name, input),
            (Err(error), Err(part)) => {
                assert!(error.contains(part), "{input}: `{error}` lacks `{part}`");
                assert!(
                    error.ends_with("or a ref such as v2.0.0 or HEAD"),
                    "{input}: {error}"
                );
            }
            (actual, expected) => panic!("{input}: {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn revisions() {
        check("0123456789abcdef0123456789abcdef01234567", Ok("full"));
        check(&"f".repeat(64), Ok("full"));
        check("0123abc", Ok("name"));
        check("0123456789ABCDEF0123456789ABCDEF01234567", Ok("name"));
        check("v2.0.0", Ok("name"));
        check("HEAD~1", Ok("name"));
        check("origin/main", Ok("name"));
        check("", Err("the revision is empty"));
        check(
            "--output=/tmp/x",
            Err("`--output=/tmp/x` starts with `-`, which git would take for an option"),
        );
        check("-1", Err("`-1` starts with `-`"));
        check("v2.0.0 HEAD", Err("`v2.0.0 HEAD` contains ' '"));
        check("v2\n", Err("`v2\\n` contains '\\n'"));
    }
}
