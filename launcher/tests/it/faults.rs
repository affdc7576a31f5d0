//! `20i pull` against a real registry behind the fault proxy, one test per cell: each fault × with or without a
//! mirror × the local build fallback on or off. Every cell ends with the pinned image in the local store (checked
//! with `docker image inspect`, and against the registry's own bytes with `skopeo inspect --raw`), with a local
//! build after the mirror failed, or with exit 3 and a message saying what happened; always in bounded time. The
//! image each cell pulls is new to the local store (`fresh::variant`), so the faults on its manifests and blobs
//! are met.

use std::time::Duration;

use testkit::{
    faults::{Fault, FaultProxy, RequestKind},
    Registry,
};

use crate::{
    fresh,
    harness::{docker, image_exists, reference, Site},
};

/// Short bounds, so that a stall costs seconds (the launcher's and the shared policy's), long enough that a pull on a
/// loaded two-core machine is not taken for a stall: docker printed nothing for 3 s there in a healthy pull.
const STALL_SECONDS: u64 = 6;
const POLICY: &str = "attempts=3,backoff=200ms,backoff-cap=400ms,retry-after-cap=2s";
/// How long a cell may take: three stall timeouts and room for a loaded two-core machine (a pull, a mirror's
/// pull, a local build).
const BOUND: Duration = Duration::from_secs(3 * STALL_SECONDS + 90);
const LINE: &str = "8.4";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trouble {
    /// Every manifest request answered 429, without `Retry-After`.
    RateLimited,
    /// Every manifest request answered 429 with `Retry-After: 1` (docker does not show it).
    RateLimitedRetryAfter,
    /// Every manifest request answered 503.
    Unavailable,
    /// Every manifest request closed without an answer.
    Refused,
    /// Every blob cut in the middle of its body.
    CutBody,
    /// One byte flipped in every blob.
    FlippedBlob,
    /// One byte flipped in every manifest.
    FlippedManifest,
    /// Every manifest and blob a second late: still completes.
    Slow,
    /// Every blob request accepted and never answered.
    Stall,
    /// The same, at the mirror too.
    StallEverywhere,
}

impl Trouble {
    fn inject(self, proxy: &FaultProxy) {
        use RequestKind::*;
        let manifests = |fault: Fault| {
            proxy.set(ManifestHead, fault.clone());
            proxy.set(ManifestGet, fault);
        };
        match self {
            Trouble::RateLimited => manifests(Fault::RateLimited { retry_after: None }),
            Trouble::RateLimitedRetryAfter => manifests(Fault::RateLimited {
                retry_after: Some(1),
            }),
            Trouble::Unavailable => manifests(Fault::Status(503)),
            Trouble::Refused => manifests(Fault::Refuse),
            Trouble::CutBody => proxy.set(BlobGet, Fault::CutBody),
            Trouble::FlippedBlob => proxy.set(BlobGet, Fault::FlipByte),
            Trouble::FlippedManifest => proxy.set(ManifestGet, Fault::FlipByte),
            Trouble::Slow => {
                let late = Fault::Delay(Duration::from_millis(1000));
                proxy.set(ManifestGet, late.clone());
                proxy.set(BlobGet, late);
            }
            Trouble::Stall | Trouble::StallEverywhere => proxy.set(BlobGet, Fault::Stall),
        }
    }

    /// Whether the pull still succeeds from the faulty registry.
    fn completes(self) -> bool {
        self == Trouble::Slow
    }

    /// What the log says happened at `image`, and the remedy the stop message ends with.
    fn said(self, image: &str) -> (String, &'static str) {
        match self {
            Trouble::RateLimited | Trouble::RateLimitedRetryAfter => (
                format!("rate limited at {image}, tried 3 times"),
                "wait for the rate limit to reset",
            ),
            Trouble::Unavailable | Trouble::Refused | Trouble::CutBody => (
                format!("unreachable at {image}, tried 3 times"),
                "connect and run the command again",
            ),
            Trouble::FlippedBlob | Trouble::FlippedManifest => (
                format!("digest mismatch twice at {image}: the bytes served did not match their digest"),
                "something between here and",
            ),
            Trouble::Stall | Trouble::StallEverywhere => (
                format!("stalled for {STALL_SECONDS} s at {image}: no progress (PULL_STALL_TIMEOUT={STALL_SECONDS})"),
                "raise PULL_STALL_TIMEOUT",
            ),
            Trouble::Slow => (String::new(), ""),
        }
    }
}

/// A registry holding a pinned image new to the local store, behind a fault proxy.
struct Source {
    proxy: FaultProxy,
    registry: Registry,
}

