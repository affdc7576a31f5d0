//! `cargo xtask release` for real: 5 PHP lines × 2 platforms built from stand-in bases (Docker Hub's `php`
//! cannot be pulled here), pushed to a canonical registry and copied to a mirror that wants a login, both
//! `distribution` registries on 127.0.0.1; checked independently with skopeo.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use stack_images::Digest;
use testkit::fixtures;

use crate::setup::{
    assert_ok, digest_apart, manifest_puts, notes, recorded, with_flag, Setup, LINES, PASSWORD,
};

#[test]
fn full_release_to_two_registries_then_older_patch_and_prerelease() -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let summary = assert_ok(&setup.release("v2.0.0", "v1.0.0", &[]));
    assert!(summary.contains("v2.0.0 of php-fpm: done"), "{summary}");
    // Verifying a moved tag needs only its digest: counted at each registry, a HEAD after the tag's PUT and never a
    // manifest GET (Docker Hub counts GETs against the pull limit, not HEADs).
    for registry in [&setup.canonical, &setup.mirror] {
        let log = registry.log();
        let lines: Vec<&str> = log.lines().collect();
        for tag in ["latest", "v2.0.0", "php-8.5"] {
            let path = format!("/php-fpm/manifests/{tag} HTTP");
            let request = |method: &str, line: &&str| {
                line.contains(&format!("\"{method} /v2/")) && line.contains(&path)
            };
            let put = lines
                .iter()
                .position(|l| request("PUT", l))
                .unwrap_or_else(|| panic!("{tag} was moved on {}", registry.host()));
            let after = &lines[put..];
            assert_eq!(
                after.iter().filter(|l| request("GET", l)).count(),
                0,
                "{tag} on {} was read with GET after it moved",
                registry.host()
            );
            assert!(
                after.iter().any(|l| request("HEAD", l)),
                "{tag} on {} was verified with HEAD",
                registry.host()
            );
        }
    }

    // Each line's build cache sits next to the images, for the next release to start from.
    let caches = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/php-fpm-cache", setup.canonical_ns()))
        .output()?;
    let caches = String::from_utf8_lossy(&caches.stdout);
    for line in LINES {
        assert!(
            caches.contains(&format!("\"php-{line}\"")),
            "no build cache of PHP {line}: {caches}"
        );
    }

    // Every reference in the JSON serves, to skopeo, exactly the digest recorded, in both registries.
    let v2 = notes(&setup.notes_dir(), "v2.0.0");
    let references = v2["references"].as_array().unwrap();
    assert_eq!(
        references.len(),
        2 * (5 + 1 + 5 + 1),
        "pins, v2.0.0, php-M.m and latest in 2 registries"
    );
    for reference in references {
        let name = setup.assert_serves_recorded(reference);
        let platforms: Vec<&str> = reference["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["platform"].as_str().unwrap())
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{name}");
        assert!(reference["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["size"].as_u64().unwrap() > 500_000));
    }
    let pin = |ns: &str, version: &str, line: &str| {
        recorded(&v2, &format!("{ns}/php-fpm:{version}-php-{line}"))
    };
    for ns in [setup.canonical_ns(), setup.mirror_ns()] {
        for line in LINES {
            assert_eq!(
                pin(&ns, "v2.0.0", line),
                pin(&setup.canonical_ns(), "v2.0.0", line),
                "one digest everywhere"
            );
            assert_eq!(
                recorded(&v2, &format!("{ns}/php-fpm:php-{line}")),
                pin(&ns, "v2.0.0", line)
            );
        }
        assert_eq!(
            recorded(&v2, &format!("{ns}/php-fpm:latest")),
            pin(&ns, "v2.0.0", "8.5")
        );
        assert_eq!(
            recorded(&v2, &format!("{ns}/php-fpm:v2.0.0")),
            pin(&ns, "v2.0.0", "8.5")
        );
    }
    let page = std::fs::read_to_string(setup.notes_dir().join("v2.0.0.md"))?;
    assert!(
        page.contains("PHP 8.1: PHP 8.1 is end of life"),
        "the page says which lines are end of life"
    );

    // An older patch moves nothing: latest and php-M.m stay on v2.0.0, checked with skopeo.
    assert_ok(&setup.release("v1.9.5", "v1.0.0,v2.0.0", &[]));
    for ns in [setup.canonical_ns(), setup.mirror_ns()] {
        let latest = setup
            .skopeo_digest(&format!("{ns}/php-fpm:latest"))
            .unwrap();
        assert_eq!(Some(latest.to_string()), pin(&ns, "v2.0.0", "8.5"));
        let line = setup
            .skopeo_digest(&format!("{ns}/php-fpm:php-8.4"))
            .unwrap();
        assert_eq!(Some(line.to_string()), pin(&ns, "v2.0.0", "8.4"));
        let own = setup
            .skopeo_digest(&format!("{ns}/php-fpm:v1.9.5"))
            .unwrap();
        let v1 = notes(&setup.notes_dir(), "v1.9.5");
        assert_eq!(
            Some(own.to_string()),
            recorded(&v1, &format!("{ns}/php-fpm:v1.9.5-php-8.5"))
        );
    }

    // A prerelease gets only its own tags; and its dry run lists exactly what the real run does (in another order
    // within a phase, whose steps run concurrently).
    let dry = assert_ok(&setup.release("v2.1.0-rc.1", "v1.0.0,v1.9.5,v2.0.0", &["--dry-run"]));
    assert_ok(&setup.release("v2.1.0-rc.1", "v1.0.0,v1.9.5,v2.0.0", &[]));
    let journal = std::fs::read_to_string(setup.work_dir("v2.1.0-rc.1").join("commands.log"))?;
    // Digests are placeholders in the dry run; a retried command (a registry's transient 5xx) runs twice, and one
    // step's reads of several digests (each platform's attestation manifest) are one line once digests are
    // placeholders: the same set of commands, each counted once.
    let normalise = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(digest_apart).collect();
        lines.sort();
        lines.dedup();
        lines
    };
    assert_eq!(
        normalise(&dry),
        normalise(&journal),
        "--dry-run lists what the release does"
    );
    // Whatever the concurrency, every pin was read and verified before the first tag was written.
    let journal: Vec<&str> = journal.lines().collect();
    let last_pin_read = journal
        .iter()
        .rposition(|l| {
            (l.starts_with("registry GET manifest") || l.starts_with("registry HEAD manifest"))
                && l.contains(":v2.1.0-rc.1-php-")
        })
        .expect("pins are read");
    let first_put = journal
        .iter()
        .position(|l| l.starts_with("registry PUT manifest"))
        .expect("the release tag is moved");
    assert!(last_pin_read < first_put, "{journal:#?}");
    for ns in [setup.canonical_ns(), setup.mirror_ns()] {
        let latest = setup
            .skopeo_digest(&format!("{ns}/php-fpm:latest"))
            .unwrap();
        assert_eq!(
            Some(latest.to_string()),
            pin(&ns, "v2.0.0", "8.5"),
            "a prerelease never moves latest"
        );
        assert!(setup
            .skopeo_digest(&format!("{ns}/php-fpm:v2.1.0-rc.1-php-8.5"))
            .is_some());
    }
    Ok(())
}

#[test]
fn second_release_of_the_same_version_fails_and_changes_nothing() -> anyhow::Result<()> {
    let setup = Setup::new()?;
    assert_ok(&setup.release("v2.0.0", "v1.0.0", &[]));
    let before = setup.all_tags();
    let puts = (
        manifest_puts(&setup.canonical),
        manifest_puts(&setup.mirror),
    );
    let notes_before = std::fs::read_to_string(setup.notes_dir().join("v2.0.0.json"))?;

    let again = setup.release("v2.0.0", "v1.0.0", &[]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("already (partly) published; nothing was changed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--resume") && stderr.contains("cargo xtask republish v2.0.0"),
        "{stderr}"
    );

    assert_eq!(
        setup.all_tags(),
        before,
        "every tag in both registries serves what it served before"
    );
    assert_eq!(
        (
            manifest_puts(&setup.canonical),
            manifest_puts(&setup.mirror)
        ),
        puts,
        "nothing was pushed"
    );
    assert_eq!(
        std::fs::read_to_string(setup.notes_dir().join("v2.0.0.json"))?,
        notes_before
    );
    Ok(())
}

#[test]
fn two_releases_of_one_version_started_together_publish_the_first_ones_pins() -> anyhow::Result<()>
{
    let setup = Setup::new()?;
    let locks = tempfile::tempdir()?;
    let start = |work: &str| {
        let args = with_flag(
            setup.release_args("v2.0.0", "v1.0.0", &[]),
            "--work-dir",
            work,
        );
        setup
            .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .env("STACK_RELEASE_LOCK_DIR", locks.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting a release")
    };
    let first_work = setup.dir.path().join("work-first").display().to_string();
    let second_work = setup.dir.path().join("work-second").display().to_string();
    let first = start(&first_work);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = start(&second_work).wait_with_output();
    let first = first.wait_with_output()?;
    let second = second?;

    assert_ok(&first);
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another release of v2.0.0 to") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(
        !Path::new(&second_work).join("commands.log").exists(),
        "the second release ran no docker command"
    );
    // Every tag in both registries serves what the first release recorded.
    let notes = notes(&setup.notes_dir(), "v2.0.0");
    for (reference, digest) in setup.all_tags() {
        let recorded = recorded(&notes, &reference);
        assert_eq!(digest.map(|d| d.to_string()), recorded, "{reference}");
    }
    Ok(())
}

#[test]
fn release_interrupted_by_a_mirror_outage_moves_no_tag_and_resumes() -> anyhow::Result<()> {
    let mut setup = Setup::new()?;
    let args = setup.release_args("v2.0.0", "v1.0.0", &[]);
    let mut release = setup
        .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;

    // Stop the mirror as soon as the first pin lands there: the copies (or the checks) after it fail.
    let deadline = Instant::now() + Duration::from_secs(120);
    while manifest_puts(&setup.mirror) == 0 {
        assert!(
            Instant::now() < deadline,
            "the release never reached the mirror"
        );
        assert!(
            release.try_wait()?.is_none(),
            "the release ended before copying"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    setup.mirror.stop();
    let output = release.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the release succeeded without its mirror:\n{stderr}"
    );
    assert!(!stderr.contains(": move tags ("), "{stderr}");

    // No moving tag anywhere, and the canonical pins are all there.
    setup.mirror.resume()?;
    let tags = setup.all_tags();
    let moving: Vec<&String> = tags
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !r.contains("-php-"))
        .collect();
    assert!(
        moving.is_empty(),
        "moving tags after a failed release: {moving:?}"
    );
    let first_pins: Vec<(String, Option<Digest>)> = tags
        .iter()
        .filter(|(r, _)| r.starts_with(&setup.canonical_ns()))
        .cloned()
        .collect();
    assert_eq!(first_pins.len(), 5, "{tags:?}");

    // Without --resume it refuses; with it, it finishes on the same pins.
    assert!(!setup.release("v2.0.0", "v1.0.0", &[]).status.success());
    let summary = assert_ok(&setup.release("v2.0.0", "v1.0.0", &["--resume"]));
    assert!(
        summary.contains("kept      PHP 8.1, 8.2, 8.3, 8.4, 8.5"),
        "{summary}"
    );
    for (reference, digest) in &first_pins {
        assert_eq!(
            &setup.skopeo_digest(reference),
            digest,
            "{reference} kept its first digest"
        );
        let mirrored = reference.replace(&setup.canonical_ns(), &setup.mirror_ns());
        assert_eq!(&setup.skopeo_digest(&mirrored), digest, "{mirrored}");
    }
    let latest = setup.skopeo_digest(&format!("{}/php-fpm:latest", setup.mirror_ns()));
    let pin = setup.skopeo_digest(&format!("{}/php-fpm:v2.0.0-php-8.5", setup.canonical_ns()));
    assert_eq!(latest, pin);
    Ok(())
}

/// A base changes for one line: the check finds it, and a republish of that line moves exactly its pin and
/// its `php-M.m` tag in both registries; every other tag and digest is unchanged, and the new index says why.
#[test]
fn republish_of_one_line_moves_exactly_its_tags() -> anyhow::Result<()> {
    let setup = Setup::new()?;
    assert_ok(&setup.release("v2.0.0", "v1.0.0", &[]));
    let before = setup.all_tags();

    let source = format!("{}/fixtures/php-standin", setup.canonical.host());
    fixtures::push_busybox(
        &format!("{source}:8.3-fpm-alpine"),
        "LABEL stand-in-for=php:8.3-fpm-alpine rebuilt=1\n",
        false,
    )?;
    let lock = setup.lock().display().to_string();
    assert_ok(&setup.xtask(&["bases", "refresh", "--lock", &lock]));
    let reason = "the 8.3 base fixes CVE-2026-0001";
    let mut args = setup.release_args(
        "v2.0.0",
        "v1.0.0,v2.0.0",
        &["--lines", "8.3", "--reason", reason],
    );
    args[0] = "republish".to_owned();
    assert_ok(&setup.xtask(&args.iter().map(String::as_str).collect::<Vec<_>>()));

    let after = setup.all_tags();
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| {
            assert_eq!(b.0, a.0, "the same tags exist");
            b.1 != a.1
        })
        .map(|(b, _)| b.0.as_str())
        .collect();
    let expected: Vec<String> = [setup.canonical_ns(), setup.mirror_ns()]
        .iter()
        .flat_map(|ns| {
            [
                format!("{ns}/php-fpm:php-8.3"),
                format!("{ns}/php-fpm:v2.0.0-php-8.3"),
            ]
        })
        .collect();
    assert_eq!(
        changed, expected,
        "exactly the 8.3 pin and php-8.3 moved, in both registries"
    );

    let notes = notes(&setup.notes_dir(), "v2.0.0");
    let entry = &notes["republished"][0];
    assert_eq!(entry["lines"], serde_json::json!(["8.3"]));
    assert_eq!(entry["reason"], reason);
    assert_eq!(entry["changes"].as_array().map(Vec::len), Some(4));
    let pin = format!("{}/php-fpm:v2.0.0-php-8.3", setup.canonical_ns());
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{pin}"))
        .output()?;
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout)?;
    assert_eq!(
        index["annotations"]["io.20i-stack.republish.reason"],
        reason
    );
    assert!(index["annotations"]["io.20i-stack.republish.date"].is_string());
    let check = setup.xtask(&[
        "notes",
        "--check",
        "--notes-dir",
        &setup.notes_dir().display().to_string(),
    ]);
    assert_ok(&check);
    Ok(())
}

