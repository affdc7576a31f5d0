//! Bearer tokens as the distribution token spec has them: the scopes a request asks for (the operation's own,
//! merged with the challenge's, since GHCR's challenge names only `:pull` even for a push), the token service's
//! answer with its lifetime, and the tokens kept per host and granted scope set until they expire.

use std::{
    collections::BTreeSet,
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// How long a token lives when the service does not say: the token spec's default.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// Taken off every lifetime, so that a token is not sent in its last seconds and expires on the way.
const SAFETY_MARGIN: Duration = Duration::from_secs(10);

/// One resource and its actions: `repository:20i-stack/php-fpm:pull,push`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Scope {
    /// `repository`, or another resource type a challenge names (`registry` for the catalog).
    kind: String,
    name: String,
    actions: BTreeSet<String>,
}

/// The scopes of one token request: per resource, the union of every action asked for, in the order the
/// resources were first named (the operation's own repository first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// `repository:PATH:ACTIONS` (`actions` comma-separated).
    pub fn repository(path: &str, actions: &str) -> Scopes {
        let mut scopes = Scopes::default();
        scopes.add(&format!("repository:{path}:{actions}"));
        scopes
    }

    /// Adds every scope of `text`, a challenge's `scope` (several are separated by spaces), merging actions
    /// per resource. Text that is no scope (no `type:name:actions`) is left out.
    pub fn add(&mut self, text: &str) {
        for one in text.split_whitespace() {
            // The name may hold a `:` (a host with a port); the type ends at the first, the actions at the last.
            let Some((kind, rest)) = one.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            if kind.is_empty() || name.is_empty() {
                continue;
            }
            let actions = actions
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned);
            match self.0.iter_mut().find(|s| s.kind == kind && s.name == name) {
                Some(scope) => scope.actions.extend(actions),
                None => self.0.push(Scope {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    actions: actions.collect(),
                }),
            }
        }
    }

    /// These scopes with every one of `other`'s added.
    pub fn union(&self, other: &Scopes) -> Scopes {
        let mut union = self.clone();
        for scope in &other.0 {
            union.add(&scope.to_string());
        }
        union
    }

    /// Whether a token granted these scopes allows everything `wanted` asks for.
    pub fn covers(&self, wanted: &Scopes) -> bool {
        wanted.0.iter().all(|w| {
            self.0
                .iter()
                .any(|s| s.kind == w.kind && s.name == w.name && s.actions.is_superset(&w.actions))
        })
    }

    /// One string per resource, as each `scope` parameter of a token request carries it.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pull` before `push` before anything else, as registries and their documentation write them.
        let rank = |a: &str| match a {
            "pull" => 0,
            "push" => 1,
            _ => 2,
        };
        let mut actions: Vec<&str> = self.actions.iter().map(String::as_str).collect();
        actions.sort_by_key(|a| (rank(a), *a));
        write!(f, "{}:{}:{}", self.kind, self.name, actions.join(","))
    }
}

/// The query (or form body) of a token request: one `scope=` per scope, as the token spec asks, then the
/// service. Values are form-encoded.
pub fn token_query(scopes: &Scopes, service: Option<&str>) -> Vec<(&'static str, String)> {
    let mut query: Vec<(&'static str, String)> = scopes
        .to_strings()
        .into_iter()
        .map(|scope| ("scope", scope))
        .collect();
    if let Some(service) = service {
        query.push(("service", service.to_owned()));
    }
    query
}

/// An `Authorization` a host accepted (or its token service issued), what it was granted for and until when.
#[derive(Clone)]
pub struct Granted {
    pub authorization: String,
    /// `None` for a Basic login, which is not scoped.
    pub scopes: Option<Scopes>,
    /// `None` for a Basic login, which does not expire.
    pub expires: Option<SystemTime>,
    /// Whether docker's login was behind it (an anonymous token proves nothing of a repository).
    pub credentialed: bool,
}

/// The token itself is never shown.
impl fmt::Debug for Granted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Granted")
            .field("authorization", &"<hidden>")
            .field("scopes", &self.scopes)
            .field("expires", &self.expires)
            .field("credentialed", &self.credentialed)
            .finish()
    }
}

impl Granted {
    fn serves(&self, wanted: &Scopes, now: SystemTime) -> bool {
        self.expires.is_none_or(|expires| now < expires)
            && self.scopes.as_ref().is_none_or(|s| s.covers(wanted))
    }
}

