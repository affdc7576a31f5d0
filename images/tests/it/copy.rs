//! `RegistryClient::copy` between two real registries, straight and through the fault proxy: the copy has the
//! source's digest with every child (attestation manifests too), skips what the destination holds, mounts on the
//! same host, recovers from transient faults and never stores bytes that do not hash to their digest.

use std::time::Duration;

use stack_images::{docker::FailureKind, registry::RegistryClient, Digest, ImageRef, IndexSummary};
use testkit::{Fault, FaultProxy, Registry, RequestKind};

use crate::common::{client_with_logins, docker_config, push_fixture, quick};

/// The busybox fixture with attestations in `source`, and a fault proxy in front of an empty `destination`.
struct Setup {
    source: Registry,
    _destination: Registry,
    proxy: FaultProxy,
    client: RegistryClient,
    pushed: ImageRef,
    _no_logins: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let source = Registry::start().unwrap();
        let digest = push_fixture(&source, true);
        let destination = Registry::start().unwrap();
        let proxy = FaultProxy::in_front_of(&destination).unwrap();
        let no_logins = tempfile::tempdir().unwrap();
        let client = client_with_logins(no_logins.path());
        let pushed: ImageRef = format!("{}/fixture@{digest}", source.namespace("test"))
            .parse()
            .unwrap();
        Setup {
            source,
            _destination: destination,
            proxy,
            client,
            pushed,
            _no_logins: no_logins,
        }
    }

    fn to(&self, tag: &str) -> ImageRef {
        format!("{}/mirror:{tag}", self.proxy.namespace("test"))
            .parse()
            .unwrap()
    }

    /// Every manifest and blob of the copy is served by `to`'s registry, under the source's digests.
    #[track_caller]
    fn assert_complete(&self, to: &ImageRef) {
        let index = self.client.get_manifest(to).unwrap();
        assert_eq!(index.digest, *self.pushed.digest().unwrap());
        let summary = IndexSummary::parse(&index.bytes).unwrap();
        assert_eq!(summary.platforms.len(), 2, "{summary:?}");
        let children: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
        let children = children["manifests"].as_array().unwrap();
        assert!(
            children
                .iter()
                .any(|c| c["platform"]["architecture"] == "unknown"),
            "the attestation manifests are part of the copy: {children:?}"
        );
        for child in children {
            let digest = Digest::parse(child["digest"].as_str().unwrap()).unwrap();
            let manifest = self
                .client
                .get_manifest(&to.repository().at(&digest))
                .unwrap();
            let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
            let blobs =
                std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap());
            for blob in blobs {
                let digest = Digest::parse(blob["digest"].as_str().unwrap()).unwrap();
                self.client.get_blob(to.repository(), &digest).unwrap();
            }
        }
    }
}

#[test]
fn a_copy_has_the_same_digest_every_child_and_skips_what_is_there() {
    let setup = Setup::new();
    let to = setup.to("1");
    let copied = setup.client.copy(&setup.pushed, &to).unwrap();
    assert_eq!(copied.digest, *setup.pushed.digest().unwrap());
    // An index, two platform images, two attestation manifests.
    assert_eq!(copied.manifests, 5);
    assert!(copied.blobs_sent >= 4, "{copied:?}");
    assert_eq!((copied.blobs_present, copied.blobs_mounted), (0, 0));
    setup.assert_complete(&to);

    let again = setup.client.copy(&setup.pushed, &setup.to("2")).unwrap();
    assert_eq!(
        (again.blobs_sent, again.blobs_present),
        (0, copied.blobs_sent),
        "{again:?}"
    );

    // By digest: no tag, and the digest named must be the source's.
    let by_digest = setup
        .to("x")
        .repository()
        .at(setup.pushed.digest().unwrap());
    setup.client.copy(&setup.pushed, &by_digest).unwrap();
    let wrong = setup.to("x").repository().at(&Digest::of(b"other"));
    let error = setup.client.copy(&setup.pushed, &wrong).unwrap_err();
    assert_eq!(error.kind, FailureKind::DigestMismatch, "{error}");
}

#[test]
fn a_refused_mount_is_uploaded_instead() {
    let setup = Setup::new();
    let first = setup.to("1");
    setup.client.copy(&setup.pushed, &first).unwrap();
    for status in [403, 401] {
        let to: ImageRef = format!("{}/refused-{status}:1", setup.proxy.namespace("other"))
            .parse()
            .unwrap();
        setup.proxy.clear();
        setup.proxy.set(
            RequestKind::BlobUpload,
            Fault::Status(status).matching("mount="),
        );
        let to = to
            .repository()
            .tagged(&format!("s{status}").parse().unwrap());
        let copied = setup.client.copy(&first, &to).unwrap();
        assert!(
            setup.proxy.faulted(RequestKind::BlobUpload) >= 4,
            "{status}"
        );
        assert_eq!(copied.blobs_mounted, 0, "{copied:?}");
        assert!(copied.mounts_refused >= 4, "{copied:?}");
        assert_eq!(copied.blobs_sent, copied.mounts_refused, "{copied:?}");
        if status == 403 {
            setup.assert_complete(&to);
        }
    }
}