#[test]
fn republish_replaces_digests_keeps_the_old_ones_and_records_both() -> anyhow::Result<()> {
    let setup = Setup::new()?;
    assert_ok(&setup.release("v2.0.0", "v1.0.0", &[]));
    assert_ok(&setup.release("v2.1.0", "v1.0.0,v2.0.0", &[]));
    let before = notes(&setup.notes_dir(), "v2.0.0");

    // Upstream rebuilds its bases (a security fix): refresh the lock, then republish v2.0.0.
    let source = format!("{}/fixtures/php-standin", setup.canonical.host());
    for line in LINES {
        let reference = format!("{source}:{line}-fpm-alpine");
        fixtures::push_busybox(
            &reference,
            &format!("LABEL stand-in-for=php:{line}-fpm-alpine rebuilt=1\n"),
            false,
        )?;
    }
    let lock = setup.lock().display().to_string();
    assert_ok(&setup.xtask(&["bases", "refresh", "--lock", &lock]));
    let mut args = setup.release_args(
        "v2.0.0",
        "v1.0.0,v2.0.0,v2.1.0",
        &["--reason", "bases rebuilt for a libxml2 fix"],
    );
    args[0] = "republish".to_owned();
    let summary = assert_ok(&setup.xtask(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(summary.contains("old digests stay pullable"), "{summary}");

    let after = notes(&setup.notes_dir(), "v2.0.0");
    let v21 = notes(&setup.notes_dir(), "v2.1.0");
    for ns in [setup.canonical_ns(), setup.mirror_ns()] {
        for line in LINES {
            let pin = format!("{ns}/php-fpm:v2.0.0-php-{line}");
            let (old, new) = (
                recorded(&before, &pin).unwrap(),
                recorded(&after, &pin).unwrap(),
            );
            assert_ne!(old, new, "{pin} was rebuilt");
            assert_eq!(
                setup.skopeo_digest(&pin).map(|d| d.to_string()),
                Some(new.clone()),
                "{pin} serves the new digest"
            );
            let by_old_digest = format!("{ns}/php-fpm@{old}");
            assert_eq!(
                setup.skopeo_digest(&by_old_digest).map(|d| d.to_string()),
                Some(old.clone()),
                "old digest pullable"
            );
            // php-M.m belongs to v2.1.0, the newest stable: a republish of v2.0.0 leaves it alone.
            let line_tag = format!("{ns}/php-fpm:php-{line}");
            assert_eq!(
                setup.skopeo_digest(&line_tag).map(|d| d.to_string()),
                recorded(&v21, &line_tag)
            );
        }
        // v2.0.0 itself follows its default line's new pin.
        let release_tag = format!("{ns}/php-fpm:v2.0.0");
        let new_default = recorded(&after, &format!("{ns}/php-fpm:v2.0.0-php-8.5"));
        assert_eq!(
            setup.skopeo_digest(&release_tag).map(|d| d.to_string()),
            new_default
        );
    }

    let republished = &after["republished"][0];
    assert_eq!(republished["reason"], "bases rebuilt for a libxml2 fix");
    let changes = republished["changes"].as_array().unwrap();
    assert_eq!(
        changes.len(),
        2 * (5 + 1),
        "5 pins and v2.0.0 in 2 registries"
    );
    for change in changes {
        assert_eq!(
            Some(change["old"].as_str().unwrap().to_owned()),
            recorded(&before, change["ref"].as_str().unwrap())
        );
    }
    let page = std::fs::read_to_string(setup.notes_dir().join("v2.0.0.md"))?;
    assert!(
        page.contains("## Republished") && page.contains("bases rebuilt for a libxml2 fix"),
        "{page}"
    );
    Ok(())
}

#[test]
fn a_missing_login_is_reported_up_front_and_nothing_is_pushed() -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let puts = (
        manifest_puts(&setup.canonical),
        manifest_puts(&setup.mirror),
    );
    let no_logins = tempfile::tempdir()?;
    let args = setup.release_args("v2.0.0", "v1.0.0", &[]);
    let output = setup
        .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("DOCKER_CONFIG", no_logins.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("preflight failed"), "{stderr}");
    assert!(
        stderr.contains(&format!("run `docker login {}`", setup.mirror.host())),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD));
    assert_eq!(
        (
            manifest_puts(&setup.canonical),
            manifest_puts(&setup.mirror)
        ),
        puts,
        "nothing was pushed"
    );
    Ok(())
}

