//! One failure and retry layer for every door of both binaries: why an operation failed ([`FailureKind`], read
//! from a command's error output or a registry's answer), the numbers of timeouts and retries ([`Policy`]), and
//! the one loop that retries ([`retry`]), to which each door gives its own judge of what is worth another attempt.

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};

/// Why a docker command failed, as far as its output tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The daemon or the registry could not be reached or could not serve the request (offline, connection
    /// refused, DNS, timeout, HTTP 5xx): worth a retry.
    Unreachable,
    /// The registry asked us to slow down (HTTP 429, Docker Hub's pull limit).
    RateLimited,
    /// Credentials are missing or refused.
    Unauthorized,
    /// No such repository, tag or manifest.
    NotFound,
    /// The content did not match its digest.
    DigestMismatch,
    /// The registry's TLS certificate is not trusted (unknown issuer, expired, another name): a CA is missing
    /// from docker's `certs.d` or the system store, or something between here and the registry rewrites TLS.
    /// Never worth a retry.
    Certificate,
    /// A supervised command printed nothing for its stall bound and was stopped ([`crate::process::supervise`]):
    /// a registry that accepted the connection and went silent.
    Stalled,
    /// A supervised command ran past its total bound and was stopped ([`crate::process::supervise`]).
    TimedOut,
    /// Anything else: the message says what.
    Other,
}

impl FailureKind {
    /// Every kind, for tables that must say what happens to each.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Unreachable,
        FailureKind::RateLimited,
        FailureKind::Unauthorized,
        FailureKind::NotFound,
        FailureKind::DigestMismatch,
        FailureKind::Certificate,
        FailureKind::Stalled,
        FailureKind::TimedOut,
        FailureKind::Other,
    ];
}

/// How one kind of failure shows in docker's, buildx's and containerd's output, lowercased.
struct Signs {
    kind: FailureKind,
    /// Error codes of the distribution spec as docker prints them (`MANIFEST_UNKNOWN` → `manifest unknown`),
    /// followed by `:` or the end of the line.
    codes: &'static [&'static str],
    /// HTTP statuses, counted only where docker reports a registry's answer (`unexpected status …: 503 …`).
    statuses: &'static [&'static str],
    /// Phrases docker and containerd print for this failure and for nothing else.
    phrases: &'static [&'static str],
}

/// Checked in this order: an auth failure often says "not found" too, and a rate limit comes with a status.
const SIGNS: &[Signs] = &[
    // Before everything: "tls: failed to verify certificate" also says "x509: certificate signed by unknown
    // authority", which no other kind's phrase matches, and it must never be retried as unreachable.
    Signs {
        kind: FailureKind::Certificate,
        codes: &[],
        statuses: &[],
        phrases: &[
            "x509: certificate signed by unknown authority",
            "x509: certificate is valid for",
            "x509: certificate has expired",
            "tls: failed to verify certificate",
            // A TLS server answering plain HTTP: a client allowed to fall back to HTTP (cosign with
            // --allow-http-registry on loopback) did so because it did not trust the certificate, and says only
            // what the fallback met.
            "client sent an http request to an https server",
        ],
    },
    Signs {
        kind: FailureKind::RateLimited,
        codes: &["toomanyrequests"],
        statuses: &["429 too many requests"],
        phrases: &["you have reached your pull rate limit"],
    },
    Signs {
        kind: FailureKind::Unauthorized,
        codes: &["unauthorized", "denied"],
        statuses: &["401 unauthorized", "403 forbidden"],
        phrases: &[
            "authentication required",
            "no basic auth credentials",
            "pull access denied",
            "push access denied",
            "insufficient_scope",
        ],
    },
    Signs {
        kind: FailureKind::DigestMismatch,
        codes: &["digest invalid", "blob unknown to registry"],
        statuses: &[],
        phrases: &[
            "unexpected commit digest",
            "digest mismatch",
            "filesystem layer verification failed",
            "failed size validation",
        ],
    },
    Signs {
        kind: FailureKind::NotFound,
        codes: &["manifest unknown", "name unknown"],
        statuses: &["404 not found"],
        phrases: &["no such image:"],
    },
    Signs {
        kind: FailureKind::Unreachable,
        codes: &[],
        statuses: &[
            "500 internal server error",
            "502 bad gateway",
            "503 service unavailable",
            "504 gateway timeout",
        ],
        phrases: &[
            "connection refused",
            "connection reset by peer",
            "no such host",
            "network is unreachable",
            "i/o timeout",
            "tls handshake timeout",
            "temporary failure in name resolution",
            "cannot connect to the docker daemon",
            "context deadline exceeded",
            "unexpected eof",
            // A registry that closed the connection without an answer: `failed to do request: Head "…": EOF`.
            "\": eof",
        ],
    },
];

