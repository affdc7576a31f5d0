//! SBOMs and provenance, end to end: a release with SBOMs on runs the scanner stand-in
//! (testkit/standins/sbom-scanner) in BuildKit, and each platform image's attestation manifest, with both, is
//! found in both registries before any tag moves; a mirror that loses one moves no tag; a scanner that cannot be
//! used stops the release before it builds.

use std::process::Command;

use testkit::{sbom_scanner, Fault, RequestKind};

use crate::setup::{assert_ok, notes, Setup};

const VERSION: &str = "v4.0.0";
/// Short, so a release that meets a persistent 404 gives up in seconds.
const POLICY: &str = "connect=1s,read=5s,operation=30s,attempts=3,backoff=100ms,backoff-cap=500ms,retry-after-cap=3s";

/// The stand-in, pushed to the canonical registry itself (BuildKit pulls it from there, not through a proxy).
fn scanner(setup: &Setup) -> String {
    sbom_scanner::push(&setup.canonical.namespace("fixtures"))
        .expect("pushing the scanner stand-in")
}

/// A manifest's raw bytes as skopeo reads them from the registry itself, with the test's logins.
fn raw(setup: &Setup, reference: &str) -> Option<String> {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
        .arg(setup.docker_config.path().join("config.json"))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo is installed by `make setup`");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn release(setup: &Setup, extra: &[&str]) -> std::process::Output {
    let args = setup.release_args(VERSION, "", extra);
    setup
        .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("STACK_REGISTRY_POLICY", POLICY)
        .output()
        .expect("running the release")
}

#[test]
fn sbom_and_provenance_are_in_every_registry_and_the_notes() -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let scanner = scanner(&setup);
    let output = release(&setup, &["--sbom-scanner", &scanner]);
    assert_ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("4 attestation manifests verified (sbom + provenance each)"),
        "{stderr}"
    );

    let notes = notes(&setup.notes_dir(), VERSION);
    assert_eq!(notes["sbom_scanner"], scanner.as_str());
    let platforms = notes["images"][0]["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for platform in platforms {
        let attestation = platform["attestation"]
            .as_str()
            .expect("an attestation digest per platform");
        for namespace in [setup.canonical_ns(), setup.mirror_ns()] {
            let manifest = raw(&setup, &format!("{namespace}/php-fpm@{attestation}"))
                .unwrap_or_else(|| panic!("{attestation} is missing from {namespace}"));
            let predicates = stack_images::digest::predicate_types(manifest.as_bytes())?;
            assert_eq!(
                predicates,
                [
                    "https://spdx.dev/Document",
                    "https://slsa.dev/provenance/v0.2"
                ],
                "{namespace}"
            );
        }
    }
    let page = std::fs::read_to_string(setup.notes_dir().join(format!("{VERSION}.md")))?;
    assert!(page.contains("## SBOM and provenance"), "{page}");
    assert!(page.contains("--format '{{ json .SBOM }}'"), "{page}");

    // What the stand-in saw, read back the way the notes tell users to.
    let pin = format!("{}/php-fpm:{VERSION}-php-8.5", setup.canonical_ns());
    let sbom = Command::new("docker")
        .args([
            "buildx",
            "imagetools",
            "inspect",
            &pin,
            "--format",
            "{{ json .SBOM }}",
        ])
        .env("DOCKER_CONFIG", setup.docker_config.path())
        .output()?;
    let sbom = String::from_utf8_lossy(&sbom.stdout);
    assert!(
        sbom.contains("linux/amd64") && sbom.contains("linux/arm64"),
        "{sbom}"
    );
    assert!(sbom.contains("Tool: 20i-sbom-scanner-standin"), "{sbom}");
    Ok(())
}

#[test]
fn a_mirror_that_loses_an_attestation_manifest_moves_no_tag() -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let scanner = scanner(&setup);
    let (_, mirror) = setup.proxies();
    // Only the attestation check reads the mirror's manifests by digest (the pin is read by its tag).
    mirror.set(
        RequestKind::ManifestGet,
        Fault::Status(404).matching("/manifests/sha256:"),
    );
    let output = release(&setup, &["--sbom-scanner", &scanner]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is missing from")
            && stderr.contains("verify pins failed: no moving tag was touched"),
        "{stderr}"
    );
    let tags = setup.all_tags();
    let moved: Vec<&String> = tags
        .iter()
        .map(|(reference, _)| reference)
        .filter(|reference| !reference.ends_with(&format!(":{VERSION}-php-8.5")))
        .collect();
    assert!(moved.is_empty(), "tags moved: {moved:?}");

    mirror.clear();
    assert_ok(&release(&setup, &["--sbom-scanner", &scanner, "--resume"]));
    assert_eq!(
        setup.all_tags().len(),
        2 * 4,
        "pin, v4.0.0, php-8.5 and latest in both registries"
    );
    Ok(())
}

#[test]
fn an_unusable_scanner_stops_the_release_before_it_builds() -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let absent = format!(
        "{}/{}:{}@sha256:{}",
        setup.canonical.namespace("fixtures"),
        sbom_scanner::NAME,
        sbom_scanner::TAG,
        "0".repeat(64)
    );
    let output = release(&setup, &["--sbom-scanner", &absent]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for says in [
        format!("the SBOM scanner {absent} cannot be used"),
        "--no-sbom".to_owned(),
        "preflight failed: nothing was changed".to_owned(),
    ] {
        assert!(
            stderr.contains(&says),
            "the error does not say `{says}`:\n{stderr}"
        );
    }
    assert!(
        !setup.work_dir(VERSION).join("bake.json").exists(),
        "it built"
    );
    assert!(setup.all_tags().is_empty(), "{:?}", setup.all_tags());

    let unpinned = setup.release_args(VERSION, "", &["--sbom-scanner", "127.0.0.1:1/x/scanner:1"]);
    let output = setup.xtask(&unpinned.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--sbom-scanner 127.0.0.1:1/x/scanner:1 is not pinned by digest"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_pin_built_without_sbom_is_never_tagged_by_a_release_that_promises_one() -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let scanner = scanner(&setup);
    let (_, mirror) = setup.proxies();
    // Built and pushed without an SBOM, then stopped by the mirror before any tag moved.
    mirror.set(RequestKind::ManifestPut, Fault::Status(500));
    let first = release(&setup, &[]);
    assert_eq!(
        first.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    mirror.clear();

    // Resumed with SBOMs on: the kept pin has provenance only, so nothing moves.
    let resumed = release(&setup, &["--sbom-scanner", &scanner, "--resume"]);
    let stderr = String::from_utf8_lossy(&resumed.stderr).into_owned();
    assert_eq!(resumed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds no sbom (it holds https://slsa.dev/provenance/v0.2)")
            && stderr.contains("verify pins failed: no moving tag was touched"),
        "{stderr}"
    );
    let tags = setup.all_tags();
    assert!(
        tags.iter()
            .all(|(reference, _)| reference.ends_with(&format!(":{VERSION}-php-8.5"))),
        "tags moved: {tags:?}"
    );
    Ok(())
}
