//! `cargo xtask bases refresh` against a real registry on loopback holding stand-ins for Docker Hub's `php`
//! bases (which cannot be pulled here): the lock records exactly the digests the registry serves.

use std::{path::PathBuf, process::Output};

use crate::{
    setup::{assert_ok, LINES},
    xtask, xtask_command,
};

use stack_images::{BaseLock, PhpLine};
use testkit::{fixtures, Registry};

/// `bases refresh --source SOURCE` into a new lock; returns the directory that holds it while the test runs, and
/// the lock's path.
#[track_caller]
fn refresh_new_lock(source: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("standin.lock.toml");
    let lock_arg = lock_path.display().to_string();
    assert_ok(&xtask(&[
        "bases", "refresh", "--source", source, "--lock", &lock_arg,
    ]));
    (dir, lock_path)
}

#[test]
fn refresh_pins_what_the_registry_serves_and_fails_whole() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let source = format!("{}/fixtures/php-standin", registry.host());
    let mut pushed = Vec::new();
    for line in LINES {
        // A different label per line gives each stand-in base its own digest.
        let reference = format!("{source}:{line}-fpm-alpine");
        pushed.push(fixtures::push_busybox(
            &reference,
            &format!("LABEL stand-in-for=php:{line}-fpm-alpine\n"),
            false,
        )?);
    }

    let (_dir, lock_path) = refresh_new_lock(&source);
    let lock_arg = lock_path.display().to_string();
    let lock = BaseLock::load(&lock_path)?;
    assert_eq!(lock.source.to_string(), source);
    for (line, digest) in LINES.iter().zip(&pushed) {
        let locked = &lock.lines[&line.parse::<PhpLine>()?];
        assert_eq!(locked.digest.as_str(), digest, "PHP {line}");
        assert_eq!(locked.tag.to_string(), format!("{line}-fpm-alpine"));
    }

    // A second refresh with nothing changed reports every line unchanged, and leaves the end-of-life 8.1 alone.
    let output = xtask(&["bases", "refresh", "--lock", &lock_arg]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("unchanged").count(), 4, "{stdout}");
    assert_eq!(stdout.matches("end of life: kept").count(), 1, "{stdout}");

    // Upstream moves one tag: the refresh names the old digest and pins the new one.
    let moved = fixtures::push_busybox(
        &format!("{source}:8.4-fpm-alpine"),
        "LABEL rebuilt=yes\n",
        false,
    )?;
    let output = xtask(&["bases", "refresh", "--lock", &lock_arg]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("was {}", &pushed[3][..19])),
        "{stdout}"
    );
    assert_eq!(
        BaseLock::load(&lock_path)?.lines[&PhpLine::new(8, 4)]
            .digest
            .as_str(),
        moved
    );

    // A tag that is gone fails the refresh, names the line, and leaves the lock as it was.
    let before = std::fs::read_to_string(&lock_path)?;
    let other = format!("{}/fixtures/php-standin-partial", registry.host());
    fixtures::push_busybox(&format!("{other}:8.1-fpm-alpine"), "", false)?;
    let output = xtask(&["bases", "refresh", "--source", &other, "--lock", &lock_arg]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("reading the base of PHP 8.2") && stderr.contains("manifest unknown"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&lock_path)?, before);
    Ok(())
}

/// Pushes a stand-in base for every line, each saying its PHP version as the real ones do (`ENV PHP_VERSION`).
fn push_bases(source: &str, patch: &str) -> anyhow::Result<Vec<String>> {
    LINES
        .iter()
        .map(|line| {
            fixtures::push_busybox(
                &format!("{source}:{line}-fpm-alpine"),
                &format!("ENV PHP_VERSION={line}.{patch}\n"),
                false,
            )
        })
        .collect()
}

