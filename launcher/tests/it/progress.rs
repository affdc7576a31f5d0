//! What a first start shows while it pulls, for real: `20i start` on a store that holds none of the stack's four
//! images (each published to a loopback registry under a name new to the store), in a pseudo-terminal and
//! without one; progress that moves behind a throttled registry, a stall shown as a stall, a silent canonical
//! registry handed over to the mirror within the default stall time, and a stack image that cannot be pulled
//! named with its variable.

use std::time::{Duration, Instant};

use testkit::{
    faults::{Fault, FaultProxy, RequestKind},
    probe::http_get,
    stack as standins, Registry,
};

use crate::{
    fresh,
    harness::{docker, forget_image, publish_php_fpm_standin, reference, Site},
};

const LINE: &str = "8.5";

/// Publishes a local image as `remote` and drops the remote name from the store: a pull of `remote` then finds
/// no image of that name (its layers may be known).
fn publish_as(local: &str, remote: &str) {
    docker(&["tag", local, remote]);
    docker(&["push", "--quiet", remote]);
    forget_image(remote);
}

/// A site whose four images are all in `registry` and none in the store under those names.
fn site_on_an_empty_store(label: &str, registry: &Registry) -> Site {
    let namespace = registry.namespace("stack");
    let mut site = Site::new(label);
    let (php_fpm, _) = publish_php_fpm_standin(&namespace, LINE);
    site.set("IMAGE_REGISTRY", &namespace);
    site.set("PHP_VERSION", LINE);
    site.cleanup_images.push(php_fpm);
    let nonce = format!("{}-{label}", std::process::id());
    for (variable, local, name) in [
        ("NGINX_IMAGE", standins::NGINX_STANDIN, "nginx"),
        ("MARIADB_IMAGE", standins::MARIADB_STANDIN, "mariadb"),
        ("PMA_IMAGE", standins::PHPMYADMIN_STANDIN, "phpmyadmin"),
    ] {
        let remote = format!("{namespace}/{name}:{nonce}");
        publish_as(local, &remote);
        site.set(variable, &remote);
        site.cleanup_images.push(remote);
    }
    site
}

/// The lines of `text` as a screen shows them at the end: what follows the last carriage return of each line,
/// escape sequences removed.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[track_caller]
fn assert_first_start(screen: &str, site: &Site) {
    let header = screen
        .find("pulling 4 images, ")
        .unwrap_or_else(|| panic!("no header in:\n{screen}"));
    // The header carries a size: "pulling 4 images, 1.2 MB".
    let after = &screen[header + "pulling 4 images, ".len()..];
    assert!(
        after
            .split_whitespace()
            .next()
            .is_some_and(|n| n.parse::<f64>().is_ok()),
        "no size in the header:\n{screen}"
    );
    let first_done = screen.find("done in").unwrap_or(usize::MAX);
    for label in ["php-fpm", "nginx", "mariadb", "phpmyadmin"] {
        let line = screen[header..]
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no line for {label} in:\n{screen}"));
        assert!(
            line.contains(" B") || line.contains("kB") || line.contains("MB"),
            "{label}'s line has no size: {line}"
        );
        let at = header + screen[header..].find(line).unwrap();
        assert!(
            at <= first_done,
            "{label} shown only after a pull completed:\n{screen}"
        );
    }
    let port = site.var("HOST_PORT").unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("site ") && l.trim_end().ends_with(&url)),
        "no site line with {url} in:\n{screen}"
    );
    assert!(
        screen.contains("pulled 4 images at once"),
        "no summary of the pulls in:\n{screen}"
    );
    let page = http_get(
        port.parse().unwrap(),
        "/20i-health",
        Duration::from_secs(30),
    );
    assert!(page.is_ok(), "the site's URL does not answer: {page:?}");
}

