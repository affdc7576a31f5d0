//! `20i` against registries hosted the way GHCR and Docker Hub host theirs (`testkit::hosted`: TLS from a test CA,
//! token auth, each service's quirks on the proxy in front), all stand-ins on loopback: pulls and starts from the
//! GHCR-like canonical and the Docker-Hub-like mirror, the `PULL_POLICY` check counted at the registry,
//! `VERIFY_SIGNATURE=true` through TLS, the CA found in docker's `certs.d` or nowhere, and an HTTPS proxy.
//!
//! docker trusts any certificate on loopback; the in-process client and cosign do not, so a test that needs them
//! to trust the CA writes it to `/etc/docker/certs.d/127.0.0.1:PORT/` (the registry's own port), removed on drop.
//! The token service speaks plain HTTP (`Hosted::start_with` and `TokenTransport::PlainHttp`): docker's daemon fetches tokens
//! with its own system roots, where the test CA cannot be. Images are pushed with skopeo, zstd-compressed with a
//! layer of their own, so that docker's content store has never seen their blobs and a pull fetches them.

use std::{
    cell::RefCell,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use stack_images::{
    cosign::{Cosign, CosignCommand, KeyRef, Signer, Subject},
    registry::transport::{DOCKER_CERTS_D, PROXY_LOOPBACK_VAR},
    Digest, ImageRef,
};
use testkit::{
    connect::{ConnectProxy, Limits},
    hosted::{Accounts, Hosted, Like, TokenTransport},
    tls::CertsDirGuard,
    HubLimits, Personality, Rule,
};

use crate::harness::{forget_image, image_exists, reference, Run, Site};

const USER: &str = "stack-owner";
/// A test-only password of the stand-in's only user.
const PASSWORD: &str = "stack-owner-test-password";
const KEY_PASSWORD: &str = "test-only-key-password";

/// A hosted registry stand-in, the logins of a test `DOCKER_CONFIG` for it, and the images pushed to it.
struct Published {
    hosted: Hosted,
    config: tempfile::TempDir,
    /// The CA in docker's `certs.d` for the registry's host, while the test wants it there.
    trusted: RefCell<Option<CertsDirGuard>>,
}

impl Published {
    fn ghcr_like() -> Published {
        let accounts = Accounts::owner(USER, PASSWORD, "stack");
        Published::logged_in(
            Hosted::start_with(
                Like::Ghcr,
                accounts,
                Duration::from_secs(300),
                TokenTransport::PlainHttp,
            )
            .unwrap(),
        )
    }

    /// Docker-Hub-like, in the user's own namespace (a first push creates the repository).
    fn docker_hub_like(manifest_gets_before_429: u32) -> Published {
        let limits = HubLimits {
            manifest_gets_before_429,
            push_creates_repository: true,
        };
        let accounts = Accounts::owner(USER, PASSWORD, "stack");
        Published::logged_in(
            Hosted::start_with(
                Like::DockerHub(limits),
                accounts,
                Duration::from_secs(300),
                TokenTransport::PlainHttp,
            )
            .unwrap(),
        )
    }

    fn logged_in(hosted: Hosted) -> Published {
        let config = tempfile::Builder::new()
            .prefix("20i-docker-config-")
            .tempdir()
            .unwrap();
        hosted.login(config.path(), USER, PASSWORD).unwrap();
        Published {
            hosted,
            config,
            trusted: RefCell::new(None),
        }
    }

    fn namespace(&self) -> String {
        self.hosted.namespace("stack")
    }

    /// The PHP-FPM stand-in of `line` under the release's tag; `nonce` makes its content new (a moved tag).
    fn push(&self, line: &str, nonce: &str) -> (String, Digest) {
        let reference = reference(&self.namespace(), line);
        // A layer of its own, recompressed by the copy below: the engine's content store (where the build
        // leaves its blobs) has never seen it, so a pull fetches it from the registry (or its CDN).
        let unique = format!(
            "{nonce}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let lines = format!(
            "{}LABEL io.20i-test.nonce={nonce}\nRUN echo '{unique}' > /standin/nonce\n",
            testkit::stack::PHP_FPM_STANDIN_LINES
        );
        let context = testkit::fixtures::busybox_context(&lines).unwrap();
        // Built into an OCI archive and copied with skopeo, which trusts the registry's certificate through the
        // test CA (docker's push through the loopback registry would work too, but leaves the image tagged).
        let archive = context.path().join("image.tar");
        docker_with(
            self.config.path(),
            &[
                "buildx",
                "build",
                "--quiet",
                "--platform",
                "linux/amd64",
                "--provenance=false",
                "--output",
                &format!("type=oci,dest={}", archive.display()),
                &context.path().display().to_string(),
            ],
        );
        let digest_file = context.path().join("digest");
        let ca_dir = self.hosted.ca_file().parent().unwrap();
        let output = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--dest-compress-format",
                "zstd",
                "--dest-authfile",
            ])
            .arg(self.config.path().join("config.json"))
            .arg("--dest-cert-dir")
            .arg(ca_dir)
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .expect("running skopeo");
        assert!(
            output.status.success(),
            "skopeo copy to {reference}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let digest = Digest::parse(std::fs::read_to_string(&digest_file).unwrap().trim()).unwrap();
        (reference, digest)
    }

    /// The CA in docker's `certs.d` for this registry's host (where the client and cosign read it), or not.
    fn trust(&self, trusted: bool) {
        let mut guard = self.trusted.borrow_mut();
        if trusted && guard.is_none() {
            *guard = Some(self.hosted.trust_in(Path::new(DOCKER_CERTS_D)).unwrap());
        } else if !trusted {
            *guard = None;
        }
    }

    /// A site whose canonical registry is this one, logged in through the test `DOCKER_CONFIG`.
    fn site(&self, label: &str) -> Site {
        let mut site = Site::new(label);
        site.set("IMAGE_REGISTRY", &self.namespace());
        site.set("DOCKER_CONFIG", &self.config.path().display().to_string());
        site.set("ALLOW_LOCAL_BUILD_FALLBACK", "false");
        site
    }

    /// Manifest requests with `method` the registry behind the proxy served (what reached it).
    fn manifest_requests(&self, method: &str) -> usize {
        self.hosted
            .registry
            .log()
            .lines()
            .filter(|l| l.contains(&format!("\"{method} /v2/")) && l.contains("/manifests/"))
            .count()
    }
}

