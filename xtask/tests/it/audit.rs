//! `cargo xtask audit` and `--repair` against real registries on 127.0.0.1, each behind a fault proxy that counts
//! the audit's requests: two real releases (v1.0.0 of one line, then v1.1.0 of five lines on two platforms, signed
//! with a key), then the drift the audit exists for, made directly in the registries (never through the proxies):
//! a pin overwritten in the mirror, a moving tag moved back to the older release's pin, a signature deleted from
//! one registry, a platform manifest deleted from both, and the mirror down. Each is reported as exactly that;
//! `--repair` puts back the first three, checked independently with skopeo, and every other tag in both
//! registries serves the very bytes it served before.

use std::process::Output;

use stack_images::{
    registry::{Policy, RegistryClient},
    Digest, ImageRef,
};
use testkit::RequestKind;

use crate::setup::{key_pair, notes, small_matrix, Keys, Setup, KEY_PASSWORD};

/// Short, so the mirror being down ends its checks in seconds.
const POLICY: &str =
    "connect=1s,read=2s,operation=10s,attempts=2,backoff=100ms,backoff-cap=200ms,retry-after-cap=1s";

/// v1.1.0's lines, 8.4 first: its default line.
const LINES: [&str; 5] = ["8.4", "8.1", "8.2", "8.3", "8.5"];

