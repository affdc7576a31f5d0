//! The registry client against a real `distribution` with `auth: token`, its tokens from the token service
//! stand-in (`testkit::TokenService`), behind the fault proxy wearing GHCR's or Docker Hub's personality
//! (stand-ins for both services): the scopes it asks for, tokens refreshed as they expire, absent repositories
//! as each says it, and refused mounts uploaded. Each test asserts that the stand-in's behaviour fired.

use std::time::Duration;

use base64::Engine as _;
use stack_images::{
    docker::FailureKind,
    registry::{Absence, RegistryClient},
    ImageRef,
};
use testkit::{
    Fault, FaultProxy, Flavor, Grant, HubLimits, Personality, Registry, RequestKind, Rule,
    TokenOptions, TokenService,
};

use crate::common::{client_with_logins, docker_config, push_fixture};

const ALICE: (&str, &str) = ("alice", "alice-password");

/// The busybox fixture in a plain registry, and a token-auth registry behind a proxy where Alice may pull,
/// push and delete under `team`; the client holds Alice's `docker login` for the proxy.
struct Setup {
    proxy: FaultProxy,
    _registry: Registry,
    tokens: TokenService,
    source: Registry,
    /// The fixture, by digest, in the plain registry.
    fixture: ImageRef,
    client: RegistryClient,
    logins: tempfile::TempDir,
}

impl Setup {
    fn new(flavor: Flavor, expires_in: Duration) -> Setup {
        Setup::start(flavor, expires_in, false)
    }