fn check(lock: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let output: Output = xtask_command()
        .args(["bases", "refresh", "--check", "--lock", lock])
        .args(extra)
        .env(
            "STACK_REGISTRY_POLICY",
            "connect=1s,read=1s,operation=4s,attempts=2,backoff=50ms",
        )
        .output()
        .expect("running the xtask binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_reports_exactly_the_line_whose_base_moved() -> anyhow::Result<()> {
    let mut registry = Registry::start()?;
    let source = format!("{}/fixtures/php-standin", registry.host());
    let first = push_bases(&source, "1")?;
    let (dir, lock_path) = refresh_new_lock(&source);
    let lock_arg = lock_path.display().to_string();
    let lock = BaseLock::load(&lock_path)?;
    assert_eq!(
        lock.lines[&PhpLine::new(8, 4)].php_version.as_deref(),
        Some("8.4.1"),
        "the lock records the version the config states"
    );

    // The check reads the registry in process: with a tripwire for docker on PATH, docker is never called.
    let (tripwire, marker) = crate::tripwire_path();
    let output = xtask_command()
        .args(["bases", "refresh", "--check", "--lock", &lock_arg])
        .env("PATH", tripwire.path())
        .output()?;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!marker.exists(), "bases refresh --check called docker");

    // Nothing moved: exit 0, and the end-of-life line is listed apart, not read.
    let (code, stdout, stderr) = check(&lock_arg, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("every base is as {source} pins it\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("  PHP 8.1  {}  PHP 8.1 is end of life", first[0])),
        "{stdout}"
    );

    // Upstream rebuilds 8.4 on a new patch release: exactly that line, old and new, and the lock is untouched.
    let moved = fixtures::push_busybox(
        &format!("{source}:8.4-fpm-alpine"),
        "ENV PHP_VERSION=8.4.2\n",
        false,
    )?;
    let before = std::fs::read_to_string(&lock_path)?;
    let body = dir.path().join("body.md");
    let body_arg = body.display().to_string();
    let (code, stdout, stderr) = check(&lock_arg, &["--markdown", &body_arg]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "changed since the lock was read:\n  PHP 8.4  {source}:8.4-fpm-alpine\n    - {}  8.4.1\n    + {moved}  8.4.2\n\
             unchanged: 8.2, 8.3, 8.5\n\
             end of life, not read (their pins stay; --include-eol reads them):\n  PHP 8.1  {}  PHP 8.1 is end of life \
             (security support ended 2025-12-31); its upstream base image is no longer rebuilt\n",
            first[3], first[0]
        )
    );
    assert!(
        stderr.contains("the base of PHP 8.4 moved since"),
        "{stderr}"
    );
    assert!(
        stderr.contains("run `cargo xtask bases refresh --lock"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&lock_path)?,
        before,
        "--check writes no lock"
    );
    let body = std::fs::read_to_string(&body)?;
    assert!(
        body.contains(&format!(
            "| 8.4 | `8.4-fpm-alpine` | `{}` | `{moved}` | 8.4.1 | 8.4.2 |",
            first[3]
        )),
        "{body}"
    );

    // An end-of-life base that moves is reported only when asked for.
    let eol_moved = fixtures::push_busybox(
        &format!("{source}:8.1-fpm-alpine"),
        "ENV PHP_VERSION=8.1.34\n",
        false,
    )?;
    let (code, stdout, _) = check(&lock_arg, &[]);
    assert_eq!(code, Some(1));
    assert!(!stdout.contains(&eol_moved), "{stdout}");
    let (code, stdout, _) = check(&lock_arg, &["--include-eol"]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains(&format!("    + {eol_moved}  8.1.34")),
        "{stdout}"
    );

    // The refresh pins 8.4 and keeps 8.1's pin; then the check is quiet again.
    assert_ok(&xtask(&["bases", "refresh", "--lock", &lock_arg]));
    let lock = BaseLock::load(&lock_path)?;
    assert_eq!(lock.lines[&PhpLine::new(8, 4)].digest.as_str(), moved);
    assert_eq!(lock.lines[&PhpLine::new(8, 1)].digest.as_str(), first[0]);
    let (code, stdout, stderr) = check(&lock_arg, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // A registry that cannot be read is neither "nothing moved" nor "something moved".
    registry.stop();
    let (code, stdout, stderr) = check(&lock_arg, &[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("reading the base of PHP 8.2"), "{stderr}");
    Ok(())
}

#[test]
fn check_of_a_stalled_registry_ends_within_the_policy_and_says_so() -> anyhow::Result<()> {
    use testkit::faults::{Fault, FaultProxy, RequestKind};
    let registry = Registry::start()?;
    let proxy = FaultProxy::in_front_of(&registry)?;
    let source = proxy.namespace("fixtures/php-standin");
    push_bases(&format!("{}/fixtures/php-standin", registry.host()), "1")?;
    let (_dir, lock_path) = refresh_new_lock(&source);
    let lock_arg = lock_path.display().to_string();

    // A registry that accepts the connection and never answers: the read timeout ends each attempt, the policy
    // bounds the whole, and the check says it could not read rather than "nothing moved".
    for kind in [RequestKind::ManifestGet, RequestKind::ManifestHead] {
        proxy.set(kind, Fault::Stall);
    }
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = check(&lock_arg, &[]);
    let took = started.elapsed();
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("reading the base of PHP 8.2"), "{stderr}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "a stalled registry held the check for {took:?}"
    );
    Ok(())
}
