//! The in-process registry client against a real registry, straight and through the fault proxy: every fault
//! ends in success after a retry or in a bounded error that names the host, the reference, the cause and the
//! attempts, and bytes that do not match their digest are never returned.

use std::time::{Duration, Instant};

use stack_images::{
    docker::{Docker, FailureKind},
    registry::{Policy, RegistryClient, RegistryError},
    Digest, ImageRef, Repository,
};
use testkit::{Fault, FaultProxy, Registry, RequestKind};

use crate::common::{assert_failure, client_with_logins, docker_config, push_fixture, quick};

/// The busybox fixture in a registry, a proxy in front of it, and a client with no login.
struct Setup {
    proxy: FaultProxy,
    _registry: Registry,
    client: RegistryClient,
    /// `test/fixture:1` through the proxy.
    tag: ImageRef,
    index: Digest,
    /// The config of the index's first platform.
    config: Digest,
    _no_logins: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let registry = Registry::start().unwrap();
        let pushed = push_fixture(&registry, false);
        let proxy = FaultProxy::in_front_of(&registry).unwrap();
        let no_logins = tempfile::tempdir().unwrap();
        let client = client_with_logins(no_logins.path());
        let tag: ImageRef = format!("{}/fixture:1", proxy.namespace("test"))
            .parse()
            .unwrap();
        let index = client.get_manifest(&tag).unwrap();
        assert_eq!(index.digest, pushed);
        let platform = Digest::parse(
            json(&index.bytes)["manifests"][0]["digest"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let manifest = client
            .get_manifest(&tag.repository().at(&platform))
            .unwrap();
        let config =
            Digest::parse(json(&manifest.bytes)["config"]["digest"].as_str().unwrap()).unwrap();
        Setup {
            proxy,
            _registry: registry,
            client,
            tag,
            index: index.digest,
            config,
            _no_logins: no_logins,
        }
    }

    fn repository(&self) -> &Repository {
        self.tag.repository()
    }

    /// An index over the fixture's platforms whose middle byte lies in a long annotation: flipping it keeps the
    /// document valid, so the registry stores it, under another digest.
    fn annotated_index(&self) -> Vec<u8> {
        let index = self.client.get_manifest(&self.tag).unwrap();
        let manifests = &json(&index.bytes)["manifests"];
        let note = "x".repeat(4 * manifests.to_string().len());
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
            "annotations": {"org.example.note": note},
        }))
        .unwrap()
    }
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn reads_checks_and_writes_manifests_and_blobs() {
    let setup = Setup::new();
    let client = &setup.client;

    let index = client.get_manifest(&setup.tag).unwrap();
    assert_eq!(index.digest, setup.index);
    assert_eq!(
        index.media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let by_digest = client
        .get_manifest(&setup.tag.repository().at(&setup.index))
        .unwrap();
    assert_eq!(by_digest, index);

    let head = client.head_manifest(&setup.tag).unwrap();
    assert_eq!(
        (&head.digest, &head.media_type, head.size),
        (&index.digest, &index.media_type, index.bytes.len() as u64)
    );

    let config = client.get_blob(setup.repository(), &setup.config).unwrap();
    assert_eq!(Digest::of(&config), setup.config);
    assert!(json(&config)["architecture"].is_string());

    let copy = setup.repository().tagged(&"copy".parse().unwrap());
    let pushed = client
        .put_manifest(&copy, &index.bytes, &index.media_type)
        .unwrap();
    assert_eq!(pushed, setup.index);
    assert_eq!(client.get_manifest(&copy).unwrap().bytes, index.bytes);

    let annotated = setup.annotated_index();
    let pushed = client.put_manifest(&copy, &annotated, OCI_INDEX).unwrap();
    assert_eq!(pushed, Digest::of(&annotated));
    assert_eq!(client.get_manifest(&copy).unwrap().media_type, OCI_INDEX);

    // A reference by digest must name the bytes: refused before anything is sent.
    let wrong = setup.repository().at(&setup.index);
    let puts = setup.proxy.count(RequestKind::ManifestPut);
    let error = client
        .put_manifest(&wrong, &annotated, OCI_INDEX)
        .unwrap_err();
    assert_failure(&error, FailureKind::DigestMismatch, 0);
    assert_eq!(setup.proxy.count(RequestKind::ManifestPut), puts);

    let missing = setup.repository().tagged(&"missing".parse().unwrap());
    let error = client.get_manifest(&missing).unwrap_err();
    assert_failure(&error, FailureKind::NotFound, 1);
    let error = client.head_manifest(&missing).unwrap_err();
    assert_failure(&error, FailureKind::NotFound, 1);
    assert!(setup.proxy.requests().iter().all(|r| r.fault.is_none()));
}

/// What one operation of each kind gives back, reduced to the digest it vouches for.
fn operate(setup: &Setup, kind: RequestKind) -> Result<Digest, RegistryError> {
    let client = &setup.client;
    match kind {
        RequestKind::ManifestGet => client.get_manifest(&setup.tag).map(|m| m.digest),
        RequestKind::ManifestHead => client.head_manifest(&setup.tag).map(|h| h.digest),
        RequestKind::BlobGet => client
            .get_blob(setup.repository(), &setup.config)
            .map(|b| Digest::of(&b)),
        RequestKind::ManifestPut => {
            let bytes = setup.annotated_index();
            let tag = setup.repository().tagged(&"put".parse().unwrap());
            let pushed = client.put_manifest(&tag, &bytes, OCI_INDEX)?;
            // Whatever happened on the way, the tag now serves exactly these bytes.
            assert_eq!(setup.client.get_manifest(&tag).unwrap().bytes, bytes);
            Ok(pushed)
        }
        other => unreachable!("no operation for {other:?}"),
    }
}

fn expected_digest(setup: &Setup, kind: RequestKind) -> Digest {
    match kind {
        RequestKind::BlobGet => setup.config.clone(),
        RequestKind::ManifestPut => Digest::of(&setup.annotated_index()),
        _ => setup.index.clone(),
    }
}

/// `fault` on the next `times` requests of `kind`: the operation still succeeds, with the right bytes, after
/// `times` retries, and takes at least `at_least`.
#[track_caller]
fn check_recovers(setup: &Setup, kind: RequestKind, fault: Fault, times: u32, at_least: Duration) {
    setup.proxy.clear();
    let before = setup.proxy.faulted(kind);
    setup.proxy.set(kind, fault.clone().times(times));
    let started = Instant::now();
    let result = operate(setup, kind);
    let took = started.elapsed();
    setup.proxy.clear();
    let digest = result.unwrap_or_else(|e| panic!("{kind:?} under {fault:?}: {e}"));
    assert_eq!(
        digest,
        expected_digest(setup, kind),
        "{kind:?} under {fault:?}"
    );
    assert_eq!(
        setup.proxy.faulted(kind) - before,
        times as usize,
        "{kind:?} under {fault:?}"
    );
    assert!(took >= at_least, "{kind:?} under {fault:?} took {took:?}");
    assert!(
        took < Duration::from_secs(8),
        "{kind:?} under {fault:?} took {took:?}"
    );
}

#[test]
fn every_transient_fault_ends_in_success_after_a_retry() {
    use RequestKind::*;
    let setup = Setup::new();
    let zero = Duration::ZERO;
    let retry_after = Fault::RateLimited {
        retry_after: Some(1),
    };
    check_recovers(
        &setup,
        ManifestGet,
        retry_after.clone(),
        1,
        Duration::from_secs(1),
    );
    check_recovers(
        &setup,
        ManifestGet,
        Fault::RateLimited { retry_after: None },
        2,
        zero,
    );
    check_recovers(&setup, ManifestGet, Fault::Status(500), 1, zero);
    check_recovers(&setup, ManifestGet, Fault::Status(502), 2, zero);
    check_recovers(&setup, ManifestGet, Fault::Status(503), 3, zero);
    check_recovers(&setup, ManifestGet, Fault::Refuse, 1, zero);
    check_recovers(&setup, ManifestGet, Fault::Reset, 1, zero);
    check_recovers(&setup, ManifestGet, Fault::CutBody, 2, zero);
    check_recovers(&setup, ManifestGet, Fault::FlipByte, 2, zero);
    check_recovers(&setup, ManifestGet, Fault::Stall, 1, quick().read_timeout);
    check_recovers(
        &setup,
        ManifestGet,
        Fault::Delay(Duration::from_millis(200)),
        1,
        zero,
    );
    check_recovers(&setup, ManifestHead, Fault::Status(503), 1, zero);
    check_recovers(&setup, ManifestHead, retry_after, 1, Duration::from_secs(1));
    check_recovers(&setup, ManifestHead, Fault::Reset, 1, zero);
    check_recovers(&setup, ManifestHead, Fault::Stall, 1, quick().read_timeout);
    check_recovers(&setup, BlobGet, Fault::FlipByte, 3, zero);
    check_recovers(&setup, BlobGet, Fault::CutBody, 1, zero);
    check_recovers(&setup, BlobGet, Fault::Status(503), 1, zero);
    check_recovers(&setup, ManifestPut, Fault::Status(503), 1, zero);
    check_recovers(&setup, ManifestPut, Fault::Refuse, 1, zero);
    check_recovers(&setup, ManifestPut, Fault::FlipRequestByte, 1, zero);
    // A slow read by digest: no retry needed, the bytes are right.
    setup.proxy.set(
        ManifestGet,
        Fault::Trickle {
            chunk: 100,
            pause: Duration::from_millis(20),
        }
        .times(1),
    );
    let manifest = setup
        .client
        .get_manifest(&setup.tag.repository().at(&setup.index))
        .unwrap();
    assert_eq!(manifest.digest, setup.index);
}

/// `fault` on every request of `kind`: the operation gives up within `within`, with an error of `expected` kind
/// naming the host, the reference and the attempts.
#[track_caller]
fn check_gives_up(
    setup: &Setup,
    kind: RequestKind,
    fault: Fault,
    expected: FailureKind,
    within: Duration,
) {
    setup.proxy.set(kind, fault.clone());
    let started = Instant::now();
    let result = operate(setup, kind);
    let took = started.elapsed();
    setup.proxy.clear();
    let error = result.expect_err(&format!("{kind:?} under {fault:?} succeeded"));
    let message = error.to_string();
    assert_eq!(error.kind, expected, "{kind:?} under {fault:?}: {message}");
    assert_eq!(error.attempts, quick().attempts, "{message}");
    assert!(message.contains(&setup.proxy.host()), "{message}");
    assert!(
        message.contains("/test/fixture") || message.contains("/test/put:"),
        "{message}"
    );
    assert!(message.contains("after 4 attempts"), "{message}");
    assert!(
        took < within,
        "{kind:?} under {fault:?} took {took:?}: {message}"
    );
}

#[test]
fn a_fault_that_persists_ends_in_a_bounded_named_error() {
    use FailureKind::*;
    use RequestKind::*;
    let setup = Setup::new();
    let seconds = Duration::from_secs;
    check_gives_up(
        &setup,
        ManifestGet,
        Fault::Status(503),
        Unreachable,
        seconds(3),
    );
    check_gives_up(
        &setup,
        ManifestGet,
        Fault::RateLimited { retry_after: None },
        RateLimited,
        seconds(3),
    );
    // Three waits of one second each, as asked.
    check_gives_up(
        &setup,
        ManifestGet,
        Fault::RateLimited {
            retry_after: Some(1),
        },
        RateLimited,
        seconds(5),
    );
    check_gives_up(&setup, ManifestGet, Fault::Reset, Unreachable, seconds(3));
    check_gives_up(&setup, ManifestGet, Fault::CutBody, Unreachable, seconds(3));
    check_gives_up(
        &setup,
        ManifestGet,
        Fault::FlipByte,
        DigestMismatch,
        seconds(3),
    );
    check_gives_up(&setup, BlobGet, Fault::FlipByte, DigestMismatch, seconds(3));
    check_gives_up(
        &setup,
        ManifestHead,
        Fault::Status(502),
        Unreachable,
        seconds(3),
    );
    // Each attempt waits one read timeout (0.5 s) for an answer that never comes.
    check_gives_up(&setup, ManifestGet, Fault::Stall, Unreachable, seconds(4));
    check_gives_up(
        &setup,
        ManifestPut,
        Fault::Status(500),
        Unreachable,
        seconds(3),
    );
}

#[test]
fn flipped_bytes_are_never_returned_and_the_error_names_both_digests() {
    let setup = Setup::new();
    setup.proxy.set(RequestKind::ManifestGet, Fault::FlipByte);
    let by_digest = setup.tag.repository().at(&setup.index);
    let error = setup.client.get_manifest(&by_digest).unwrap_err();
    assert_eq!(error.kind, FailureKind::DigestMismatch);
    let message = error.to_string();
    assert!(
        message.contains(&format!("not the {} asked for", setup.index)),
        "{message}"
    );
    assert!(message.contains("something between here and"), "{message}");
    assert_eq!(setup.proxy.faulted(RequestKind::ManifestGet), 4);

    // A PUT whose bytes change on the way every time: the registry never holds what was sent, and says so.
    setup.proxy.clear();
    setup
        .proxy
        .set(RequestKind::ManifestPut, Fault::FlipRequestByte);
    let bytes = setup.annotated_index();
    let tag = setup.repository().tagged(&"put".parse().unwrap());
    let error = setup
        .client
        .put_manifest(&tag, &bytes, OCI_INDEX)
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::DigestMismatch, "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("not the {} sent", Digest::of(&bytes))),
        "{error}"
    );
}

