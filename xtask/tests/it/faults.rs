//! `cargo xtask release` under registry faults, one test per cell: a fault-injecting proxy sits in front of each
//! real registry, and the release either completes or stops with a message that says what it left and what to do,
//! in bounded time. Whatever happened, the registries are then read directly (skopeo, sha256 of the bytes): every
//! tag serves the canonical pin's digest or does not exist, and a pin never changes once pushed.

use std::{
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use testkit::{Fault, FaultProxy, RequestKind};

use crate::setup::{assert_ok, Setup};

const VERSION: &str = "v3.0.0";
/// Short, so a cell that meets a stall or a persistent fault gives up in seconds.
const POLICY: &str = "connect=1s,read=2s,operation=30s,attempts=4,backoff=100ms,backoff-cap=500ms,retry-after-cap=3s";
/// Far above what any cell takes on a loaded 2-core machine; below "forever".
const LIMIT: Duration = Duration::from_secs(240);

enum Expect {
    Complete,
    /// Stops, saying this.
    Stops(&'static str),
}

/// Runs a release of the one-line matrix, killed if it outlives [`LIMIT`].
fn release(setup: &Setup, extra: &[&str]) -> (Output, Duration) {
    let args = setup.release_args(VERSION, "", extra);
    let started = Instant::now();
    let mut child = setup
        .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("STACK_REGISTRY_POLICY", POLICY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the release");
    while child.try_wait().expect("waiting for the release").is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child
        .wait_with_output()
        .expect("reading the release's output");
    (output, started.elapsed())
}

/// The canonical pin's digest as the registry itself serves it, if it exists.
fn pin(setup: &Setup) -> Option<String> {
    let reference = format!("{}/php-fpm:{VERSION}-php-8.5", setup.canonical_ns());
    setup.skopeo_digest(&reference).map(|d| d.to_string())
}

/// Every tag of both registries serves the canonical pin (one line: every tag is that line's) or is absent.
#[track_caller]
fn check_registries(setup: &Setup, complete: bool) {
    let pin = pin(setup);
    let tags = setup.all_tags();
    if pin.is_none() {
        assert!(
            tags.is_empty(),
            "no canonical pin, yet tags exist: {tags:?}"
        );
    }
    for (reference, digest) in &tags {
        assert_eq!(
            digest.as_ref().map(ToString::to_string),
            pin,
            "{reference} serves something other than the verified pin"
        );
    }
    if complete {
        let names: Vec<&str> = tags
            .iter()
            .map(|(r, _)| r.rsplit(':').next().unwrap())
            .collect();
        let pin_tag = format!("{VERSION}-php-8.5");
        for tag in [pin_tag.as_str(), VERSION, "php-8.5", "latest"] {
            assert_eq!(
                names.iter().filter(|n| **n == tag).count(),
                2,
                "{tag} in both registries: {names:?}"
            );
        }
    }
}

/// One cell: faults injected, a release, the outcome expected, the registries checked; then, for a release that
/// stopped, the faults cleared and `--resume`, which must finish on the same pin.
fn cell(inject: impl Fn(&FaultProxy, &FaultProxy), expect: Expect) -> anyhow::Result<()> {
    cell_with(&[], inject, expect)
}

/// A cell whose release (and resume) takes `extra` flags.
fn cell_with(
    extra: &[&str],
    inject: impl Fn(&FaultProxy, &FaultProxy),
    expect: Expect,
) -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let (canonical, mirror) = setup.proxies();
    inject(canonical, mirror);
    let (output, took) = release(&setup, extra);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(took < LIMIT, "the release hung:\n{stderr}");
    match expect {
        Expect::Complete => {
            assert_ok(&output);
            check_registries(&setup, true);
        }
        Expect::Stops(says) => {
            assert_eq!(output.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains(says),
                "the error does not say `{says}`:\n{stderr}"
            );
            check_registries(&setup, false);
            let pushed = pin(&setup);
            canonical.clear();
            mirror.clear();
            let (resumed, _) = release(&setup, &[extra, &["--resume"]].concat());
            assert_ok(&resumed);
            check_registries(&setup, true);
            if let Some(pushed) = pushed {
                assert_eq!(pin(&setup), Some(pushed), "--resume changed the pin");
            }
        }
    }
    Ok(())
}

/// Without seeding, so that the first upload, which meets the 503, is the bake's push.
#[test]
fn build_a_503_on_a_blob_upload_is_retried() -> anyhow::Result<()> {
    cell_with(
        &["--no-seed"],
        |canonical, _| canonical.set(RequestKind::BlobUpload, Fault::Status(503).times(1)),
        Expect::Complete,
    )
}

/// The seed's first upload to the mirror is refused for good (403, not retried): a warning, and the mirror copy
/// sends the base's blobs itself.
#[test]
fn build_a_seed_refused_is_a_warning_and_the_release_completes() -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let (_, mirror) = setup.proxies();
    mirror.set(RequestKind::BlobUpload, Fault::Status(403).times(1));
    let (output, _) = release(&setup, &[]);
    assert_ok(&output);
    check_registries(&setup, true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: seeding") && stderr.contains("answered 403"),
        "the refused seed is reported:\n{stderr}"
    );
    assert!(
        stderr.contains("seeded 2 of 3 repositories"),
        "the canonical registry's seeds (pin and build cache) went through:\n{stderr}"
    );
    Ok(())
}

#[test]
fn build_a_registry_refusing_manifests_stops_it_and_resume_finishes() -> anyhow::Result<()> {
    cell(
        |canonical, _| canonical.set(RequestKind::ManifestPut, Fault::Status(500)),
        Expect::Stops("build failed: no moving tag was touched"),
    )
}

#[test]
fn read_back_flipped_bytes_are_read_again() -> anyhow::Result<()> {
    cell(
        |canonical, _| canonical.set(RequestKind::ManifestGet, Fault::FlipByte.times(2)),
        Expect::Complete,
    )
}

#[test]
fn read_back_bytes_flipped_every_time_stop_it_and_resume_keeps_the_pin() -> anyhow::Result<()> {
    cell(
        |canonical, _| {
            canonical.set(
                RequestKind::ManifestGet,
                Fault::FlipByte.matching(&format!("/manifests/{VERSION}-php-8.5")),
            )
        },
        Expect::Stops("changed the bytes"),
    )
}

/// Without seeding, so that the first upload to the mirror, which meets the 503, is the copy's.
#[test]
fn copy_a_503_on_the_mirror_is_retried() -> anyhow::Result<()> {
    cell_with(
        &["--no-seed"],
        |_, mirror| mirror.set(RequestKind::BlobUpload, Fault::Status(503).times(1)),
        Expect::Complete,
    )
}

#[test]
fn copy_a_mirror_refusing_connections_stops_it_and_resume_finishes() -> anyhow::Result<()> {
    cell(
        |_, mirror| {
            for kind in [
                RequestKind::BlobUpload,
                RequestKind::BlobHead,
                RequestKind::ManifestPut,
            ] {
                mirror.set(kind, Fault::Refuse);
            }
        },
        Expect::Stops("mirror failed: no moving tag was touched"),
    )
}

#[test]
fn verify_a_429_with_retry_after_is_waited_out() -> anyhow::Result<()> {
    cell(
        |_, mirror| {
            mirror.set(
                RequestKind::ManifestGet,
                Fault::RateLimited {
                    retry_after: Some(1),
                }
                .times(2),
            )
        },
        Expect::Complete,
    )
}

#[test]
fn verify_a_429_without_retry_after_backs_off() -> anyhow::Result<()> {
    cell(
        |_, mirror| {
            mirror.set(
                RequestKind::ManifestGet,
                Fault::RateLimited { retry_after: None }.times(2),
            )
        },
        Expect::Complete,
    )
}

#[test]
fn verify_503s_are_retried() -> anyhow::Result<()> {
    cell(
        |_, mirror| mirror.set(RequestKind::ManifestGet, Fault::Status(503).times(2)),
        Expect::Complete,
    )
}

#[test]
fn verify_a_stalled_answer_times_out_and_is_asked_again() -> anyhow::Result<()> {
    cell(
        |_, mirror| mirror.set(RequestKind::ManifestGet, Fault::Stall.times(1)),
        Expect::Complete,
    )
}

#[test]
fn verify_a_body_cut_short_is_read_again() -> anyhow::Result<()> {
    cell(
        |_, mirror| mirror.set(RequestKind::ManifestGet, Fault::CutBody.times(2)),
        Expect::Complete,
    )
}

#[test]
fn move_tags_bytes_changed_on_the_way_are_sent_again() -> anyhow::Result<()> {
    cell(
        |_, mirror| {
            mirror.set(
                RequestKind::ManifestPut,
                Fault::FlipRequestByte
                    .matching("/manifests/latest")
                    .times(1),
            )
        },
        Expect::Complete,
    )
}

/// The flipped byte breaks the manifest's JSON: the registry refuses it (400 `MANIFEST_INVALID`), which is not
/// retried (only `DIGEST_INVALID` says the bytes changed on the way), so the copy stops; nothing moved.
#[test]
fn copy_bytes_changed_on_the_way_stop_it_and_resume_finishes() -> anyhow::Result<()> {
    cell(
        |_, mirror| mirror.set(RequestKind::ManifestPut, Fault::FlipRequestByte.times(1)),
        Expect::Stops("mirror failed: no moving tag was touched"),
    )
}

/// A blob changed on its way to the mirror every time: the copy gives up naming the digest; nothing moved.
#[test]
fn copy_blobs_changed_on_the_way_every_time_stop_it_and_resume_finishes() -> anyhow::Result<()> {
    cell(
        |_, mirror| {
            mirror.set(
                RequestKind::BlobUpload,
                Fault::FlipRequestByte.matching("digest="),
            )
        },
        Expect::Stops("mirror failed: no moving tag was touched"),
    )
}

#[test]
fn move_tags_a_mirror_failing_every_put_stops_it_and_resume_finishes() -> anyhow::Result<()> {
    cell(
        |_, mirror| {
            mirror.set(
                RequestKind::ManifestPut,
                Fault::Status(503).matching("/manifests/latest"),
            )
        },
        Expect::Stops("move tags failed after"),
    )
}

#[test]
fn verify_tags_a_tag_that_never_reads_back_stops_it() -> anyhow::Result<()> {
    // The check is a HEAD (only the digest is compared, and Docker Hub counts GETs against its limit).
    cell(
        |canonical, _| {
            canonical.set(
                RequestKind::ManifestHead,
                Fault::Status(503).matching("/manifests/php-8.5"),
            )
        },
        Expect::Stops("verify tags failed: all"),
    )
}

#[test]
fn preflight_a_registry_that_never_answers_stops_it_in_bounded_time() -> anyhow::Result<()> {
    cell(
        |canonical, _| canonical.set(RequestKind::ManifestGet, Fault::Stall),
        Expect::Stops("preflight failed: nothing was changed"),
    )
}

/// The case that overwrote a mirrored pin: a release stops after its pins are verified, and the resume's
/// preflight reads corrupted bytes. They are read again, never taken for an interrupted push, and the pin stays.
#[test]
fn resume_corrupted_reads_in_preflight_never_replace_a_pin() -> anyhow::Result<()> {
    let setup = Setup::behind_proxies(&["8.5"])?;
    let (canonical, mirror) = setup.proxies();
    mirror.set(
        RequestKind::ManifestPut,
        Fault::Status(503).matching("/manifests/latest"),
    );
    let (stopped, _) = release(&setup, &[]);
    assert_eq!(stopped.status.code(), Some(1));
    let pushed = pin(&setup).expect("the pin was pushed before the tags");
    mirror.clear();
    canonical.set(
        RequestKind::ManifestGet,
        Fault::FlipByte
            .matching(&format!("/manifests/{VERSION}-php-8.5"))
            .times(2),
    );
    let (resumed, took) = release(&setup, &["--resume"]);
    assert!(took < LIMIT);
    assert_ok(&resumed);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        !stderr.contains("interrupted push"),
        "a corrupted read was taken for an interrupted push"
    );
    assert_eq!(pin(&setup), Some(pushed), "the pin was replaced");
    check_registries(&setup, true);
    Ok(())
}