    /// With `public_pull`, anyone gets a pull token for any repository, as for Docker Hub's public images.
    fn start(flavor: Flavor, expires_in: Duration, public_pull: bool) -> Setup {
        let source = Registry::start().unwrap();
        let digest = push_fixture(&source, false);
        let fixture = format!("{}/fixture@{digest}", source.namespace("test"))
            .parse()
            .unwrap();
        let tokens = TokenService::start(TokenOptions {
            flavor,
            users: vec![(ALICE.0.to_owned(), ALICE.1.to_owned())],
            grants: vec![Grant::new(ALICE.0, "team", &["pull", "push", "delete"])],
            expires_in,
            public_pull,
        })
        .unwrap();
        let registry = Registry::builder()
            .token(tokens.registry_auth())
            .start()
            .unwrap();
        let proxy = FaultProxy::in_front_of(&registry).unwrap();
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ALICE.0, ALICE.1));
        let logins = docker_config(&format!(r#""{}": {{"auth": "{auth}"}}"#, proxy.host()));
        let client = client_with_logins(logins.path());
        Setup {
            proxy,
            _registry: registry,
            tokens,
            source,
            fixture,
            client,
            logins,
        }
    }

    fn at(&self, path: &str) -> ImageRef {
        format!("{}/{path}", self.proxy.host()).parse().unwrap()
    }

    /// The fixture copied to `path` through the proxy, which must succeed: where most tests start; its reference.
    fn pushed(&self, path: &str) -> ImageRef {
        let pin = self.at(path);
        self.client.copy(&self.fixture, &pin).unwrap();
        pin
    }

    /// The scopes each token request asked for, and what it was granted, as `METHOD asked -> granted`.
    fn token_requests(&self) -> Vec<String> {
        let join = |scopes: &[testkit::Scope]| {
            scopes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        self.tokens
            .requests()
            .iter()
            .map(|r| format!("{} {} -> {}", r.method, join(&r.asked), join(&r.granted)))
            .collect()
    }
}

#[test]
fn a_tag_moves_on_a_ghcr_like_registry_whose_challenge_says_only_pull() {
    let setup = Setup::new(Flavor::Ghcr, Duration::from_secs(300));
    setup.proxy.set_personality(Personality::Ghcr).unwrap();
    let pin = setup.at("team/app:v1");
    let copied = setup.client.copy(&setup.fixture, &pin).unwrap();
    // The copy's blobs are refused together, and one token is fetched for all of them.
    assert_eq!(
        setup.tokens.requests().len(),
        1,
        "{:#?}",
        setup.token_requests()
    );
    let manifest = setup.client.get_manifest(&pin).unwrap();
    // A tag move by a client that holds no token yet (another step or run): its PUT is challenged for pull only.
    let fresh = client_with_logins(setup.logins.path());
    let latest = setup.at("team/app:latest");
    let before = setup.tokens.requests().len();
    let moved = fresh
        .put_manifest(&latest, &manifest.bytes, &manifest.media_type)
        .unwrap();
    assert_eq!(moved, copied.digest);
    assert_eq!(
        setup.client.head_manifest(&latest).unwrap().digest,
        copied.digest
    );
    assert!(
        setup.proxy.fired(Rule::ChallengePullOnly) >= 1,
        "the challenge said pull only"
    );
    let requests = setup.token_requests();
    assert_eq!(
        requests[before..],
        ["GET repository:team/app:pull,push -> repository:team/app:pull,push"],
        "one token, asked for push beside the challenge's pull: {requests:#?}"
    );
}

#[test]
fn a_token_past_its_expires_in_is_replaced_by_a_new_one() {
    let setup = Setup::new(Flavor::DockerHub, Duration::from_secs(2));
    let pin = setup.pushed("team/app:v1");
    let before = setup.tokens.requests().len();
    setup.client.head_manifest(&pin).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // The registry refuses the old token by now: a read still succeeds, on a new one.
    setup.client.head_manifest(&pin).unwrap();
    let after = setup.tokens.requests();
    assert!(after.len() > before, "no new token after expiry");
    assert!(after.iter().all(|r| r.status == 200), "{after:?}");
}

#[test]
fn a_token_that_expires_while_a_blob_is_read_is_renewed_before_its_upload() {
    let setup = Setup::new(Flavor::DockerHub, Duration::from_secs(2));
    // Each blob takes longer to read than what is left of the token the upload's POST settled.
    let slow = FaultProxy::in_front_of(&setup.source).unwrap();
    slow.set(
        RequestKind::BlobGet,
        Fault::Delay(Duration::from_millis(1500)),
    );
    let fixture: ImageRef = format!(
        "{}/fixture@{}",
        slow.namespace("test"),
        setup.fixture.digest().unwrap()
    )
    .parse()
    .unwrap();
    let patient = stack_images::registry::Policy {
        read_timeout: Duration::from_secs(5),
        ..crate::common::quick()
    };
    let client = RegistryClient::new(patient).with_docker_config(setup.logins.path());
    let copied = client.copy(&fixture, &setup.at("team/app:v1")).unwrap();
    assert!(
        slow.faulted(RequestKind::BlobGet) >= 2,
        "the reads were slow"
    );
    assert!(copied.blobs_sent >= 2, "{copied:?}");
    let requests = setup.tokens.requests();
    assert!(requests.len() >= 2, "a token was renewed: {requests:?}");
}

#[test]
fn a_docker_hub_like_repository_that_does_not_exist_is_told_apart_from_a_refused_login() {
    for creates in [false, true] {
        let setup = Setup::new(Flavor::DockerHub, Duration::from_secs(300));
        let limits = HubLimits {
            push_creates_repository: creates,
            ..HubLimits::default()
        };
        setup
            .proxy
            .set_personality(Personality::DockerHub(limits))
            .unwrap();
        let pin = setup.at("team/new:v1");
        // Read for a pull: 401 after a token from docker's login, the repository's absence as Docker Hub says it.
        let read = setup.client.get_manifest(&pin).unwrap_err();
        assert_eq!(
            (read.kind, read.absence, read.is_absent()),
            (FailureKind::Unauthorized, Some(Absence::Challenged), true),
            "{read}"
        );
        assert!(
            read.to_string()
                .contains("says the repository does not exist"),
            "{read}"
        );
        assert!(setup.proxy.fired(Rule::MissingRepositoryUnauthorized) >= 1);
        // Read as the release reads a pin, with push asked for: in a user's namespace that is a plain absence.
        let to_push = setup.client.get_manifest_to_push(&pin).unwrap_err();
        let copy = setup.client.copy(&setup.fixture, &pin);
        if creates {
            assert!(
                to_push.is_absent() && to_push.absence.is_none(),
                "{to_push}"
            );
            copy.unwrap();
            assert!(setup.client.get_manifest(&pin).is_ok());
        } else {
            assert_eq!(to_push.absence, Some(Absence::Challenged), "{to_push}");
            let refused = copy.unwrap_err();
            assert_eq!(refused.absence, Some(Absence::Challenged), "{refused}");
        }
    }

    // A wrong password is refused by the token service: a refused login, not an absence.
    let setup = Setup::new(Flavor::DockerHub, Duration::from_secs(300));
    let wrong = base64::engine::general_purpose::STANDARD.encode("alice:wrong");
    let logins = docker_config(&format!(
        r#""{}": {{"auth": "{wrong}"}}"#,
        setup.proxy.host()
    ));
    let error = client_with_logins(logins.path())
        .get_manifest(&setup.at("team/app:v1"))
        .unwrap_err();
    assert_eq!(
        (error.kind, error.is_absent()),
        (FailureKind::Unauthorized, false),
        "{error}"
    );
    assert!(error.to_string().contains("refused the login"), "{error}");
}

#[test]
fn a_refused_mount_on_a_token_registry_is_uploaded_instead() {
    let setup = Setup::new(Flavor::Ghcr, Duration::from_secs(300));
    let first = setup.pushed("team/app:v1");
    // A mount the registry allows asks for the source's pull beside the destination's push, one scope each.
    let mounted = setup
        .client
        .copy(&first, &setup.at("team/mounted:v1"))
        .unwrap();
    assert!(
        mounted.blobs_mounted >= 2 && mounted.mounts_refused == 0,
        "{mounted:?}"
    );
    let requests = setup.token_requests();
    let both = "GET repository:team/mounted:pull,push repository:team/app:pull -> \
                repository:team/mounted:pull,push repository:team/app:pull";
    assert!(requests.iter().any(|r| r == both), "{requests:#?}");

    setup.proxy.set(
        RequestKind::BlobUpload,
        Fault::Status(403).matching("mount="),
    );
    let other = setup.at("team/other:v1");
    let copied = setup.client.copy(&first, &other).unwrap();
    assert!(
        setup.proxy.faulted(RequestKind::BlobUpload) >= 2,
        "the mount was refused"
    );
    assert_eq!(copied.blobs_mounted, 0, "{copied:?}");
    assert!(copied.mounts_refused >= 2, "{copied:?}");
    assert_eq!(copied.blobs_sent, copied.mounts_refused, "{copied:?}");
    assert_eq!(
        setup.client.head_manifest(&other).unwrap().digest,
        copied.digest
    );
}

#[test]
fn docker_hub_like_limits_count_gets_not_heads_and_a_429_says_what_remains() {
    let setup = Setup::new(Flavor::DockerHub, Duration::from_secs(300));
    let pin = setup.pushed("team/app:v1");
    let limits = HubLimits {
        manifest_gets_before_429: 1,
        ..HubLimits::default()
    };
    setup
        .proxy
        .set_personality(Personality::DockerHub(limits))
        .unwrap();
    for _ in 0..3 {
        setup.client.head_manifest(&pin).unwrap();
    }
    setup.client.get_manifest(&pin).unwrap();
    let limited = setup.client.get_manifest(&pin).unwrap_err();
    assert_eq!(limited.kind, FailureKind::RateLimited, "{limited}");
    assert!(setup.proxy.fired(Rule::RateLimited) >= 1);
    let message = limited.to_string();
    assert!(
        message.contains("(ratelimit-remaining 0;w=21600, ratelimit-limit 1;w=21600)"),
        "{message}"
    );
}

#[test]
fn a_blob_redirected_to_a_docker_hub_like_cdn_is_read_without_the_registrys_token() {
    let setup = Setup::new(Flavor::DockerHub, Duration::from_secs(300));
    let pin = setup.pushed("team/app:v1");
    setup
        .proxy
        .set_personality(Personality::DockerHub(HubLimits::default()))
        .unwrap();
    let plain = Registry::start().unwrap();
    let to: ImageRef = format!("{}/mirror:v1", plain.namespace("test"))
        .parse()
        .unwrap();
    let copied = setup.client.copy(&pin, &to).unwrap();
    assert!(copied.blobs_sent >= 2, "{copied:?}");
    assert!(setup.proxy.fired(Rule::BlobRedirect) >= 2);
    assert!(setup.proxy.fired(Rule::CdnServed) >= 2);
    assert_eq!(setup.proxy.fired(Rule::CdnRefusedAuthorization), 0);
}

#[test]
fn without_a_login_public_images_are_read_and_a_refusal_says_docker_login() {
    let setup = Setup::start(Flavor::DockerHub, Duration::from_secs(300), true);
    let pin = setup.pushed("team/app:v1");
    setup
        .proxy
        .set_personality(Personality::DockerHub(HubLimits::default()))
        .unwrap();
    let nobody = tempfile::tempdir().unwrap();
    let anonymous = client_with_logins(nobody.path());
    assert_eq!(
        anonymous.head_manifest(&pin).unwrap().digest,
        *setup.fixture.digest().unwrap()
    );
    // An anonymous token proves nothing of a repository: no absence, and the way out is a login.
    let error = anonymous
        .get_manifest(&setup.at("team/missing:v1"))
        .unwrap_err();
    assert_eq!(
        (error.kind, error.is_absent()),
        (FailureKind::Unauthorized, false),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("the token was anonymous: docker holds no login"),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(
            "run `docker login {}` with an account that may do this",
            setup.proxy.host()
        )),
        "{message}"
    );
    assert!(setup.proxy.fired(Rule::MissingRepositoryUnauthorized) >= 1);
}

