//! One retry and timeout policy for every registry call of both binaries: how long to wait for a connection, for
//! each read and for a whole operation, which failures are worth another attempt, and how long to wait before it.

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context};

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn jitter_is_a_fraction() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