/// `docker ARGS` with the logins in `config`; panics with docker's message on failure.
#[track_caller]
fn docker_with(config: &Path, args: &[&str]) -> String {
    let docker = std::env::var_os("DOCKER").unwrap_or_else(|| "docker".into());
    let output = Command::new(docker)
        .env("DOCKER_CONFIG", config)
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What `20i` wrote to both streams.
fn said(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

/// A port of 127.0.0.1 where nothing listens: a registry that refuses connections.
fn refusing_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn pull_and_start_from_a_ghcr_like_canonical_and_a_docker_hub_like_mirror() {
    let ghcr = Published::ghcr_like();
    let hub = Published::docker_hub_like(100);
    let (canonical, _) = ghcr.push("8.5", "canonical");
    let (mirrored, _) = hub.push("8.5", "mirror");

    let mut site = ghcr.site("hosted-pull");
    site.cleanup_images.push(canonical.clone());
    let pulled = site.run(&["pull"], &[]).ok();
    pulled.expect_stdout(&format!(
        "php-fpm  {canonical} (pulled from {})",
        ghcr.namespace()
    ));
    site.run(&["start"], &[]).ok();
    site.run(&["stop"], &[]).ok();
    forget_image(&canonical);

    // The canonical refuses connections: the Docker-Hub-like mirror serves the same tag, its blobs through the
    // CDN redirect (without the Authorization the CDN refuses); the login is the mirror's own.
    let down = format!("127.0.0.1:{}/stack", refusing_port());
    site.set("IMAGE_REGISTRY", &down);
    site.set("IMAGE_MIRRORS", &hub.namespace());
    let hub_config = hub.config.path().display().to_string();
    let expected = reference(&down, "8.5");
    site.cleanup_images.extend([expected.clone(), mirrored]);
    let from_mirror = site.run(&["start"], &[("DOCKER_CONFIG", &hub_config)]).ok();
    assert!(
        said(&from_mirror).contains(&format!("pulled from the mirror {}", hub.namespace())),
        "{}",
        said(&from_mirror)
    );
    assert!(image_exists(&expected), "{expected} is not tagged");
    assert!(
        hub.hosted.proxy.fired(Rule::BlobRedirect) > 0,
        "no blob was redirected"
    );
    assert!(
        hub.hosted.proxy.fired(Rule::CdnServed) > 0,
        "the CDN served nothing"
    );
}

#[test]
fn a_pull_policy_check_through_ghcr_like_sends_head_and_refuses_an_overwritten_pin() {
    let ghcr = Published::ghcr_like();
    ghcr.trust(true);
    let (image, _) = ghcr.push("8.5", "first");
    let mut site = ghcr.site("hosted-check");
    site.cleanup_images.push(image.clone());
    site.run(&["pull"], &[]).ok();

    // Current: a manifest HEAD answers, no GET reaches the registry.
    let (gets, heads) = (
        ghcr.manifest_requests("GET"),
        ghcr.manifest_requests("HEAD"),
    );
    let checked = site.run(&["pull"], &[("PULL_POLICY", "always")]).ok();
    assert!(
        !said(&checked).contains("could not check"),
        "{}",
        said(&checked)
    );
    // Said as it is: the registry was asked.
    checked.expect_stdout(&format!("(cache (checked with {}))", ghcr.namespace()));
    assert!(
        ghcr.manifest_requests("HEAD") > heads,
        "the check sent no HEAD"
    );
    assert_eq!(
        ghcr.manifest_requests("GET"),
        gets,
        "the check sent a manifest GET"
    );

    // The pin tag overwritten (other bytes, no republish annotations): reported, not pulled; the cached image
    // stays.
    let (_, moved) = ghcr.push("8.5", "second");
    let gets = ghcr.manifest_requests("GET");
    let overwritten = site.run(&["pull"], &[("PULL_POLICY", "always")]).ok();
    overwritten.expect_stdout(&format!("(cache (checked with {}))", ghcr.namespace()));
    assert!(
        said(&overwritten).contains(&format!("{image} now serves {moved}"))
            && said(&overwritten).contains("it was overwritten. Not pulled"),
        "{}",
        said(&overwritten)
    );
    assert!(!said(&overwritten).contains("(pulled from"));
    // At most one GET read its annotations (a digest not seen before); docker pulled nothing.
    assert!(ghcr.manifest_requests("GET") <= gets + 1);
}

#[test]
fn a_rate_limited_check_through_docker_hub_like_says_so_and_starts_the_cached_image() {
    let hub = Published::docker_hub_like(100);
    hub.trust(true);
    let (image, _) = hub.push("8.5", "first");
    let mut site = hub.site("hosted-limit");
    site.cleanup_images.push(image.clone());
    site.run(&["pull"], &[]).ok();

    let gets = hub.manifest_requests("GET");
    let checked = site.run(&["pull"], &[("PULL_POLICY", "always")]).ok();
    assert!(
        !said(&checked).contains("could not check"),
        "{}",
        said(&checked)
    );
    assert_eq!(
        hub.manifest_requests("GET"),
        gets,
        "the check sent a manifest GET"
    );

    // The tag moves and the pull limit is used up: the check's HEAD sees a new digest, the GET of it is 429.
    hub.push("8.5", "second");
    hub.hosted
        .proxy
        .set_personality(Personality::DockerHub(HubLimits {
            manifest_gets_before_429: 0,
            push_creates_repository: true,
        }))
        .unwrap();
    let started = site.run(&["start"], &[("PULL_POLICY", "always")]).ok();
    let text = said(&started);
    assert!(
        hub.hosted.proxy.fired(Rule::RateLimited) > 0,
        "no 429 was sent"
    );
    for fragment in [
        &format!("could not check {image}"),
        "429",
        "ratelimit-remaining 0",
        "starting the cached image",
    ] {
        assert!(text.contains(fragment), "no {fragment:?} in:\n{text}");
    }
}

/// A cosign key pair in `dir`; the private key's path and the public key's.
fn key_pair(dir: &Path) -> (PathBuf, String) {
    let prefix = dir.join("release");
    Cosign::new()
        .with_password(KEY_PASSWORD)
        .run(&CosignCommand::generate_key_pair(&prefix).unwrap())
        .expect("cosign generate-key-pair");
    (
        dir.join("release.key"),
        dir.join("release.pub").display().to_string(),
    )
}

#[test]
fn a_signature_verifies_through_tls_and_a_missing_ca_stops_at_once() {
    let ghcr = Published::ghcr_like();
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = key_pair(keys.path());
    let (signed, digest) = ghcr.push("8.5", "signed");
    let (unsigned, _) = ghcr.push("8.4", "unsigned");
    // cosign reads the CA where docker does; signing pushes with the test login.
    ghcr.trust(true);
    let image: ImageRef = signed.parse().unwrap();
    let command = CosignCommand::sign(
        &Signer::Key(KeyRef::File(private)),
        Subject::Image(&image.with_digest(&digest)),
    )
    .unwrap();
    Cosign::new()
        .with_password(KEY_PASSWORD)
        .with_docker_config(ghcr.config.path())
        .run(&command)
        .expect("cosign sign");
    ghcr.trust(false);
    let mut site = ghcr.site("hosted-signature");
    site.set("VERIFY_SIGNATURE", "true");
    site.set("SIGNATURE_KEY", &public);
    site.cleanup_images
        .extend([signed.clone(), unsigned.clone()]);

    // The CA nowhere: docker pulls (it checks no CA on loopback), cosign cannot verify, and the start stops at
    // once, naming the host and where a CA is read from.
    let refused = site.run(&["pull"], &[]);
    assert_eq!(refused.code, 3, "{}", said(&refused));
    let host = ghcr.hosted.host();
    for fragment in [
        format!("/etc/docker/certs.d/{host}/ca.crt"),
        "system store".to_owned(),
    ] {
        refused.expect_stderr(&fragment);
    }
    assert!(
        refused.took < Duration::from_secs(20),
        "took {:?}",
        refused.took
    );

    // The CA in docker's certs.d: the signed image verifies, the unsigned one is refused.
    ghcr.trust(true);
    let pulled = site.run(&["pull"], &[]).ok();
    pulled.expect_stderr(&format!("verified the signature of {signed}@{digest}"));
    let refused = site.run(&["pull"], &[("PHP_VERSION", "8.4")]);
    assert_eq!(refused.code, 3, "{}", said(&refused));
    refused.expect_stderr("(no signature): refused and removed, not run");
    assert!(!image_exists(&unsigned), "{unsigned} is still tagged");
}

#[test]
fn a_check_without_the_ca_names_the_host_and_where_to_put_it() {
    let ghcr = Published::ghcr_like();
    let (image, _) = ghcr.push("8.5", "untrusted");
    let mut site = ghcr.site("hosted-untrusted");
    site.cleanup_images.push(image.clone());
    site.run(&["pull"], &[]).ok();

    // The cached image still starts; the check's failure says what to fix, without retries.
    let checked = site.run(&["pull"], &[("PULL_POLICY", "always")]).ok();
    let text = said(&checked);
    let host = ghcr.hosted.host();
    for fragment in [
        format!("could not check {image}"),
        format!("/etc/docker/certs.d/{host}/ca.crt"),
        "system store".to_owned(),
    ] {
        assert!(text.contains(&fragment), "no {fragment:?} in:\n{text}");
    }
    assert!(
        checked.took < Duration::from_secs(10),
        "took {:?}",
        checked.took
    );
}

#[test]
fn a_check_goes_through_an_https_proxy_unless_no_proxy_names_the_host() {
    let ghcr = Published::ghcr_like();
    ghcr.trust(true);
    let (image, _) = ghcr.push("8.5", "proxied");
    let mut site = ghcr.site("hosted-proxy");
    site.cleanup_images.push(image.clone());
    site.run(&["pull"], &[]).ok();

    let proxy = ConnectProxy::start(Limits::default()).unwrap();
    let url = proxy.url();
    let host = ghcr.hosted.host();
    let via_proxy = |no_proxy: &str| {
        site.run(
            &["pull"],
            &[
                ("PULL_POLICY", "always"),
                ("HTTPS_PROXY", &url),
                ("NO_PROXY", no_proxy),
                (PROXY_LOOPBACK_VAR, "1"),
            ],
        )
        .ok()
    };
    // NO_PROXY names other hosts, spelled with spaces: the check's requests go through the tunnel.
    let checked = via_proxy("localhost, example.invalid");
    assert!(
        !said(&checked).contains("could not check"),
        "{}\ntunnels {:?}, refused {}",
        said(&checked),
        proxy.tunnel_stats(),
        proxy.refused()
    );
    assert!(
        proxy.tunnels().contains(&host),
        "no tunnel to {host}: {:?}",
        proxy.tunnels()
    );

    // NO_PROXY names the registry after a space: it is reached directly.
    let before = proxy.tunnels().iter().filter(|t| **t == host).count();
    let direct = via_proxy("example.invalid, 127.0.0.1");
    assert!(
        !said(&direct).contains("could not check"),
        "{}",
        said(&direct)
    );
    let after = proxy.tunnels().iter().filter(|t| **t == host).count();
    assert_eq!(after, before, "the registry was reached through the proxy");
}
