//! `20i version --check` against loopback registries whose tag lists are made in process (an empty OCI index under
//! each tag, through the shared registry client): a newer stable release, the newest one, the canonical registry
//! down and a mirror answering, no registry answering; and the `PULL_POLICY` check's hint, with the one tag list
//! it costs counted at the registry.

use std::process::Command;

use stack_images::{failure::Policy, registry::RegistryClient, ImageRef, ReleaseVersion};

use crate::harness::{publish_php_fpm_standin, Site, VERSION};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Tags `tags` in `namespace`'s php-fpm repository, each an empty index: what a tag list needs, no image.
fn tag(namespace: &str, tags: &[&str]) {
    let client = RegistryClient::new(Policy::default());
    let index = format!(r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[]}}"#);
    for tag in tags {
        let reference: ImageRef = format!("{namespace}/php-fpm:{tag}").parse().unwrap();
        client
            .put_manifest(&reference, index.as_bytes(), INDEX)
            .unwrap_or_else(|e| panic!("tagging {reference}: {e}"));
    }
}

/// A release newer than this launcher's: its next minor.
fn next_minor() -> String {
    let current: ReleaseVersion = VERSION.parse().unwrap();
    let v = current.semver();
    format!("v{}.{}.0", v.major, v.minor + 1)
}

