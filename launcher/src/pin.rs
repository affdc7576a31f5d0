//! `20i pin --notes vX.Y.Z.json`: find the digest of the selected image in a release's notes JSON and write
//! `PHP_FPM_PIN=<image>@sha256:…` to the project's `.20i-local`, so every later pull must have that digest.

use std::path::Path;

use anyhow::{bail, Context};
use stack_images::Digest;

use crate::config::Config;

pub fn run(config: &Config, notes: &Path) -> anyhow::Result<()> {
    let reference = config.prebuilt_reference();
    let text = std::fs::read_to_string(notes)
        .with_context(|| format!("reading release notes {}", notes.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("reading release notes {}", notes.display()))?;
    let Some(digest) = find_digest(&json, &reference) else {
        bail!(
            "{} lists no digest for {reference}: use the notes of release {} (release-notes/{}.json), or set \
             PHP_VERSION and IMAGE_REGISTRY to an image it lists",
            notes.display(),
            config.release,
            config.release
        );
    };
    let local = std::env::current_dir()?.join(".20i-local");
    let existing = match std::fs::read_to_string(&local) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", local.display())),
    };
    let value = format!("{reference}@{digest}");
    std::fs::write(&local, with_pin(&existing, &value))
        .with_context(|| format!("writing {}", local.display()))?;
    println!("pinned {value} in {}", local.display());
    Ok(())
}

/// The `digest` of the object whose `ref` is `reference`, anywhere in the notes.
fn find_digest(json: &serde_json::Value, reference: &str) -> Option<Digest> {
    match json {
        serde_json::Value::Object(map) => {
            if map.get("ref").and_then(|r| r.as_str()) == Some(reference) {
                if let Some(digest) = map.get("digest").and_then(|d| d.as_str()) {
                    return Digest::parse(digest).ok();
                }
            }
            map.values().find_map(|v| find_digest(v, reference))
        }
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_digest(v, reference)),
        _ => None,
    }
}

/// The file with its `PHP_FPM_PIN` line replaced, or one appended.
fn with_pin(existing: &str, value: &str) -> String {
    let line = format!("PHP_FPM_PIN={value}");
    let mut replaced = false;
    let mut lines: Vec<String> = existing
        .lines()
        .map(|l| {
            let bare = l
                .trim_start()
                .strip_prefix("export ")
                .unwrap_or(l.trim_start());
            if bare.starts_with("PHP_FPM_PIN=") {
                replaced = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !replaced {
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_digest_of_the_reference() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let notes = serde_json::json!({
            "version": "v2.0.0",
            "registries": [{"images": [
                {"ref": "ghcr.io/x/php-fpm:v2.0.0-php-8.4", "digest": a, "platforms": []},
                {"ref": "ghcr.io/x/php-fpm:v2.0.0-php-8.5", "digest": b, "platforms": [{"digest": a}]},
            ]}],
        });
        let find = |r| find_digest(&notes, r).map(|d| d.to_string());
        assert_eq!(find("ghcr.io/x/php-fpm:v2.0.0-php-8.5"), Some(b));
        assert_eq!(find("ghcr.io/x/php-fpm:v2.0.0-php-8.4"), Some(a));
        assert_eq!(find("ghcr.io/x/php-fpm:v2.0.0-php-8.3"), None);
    }

    #[test]
    fn replaces_or_appends_the_pin_line() {
        assert_eq!(with_pin("", "r@d"), "PHP_FPM_PIN=r@d\n");
        assert_eq!(with_pin("A=1\n", "r@d"), "A=1\nPHP_FPM_PIN=r@d\n");
        assert_eq!(
            with_pin("A=1\nexport PHP_FPM_PIN=old\nB=2", "r@d"),
            "A=1\nPHP_FPM_PIN=r@d\nB=2\n"
        );
    }
}
