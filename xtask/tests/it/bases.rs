//! `cargo xtask bases refresh` against a real registry on loopback holding stand-ins for Docker Hub's `php`
//! bases (which cannot be pulled here): the lock records exactly the digests the registry serves.

use crate::xtask;

use stack_images::{BaseLock, PhpLine};
use testkit::{fixtures, Registry};

const LINES: [&str; 5] = ["8.1", "8.2", "8.3", "8.4", "8.5"];

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

    let dir = tempfile::tempdir()?;
    let lock_path = dir.path().join("standin.lock.toml");
    let lock_arg = lock_path.display().to_string();
    let output = xtask(&["bases", "refresh", "--source", &source, "--lock", &lock_arg]);
    assert!(
        output.status.success(),
        "refresh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lock = BaseLock::load(&lock_path)?;
    assert_eq!(lock.source.to_string(), source);
    for (line, digest) in LINES.iter().zip(&pushed) {
        let locked = &lock.lines[&line.parse::<PhpLine>()?];
        assert_eq!(locked.digest.as_str(), digest, "PHP {line}");
        assert_eq!(locked.tag.to_string(), format!("{line}-fpm-alpine"));
    }

    // A second refresh with nothing changed reports every line unchanged.
    let output = xtask(&["bases", "refresh", "--lock", &lock_arg]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("unchanged").count(), 5, "{stdout}");

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
        stderr.contains("reading the base of PHP 8.2") && stderr.contains("not found"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&lock_path)?, before);
    Ok(())
}