/// What a host's challenges were answered with: its last challenge (a 403 `insufficient_scope` may come
/// without one) and the authorizations granted.
#[derive(Debug, Default)]
pub struct Held {
    pub challenge: Option<String>,
    pub granted: Vec<Granted>,
    /// Held while a token is fetched for the host, so that threads refused together fetch one.
    pub fetching: std::sync::Arc<std::sync::Mutex<()>>,
}

/// The first of a host's authorizations that is still valid at `now` and allows `wanted`; expired ones are
/// dropped on the way.
pub fn find(held: &mut Vec<Granted>, wanted: &Scopes, now: SystemTime) -> Option<Granted> {
    held.retain(|g| g.expires.is_none_or(|expires| now < expires));
    held.iter().find(|g| g.serves(wanted, now)).cloned()
}

/// Keeps `granted`, replacing one for the same scope set.
pub fn keep(held: &mut Vec<Granted>, granted: Granted) {
    held.retain(|g| g.scopes != granted.scopes);
    held.push(granted);
}

/// Drops `authorization`: the registry refused it.
pub fn forget(held: &mut Vec<Granted>, authorization: &str) {
    held.retain(|g| g.authorization != authorization);
}

/// When a token answered at `now` stops being sent: `issued_at` (when given, and not in our future: clocks
/// differ) plus `expires_in` (the spec's 60 s when absent or nonsense), less a safety margin of at most half
/// the lifetime.
pub fn expiry(expires_in: Option<i64>, issued_at: Option<&str>, now: SystemTime) -> SystemTime {
    let lifetime = match expires_in {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds as u64),
        _ => DEFAULT_LIFETIME,
    };
    let issued = issued_at
        .and_then(parse_rfc3339)
        .filter(|issued| *issued < now)
        .unwrap_or(now);
    issued + lifetime - SAFETY_MARGIN.min(lifetime / 2)
}