impl FailureKind {
    /// Reads docker's and buildx's error output for the registry's error codes, the HTTP statuses docker reports
    /// and docker's own phrases: never for a bare "not found" or "does not exist", which a build prints for a
    /// missing file or a network device too.
    pub fn classify(stderr: &str) -> FailureKind {
        let text = stderr.to_ascii_lowercase();
        let has_code = |code: &str| {
            text.match_indices(code).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let after = text[at + code.len()..].chars().next();
                matches!(before, None | Some(' ' | ':' | '\n' | '"'))
                    && matches!(after, None | Some(':' | '\n' | '"'))
            })
        };
        let has_status = |status: &str| {
            text.lines().any(|line| {
                line.find(status).is_some_and(|at| {
                    let before = &line[..at];
                    before.contains("unexpected status")
                        || before.contains("status code")
                        || before.contains("response status")
                })
            })
        };
        // buildx names what it could not find as `ERROR: <reference>: not found`.
        let reference_not_found = text.lines().any(|line| {
            line.strip_prefix("error: ")
                .and_then(|rest| rest.strip_suffix(": not found"))
                .is_some_and(|reference| !reference.is_empty() && !reference.contains(' '))
                // `docker pull` with the containerd image store:
                // `failed to resolve reference "<reference>": <reference>: not found`.
                || line.split_once("failed to resolve reference \"").is_some_and(|(_, rest)| {
                    rest.split_once("\": ")
                        .and_then(|(reference, after)| after.strip_suffix(": not found").map(|r| (reference, r)))
                        .is_some_and(|(reference, repeated)| reference == repeated)
                })
        });
        for signs in SIGNS {
            if signs.codes.iter().any(|c| has_code(c))
                || signs.statuses.iter().any(|s| has_status(s))
                || signs.phrases.iter().any(|p| text.contains(p))
            {
                return signs.kind;
            }
            if signs.kind == FailureKind::NotFound && reference_not_found {
                return FailureKind::NotFound;
            }
        }
        FailureKind::Other
    }

    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::Unreachable => "unreachable",
            FailureKind::RateLimited => "rate limited",
            FailureKind::Unauthorized => "unauthorised",
            FailureKind::NotFound => "not found",
            FailureKind::DigestMismatch => "digest mismatch",
            FailureKind::Certificate => "certificate not trusted",
            FailureKind::Stalled => "stalled",
            FailureKind::TimedOut => "timed out",
            FailureKind::Other => "failed",
        }
    }
}

/// The variable that shortens the numbers for a test that runs a binary: `connect=1s,read=500ms,attempts=3`.
pub const POLICY_VARIABLE: &str = "STACK_REGISTRY_POLICY";

