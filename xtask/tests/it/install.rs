//! The installer (`launcher/install.sh`) run for real, as a user runs it (`curl … | sh` and `sh install.sh`), with
//! `HOME` and `TMPDIR` in temp dirs, against the host's release files served by `testkit::FileServer` (the
//! stand-in for GitHub's release downloads); then the installed `20i --version`. Every refusal names what to do
//! and leaves the prefix and the temp dir as they were.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use stack_images::Digest;
use testkit::FileServer;

use crate::setup::{key_pair, Keys, KEY_PASSWORD};

/// The version the workspace (and so the debug `20i`) has.
const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// The release's target for this machine, as the installer names it.
fn host_target() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => panic!("no release target for {other}"),
    };
    match std::env::consts::OS {
        "linux" => format!("{arch}-unknown-linux-musl"),
        "macos" => format!("{arch}-apple-darwin"),
        other => panic!("no release target for {other}"),
    }
}

fn archive_name() -> String {
    format!("20i-{VERSION}-{}.tar.gz", host_target())
}

/// The release files for the host, made once per test run in `target/tmp/install-release`; each case copies them.
struct Release {
    dir: PathBuf,
    keys: Keys,
}

fn release() -> &'static Release {
    static RELEASE: OnceLock<Release> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("install-release");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let keys = key_pair();
        host_dist(&dir, &keys);
        Release { dir, keys }
    })
}

/// Makes `dir` hold what a release attaches for the host's target, made as the release makes it: `cargo xtask
/// dist build` (the release build of `20i` for the host's target, packed), then `dist seal --key` (its `.sig`,
/// `SHA256SUMS`, `install.sh` with this version filled in, the formula and the manifest).
fn host_dist(dir: &Path, keys: &Keys) {
    let dir_arg = dir.to_str().expect("a UTF-8 target directory");
    let built = crate::xtask(&[
        "dist",
        "build",
        "--target",
        &host_target(),
        "--out",
        dir_arg,
    ]);
    assert!(
        built.status.success(),
        "dist build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    run_ok(
        crate::xtask_command()
            .args(["dist", "seal", dir_arg, "--key"])
            .arg(&keys.private)
            .env("COSIGN_PASSWORD", KEY_PASSWORD),
    );
}

fn sign(keys: &Keys, file: &Path, signature: &Path) {
    run_ok(
        Command::new("cosign")
            .arg("sign-blob")
            .arg(format!("--key={}", keys.private.display()))
            .arg("--tlog-upload=false")
            .arg("--yes")
            .arg(format!("--output-signature={}", signature.display()))
            .arg("--")
            .arg(file)
            .env("COSIGN_PASSWORD", KEY_PASSWORD),
    );
}