#[test]
fn a_ghcr_like_repository_that_does_not_exist_is_absent_and_has_no_tags_to_list() {
    let setup = Setup::new(Flavor::Ghcr, Duration::from_secs(300));
    setup.proxy.set_personality(Personality::Ghcr).unwrap();
    let missing = setup.at("team/missing:v1");
    let error = setup.client.get_manifest(&missing).unwrap_err();
    assert_eq!(error.absence, Some(Absence::Denied), "{error}");
    let listed = setup.client.list_tags(missing.repository()).unwrap_err();
    assert!(listed.is_absent(), "{listed}");
    assert!(setup.proxy.fired(Rule::MissingRepositoryDenied) >= 2);
    // Read as a release reads a pin, with push asked for: 404, what a first push to GHCR needs.
    let to_push = setup.client.get_manifest_to_push(&missing).unwrap_err();
    assert_eq!(
        (to_push.kind, to_push.is_absent()),
        (FailureKind::NotFound, true),
        "{to_push}"
    );
    setup.client.copy(&setup.fixture, &missing).unwrap();
}

#[test]
fn a_refresh_token_from_docker_login_is_traded_by_the_oauth_post() {
    let setup = Setup::new(Flavor::DockerHub, Duration::from_secs(300));
    let pin = setup.pushed("team/app:v1");
    // What `docker login` keeps as `identitytoken` for a registry whose token service speaks OAuth.
    let mut answer = ureq::post(setup.tokens.realm())
        .send_form([
            ("grant_type", "password"),
            ("username", ALICE.0),
            ("password", ALICE.1),
            ("access_type", "offline"),
            ("client_id", "docker"),
            ("service", setup.tokens.service()),
        ])
        .unwrap();
    let answer: serde_json::Value =
        serde_json::from_slice(&answer.body_mut().read_to_vec().unwrap()).unwrap();
    let refresh = answer["refresh_token"].as_str().unwrap();
    let logins = docker_config(&format!(
        r#""{}": {{"identitytoken": "{refresh}"}}"#,
        setup.proxy.host()
    ));
    let manifest = setup.client.get_manifest(&pin).unwrap();
    let before = setup.tokens.requests().len();
    client_with_logins(logins.path())
        .put_manifest(
            &setup.at("team/app:moved"),
            &manifest.bytes,
            &manifest.media_type,
        )
        .unwrap();
    let requests = setup.tokens.requests();
    let posted: Vec<_> = requests[before..]
        .iter()
        .map(|r| (r.method.as_str(), r.user.as_deref(), r.status))
        .collect();
    assert_eq!(posted, [("POST", Some(ALICE.0), 200)], "{requests:#?}");
}

