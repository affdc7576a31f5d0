//! A PHP line (`8.4`): the unit the matrix, the tags and `PHP_VERSION` speak in.

use std::{fmt, str::FromStr};

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// A PHP `major.minor` line. Patch versions are the base image's business, never the user's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhpLine {
    pub major: u16,
    pub minor: u16,
}

impl PhpLine {
    pub const fn new(major: u16, minor: u16) -> PhpLine {
        PhpLine { major, minor }
    }
}

impl fmt::Display for PhpLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for PhpLine {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<PhpLine> {
        let text = input.trim();
        // Accept the common near-misses only to name the right spelling in the error.
        let stripped = text
            .strip_prefix("php-")
            .or_else(|| text.strip_prefix("php"))
            .unwrap_or(text);
        let parts: Vec<&str> = stripped.split('.').collect();
        let numbers: Option<Vec<u16>> = parts
            .iter()
            .map(|part| {
                let digits_only = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
                // No leading zeros: `8.04` is not a spelling of `8.4`.
                let canonical = *part == "0" || !part.starts_with('0');
                (digits_only && canonical)
                    .then(|| part.parse().ok())
                    .flatten()
            })
            .collect();
        match numbers.as_deref() {
            Some([major, minor]) if stripped == text => Ok(PhpLine::new(*major, *minor)),
            Some([major, minor, ..]) => {
                bail!("PHP version `{input}` is not a PHP line: use `{major}.{minor}`")
            }
            _ => {
                bail!("PHP version `{input}` is not a PHP line: use major.minor, for example `8.4`")
            }
        }
    }
}

impl Serialize for PhpLine {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PhpLine {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<PhpLine, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Result<&str, &str>) {
        let actual = input
            .parse::<PhpLine>()
            .map(|line| line.to_string())
            .map_err(|e| e.to_string());
        let expected = expected.map(str::to_owned).map_err(str::to_owned);
        assert_eq!(actual, expected, "input: {input:?}");
    }

    #[test]
    fn parses_lines_and_names_the_right_spelling() {
        check("8.4", Ok("8.4"));
        check(" 8.5 ", Ok("8.5"));
        check("10.0", Ok("10.0"));
        check(
            "8.4.3",
            Err("PHP version `8.4.3` is not a PHP line: use `8.4`"),
        );
        check(
            "php8.4",
            Err("PHP version `php8.4` is not a PHP line: use `8.4`"),
        );
        check(
            "php-8.4",
            Err("PHP version `php-8.4` is not a PHP line: use `8.4`"),
        );
        check(
            "8",
            Err("PHP version `8` is not a PHP line: use major.minor, for example `8.4`"),
        );
        check(
            "8.x",
            Err("PHP version `8.x` is not a PHP line: use major.minor, for example `8.4`"),
        );
        check(
            "8.04",
            Err("PHP version `8.04` is not a PHP line: use major.minor, for example `8.4`"),
        );
        check(
            "",
            Err("PHP version `` is not a PHP line: use major.minor, for example `8.4`"),
        );
    }

    #[test]
    fn orders_numerically() {
        let mut lines: Vec<PhpLine> = ["8.10", "8.9", "7.4"]
            .iter()
            .map(|l| l.parse().unwrap())
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            [PhpLine::new(7, 4), PhpLine::new(8, 9), PhpLine::new(8, 10)]
        );
    }
}
