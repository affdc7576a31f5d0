//! `cargo xtask dist build` and `dist seal` for this machine's target, run as the release workflow runs them:
//! the archive's contents, `SHA256SUMS` against `sha256sum`, each signature against `cosign verify-blob` (and a
//! tampered copy refused), the manifest, and the packed `20i --version`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use stack_images::{
    dist::{self, DistManifest, DistSigning, Target},
    ReleaseVersion,
};

use crate::{setup::key_pair, xtask, xtask_command};

fn workspace_version() -> ReleaseVersion {
    concat!("v", env!("CARGO_PKG_VERSION")).parse().unwrap()
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("running a peer tool");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn build(target: Target, out: &Path) -> PathBuf {
    let output = xtask(&[
        "dist",
        "build",
        "--target",
        target.triple(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.join(dist::archive_name(&workspace_version(), target))
}

fn verify(public_key: &Path, archive: &Path, signature: &Path) -> std::process::Output {
    Command::new("cosign")
        .arg("verify-blob")
        .arg(format!("--key={}", public_key.display()))
        .arg(format!("--signature={}", signature.display()))
        .arg("--insecure-ignore-tlog=true")
        .arg("--")
        .arg(archive)
        .output()
        .expect("cosign is installed by `make setup`")
}

/// The release build of the launcher for the host's musl target: many minutes the first time on a loaded
/// machine, a no-op after (the workspace's own target directory).
#[test]
fn build_and_seal_the_host_archive_as_the_release_does() {
    let Some(target) = Target::host().filter(|t| t.os() == dist::Os::Linux) else {
        eprintln!("skipped: the archive test runs on Linux (the other targets are built on their runners)");
        return;
    };
    let version = workspace_version();
    let out = tempfile::tempdir().unwrap();
    let archive = build(target, out.path());
    let folder = dist::archive_folder(&version, target);

    // The archive: one folder, the binary, the licence and the README, owned by 0:0, the binary executable.
    let listing = run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvzf")
        .arg(&archive));
    let rows: Vec<(String, String, String)> = listing
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[5].to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("drwxr-xr-x", ""),
        ("-rwxr-xr-x", "20i"),
        ("-rw-r--r--", "LICENSE"),
        ("-rw-r--r--", "README.md"),
    ]
    .iter()
    .map(|(mode, name)| {
        (
            mode.to_string(),
            "0/0".to_owned(),
            format!("{folder}/{name}"),
        )
    })
    .collect();
    assert_eq!(rows, expected, "{listing}");

    // Deterministic: packing again from the same build gives the same bytes.
    let again = tempfile::tempdir().unwrap();
    let second = build(target, again.path());
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&second).unwrap()
    );

    // The packed binary prints the release's version.
    let unpacked = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(unpacked.path()));
    let printed = run(Command::new(unpacked.path().join(&folder).join("20i")).arg("--version"));
    assert_eq!(printed.trim(), format!("20i {}", version.semver()));

    // Sealed with a key, as the demo does.
    let keys = key_pair();
    let sealed = xtask_command()
        .args(["dist", "seal"])
        .arg(out.path())
        .arg("--key")
        .arg(&keys.private)
        .args(["--base-url", "http://127.0.0.1:5102"])
        .env("COSIGN_PASSWORD", crate::setup::KEY_PASSWORD)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sealed.stdout);
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    assert!(
        stdout.contains(
            "install: curl -fsSL http://127.0.0.1:5102/install.sh | sh -s -- --base-url http://127.0.0.1:5102\n"
        ),
        "{stdout}"
    );

    // SHA256SUMS says what sha256sum says.
    let name = dist::archive_name(&version, target);
    let sums = std::fs::read_to_string(out.path().join(dist::SHA256SUMS)).unwrap();
    let independent = run(Command::new("sha256sum").arg(&name).current_dir(out.path()));
    assert_eq!(sums, independent);
    run(Command::new("sha256sum")
        .args(["-c", dist::SHA256SUMS])
        .current_dir(out.path()));

    // The manifest reads, and names what is there.
    let manifest = DistManifest::load(out.path()).unwrap();
    assert_eq!(manifest.version, version);
    assert_eq!(manifest.base_url, "http://127.0.0.1:5102");
    assert_eq!(
        manifest.signing,
        DistSigning::Key {
            public_key: dist::PUBLIC_KEY.to_owned()
        }
    );
    let [entry] = manifest.archives.as_slice() else {
        panic!("{manifest:?}");
    };
    assert_eq!((entry.target, entry.name.as_str()), (target, name.as_str()));
    assert_eq!(sums, format!("{}  {name}\n", entry.sha256));
    assert_eq!(entry.signature, format!("{name}.sig"));
    let public = out.path().join(dist::PUBLIC_KEY);
    assert_eq!(
        std::fs::read(&public).unwrap(),
        std::fs::read(&keys.public).unwrap()
    );
    let formula = std::fs::read_to_string(out.path().join(dist::FORMULA)).unwrap();
    assert!(
        formula.contains(&format!("      sha256 \"{}\"\n", entry.sha256)),
        "{formula}"
    );

    // cosign accepts the signature with the published key, and refuses it for a tampered copy.
    let signature = out.path().join(&entry.signature);
    let verified = verify(&public, &archive, &signature);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let tampered_dir = tempfile::tempdir().unwrap();
    let tampered = tampered_dir.path().join(&name);
    let mut bytes = std::fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();
    let refused = verify(&public, &tampered, &signature);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("invalid signature"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[track_caller]
fn check_refused(args: &[&str], setup: impl FnOnce(&Path), expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let mut command = xtask_command();
    command.args(args);
    if args[1] == "seal" {
        command.arg(dir.path());
    }
    let output = command.output().unwrap();
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&dir.path().display().to_string(), "DIR");
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
}

