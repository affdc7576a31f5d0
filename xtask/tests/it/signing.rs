//! Signed releases against real registries and real cosign: a key pair made in a temp dir (its password only in
//! the children's environment), a one-line release signed with it, and `cosign verify --key` run independently
//! against each registry itself. A release whose signing fails, or whose mirror loses the signature, stops before
//! the tag phase: no moving tag exists anywhere, the pins stay as they were, and `--resume` finishes the job.

use std::process::Command;

use testkit::{fixtures, Fault, RequestKind};

use crate::setup::{assert_ok, digest_apart, key_pair, notes, Keys, Setup, KEY_PASSWORD};

const VERSION: &str = "v3.0.0";
/// Short, so a fault the release must not retry through ends it in seconds.
const POLICY: &str = "connect=1s,read=2s,operation=20s,attempts=2,backoff=100ms,backoff-cap=200ms,retry-after-cap=1s";

/// A release of the one-line matrix signed with `keys`, `password` in its environment.
fn release(setup: &Setup, keys: &Keys, password: &str, extra: &[&str]) -> std::process::Output {
    let signing = format!("key:{}", keys.private.display());
    let public = keys.public.display().to_string();
    let mut flags = vec!["--signing", &signing, "--signing-public-key", &public];
    flags.extend(extra);
    let args = setup.release_args(VERSION, "", &flags);
    setup
        .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("COSIGN_PASSWORD", password)
        .env("STACK_REGISTRY_POLICY", POLICY)
        .output()
        .expect("running the release")
}

/// `cosign verify --key` against the registry itself (not the proxy), with the test's logins.
fn verify(setup: &Setup, keys: &Keys, image: &str) -> std::process::Output {
    Command::new("cosign")
        .arg("verify")
        .arg(format!("--key={}", keys.public.display()))
        .args([
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--",
            image,
        ])
        .env("DOCKER_CONFIG", setup.docker_config.path())
        .env_remove("COSIGN_PASSWORD")
        .output()
        .expect("cosign is installed by `make setup`")
}

fn pin_digest(setup: &Setup, namespace: &str) -> Option<String> {
    setup
        .skopeo_digest(&format!("{namespace}/php-fpm:{VERSION}-php-8.5"))
        .map(|d| d.to_string())
}

/// No moving tag exists in either registry.
#[track_caller]
fn no_moving_tag(setup: &Setup) {
    for namespace in [setup.canonical_ns(), setup.mirror_ns()] {
        for tag in [VERSION, "php-8.5", "latest"] {
            let reference = format!("{namespace}/php-fpm:{tag}");
            assert_eq!(
                setup.skopeo_digest(&reference),
                None,
                "{reference} was moved"
            );
        }
    }
}

#[test]
fn a_signed_release_verifies_in_both_registries_and_an_unsigned_pin_does_not() -> anyhow::Result<()>
{
    let setup = Setup::behind_proxies(&["8.5"])?;
    let keys = key_pair();
    let output = release(&setup, &keys, KEY_PASSWORD, &[]);
    let summary = assert_ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(KEY_PASSWORD) && !summary.contains(KEY_PASSWORD));

    let notes = notes(&setup.notes_dir(), VERSION);
    assert_eq!(notes["signing"]["mode"], "key");
    let canonical_pin = pin_digest(&setup, &setup.canonical_ns()).expect("the pin was pushed");
    let mut signatures = Vec::new();
    for namespace in [setup.canonical_ns(), setup.mirror_ns()] {
        let image = format!("{namespace}/php-fpm@{canonical_pin}");
        let verified = verify(&setup, &keys, &image);
        assert!(
            verified.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
        // The notes name the release's registries (the proxies); the registries behind them hold the same.
        let entry = notes["references"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["kind"] == "pin"
                    && r["registry"]
                        .as_str()
                        .unwrap()
                        .ends_with(namespace.rsplit('/').next().unwrap())
            })
            .expect("each registry's pin is recorded")
            .clone();
        let command = entry["signature"]["verify"].as_str().unwrap();
        assert!(
            command.starts_with("cosign verify --key=release.pub --insecure-ignore-tlog=true")
                && command.ends_with(&format!("/php-fpm@{canonical_pin}")),
            "{command}"
        );
        signatures.push(entry["signature"]["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        signatures[0], signatures[1],
        "one signature, copied byte for byte"
    );
    // The signature is all that is copied: one `.sig` tag per registry, no other tag named after a digest.
    let tags: Vec<String> = setup.all_tags().into_iter().map(|(r, _)| r).collect();
    let by_digest: Vec<&String> = tags.iter().filter(|t| t.contains(":sha256-")).collect();
    assert_eq!(by_digest.len(), 2, "{tags:#?}");
    assert!(by_digest.iter().all(|t| t.ends_with(".sig")), "{tags:#?}");

    // The dry run lists what the signed run did: the same cosign commands and signature reads, digests apart.
    let dry = assert_ok(&release(&setup, &keys, KEY_PASSWORD, &["--dry-run"]));
    let journal = std::fs::read_to_string(setup.work_dir(VERSION).join("commands.log"))?;
    let normalise = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("cosign ") || l.contains("signature"))
            .map(digest_apart)
            .collect();
        lines.sort();
        lines
    };
    let signing = normalise(&journal);
    // The key checked; the pin verified (no signature yet), signed; the signature copied; verified and read in 2
    // registries.
    assert_eq!(signing.len(), 1 + 2 + 1 + 2 * 2, "{signing:#?}");
    assert_eq!(
        normalise(&dry),
        signing,
        "--dry-run lists the signing the release did"
    );

    // An image pushed under a pin tag by someone without the key: it does not verify.
    let forged = format!("{}/php-fpm:v3.0.1-php-8.5", setup.canonical_ns());
    let digest = fixtures::push_busybox(&forged, "LABEL forged=yes\n", false)?;
    let image = format!("{}/php-fpm@{digest}", setup.canonical_ns());
    let refused = verify(&setup, &keys, &image);
    assert!(!refused.status.success(), "an unsigned pin verified");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no signatures found"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    Ok(())
}

