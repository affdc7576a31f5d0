//! `VERIFY_SIGNATURE=true`: `20i pull` (and `20i start`, which acquires the image the same way) runs a pin only
//! when a cosign signature of its digest verifies with the release's key, pulled or cached; an unsigned pin, one
//! re-signed with another key, or a machine without cosign is refused with what to do, and nothing unverified is
//! left tagged for a later start. Keys and signatures are made here with the real cosign, through the door.

use std::path::{Path, PathBuf};

use stack_images::{
    cosign::{Cosign, CosignCommand, KeyRef, Signer, Subject},
    Digest, ImageRef,
};

use crate::harness::{forget_image, image_exists, reference, Site};

const PASSWORD: &str = "test-only-key-password";

/// A key pair `<dir>/<name>.key` and `.pub`; returns the private key's path.
fn key_pair(dir: &Path, name: &str) -> PathBuf {
    let prefix = dir.join(name);
    cosign()
        .run(&CosignCommand::generate_key_pair(&prefix).unwrap())
        .expect("cosign generate-key-pair");
    dir.join(format!("{name}.key"))
}

fn cosign() -> Cosign {
    Cosign::new().with_password(PASSWORD)
}

/// The PHP-FPM stand-in of `line`, one digest per line (signatures are per digest), pushed under the release's tag
/// scheme; its reference and index digest.
fn publish(namespace: &str, line: &str) -> (String, String) {
    let reference = reference(namespace, line);
    let lines = format!(
        "{}LABEL io.20i-stack.test-line={line}\n",
        testkit::stack::PHP_FPM_STANDIN_LINES
    );
    let digest =
        testkit::fixtures::push_busybox(&reference, &lines, false).expect("pushing the stand-in");
    forget_image(&reference);
    (reference, digest)
}

fn sign(key: &Path, reference: &str, digest: &str) {
    let image: ImageRef = reference.parse().unwrap();
    let image = image.with_digest(&Digest::parse(digest).unwrap());
    let command = CosignCommand::sign(
        &Signer::Key(KeyRef::File(key.to_owned())),
        Subject::Image(&image),
    )
    .unwrap();
    cosign().run(&command).expect("cosign sign");
}

#[test]
fn a_signed_pin_runs_and_an_unsigned_or_resigned_one_is_refused() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let keys = tempfile::tempdir().unwrap();
    let release_key = key_pair(keys.path(), "release");
    let other_key = key_pair(keys.path(), "other");
    let release_pub = keys.path().join("release.pub").display().to_string();
    let other_pub = keys.path().join("other.pub").display().to_string();

    let (signed, signed_digest) = publish(&namespace, "8.5");
    sign(&release_key, &signed, &signed_digest);
    let (unsigned, _) = publish(&namespace, "8.4");
    let (resigned, resigned_digest) = publish(&namespace, "8.3");
    sign(&other_key, &resigned, &resigned_digest);

    let mut site = Site::new("signature");
    site.set("IMAGE_REGISTRY", &namespace);
    site.set("ALLOW_LOCAL_BUILD_FALLBACK", "false");
    site.set("VERIFY_SIGNATURE", "true");
    site.set("SIGNATURE_KEY", &release_pub);
    site.cleanup_images
        .extend([signed.clone(), unsigned.clone(), resigned.clone()]);

    // Signed with the release's key: pulled, verified, run; cached next time, and verified again.
    let pulled = site.run(&["pull"], &[]).ok();
    pulled.expect_stdout(&format!("php-fpm  {signed} (pulled from {namespace})"));
    pulled.expect_stderr(&format!(
        "verified the signature of {signed}@{signed_digest}"
    ));
    let cached = site.run(&["pull"], &[]).ok();
    cached.expect_stdout(&format!("(cache (its signature read from {namespace}))"));
    cached.expect_stdout(&format!("verified the signature of {signed}"));

    // Not signed at all: refused, classified like a digest mismatch, and not left tagged.
    let refused = site.run(&["pull"], &[("PHP_VERSION", "8.4")]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    refused.expect_stderr(&format!("{unsigned} (sha256:"));
    refused.expect_stderr("has no signature that verifies with the key");
    refused.expect_stderr("(no signature): refused and removed, not run");
    assert!(!image_exists(&unsigned), "{unsigned} is still tagged");

    // Signed, but with another key: refused the same way; that key itself would accept it.
    let refused = site.run(&["pull"], &[("PHP_VERSION", "8.3")]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    refused.expect_stderr("(signature not verified): refused and removed, not run");
    assert!(!image_exists(&resigned), "{resigned} is still tagged");
    site.run(
        &["pull"],
        &[("PHP_VERSION", "8.3"), ("SIGNATURE_KEY", &other_pub)],
    )
    .ok();

    // A signed image already cached is refused too once the key no longer matches.
    let refused = site.run(&["pull"], &[("SIGNATURE_KEY", &other_pub)]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    refused.expect_stderr("(signature not verified)");

    // No cosign: said at once, whatever the fallback.
    let missing = site.run(
        &["pull"],
        &[
            ("COSIGN", "/nonexistent/cosign"),
            ("ALLOW_LOCAL_BUILD_FALLBACK", "true"),
            ("PHP_VERSION", "8.3"),
        ],
    );
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    missing.expect_stderr("VERIFY_SIGNATURE=true needs cosign: install it");

    // A key that is not there is the configuration's error: nothing is asked of docker.
    let no_key = site.run(&["pull"], &[("SIGNATURE_KEY", "/nonexistent/cosign.pub")]);
    assert_eq!(no_key.code, 2, "{}", no_key.stderr);
    no_key.expect_stderr(
        "SIGNATURE_KEY=\"/nonexistent/cosign.pub\" (from environment) does not exist",
    );
}
