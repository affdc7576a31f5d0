//! Every file and flag the xtask reads, fed bad values: the exit code, a message naming the value, where it came
//! from (file and field, or flag) and what to do, and proof that nothing was written or pushed: `docker` on PATH
//! is a tripwire, and the scratch directory (matrix, lock, notes, work and notes output) is unchanged.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use stack_images::{bases::SHIPPED_LOCK_TOML, matrix::MATRIX_TOML};

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
const TIME: &str = "2026-11-25T10:00:00Z";
/// The workspace's version: the only release the version check lets through without a flag.
const WORKSPACE: &str = env!("CARGO_PKG_VERSION");

/// A scratch directory with a PATH holding a tripwire `docker` and the real `git`.
struct Scratch {
    dir: tempfile::TempDir,
    path: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let path = tempfile::tempdir().unwrap();
        let marker = path.path().join("docker-was-called");
        let docker = path.path().join("docker");
        std::fs::write(
            &docker,
            format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
        let git = which("git");
        std::os::unix::fs::symlink(git, path.path().join("git")).unwrap();
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            path,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> &Scratch {
        let path = self.file(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    /// Every file under the scratch directory and its bytes.
    fn contents(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    out.insert(path.clone(), Vec::new());
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }

    /// Runs the xtask with `{dir}` in `args` replaced by the scratch directory: (exit code, stdout + stderr).
    fn run(&self, args: &[&str]) -> (i32, String) {
        let dir = self.dir.path().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir)).collect();
        let output = crate::xtask_command()
            .args(&args)
            .env("PATH", self.path.path())
            .env_remove("DOCKER")
            .output()
            .expect("running the xtask binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (
            output.status.code().unwrap_or(-1),
            text.replace(&dir, "{dir}"),
        )
    }

    /// Runs `args` and checks the exit code, that every `expected` part is in the output, that docker was never
    /// called, and that nothing in the scratch directory was written, changed or removed.
    #[track_caller]
    fn check(&self, args: &[&str], code: i32, expected: &[&str]) -> String {
        let before = self.contents();
        let (actual, output) = self.run(args);
        assert_eq!(actual, code, "exit code of {args:?}:\n{output}");
        for part in expected {
            assert!(
                output.contains(part),
                "output of {args:?}:\n{output}\ndoes not contain: {part}"
            );
        }
        assert!(
            !self.path.path().join("docker-was-called").exists(),
            "{args:?} ran docker"
        );
        assert_eq!(
            self.contents().keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{args:?} wrote or removed files"
        );
        assert!(self.contents() == before, "{args:?} changed a file");
        output
    }
}

fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// `plan VERSION` with good flags, then `extra`, which replaces a good flag of the same name.
fn plan<'a>(version: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["plan", version];
    for (flag, value) in [
        ("--published", "v1.0.0"),
        ("--revision", REVISION),
        ("--time", TIME),
    ] {
        let replaced = extra
            .iter()
            .any(|e| *e == flag || e.strip_prefix(flag).is_some_and(|r| r.starts_with('=')));
        if !replaced {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    args
}

/// A checked error from `plan` with `extra` flags.
#[track_caller]
fn plan_error(extra: &[&str], code: i32, expected: &[&str]) {
    Scratch::new().check(&plan("v2.0.0", extra), code, expected);
}

#[test]
fn time_flag() {
    let window =
        "give seconds since the epoch (1764064800) or RFC 3339 (2025-11-25T10:00:00Z), between \
                  2000-01-01T00:00:00Z and 9999-12-31T23:59:59Z";
    let flag = "for '--time <TIME>'";
    plan_error(
        &["--time=-1"],
        2,
        &[
            flag,
            "`-1` is -1 seconds since the epoch, before 2000-01-01",
            window,
        ],
    );
    plan_error(
        &["--time", "0"],
        2,
        &[
            flag,
            "`0` is 0 seconds since the epoch, before 2000-01-01",
            window,
        ],
    );
    plan_error(
        &["--time", "1999-12-31T23:59:59Z"],
        2,
        &[flag, "before 2000-01-01T00:00:00Z", window],
    );
    plan_error(
        &["--time", "253402300800"],
        2,
        &[
            flag,
            "`253402300800` is 253402300800 seconds since the epoch, after 9999-12-31T23:59:59Z",
            window,
        ],
    );
    plan_error(
        &["--time", "1764064800000"],
        2,
        &[flag, "after 9999-12-31T23:59:59Z", window],
    );
    plan_error(
        &["--time", "10000-01-01T00:00:00Z"],
        2,
        &[
            flag,
            "`10000-01-01T00:00:00Z` is neither seconds since the epoch nor RFC 3339",
            window,
        ],
    );
    plan_error(&["--time", "noon"], 2, &[flag, "`noon` is neither", window]);
    plan_error(
        &["--time", "2025-11-25"],
        2,
        &[flag, "`2025-11-25` is neither", window],
    );
    plan_error(&["--time="], 2, &[flag, "`` is neither", window]);
}

#[test]
fn signing_flags() {
    let flag = "for '--signing <MODE>'";
    let modes = "use key:PATH (or key:env://COSIGN_KEY), keyless or none";
    plan_error(
        &["--signing", "cosign"],
        2,
        &[flag, "`cosign` is not a signing mode", modes],
    );
    plan_error(
        &["--signing="],
        2,
        &[flag, "`` is not a signing mode", modes],
    );
    plan_error(
        &["--signing", "key:"],
        2,
        &[
            flag,
            "`` is not a key: give the path of a cosign private key file or env://COSIGN_KEY",
        ],
    );
    plan_error(
        &["--signing", "key:env://GITHUB_TOKEN"],
        2,
        &[
            flag,
            "read from env://COSIGN_KEY, not env://GITHUB_TOKEN: set COSIGN_KEY",
        ],
    );
    plan_error(
        &["--signing", "key:cosign.key"],
        1,
        &["--signing key:PATH needs --signing-public-key PATH"],
    );
    plan_error(
        &["--signing-public-key", "cosign.pub"],
        1,
        &["--signing-public-key goes with --signing key:PATH only"],
    );
}

#[test]
fn revision_flag_never_reaches_git_as_an_option() {
    let scratch = Scratch::new();
    let file = scratch.file("written-by-git");
    let flag = "for '--revision <REVISION>'";
    let fix = "give a commit id (0123abcd…, full or abbreviated) or a ref such as v2.0.0 or HEAD";
    let output_flag = format!("--revision=--output={}", file.display());
    scratch.check(
        &plan("v2.0.0", &[&output_flag]),
        2,
        &[
            flag,
            "starts with `-`, which git would take for an option",
            fix,
        ],
    );
    assert!(!file.exists(), "git wrote {}", file.display());
    scratch.check(
        &plan("v2.0.0", &["--revision=-q"]),
        2,
        &[flag, "`-q` starts with `-`", fix],
    );
    scratch.check(
        &plan("v2.0.0", &["--revision="]),
        2,
        &[flag, "the revision is empty", fix],
    );
    scratch.check(
        &plan("v2.0.0", &["--revision", "HEAD --all"]),
        2,
        &[flag, "`HEAD --all` contains ' '", fix],
    );
    scratch.check(
        &plan("v2.0.0", &["--revision", "no-such-ref-anywhere"]),
        1,
        &[
            "--revision `no-such-ref-anywhere` names no commit of this repository",
            "fetch it (git fetch --tags), or give another commit id or ref",
        ],
    );
    // An abbreviated id or a ref is resolved, by git, to the full id the plan records.
    let head = String::from_utf8(
        std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let out = scratch.check(
        &plan("v2.0.0", &["--revision", &head[..10], "--json"]),
        0,
        &[],
    );
    assert!(
        out.contains(&format!("\"revision\": \"{}\"", head.trim())),
        "{out}"
    );
    let out = scratch.check(&plan("v2.0.0", &["--revision", "HEAD", "--json"]), 0, &[]);
    assert!(
        out.contains(&format!("\"revision\": \"{}\"", head.trim())),
        "{out}"
    );
}

#[test]
fn version_and_published_flags() {
    let hint = "use vX.Y.Z or X.Y.Z, for example v2.0.0 or v2.1.0-rc.1";
    let s = Scratch::new();
    s.check(
        &plan("2.0", &[]),
        2,
        &[
            "invalid value '2.0' for '<VERSION>'",
            "`2.0` is not a release version",
            hint,
        ],
    );
    s.check(
        &plan("v2.0.0+meta", &[]),
        2,
        &[
            "`v2.0.0+meta` has build metadata (`+meta`), which image tags cannot carry",
            hint,
        ],
    );
    s.check(
        &plan("v2.0.0", &["--published", "v1.0.0,x"]),
        2,
        &[
            "for '--published <LIST>'",
            "`x` is not a release version",
            hint,
            "(in the list `v1.0.0,x`)",
        ],
    );
    s.check(
        &plan("v2.0.0", &["--published", "v1.0.0+b"]),
        2,
        &["for '--published <LIST>'", "`v1.0.0+b` has build metadata"],
    );
    s.check(
        &plan("v2.0.0", &["--published", "v1.0.0,v2.0.0"]),
        1,
        &["v2.0.0 is already published: release a new version, for example v2.0.1"],
    );
}

/// `images/matrix.toml` edited by `from → to`, written to the scratch directory, planned with `--matrix`.
#[track_caller]
fn matrix_error(from: &str, to: &str, expected: &[&str]) {
    assert!(MATRIX_TOML.contains(from), "`{from}` is not in the matrix");
    let s = Scratch::new();
    s.write("matrix.toml", &MATRIX_TOML.replacen(from, to, 1));
    let mut expected = expected.to_vec();
    expected.push("in {dir}/matrix.toml");
    s.check(
        &plan("v2.0.0", &["--matrix", "{dir}/matrix.toml"]),
        1,
        &expected,
    );
}

#[test]
fn matrix_file() {
    matrix_error(
        "\"linux/arm64\"",
        "\"linux/amd64\"",
        &["platform `linux/amd64` is listed twice in platforms: list each platform once"],
    );
    matrix_error("mirrors = [\"docker.io/20istack\"]", "mirrors = [\"docker.io/20istack\", \"docker.io/20istack\"]", &["mirror `docker.io/20istack` is listed twice in registries.mirrors (or --mirror): list each mirror once"]);
    matrix_error(
        "mirrors = [\"docker.io/20istack\"]",
        "mirrors = [\"ghcr.io/20i-stack\"]",
        &["mirror `ghcr.io/20i-stack` is the canonical registry too"],
    );
    matrix_error(
        "default_line = \"8.5\"",
        "default_line = \"7.4\"",
        &["default line 7.4 is not one of the PHP lines (8.1, 8.2, 8.3, 8.4, 8.5)"],
    );
    matrix_error("platforms =", "platform =", &["unknown field `platform`"]);
    matrix_error(
        "\"linux/arm64\"",
        "\"arm64\"",
        &["platform `arm64` is not of the form os/arch, for example linux/arm64"],
    );
    matrix_error(
        "php = \"8.2\"",
        "php = \"8.2.1\"",
        &["PHP version `8.2.1` is not a PHP line: use `8.2`"],
    );
    // The same mirror twice on the command line.
    Scratch::new().check(
        &plan("v2.0.0", &["--registry", "127.0.0.1:5000/a", "--mirror", "127.0.0.1:5001/b", "--mirror", "127.0.0.1:5001/b"]),
        1,
        &["mirror `127.0.0.1:5001/b` is listed twice in registries.mirrors (or --mirror): list each mirror once"],
    );
}

/// The shipped base lock edited by `from → to`, written to the scratch directory.
fn lock(s: &Scratch, from: &str, to: &str) {
    assert!(
        SHIPPED_LOCK_TOML.contains(from),
        "`{from}` is not in the lock"
    );
    s.write("bases.lock.toml", &SHIPPED_LOCK_TOML.replacen(from, to, 1));
}

#[track_caller]
fn lock_error(from: &str, to: &str, expected: &[&str]) {
    let s = Scratch::new();
    lock(&s, from, to);
    let mut expected = expected.to_vec();
    expected.push("in base lock {dir}/bases.lock.toml");
    s.check(
        &plan("v2.0.0", &["--bases", "{dir}/bases.lock.toml"]),
        1,
        &expected,
    );
    s.check(
        &["bases", "show", "--lock", "{dir}/bases.lock.toml"],
        1,
        &expected,
    );
}

#[test]
fn base_lock_file() {
    let refresh = "run `cargo xtask bases refresh` to rewrite the lock";
    lock_error(
        "tag = \"8.5-fpm-alpine\"",
        "tag = \"8.1-fpm-alpine\"",
        &[
            "lines.\"8.5\".tag = \"8.1-fpm-alpine\" is a PHP 8.1 base, not a PHP 8.5 one",
            refresh,
            "or fix the tag to 8.5-fpm-alpine",
        ],
    );
    lock_error(
        "tag = \"8.5-fpm-alpine\"",
        "tag = \"latest\"",
        &[
            "lines.\"8.5\".tag = \"latest\" does not start with the PHP line (8.5-fpm-alpine)",
            refresh,
        ],
    );
    lock_error(
        "digest = \"sha256:",
        "digest = \"sha256:XYZ",
        &["is not a sha256 digest (sha256: and 64 lowercase hex digits)"],
    );
    lock_error(
        "read_on = \"",
        "read_on = \"on ",
        &[
            "read_on = \"on ",
            "is not a day as YYYY-MM-DD (2026-11-25)",
            refresh,
        ],
    );
    lock_error(
        "source = \"docker.io/library/php\"",
        "source = \"https://docker.io/library/php\"",
        &[
            "`https://docker.io/library/php` is not a repository",
            "line 4",
        ],
    );
    lock_error(
        "[lines.\"8.5\"]",
        "[lines.\"8.5.0\"]",
        &["PHP version `8.5.0` is not a PHP line: use `8.5`"],
    );
}

#[test]
fn base_lock_missing_a_line() {
    let s = Scratch::new();
    let without = SHIPPED_LOCK_TOML
        .split("\n[lines.\"8.5\"]")
        .next()
        .unwrap()
        .to_owned()
        + "\n";
    s.write("bases.lock.toml", &without);
    let fix = "run `cargo xtask bases refresh --lock {dir}/bases.lock.toml`";
    s.check(
        &["bases", "show", "--lock", "{dir}/bases.lock.toml"],
        1,
        &[
            "{dir}/bases.lock.toml pins no base for PHP 8.5 (a line of the matrix)",
            fix,
        ],
    );
    s.check(
        &plan("v2.0.0", &["--bases", "{dir}/bases.lock.toml"]),
        1,
        &["no base digest for PHP 8.5 in {dir}/bases.lock.toml", fix],
    );
    // The shipped lock shows every line.
    let out = s.check(&["bases", "show"], 0, &["docker.io/library/php read on"]);
    assert_eq!(out.matches("-fpm-alpine").count(), 5, "{out}");
}

/// Notes of v1.0.0 and v2.0.0 (one line, one platform), pages generated by `cargo xtask notes`.
fn real_notes(s: &Scratch) {
    for (version, size, digest) in [("v1.0.0", 40_000_000, "a"), ("v2.0.0", 41_000_000, "b")] {
        s.write(
            &format!("notes/{version}.json"),
            &notes_json(version, size, digest),
        );
    }
    s.write("notes/size-justifications.toml", "");
    let (code, output) = s.run(&["notes", "--notes-dir", "{dir}/notes"]);
    assert_eq!(code, 0, "{output}");
}

fn notes_json(version: &str, size: u64, digest: &str) -> String {
    let digest = format!("sha256:{}", digest.repeat(64));
    let tag = format!("{version}-php-8.5");
    serde_json::json!({
        "version": version, "prerelease": false, "revision": REVISION,
        "date": "2026-11-25", "created": TIME, "image": "php-fpm",
        "canonical": "ghcr.io/20i-stack", "mirrors": [], "attestations": "provenance",
        "bases": [], "skipped": [],
        "images": [{"php": "8.5", "digest": digest,
                    "platforms": [{"platform": "linux/amd64", "size": size, "digest": digest}]}],
        "references": [{"ref": format!("ghcr.io/20i-stack/php-fpm:{tag}"), "registry": "ghcr.io/20i-stack",
                        "tag": tag, "kind": "pin", "php": "8.5", "digest": digest,
                        "platforms": [{"platform": "linux/amd64", "size": size, "digest": digest}]}],
    })
    .to_string()
}

#[test]
fn notes_and_sizes_checks() {
    let regenerate = "run `cargo xtask notes` to regenerate (edit the JSON, not the page)";
    let s = Scratch::new();
    real_notes(&s);
    let checks = |s: &Scratch| {
        s.check(&["notes", "--check", "--notes-dir", "{dir}/notes"], 0, &[]);
        s.check(
            &["sizes", "--check", "--notes-dir", "{dir}/notes"],
            0,
            &["v2.0.0", "41.0 MB"],
        );
    };
    checks(&s);

    // A directory that does not exist is an error, not an empty pass.
    let missing = "the release notes directory {dir}/missing does not exist: pass --notes-dir DIR";
    s.check(
        &["notes", "--check", "--notes-dir", "{dir}/missing"],
        1,
        &[missing],
    );
    s.check(
        &["sizes", "--check", "--notes-dir", "{dir}/missing"],
        1,
        &[missing],
    );
    s.check(&["notes", "--notes-dir", "{dir}/missing"], 1, &[missing]);

    // A page saved with CRLF line endings is reported as such, not as "(identical)".
    let page = s.file("notes/v2.0.0.md");
    let text = std::fs::read_to_string(&page).unwrap();
    s.write("notes/v2.0.0.md", &text.replace('\n', "\r\n"));
    let out = s.check(
        &["notes", "--check", "--notes-dir", "{dir}/notes"],
        1,
        &[
            "{dir}/notes/v2.0.0.md:",
            "line 1: line endings differ: expected LF (\\n), found CRLF (\\r\\n)",
            regenerate,
        ],
    );
    assert!(!out.contains("(identical)"), "{out}");
    // Trailing spaces, likewise visible.
    s.write("notes/v2.0.0.md", &text.replacen('\n', " \n", 1));
    s.check(
        &["notes", "--check", "--notes-dir", "{dir}/notes"],
        1,
        &["line 1\n", regenerate],
    );
    // A page that is missing.
    std::fs::remove_file(&page).unwrap();
    s.check(
        &["notes", "--check", "--notes-dir", "{dir}/notes"],
        1,
        &[
            "{dir}/notes/v2.0.0.md:\n  the page does not exist",
            regenerate,
        ],
    );
}

/// Notes whose v2.0.0 JSON is edited by `from → to`: `notes --check` and `sizes --check` refuse it.
#[track_caller]
fn notes_error(from: &str, to: &str, expected: &[&str]) {
    let s = Scratch::new();
    real_notes(&s);
    let json = notes_json("v2.0.0", 41_000_000, "b");
    assert!(json.contains(from), "`{from}` is not in the notes");
    s.write("notes/v2.0.0.json", &json.replacen(from, to, 1));
    let mut expected = expected.to_vec();
    expected.push("in release notes {dir}/notes/v2.0.0.json");
    expected.push("use the copy the release published");
    s.check(
        &["notes", "--check", "--notes-dir", "{dir}/notes"],
        1,
        &expected,
    );
    s.check(
        &["sizes", "--check", "--notes-dir", "{dir}/notes"],
        1,
        &expected,
    );
}

#[test]
fn notes_json_file() {
    let b = format!("sha256:{}", "b".repeat(64));
    notes_error(&format!("\"digest\":\"{b}\",\"kind\""), "\"digest\":\"sha256:b\",\"kind\"", &["references[0].digest (ref ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5): `sha256:b` is not a sha256 digest"]);
    notes_error("\"kind\":\"pin\"", "\"kind\":\"pinned\"", &["references[0].kind (ref ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5): unknown variant `pinned`"]);
    notes_error(
        "\"revision\":\"0123",
        "\"revision\":\"HEAD",
        &["revision: `HEAD456789abcdef0123456789abcdef01234567` is not a full commit id"],
    );
    notes_error(
        "\"prerelease\":false",
        "\"prerelease\":true",
        &["prerelease: true says it is, but v2.0.0 is not a prerelease"],
    );
    notes_error(
        "\"size\":41000000",
        "\"size\":\"41 MB\"",
        &["images[0].platforms[0].size: invalid type: string \"41 MB\""],
    );
    notes_error("\"ref\":\"ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5\"", "\"ref\":\"ghcr.io/20i-stack/php-fpm:latest\"", &["references[0].ref: `ghcr.io/20i-stack/php-fpm:latest` is not its registry, image and tag"]);
    // A file named for one release holding another.
    let s = Scratch::new();
    real_notes(&s);
    s.write(
        "notes/v2.0.0.json",
        &notes_json("v2.0.0", 41_000_000, "b").replacen(
            "\"version\":\"v2.0.0\"",
            "\"version\":\"v2.1.0\"",
            1,
        ),
    );
    s.check(&["notes", "--check", "--notes-dir", "{dir}/notes"], 1, &["in release notes {dir}/notes/v2.0.0.json: version is v2.1.0, but the file is named for v2.0.0: rename the file, or restore its version"]);
}

#[test]
fn size_justifications_file() {
    let s = Scratch::new();
    real_notes(&s);
    let file = "in {dir}/notes/size-justifications.toml";
    for (text, expected) in [
        ("[[justify]]\nrelease = \"v2.0.0\"\nreason = \"\"\n", "[[justify]] entry 1 (release = \"v2.0.0\"): reason is empty: say why the images grew"),
        ("[[justify]]\nrelease = \"v2.0.0\"\nreason = \"x\"\n[[justify]]\nrelease = \"v1.0.0\"\nreason = \"   \"\n", "[[justify]] entry 2 (release = \"v1.0.0\"): reason is empty"),
        ("[[justify]]\nrelease = \"v2.0.0\"\nplatform = \"amd64\"\nreason = \"x\"\n", "entry 1 (release = \"v2.0.0\"): platform: leave it out to cover every platform"),
        ("[[justify]]\nrelease = \"2.0\"\nreason = \"x\"\n", "`2.0` is not a release version"),
    ] {
        s.write("notes/size-justifications.toml", text);
        s.check(&["sizes", "--check", "--notes-dir", "{dir}/notes"], 1, &[expected, file]);
    }
}

/// The release commands with good flags writing into the scratch directory, then `extra`.
fn release<'a>(command: &[&'a str], version: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = command.to_vec();
    args.extend_from_slice(&[
        version,
        "--published",
        "",
        "--revision",
        REVISION,
        "--time",
        TIME,
        "--notes-dir",
        "{dir}/notes-out",
        "--work-dir",
        "{dir}/work",
    ]);
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_release_of_another_version_than_the_workspace_is_refused_before_docker() {
    let s = Scratch::new();
    s.write("digests.json", "{}");
    let (not_workspace, would_pull) = (
        format!("v2.0.0 is not the workspace's version ({WORKSPACE})"),
        format!("would pull v{WORKSPACE}-php-M.m, which this release does not publish"),
    );
    let refused = [
        not_workspace.as_str(),
        would_pull.as_str(),
        "Set `version = \"2.0.0\"` under [workspace.package] in Cargo.toml",
    ];
    s.check(&release(&["release"], "v2.0.0", &[]), 1, &refused);
    s.check(
        &release(&["release"], "v2.0.0", &["--dry-run"]),
        1,
        &refused,
    );
    s.check(
        &release(
            &["release"],
            "v2.0.0",
            &[
                "--platform",
                "linux/amd64",
                "--digests-file",
                "{dir}/out.json",
            ],
        ),
        1,
        &refused,
    );
    s.check(
        &release(
            &["release", "merge"],
            "v2.0.0",
            &["--digests-file", "{dir}/digests.json"],
        ),
        1,
        &refused,
    );
    s.check(
        &release(&["release"], "v2.1.0-rc.1", &[]),
        1,
        &[
            "v2.1.0-rc.1 is not the workspace's version",
            "Set `version = \"2.1.0-rc.1\"`",
        ],
    );

    // `plan` shows the mismatch without failing, in the table and in --json.
    s.check(&plan("v2.0.0", &[]), 0, &[&format!("launcher    MISMATCH: Cargo.toml [workspace.package] version is {WORKSPACE}, so the 20i launcher built from it pulls v{WORKSPACE}-php-M.m, not v2.0.0; release refuses this")]);
    s.check(
        &plan("v2.0.0", &["--json"]),
        0,
        &[&format!(
            "\"launcher\": {{\n    \"workspace\": \"{WORKSPACE}\",\n    \"matches\": false,\n    \"allowed\": false\n  }}"
        )],
    );
    s.check(
        &plan("v2.0.0", &["--allow-version-mismatch"]),
        0,
        &["not v2.0.0; --allow-version-mismatch lets release go ahead (tests only)"],
    );
    let own = format!("v{WORKSPACE}");
    s.check(
        &plan(&own, &["--published", ""]),
        0,
        &[&format!(
            "launcher    v{WORKSPACE} (Cargo.toml [workspace.package] version)"
        )],
    );
}

#[test]
fn the_workspace_version_or_the_flag_lets_a_release_through() {
    // --dry-run runs no docker: what passes the check is listed, not pushed.
    let own = format!("v{WORKSPACE}");
    let (code, output) = Scratch::new().run(&release(&["release"], &own, &["--dry-run"]));
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("docker buildx bake"), "{output}");
    let (code, output) = Scratch::new().run(&release(
        &["release"],
        "v2.0.0",
        &["--dry-run", "--allow-version-mismatch"],
    ));
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(&format!(
            "warning: --allow-version-mismatch: releasing v2.0.0 from a workspace at {WORKSPACE}"
        )),
        "{output}"
    );
}

#[test]
fn republish_reason_flag() {
    let s = Scratch::new();
    let republish = |reason: &str| -> Vec<String> {
        ["republish", "v2.0.0", "--reason", reason, "--dry-run"]
            .map(str::to_owned)
            .to_vec()
    };
    let long = "x".repeat(301);
    for (reason, expected) in [
        ("", "the reason is empty: say why the release is rebuilt"),
        ("  ", "the reason is empty"),
        ("fix\nCVE", "write it on one line"),
        (long.as_str(), "301 characters long: say it in at most 300"),
    ] {
        let args = republish(reason);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.check(&args, 2, &["for '--reason <REASON>'", expected]);
    }
}