/// What is refused before anything is built or signed.
#[test]
fn refusals() {
    let version = workspace_version();
    let none = |_: &Path| {};
    check_refused(
        &["dist", "build", "--target", "x86_64-unknown-linux-gnu"],
        none,
        "`x86_64-unknown-linux-gnu` is not a target the launcher is released for: use one of x86_64-unknown-linux-musl",
    );
    check_refused(
        &[
            "dist",
            "build",
            "--target",
            "x86_64-unknown-linux-musl",
            "--version",
            "v9.9.9",
        ],
        none,
        &format!("--version v9.9.9: this checkout's launcher is {version}"),
    );
    check_refused(
        &["dist", "seal", "--key", "k.key"],
        none,
        &format!("DIR holds no archive 20i-{version}-TARGET.tar.gz: run `cargo xtask dist build"),
    );
    check_refused(
        &["dist", "seal", "--key", "k.key"],
        |dir| std::fs::write(dir.join("20i-v0.0.1-x86_64-apple-darwin.tar.gz"), "").unwrap(),
        &format!(
            "DIR holds 20i-v0.0.1-x86_64-apple-darwin.tar.gz, an archive of v0.0.1, not {version}"
        ),
    );
    let archive = format!("20i-{version}-x86_64-apple-darwin.tar.gz");
    check_refused(
        &["dist", "seal", "--keyless"],
        |dir| std::fs::write(dir.join(&archive), "").unwrap(),
        "--keyless signs with the GitHub Actions workflow's OIDC identity, and GITHUB_WORKFLOW_REF is not set",
    );
    check_refused(
        &["dist", "seal"],
        none,
        "the following required arguments were not provided",
    );
    // An archive that is not what `dist build` packs is refused before it is signed.
    let keys = key_pair();
    let key = keys.private.to_str().unwrap();
    let archive = format!("20i-{version}-x86_64-apple-darwin.tar.gz");
    check_refused(
        &["dist", "seal", "--key", key],
        |dir| std::fs::write(dir.join(&archive), "not gzip").unwrap(),
        &format!("reading DIR/{archive}"),
    );
    check_refused(
        &["dist", "seal", "--key", key],
        |dir| {
            let folder = dir.join("packed-by-hand");
            std::fs::create_dir(&folder).unwrap();
            std::fs::write(folder.join("20i"), "#!/bin/sh\n").unwrap();
            run(Command::new("tar")
                .arg("-czf")
                .arg(dir.join(&archive))
                .arg("-C")
                .arg(dir)
                .arg("packed-by-hand"));
            std::fs::remove_dir_all(&folder).unwrap();
        },
        &format!("DIR/{archive} holds [\"packed-by-hand/\", \"packed-by-hand/20i\"], not"),
    );
}

/// `release --launcher-dist DIR` takes only a sealed folder of the release's own version, and says so before
/// anything runs.
#[test]
fn the_release_refuses_a_launcher_folder_that_is_not_sealed_for_it() {
    let version = workspace_version();
    let other: ReleaseVersion = "v9.9.9".parse().unwrap();
    let name = dist::archive_name(&other, Target::X86_64LinuxMusl);
    let sealed_for_another = DistManifest {
        version: other.clone(),
        base_url: "http://127.0.0.1:5102".to_owned(),
        install: "curl -fsSL http://127.0.0.1:5102/install.sh | sh".to_owned(),
        signing: DistSigning::Key {
            public_key: dist::PUBLIC_KEY.to_owned(),
        },
        archives: vec![dist::DistArchive {
            target: Target::X86_64LinuxMusl,
            signature: format!("{name}.sig"),
            sha256: dist::Sha256::of(b""),
            name,
        }],
    };
    for (manifest, expected) in [
        (
            None,
            "dist-manifest.json: is DIR a folder sealed by `cargo xtask dist seal`?".to_owned(),
        ),
        (
            Some(sealed_for_another.to_json()),
            format!("--launcher-dist DIR: its archives are of {other}, not {version}: seal the archives of this release"),
        ),
        (
            Some("{}".to_owned()),
            "missing field `version`".to_owned(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = &manifest {
            std::fs::write(dir.path().join(dist::MANIFEST), text).unwrap();
        }
        let output = xtask_command()
            .args(["release", &version.to_string(), "--dry-run", "--launcher-dist"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr)
            .replace(&dir.path().display().to_string(), "DIR");
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
    }
}