/// `2026-12-02T15:10:40Z`, with fractional seconds and a `+hh:mm` offset allowed, as token services write
/// `issued_at`.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date = date.splitn(3, '-');
    let (year, month, day) = (
        number(date.next()?)?,
        number(date.next()?)?,
        number(date.next()?)?,
    );
    let (clock, offset) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = zone[1..].split_once(':')?;
        (
            clock,
            sign * (number(hours)? * 3600 + number(minutes)? * 60),
        )
    };
    let clock = clock.split_once('.').map_or(clock, |(whole, _)| whole);
    let mut clock = clock.splitn(3, ':');
    let (hour, minute, second) = (
        number(clock.next()?)?,
        number(clock.next()?)?,
        number(clock.next()?)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), proleptic Gregorian.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(seconds)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(texts: &[&str]) -> Scopes {
        let mut scopes = Scopes::default();
        for text in texts {
            scopes.add(text);
        }
        scopes
    }

    #[track_caller]
    fn check_union(own: &[&str], challenge: &str, expected: &[&str]) {
        let union = scopes(own).union(&scopes(&[challenge]));
        assert_eq!(union.to_strings(), expected, "{own:?} ∪ {challenge:?}");
    }

    #[test]
    fn the_operations_scopes_and_the_challenges_are_merged_per_repository() {
        // GHCR names only `:pull` for a PUT: the push stays asked for.
        check_union(
            &["repository:o/a:pull,push"],
            "repository:o/a:pull",
            &["repository:o/a:pull,push"],
        );
        // A mount: the source's pull beside the destination's push.
        check_union(
            &["repository:o/a:pull,push", "repository:o/b:pull"],
            "repository:o/a:pull",
            &["repository:o/a:pull,push", "repository:o/b:pull"],
        );
        check_union(
            &["repository:o/a:pull"],
            "repository:o/a:push",
            &["repository:o/a:pull,push"],
        );
        check_union(
            &["repository:o/a:pull"],
            "repository:o/a:pull repository:o/c:pull",
            &["repository:o/a:pull", "repository:o/c:pull"],
        );
        check_union(
            &["repository:o/a:pull"],
            "registry:catalog:*",
            &["repository:o/a:pull", "registry:catalog:*"],
        );
        check_union(
            &["repository:o/a:delete,push,pull"],
            "",
            &["repository:o/a:pull,push,delete"],
        );
        // A host with a port inside the name.
        check_union(
            &["repository:127.0.0.1:5000/a:pull"],
            "repository:127.0.0.1:5000/a:push",
            &["repository:127.0.0.1:5000/a:pull,push"],
        );
        check_union(
            &["repository:o/a:pull"],
            "nonsense",
            &["repository:o/a:pull"],
        );
    }

    #[track_caller]
    fn check_query(own: &[&str], service: Option<&str>, expected: &str) {
        let query = token_query(&scopes(own), service)
            .iter()
            .map(|(k, v)| format!("{k}={}", super::super::form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(query, expected);
    }

    #[test]
    fn each_scope_is_its_own_parameter() {
        check_query(
            &["repository:o/a:pull,push", "repository:o/b:pull"],
            Some("ghcr.io"),
            "scope=repository%3Ao%2Fa%3Apull%2Cpush&scope=repository%3Ao%2Fb%3Apull&service=ghcr.io",
        );
        check_query(
            &["repository:library/php:pull"],
            None,
            "scope=repository%3Alibrary%2Fphp%3Apull",
        );
    }

    #[track_caller]
    fn check_covers(granted: &[&str], wanted: &[&str], expected: bool) {
        assert_eq!(
            scopes(granted).covers(&scopes(wanted)),
            expected,
            "{granted:?} ⊇ {wanted:?}"
        );
    }

    #[test]
    fn a_token_serves_what_it_was_granted_for() {
        check_covers(
            &["repository:o/a:pull,push"],
            &["repository:o/a:pull"],
            true,
        );
        check_covers(
            &["repository:o/a:pull"],
            &["repository:o/a:pull,push"],
            false,
        );
        check_covers(&["repository:o/a:pull"], &["repository:o/b:pull"], false);
        check_covers(
            &["repository:o/a:pull,push", "repository:o/b:pull"],
            &["repository:o/b:pull"],
            true,
        );
        check_covers(&["repository:o/a:pull"], &[], true);
    }

    const T0: u64 = 1_800_000_000;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[track_caller]
    fn check_expiry(expires_in: Option<i64>, issued_at: Option<&str>, expected: u64) {
        assert_eq!(
            expiry(expires_in, issued_at, at(T0)),
            at(expected),
            "{expires_in:?} {issued_at:?}"
        );
    }

    #[test]
    fn tokens_expire_as_the_service_says_less_a_margin() {
        check_expiry(Some(300), None, T0 + 290);
        check_expiry(None, None, T0 + 50);
        check_expiry(Some(0), None, T0 + 50);
        check_expiry(Some(-5), None, T0 + 50);
        check_expiry(Some(10), None, T0 + 5);
        // 1_800_000_000 is 2027-01-15T08:00:00Z.
        check_expiry(Some(300), Some("2027-01-15T07:59:00Z"), T0 - 60 + 290);
        check_expiry(Some(300), Some("2027-01-15T08:59:00+01:00"), T0 - 60 + 290);
        check_expiry(
            Some(300),
            Some("2027-01-15T07:59:00.123456789Z"),
            T0 - 60 + 290,
        );
        // Issued in our future: the other clock is ahead, ours counts.
        check_expiry(Some(300), Some("2027-01-15T08:05:00Z"), T0 + 290);
        check_expiry(Some(300), Some("yesterday"), T0 + 290);
    }

    fn granted(token: &str, scope: &str, expires: Option<u64>) -> Granted {
        Granted {
            authorization: format!("Bearer {token}"),
            scopes: Some(scopes(&[scope])),
            expires: expires.map(at),
            credentialed: true,
        }
    }

    #[track_caller]
    fn check_find(now: u64, wanted: &str, expected: Option<&str>) {
        let mut held = vec![
            granted("pull", "repository:o/a:pull", Some(T0 + 100)),
            granted("push", "repository:o/a:pull,push", Some(T0 + 50)),
            granted("other", "repository:o/b:pull", None),
        ];
        let found = find(&mut held, &scopes(&[wanted]), at(now)).map(|g| g.authorization);
        assert_eq!(
            found.as_deref(),
            expected.map(|t| format!("Bearer {t}")).as_deref(),
            "{wanted} at {now}"
        );
    }

    #[test]
    fn an_expired_token_is_not_sent() {
        check_find(T0, "repository:o/a:pull", Some("pull"));
        check_find(T0, "repository:o/a:push", Some("push"));
        check_find(T0 + 50, "repository:o/a:push", None);
        check_find(T0 + 99, "repository:o/a:pull", Some("pull"));
        check_find(T0 + 100, "repository:o/a:pull", None);
        check_find(T0 + 100_000, "repository:o/b:pull", Some("other"));
        check_find(T0, "repository:o/c:pull", None);
    }

    #[test]
    fn a_refused_token_is_forgotten_and_a_new_one_replaces_its_scope_set() {
        let mut held = vec![granted("old", "repository:o/a:pull", None)];
        keep(&mut held, granted("new", "repository:o/a:pull", None));
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].authorization, "Bearer new");
        forget(&mut held, "Bearer new");
        assert!(held.is_empty());
        let shown = format!("{:?}", granted("s3cret", "repository:o/a:pull", None));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
