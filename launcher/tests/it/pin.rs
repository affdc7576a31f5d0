//! `20i pin --notes FILE`: the notes are read as the release notes type the xtask writes, so a malformed value
//! or two digests for one reference is refused naming the file and the entry, and `.20i-local` is left alone.

use std::process::Command;

use crate::harness::VERSION;

/// Valid notes of release v<VERSION>: PHP 8.5 under `namespace`, with `digest`.
pub fn notes_json(namespace: &str, digest: &str) -> String {
    let tag = format!("v{VERSION}-php-8.5");
    let base = format!("sha256:{}", "1".repeat(64));
    serde_json::json!({
        "version": format!("v{VERSION}"), "prerelease": false,
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "date": "2026-11-25", "created": "2026-11-25T10:00:00Z", "image": "php-fpm",
        "canonical": namespace, "mirrors": [], "attestations": "none",
        "bases": [{"php": "8.5", "reference": format!("docker.io/library/php:8.5-fpm-alpine@{base}"), "digest": base}],
        "images": [{"php": "8.5", "digest": digest, "platforms": []}],
        "references": [{"ref": format!("{namespace}/php-fpm:{tag}"), "registry": namespace, "tag": tag,
                        "kind": "pin", "php": "8.5", "digest": digest, "platforms": []}],
        "skipped": [],
    })
    .to_string()
}

const NAMESPACE: &str = "127.0.0.1:5999/stack";

/// Runs `20i pin --notes NOTES` in an empty project whose notes file holds `notes`: (exit code, stderr, what
/// `.20i-local` holds afterwards).
fn pin(notes: &str) -> (i32, String, Option<String>) {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("v-notes.json");
    std::fs::write(&file, notes).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_20i"))
        .args(["pin", "--notes"])
        .arg(&file)
        .current_dir(home.path())
        .env_clear()
        .env("HOME", home.path())
        .env("IMAGE_REGISTRY", NAMESPACE)
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&file.display().to_string(), "NOTES");
    let local = std::fs::read_to_string(home.path().join(".20i-local")).ok();
    (output.status.code().unwrap_or(-1), stderr, local)
}

#[track_caller]
fn check(notes: &str, expected: Result<(), &str>) {
    let (code, stderr, local) = pin(notes);
    match expected {
        Ok(()) => {
            assert_eq!(code, 0, "{stderr}");
            assert!(local.is_some_and(|l| l.starts_with("PHP_FPM_PIN=")));
        }
        Err(message) => {
            assert_eq!(code, 2, "{stderr}");
            assert!(stderr.contains(message), "`{stderr}` lacks `{message}`");
            assert_eq!(local, None, ".20i-local was written");
        }
    }
}

#[test]
fn pin_refuses_malformed_notes_naming_file_and_entry() {
    let good = format!("sha256:{}", "a".repeat(64));
    let notes = notes_json(NAMESPACE, &good);
    let reference = format!("{NAMESPACE}/php-fpm:v{VERSION}-php-8.5");
    let fix = "use the copy the release published (release-notes/vX.Y.Z.json";
    check(&notes, Ok(()));
    // A malformed digest is not "no digest": the field and the entry are named.
    check(
        &notes.replacen(&format!("\"digest\":\"{good}\",\"kind\""), "\"digest\":\"sha256:abc\",\"kind\"", 1),
        Err(&format!(
            "error: in release notes NOTES: references[0].digest (ref {reference}): `sha256:abc` is not a sha256 digest"
        )),
    );
    check(&notes.replace(&good, "sha256:abc"), Err(fix));
    // Two entries for one reference with different digests: refused, naming both.
    let value: serde_json::Value = serde_json::from_str(&notes).unwrap();
    let mut twice = value.clone();
    let mut second = value["references"][0].clone();
    second["digest"] = format!("sha256:{}", "b".repeat(64)).into();
    twice["references"].as_array_mut().unwrap().push(second);
    check(
        &twice.to_string(),
        Err(&format!(
            "references[0] and references[1] both record {reference} with different digests"
        )),
    );
    // Not the release this launcher pulls: no digest for its reference, and which notes to use instead.
    let other = notes.replace(&format!("v{VERSION}"), "v9.9.9");
    check(
        &other,
        Err(&format!(
            "NOTES (release v9.9.9) lists no digest for {reference}: use the notes of release v{VERSION}"
        )),
    );
    check("{}", Err("missing field `version`"));
    check("not json", Err("expected ident at line 1 column 2"));
    check(
        &notes.replacen(
            "\"image\":\"php-fpm\"",
            "\"image\":\"php-fpm\",\"extra\":1",
            1,
        ),
        Err("unknown field `extra`"),
    );
}
