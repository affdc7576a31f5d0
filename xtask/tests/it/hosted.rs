//! The release against registries that behave like GHCR and Docker Hub (`testkit::Hosted`: the real `distribution`
//! over TLS from a CA the test makes, its own token auth, each service's quirks on the proxy in front), one test
//! per row of issue 18: a full signed release, the first release into a Docker Hub organisation's repository that
//! does not exist, `release merge` and `republish`, `prune`, and `bases refresh --check` with no login. Each
//! asserts the outcome and the stand-ins' counters: the quirk was met, and a registry that must not be touched
//! was not. The CAs are only in docker's `certs.d`, where the xtask, cosign and skopeo read them.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use stack_images::{
    registry::{Policy, RegistryClient},
    ImageRef,
};
use testkit::{fixtures, Accounts, Grant, Hosted, HubLimits, Registry, Rule};

use crate::setup::{
    assert_ok, key_pair, notes, with_flag, HostedPair, Keys, Setup, DOCKER_CERTS_D, KEY_PASSWORD,
    LINES,
};

const VERSION: &str = "v3.0.0";

/// A user's own namespace on the Docker-Hub-like: the first push creates the repository.
fn user_namespace() -> HubLimits {
    HubLimits {
        manifest_gets_before_429: 10_000,
        push_creates_repository: true,
    }
}

/// Lines of a registry's access log that are requests with this method under `/v2/NAME/`.
fn requests(registry: &Registry, method: &str) -> Vec<String> {
    registry
        .log()
        .lines()
        .filter(|l| {
            l.contains(&format!("\"{method} /v2/")) && !l.contains(&format!("\"{method} /v2/ "))
        })
        .map(str::to_owned)
        .collect()
}

/// Every reference the notes record serves, to skopeo checking the registry's certificate, the recorded digest.
#[track_caller]
fn check_served(setup: &Setup, version: &str) -> usize {
    let notes = notes(&setup.notes_dir(), version);
    let references = notes["references"].as_array().unwrap();
    for reference in references {
        setup.assert_serves_recorded(reference);
    }
    references.len()
}

/// Whether the token service granted the releaser push on `repository`: asked by the client itself, since a
/// GHCR-like challenge never names push.
fn granted_push(hosted: &Hosted, repository: &str) -> bool {
    hosted.tokens.requests().into_iter().any(|r| {
        r.user.as_deref() == Some(crate::setup::USER)
            && r.granted
                .iter()
                .any(|s| s.name == repository && s.actions.iter().any(|a| a == "push"))
    })
}

/// `cosign verify --key` run independently, trusting the registry's CA as given, with the test's logins.
fn cosign_verify(setup: &Setup, keys: &Keys, hosted: &Hosted, image: &str) -> Output {
    Command::new("cosign")
        .arg("verify")
        .arg(format!("--key={}", keys.public.display()))
        .arg(format!("--registry-cacert={}", hosted.ca_file().display()))
        .args(["--insecure-ignore-tlog=true", "--", image])
        .env("DOCKER_CONFIG", setup.docker_config.path())
        .env_remove("COSIGN_PASSWORD")
        .output()
        .expect("cosign is installed by `make setup`")
}