#[test]
fn a_release_whose_signing_fails_moves_no_tag() -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let keys = key_pair();

    // A wrong password is found before anything is built.
    let output = release(&setup, &keys, "not the password", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("preflight failed: nothing was changed"),
        "{stderr}"
    );
    assert!(stderr.contains("COSIGN_PASSWORD"), "{stderr}");
    assert!(!stderr.contains("not the password"), "{stderr}");
    assert_eq!(pin_digest(&setup, &setup.canonical_ns()), None);

    // A public key that is not the private key's pair, likewise.
    let other = key_pair();
    let mismatched = Keys {
        _dir: tempfile::tempdir()?,
        private: keys.private.clone(),
        public: other.public.clone(),
    };
    let output = release(&setup, &mismatched, KEY_PASSWORD, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not the pair of --signing-public-key"),
        "{stderr}"
    );

    // Keyless outside GitHub Actions: no OIDC token, so no signing; said before anything runs.
    let args = setup.release_args(VERSION, "", &["--signing", "keyless"]);
    let output = setup
        .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("preflight failed: nothing was changed")
            && stderr.contains("keyless signing needs GitHub Actions' OIDC token"),
        "{stderr}"
    );
    assert_eq!(pin_digest(&setup, &setup.canonical_ns()), None);

    // The canonical registry refuses the signature: the pins stay, no tag moves.
    let (canonical, _) = setup.proxies();
    canonical.set(
        RequestKind::ManifestPut,
        Fault::Status(403).matching(".sig"),
    );
    let output = release(&setup, &keys, KEY_PASSWORD, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sign failed: no moving tag was touched") && stderr.contains("--resume"),
        "{stderr}"
    );
    let pin = pin_digest(&setup, &setup.canonical_ns()).expect("the pin was pushed");
    assert_eq!(pin_digest(&setup, &setup.mirror_ns()), Some(pin.clone()));
    no_moving_tag(&setup);

    canonical.clear();
    assert_ok(&release(&setup, &keys, KEY_PASSWORD, &["--resume"]));
    assert_eq!(
        pin_digest(&setup, &setup.canonical_ns()),
        Some(pin.clone()),
        "the pin never changed"
    );
    let image = format!("{}/php-fpm@{pin}", setup.mirror_ns());
    assert!(verify(&setup, &keys, &image).status.success());
    Ok(())
}

#[test]
fn a_mirror_that_loses_the_signature_moves_no_tag() -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let keys = key_pair();
    let (_, mirror) = setup.proxies();
    mirror.set(
        RequestKind::ManifestGet,
        Fault::Status(404).matching(".sig"),
    );
    let output = release(&setup, &keys, KEY_PASSWORD, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("verify signatures failed: no moving tag was touched"),
        "{stderr}"
    );
    assert!(stderr.contains("has no signature there"), "{stderr}");
    no_moving_tag(&setup);

    mirror.clear();
    let resumed = release(&setup, &keys, KEY_PASSWORD, &["--resume"]);
    let summary = assert_ok(&resumed);
    // The canonical signature was kept, not added to: the one the mirror now holds is the first run's.
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("is signed already"),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(summary.contains("0 pins (1 signed already)"), "{summary}");
    let latest = format!("{}/php-fpm:latest", setup.mirror_ns());
    assert_eq!(
        setup.skopeo_digest(&latest).map(|d| d.to_string()),
        pin_digest(&setup, &setup.canonical_ns())
    );
    Ok(())
}