#[test]
fn the_operation_timeout_bounds_every_attempt_together() {
    let setup = Setup::new();
    let policy = Policy {
        attempts: 100,
        operation_timeout: Duration::from_millis(1500),
        ..quick()
    };
    let client = RegistryClient::new(policy).with_docker_config(setup._no_logins.path());
    setup.proxy.set(RequestKind::ManifestGet, Fault::Stall);
    let started = Instant::now();
    let error = client.get_manifest(&setup.tag).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.kind, FailureKind::Unreachable, "{error}");
    assert!(error.attempts < 100, "{error}");
}

#[test]
fn a_closed_port_is_unreachable_after_every_attempt() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = RegistryClient::new(quick());
    let reference: ImageRef = format!("127.0.0.1:{port}/test/fixture:1").parse().unwrap();
    let error = client.get_manifest(&reference).unwrap_err();
    assert_failure(&error, FailureKind::Unreachable, 4);
    assert!(
        error
            .to_string()
            .contains(&format!("on 127.0.0.1:{port} after 4 attempts")),
        "{error}"
    );
}

#[test]
fn docker_logins_open_a_registry_that_wants_one() {
    let open = Registry::start().unwrap();
    let index = push_fixture(&open, false);
    let source = format!("{}/fixture:1", open.namespace("test"));
    let locked = Registry::start_with_auth("tester", "s3cret-pw").unwrap();
    let target = format!("{}/fixture:1", locked.namespace("test"));
    let copied = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--dest-creds",
            "tester:s3cret-pw",
        ])
        .arg(format!("docker://{source}"))
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let reference: ImageRef = target.parse().unwrap();

    let no_logins = tempfile::tempdir().unwrap();
    let error = client_with_logins(no_logins.path())
        .get_manifest(&reference)
        .unwrap_err();
    assert_failure(&error, FailureKind::Unauthorized, 1);
    assert!(
        error.to_string().ends_with(&format!(
            "run `docker login {}` with an account that may do this",
            locked.host()
        )),
        "{error}"
    );

    let logins = tempfile::tempdir().unwrap();
    Docker::new()
        .unwrap()
        .with_config_dir(logins.path())
        .login(&locked.host(), "tester", "s3cret-pw")
        .unwrap();
    let client = client_with_logins(logins.path());
    assert_eq!(client.get_manifest(&reference).unwrap().digest, index);
    let copy = reference.repository().tagged(&"copy".parse().unwrap());
    let manifest = client.get_manifest(&reference).unwrap();
    assert_eq!(
        client
            .put_manifest(&copy, &manifest.bytes, &manifest.media_type)
            .unwrap(),
        manifest.digest
    );

    // A wrong password is refused for good, and never printed.
    let wrong = docker_config(&format!(
        r#""{}": {{"auth": "dGVzdGVyOndyb25nLXB3"}}"#,
        locked.host()
    ));
    let error = client_with_logins(wrong.path())
        .get_manifest(&reference)
        .unwrap_err();
    assert_failure(&error, FailureKind::Unauthorized, 1);
    assert!(
        !error.to_string().contains("wrong-pw") && !error.to_string().contains("dGVzdGVy"),
        "{error}"
    );
}