/// Replaces the value of `flag` in an argument list.
#[test]
fn a_release_split_across_platforms_merges_to_the_digests_of_a_single_machine_release(
) -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let dir = setup.dir.path();
    // Provenance records when and where it was built; without it, the images depend on their inputs only.
    let base = |namespace: &str, notes: &str, work: &str| {
        let args = setup.release_args("v2.0.0", "v1.0.0", &["--attestations", "none"]);
        let args = with_flag(
            args,
            "--registry",
            &format!("{}/{namespace}", setup.canonical.host()),
        );
        let args = with_flag(
            args,
            "--mirror",
            &format!("{}/{namespace}", setup.mirror.host()),
        );
        let args = with_flag(args, "--notes-dir", &dir.join(notes).display().to_string());
        with_flag(args, "--work-dir", &dir.join(work).display().to_string())
    };
    let run = |args: Vec<String>| {
        assert_ok(&setup.xtask(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };

    // Two runners, one per platform, then the merge.
    let mut files = Vec::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let file = dir
            .join(format!("digests-{}.json", platform.replace('/', "-")))
            .display()
            .to_string();
        let mut args = base(
            "split",
            "notes-split",
            &format!("work-{}", platform.replace('/', "-")),
        );
        args.extend([
            "--platform".to_owned(),
            platform.to_owned(),
            "--digests-file".to_owned(),
            file.clone(),
        ]);
        run(args);
        files.push(file);
    }
    let mut merge = base("split", "notes-split", "work-merge");
    merge.insert(1, "merge".to_owned());
    for file in &files {
        merge.extend(["--digests-file".to_owned(), file.clone()]);
    }
    run(merge);

    // The same inputs released on one machine.
    run(base("single", "notes-single", "work-single"));

    let split = notes(&dir.join("notes-split"), "v2.0.0");
    let single = notes(&dir.join("notes-single"), "v2.0.0");
    for (a, b) in split["images"]
        .as_array()
        .unwrap()
        .iter()
        .zip(single["images"].as_array().unwrap())
    {
        assert_eq!(a["php"], b["php"]);
        assert_eq!(
            a["digest"], b["digest"],
            "PHP {}: merged index = single-machine index",
            a["php"]
        );
        assert_eq!(a["platforms"], b["platforms"], "PHP {}", a["php"]);
        let platforms: Vec<&str> = a["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["platform"].as_str().unwrap())
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    }
    // And the merged pins are served as recorded, in both registries.
    for reference in split["references"].as_array().unwrap() {
        let served = setup
            .skopeo_digest(reference["ref"].as_str().unwrap())
            .map(|d| d.to_string());
        assert_eq!(served.as_deref(), reference["digest"].as_str());
    }
    Ok(())
}