#[test]
fn a_signed_release_to_ghcr_like_and_docker_hub_like_registries() -> anyhow::Result<()> {
    let setup = Setup::hosted(&["8.5"], &["linux/amd64"], user_namespace())?;
    let keys = key_pair();
    let signing = format!("key:{}", keys.private.display());
    let public = keys.public.display().to_string();
    let args = setup.release_args(
        VERSION,
        "",
        &["--signing", &signing, "--signing-public-key", &public],
    );
    let output = setup
        .xtask_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .output()?;
    let summary = assert_ok(&output);
    assert!(
        summary.contains(&format!("{VERSION} of php-fpm: done")),
        "{summary}"
    );

    // Pins, the version tag, php-8.5 and latest in both registries, each as recorded.
    assert_eq!(check_served(&setup, VERSION), 2 * 4);
    let HostedPair { ghcr, hub, .. } = setup.pair();
    for (hosted, namespace) in [(ghcr, setup.canonical_ns()), (hub, setup.mirror_ns())] {
        let pin = format!("{namespace}/php-fpm:{VERSION}-php-8.5");
        let digest = setup.skopeo_digest(&pin).unwrap();
        let by_digest = format!("{namespace}/php-fpm@{digest}");
        let verified = cosign_verify(&setup, &keys, hosted, &by_digest);
        assert!(
            verified.status.success(),
            "{by_digest}: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
    }

    // The GHCR-like challenge says only `:pull`, yet the tags were moved: the client asked for push itself, and
    // the token service granted it. Which client meets a scoped challenge first during the release depends on
    // timing (BuildKit's pushes, cosign, the xtask, each asking for its own scopes up front); a fresh client of
    // the xtask's moving a tag is sure to meet one, and must still be accepted.
    let client =
        RegistryClient::new(Policy::default()).with_docker_config(setup.docker_config.path());
    let pin: ImageRef = format!("{}/php-fpm:{VERSION}-php-8.5", setup.canonical_ns()).parse()?;
    let manifest = client.get_manifest(&pin)?;
    let challenged = ghcr.proxy.fired(Rule::ChallengePullOnly);
    let moved: ImageRef = format!("{}/php-fpm:moved-by-the-test", setup.canonical_ns()).parse()?;
    client.put_manifest(&moved, &manifest.bytes, &manifest.media_type)?;
    assert!(ghcr.proxy.fired(Rule::ChallengePullOnly) > challenged);
    assert_eq!(
        setup.skopeo_digest(&moved.to_string()),
        Some(manifest.digest)
    );
    assert!(granted_push(ghcr, "stack/php-fpm"));
    let journal = std::fs::read_to_string(setup.work_dir(VERSION).join("commands.log"))?;
    for tag in ["latest", "php-8.5", VERSION] {
        assert!(
            journal
                .lines()
                .any(|l| l.starts_with("registry PUT manifest")
                    && l.contains(&format!("{}/php-fpm:{tag}", setup.canonical_ns()))),
            "{tag} moved on the canonical: {journal}"
        );
    }
    assert!(
        ghcr.proxy.fired(Rule::RelativeLocation) > 0,
        "uploads took a relative Location"
    );

    // Blobs read from the Docker-Hub-like came from its CDN, which never saw an Authorization header.
    assert!(hub.proxy.fired(Rule::BlobRedirect) > 0);
    assert!(hub.proxy.fired(Rule::CdnServed) > 0);
    assert_eq!(hub.proxy.fired(Rule::CdnRefusedAuthorization), 0);
    assert!(hub.proxy.fired(Rule::AbsoluteLocation) > 0);
    assert_eq!(hub.proxy.fired(Rule::RateLimited), 0);
    Ok(())
}

#[test]
fn a_first_release_into_a_docker_hub_organisation_stops_at_preflight_naming_the_repository(
) -> anyhow::Result<()> {
    let setup = Setup::hosted(&["8.5"], &["linux/amd64"], HubLimits::default())?;
    let output = setup.release(VERSION, "", &[]);
    assert!(!output.status.success(), "the release must stop");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let HostedPair { ghcr, hub, .. } = setup.pair();
    let host = hub.host();
    assert!(
        stderr.contains(&format!(
            "{}/php-fpm does not exist on {host}",
            setup.mirror_ns()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("create `mirror/php-fpm`") && stderr.contains("nothing was pushed"),
        "{stderr}"
    );
    assert!(hub.proxy.fired(Rule::MissingRepositoryUnauthorized) > 0);
    // Nothing was uploaded, mounted or tagged in either registry.
    for (name, hosted) in [("GHCR-like", ghcr), ("Docker-Hub-like", hub)] {
        for method in ["PUT", "POST", "PATCH"] {
            let sent = requests(&hosted.registry, method);
            assert!(sent.is_empty(), "{name} saw {method}: {sent:#?}");
        }
    }
    assert!(setup.all_tags().is_empty(), "{:?}", setup.all_tags());
    Ok(())
}

/// `release --platform P --digests-file F` per platform, then `release merge` with every file.
fn split_release(setup: &Setup, platforms: &[&str]) {
    let dir = setup.dir.path();
    let run = |args: Vec<String>| {
        assert_ok(&setup.xtask(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let mut files = Vec::new();
    for platform in platforms {
        let slug = platform.replace('/', "-");
        let file = dir
            .join(format!("digests-{slug}.json"))
            .display()
            .to_string();
        let args = setup.release_args(VERSION, "", &[]);
        let mut args = with_flag(
            args,
            "--work-dir",
            &dir.join(format!("work-{slug}")).display().to_string(),
        );
        args.extend([
            "--platform".into(),
            platform.to_string(),
            "--digests-file".into(),
            file.clone(),
        ]);
        run(args);
        files.push(file);
    }
    let merge = setup.release_args(VERSION, "", &[]);
    let mut merge = with_flag(
        merge,
        "--work-dir",
        &dir.join("work-merge").display().to_string(),
    );
    merge.insert(1, "merge".into());
    for file in files {
        merge.extend(["--digests-file".into(), file]);
    }
    run(merge);
}

#[test]
fn a_split_release_merged_then_republished_through_ghcr_like_and_docker_hub_like(
) -> anyhow::Result<()> {
    let platforms = ["linux/amd64", "linux/arm64"];
    let setup = Setup::hosted(&["8.5"], &platforms, user_namespace())?;
    split_release(&setup, &platforms);
    assert_eq!(check_served(&setup, VERSION), 2 * 4);
    let merged = notes(&setup.notes_dir(), VERSION);
    let platforms_of = |notes: &serde_json::Value| -> Vec<String> {
        notes["images"][0]["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["platform"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(platforms_of(&merged), platforms);
    let HostedPair { ghcr, hub, .. } = setup.pair();
    assert!(granted_push(ghcr, "stack/php-fpm"));
    assert!(
        ghcr.proxy.plain_connections() > 0,
        "the merge's imagetools reached the GHCR-like in plain HTTP, as buildx does on loopback"
    );

    // Upstream rebuilds 8.5's base; v3.0.0 is republished on it, in both registries.
    let source = format!("{}/fixtures/php-standin", setup.canonical.host());
    fixtures::push_busybox(
        &format!("{source}:8.5-fpm-alpine"),
        "LABEL stand-in-for=php:8.5-fpm-alpine rebuilt=1\n",
        false,
    )?;
    let lock = setup.lock().display().to_string();
    assert_ok(&setup.xtask(&["bases", "refresh", "--lock", &lock]));
    let before = setup.all_tags();
    let mut republish = setup.release_args(VERSION, VERSION, &["--reason", "base rebuilt"]);
    republish[0] = "republish".into();
    assert_ok(&setup.xtask(&republish.iter().map(String::as_str).collect::<Vec<_>>()));
    let after = setup.all_tags();
    assert_eq!(before.len(), after.len(), "{before:?}\n{after:?}");
    for ((reference, old), (_, new)) in before.iter().zip(&after) {
        assert_ne!(old, new, "{reference} moved to the republished digest");
    }
    let republished = notes(&setup.notes_dir(), VERSION);
    assert_eq!(
        republished["republished"][0]["changes"]
            .as_array()
            .map(Vec::len),
        Some(2 * 4)
    );
    assert_eq!(check_served(&setup, VERSION), 2 * 4);
    assert_eq!(hub.proxy.fired(Rule::CdnRefusedAuthorization), 0);
    Ok(())
}

#[test]
fn prune_lists_what_no_tag_reaches_and_both_refuse_the_delete() -> anyhow::Result<()> {
    let setup = Setup::hosted(&["8.5"], &["linux/amd64"], user_namespace())?;
    split_release(&setup, &["linux/amd64"]);
    let HostedPair { ghcr, hub, .. } = setup.pair();
    // The mirror gets a staging build too (a copy, as a maintainer might leave one), so that both are asked.
    let staging_tag = format!("{VERSION}-php-8.5-linux-amd64");
    let staging = |namespace: &str| format!("{namespace}/php-fpm-staging:{staging_tag}");
    let authfile = setup.docker_config.path().join("config.json");
    let copied = Command::new("skopeo")
        .args(["copy", "--all", "--authfile"])
        .arg(&authfile)
        .arg(format!("docker://{}", staging(&setup.canonical_ns())))
        .arg(format!("docker://{}", staging(&setup.mirror_ns())))
        .output()?;
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let tags_before = setup.all_tags();

    for (hosted, namespace) in [(ghcr, setup.canonical_ns()), (hub, setup.mirror_ns())] {
        let dry = setup.prune(&namespace, &[]);
        assert!(
            dry.contains(&format!(
                "staging tag {staging_tag} (merged into {VERSION}-php-8.5)"
            )),
            "{dry}"
        );
        assert!(dry.contains("dry run: nothing deleted"), "{dry}");
        let listed = dry
            .lines()
            .filter(|l| l.starts_with("  ") && l.contains("@sha256:"))
            .count();
        assert!(listed > 0, "{dry}");
        assert_eq!(hosted.proxy.fired(Rule::DeleteUnsupported), 0);

        let applied = setup.prune(&namespace, &["--apply"]);
        assert!(
            applied.contains(&format!("deleted 0 of {listed}")),
            "{applied}"
        );
        assert!(
            applied.contains(&format!("{listed} refused by the registry")),
            "{applied}"
        );
        assert_eq!(hosted.proxy.fired(Rule::DeleteUnsupported), listed);
        assert!(
            requests(&hosted.registry, "DELETE").is_empty(),
            "the registry never saw a DELETE"
        );
        assert!(
            setup.skopeo_digest(&staging(&namespace)).is_some(),
            "the staging build is still there"
        );
    }
    assert_eq!(setup.all_tags(), tags_before, "nothing was deleted");
    Ok(())
}

#[test]
fn bases_refresh_check_reads_docker_hub_like_library_php_with_no_login() -> anyhow::Result<()> {
    // Where the bases come from: the plain loopback registry, copied into `library/php` by its publisher.
    let fixtures_registry = Registry::start()?;
    let fixtures_ns = fixtures_registry.namespace("fixtures");
    for line in LINES {
        fixtures::push_busybox(
            &format!("{fixtures_ns}/php:{line}-fpm-alpine"),
            &format!("LABEL stand-in-for=php:{line}-fpm-alpine\n"),
            false,
        )?;
    }
    let publisher = ("publisher", "publisher-test-password");
    let accounts = Accounts {
        users: vec![(publisher.0.to_owned(), publisher.1.to_owned())],
        grants: vec![Grant::new(publisher.0, "library", &["pull", "push"])],
        public_pull: true,
    };
    let hub = Hosted::docker_hub_like(accounts, user_namespace(), Duration::from_secs(300))?;
    let _trust = hub.trust_in(Path::new(DOCKER_CERTS_D))?;
    let publish = |line: &str, from: &str| {
        let copied = Command::new("skopeo")
            .args(["copy", "--all", "--src-tls-verify=false", "--dest-creds"])
            .arg(format!("{}:{}", publisher.0, publisher.1))
            .arg(format!("docker://{from}"))
            .arg(format!(
                "docker://{}/php:{line}-fpm-alpine",
                hub.namespace("library")
            ))
            .output()
            .unwrap();
        assert!(
            copied.status.success(),
            "{}",
            String::from_utf8_lossy(&copied.stderr)
        );
    };
    for line in LINES {
        publish(line, &format!("{fixtures_ns}/php:{line}-fpm-alpine"));
    }
    let cdn_before = hub.proxy.fired(Rule::CdnServed);

    // No login anywhere: an empty docker config.
    let anonymous = tempfile::tempdir()?;
    let lock = anonymous.path().join("hub.lock.toml");
    let lock_arg = lock.display().to_string();
    let source = format!("{}/php", hub.namespace("library"));
    // Each run's token requests are anonymous, and granted.
    let bases = |args: &[&str]| {
        let before = hub.tokens.requests().len();
        let output = crate::xtask_command()
            .args(args)
            .env("DOCKER_CONFIG", anonymous.path())
            .output()
            .unwrap();
        let asked = &hub.tokens.requests()[before..];
        assert!(!asked.is_empty());
        assert!(
            asked.iter().all(|r| r.user.is_none() && r.status == 200),
            "{asked:#?}"
        );
        output
    };
    assert_ok(&bases(&[
        "bases", "refresh", "--source", &source, "--lock", &lock_arg,
    ]));
    let check = bases(&["bases", "refresh", "--check", "--lock", &lock_arg]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Upstream moves 8.4: the check says so and writes nothing.
    let written = std::fs::read_to_string(&lock)?;
    fixtures::push_busybox(
        &format!("{fixtures_ns}/php:8.4-fpm-alpine-rebuilt"),
        "LABEL stand-in-for=php:8.4-fpm-alpine rebuilt=1\n",
        false,
    )?;
    publish("8.4", &format!("{fixtures_ns}/php:8.4-fpm-alpine-rebuilt"));
    let moved = bases(&["bases", "refresh", "--check", "--lock", &lock_arg]);
    let stdout = String::from_utf8_lossy(&moved.stdout);
    assert_eq!(moved.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("8.4"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&lock)?, written);

    // The refreshes' blob reads went to the CDN, without the token.
    assert!(hub.proxy.fired(Rule::RateLimitHeaders) > 0);
    assert_eq!(hub.proxy.fired(Rule::RateLimited), 0);
    assert!(hub.proxy.fired(Rule::CdnServed) > cdn_before);
    assert_eq!(hub.proxy.fired(Rule::CdnRefusedAuthorization), 0);
    Ok(())
}