impl Source {
    fn start() -> Source {
        let registry = Registry::start().unwrap();
        let proxy = FaultProxy::in_front_of(&registry).unwrap();
        Source { proxy, registry }
    }

    /// The launcher's image in this registry, around the proxy.
    fn direct(&self) -> String {
        reference(&self.registry.namespace("stack"), LINE)
    }

    fn namespace(&self) -> String {
        self.proxy.namespace("stack")
    }
}

#[track_caller]
fn cell(trouble: Trouble, mirror: bool, fallback: bool) {
    let label = format!("{trouble:?}-{mirror}-{fallback}").to_lowercase();
    let canonical = Source::start();
    // The fixture, then a copy of it that no local store has seen under the launcher's tag.
    let source_tag = format!("{}/stack/php-fpm:source", canonical.registry.host());
    fresh::put_standin(&source_tag);
    let tag = reference(&canonical.namespace(), LINE);
    let tag_only = tag.rsplit_once(':').unwrap().1;
    let nonce = format!(
        "{label}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let digest = fresh::variant(
        &canonical.registry.host(),
        "stack/php-fpm",
        "source",
        tag_only,
        &nonce,
    );
    let mirror = mirror.then(|| {
        let mirror = Source::start();
        fresh::copy(&canonical.direct(), &mirror.direct());
        mirror
    });
    trouble.inject(&canonical.proxy);
    if let (Trouble::StallEverywhere, Some(mirror)) = (trouble, &mirror) {
        trouble.inject(&mirror.proxy);
    }

    let mut site = Site::new(&format!("fault-{label}"));
    site.set("IMAGE_REGISTRY", &canonical.namespace());
    if let Some(mirror) = &mirror {
        site.set("IMAGE_MIRRORS", &mirror.namespace());
        site.cleanup_images
            .push(reference(&mirror.namespace(), LINE));
    }
    site.set("PHP_VERSION", LINE);
    site.set("ALLOW_LOCAL_BUILD_FALLBACK", &fallback.to_string());
    site.set("PULL_STALL_TIMEOUT", &STALL_SECONDS.to_string());
    site.set("PULL_TIMEOUT", "40");
    site.set("STACK_REGISTRY_POLICY", POLICY);
    site.set("PHP_FPM_PIN", &format!("{tag}@{digest}"));
    site.cleanup_images.push(tag.clone());

    let run = site.run(&["pull"], &[]);
    eprintln!(
        "CELL {label}: {:.2} s, exit {}",
        run.took.as_secs_f64(),
        run.code
    );
    assert!(
        run.took < BOUND,
        "{label} took {:?}, more than {BOUND:?}",
        run.took
    );
    assert!(
        !run.stderr.contains("remove PHP_FPM_PIN"),
        "{label}: a fault is no reason to touch the pin:\n{}",
        run.stderr
    );
    assert!(
        !site.code_dir().join(".20i-local").exists(),
        "{label}: a pull wrote .20i-local"
    );
    assert!(
        !run.stderr.contains("(the registry's Retry-After)"),
        "{label}: docker does not show Retry-After:\n{}",
        run.stderr
    );
    let mirror_asked = mirror
        .as_ref()
        .map_or(0, |m| m.proxy.count(RequestKind::ManifestHead));
    let fallback_built = run
        .stderr
        .contains("building locally (ALLOW_LOCAL_BUILD_FALLBACK=true)");
    let happened = trouble.said(&tag).0;
    assert!(
        run.stderr.contains(&happened),
        "{label}: no {happened:?} in\n{}",
        run.stderr
    );
    let pulled =
        |from: &str| run.code == 0 && run.stdout.contains(&format!("php-fpm  {tag} ({from}"));

    if trouble.completes() {
        assert!(
            pulled("pulled from "),
            "{label}:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(mirror_asked, 0, "{label}: the mirror was asked");
    } else if let Some(mirror) = mirror
        .as_ref()
        .filter(|_| trouble != Trouble::StallEverywhere)
    {
        assert!(
            pulled(&format!("pulled from the mirror {}", mirror.namespace())),
            "{label}:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        assert!(mirror_asked > 0);
        assert!(!fallback_built, "{label}: built though the mirror served");
    } else if fallback {
        if let Some(mirror) = &mirror {
            let mirrored = reference(&mirror.namespace(), LINE);
            let tried = run
                .stderr
                .find(&format!("trying the mirror: pulling {mirrored}"));
            let built = run.stderr.find("building locally");
            assert!(
                tried.is_some() && tried < built,
                "{label}: built before the mirror was tried:\n{}",
                run.stderr
            );
        }
        assert_eq!(run.code, 0, "{label}:\n{}", run.stderr);
        assert!(fallback_built, "{label}:\n{}", run.stderr);
        assert!(
            run.stdout.contains("(built locally (") || run.stdout.contains("(local build, reused"),
            "{label}:\n{}",
            run.stdout
        );
        assert!(!image_exists(&tag), "{label}: a failed pull left {tag}");
        return;
    } else {
        if let Some(mirror) = &mirror {
            let mirrored = reference(&mirror.namespace(), LINE);
            let failed_too =
                format!("(the mirrors failed too: stalled for {STALL_SECONDS} s at {mirrored}");
            assert!(
                run.stderr.contains(&failed_too),
                "{label}: no {failed_too:?} in\n{}",
                run.stderr
            );
        }
        assert_eq!(run.code, 3, "{label}:\n{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("ALLOW_LOCAL_BUILD_FALLBACK=false: "),
            "{label}:\n{}",
            run.stderr
        );
        assert!(!fallback_built);
        assert!(!image_exists(&tag), "{label}: a failed pull left {tag}");
        let remedy = trouble.said(&tag).1;
        assert!(
            run.stderr.contains(remedy),
            "{label}: no {remedy:?} in\n{}",
            run.stderr
        );
        return;
    }
    // The image in the local store is the pinned one, and the registry serves those very bytes.
    let known = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &tag,
    ]);
    assert!(known.contains(digest.as_str()), "{label}: {known}");
    assert_eq!(fresh::registry_digest(&canonical.direct()), digest);
}

