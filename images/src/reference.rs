//! Image references as types: [`Namespace`], [`RepoName`], [`Repository`], [`Tag`] and [`ImageRef`], parsed once
//! with the grammar of the OCI distribution spec and docker's limits, then carried as values. No other code
//! formats a reference by hand or splits one apart.
//!
//! Stricter than docker on purpose: a reference always names its registry host (nothing is silently completed
//! to `docker.io/library/...:latest`, which is why `oci_spec::distribution::Reference` is not used as the type;
//! a test holds every reference accepted here to parse the same with it), hosts are lowercase, and nothing
//! can start with `-`, so no value reaches `docker` as an option.

use std::{fmt, str::FromStr};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::Digest;

/// Docker's limit on a tag: 128 characters.
pub const TAG_MAX: usize = 128;
/// Docker's limit on a repository name, registry host included.
pub const NAME_MAX: usize = 255;

const NAMESPACE_EXAMPLE: &str = "for example ghcr.io/20i-stack or 127.0.0.1:5000/test";
const REFERENCE_EXAMPLE: &str = "for example ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5";

/// A registry host and an optional path below it, where repositories live: `ghcr.io/20i-stack`,
/// `127.0.0.1:5000/test`, `localhost:5000`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace {
    text: String,
    host_len: usize,
}

impl Namespace {
    /// The registry host, with its port: what `docker login` takes.
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn repository(&self, name: &RepoName) -> Repository {
        Repository {
            namespace: self.clone(),
            name: name.clone(),
        }
    }

    /// Whether the host is on this machine (127.0.0.0/8, `localhost`, `[::1]`): plain HTTP, no login needed.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        let name = match host.rsplit_once(':') {
            Some((name, port))
                if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        };
        name == "localhost" || name == "[::1]" || name.starts_with("127.")
    }
}

impl FromStr for Namespace {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<Namespace> {
        match parse_namespace(input) {
            Ok(namespace) => Ok(namespace),
            Err(why) => bail!(
                "registry namespace `{}` is not valid: {why}; use host/namespace without scheme or tag, \
                 {NAMESPACE_EXAMPLE}",
                printable(input)
            ),
        }
    }
}

fn parse_namespace(input: &str) -> Result<Namespace, String> {
    if input.is_empty() {
        return Err("it is empty".into());
    }
    if input.contains("://") {
        return Err("it has a scheme".into());
    }
    let (host, path) = match input.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (input, None),
    };
    check_host(host)?;
    if let Some(path) = path {
        for component in path.split('/') {
            check_component(component)?;
        }
    }
    if input.len() > NAME_MAX {
        return Err(format!("it is longer than {NAME_MAX} characters"));
    }
    Ok(Namespace {
        text: input.to_owned(),
        host_len: host.len(),
    })
}

