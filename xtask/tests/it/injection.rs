//! Values that start with `-` never reach docker as options: a registry namespace is parsed where it enters
//! (flag or matrix), and a bad one stops the command before anything runs.

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";

#[track_caller]
fn check(args: &[&str], matrix_edit: Option<(&str, &str)>, code: i32, expected: &str) {
    let (path, marker) = crate::tripwire_path();
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<String> = [
        "release",
        "v2.0.0",
        "--published",
        "v1.0.0",
        "--revision",
        REVISION,
    ]
    .iter()
    // v2.0.0 is not the workspace's version; that check is boundaries.rs's business.
    .chain(&["--time", "2026-11-25T10:00:00Z", "--allow-version-mismatch"])
    .map(ToString::to_string)
    .collect();
    all.extend(args.iter().map(ToString::to_string));
    if let Some((from, to)) = matrix_edit {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        let text = std::fs::read_to_string(root.join("matrix.toml")).unwrap();
        assert!(text.contains(from), "the matrix has no `{from}`");
        for file in ["php-fpm/Dockerfile", "bases/docker-hub.lock.toml"] {
            let target = dir.path().join(file);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(root.join(file), target).unwrap();
        }
        let matrix = dir.path().join("matrix.toml");
        std::fs::write(&matrix, text.replace(from, to)).unwrap();
        all.extend(["--matrix".to_owned(), matrix.display().to_string()]);
    }
    let work = dir.path().join("work");
    all.extend(["--work-dir".to_owned(), work.display().to_string()]);
    let output = crate::xtask_command()
        .args(&all)
        .env("PATH", path.path())
        .env_remove("DOCKER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: `{stderr}` does not say `{expected}`"
    );
    assert!(!marker.exists(), "{args:?} ran docker");
    assert!(!work.exists(), "{args:?} wrote {}", work.display());
}

#[test]
fn option_like_values_are_refused_where_they_enter() {
    let invalid = "error: invalid value";
    check(&["--registry=-oops"], None, 2, &format!("{invalid} '-oops' for '--registry <NAMESPACE>': registry namespace `-oops` is not valid"));
    check(
        &["--registry", "127.0.0.1:5000/test", "--mirror=-x"],
        None,
        2,
        &format!("{invalid} '-x' for '--mirror <NAMESPACE>'"),
    );
    check(
        &["--registry=--output=x"],
        None,
        2,
        "registry namespace `--output=x` is not valid",
    );
    check(
        &["--registry=ghcr.io/a/../b"],
        None,
        2,
        "the path component `..`",
    );
    check(
        &["--registry=GHCR.io/a"],
        None,
        2,
        "not a lowercase host name",
    );
    check(
        &["--registry=ghcr.io/a:latest"],
        None,
        2,
        "the path component `a:latest`",
    );
    check(
        &[
            "--registry",
            "127.0.0.1:5000/a",
            "--mirror",
            "127.0.0.1:5000/a",
        ],
        None,
        1,
        "mirror `127.0.0.1:5000/a` is the canonical registry too",
    );
    check(
        &[],
        Some((
            "canonical = \"ghcr.io/20i-stack\"",
            "canonical = \"--push/x\"",
        )),
        1,
        "registry namespace `--push/x` is not valid",
    );
    check(
        &[],
        Some(("mirrors = [\"docker.io/20istack\"]", "mirrors = [\"-x/y\"]")),
        1,
        "registry namespace `-x/y` is not valid",
    );
    check(
        &[],
        Some(("image = \"php-fpm\"", "image = \"-php\"")),
        1,
        "image name `-php` is not a valid repository name",
    );
    check(
        &["--platform", "--push", "--digests-file", "f"],
        None,
        2,
        "unexpected argument '--push' found",
    );
    check(
        &["--platform=--push", "--digests-file", "f"],
        None,
        1,
        "--platform --push is not in the matrix (linux/amd64, linux/arm64): use one of them",
    );
}