macro_rules! cells {
    ($($name:ident: $trouble:ident, mirror $mirror:literal, fallback $fallback:literal;)*) => {
        $(
            #[test]
            fn $name() {
                cell(Trouble::$trouble, $mirror, $fallback);
            }
        )*
    };
}

cells! {
    rate_limited_mirror_fallback: RateLimited, mirror true, fallback true;
    rate_limited_mirror_no_fallback: RateLimited, mirror true, fallback false;
    rate_limited_alone_fallback: RateLimited, mirror false, fallback true;
    rate_limited_alone_no_fallback: RateLimited, mirror false, fallback false;
    retry_after_mirror_fallback: RateLimitedRetryAfter, mirror true, fallback true;
    retry_after_mirror_no_fallback: RateLimitedRetryAfter, mirror true, fallback false;
    retry_after_alone_fallback: RateLimitedRetryAfter, mirror false, fallback true;
    retry_after_alone_no_fallback: RateLimitedRetryAfter, mirror false, fallback false;
    unavailable_mirror_fallback: Unavailable, mirror true, fallback true;
    unavailable_mirror_no_fallback: Unavailable, mirror true, fallback false;
    unavailable_alone_fallback: Unavailable, mirror false, fallback true;
    unavailable_alone_no_fallback: Unavailable, mirror false, fallback false;
    refused_mirror_fallback: Refused, mirror true, fallback true;
    refused_mirror_no_fallback: Refused, mirror true, fallback false;
    refused_alone_fallback: Refused, mirror false, fallback true;
    refused_alone_no_fallback: Refused, mirror false, fallback false;
    cut_body_mirror_fallback: CutBody, mirror true, fallback true;
    cut_body_mirror_no_fallback: CutBody, mirror true, fallback false;
    cut_body_alone_fallback: CutBody, mirror false, fallback true;
    cut_body_alone_no_fallback: CutBody, mirror false, fallback false;
    flipped_blob_mirror_fallback: FlippedBlob, mirror true, fallback true;
    flipped_blob_mirror_no_fallback: FlippedBlob, mirror true, fallback false;
    flipped_blob_alone_fallback: FlippedBlob, mirror false, fallback true;
    flipped_blob_alone_no_fallback: FlippedBlob, mirror false, fallback false;
    flipped_manifest_mirror_fallback: FlippedManifest, mirror true, fallback true;
    flipped_manifest_mirror_no_fallback: FlippedManifest, mirror true, fallback false;
    flipped_manifest_alone_fallback: FlippedManifest, mirror false, fallback true;
    flipped_manifest_alone_no_fallback: FlippedManifest, mirror false, fallback false;
    slow_mirror_fallback: Slow, mirror true, fallback true;
    slow_mirror_no_fallback: Slow, mirror true, fallback false;
    slow_alone_fallback: Slow, mirror false, fallback true;
    slow_alone_no_fallback: Slow, mirror false, fallback false;
    stall_mirror_fallback: Stall, mirror true, fallback true;
    stall_mirror_no_fallback: Stall, mirror true, fallback false;
    stall_alone_fallback: Stall, mirror false, fallback true;
    stall_alone_no_fallback: Stall, mirror false, fallback false;
    stall_everywhere_fallback: StallEverywhere, mirror true, fallback true;
    stall_everywhere_no_fallback: StallEverywhere, mirror true, fallback false;
}
