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