fn release(
    setup: &mut Setup,
    version: &str,
    published: &str,
    lines: &[&str],
    platforms: &[&str],
    keys: Option<&Keys>,
) {
    let dir = setup.dir.path().join(format!("matrix-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    setup.matrix = Some(small_matrix(&dir, lines, platforms).unwrap());
    let (signing, public) = match keys {
        Some(keys) => (
            format!("key:{}", keys.private.display()),
            keys.public.display().to_string(),
        ),
        None => ("none".to_owned(), String::new()),
    };
    let mut extra = vec!["--signing", signing.as_str()];
    if keys.is_some() {
        extra.extend(["--signing-public-key", public.as_str()]);
    }
    let args = setup.release_args(version, published, &extra);
    let output = setup
        .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .output()
        .unwrap();
    crate::setup::assert_ok(&output);
}

fn audit(setup: &Setup, keys: &Keys, extra: &[&str]) -> Output {
    let notes_dir = setup.notes_dir().display().to_string();
    let public = keys.public.display().to_string();
    let mut args = vec!["audit", "--notes-dir", &notes_dir, "--public-key", &public];
    args.extend(extra);
    setup
        .xtask_command(&args)
        .env("STACK_REGISTRY_POLICY", POLICY)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The lines of the audit's output that are findings (`kind: where (release): expected …, found …`).
fn findings(output: &Output) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(": expected "))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The registry behind the proxy a notes reference names: `127.0.0.1:P1/mirror/…` → `127.0.0.1:P2/mirror/…`.
fn direct(setup: &Setup, reference: &str) -> String {
    let (canonical, mirror) = setup.proxies();
    reference
        .replace(&canonical.host(), &setup.canonical.host())
        .replace(&mirror.host(), &setup.mirror.host())
}

fn reference(notes: &serde_json::Value, registry: &str, tag: &str) -> serde_json::Value {
    notes["references"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == tag && r["registry"].as_str().unwrap().ends_with(registry))
        .unwrap_or_else(|| panic!("the notes record no {tag} in {registry}"))
        .clone()
}

#[test]
fn audit_reports_each_drift_as_it_is_and_repair_puts_back_what_verified_bytes_allow(
) -> anyhow::Result<()> {
    let mut setup = Setup::behind_proxies(&LINES)?;
    let keys = key_pair();
    release(&mut setup, "v1.0.0", "", &["8.4"], &["linux/amd64"], None);
    release(
        &mut setup,
        "v1.1.0",
        "v1.0.0",
        &LINES,
        &["linux/amd64", "linux/arm64"],
        Some(&keys),
    );
    let new = notes(&setup.notes_dir(), "v1.1.0");
    let old = notes(&setup.notes_dir(), "v1.0.0");

    // Clean: every check holds, at a bounded number of requests, HEADs only.
    let (canonical_proxy, mirror_proxy) = setup.proxies();
    let mirror_host = mirror_proxy.host();
    let count = || {
        [canonical_proxy, mirror_proxy].map(|p| {
            (
                p.requests().len(),
                p.count(RequestKind::ManifestHead),
                p.count(RequestKind::ManifestGet),
            )
        })
    };
    let before = count();
    let started = std::time::Instant::now();
    let clean = audit(&setup, &keys, &["--signatures", "digest"]);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    let after = count();
    // Per registry: 14 tags (v1.1.0's 5 pins and 7 moving tags, v1.0.0's pin and its `v1.0.0`: its other moving
    // tags are v1.1.0's now), 22 child manifests (2 platforms × image and attestation × 5 lines, and v1.0.0's
    // 1 × 2), 5 signatures: one HEAD each, nothing read whole.
    let heads = 14 + 22 + 5;
    for (registry, (before, after)) in ["canonical", "mirror"]
        .iter()
        .zip(before.iter().zip(&after))
    {
        let requests = after.0 - before.0;
        eprintln!("audit, 6 pins (5 lines) × 2 registries, {registry}: {requests} requests, {} HEAD, {} GET", after.1 - before.1, after.2 - before.2);
        // The mirror wants a login: its first HEAD is answered with a challenge, then sent again.
        assert!(
            (heads..=heads + 1).contains(&(after.1 - before.1)),
            "{registry}"
        );
        assert_eq!(
            after.2 - before.2,
            0,
            "{registry}: a manifest was read whole"
        );
        assert!(requests <= heads + 2, "{registry}: {requests} requests");
    }
    eprintln!("audit with signatures by digest: {seconds:.2} s for the process");
    assert!(
        String::from_utf8_lossy(&clean.stdout).contains("82 checks, 82 hold, 0 drifted"),
        "{}",
        text(&clean)
    );
    // With cosign verifying each signature against the public key.
    let started = std::time::Instant::now();
    let verified = audit(&setup, &keys, &[]);
    eprintln!(
        "with cosign verify: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));

    // The mirror down: could not check, exit 2, and no drift.
    setup.mirror.stop();
    let down = audit(&setup, &keys, &["--signatures", "digest"]);
    setup.mirror.resume()?;
    assert_eq!(down.status.code(), Some(2), "{}", text(&down));
    let lines = findings(&down);
    assert_eq!(lines.len(), 41, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.starts_with("could not check: ")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l.contains(&format!("{mirror_host}/"))),
        "{lines:#?}"
    );
    assert!(String::from_utf8_lossy(&down.stdout)
        .contains("41 hold, 0 drifted, 41 could not be checked"));

    let tags_before = setup.all_tags();
    let client =
        RegistryClient::new(Policy::default()).with_docker_config(setup.docker_config.path());
    let parse = |text: &str| -> ImageRef { text.parse().unwrap() };
    let digest = |value: &serde_json::Value| Digest::parse(value.as_str().unwrap()).unwrap();

    // 1. The mirror's 8.2 pin overwritten with the 8.1 image (a mistaken re-tag).
    let pin81 = reference(&new, "mirror", "v1.1.0-php-8.1");
    let pin82 = reference(&new, "mirror", "v1.1.0-php-8.2");
    let mirror_repo = parse(&direct(&setup, pin82["ref"].as_str().unwrap()))
        .repository()
        .clone();
    client.copy(
        &mirror_repo.at(&digest(&pin81["digest"])),
        &parse(&direct(&setup, pin82["ref"].as_str().unwrap())),
    )?;
    // 2. The canonical php-8.4 moved back to v1.0.0's pin.
    let old84 = reference(&old, "stack", "v1.0.0-php-8.4");
    let line84 = reference(&new, "stack", "php-8.4");
    let canonical_repo = parse(&direct(&setup, line84["ref"].as_str().unwrap()))
        .repository()
        .clone();
    client.copy(
        &canonical_repo.at(&digest(&old84["digest"])),
        &parse(&direct(&setup, line84["ref"].as_str().unwrap())),
    )?;
    // 3. The canonical 8.3 pin's signature deleted.
    let pin83 = reference(&new, "stack", "v1.1.0-php-8.3");
    let signature = digest(&pin83["signature"]["digest"]);
    client.delete_manifest(&canonical_repo.at(&signature))?;
    // 4. The 8.5 pin's arm64 image deleted from both registries: no verified copy is left anywhere.
    let pin85 = reference(&new, "stack", "v1.1.0-php-8.5");
    let arm64 = pin85["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            new["images"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["php"] == "8.5")
                .flat_map(|i| i["platforms"].as_array().unwrap()),
        )
        .find(|p| p["platform"] == "linux/arm64")
        .map(|p| digest(&p["digest"]))
        .expect("the 8.5 pin has an arm64 image");
    for repository in [&canonical_repo, &mirror_repo] {
        client.delete_manifest(&repository.at(&arm64))?;
    }
    let tags_drifted = setup.all_tags();

    let drifted = audit(&setup, &keys, &["--signatures", "digest"]);
    assert_eq!(drifted.status.code(), Some(1), "{}", text(&drifted));
    eprintln!("{}", text(&drifted));
    let lines = findings(&drifted);
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "manifest missing",
            "manifest missing",
            "moving tag moved",
            "pin overwritten",
            "signature missing"
        ],
        "{lines:#?}"
    );
    let pin81_digest = pin81["digest"].as_str().unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "pin overwritten: {} (v1.1.0)",
            pin82["ref"].as_str().unwrap()
        )) && l
            .contains(&format!("found {pin81_digest} (the pin v1.1.0-php-8.1)"))),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "moving tag moved: {} (v1.1.0)",
            line84["ref"].as_str().unwrap()
        )) && l.contains("(the pin v1.0.0-php-8.4)")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "signature missing: {} (v1.1.0)",
            pin83["ref"].as_str().unwrap()
        ))),
        "{lines:#?}"
    );

    // --json says the same.
    let json = audit(&setup, &keys, &["--signatures", "digest", "--json"]);
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(report["drifted"], 5, "{report:#}");
    assert_eq!(report["findings"].as_array().unwrap().len(), 5);

    // A dry run changes nothing.
    let dry = audit(
        &setup,
        &keys,
        &["--signatures", "digest", "--repair", "--dry-run"],
    );
    assert_eq!(dry.status.code(), Some(1), "{}", text(&dry));
    let out = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(out.matches("would put ").count(), 3, "{out}");
    assert_eq!(
        out.matches("cannot repair manifest missing").count(),
        2,
        "{out}"
    );
    assert_eq!(setup.all_tags(), tags_drifted, "the dry run changed a tag");

    // The repair puts the first three back, and only them.
    let repaired = audit(&setup, &keys, &["--signatures", "digest", "--repair"]);
    assert_eq!(repaired.status.code(), Some(1), "{}", text(&repaired));
    eprintln!("{}", text(&repaired));
    let out = String::from_utf8_lossy(&repaired.stdout);
    assert_eq!(out.matches("repaired: ").count(), 3, "{out}");
    assert!(
        out.contains("republish the line (`cargo xtask republish v1.1.0 --lines 8.5"),
        "{out}"
    );
    for (entry, registry) in [(&pin82, "mirror"), (&line84, "stack")] {
        let name = direct(&setup, entry["ref"].as_str().unwrap());
        assert_eq!(
            setup.skopeo_digest(&name).map(|d| d.to_string()).as_deref(),
            entry["digest"].as_str(),
            "{registry} {name}"
        );
    }
    let sig_tag = format!(
        "{}:sha256-{}.sig",
        canonical_repo,
        pin83["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    assert_eq!(setup.skopeo_digest(&sig_tag), Some(signature));
    assert_eq!(
        setup.all_tags(),
        tags_before,
        "every tag serves what it served before the drift"
    );

    // What is left is what could not be repaired.
    let after = audit(&setup, &keys, &["--signatures", "digest"]);
    assert_eq!(after.status.code(), Some(1));
    let lines = findings(&after);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("manifest missing: ") && l.contains(arm64.as_str())),
        "{lines:#?}"
    );
    Ok(())
}
