//! `cargo xtask notes`: the page is generated from the JSON, and `--check` catches a hand-edited page.

use crate::xtask;

const NOTES: &str = r#"{
  "version": "v2.0.0", "prerelease": false, "revision": "0123456789abcdef0123456789abcdef01234567",
  "date": "2026-11-25", "created": "2026-11-25T10:00:00Z", "image": "php-fpm",
  "canonical": "ghcr.io/20i-stack", "mirrors": [], "attestations": "provenance",
  "bases": [], "skipped": [],
  "images": [{"php": "8.5", "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
              "platforms": [{"platform": "linux/amd64", "size": 41000000,
                             "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}],
  "references": [{"ref": "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5", "registry": "ghcr.io/20i-stack",
                  "tag": "v2.0.0-php-8.5", "kind": "pin", "php": "8.5",
                  "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                  "platforms": [{"platform": "linux/amd64", "size": 41000000,
                                 "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}]
}"#;

#[test]
fn check_catches_a_hand_edited_page_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let notes_dir = dir.path().display().to_string();
    std::fs::write(dir.path().join("v2.0.0.json"), NOTES).unwrap();

    // No page yet: --check fails; writing it makes --check pass.
    assert!(!xtask(&["notes", "--check", "--notes-dir", &notes_dir])
        .status
        .success());
    assert!(xtask(&["notes", "--notes-dir", &notes_dir])
        .status
        .success());
    let check = xtask(&["notes", "--check", "--notes-dir", &notes_dir]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A digest edited by hand in the page is caught, with the line and the command that regenerates it.
    let page = dir.path().join("v2.0.0.md");
    let text = std::fs::read_to_string(&page).unwrap();
    std::fs::write(&page, text.replacen("e3b0c442", "deadbeef", 1)).unwrap();
    let check = xtask(&["notes", "--check", "--notes-dir", &notes_dir]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success());
    assert!(
        stderr.contains("deadbeef") && stderr.contains("run `cargo xtask notes` to regenerate"),
        "{stderr}"
    );
}

#[test]
fn the_repository_release_pages_are_current() {
    let check = xtask(&["notes", "--check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let sizes = xtask(&["sizes", "--check"]);
    assert!(
        sizes.status.success(),
        "{}",
        String::from_utf8_lossy(&sizes.stderr)
    );
}