#[test]
fn on_one_host_blobs_are_mounted() {
    let setup = Setup::new();
    let to: ImageRef = format!("{}/elsewhere:1", setup.source.namespace("other"))
        .parse()
        .unwrap();
    let copied = setup.client.copy(&setup.pushed, &to).unwrap();
    assert_eq!(copied.blobs_sent, 0, "{copied:?}");
    assert!(copied.blobs_mounted >= 4, "{copied:?}");
    assert_eq!(
        setup.client.get_manifest(&to).unwrap().digest,
        *setup.pushed.digest().unwrap()
    );
}

#[test]
fn a_copy_recovers_from_transient_faults() {
    use RequestKind::*;
    let setup = Setup::new();
    for (n, (kind, fault)) in [
        (BlobUpload, Fault::Status(500).times(1)),
        (BlobHead, Fault::Status(503).times(1)),
        (BlobUpload, Fault::Reset.times(1)),
        (ManifestPut, Fault::Status(500).times(1)),
        // The blob's PUT, not the POST that opens the upload: the registry finds another digest, and refuses it.
        (
            BlobUpload,
            Fault::FlipRequestByte.matching("digest=").times(1),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        setup.proxy.clear();
        let before = setup.proxy.faulted(kind);
        setup.proxy.set(kind, fault.clone());
        // A new repository each time, so every blob moves again.
        let to: ImageRef = format!("{}/case{n}:1", setup.proxy.namespace("test"))
            .parse()
            .unwrap();
        let copied = setup
            .client
            .copy(&setup.pushed, &to)
            .unwrap_or_else(|e| panic!("{kind:?} under {fault:?}: {e}"));
        assert_eq!(
            setup.proxy.faulted(kind) - before,
            1,
            "{kind:?} under {fault:?}"
        );
        assert_eq!(copied.digest, *setup.pushed.digest().unwrap());
        setup.proxy.clear();
        setup.assert_complete(&to);
    }
}

#[test]
fn a_blob_cut_or_changed_on_the_way_is_refused_by_its_digest() {
    use RequestKind::*;
    let source = Registry::start().unwrap();
    let source_proxy = FaultProxy::in_front_of(&source).unwrap();
    let digest = push_fixture(&source, false);
    let from: ImageRef = format!("{}/fixture@{digest}", source_proxy.namespace("test"))
        .parse()
        .unwrap();
    let destination = Registry::start().unwrap();
    let no_logins = tempfile::tempdir().unwrap();
    let client = client_with_logins(no_logins.path());

    // Once: the next attempt reads the whole blob.
    source_proxy.set(BlobGet, Fault::CutBody.times(1));
    let to: ImageRef = format!("{}/cut:1", destination.namespace("test"))
        .parse()
        .unwrap();
    client.copy(&from, &to).unwrap();
    assert_eq!(source_proxy.faulted(BlobGet), 1);

    // Always: the copy gives up naming the mismatch, and stores no manifest.
    for fault in [Fault::FlipByte, Fault::CutBody] {
        source_proxy.clear();
        source_proxy.set(BlobGet, fault.clone());
        let to: ImageRef = format!("{}/flipped:1", destination.namespace("test"))
            .parse()
            .unwrap();
        let error = client.copy(&from, &to).unwrap_err();
        assert_eq!(
            error.kind,
            FailureKind::DigestMismatch,
            "{fault:?}: {error}"
        );
        assert_eq!(error.attempts, quick().attempts, "{fault:?}: {error}");
        source_proxy.clear();
        let absent = client.get_manifest(&to).unwrap_err();
        assert_eq!(absent.kind, FailureKind::NotFound, "{fault:?}: {absent}");
    }
}

#[test]
fn a_copy_to_a_registry_that_wants_a_login_uses_dockers() {
    let source = Registry::start().unwrap();
    let digest = push_fixture(&source, false);
    let from: ImageRef = format!("{}/fixture@{digest}", source.namespace("test"))
        .parse()
        .unwrap();
    let locked = Registry::start_with_auth("tester", "s3cret-pw").unwrap();
    let to: ImageRef = format!("{}/fixture:1", locked.namespace("test"))
        .parse()
        .unwrap();
    // base64 of tester:s3cret-pw
    let login = docker_config(&format!(
        r#""{}": {{"auth": "dGVzdGVyOnMzY3JldC1wdw=="}}"#,
        locked.host()
    ));
    let client = client_with_logins(login.path());
    let copied = client.copy(&from, &to).unwrap();
    assert_eq!(copied.digest, digest);
    assert!(copied.blobs_sent >= 4, "{copied:?}");
    assert_eq!(client.get_manifest(&to).unwrap().digest, digest);

    let no_logins = tempfile::tempdir().unwrap();
    let error = client_with_logins(no_logins.path())
        .copy(&from, &to)
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Unauthorized, "{error}");
}

