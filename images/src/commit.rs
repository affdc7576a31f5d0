//! A commit's full object name (`CommitId`): what images are labelled with and release notes record, so a
//! revision is resolved once (by the xtask, through git) and never re-read as a name git could take for an option.

use std::{fmt, str::FromStr};

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// A full object name: 40 lowercase hex digits (SHA-1 repositories) or 64 (SHA-256 repositories).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CommitId(String);

impl CommitId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` is spelled as a full object name (it may still name no commit of this repository).
    pub fn is_full_hex(text: &str) -> bool {
        matches!(text.len(), 40 | 64)
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CommitId {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<CommitId> {
        if !CommitId::is_full_hex(text) {
            bail!(
                "`{text}` is not a full commit id (40 or 64 lowercase hex digits, as `git rev-parse HEAD` prints)"
            );
        }
        Ok(CommitId(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for CommitId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CommitId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Result<(), &str>) {
        let actual = input
            .parse::<CommitId>()
            .map(|_| ())
            .map_err(|e| e.to_string());
        match expected {
            Ok(()) => assert!(actual.is_ok(), "{input}: {actual:?}"),
            Err(message) => {
                let error = actual.expect_err(input);
                assert!(error.contains(message), "{input}: {error}");
            }
        }
    }

    #[test]
    fn commit_ids() {
        let not = "is not a full commit id (40 or 64 lowercase hex digits";
        check("0123456789abcdef0123456789abcdef01234567", Ok(()));
        check(&"a".repeat(64), Ok(()));
        check("0123456789abcdef0123456789abcdef0123456", Err(not));
        check("0123456789ABCDEF0123456789ABCDEF01234567", Err(not));
        check("0123456789abcdef0123456789abcdef0123456g", Err(not));
        check(&"a".repeat(41), Err(not));
        check("", Err(not));
        check("HEAD", Err("`HEAD` is not a full commit id"));
        check(
            "--output=/tmp/x",
            Err("`--output=/tmp/x` is not a full commit id"),
        );
    }
}