/// The numbers; [`Policy::default`] for real registries, shorter ones in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// The longest silence while waiting for an answer or reading its body: what ends a stalled registry.
    pub read_timeout: Duration,
    /// Everything one operation may take, attempts and waits between them included; a blob's copy has more
    /// ([`Policy::blob_timeout`]).
    pub operation_timeout: Duration,
    /// The slowest transfer, in bytes per second, a blob's copy is given time for on top of
    /// `operation_timeout`: a big blob on a slow uplink is not cut short, and a stall is still ended by
    /// `read_timeout`.
    pub min_rate: u64,
    /// Attempts per operation, the first included.
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub backoff_base: Duration,
    /// The longest wait between attempts when the registry says nothing.
    pub backoff_cap: Duration,
    /// The longest `Retry-After` honoured: a registry asking for more gets an error rather than a hang.
    pub retry_after_cap: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(300),
            // 2 Mbit/s: a slow home uplink. 200 MB then gets 300 s + 763 s (200 MiB: 800 s).
            min_rate: 256 * 1024,
            attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(16),
            retry_after_cap: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// The default numbers, with those `$STACK_REGISTRY_POLICY` sets instead.
    pub fn from_env() -> anyhow::Result<Policy> {
        match std::env::var(POLICY_VARIABLE) {
            Ok(text) => Policy::default()
                .with_overrides(&text)
                .with_context(|| format!("reading ${POLICY_VARIABLE}")),
            Err(std::env::VarError::NotPresent) => Ok(Policy::default()),
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("${POLICY_VARIABLE} is not UTF-8: unset it or fix it")
            }
        }
    }

    /// These numbers with some replaced: `name=value` pairs separated by commas, durations in `ms` or `s`
    /// (`connect`, `read`, `operation`, `backoff`, `backoff-cap`, `retry-after-cap`), a count (`attempts`) and
    /// a rate (`min-rate`, bytes per second with an optional `KiB`, `MiB`, `kB` or `MB` and `/s`).
    pub fn with_overrides(mut self, text: &str) -> anyhow::Result<Policy> {
        const NAMES: &str =
            "connect, read, operation, min-rate, attempts, backoff, backoff-cap, retry-after-cap";
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                bail!("`{pair}` is not name=value (names: {NAMES})");
            };
            let (name, value) = (name.trim(), value.trim());
            if name == "attempts" {
                self.attempts = match value.parse() {
                    Ok(n) if n >= 1 => n,
                    _ => bail!("attempts=`{value}` is not a whole number from 1"),
                };
                continue;
            }
            if name == "min-rate" {
                self.min_rate = parse_rate(value).with_context(|| {
                    format!("min-rate=`{value}` is not a rate such as 256KiB/s or 1MB/s")
                })?;
                continue;
            }
            let slot = match name {
                "connect" => &mut self.connect_timeout,
                "read" => &mut self.read_timeout,
                "operation" => &mut self.operation_timeout,
                "backoff" => &mut self.backoff_base,
                "backoff-cap" => &mut self.backoff_cap,
                "retry-after-cap" => &mut self.retry_after_cap,
                _ => bail!("`{name}` is not a policy setting (names: {NAMES})"),
            };
            *slot = parse_duration(value).with_context(|| {
                format!("{name}=`{value}` is not a duration such as 500ms or 2s")
            })?;
        }
        Ok(self)
    }

    /// The wait before attempt `failed + 1`, after `failed` failures: the registry's `Retry-After` when it gave
    /// one (never more than the cap), else a capped exponential backoff with jitter so that parallel clients
    /// do not retry in step. `jitter` is in `[0, 1)`.
    pub fn wait_before_retry(
        &self,
        failed: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.retry_after_cap);
        }
        let doubling = 2u32.saturating_pow(failed.saturating_sub(1));
        let ceiling = self
            .backoff_base
            .saturating_mul(doubling)
            .min(self.backoff_cap);
        // Half fixed, half random: never much shorter than the backoff, never in step with another client.
        ceiling / 2 + ceiling.div_f64(2.0).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

impl Policy {
    /// Everything a blob's copy of `size` bytes may take: the operation's time, and the time to move it at
    /// `min_rate`.
    pub fn blob_timeout(&self, size: u64) -> Duration {
        let transfer = Duration::try_from_secs_f64(size as f64 / self.min_rate.max(1) as f64)
            .unwrap_or(Duration::MAX);
        self.operation_timeout.saturating_add(transfer)
    }
}

