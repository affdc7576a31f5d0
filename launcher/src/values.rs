//! The types configuration values are parsed into where they enter the launcher (a port, a number of seconds, a
//! compose project name, an image name, a secret, ...): each `FromStr` error says what is accepted, so the caller
//! only adds which variable and where it came from.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use anyhow::bail;

/// A TCP port a service is published on: 1 to 65535, plain digits (no sign, no spaces, no leading zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port(u16);

impl FromStr for Port {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Port> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u16>() {
            Ok(port) if digits && port > 0 && !text.starts_with('0') => Ok(Port(port)),
            _ => bail!("use a port number from 1 to 65535 in plain digits, for example 8080"),
        }
    }
}

impl Port {
    pub fn number(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A wait in whole seconds, 1 to a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(u32);

impl Seconds {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for Seconds {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Seconds> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u32>() {
            Ok(seconds) if digits && (1..=86_400).contains(&seconds) => Ok(Seconds(seconds)),
            _ => bail!("use a number of seconds from 1 to 86400, for example 120"),
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `true`, `false`, `1` or `0`.
pub fn parse_bool(text: &str) -> anyhow::Result<bool> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("use true or false (or 1 or 0)"),
    }
}

/// The host address published ports listen on, interpolated into compose's `ADDRESS:PORT:PORT`: IPv4 only, since
/// an IPv6 address there would need brackets compose's short syntax does not take from a variable.
pub fn parse_address(text: &str) -> anyhow::Result<Ipv4Addr> {
    match text.parse::<Ipv4Addr>() {
        Ok(address) => Ok(address),
        Err(_) => {
            bail!("use an IPv4 address, for example 127.0.0.1, or 0.0.0.0 for every interface")
        }
    }
}

/// A compose project name: lowercase letters, digits, `-` and `_`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    /// The project directory's name as compose accepts it (the shell launcher's COMPOSE_PROJECT_NAME).
    pub fn from_dir_name(name: &str) -> ProjectName {
        let cleaned: String = name
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let cleaned = cleaned.trim_start_matches(['-', '_']);
        ProjectName(if cleaned.is_empty() {
            "site".to_owned()
        } else {
            cleaned.to_owned()
        })
    }
}

impl FromStr for ProjectName {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<ProjectName> {
        let valid = text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            bail!("use lowercase letters, digits, `-` and `_`, starting with a letter or digit");
        }
        Ok(ProjectName(text.to_owned()))
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image name compose runs as it is (`nginx:1.25-alpine`, `registry.example.com/team/db:11@sha256:…`):
/// checked enough that it can never be read as an option or split into two words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName(String);

impl FromStr for ImageName {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<ImageName> {
        let valid = text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
        if !valid {
            bail!("use an image reference such as nginx:1.25-alpine or registry.example.com/team/nginx:1.25");
        }
        Ok(ImageName(text.to_owned()))
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image tag (`10.6`, `11.4-noble`): what `MYSQL_VERSION` becomes in `mariadb:<tag>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagText(String);

impl FromStr for TagText {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<TagText> {
        let valid = text.len() <= 128
            && text
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            bail!("use an image tag (letters, digits, `.`, `-`, `_`), for example 10.6 or 11.4");
        }
        Ok(TagText(text.to_owned()))
    }
}

impl fmt::Display for TagText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value that is never printed: it has no `Display`, its `Debug` hides it, and only [`Secret::expose`] (for the
/// environment compose gets) reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(not shown)")
    }
}

/// What `--explain` and every message print instead of a secret.
pub const NOT_SHOWN: &str = "(set, not shown)";

/// Whether a variable's name says it holds a secret (`DB_PASS`, `API_TOKEN`, `SSH_KEY`, ...), so its value is
/// treated as one even though the launcher does not know it.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASS", "PWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"]
        .iter()
        .any(|word| upper.contains(word))
}

/// A value as an error quotes it: in double quotes, with control characters escaped (so it cannot forge lines or
/// hide spaces), cut short after 120 characters so a pasted blob cannot flood the terminal.
pub fn quoted(text: &str) -> String {
    let escaped = format!("{text:?}");
    match escaped.char_indices().nth(121) {
        Some((end, _)) => format!("{}…\"", &escaped[..end]),
        None => escaped,
    }
}

/// A variable name as the shell and compose take it: a letter or `_`, then letters, digits and `_`.
pub fn is_variable_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check<T: FromStr<Err = anyhow::Error> + fmt::Display>(input: &str, expected: &str) {
        let actual = match input.parse::<T>() {
            Ok(value) => value.to_string(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(actual, expected, "{input:?}");
    }

    #[test]
    #[rustfmt::skip]
    fn ports() {
        let refused = "error: use a port number from 1 to 65535 in plain digits, for example 8080";
        check::<Port>("80", "80");
        check::<Port>("65535", "65535");
        for bad in ["+80", " 80", "80 ", "0", "65536", "080", "", "http", "-1", "8e1"] {
            check::<Port>(bad, refused);
        }
    }

    #[test]
    #[rustfmt::skip]
    fn seconds_and_names() {
        check::<Seconds>("120", "120");
        check::<Seconds>("0", "error: use a number of seconds from 1 to 86400, for example 120");
        check::<Seconds>("2m", "error: use a number of seconds from 1 to 86400, for example 120");
        check::<Seconds>("+5", "error: use a number of seconds from 1 to 86400, for example 120");
        check::<ProjectName>("my-site_2", "my-site_2");
        check::<ProjectName>("-x", "error: use lowercase letters, digits, `-` and `_`, starting with a letter or digit");
        check::<ImageName>("nginx:1.25-alpine", "nginx:1.25-alpine");
        check::<ImageName>("-v", "error: use an image reference such as nginx:1.25-alpine or registry.example.com/team/nginx:1.25");
        check::<ImageName>("a b", "error: use an image reference such as nginx:1.25-alpine or registry.example.com/team/nginx:1.25");
        check::<TagText>("11.4", "11.4");
        check::<TagText>("-rm", "error: use an image tag (letters, digits, `.`, `-`, `_`), for example 10.6 or 11.4");
        assert_eq!(ProjectName::from_dir_name("Blog.Site").to_string(), "blog-site");
        assert_eq!(ProjectName::from_dir_name("__").to_string(), "site");
    }

    #[test]
    fn values_are_quoted_short() {
        assert_eq!(quoted(" 80"), "\" 80\"");
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        let long = quoted(&"x".repeat(500));
        assert_eq!(long.chars().count(), 123, "{long}");
        assert!(long.ends_with("x…\""));
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "Secret(not shown)");
        for name in [
            "DB_PASS",
            "api_token",
            "MYSQL_PASSWORD",
            "SSH_KEY",
            "X_PWD",
            "AWS_CREDENTIALS",
            "A_SECRET",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        assert!(!looks_secret("XDEBUG_MODE"));
    }
}