/// `domain(.domain)*(:port)?` or `[ipv6](:port)?`, lowercase; a registry host is told from a path component the
/// way docker does it: it has a `.` or a `:`, or is `localhost`.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the registry host is empty".into());
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return Err(format!("the host `{host}` has an unclosed `[`"));
        };
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("the host `{host}` is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (&host[..host.len() - after.len()], Some(port)),
                None => return Err(format!("the host `{host}` has text after `]`")),
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(format!(
                "the port of `{host}` is not a number from 1 to 65535"
            ));
        }
    }
    if !name.starts_with('[') {
        for label in name.split('.') {
            let valid = !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return Err(format!(
                    "the registry host `{host}` is not a lowercase host name (letters, digits, inner `-` and `.`)"
                ));
            }
        }
        if !(name.contains('.') || port.is_some() || name == "localhost") {
            return Err(format!(
                "`{name}` is not a registry host (a host has a `.` or a port, or is localhost)"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: one path component of a repository name.
fn check_component(component: &str) -> Result<(), String> {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() {
        return Err("it has an empty path component (`//` or a trailing `/`)".into());
    }
    let mut i = 0;
    let mut valid = alnum(bytes[0]);
    while valid && i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        valid = i < bytes.len()
            && (separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|b| b == b'-'));
    }
    if !valid {
        return Err(format!(
            "the path component `{component}` is not lowercase letters and digits joined by `.`, `_`, `__` or `-`"
        ));
    }
    Ok(())
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One repository path component, the image's own name: `php-fpm`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<RepoName> {
        if let Err(why) = check_component(input) {
            bail!(
                "image name `{}` is not a valid repository name: {why}, for example php-fpm",
                printable(input)
            );
        }
        Ok(RepoName(input.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository in a registry: `ghcr.io/20i-stack/php-fpm`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Repository {
    namespace: Namespace,
    name: RepoName,
}

impl Repository {
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub fn name(&self) -> &RepoName {
        &self.name
    }

    /// The path below the host, as the registry API spells it: `20i-stack/php-fpm`.
    pub fn path(&self) -> String {
        let below_host = &self.namespace.text[self.namespace.host_len..];
        format!("{}/{}", below_host.trim_start_matches('/'), self.name)
            .trim_start_matches('/')
            .to_owned()
    }

    pub fn tagged(&self, tag: &Tag) -> ImageRef {
        ImageRef {
            repository: self.clone(),
            tag: Some(tag.clone()),
            digest: None,
        }
    }

    pub fn at(&self, digest: &Digest) -> ImageRef {
        ImageRef {
            repository: self.clone(),
            tag: None,
            digest: Some(digest.clone()),
        }
    }
}

impl FromStr for Repository {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<Repository> {
        match parse_repository(input) {
            Ok(repository) => Ok(repository),
            Err(why) => bail!(
                "`{}` is not a repository: {why}; {REFERENCE_EXAMPLE}",
                printable(input)
            ),
        }
    }
}

fn parse_repository(input: &str) -> Result<Repository, String> {
    let Some((namespace, name)) = input.rsplit_once('/') else {
        return Err("it names no registry host".into());
    };
    let namespace = parse_namespace(namespace)?;
    check_component(name)?;
    if input.len() > NAME_MAX {
        return Err(format!("it is longer than {NAME_MAX} characters"));
    }
    Ok(Repository {
        namespace,
        name: RepoName(name.to_owned()),
    })
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A tag built by the tag scheme from parts that were validated already (`vX.Y.Z-php-M.m`).
    pub(crate) fn from_scheme(text: String) -> Tag {
        debug_assert!(check_tag(&text).is_ok(), "the tag scheme made `{text}`");
        Tag(text)
    }
}

impl FromStr for Tag {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<Tag> {
        if let Err(why) = check_tag(input) {
            bail!("{why}: use letters, digits, `_`, `.` and `-`, for example v2.0.0-php-8.5");
        }
        Ok(Tag(input.to_owned()))
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let shown = printable(tag);
    let Some(&first) = tag.as_bytes().first() else {
        return Err("the tag is empty".into());
    };
    if !word(first) {
        return Err(format!(
            "the tag `{shown}` must start with a letter, a digit or `_`"
        ));
    }
    if !tag.bytes().all(|b| word(b) || b == b'.' || b == b'-') {
        return Err(format!(
            "the tag `{shown}` has a character other than letters, digits, `_`, `.` and `-`"
        ));
    }
    if tag.len() > TAG_MAX {
        return Err(format!(
            "the tag `{shown}` has {} characters, and docker allows {TAG_MAX}",
            tag.len()
        ));
    }
    Ok(())
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image in a registry: a repository with a tag, a digest, or both (`ns/name:tag@sha256:…`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    repository: Repository,
    tag: Option<Tag>,
    digest: Option<Digest>,
}

impl ImageRef {
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub fn namespace(&self) -> &Namespace {
        &self.repository.namespace
    }

    pub fn tag(&self) -> Option<&Tag> {
        self.tag.as_ref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same image, named by `digest` too: what a pull by digest or a pin uses.
    pub fn with_digest(&self, digest: &Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// The same repository and tag in another namespace (a mirror).
    pub fn in_namespace(&self, namespace: &Namespace) -> ImageRef {
        ImageRef {
            repository: namespace.repository(&self.repository.name),
            ..self.clone()
        }
    }

    /// What the registry API calls the reference: the digest if there is one, else the tag.
    pub fn api_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_str(),
            (None, Some(tag)) => tag.as_str(),
            (None, None) => unreachable!("an ImageRef has a tag or a digest"),
        }
    }
}

impl FromStr for ImageRef {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<ImageRef> {
        match parse_reference(input) {
            Ok(reference) => Ok(reference),
            Err(why) => bail!(
                "`{}` is not an image reference: {why}; {REFERENCE_EXAMPLE}",
                printable(input)
            ),
        }
    }
}

fn parse_reference(input: &str) -> Result<ImageRef, String> {
    let (name, digest) = match input.split_once('@') {
        Some((name, digest)) => (
            name,
            Some(Digest::parse(digest).map_err(|e| format!("{e:#}"))?),
        ),
        None => (input, None),
    };
    let slash = name.rfind('/').unwrap_or(0);
    let (repository, tag) = match name[slash..].rfind(':') {
        Some(colon) => (&name[..slash + colon], Some(&name[slash + colon + 1..])),
        None => (name, None),
    };
    let repository = parse_repository(repository)?;
    let tag = match tag {
        Some(tag) => Some(check_tag(tag).map(|()| Tag(tag.to_owned()))?),
        None => None,
    };
    if tag.is_none() && digest.is_none() {
        return Err("it has neither a tag nor a digest".into());
    }
    Ok(ImageRef {
        repository,
        tag,
        digest,
    })
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A value quoted in an error: control characters escaped, and cut short, so a pasted blob cannot flood the
/// terminal or forge lines.
fn printable(input: &str) -> String {
    let escaped: String = input.chars().flat_map(char::escape_debug).collect();
    match escaped.char_indices().nth(120) {
        Some((end, _)) => format!("{}…", &escaped[..end]),
        None => escaped,
    }
}

macro_rules! string_serde {
    ($($type:ty),*) => {$(
        impl Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$type, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
            }
        }
    )*};
}

string_serde!(Namespace, RepoName, Repository, Tag, ImageRef);

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// `ok: host | path | tag | digest` for a valid reference, `error: …` otherwise.
    fn summary(input: &str) -> String {
        match input.parse::<ImageRef>() {
            Ok(r) => {
                assert_eq!(r.to_string(), input, "a reference prints as it was written");
                format!(
                    "ok: {} | {} | {} | {}",
                    r.namespace().host(),
                    r.repository().path(),
                    r.tag().map(Tag::as_str).unwrap_or("-"),
                    r.digest().map(|d| d.short()).unwrap_or("-")
                )
            }
            Err(e) => format!("error: {e:#}"),
        }
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let actual = summary(input);
        assert!(
            actual.starts_with(expected),
            "{input:?}\n  got:      {actual}\n  expected: {expected}…"
        );
    }

    #[test]
    fn references() {
        check(
            "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5",
            "ok: ghcr.io | 20i-stack/php-fpm | v2.0.0-php-8.5 | -",
        );
        check(
            "127.0.0.1:5000/a/b/c:latest",
            "ok: 127.0.0.1:5000 | a/b/c | latest | -",
        );
        check("localhost/php-fpm:x", "ok: localhost | php-fpm | x | -");
        check(
            "[::1]:5000/ns/php-fpm:x",
            "ok: [::1]:5000 | ns/php-fpm | x | -",
        );
        check(
            &format!("docker.io/20istack/php-fpm@{DIGEST}"),
            "ok: docker.io | 20istack/php-fpm | - | sha256:0123456789ab",
        );
        check(
            &format!("docker.io/20istack/php-fpm:v1@{DIGEST}"),
            "ok: docker.io | 20istack/php-fpm | v1 | sha256:0123456789ab",
        );
        check(
            "registry.example.com/a__b/c.d/e--f:_T.1-x",
            "ok: registry.example.com | a__b/c.d/e--f | _T.1-x | -",
        );
        check(&format!("r.io/a:{}", "t".repeat(128)), "ok: r.io | a |");
    }

    #[test]
    fn bad_references_say_why() {
        let bad = [
            ("", "it names no registry host"),
            ("php-fpm:8.4", "it names no registry host"),
            (
                "20i-stack/php-fpm:8.4",
                "`20i-stack` is not a registry host",
            ),
            ("ghcr.io/x/php-fpm", "it has neither a tag nor a digest"),
            (
                "-oops/x/y:z",
                "the registry host `-oops` is not a lowercase host name",
            ),
            ("ghcr.io/-x/y:z", "the path component `-x`"),
            ("ghcr.io/x/y:-z", "the tag `-z` must start with a letter"),
            ("ghcr.io/x/y:--output=f", "must start with a letter"),
            ("ghcr.io/x/Y:z", "the path component `Y`"),
            ("GHCR.io/x/y:z", "not a lowercase host name"),
            ("ghcr.io/x/../y:z", "the path component `..`"),
            ("ghcr.io/x//y:z", "empty path component"),
            ("ghcr.io/x/y:", "the tag is empty"),
            ("ghcr.io/x/y:a b", "has a character other than"),
            ("ghcr.io/x/y@sha256:abc", "is not a sha256 digest"),
            ("ghcr.io:0/x/y:z", "not a number from 1 to 65535"),
            ("ghcr.io:99999/x/y:z", "not a number from 1 to 65535"),
            ("https://ghcr.io/x/y:z", "it has a scheme"),
            (
                "ghcr.io/x/y:a\nFORGED",
                "`a\\nFORGED` has a character other",
            ),
            ("[::1/x/y:z", "unclosed `[`"),
            ("ghcr.io/x_/y:z", "the path component `x_`"),
            ("ghcr.io/x/y:z:w", "the path component `y:z`"),
        ];
        for (input, why) in bad {
            let error = summary(input);
            assert!(
                error.starts_with("error: ") && error.contains(why),
                "{input:?}: `{error}` does not say `{why}`"
            );
            assert!(!error.contains('\n'), "{input:?}: one line: {error}");
        }
        let long_tag = format!("r.io/a:{}", "t".repeat(129));
        assert!(summary(&long_tag).contains("has 129 characters, and docker allows 128"));
        let long_name = format!("r.io/{}:t", "a".repeat(251));
        assert!(summary(&long_name).contains("longer than 255"));
    }

    #[track_caller]
    fn check_namespace(input: &str, expected: &str) {
        let actual = match input.parse::<Namespace>() {
            Ok(ns) => format!("ok: {} {}", ns.host(), ns.is_loopback()),
            Err(e) => format!("error: {e:#}"),
        };
        assert!(
            actual.contains(expected),
            "{input:?}: `{actual}` does not contain `{expected}`"
        );
    }

    #[test]
    fn namespaces() {
        check_namespace("ghcr.io/20i-stack", "ok: ghcr.io false");
        check_namespace("docker.io/20istack", "ok: docker.io false");
        check_namespace("127.0.0.1:5000/test", "ok: 127.0.0.1:5000 true");
        check_namespace("127.0.0.1:5000", "ok: 127.0.0.1:5000 true");
        check_namespace("localhost:5000/a/b", "ok: localhost:5000 true");
        check_namespace("[::1]:5000/a", "ok: [::1]:5000 true");
        check_namespace("-oops", "registry namespace `-oops` is not valid");
        check_namespace("--push/x", "registry namespace `--push/x` is not valid");
        check_namespace("-x", "use host/namespace without scheme or tag");
        check_namespace("ghcr.io/20i-stack/", "empty path component");
        check_namespace("ghcr.io/20i-stack:v1", "the path component `20i-stack:v1`");
        check_namespace("20i-stack", "`20i-stack` is not a registry host");
        check_namespace("", "it is empty");
        check_namespace("ghcr.io/a\u{1b}[31m", "\\u{1b}");
    }

    #[test]
    fn parts_build_references() {
        let namespace: Namespace = "127.0.0.1:5000/ns".parse().unwrap();
        let name: RepoName = "php-fpm".parse().unwrap();
        let repository = namespace.repository(&name);
        let tag: Tag = "v2.0.0-php-8.4".parse().unwrap();
        let pin = repository.tagged(&tag);
        assert_eq!(pin.to_string(), "127.0.0.1:5000/ns/php-fpm:v2.0.0-php-8.4");
        assert_eq!(pin.api_reference(), "v2.0.0-php-8.4");
        let digest = Digest::parse(DIGEST).unwrap();
        assert_eq!(
            repository.at(&digest).to_string(),
            format!("127.0.0.1:5000/ns/php-fpm@{DIGEST}")
        );
        assert_eq!(pin.with_digest(&digest).api_reference(), DIGEST);
        let mirror: Namespace = "docker.io/20istack".parse().unwrap();
        assert_eq!(
            pin.in_namespace(&mirror).to_string(),
            "docker.io/20istack/php-fpm:v2.0.0-php-8.4"
        );
        let bare: Namespace = "localhost:5000".parse().unwrap();
        assert_eq!(bare.repository(&name).path(), "php-fpm");
    }

    /// Every reference accepted here means the same to the distribution grammar as oci-spec implements it.
    #[test]
    fn oci_spec_reads_them_the_same() {
        for input in [
            "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5",
            "127.0.0.1:5000/a/b/c:latest",
            "localhost:5000/php-fpm:x",
            "registry.example.com/a__b/c.d/e--f:_T.1-x",
            &format!("docker.io/20istack/php-fpm:v1@{DIGEST}"),
            &format!("docker.io/20istack/php-fpm@{DIGEST}"),
        ] {
            let ours: ImageRef = input.parse().unwrap();
            let theirs: oci_spec::distribution::Reference = input.parse().unwrap();
            assert_eq!(theirs.registry(), ours.namespace().host(), "{input}");
            assert_eq!(theirs.repository(), ours.repository().path(), "{input}");
            assert_eq!(theirs.tag(), ours.tag().map(Tag::as_str), "{input}");
            assert_eq!(
                theirs.digest(),
                ours.digest().map(Digest::as_str),
                "{input}"
            );
        }
    }

    #[test]
    fn serde_round_trips_and_refuses_bad_values() {
        let pin: ImageRef = serde_json::from_str("\"ghcr.io/a/b:c\"").unwrap();
        assert_eq!(serde_json::to_string(&pin).unwrap(), "\"ghcr.io/a/b:c\"");
        let error = serde_json::from_str::<ImageRef>("\"b:c\"").unwrap_err();
        assert!(
            error.to_string().contains("names no registry host"),
            "{error}"
        );
    }
}