/// `SHA256SUMS` in `dir` for `files` (in `dir`), as `sha256sum` writes it.
fn write_sums(dir: &Path, files: &[&str]) {
    let mut sums = String::new();
    for file in files {
        let digest = Digest::of(&std::fs::read(dir.join(file)).unwrap());
        let hex = digest.as_str().strip_prefix("sha256:").unwrap();
        sums.push_str(&format!("{hex}  {file}\n"));
    }
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

fn run_ok(command: &mut Command) {
    let output = command.output().expect("running a tool");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// One user's machine: a home, a temp dir, a dir of commands put first on PATH, and the release's files served.
struct Machine {
    home: tempfile::TempDir,
    tmp: tempfile::TempDir,
    bin: tempfile::TempDir,
    served: tempfile::TempDir,
    /// PATH is `bin` alone (the tools [`Machine::only_tools`] linked there), not `bin` before the test's PATH.
    isolated: bool,
}

impl Machine {
    fn new() -> Machine {
        let served = tempfile::tempdir().unwrap();
        for name in entries(&release().dir) {
            std::fs::copy(release().dir.join(&name), served.path().join(&name)).unwrap();
        }
        Machine {
            home: tempfile::tempdir().unwrap(),
            tmp: tempfile::tempdir().unwrap(),
            bin: tempfile::tempdir().unwrap(),
            served,
            isolated: false,
        }
    }

    /// A machine whose PATH has only these tools (linked from where this one has them).
    fn only_tools(&mut self, tools: &[&str]) {
        for tool in tools {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap();
            let found = String::from_utf8(found.stdout).unwrap();
            assert!(!found.trim().is_empty(), "{tool} is not installed here");
            std::os::unix::fs::symlink(found.trim(), self.bin.path().join(tool)).unwrap();
        }
        self.isolated = true;
    }

    fn prefix(&self) -> PathBuf {
        self.home.path().join(".local/bin")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.served.path().join(name)
    }

    /// Runs the installer as the user does, `how` says which way, with `args` after the base URL.
    fn install(&self, base_url: &str, how: How, args: &[&str]) -> Output {
        let mut command = Command::new("sh");
        match how {
            How::Piped => {
                command
                    .arg("-c")
                    .arg(format!(
                        "curl -fsSL '{base_url}/install.sh' | sh -s -- \"$@\""
                    ))
                    .arg("sh")
                    .args(["--base-url", base_url]);
            }
            How::File => {
                command
                    .arg(self.file("install.sh"))
                    .args(["--base-url", base_url]);
            }
            How::Environment => {
                command
                    .arg(self.file("install.sh"))
                    .env("TWENTYI_INSTALL_BASE_URL", base_url);
            }
        }
        if how != How::Environment {
            command.env_remove("TWENTYI_INSTALL_BASE_URL");
        }
        let path = if self.isolated {
            self.bin.path().display().to_string()
        } else {
            format!(
                "{}:{}",
                self.bin.path().display(),
                std::env::var("PATH").unwrap()
            )
        };
        command
            .args(args)
            .env("HOME", self.home.path())
            .env("TMPDIR", self.tmp.path())
            .env("PATH", path)
            .env("SHELL", "/bin/bash")
            .env_remove("COSIGN_PASSWORD")
            .output()
            .expect("running sh")
    }
}

/// How the user runs the installer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// `curl -fsSL URL/install.sh | sh -s -- --base-url URL ARGS`.
    Piped,
    /// `sh install.sh --base-url URL ARGS`.
    File,
    /// `TWENTYI_INSTALL_BASE_URL=URL sh install.sh ARGS`.
    Environment,
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn installs_the_release_and_runs_it() {
    let machine = Machine::new();
    let server = FileServer::start(machine.served.path()).unwrap();
    let key = release().keys.public.display().to_string();
    // Piped from curl, as the docs say, with the signature required and checked against the key.
    let installed = machine.install(
        &server.url(),
        How::Piped,
        &["--verify", "--cosign-key", &key],
    );
    let out = text(&installed);
    assert!(installed.status.success(), "{out}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        String::from_utf8_lossy(&installed.stdout).contains(&format!("20i {version}")),
        "{out}"
    );
    for expected in [
        format!("checked the sha256 of {}", archive_name()),
        format!("verified the signature of {}", archive_name()),
        format!("{} is not on your PATH", machine.prefix().display()),
        "export PATH=".to_owned(),
    ] {
        assert!(out.contains(&expected), "lacks {expected:?}:\n{out}");
    }
    assert_eq!(entries(&machine.prefix()), ["20i"]);
    assert_eq!(entries(machine.tmp.path()), Vec::<String>::new());
    let ran = Command::new(machine.prefix().join("20i"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        format!("20i {version}")
    );
    let fetched: Vec<String> = server
        .served()
        .iter()
        .map(|s| format!("{} {} {}", s.method, s.path, s.status))
        .collect();
    assert_eq!(
        fetched,
        [
            "GET /install.sh 200".to_owned(),
            "GET /SHA256SUMS 200".to_owned(),
            format!("GET /{} 200", archive_name()),
            format!("GET /{}.sig 200", archive_name()),
        ]
    );

    // Run from a file, the base URL from the environment, the version asked for: a release signed with a key has no keyless bundle, which
    // without --verify is a warning, not a refusal.
    let again = machine.install(&server.url(), How::Environment, &["--version", VERSION]);
    let out = text(&again);
    assert!(again.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "warning: no signature {}.sigstore.json",
            archive_name()
        )),
        "{out}"
    );
    assert_eq!(entries(&machine.prefix()), ["20i"]);
}

/// What the installer needs besides a downloader, a checksum tool and cosign.
const BASE_TOOLS: [&str; 18] = [
    "sh", "uname", "mktemp", "tar", "gzip", "cut", "awk", "tr", "sed", "grep", "head", "mkdir",
    "rm", "cp", "chmod", "mv", "cat", "sleep",
];

#[test]
fn wget_alone_installs_and_verify_needs_cosign() {
    // No curl and no cosign: wget downloads, the checksum is checked, the signature is said to be unchecked.
    let mut machine = Machine::new();
    machine.only_tools(&BASE_TOOLS);
    machine.only_tools(&["wget", "sha256sum"]);
    let server = FileServer::start(machine.served.path()).unwrap();
    let installed = machine.install(&server.url(), How::File, &[]);
    let out = text(&installed);
    assert!(installed.status.success(), "{out}");
    assert!(
        out.contains("cosign is not installed: the signature is not verified"),
        "{out}"
    );
    assert_eq!(entries(&machine.prefix()), ["20i"]);
    assert_eq!(entries(machine.tmp.path()), Vec::<String>::new());
    assert!(server
        .served()
        .iter()
        .any(|s| s.path == format!("/{}", archive_name()) && s.status == 200));

    // --verify without cosign: refused before anything is downloaded.
    let machine = {
        let mut machine = Machine::new();
        machine.only_tools(&BASE_TOOLS);
        machine.only_tools(&["curl", "sha256sum"]);
        machine
    };
    let server = FileServer::start(machine.served.path()).unwrap();
    let refused = machine.install(&server.url(), How::File, &["--verify"]);
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(
        out.contains("--verify needs cosign, which is not installed: install it"),
        "{out}"
    );
    assert_eq!(server.served(), Vec::new());
    assert!(!machine.prefix().exists(), "the prefix was created");
    assert_eq!(entries(machine.tmp.path()), Vec::<String>::new());
}

#[test]
fn busybox_sh_and_its_tools_install() {
    // Alpine's shell and tools (BusyBox ash, tar, gzip, awk, sha256sum, mktemp), with curl: POSIX sh, no bashisms
    // and no GNU options. BusyBox's own wget is left out: the Debian static build here crashes on any download.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        _ => "arm64",
    };
    let busybox = testkit::fixtures::busybox_dir()
        .expect("make setup leaves the busybox fixtures")
        .join(format!("busybox-{arch}"));
    let mut machine = Machine::new();
    std::os::unix::fs::symlink(&busybox, machine.bin.path().join("busybox")).unwrap();
    for applet in BASE_TOOLS.iter().chain(&["sha256sum", "pwd"]) {
        std::os::unix::fs::symlink("busybox", machine.bin.path().join(applet)).unwrap();
    }
    machine.only_tools(&["curl"]);
    let server = FileServer::start(machine.served.path()).unwrap();
    let mut command = Command::new(machine.bin.path().join("sh"));
    let installed = command
        .arg(machine.file("install.sh"))
        .args(["--base-url", &server.url()])
        .env_clear()
        .env("HOME", machine.home.path())
        .env("TMPDIR", machine.tmp.path())
        .env("PATH", machine.bin.path())
        .output()
        .unwrap();
    let out = text(&installed);
    assert!(installed.status.success(), "{out}");
    assert!(
        String::from_utf8_lossy(&installed.stdout)
            .contains(&format!("20i {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert_eq!(entries(&machine.prefix()), ["20i"]);
    assert_eq!(entries(machine.tmp.path()), Vec::<String>::new());
}

#[test]
fn an_older_install_is_replaced_atomically() {
    let machine = Machine::new();
    let server = FileServer::start(machine.served.path()).unwrap();
    let prefix = machine.home.path().join("tools");
    std::fs::create_dir_all(&prefix).unwrap();
    write_script(&prefix.join("20i"), "#!/bin/sh\necho '20i 0.0.1'\n");
    // An `mv` first on PATH that records, at the moment of the rename, what `20i --version` says and what
    // the prefix holds, then renames with the real `mv`.
    let real_mv = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v mv"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let record = machine.home.path().join("at-the-rename");
    write_script(
        &machine.bin.path().join("mv"),
        &format!(
            "#!/bin/sh\n{{ '{prefix}/20i' --version; ls '{prefix}'; }} > '{record}'\nexec {real_mv} \"$@\"\n",
            prefix = prefix.display(),
            record = record.display(),
            real_mv = real_mv.trim(),
        ),
    );
    let installed = machine.install(
        &server.url(),
        How::File,
        &["--prefix", prefix.to_str().unwrap()],
    );
    let out = text(&installed);
    assert!(installed.status.success(), "{out}");
    let at_rename = std::fs::read_to_string(&record).expect("the installer renamed with mv");
    let lines: Vec<&str> = at_rename.lines().collect();
    assert_eq!(lines[0], "20i 0.0.1", "the old 20i works until the rename");
    assert_eq!(lines[1], "20i");
    assert!(
        lines[2].starts_with("20i.tmp.") && lines.len() == 3,
        "the new one is staged beside it: {at_rename}"
    );
    let version = env!("CARGO_PKG_VERSION");
    let ran = Command::new(prefix.join("20i"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        format!("20i {version}")
    );
    assert_eq!(entries(&prefix), ["20i"]);
    assert_eq!(entries(machine.tmp.path()), Vec::<String>::new());
}

/// What a refusal case does to the machine before the install runs.
enum Setup {
    Nothing,
    /// The archive served is not the one SHA256SUMS was made from.
    TamperArchive,
    /// SHA256SUMS holds another archive's sum.
    WrongSums,
    /// SHA256SUMS lists no archive for the host.
    SumsWithoutHost,
    /// SHA256SUMS names the host's archive with a path in its version.
    SumsWithPath,
    /// `uname -s` and `uname -m` answer these.
    Uname(&'static str, &'static str),
    /// The archive's `.sig` is a signature of other bytes.
    BadSignature,
}

/// One refusal: what is done to the machine, whether the server is reachable, the installer's extra arguments,
/// what its message says, and a request that shows the fault fired.
struct Case<'a> {
    name: &'a str,
    setup: Setup,
    reachable: bool,
    args: Vec<&'a str>,
    expected: Vec<String>,
    fired: Option<String>,
}

impl<'a> Case<'a> {
    fn new(
        name: &'a str,
        setup: Setup,
        reachable: bool,
        args: Vec<&'a str>,
        expected: Vec<String>,
        fired: Option<String>,
    ) -> Case<'a> {
        Case {
            name,
            setup,
            reachable,
            args,
            expected,
            fired,
        }
    }
}

#[test]
fn refusals_say_what_to_do_and_leave_nothing_behind() {
    let key = release().keys.public.display().to_string();
    let archive = archive_name();
    let cases = [
        Case::new(
            "tampered archive",
            Setup::TamperArchive,
            true,
            vec![],
            vec![
                format!("checksum mismatch: {archive} has sha256"),
                "nothing was installed".into(),
                "Run this again".into(),
            ],
            Some(format!("GET /{archive} 200")),
        ),
        Case::new(
            "wrong SHA256SUMS",
            Setup::WrongSums,
            true,
            vec![],
            vec!["checksum mismatch".into(), "tampered with".into()],
            Some("GET /SHA256SUMS 200".into()),
        ),
        Case::new(
            "archive missing from SHA256SUMS",
            Setup::SumsWithoutHost,
            true,
            vec![],
            vec![
                format!("SHA256SUMS lists no archive for {}", host_target()),
                "cargo install --locked --git".into(),
            ],
            Some("GET /SHA256SUMS 200".into()),
        ),
        Case::new(
            "a path in SHA256SUMS",
            Setup::SumsWithPath,
            true,
            vec![],
            vec!["`v1.0.0/../../escaped` is not a release version".into()],
            Some("GET /SHA256SUMS 200".into()),
        ),
        // macOS maps to its targets (and this release has none of them).
        Case::new(
            "macOS on Apple Silicon",
            Setup::Uname("Darwin", "arm64"),
            true,
            vec![],
            vec!["SHA256SUMS lists no archive for aarch64-apple-darwin".into()],
            Some("GET /SHA256SUMS 200".into()),
        ),
        Case::new(
            "macOS on Intel",
            Setup::Uname("Darwin", "x86_64"),
            true,
            vec![],
            vec!["SHA256SUMS lists no archive for x86_64-apple-darwin".into()],
            Some("GET /SHA256SUMS 200".into()),
        ),
        Case::new(
            "unknown system",
            Setup::Uname("FreeBSD", "amd64"),
            true,
            vec![],
            vec![
                "no 20i build for this platform (uname -s: FreeBSD, uname -m: amd64)".into(),
                "Build it from source".into(),
            ],
            None,
        ),
        Case::new(
            "unknown machine",
            Setup::Uname("Linux", "riscv64"),
            true,
            vec![],
            vec!["(uname -s: Linux, uname -m: riscv64)".into()],
            None,
        ),
        Case::new(
            "unreachable server",
            Setup::Nothing,
            false,
            vec![],
            vec![
                "could not download http://127.0.0.1:".into(),
                "/SHA256SUMS".into(),
                "--base-url".into(),
            ],
            None,
        ),
        Case::new(
            "bad signature with --verify",
            Setup::BadSignature,
            true,
            vec!["--verify", "--cosign-key", &key],
            vec![
                format!("the signature of {archive} does not verify against the key {key}"),
                "nothing was installed".into(),
            ],
            Some(format!("GET /{archive}.sig 200")),
        ),
    ];
    for Case {
        name,
        setup,
        reachable,
        args,
        expected,
        fired,
    } in cases
    {
        let machine = Machine::new();
        match &setup {
            Setup::Nothing => {}
            Setup::TamperArchive => {
                let path = machine.file(&archive);
                let mut bytes = std::fs::read(&path).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
                std::fs::write(&path, bytes).unwrap();
            }
            Setup::WrongSums => {
                std::fs::write(
                    machine.file("SHA256SUMS"),
                    format!("{}  {archive}\n", "ab".repeat(32)),
                )
                .unwrap();
            }
            Setup::SumsWithoutHost => write_sums(machine.served.path(), &["install.sh"]),
            Setup::SumsWithPath => {
                // The checkout's installer, whose version no seal filled in: it reads one from SHA256SUMS.
                std::fs::copy(
                    xtask::project_root().join("launcher/install.sh"),
                    machine.file("install.sh"),
                )
                .unwrap();
                std::fs::write(
                    machine.file("SHA256SUMS"),
                    format!("{}  20i-v1.0.0/../../escaped-{}.tar.gz\n", "ab".repeat(32), host_target()),
                )
                .unwrap()
            }
            Setup::Uname(system, machine_name) => write_script(
                &machine.bin.path().join("uname"),
                &format!(
                    "#!/bin/sh\ncase $1 in -s) echo {system} ;; -m) echo {machine_name} ;; *) exit 1 ;; esac\n"
                ),
            ),
            Setup::BadSignature => {
                let other = machine.tmp.path().join("other");
                std::fs::write(&other, "other bytes").unwrap();
                sign(
                    &release().keys,
                    &other,
                    &machine.file(&format!("{archive}.sig")),
                );
                std::fs::remove_file(other).unwrap();
            }
        }
        let server = FileServer::start(machine.served.path()).unwrap();
        let url = if reachable {
            server.url()
        } else {
            testkit::unreachable_url().unwrap()
        };
        let output = machine.install(&url, How::File, &args);
        let out = text(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {out}");
        for expected in &expected {
            assert!(out.contains(expected), "{name}: lacks {expected:?}:\n{out}");
        }
        assert!(!machine.prefix().exists(), "{name}: the prefix was created");
        assert_eq!(
            entries(machine.tmp.path()),
            Vec::<String>::new(),
            "{name}: the temp dir"
        );
        let requests: Vec<String> = server
            .served()
            .iter()
            .map(|s| format!("{} {} {}", s.method, s.path, s.status))
            .collect();
        if let Some(fired) = fired {
            assert!(requests.contains(&fired), "{name}: {requests:?}");
        }
        // An unknown platform stops before any download.
        if name.starts_with("unknown") || !reachable {
            assert!(requests.is_empty(), "{name}: {requests:?}");
        }
    }
}

#[test]
fn the_installer_names_this_repository_and_its_release_workflow() {
    let script =
        std::fs::read_to_string(xtask::project_root().join("launcher/install.sh")).unwrap();
    let source = &stack_images::Matrix::embedded().source;
    let repository = source
        .strip_prefix("https://github.com/")
        .expect("the matrix's source is on GitHub");
    assert!(
        script.contains(&format!("REPOSITORY=\"{repository}\"")),
        "install.sh does not name {repository}, the matrix's source"
    );
    let workflow = ".github/workflows/release.yml";
    assert!(script.contains(&format!("KEYLESS_WORKFLOW=\"{workflow}\"")));
    assert!(
        xtask::project_root().join(workflow).is_file(),
        "{workflow} signs the release"
    );
    // The placeholder `cargo xtask dist seal` fills, spelled once.
    assert_eq!(script.matches("@VERSION@").count(), 1);
}