#[test]
fn a_refresh_token_for_a_ghcr_like_service_says_to_log_in_with_a_password() {
    let setup = Setup::new(Flavor::Ghcr, Duration::from_secs(300));
    let logins = docker_config(&format!(
        r#""{}": {{"identitytoken": "some-refresh-token"}}"#,
        setup.proxy.host()
    ));
    let error = client_with_logins(logins.path())
        .get_manifest(&setup.at("team/app:v1"))
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Unauthorized, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("takes no refresh token (405 to docker's OAuth POST)"),
        "{message}"
    );
    assert!(!message.contains("some-refresh-token"), "{message}");
    let requests = setup.tokens.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].status),
        ("POST", 405)
    );
}

/// A token-auth registry whose token service is reached through a fault proxy (the realm names the proxy).
fn behind_a_faulty_token_service() -> (Registry, FaultProxy, TokenService, ImageRef) {
    let tokens = TokenService::start(TokenOptions {
        flavor: Flavor::Ghcr,
        users: vec![],
        grants: vec![],
        expires_in: Duration::from_secs(300),
        public_pull: true,
    })
    .unwrap();
    let token_proxy = FaultProxy::start(tokens.addr()).unwrap();
    let mut auth = tokens.registry_auth();
    auth.realm = format!("http://{}/token", token_proxy.host());
    let registry = Registry::builder().token(auth).start().unwrap();
    let reference = format!("{}/app:1", registry.namespace("team"))
        .parse()
        .unwrap();
    (registry, token_proxy, tokens, reference)
}

