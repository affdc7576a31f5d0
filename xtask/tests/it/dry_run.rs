//! `--dry-run` in every mode that needs docker (release, one platform of a split release, merge, republish):
//! it prints the docker commands, runs none (a tripwire `docker` is the whole PATH) and writes nothing.

use std::path::Path;

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every line's staging image for one platform, as `release --platform` would have written it.
fn digests_file(dir: &Path, platform: &str) -> String {
    let images: Vec<serde_json::Value> = ["8.1", "8.2", "8.3", "8.4", "8.5"]
        .iter()
        .map(|php| {
            serde_json::json!({
                "php": php,
                "source": format!("127.0.0.1:5000/test/php-fpm-staging@{DIGEST}"),
            })
        })
        .collect();
    let file = dir.join(format!("{}.json", platform.replace('/', "-")));
    let json = serde_json::json!({
        "version": "v2.0.0", "revision": REVISION, "platform": platform, "images": images,
    });
    std::fs::write(&file, json.to_string()).unwrap();
    file.display().to_string()
}

#[test]
fn dry_runs_run_no_docker_and_write_nothing() {
    let (path, marker) = crate::tripwire_path();
    let inputs = tempfile::tempdir().unwrap();
    let amd64 = digests_file(inputs.path(), "linux/amd64");
    let arm64 = digests_file(inputs.path(), "linux/arm64");
    let out = tempfile::tempdir().unwrap();
    let work = out.path().join("work");
    let notes = out.path().join("notes");
    let digests = out.path().join("digests.json");
    let common = [
        "v2.0.0",
        "--published",
        "v1.0.0",
        "--revision",
        REVISION,
        "--time",
        "2026-11-25T10:00:00Z",
        "--registry",
        "127.0.0.1:5000/test",
        "--no-mirrors",
        "--work-dir",
        work.to_str().unwrap(),
        "--notes-dir",
        notes.to_str().unwrap(),
        "--dry-run",
        // v2.0.0 is not the workspace's version; that check is boundaries.rs's business.
        "--allow-version-mismatch",
    ];
    let modes: [(&str, Vec<&str>, &str); 4] = [
        ("release", vec!["release"], "docker buildx bake --file"),
        (
            "one platform",
            vec!["release", "--platform", "linux/arm64", "--digests-file", digests.to_str().unwrap()],
            "docker buildx bake --file",
        ),
        (
            "merge",
            vec!["release", "merge", "--digests-file", &amd64, "--digests-file", &arm64],
            "--tag 127.0.0.1:5000/test/php-fpm:v2.0.0-php-8.5 127.0.0.1:5000/test/php-fpm-staging@sha256:",
        ),
        ("republish", vec!["republish", "--reason", "a base fix"], "docker buildx bake --file"),
    ];
    for (mode, first, expected) in modes {
        let mut args = first.clone();
        args.extend(common);
        let output = crate::xtask_command()
            .args(&args)
            .env("PATH", path.path())
            .env_remove("DOCKER")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(expected),
            "{mode} does not print `{expected}`:\n{stdout}"
        );
        assert!(
            stdout.lines().all(|l| l.starts_with("docker ")
                || l.starts_with("registry ")
                || l.starts_with("cosign ")),
            "{mode}:\n{stdout}"
        );
        // The matrix makes SBOMs: whatever builds reads the scanner first; a merge builds nothing.
        let scanner = "registry GET manifest docker.io/docker/buildkit-syft-scanner:";
        assert_eq!(
            stdout.contains(scanner),
            mode != "merge",
            "{mode} and the SBOM scanner:\n{stdout}"
        );
        assert!(!marker.exists(), "{mode} ran docker");
        for written in [&work, &notes, &digests] {
            assert!(!written.exists(), "{mode} wrote {}", written.display());
        }
    }
}
