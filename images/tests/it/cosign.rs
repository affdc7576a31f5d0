//! The cosign door against real cosign and a real registry: a key pair made in a temp dir (its password in the
//! child's environment only), a pushed fixture signed by digest, verified with the public key; an unsigned image,
//! another key and a wrong password each fail with their own [`Failure`], and nothing prints the password.

use stack_images::{
    cosign::{Cosign, CosignCommand, Failure, KeyRef, Signer, Subject, Verifier},
    Digest, ImageRef,
};
use testkit::{fixtures, Registry};

#[test]
fn signed_by_digest_verified_with_the_public_key() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let keys = tempfile::tempdir()?;
    let password = "correct horse battery";
    let cosign = Cosign::new().with_password(password);
    cosign.run(&CosignCommand::generate_key_pair(
        &keys.path().join("release"),
    )?)?;
    let other = Cosign::new().with_password("another one");
    other.run(&CosignCommand::generate_key_pair(
        &keys.path().join("other"),
    )?)?;

    let repository = format!("{}/cosign/php-fpm", registry.namespace("it"));
    let mut images = Vec::new();
    for n in 1..=2 {
        let tag = format!("{repository}:{n}");
        let digest = fixtures::push_busybox(&tag, &format!("LABEL n={n}\n"), false)?;
        images.push(format!("{repository}@{}", Digest::parse(&digest)?).parse::<ImageRef>()?);
    }
    let (signed, unsigned) = (&images[0], &images[1]);
    let key = Signer::Key(KeyRef::File(keys.path().join("release.key")));
    cosign.run(&CosignCommand::sign(&key, Subject::Image(signed))?)?;

    let public = Verifier::Key(keys.path().join("release.pub"));
    let payload = cosign.output(&CosignCommand::verify(&public, Subject::Image(signed))?)?;
    assert!(
        String::from_utf8_lossy(&payload).contains(signed.digest().unwrap().as_str()),
        "the verified payload names the digest"
    );

    let failure = |cosign: &Cosign, command| cosign.run(&command).unwrap_err();
    let error = failure(
        &cosign,
        CosignCommand::verify(&public, Subject::Image(unsigned))?,
    );
    assert_eq!(error.failure, Failure::NoSignature, "{error}");
    let wrong_key = Verifier::Key(keys.path().join("other.pub"));
    let error = failure(
        &cosign,
        CosignCommand::verify(&wrong_key, Subject::Image(signed))?,
    );
    assert_eq!(error.failure, Failure::NotVerified, "{error}");

    let wrong_password = Cosign::new().with_password("not the password");
    let error = failure(
        &wrong_password,
        CosignCommand::sign(&key, Subject::Image(unsigned))?,
    );
    assert_eq!(error.failure, Failure::Key, "{error}");
    assert!(!error.to_string().contains("not the password"), "{error}");
    let error = failure(
        &cosign,
        CosignCommand::verify(&public, Subject::Image(unsigned))?,
    );
    assert_eq!(
        error.failure,
        Failure::NoSignature,
        "a failed signing left no signature"
    );
    Ok(())
}

#[test]
fn a_registry_that_accepts_and_never_answers_ends_cosign_within_the_policy() -> anyhow::Result<()> {
    use stack_images::registry::Policy;
    use std::time::{Duration, Instant};
    use testkit::{Fault, FaultProxy, RequestKind};

    let registry = Registry::start()?;
    let proxy = FaultProxy::in_front_of(&registry)?;
    let tag = format!("{}/cosign/php-fpm:stalled", registry.namespace("it"));
    let digest = fixtures::push_busybox(&tag, "LABEL stalled=1\n", false)?;
    let image: ImageRef = format!(
        "{}/cosign/php-fpm@{}",
        proxy.namespace("it"),
        Digest::parse(&digest)?
    )
    .parse()?;
    for kind in [
        RequestKind::Ping,
        RequestKind::ManifestGet,
        RequestKind::ManifestHead,
        RequestKind::TagsList,
    ] {
        proxy.set(kind, Fault::Stall);
    }
    let policy = Policy {
        operation_timeout: Duration::from_secs(5),
        attempts: 2,
        backoff_base: Duration::from_millis(100),
        ..Policy::default()
    };
    let keys = tempfile::tempdir()?;
    Cosign::new()
        .with_password("pw")
        .run(&CosignCommand::generate_key_pair(&keys.path().join("k"))?)?;
    let public = Verifier::Key(keys.path().join("k.pub"));
    let cosign = Cosign::new().with_policy(policy);
    let started = Instant::now();
    let error = cosign
        .run(&CosignCommand::verify(&public, Subject::Image(&image))?)
        .unwrap_err();
    let took = started.elapsed();
    // Two attempts of at most 5 s each, and the wait between them: never cosign's own minutes.
    assert!(
        took < Duration::from_secs(30),
        "cosign ran for {took:?}: {error}"
    );
    assert!(
        matches!(error.failure, Failure::TimedOut | Failure::Registry(_)),
        "a stalled registry is not a verdict on the signature: {error}"
    );
    Ok(())
}
