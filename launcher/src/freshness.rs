//! Whether a cached image is still what its registry serves. `PULL_POLICY` (compose's words: `missing`, the
//! default, never asks; `daily`, `weekly`, `always`) says when to ask; a check is one manifest request, and a
//! republished index says when and why in its annotations. The last check of each image is kept in
//! `~/.20i/state/checks.json`, so `20i status` can say what it knows without a request. A pin is never replaced
//! by a republish: the check only says that a newer digest exists.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use stack_images::{
    registry::{RegistryClient, RegistryError},
    release_notes::{REPUBLISH_DATE, REPUBLISH_REASON},
    Digest, ImageRef,
};

/// When a cached image is checked against its registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the image is not in docker's store: a cached start sends no request at all.
    #[default]
    Missing,
    /// At most once a day.
    Daily,
    /// At most once a week.
    Weekly,
    /// On every start.
    Always,
}

impl PullPolicy {
    /// Whether a check is due, given when the image was last checked.
    pub fn due(self, last: Option<SystemTime>, now: SystemTime) -> bool {
        let every = match self {
            PullPolicy::Missing => return false,
            PullPolicy::Always => return true,
            PullPolicy::Daily => Duration::from_secs(24 * 3600),
            PullPolicy::Weekly => Duration::from_secs(7 * 24 * 3600),
        };
        match last {
            None => true,
            // A last check in the future (a clock put back) counts as due rather than as never again.
            Some(last) => now.duration_since(last).map_or(true, |age| age >= every),
        }
    }
}

impl FromStr for PullPolicy {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<PullPolicy> {
        Ok(match text {
            "missing" => PullPolicy::Missing,
            "daily" => PullPolicy::Daily,
            "weekly" => PullPolicy::Weekly,
            "always" => PullPolicy::Always,
            _ => bail!("use missing (the default: never ask a registry for a cached image), daily, weekly or always"),
        })
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Daily => "daily",
            PullPolicy::Weekly => "weekly",
            PullPolicy::Always => "always",
        })
    }
}

/// What a republished index says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Republished {
    pub date: String,
    pub reason: String,
}

impl fmt::Display for Republished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "republished on {}: {}", self.date, self.reason)
    }
}

/// What the registry serves for a reference now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub digest: Digest,
    pub republished: Option<Republished>,
}

impl Remote {
    /// A `HEAD` of the reference, and a `GET` of the index it names only when its annotations are news: not
    /// when its digest is `known` (cached or pinned here: nothing to pull, nothing to say) nor when the `last`
    /// check saw it already. Docker Hub counts a `GET` against the pull limit, not a `HEAD`. The bytes of a
    /// `GET` are read by the digest the `HEAD` said, so they are checked against it.
    pub fn read(
        client: &RegistryClient,
        reference: &ImageRef,
        known: &[Digest],
        last: Option<&Check>,
    ) -> Result<Remote, RegistryError> {
        let digest = client.head_manifest(reference)?.digest;
        if let Some(last) = last.filter(|last| last.digest == digest) {
            return Ok(Remote {
                digest,
                republished: last.republished.clone(),
            });
        }
        if known.contains(&digest) {
            return Ok(Remote {
                digest,
                republished: None,
            });
        }
        let manifest = client.get_manifest(&reference.with_digest(&digest))?;
        Ok(Remote {
            republished: republished(&manifest.bytes),
            digest: manifest.digest,
        })
    }
}

/// The republish annotations of an index, when it has both.
fn republished(index: &[u8]) -> Option<Republished> {
    let json: serde_json::Value = serde_json::from_slice(index).ok()?;
    let annotations = json.get("annotations")?;
    let text = |key: &str| annotations.get(key)?.as_str().map(str::to_owned);
    Some(Republished {
        date: text(REPUBLISH_DATE)?,
        reason: text(REPUBLISH_REASON)?,
    })
}

/// What a check means for the image `20i start` is about to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The cached image is what the registry serves.
    Current,
    /// The registry serves another digest: pull it.
    Newer(Remote),
    /// A pin holds the image, and the registry serves a republished digest: keep the pin, say how to move it.
    PinnedButNewer { pinned: Digest, newer: Remote },
    /// The registry serves another digest under the pin tag (every pre-built image is a `vX.Y.Z-php-M.m` pin)
    /// without a republish's annotations: the pin was overwritten. Reported and never pulled (`cargo xtask
    /// audit` finds and repairs it on the project's side).
    Overwritten { recorded: Digest, found: Digest },
}

/// Compares what is cached (known by these digests, one per repository it came from) and pinned with what the
/// registry serves. Only a republish (its index says when and why) changes a pin tag's digest: any other change
/// is an overwrite.
pub fn compare(cached: &[Digest], pin: Option<&Digest>, remote: Remote) -> Freshness {
    match (pin, cached.first()) {
        (Some(pinned), _) if *pinned == remote.digest => Freshness::Current,
        (None, _) if cached.contains(&remote.digest) => Freshness::Current,
        (Some(pinned), _) if remote.republished.is_some() => Freshness::PinnedButNewer {
            pinned: pinned.clone(),
            newer: remote,
        },
        (None, _) if remote.republished.is_some() => Freshness::Newer(remote),
        (Some(recorded), _) | (None, Some(recorded)) => Freshness::Overwritten {
            recorded: recorded.clone(),
            found: remote.digest,
        },
        (None, None) => Freshness::Newer(remote),
    }
}

/// The last check of one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Seconds since the epoch.
    pub checked: u64,
    /// What the registry served then.
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub republished: Option<Republished>,
}