/// Bytes per second: `262144`, `256KiB/s`, `1MiB`, `500kB/s`, `2MB`; never zero.
fn parse_rate(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let text = text.strip_suffix("/s").unwrap_or(text);
    let (number, unit) = [
        ("KiB", 1024),
        ("MiB", 1024 * 1024),
        ("kB", 1000),
        ("MB", 1_000_000),
        ("B", 1),
    ]
    .into_iter()
    .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, unit)))
    .unwrap_or((text, 1));
    let number: u64 = number.trim().parse()?;
    match number.checked_mul(unit) {
        Some(0) => bail!("zero"),
        Some(rate) => Ok(rate),
        None => bail!("too large"),
    }
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.strip_suffix("ms") {
        Some(number) => (number, 1),
        None => (text.strip_suffix('s').context("no unit")?, 1000),
    };
    let number: u64 = number.parse()?;
    Ok(Duration::from_millis(
        number.checked_mul(unit).context("too long")?,
    ))
}

/// A number in `[0, 1)` that differs between calls and processes, from the standard library's own random keys.
pub fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` as a wait from `now`: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the past is no
/// wait; anything else unreadable is ignored (the backoff applies).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Where a retried operation stands after an attempt failed: how many have, since when, and how long it waited
/// between them.
#[derive(Clone, Copy, Debug)]
pub struct Tried {
    /// Failed attempts, the one just judged included.
    pub failed: u32,
    pub started: Instant,
    /// The waits between attempts, added up.
    pub waited: Duration,
}

/// A judge's decision on a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Give up: the failure is the result.
    Stop,
    /// Try again after this wait.
    Wait(Duration),
}

/// The one retry loop of the project: runs `attempt` until it succeeds or `judge` says to stop after a failure.
/// The judge sees the failure (and may add to it, such as why there is no time for another attempt) and where
/// the operation stands, and decides: each door has its own (what is transient to it, how long it may take, what
/// it says while waiting). Returns the result with where the operation stood at its end.
pub fn retry<T, E>(
    mut attempt: impl FnMut(&Tried) -> Result<T, E>,
    mut judge: impl FnMut(&mut E, &Tried) -> Verdict,
) -> (Result<T, E>, Tried) {
    let mut tried = Tried {
        failed: 0,
        started: Instant::now(),
        waited: Duration::ZERO,
    };
    loop {
        let mut error = match attempt(&tried) {
            Ok(value) => return (Ok(value), tried),
            Err(error) => error,
        };
        tried.failed += 1;
        match judge(&mut error, &tried) {
            Verdict::Stop => return (Err(error), tried),
            Verdict::Wait(wait) => {
                std::thread::sleep(wait);
                tried.waited += wait;
            }
        }
    }
}

/// [`retry`] by `policy`'s attempts and backoff alone, for a door whose failures say whether they are worth
/// another attempt: `transient` names a failure that is (`"COMMAND (unreachable)"`), and each retry says so on
/// stderr, indented under the step that runs it.
pub fn retry_saying<T, E>(
    policy: &Policy,
    attempt: impl FnMut() -> Result<T, E>,
    transient: impl Fn(&E) -> Option<String>,
) -> Result<T, E> {
    let mut attempt = attempt;
    retry(
        |_| attempt(),
        |error, tried| match transient(error) {
            Some(what) if tried.failed < policy.attempts => {
                let wait = policy.wait_before_retry(tried.failed, None, jitter());
                eprintln!("    {what}; retrying in {:.1} s", wait.as_secs_f64());
                Verdict::Wait(wait)
            }
            _ => Verdict::Stop,
        },
    )
    .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_kind(stderr: &str, expected: FailureKind) {
        assert_eq!(FailureKind::classify(stderr), expected, "{stderr}");
    }

    #[test]
    fn classifies_real_failure_messages() {
        use FailureKind::*;
        check_kind("Error response from daemon: Get \"https://ghcr.io/v2/\": dial tcp: lookup ghcr.io on 10.0.0.2:53: no such host", Unreachable);
        check_kind("ERROR: failed to do request: Head \"http://127.0.0.1:5000/v2/x/manifests/1\": dial tcp 127.0.0.1:5000: connect: connection refused", Unreachable);
        check_kind("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", Unreachable);
        check_kind(
            "Error response from daemon: toomanyrequests: You have reached your pull rate limit.",
            RateLimited,
        );
        check_kind("Error response from daemon: Head \"https://ghcr.io/v2/o/p/manifests/v1\": unauthorized", Unauthorized);
        check_kind("push access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed", Unauthorized);
        check_kind(
            "ERROR: failed to push: no basic auth credentials",
            Unauthorized,
        );
        check_kind("Error response from daemon: manifest for ghcr.io/o/php-fpm:v9.9.9-php-8.5 not found: manifest unknown: manifest unknown", NotFound);
        check_kind("ERROR: 127.0.0.1:5000/x/y:z: not found", NotFound);
        check_kind("failed commit on ref \"layer-sha256:ab\": unexpected commit digest sha256:cd, expected sha256:ab: failed precondition", DigestMismatch);
        check_kind("ERROR: unexpected status from HEAD request to http://127.0.0.1:5100/v2/a/b/manifests/v1: 500 Internal Server Error", Unreachable);
        check_kind("exit status 1", Other);
        // What classification used to take for "not found", and is not about a registry at all.
        check_kind("ERROR: failed to solve: failed to create endpoint k8x on network bridge: adding interface veth1 to bridge docker0 failed: Device does not exist", Other);
        check_kind(
            "ERROR: failed to solve: failed to compute cache key: \"/php.ini\": not found",
            Other,
        );
        check_kind("E: Failed to fetch http://deb.debian.org/debian/pool/x.deb  404  Not Found [IP: 1.2.3.4 80]", Other);
        check_kind("ERROR: failed to solve: process \"/bin/sh -c php -m | grep -q gd\" did not complete successfully: exit code: 1", Other);
        check_kind(
            "curl: (6) Could not resolve host: example; the manifest unknown to nobody",
            Other,
        );
        // Registry codes and statuses as docker reports them.
        check_kind("Error response from daemon: Get \"http://127.0.0.1:5000/v2/\": toomanyrequests: retry later", RateLimited);
        check_kind("ERROR: unexpected status from GET request to http://127.0.0.1:5000/v2/x/manifests/y: 429 Too Many Requests", RateLimited);
        check_kind("ERROR: unexpected status from GET request to http://127.0.0.1:5000/v2/x/manifests/y: 503 Service Unavailable", Unreachable);
        check_kind("Error response from daemon: pull access denied for x, repository does not exist or may require 'docker login'", Unauthorized);
        check_kind("Error response from daemon: manifest for 127.0.0.1:5000/a/b:c not found: name unknown: repository name not known to registry", NotFound);
        check_kind("ERROR: 127.0.0.1:5000/a/b:v1: not found", NotFound);
        check_kind("Error: No such image: 20i-local/php-fpm:8.4", NotFound);
        check_kind("Error response from daemon: failed to resolve reference \"127.0.0.1:46213/stack/php-fpm:v0.1.0-php-8.1\": 127.0.0.1:46213/stack/php-fpm:v0.1.0-php-8.1: not found", NotFound);
        check_kind("failed to copy: httpReadSeeker: failed open: failed to do request: Get \"http://127.0.0.1:5000/v2/a/blobs/sha256:x\": read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", Unreachable);
        check_kind("Error response from daemon: failed to resolve reference \"127.0.0.1:1/x/p:v6\": failed to do request: Head \"https://127.0.0.1:1/v2/x/p/manifests/v6\": EOF", Unreachable);
        check_kind(
            "failed to read expected number of bytes: unexpected EOF",
            Unreachable,
        );
        check_kind("Error response from daemon: Get \"https://registry.example:5000/v2/\": tls: failed to verify certificate: x509: certificate signed by unknown authority", Certificate);
        check_kind("ERROR: failed to do request: Head \"https://10.1.2.3/v2/a/manifests/b\": x509: certificate is valid for other.example, not 10.1.2.3", Certificate);
        check_kind("Error: GET http://127.0.0.1:34645/v2/: unexpected status code 400 Bad Request: Client sent an HTTP request to an HTTPS server.", Certificate);
        check_kind("failed commit on ref \"layer-sha256:ab\": \"layer-sha256:ab\" failed size validation: 10 != 12: failed precondition", DigestMismatch);
    }

    fn policy() -> Policy {
        Policy {
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(4),
            retry_after_cap: Duration::from_secs(60),
            ..Policy::default()
        }
    }

    #[track_caller]
    fn check(failed: u32, retry_after: Option<u64>, jitter: f64, expected_ms: u64) {
        let wait = policy().wait_before_retry(failed, retry_after.map(Duration::from_secs), jitter);
        assert_eq!(
            wait,
            Duration::from_millis(expected_ms),
            "{failed} {retry_after:?} {jitter}"
        );
    }

    #[test]
    fn waits_double_up_to_the_cap_with_half_of_each_random() {
        check(1, None, 0.0, 250);
        check(1, None, 0.5, 375);
        check(2, None, 0.0, 500);
        check(3, None, 0.0, 1000);
        check(4, None, 0.0, 2000);
        check(5, None, 0.0, 2000);
        check(5, None, 0.999, 3998);
        check(60, None, 0.0, 2000);
        check(u32::MAX, None, 1.0, 4000);
        check(1, Some(7), 0.9, 7000);
        check(1, Some(0), 0.9, 0);
        check(3, Some(3600), 0.0, 60_000);
    }

    #[track_caller]
    fn check_retry_after(value: &str, expected: Option<u64>) {
        let now = httpdate::parse_http_date("Thu, 26 Nov 2026 06:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after(value, now),
            expected.map(Duration::from_secs),
            "{value:?}"
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        check_retry_after("0", Some(0));
        check_retry_after("120", Some(120));
        check_retry_after(" 5 ", Some(5));
        check_retry_after("Thu, 26 Nov 2026 06:00:30 GMT", Some(30));
        check_retry_after("Thu, 26 Nov 2026 05:00:00 GMT", Some(0));
        check_retry_after("Thursday, 26-Nov-26 06:01:00 GMT", Some(60));
        check_retry_after("-1", None);
        check_retry_after("1.5", None);
        check_retry_after("soon", None);
        check_retry_after("", None);
    }

    #[track_caller]
    fn check_overrides(text: &str, expected: Result<Policy, &str>) {
        let actual = Policy::default()
            .with_overrides(text)
            .map_err(|e| format!("{e:#}"));
        match (actual, expected) {
            (Ok(actual), Ok(expected)) => assert_eq!(actual, expected, "{text}"),
            (Err(actual), Err(expected)) => assert!(actual.contains(expected), "{text}: {actual}"),
            (actual, expected) => panic!("{text}: {actual:?} instead of {expected:?}"),
        }
    }

    #[test]
    fn overrides_for_tests() {
        let ms = Duration::from_millis;
        check_overrides("", Ok(Policy::default()));
        check_overrides(
            "connect=1s, read=500ms,operation=20s,attempts=3,backoff=50ms,backoff-cap=200ms,retry-after-cap=2s",
            Ok(Policy {
                connect_timeout: ms(1000),
                read_timeout: ms(500),
                operation_timeout: ms(20_000),
                min_rate: 256 * 1024,
                attempts: 3,
                backoff_base: ms(50),
                backoff_cap: ms(200),
                retry_after_cap: ms(2000),
            }),
        );
        check_overrides(
            "attempts=1",
            Ok(Policy {
                attempts: 1,
                ..Policy::default()
            }),
        );
        check_overrides(
            "attempts=0",
            Err("attempts=`0` is not a whole number from 1"),
        );
        check_overrides(
            "read=5",
            Err("read=`5` is not a duration such as 500ms or 2s"),
        );
        check_overrides("read=-1s", Err("read=`-1s` is not a duration"));
        check_overrides("read=1.5s", Err("read=`1.5s` is not a duration"));
        check_overrides(
            "timeout=1s",
            Err("`timeout` is not a policy setting (names: connect, read,"),
        );
        check_overrides("read", Err("`read` is not name=value"));
        for (text, rate) in [
            ("min-rate=262144", 262_144),
            ("min-rate=256KiB/s", 262_144),
            ("min-rate=1MiB", 1_048_576),
            ("min-rate=500kB/s", 500_000),
            ("min-rate=2MB/s", 2_000_000),
            ("min-rate=10B/s", 10),
        ] {
            check_overrides(
                text,
                Ok(Policy {
                    min_rate: rate,
                    ..Policy::default()
                }),
            );
        }
        check_overrides("min-rate=0", Err("min-rate=`0` is not a rate"));
        check_overrides("min-rate=fast", Err("min-rate=`fast` is not a rate"));
        check_overrides("min-rate=1.5MB", Err("min-rate=`1.5MB` is not a rate"));
    }

    #[track_caller]
    fn check_blob_timeout(operation_s: u64, min_rate: u64, size: u64, expected_s: f64) {
        let policy = Policy {
            operation_timeout: Duration::from_secs(operation_s),
            min_rate,
            ..Policy::default()
        };
        assert_eq!(
            policy.blob_timeout(size),
            Duration::from_secs_f64(expected_s),
            "{operation_s} s, {min_rate} B/s, {size} B"
        );
    }

    #[test]
    fn a_blob_s_deadline_grows_with_its_size() {
        const MB: u64 = 1_000_000;
        check_blob_timeout(300, 256 * 1024, 0, 300.0);
        check_blob_timeout(300, 256 * 1024, 256 * 1024, 301.0);
        // 200 MB over 5 Mbit/s needs 320 s: the default gives it 300 s + 763 s.
        check_blob_timeout(300, 256 * 1024, 200 * MB, 300.0 + 200e6 / 262_144.0);
        check_blob_timeout(2, 10 * MB, 50 * MB, 7.0);
        check_blob_timeout(300, 1, 10, 310.0);
        let endless = Policy {
            min_rate: 1,
            ..Policy::default()
        };
        assert_eq!(endless.blob_timeout(u64::MAX), Duration::MAX);
    }

    #[test]
    fn retry_runs_until_done_or_the_judge_stops_and_counts_what_it_did() {
        // (failures before success, the judge's waits in ms for each failure (None: stop), result, failed, waited)
        type Row = (u32, &'static [Option<u64>], Result<u32, u32>, u32, u64);
        let rows: [Row; 5] = [
            (0, &[], Ok(1), 0, 0),
            (2, &[Some(1), Some(2)], Ok(3), 2, 3),
            (3, &[Some(1), None], Err(2), 2, 1),
            (5, &[None], Err(1), 1, 0),
            (1, &[Some(0)], Ok(2), 1, 0),
        ];
        for (failures, waits, expected, failed, waited) in rows {
            let mut attempts = 0;
            let (result, tried) = retry(
                |tried| {
                    attempts += 1;
                    assert_eq!(
                        tried.failed,
                        attempts - 1,
                        "the attempt sees the failures before it"
                    );
                    if attempts > failures {
                        Ok(attempts)
                    } else {
                        Err(attempts)
                    }
                },
                |error, tried| {
                    assert_eq!(*error, tried.failed);
                    match waits[tried.failed as usize - 1] {
                        Some(ms) => Verdict::Wait(Duration::from_millis(ms)),
                        None => Verdict::Stop,
                    }
                },
            );
            let row = format!("{failures} {waits:?}");
            assert_eq!(result, expected, "{row}");
            assert_eq!(tried.failed, failed, "{row}");
            assert_eq!(tried.waited, Duration::from_millis(waited), "{row}");
        }
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
