//! Redaction that hides secrets, not words: a secret's value is replaced where it stands as a whole value (a
//! token between delimiters, after `=` or `:`, a URL's userinfo), never where it is part of another word, so
//! the password `site` hides `MYSQL_PASSWORD=site` but leaves `site3`, `mysite` and `/var/www/site` as they are.

/// What a hidden value is printed as.
pub const HIDDEN: &str = "(not shown)";

/// A character that may stand right before a value: the start of a token, an assignment, a quote, a bracket.
fn opens(c: char) -> bool {
    c.is_whitespace() || "=:'\"`([{<,;".contains(c)
}

/// A character that may stand right after a value: the end of a token, a quote, a bracket, a separator, or the
/// `@` that ends a URL's userinfo.
fn closes(c: char) -> bool {
    c.is_whitespace() || "'\"`)]}>,;@&".contains(c)
}

/// Whether `secret` at `at..at + secret.len()` of `text` stands as a whole value.
fn whole(text: &str, at: usize, secret: &str) -> bool {
    let before = text[..at].chars().next_back();
    let rest = &text[at + secret.len()..];
    let mut after = rest.chars();
    let left = before.is_none_or(opens);
    let right = match after.next() {
        None => true,
        // The end of a sentence (`the password is x.`), not a host name (`x.example.com`) or a file (`x.txt`).
        Some('.' | ':' | '!' | '?') => after.next().is_none_or(char::is_whitespace),
        Some(c) => closes(c),
    };
    left && right
}

/// `text` with each of `secrets` replaced by [`HIDDEN`] where it stands as a whole value. The longest secret is
/// looked at first, so one that contains another is hidden whole. Empty secrets are ignored.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    'scan: while at < text.len() {
        for secret in &secrets {
            if text[at..].starts_with(secret) && whole(text, at, secret) {
                out.push_str(HIDDEN);
                at += secret.len();
                continue 'scan;
            }
        }
        let c = text[at..]
            .chars()
            .next()
            .expect("at < len, on a char boundary");
        out.push(c);
        at += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(secrets: &[&str], text: &str, expected: &str) {
        let got = redact(text, secrets);
        assert_eq!(got, expected, "secrets {secrets:?} in {text:?}");
    }

    #[test]
    fn hides_values_not_words() {
        let table: &[(&[&str], &str, &str)] = &[
            // A value after `=` or `:`, whole, at the end or before a separator.
            (
                &["site"],
                "MYSQL_PASSWORD=site",
                "MYSQL_PASSWORD=(not shown)",
            ),
            (&["site"], "password: site", "password: (not shown)"),
            (
                &["site"],
                "-e MYSQL_PASSWORD=site -e X=1",
                "-e MYSQL_PASSWORD=(not shown) -e X=1",
            ),
            (
                &["site"],
                "'site', \"site\"",
                "'(not shown)', \"(not shown)\"",
            ),
            (
                &["site"],
                "the password is site.",
                "the password is (not shown).",
            ),
            // Inside other words: intact.
            (
                &["site"],
                "project site3 in /home/u/mysite",
                "project site3 in /home/u/mysite",
            ),
            (
                &["site"],
                "mounted at /var/www/site",
                "mounted at /var/www/site",
            ),
            (
                &["site"],
                "site.example.com and site_2 and site-x",
                "site.example.com and site_2 and site-x",
            ),
            (
                &["site"],
                "http://site.test:8080/site/",
                "http://site.test:8080/site/",
            ),
            // A URL's userinfo: the password hidden, the user and host intact.
            (
                &["s3cret"],
                "mysql://site:s3cret@db:3306/site",
                "mysql://site:(not shown)@db:3306/site",
            ),
            (
                &["site"],
                "mysql://site:site@db/site",
                "mysql://site:(not shown)@db/site",
            ),
            // One letter: hidden as a value, never inside words.
            (
                &["a"],
                "PASS=a and a banana at /a/b",
                "PASS=(not shown) and (not shown) banana at /a/b",
            ),
            (&["x"], "x", "(not shown)"),
            // Common words as secrets.
            (
                &["root"],
                "run as root: password root",
                "run as (not shown): password (not shown)",
            ),
            (
                &["root"],
                "/root/.docker and rootless",
                "/root/.docker and rootless",
            ),
            // The longest first: one secret containing another is hidden whole.
            (
                &["hunter", "hunter2"],
                "p=hunter2 q=hunter",
                "p=(not shown) q=(not shown)",
            ),
            // Secrets with characters a delimiter uses.
            (&["p@ss:w0rd"], "PASS=p@ss:w0rd end", "PASS=(not shown) end"),
            // Non-ASCII text around a value.
            (&["é"], "mot=é café", "mot=(not shown) café"),
            (&[""], "nothing to hide", "nothing to hide"),
        ];
        for (secrets, text, expected) in table {
            check(secrets, text, expected);
            // The value never stands as a value in what is printed.
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                let got = redact(text, secrets);
                for (at, _) in got.match_indices(secret) {
                    assert!(
                        !whole(&got, at, secret),
                        "{secret:?} still a value in {got:?}"
                    );
                }
            }
        }
    }
}