#[test]
fn a_first_start_in_a_terminal_shows_each_image_with_its_size_then_the_site() {
    let registry = Registry::start().unwrap();
    let site = site_on_an_empty_store("tty", &registry);
    let run = site.run_in_terminal(&["start"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("\x1b[2K"),
        "no line redrawn in place on a terminal:\n{:?}",
        run.stdout
    );
    assert_first_start(&plain(&run.stdout), &site);
}

#[test]
fn a_first_start_without_a_terminal_prints_plain_lines() {
    let registry = Registry::start().unwrap();
    let site = site_on_an_empty_store("plain", &registry);
    let run = site.run(&["start"], &[]).ok();
    assert!(
        !run.stderr.contains('\x1b') && !run.stdout.contains('\x1b'),
        "an escape byte without a terminal:\n{:?}",
        run.stderr
    );
    assert_first_start(&format!("{}{}", run.stderr, run.stdout), &site);
}

#[test]
fn a_stack_image_that_cannot_be_pulled_is_named_with_its_variable() {
    let registry = Registry::start().unwrap();
    let mut site = site_on_an_empty_store("missing", &registry);
    let absent = format!("{}/absent:1", registry.namespace("stack"));
    site.set("PMA_IMAGE", &absent);
    let run = site.run(&["start"], &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    run.expect_stderr(&format!(
        "the phpmyadmin image {absent} could not be pulled: not found at {absent}; check PMA_IMAGE"
    ));
    assert!(site.containers().is_empty(), "started without an image");
}

/// A PHP-FPM image behind a fault proxy, with `size` bytes of a new layer.
fn noisy_source(size: usize) -> (Registry, FaultProxy, String) {
    let registry = Registry::start().unwrap();
    let proxy = FaultProxy::in_front_of(&registry).unwrap();
    fresh::put_standin(&format!("{}/stack/php-fpm:source", registry.host()));
    let tag = reference(&proxy.namespace("stack"), LINE);
    testkit::noise::noisy(
        &registry.host(),
        "stack/php-fpm",
        "source",
        tag.rsplit_once(':').unwrap().1,
        size,
    )
    .unwrap();
    (registry, proxy, tag)
}

/// The bytes done of each `php-fpm` progress line of `stderr` with a total (`1.2 MB / 3.0 MB`), in order.
fn bytes_done(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("php-fpm") && l.contains(" / "))
        .filter_map(|l| {
            let (before, _) = l.split_once(" / ")?;
            let words: Vec<&str> = before.split_whitespace().collect();
            Some(words[words.len() - 2..].join(" "))
        })
        .collect()
}

#[test]
fn a_throttled_registry_shows_moving_progress_and_a_stall_shows_as_a_stall() {
    // Throttled: 64 KiB every 300 ms, 2 MB of new layer: about 9 s, so the plain lines (every 3 s) show it move.
    let (_registry, proxy, tag) = noisy_source(2_000_000);
    proxy.set(
        RequestKind::BlobGet,
        Fault::Trickle {
            chunk: 64 * 1024,
            pause: Duration::from_millis(300),
        },
    );
    let mut site = Site::new("throttled");
    site.set("IMAGE_REGISTRY", &proxy.namespace("stack"));
    site.set("PHP_VERSION", LINE);
    site.set("ALLOW_LOCAL_BUILD_FALLBACK", "false");
    site.cleanup_images.push(tag.clone());
    let run = site.run(&["pull"], &[]).ok();
    assert!(
        proxy.faulted(RequestKind::BlobGet) > 0,
        "the throttle never fired"
    );
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
    // The header's total, before any progress line: the new layer and the stand-in's own, over 2 MB.
    let header = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("pulling 1 image, "))
        .unwrap_or_else(|| panic!("no header in:\n{}", run.stderr));
    assert!(
        header.ends_with(" MB") && header.trim_end_matches(" MB").parse::<f64>().unwrap() > 2.0,
        "{header}"
    );
    let done = bytes_done(&run.stderr);
    let mut distinct = done.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "the progress did not move: {done:?}\n{}",
        run.stderr
    );

    // Stalled: every blob request accepted and never answered.
    let (_registry, proxy, tag) = noisy_source(200_000);
    proxy.set(RequestKind::BlobGet, Fault::Stall);
    site.set("IMAGE_REGISTRY", &proxy.namespace("stack"));
    site.set("PULL_STALL_TIMEOUT", "8");
    site.cleanup_images.push(tag.clone());
    let run = site.run(&["pull"], &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        proxy.faulted(RequestKind::BlobGet) > 0,
        "the stall never fired"
    );
    let countdown: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("stalled, ") && l.ends_with(" s left"))
        .collect();
    assert!(
        !countdown.is_empty(),
        "the stall was not shown as one:\n{}",
        run.stderr
    );
    run.expect_stderr(&format!("stalled for 8 s at {tag}"));
}

#[test]
fn a_silent_canonical_registry_hands_over_to_the_mirror_within_the_default() {
    let canonical = Registry::start().unwrap();
    let proxy = FaultProxy::in_front_of(&canonical).unwrap();
    for kind in [RequestKind::ManifestHead, RequestKind::ManifestGet] {
        proxy.set(kind, Fault::Stall);
    }
    let mirror = Registry::start().unwrap();
    let mirror_ns = mirror.namespace("mirror");
    let (mirrored, _) = publish_php_fpm_standin(&mirror_ns, LINE);
    let mut site = Site::new("silent");
    let canonical_ns = proxy.namespace("stack");
    site.set("IMAGE_REGISTRY", &canonical_ns);
    site.set("IMAGE_MIRRORS", &mirror_ns);
    site.set("PHP_VERSION", LINE);
    site.set("ALLOW_LOCAL_BUILD_FALLBACK", "false");
    // PULL_STALL_TIMEOUT is left to its default.
    site.unset("PULL_STALL_TIMEOUT");
    let image = reference(&canonical_ns, LINE);
    site.cleanup_images.extend([image.clone(), mirrored]);
    let started = Instant::now();
    let run = site.run(&["pull"], &[]).ok();
    let took = started.elapsed();
    run.expect_stdout(&format!(
        "php-fpm  {image} (pulled from the mirror {mirror_ns})"
    ));
    let stalled =
        proxy.faulted(RequestKind::ManifestHead) + proxy.faulted(RequestKind::ManifestGet);
    assert!(stalled > 0, "the canonical registry's stall never fired");
    run.expect_stderr(&format!("stalled for 30 s at {image}"));
    // The default stall time, the size read's 5 s bound, and room for a loaded machine.
    assert!(
        took < Duration::from_secs(30 + 25),
        "the mirror was reached only after {took:?}"
    );
}