/// A registry stand-in that wants a bearer token from its own token service, as GHCR and Docker Hub do (the
/// distribution registry's token auth needs a signing setup this machine does not have). It serves one manifest,
/// `test/img:1`, to `Bearer good-token`; the token service hands that token to `tester:s3cret-pw`, to the refresh
/// token `refresh-1`, and to anyone when `anonymous` is set.
struct TokenRegistry {
    addr: std::net::SocketAddr,
    /// `METHOD path?query` of every request, with the kind of `Authorization` it carried.
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

const TOKEN_MANIFEST: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

impl TokenRegistry {
    fn start(anonymous: bool) -> TokenRegistry {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        // Detached: it ends with the test process, and each connection is answered and closed at once.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                // A TLS ClientHello (the client tries HTTPS first on loopback too): Go's servers answer this.
                if reader.fill_buf().is_ok_and(|b| b.first() == Some(&0x16)) {
                    let _ = stream.write_all(
                        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
                    );
                    continue;
                }
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let (method, target) = (
                    parts.next().unwrap().to_owned(),
                    parts.next().unwrap().to_owned(),
                );
                let (mut authorization, mut length) = (String::new(), 0usize);
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "authorization" => authorization = value.trim().to_owned(),
                        "content-length" => length = value.trim().parse().unwrap(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let user = "Basic dGVzdGVyOnMzY3JldC1wdw=="; // tester:s3cret-pw
                let kind = match authorization.as_str() {
                    "" => "none",
                    a if a == user => "basic",
                    "Bearer good-token" => "bearer",
                    _ => "other",
                };
                log.lock()
                    .unwrap()
                    .push(format!("{method} {target} {kind}"));
                let realm = format!("http://{addr}/token");
                let (status, headers, answer): (&str, String, Vec<u8>) = if target
                    .starts_with("/token")
                {
                    let granted = (method == "GET"
                        && (kind == "basic" || (kind == "none" && anonymous)))
                        || (method == "POST"
                            && body.contains("grant_type=refresh_token&refresh_token=refresh-1&"));
                    let scope = "scope=repository%3Atest%2Fimg%3Apull";
                    if granted && (target.contains(scope) || body.contains(scope)) {
                        let field = if method == "POST" {
                            "access_token"
                        } else {
                            "token"
                        };
                        (
                            "200 OK",
                            String::new(),
                            format!(r#"{{"{field}": "good-token"}}"#).into_bytes(),
                        )
                    } else {
                        ("401 Unauthorized", String::new(), Vec::new())
                    }
                } else if target == "/v2/test/img/manifests/1" && kind == "bearer" {
                    let digest = Digest::of(TOKEN_MANIFEST);
                    let headers =
                        format!("Content-Type: {OCI_INDEX}\r\nDocker-Content-Digest: {digest}\r\n");
                    ("200 OK", headers, TOKEN_MANIFEST.to_vec())
                } else {
                    let challenge = format!(
                        "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:test/img:pull\"\r\n"
                    );
                    ("401 Unauthorized", challenge, Vec::new())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&answer);
            }
        });
        TokenRegistry { addr, seen }
    }