/// `20i version --check` with nothing but a temporary HOME and these variables.
fn check(vars: &[(&str, &str)]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_20i"))
        .args(["version", "--check"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env(
            "STACK_REGISTRY_POLICY",
            "attempts=2,backoff=100ms,backoff-cap=200ms",
        )
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_check_says_whether_a_newer_release_is_out() {
    let canonical = testkit::Registry::start().unwrap();
    let mirror = testkit::Registry::start().unwrap();
    let newer_ns = canonical.namespace("newer");
    let current_ns = canonical.namespace("current");
    let mirror_ns = mirror.namespace("mirror");
    let newer = next_minor();
    // Only a stable release with pins counts: a bare release tag, a prerelease and `latest` do not.
    tag(
        &newer_ns,
        &[
            &format!("v{VERSION}-php-8.5"),
            &format!("{newer}-php-8.4"),
            "v99.0.0",
            "v98.0.0-rc.1-php-8.5",
            "latest",
        ],
    );
    tag(
        &current_ns,
        &[&format!("v{VERSION}-php-8.5"), "v0.0.1-php-8.5"],
    );
    tag(&mirror_ns, &[&format!("{newer}-php-8.5")]);
    let down = testkit::unreachable_url().unwrap();
    let down_ns = format!("{}/stack", down.trim_start_matches("http://"));
    let install = "curl -fsSL https://github.com/20i-stack/20i-stack/releases/latest/download/install.sh | sh";

    // (case, IMAGE_REGISTRY, IMAGE_MIRRORS, exit code, what stdout says, what stderr says)
    let cases = [
        (
            "newer",
            newer_ns.as_str(),
            "",
            0,
            vec![
                format!("a newer stable release is out: {newer} (this launcher is v{VERSION}, checked {newer_ns})"),
                install.to_owned(),
            ],
            vec![],
        ),
        (
            "current",
            current_ns.as_str(),
            "",
            0,
            vec![format!("v{VERSION} is the newest stable release (checked {current_ns})")],
            vec![],
        ),
        (
            "mirror",
            down_ns.as_str(),
            mirror_ns.as_str(),
            0,
            vec![format!("a newer stable release is out: {newer} (this launcher is v{VERSION}, checked {mirror_ns})")],
            vec![],
        ),
        (
            "unreachable",
            down_ns.as_str(),
            "",
            1,
            vec![],
            vec![
                "error: could not check for a newer release".to_owned(),
                format!("{down_ns}: listing the tags of {down_ns}/php-fpm failed"),
                "https://github.com/20i-stack/20i-stack/releases".to_owned(),
            ],
        ),
    ];
    for (name, registry, mirrors, code, stdout, stderr) in cases {
        let (got, out, err) = check(&[("IMAGE_REGISTRY", registry), ("IMAGE_MIRRORS", mirrors)]);
        assert_eq!(got, code, "{name}: {out}{err}");
        assert!(
            out.starts_with(&format!("20i {VERSION}\n")),
            "{name}: {out}"
        );
        for fragment in &stdout {
            assert!(
                out.contains(fragment),
                "{name}: lacks {fragment:?}:\n{out}{err}"
            );
        }
        for fragment in &stderr {
            assert!(
                err.contains(fragment),
                "{name}: lacks {fragment:?}:\n{out}{err}"
            );
        }
    }
}

#[test]
fn a_pull_policy_check_says_a_newer_release_is_out_with_one_tag_list() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let (image, _) = publish_php_fpm_standin(&namespace, "8.5");
    let mut site = Site::new("version-hint");
    site.set("IMAGE_REGISTRY", &namespace);
    site.cleanup_images.push(image);
    site.run(&["pull"], &[]).ok();
    let tag_lists = || {
        registry
            .log()
            .lines()
            // Access-log lines only, as `harness::requests` counts them.
            .filter(|l| l.contains("] \"") && l.contains(" HTTP/1.") && l.contains("/tags/list"))
            .count()
    };

    // The newest release: the check says nothing more.
    let before = tag_lists();
    let current = site.run(&["pull"], &[("PULL_POLICY", "always")]).ok();
    assert!(
        !current.stderr.contains("newer stable release"),
        "{}",
        current.stderr
    );
    assert_eq!(tag_lists(), before + 1, "the check's one tag list");

    // A newer release is out: said once, with the command that installs it; nothing else changes.
    let newer = next_minor();
    tag(&namespace, &[&format!("{newer}-php-8.5")]);
    let hinted = site.run(&["pull"], &[("PULL_POLICY", "always")]).ok();
    hinted.expect_stderr(&format!(
        "a newer stable release is out: {newer} (this launcher is v{VERSION}); install it with: curl -fsSL"
    ));
    hinted.expect_stdout("(cache (checked with");
    assert_eq!(tag_lists(), before + 2, "one tag list per check");

    // No check due: no tag list either.
    site.run(&["pull"], &[]).ok();
    assert_eq!(tag_lists(), before + 2, "PULL_POLICY=missing listed tags");
}

/// The tag list stalled (accepted, never answered) and answered with garbage (cut short mid-body): each is "could
/// not check" in bounded time, with the registry named, and each fault fired.
#[test]
fn version_check_bounds_a_stalled_registry_and_refuses_a_garbled_tag_list() {
    use testkit::{Fault, FaultProxy, RequestKind};

    let registry = testkit::Registry::start().unwrap();
    let proxy = FaultProxy::in_front_of(&registry).unwrap();
    tag(
        &registry.namespace("stack"),
        &[&format!("{}-php-8.5", next_minor())],
    );
    let namespace = proxy.namespace("stack");
    for (name, fault) in [("stalled", Fault::Stall), ("garbled", Fault::CutBody)] {
        proxy.set(RequestKind::TagsList, fault);
        let started = std::time::Instant::now();
        let (code, out, err) = check(&[
            ("IMAGE_REGISTRY", namespace.as_str()),
            ("IMAGE_MIRRORS", ""),
            (
                "STACK_REGISTRY_POLICY",
                "read=1s,operation=2s,attempts=2,backoff=100ms,backoff-cap=200ms",
            ),
        ]);
        let took = started.elapsed();
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(
            err.contains("error: could not check for a newer release")
                && err.contains(&format!(
                    "{namespace}: listing the tags of {namespace}/php-fpm"
                )),
            "{name}: {err}"
        );
        assert!(
            !out.contains("newer stable release is out"),
            "{name}: {out}"
        );
        assert!(
            took < std::time::Duration::from_secs(30),
            "{name}: took {took:?}"
        );
        assert!(
            proxy
                .requests()
                .iter()
                .any(|r| r.kind == RequestKind::TagsList && r.fault.is_some()),
            "{name}: the fault never fired"
        );
    }
}
