//! A republish reaches users who already pulled: `PULL_POLICY=daily` with a last check older than a day pulls
//! the new digest and says why; `missing` (the default) sends no request at all; a pin keeps its digest and says
//! that a newer one exists.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::{docker, publish_php_fpm_standin, requests, Site};

const REASON: &str = "the 8.5 base fixes CVE-2026-0001";

/// What docker's store knows the image by.
fn local_digests(image: &str) -> String {
    docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        image,
    ])
}

/// The site's record of the image's last check, set `ago` in the past.
fn checked_ago(site: &Site, image: &str, digest: &str, ago: Duration) {
    let checked = (SystemTime::now() - ago)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let state = site.home.path().join(".20i/state");
    std::fs::create_dir_all(&state).unwrap();
    let json = serde_json::json!({ image: { "checked": checked, "digest": digest } });
    std::fs::write(state.join("checks.json"), json.to_string()).unwrap();
}

#[test]
fn a_republish_reaches_daily_users_and_leaves_pins_and_the_default_alone() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let (image, old) = publish_php_fpm_standin(&namespace, "8.5");
    let mut site = Site::new("republished");
    site.set("IMAGE_REGISTRY", &namespace);
    site.cleanup_images.push(image.clone());
    site.run(&["pull"], &[]).ok();
    assert!(local_digests(&image).contains(&old));

    // The release is republished: a rebuilt image under the same pin tag, its index saying why and when.
    let rebuilt = format!("{namespace}/php-fpm:rebuilt");
    testkit::fixtures::push_busybox(
        &rebuilt,
        &format!("{}LABEL rebuilt=1\n", testkit::stack::PHP_FPM_STANDIN_LINES),
        // With attestations buildx pushes an OCI index, which carries annotations (a Docker list drops them),
        // as a release's pins are.
        true,
    )
    .unwrap();
    docker(&[
        "buildx",
        "imagetools",
        "create",
        "--annotation",
        &format!("index:io.20i-stack.republish.reason={REASON}"),
        "--annotation",
        "index:io.20i-stack.republish.date=2026-12-01",
        "--tag",
        &image,
        &rebuilt,
    ]);
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw.stdout);
    assert!(
        raw.contains(REASON),
        "the republished index has no reason: {raw}"
    );

    // The default policy never asks: a cached start sends no request at all.
    let before = requests(&registry);
    let cached = site.run(&["pull"], &[]).ok();
    cached.expect_stdout("cache (no registry request)");
    assert_eq!(
        requests(&registry),
        before,
        "PULL_POLICY=missing sent a request"
    );

    // A pin keeps its digest, and says that a newer one exists and how to move to it.
    checked_ago(&site, &image, &old, Duration::from_secs(2 * 86_400));
    let pin = format!("{image}@{old}");
    let pinned = site
        .run(
            &["pull"],
            &[("PULL_POLICY", "daily"), ("PHP_FPM_PIN", &pin)],
        )
        .ok();
    assert!(
        pinned.stderr.contains("has a newer digest")
            && pinned.stderr.contains(&format!("PHP_FPM_PIN keeps {old}"))
            && pinned.stderr.contains(REASON),
        "{}",
        pinned.stderr
    );
    assert!(
        local_digests(&image).contains(&old),
        "the pin's image was replaced"
    );

    // A daily user whose last check is two days old gets the republished image, and is told why.
    checked_ago(&site, &image, &old, Duration::from_secs(2 * 86_400));
    let daily = site.run(&["pull"], &[("PULL_POLICY", "daily")]).ok();
    daily.expect_stderr(&format!("republished on 2026-12-01: {REASON}"));
    let now = local_digests(&image);
    assert!(!now.contains(&old), "still the old image: {now}");
    let status = site.run(&["status"], &[("PULL_POLICY", "daily")]).ok();
    status.expect_stdout("last checked");

    // Checked today: the next start asks nothing.
    let before = requests(&registry);
    site.run(&["pull"], &[("PULL_POLICY", "daily")]).ok();
    assert_eq!(
        requests(&registry),
        before,
        "a check within the day sent a request"
    );

    // Due again, the cached image is what the registry serves: a HEAD answers, and no manifest GET is sent
    // (Docker Hub counts those against the pull limit).
    let state = site.home.path().join(".20i/state/checks.json");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    let current = state[&image]["digest"].as_str().unwrap().to_owned();
    checked_ago(&site, &image, &current, Duration::from_secs(2 * 86_400));
    let manifest_requests = |method: &str| {
        registry
            .log()
            .lines()
            .filter(|l| l.contains(&format!("\"{method} /v2/")) && l.contains("/manifests/"))
            .count()
    };
    let (gets, heads) = (manifest_requests("GET"), manifest_requests("HEAD"));
    site.run(&["pull"], &[("PULL_POLICY", "daily")]).ok();
    assert!(manifest_requests("HEAD") > heads, "the check sent no HEAD");
    assert_eq!(
        manifest_requests("GET"),
        gets,
        "the check sent a manifest GET"
    );
}

#[test]
fn a_stalled_registry_delays_the_daily_check_by_its_bound_and_starts_the_cached_image() {
    use testkit::faults::{Fault, FaultProxy, RequestKind};
    let registry = testkit::Registry::start().unwrap();
    let proxy = FaultProxy::in_front_of(&registry).unwrap();
    let namespace = proxy.namespace("stack");
    let (image, digest) = publish_php_fpm_standin(&namespace, "8.5");
    let mut site = Site::new("stalled-check");
    site.set("IMAGE_REGISTRY", &namespace);
    // Short bounds, so that the test waits seconds: a read timeout ends each silent attempt.
    site.set(
        "STACK_REGISTRY_POLICY",
        "connect=1s,read=1s,operation=5s,attempts=2,backoff=100ms",
    );
    site.cleanup_images.push(image.clone());
    site.run(&["pull"], &[]).ok();

    // The registry accepts connections and never answers: the check gives up within its policy, says so, and
    // the cached image is used; nothing is recorded as checked, so tomorrow's start asks again.
    for kind in [RequestKind::ManifestGet, RequestKind::ManifestHead] {
        proxy.set(kind, Fault::Stall);
    }
    checked_ago(&site, &image, &digest, Duration::from_secs(2 * 86_400));
    let run = site.run(&["pull"], &[("PULL_POLICY", "daily")]).ok();
    assert!(
        run.stderr.contains(&format!(
            "could not check {image} for a republish (PULL_POLICY=daily)"
        )) && run.stderr.contains("starting the cached image"),
        "{}",
        run.stderr
    );
    assert!(
        run.took < Duration::from_secs(60),
        "a stalled registry held `20i pull` for {:?}",
        run.took
    );
    assert!(local_digests(&image).contains(&digest));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(site.home.path().join(".20i/state/checks.json")).unwrap(),
    )
    .unwrap();
    let checked = state[&image]["checked"].as_u64().unwrap();
    let day_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 86_400;
    assert!(
        checked < day_ago && state[&image]["digest"] == digest.as_str(),
        "the stalled check was recorded as a check: {state}"
    );
}