#[test]
fn a_stalled_token_service_ends_within_the_policy_and_garbage_is_not_taken_for_a_token() {
    let (_registry, token_proxy, tokens, reference) = behind_a_faulty_token_service();
    let no_logins = tempfile::tempdir().unwrap();
    let client = client_with_logins(no_logins.path());

    // Every token request stalls: each attempt ends at the read timeout, and the operation gives up, bounded.
    token_proxy.set(RequestKind::Other, Fault::Stall);
    let started = std::time::Instant::now();
    let error = client.get_manifest(&reference).unwrap_err();
    assert!(
        token_proxy.faulted(RequestKind::Other) >= 1,
        "the stall fired"
    );
    assert_eq!(error.kind, FailureKind::Unreachable, "{error}");
    assert!(error.attempts > 1, "retried: {error}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tokens.count("GET"), 0, "nothing reached the service");

    // A body cut short is read as a failed attempt, never as a token; the next attempt gets a real one.
    token_proxy.clear();
    let stalled = token_proxy.faulted(RequestKind::Other);
    token_proxy.set(RequestKind::Other, Fault::CutBody.times(1));
    let error = client.get_manifest(&reference).unwrap_err();
    assert_eq!(
        token_proxy.faulted(RequestKind::Other),
        stalled + 1,
        "the cut fired"
    );
    // With a real token the registry answers what it holds: nothing under this name.
    assert_eq!(error.kind, FailureKind::NotFound, "{error}");
    assert!(tokens.count("GET") >= 1);
}