    fn reference(&self) -> ImageRef {
        format!("{}/test/img:1", self.addr).parse().unwrap()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn bearer_tokens_are_fetched_with_dockers_login_and_reused() {
    let registry = TokenRegistry::start(false);
    let host = registry.addr.to_string();
    let login = docker_config(&format!(
        r#""{host}": {{"auth": "dGVzdGVyOnMzY3JldC1wdw=="}}"#
    ));
    let client = client_with_logins(login.path());
    for _ in 0..2 {
        let manifest = client.get_manifest(&registry.reference()).unwrap();
        assert_eq!(manifest.bytes, TOKEN_MANIFEST);
    }
    assert_eq!(
        registry.seen(),
        [
            "GET /v2/test/img/manifests/1 none".to_owned(),
            "GET /token?scope=repository%3Atest%2Fimg%3Apull&service=fake basic".to_owned(),
            "GET /v2/test/img/manifests/1 bearer".to_owned(),
            "GET /v2/test/img/manifests/1 bearer".to_owned(),
        ]
    );

    let refresh = docker_config(&format!(r#""{host}": {{"identitytoken": "refresh-1"}}"#));
    let client = client_with_logins(refresh.path());
    assert_eq!(
        client.get_manifest(&registry.reference()).unwrap().bytes,
        TOKEN_MANIFEST
    );
    assert!(
        registry.seen().contains(&"POST /token none".to_owned()),
        "{:#?}",
        registry.seen()
    );
}

#[test]
fn an_anonymous_token_serves_public_images_and_a_refused_one_is_unauthorized() {
    let public = TokenRegistry::start(true);
    let nobody = tempfile::tempdir().unwrap();
    let client = client_with_logins(nobody.path());
    assert_eq!(
        client.get_manifest(&public.reference()).unwrap().bytes,
        TOKEN_MANIFEST
    );

    let private = TokenRegistry::start(false);
    let error = client.get_manifest(&private.reference()).unwrap_err();
    assert_failure(&error, FailureKind::Unauthorized, 1);
    let message = error.to_string();
    let refused = format!(
        "the token service http://{}/token refused an anonymous token (401): docker holds no login",
        private.addr
    );
    assert!(message.contains(&refused), "{message}");
    assert!(
        message.ends_with(&format!(
            "run `docker login {}` with an account that may do this",
            private.addr
        )),
        "{message}"
    );
}

#[test]
fn tags_are_listed_across_pages_and_manifests_deleted_by_digest() {
    let setup = Setup::new();
    let client = &setup.client;
    let index = client.get_manifest(&setup.tag).unwrap();
    let annotated = setup.annotated_index();
    let mut expected = vec!["1".to_owned()];
    for n in 0..4 {
        let tag = format!("t{n}");
        client
            .put_manifest(
                &setup.repository().tagged(&tag.parse().unwrap()),
                if n == 3 { &annotated } else { &index.bytes },
                if n == 3 { OCI_INDEX } else { &index.media_type },
            )
            .unwrap();
        expected.push(tag);
    }
    let mut tags: Vec<String> = client
        .list_tags(setup.repository())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    tags.sort();
    assert_eq!(tags, expected);
    // distribution 2.8 sends every tag in one page (it ignores `n`): `Link` is followed in the unit tests.
    let none = client.list_tags(
        &format!("{}/none", setup.proxy.namespace("test"))
            .parse()
            .unwrap(),
    );
    assert_eq!(none.unwrap_err().kind, FailureKind::NotFound);

    // By digest: the annotated index goes, and with it its one tag; a second delete finds it gone.
    let annotated = setup.repository().at(&Digest::of(&annotated));
    use stack_images::registry::Deletion;
    assert_eq!(
        client.delete_manifest(&annotated).unwrap(),
        Deletion::Deleted
    );
    assert_eq!(client.delete_manifest(&annotated).unwrap(), Deletion::Gone);
    assert_eq!(
        client
            .get_manifest(&setup.repository().tagged(&"t3".parse().unwrap()))
            .unwrap_err()
            .kind,
        FailureKind::NotFound
    );
    assert_eq!(client.get_manifest(&setup.tag).unwrap().digest, setup.index);
    // A tag alone is not deleted: the API deletes by digest.
    let error = client.delete_manifest(&setup.tag).unwrap_err();
    assert!(error.to_string().contains("deleted by digest"), "{error}");

    // A registry that does not allow deleting says so, and that is an answer, not an error.
    setup.proxy.set(RequestKind::Other, Fault::Status(405));
    let refused = client
        .delete_manifest(&setup.repository().at(&setup.index))
        .unwrap();
    assert!(
        matches!(&refused, Deletion::Refused(cause) if cause.contains("405")),
        "{refused:?}"
    );
    setup.proxy.clear();
    assert_eq!(client.get_manifest(&setup.tag).unwrap().digest, setup.index);
}