#[test]
fn a_destination_that_accepts_and_never_answers_ends_the_copy_within_the_policy() {
    use RequestKind::*;
    let setup = Setup::new();
    // Blob checks, uploads and manifest writes all go silent: each attempt ends at the read timeout, the policy's
    // attempts and operation bound end the whole, and nothing is tagged.
    for kind in [BlobHead, BlobUpload, ManifestPut, ManifestHead] {
        setup.proxy.set(kind, Fault::Stall);
    }
    let to = setup.to("stalled");
    let started = std::time::Instant::now();
    let error = setup.client.copy(&setup.pushed, &to).unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.kind, FailureKind::Unreachable, "{error}");
    assert!(
        took <= quick().operation_timeout + Duration::from_secs(10),
        "a stalled destination held the copy for {took:?}: {error}"
    );
    setup.proxy.clear();
    let absent = setup.client.get_manifest(&to).unwrap_err();
    assert_eq!(absent.kind, FailureKind::NotFound, "{absent}");
}

#[test]
fn a_seed_sends_one_platforms_blobs_and_no_manifest_and_the_copy_then_skips_them() {
    let setup = Setup::new();
    let to = setup.to("1");
    let arm64 = ["linux/arm64".to_owned()];
    let seeded = setup
        .client
        .seed(&setup.pushed, &arm64, to.repository(), None)
        .unwrap();
    assert_eq!(seeded.manifests, 0, "{seeded:?}");
    assert!(seeded.blobs_sent >= 2, "a config and a layer: {seeded:?}");
    assert!(
        setup.client.get_manifest(&to).is_err(),
        "a seed stores no manifest and no tag"
    );

    // The blobs of linux/arm64 are there, those of linux/amd64 are not.
    let index = setup.client.get_manifest(&setup.pushed).unwrap();
    let summary = IndexSummary::parse(&index.bytes).unwrap();
    for platform in &summary.platforms {
        let image = setup
            .client
            .get_manifest(&setup.pushed.repository().at(&platform.digest))
            .unwrap();
        let image: serde_json::Value = serde_json::from_slice(&image.bytes).unwrap();
        let config = Digest::parse(image["config"]["digest"].as_str().unwrap()).unwrap();
        let there = setup.client.get_blob(to.repository(), &config).is_ok();
        assert_eq!(there, platform.platform == "linux/arm64", "{platform:?}");
    }

    // A second repository on the same host mounts them from the first: no bytes move.
    let cache: ImageRef = format!("{}/mirror-cache:1", setup.proxy.namespace("test"))
        .parse()
        .unwrap();
    let mounted = setup
        .client
        .seed(
            &setup.pushed,
            &arm64,
            cache.repository(),
            Some(to.repository()),
        )
        .unwrap();
    assert_eq!(
        (mounted.blobs_sent, mounted.blobs_mounted),
        (0, seeded.blobs_sent),
        "{mounted:?}"
    );

    let copied = setup.client.copy(&setup.pushed, &to).unwrap();
    assert_eq!(copied.blobs_present, seeded.blobs_sent, "{copied:?}");
    setup.assert_complete(&to);

    let error = setup
        .client
        .seed(
            &setup.pushed,
            &["linux/s390x".to_owned()],
            to.repository(),
            None,
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("lists none of linux/s390x"),
        "{error}"
    );
}

/// A seed meets the same faults a copy does: a destination that never answers ends it within the policy, and a
/// source whose answers are changed on the way (every time) is refused by their digest, with nothing stored.
#[test]
fn a_seed_to_a_stalled_destination_or_from_a_source_answering_garbage_ends_within_the_policy() {
    use RequestKind::*;
    let setup = Setup::new();
    let amd64 = ["linux/amd64".to_owned()];
    for kind in [BlobHead, BlobUpload] {
        setup.proxy.set(kind, Fault::Stall);
    }
    let to = setup.to("stalled");
    let started = std::time::Instant::now();
    let error = setup
        .client
        .seed(&setup.pushed, &amd64, to.repository(), None)
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.kind, FailureKind::Unreachable, "{error}");
    assert!(
        took <= quick().operation_timeout + Duration::from_secs(10),
        "a stalled destination held the seed for {took:?}: {error}"
    );
    setup.proxy.clear();

    // Every answer of the source with a byte flipped: the index read by digest never matches it.
    let garbled = FaultProxy::in_front_of(&setup.source).unwrap();
    garbled.set(ManifestGet, Fault::FlipByte);
    let source: ImageRef = format!(
        "{}/fixture@{}",
        garbled.namespace("test"),
        setup.pushed.digest().unwrap()
    )
    .parse()
    .unwrap();
    let error = setup
        .client
        .seed(&source, &amd64, to.repository(), None)
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::DigestMismatch, "{error}");
    assert_eq!(
        setup
            .client
            .seed(&setup.pushed, &amd64, to.repository(), None)
            .unwrap()
            .blobs_present,
        0,
        "nothing was stored by the failed seeds"
    );
}