impl Check {
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.checked)
    }
}

/// The last check of every image, by reference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    path: PathBuf,
    entries: BTreeMap<ImageRef, Check>,
}

impl Checks {
    /// `~/.20i/state/checks.json`, or nothing yet.
    pub fn path_in(user_dir: &Path) -> PathBuf {
        user_dir.join("state").join("checks.json")
    }

    pub fn load(path: &Path) -> anyhow::Result<Checks> {
        let entries = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not what 20i writes: delete it (it only remembers when images were last checked)",
                    path.display()
                )
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Checks {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn get(&self, reference: &ImageRef) -> Option<&Check> {
        self.entries.get(reference)
    }

    /// Records a check and writes the file aside, then renames it over, so a crash never leaves half a file.
    pub fn record(&mut self, reference: &ImageRef, check: Check) -> anyhow::Result<()> {
        self.entries.insert(reference.clone(), check);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let aside = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.entries)? + "\n";
        std::fs::write(&aside, text).with_context(|| format!("writing {}", aside.display()))?;
        std::fs::rename(&aside, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Seconds since the epoch, for a [`Check`].
pub fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    #[track_caller]
    fn check_due(policy: &str, last_seconds_ago: Option<u64>, expected: bool) {
        let now = UNIX_EPOCH + Duration::from_secs(100 * DAY);
        let last = last_seconds_ago.map(|ago| now - Duration::from_secs(ago));
        let policy: PullPolicy = policy.parse().unwrap();
        assert_eq!(
            policy.due(last, now),
            expected,
            "{policy} after {last_seconds_ago:?} s"
        );
    }

    #[test]
    fn when_a_check_is_due() {
        check_due("missing", None, false);
        check_due("missing", Some(365 * DAY), false);
        check_due("always", Some(0), true);
        check_due("daily", None, true);
        check_due("daily", Some(DAY - 1), false);
        check_due("daily", Some(DAY), true);
        check_due("weekly", Some(6 * DAY), false);
        check_due("weekly", Some(7 * DAY), true);
        let now = UNIX_EPOCH + Duration::from_secs(DAY);
        let future = now + Duration::from_secs(3600);
        assert!(
            PullPolicy::Daily.due(Some(future), now),
            "a check from the future is due"
        );
    }

    #[test]
    fn policies_are_compose_words() {
        for bad in ["", "Daily", "never", "every_1h", " daily", "-always"] {
            let error = bad.parse::<PullPolicy>().unwrap_err().to_string();
            assert!(error.contains("use missing"), "{bad:?}: {error}");
        }
        assert_eq!(PullPolicy::default(), PullPolicy::Missing);
    }

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    #[test]
    fn what_a_check_means() {
        let remote = |c| Remote {
            digest: digest(c),
            republished: None,
        };
        let republished = |c| Remote {
            digest: digest(c),
            republished: Some(Republished {
                date: "2026-12-01".to_owned(),
                reason: "CVE".to_owned(),
            }),
        };
        let overwritten = |recorded, found| Freshness::Overwritten {
            recorded: digest(recorded),
            found: digest(found),
        };
        let cached = [digest('a'), digest('e')];
        let a = Some(digest('a'));
        // (cached, pin, what the registry serves, what it means)
        let cases = [
            (&cached[..], None, remote('a'), Freshness::Current),
            (&cached, None, remote('e'), Freshness::Current),
            (
                &cached,
                None,
                republished('b'),
                Freshness::Newer(republished('b')),
            ),
            (&cached, None, remote('b'), overwritten('a', 'b')),
            (&[], None, remote('b'), Freshness::Newer(remote('b'))),
            (&cached, a.clone(), remote('a'), Freshness::Current),
            (
                &cached,
                a.clone(),
                republished('b'),
                Freshness::PinnedButNewer {
                    pinned: digest('a'),
                    newer: republished('b'),
                },
            ),
            (&cached, a.clone(), remote('b'), overwritten('a', 'b')),
            (&[], a, remote('b'), overwritten('a', 'b')),
        ];
        for (cached, pin, remote, expected) in cases {
            let described = format!("{cached:?} {pin:?} {remote:?}");
            assert_eq!(
                compare(cached, pin.as_ref(), remote),
                expected,
                "{described}"
            );
        }
    }

    #[test]
    fn republish_annotations_are_read_from_the_index() {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "annotations": {REPUBLISH_DATE: "2026-12-01", REPUBLISH_REASON: "CVE-2026-0001 in the base"},
        });
        let found = republished(index.to_string().as_bytes()).unwrap();
        assert_eq!(
            found.to_string(),
            "republished on 2026-12-01: CVE-2026-0001 in the base"
        );
        assert_eq!(republished(b"{\"annotations\": {}}"), None);
        assert_eq!(republished(b"not json"), None);
    }

    #[test]
    fn checks_survive_a_round_trip_and_a_bad_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = Checks::path_in(dir.path());
        let mut checks = Checks::load(&path).unwrap();
        let reference: ImageRef = "127.0.0.1:5000/a/php-fpm:v1.0.0-php-8.4".parse().unwrap();
        let check = Check {
            checked: 1_800_000_000,
            digest: digest('c'),
            republished: None,
        };
        checks.record(&reference, check.clone()).unwrap();
        assert_eq!(Checks::load(&path).unwrap().get(&reference), Some(&check));
        std::fs::write(&path, "{ half").unwrap();
        let error = format!("{:#}", Checks::load(&path).unwrap_err());
        assert!(error.contains("delete it"), "{error}");
    }
}
