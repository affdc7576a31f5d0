//! The token service stand-in with a real `distribution` (`auth: token`), and the GHCR and Docker Hub
//! personalities of the fault proxy in front of it, seen by curl and skopeo.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use stack_images::Digest;
use testkit::{
    Ca, FaultProxy, Flavor, Grant, HubLimits, Personality, Registry, Rule, TokenOptions,
    TokenService,
};

/// A token service, a registry that takes only its tokens, and a proxy in front of the registry.
struct Standin {
    // Dropped in this order: the proxy, the registry behind it, the service it trusts.
    proxy: FaultProxy,
    registry: Registry,
    tokens: TokenService,
    /// The test CA's certificate for curl, when the registry and the proxy speak TLS.
    ca_file: Option<PathBuf>,
    _ca_dir: tempfile::TempDir,
}

const ALICE: (&str, &str) = ("alice", "alice-password");
const BOB: (&str, &str) = ("bob", "bob-password");
/// What the tests' manifest requests accept: the type `push` writes.
const OCI: [(&str, &str); 1] = [("Accept", "application/vnd.oci.image.manifest.v1+json")];

impl Standin {
    /// Alice may pull, push and delete under `team`, Bob only pull; nobody else gets anything.
    fn new(flavor: Flavor, expires_in: Duration) -> Standin {
        Standin::start(flavor, expires_in, None)
    }

    /// The same with the token service, the registry and the proxy on TLS from `ca`.
    fn start(flavor: Flavor, expires_in: Duration, ca: Option<Ca>) -> Standin {
        let options = TokenOptions {
            flavor,
            users: [ALICE, BOB]
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                .collect(),
            grants: vec![
                Grant::new(ALICE.0, "team", &["pull", "push", "delete"]),
                Grant::new(BOB.0, "team", &["pull"]),
            ],
            expires_in,
            public_pull: false,
        };
        let tokens = match &ca {
            Some(ca) => {
                let cert = ca.issue(&["127.0.0.1"]).unwrap();
                TokenService::start_with_tls(options, cert.server_config()).unwrap()
            }
            None => TokenService::start(options).unwrap(),
        };
        let mut builder = Registry::builder().token(tokens.registry_auth());
        let ca_dir = tempfile::tempdir().unwrap();
        let mut ca_file = None;
        if let Some(ca) = &ca {
            builder = builder.tls(ca);
            ca_file = Some(ca.write(ca_dir.path()).unwrap());
        }
        let registry = builder.start().unwrap();
        let proxy = FaultProxy::in_front_of(&registry).unwrap();
        Standin {
            proxy,
            registry,
            tokens,
            ca_file,
            _ca_dir: ca_dir,
        }
    }

    /// A token from the service by GET, one `scope` parameter per scope.
    fn token(&self, credentials: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let reply = self.token_reply(credentials, scopes);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    fn token_reply(&self, credentials: Option<(&str, &str)>, scopes: &[&str]) -> Reply {
        let mut url = format!("{}?service={}", self.tokens.realm(), self.tokens.service());
        for scope in scopes {
            url.push_str(&format!("&scope={scope}"));
        }
        let user = credentials.map(|(u, p)| format!("{u}:{p}"));
        let ca = self.ca_file.as_ref().map(|ca| ca.display().to_string());
        let mut args = vec!["-sS", "-i", &url];
        if let Some(user) = &user {
            args.extend(["-u", user.as_str()]);
        }
        if let Some(ca) = &ca {
            args.extend(["--cacert", ca.as_str()]);
        }
        curl(&args, None)
    }

    /// An image in `team/app` pushed straight to the registry: one config blob, one layer, and a manifest
    /// under each tag. Returns the layer's bytes and digest.
    fn push_image(&self, tags: &[&str]) -> (Vec<u8>, Digest) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let layer = b"a layer standing in for a tarball".repeat(100);
        self.push(&config, &layer, tags);
        let digest = Digest::of(&layer);
        (layer, digest)
    }

    /// `config` and one uncompressed `layer` in `team/app` as Alice, straight to the registry, and an OCI
    /// manifest of them under each tag.
    fn push(&self, config: &[u8], layer: &[u8], tags: &[&str]) {
        let token = self.token(Some(ALICE), &["repository:team/app:pull,push"]);
        let base = self.registry.base_url();
        for blob in [config, layer] {
            self.upload(&base, "team/app", &token, blob);
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        })
        .to_string();
        for tag in tags {
            let reply = self.http(
                "PUT",
                &format!("{base}/v2/team/app/manifests/{tag}"),
                &token,
                &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                Some(manifest.as_bytes()),
            );
            assert_eq!(reply.status, 201, "{}", reply.text());
        }
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// A monolithic upload (POST, then PUT with the digest) under `base`: the PUT goes where the POST's `Location`
/// says, relative to `base` when it is a path. Returns the POST's reply.
impl Standin {
    fn upload(&self, base: &str, repository: &str, token: &str, blob: &[u8]) -> Reply {
        let start = self.http(
            "POST",
            &format!("{base}/v2/{repository}/blobs/uploads/"),
            token,
            &[],
            Some(b""),
        );
        assert_eq!(start.status, 202, "{}", start.text());
        {
            let location = start.header("location").unwrap().to_owned();
            let location = if location.starts_with('/') {
                format!("{base}{location}")
            } else {
                location
            };
            let separator = if location.contains('?') { '&' } else { '?' };
            let put = self.http(
                "PUT",
                &format!("{location}{separator}digest={}", Digest::of(blob)),
                token,
                &[("Content-Type", "application/octet-stream")],
                Some(blob),
            );
            assert_eq!(put.status, 201, "{}", put.text());
        }
        start
    }
}

/// What curl got: the status, headers and body of the last answer.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        format!(
            "{} {:?} {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The `code` of distribution's first error.
    fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Standin {
    /// `method url` with a bearer token (none when empty), extra headers and a body; HTTPS trusts the test CA.
    fn http(
        &self,
        method: &str,
        url: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut args: Vec<String> = vec!["-sS".into(), "-i".into()];
        if method == "HEAD" {
            args.push("-I".into());
        } else {
            args.extend(["-X".into(), method.into()]);
        }
        // Without this curl waits for a `100 Continue` before a larger body.
        args.extend(["-H".into(), "Expect:".into()]);
        if !token.is_empty() {
            args.extend(["-H".into(), format!("Authorization: Bearer {token}")]);
        }
        for (name, value) in headers {
            args.extend(["-H".into(), format!("{name}: {value}")]);
        }
        if body.is_some() {
            args.extend(["--data-binary".into(), "@-".into()]);
        }
        if let Some(ca) = &self.ca_file {
            args.extend(["--cacert".into(), ca.display().to_string()]);
        }
        args.push(url.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args, body)
    }
}

fn curl(args: &[&str], body: Option<&[u8]>) -> Reply {
    let mut child = Command::new("curl")
        .args(["--max-time", "20"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running curl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(body.unwrap_or_default()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_reply(&output.stdout)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer with headers");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg("skopeo")
        .args(args)
        .output()
        .expect("running skopeo")
}

#[test]
fn distribution_verifies_the_stand_ins_tokens_and_their_grants() {
    let standin = Standin::new(Flavor::Ghcr, Duration::from_secs(300));
    standin.push_image(&["1"]);
    let manifest = format!("http://{}/v2/team/app/manifests/1", standin.registry.host());

    let anonymous = standin.http("GET", &manifest, "", &OCI, None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let challenge = anonymous.header("www-authenticate").unwrap();
    assert!(
        challenge.contains(&format!("realm=\"{}\"", standin.tokens.realm())),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("service=\"{}\"", standin.tokens.service())),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:team/app:pull\""),
        "{challenge}"
    );

    let bob = standin.token(Some(BOB), &["repository:team/app:pull,push"]);
    let pulled = standin.http("GET", &manifest, &bob, &OCI, None);
    assert_eq!(pulled.status, 200, "{}", pulled.text());
    // Bob asked for push and got only pull: distribution itself refuses his PUT.
    let pushed = standin.http(
        "PUT",
        &manifest,
        &bob,
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        Some(&pulled.body),
    );
    assert_eq!(pushed.status, 401, "{}", pushed.text());
    assert!(pushed
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let asked = standin.tokens.requests().last().unwrap().clone();
    assert_eq!(asked.user.as_deref(), Some("bob"));
    assert_eq!(asked.asked[0].actions, ["pull", "push"]);
    assert_eq!(asked.granted[0].actions, ["pull"]);

    // skopeo, with its own token exchange, reads the manifest too.
    let inspect = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &format!("{}:{}", ALICE.0, ALICE.1),
        &format!("docker://{}/team/app:1", standin.registry.host()),
    ]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert_eq!(inspect.stdout, pulled.body);

    // A stranger, a wrong password, scopes joined by a space, and docker's OAuth POST, which GHCR refuses.
    let stranger = standin.token(None, &["repository:team/app:pull"]);
    assert_eq!(
        standin.http("GET", &manifest, &stranger, &OCI, None).status,
        401
    );
    assert_eq!(
        standin
            .token_reply(Some(("bob", "wrong")), &["repository:team/app:pull"])
            .status,
        401
    );
    let joined = standin.token_reply(
        Some(ALICE),
        &["repository:team/app:pull%20repository:team/b:pull"],
    );
    assert_eq!(joined.status, 400, "{}", joined.text());
    let post = curl(
        &[
            "-sS",
            "-i",
            "-X",
            "POST",
            "--data",
            "grant_type=password&username=alice",
            &standin.tokens.realm(),
        ],
        None,
    );
    assert_eq!(post.status, 405, "{}", post.text());
    assert_eq!(standin.tokens.count("POST"), 1);
    let statuses: Vec<u16> = standin.tokens.requests().iter().map(|r| r.status).collect();
    assert!(statuses.ends_with(&[200, 401, 400, 405]), "{statuses:?}");
}

#[test]
fn the_registry_refuses_a_token_once_expires_in_has_passed() {
    let standin = Standin::new(Flavor::DockerHub, Duration::from_secs(2));
    standin.push_image(&["1"]);
    let manifest = format!("http://{}/v2/team/app/manifests/1", standin.registry.host());
    let reply = standin.token_reply(Some(BOB), &["repository:team/app:pull"]);
    assert_eq!(reply.json()["expires_in"], 2);
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        standin.http("GET", &manifest, &token, &OCI, None).status,
        200
    );
    std::thread::sleep(Duration::from_millis(3100));
    let late = standin.http("GET", &manifest, &token, &OCI, None);
    assert_eq!(late.status, 401, "{}", late.text());
}

#[test]
fn docker_hub_flavor_answers_the_oauth_post_with_a_refresh_token() {
    let standin = Standin::new(Flavor::DockerHub, Duration::from_secs(300));
    standin.push_image(&["1"]);
    let manifest = format!("http://{}/v2/team/app/manifests/1", standin.registry.host());
    let post = |form: &str| {
        curl(
            &[
                "-sS",
                "-i",
                "-X",
                "POST",
                "--data",
                form,
                &standin.tokens.realm(),
            ],
            None,
        )
    };
    let service = standin.tokens.service().to_owned();
    let first = post(&format!(
        "grant_type=password&username=bob&password=bob-password&service={service}\
         &client_id=test&access_type=offline&scope=repository%3Ateam%2Fapp%3Apull+repository%3Aother%2Fapp%3Apull"
    ));
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    assert_eq!(body["expires_in"], 300);
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(
        standin.http("GET", &manifest, access, &OCI, None).status,
        200
    );
    let requests = standin.tokens.requests();
    let first_post = requests.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(first_post.user.as_deref(), Some("bob"));
    let granted = &first_post.granted;
    assert_eq!(granted[0].actions, ["pull"]);
    assert!(
        granted[1].actions.is_empty(),
        "nothing outside team: {granted:?}"
    );

    let again = post(&format!(
        "grant_type=refresh_token&refresh_token={refresh}&service={service}&client_id=test\
         &scope=repository%3Ateam%2Fapp%3Apull"
    ));
    assert_eq!(again.status, 200, "{}", again.text());
    let access = again.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        standin.http("GET", &manifest, &access, &OCI, None).status,
        200
    );
    assert_eq!(
        post("grant_type=refresh_token&refresh_token=unknown").status,
        401
    );
    assert_eq!(post("grant_type=client_credentials").status, 400);
    assert_eq!(standin.tokens.count("POST"), 4);
}

#[test]
fn the_ghcr_personality_shows_each_of_its_rules() {
    let standin = Standin::new(Flavor::Ghcr, Duration::from_secs(300));
    let tags = ["1", "2", "3", "4", "5"];
    let (_, layer) = standin.push_image(&tags);
    standin.proxy.set_personality(Personality::Ghcr).unwrap();
    let base = standin.proxy.base_url();
    let manifest = format!("{base}/v2/team/app/manifests/1");

    // distribution asks for pull,push on a PUT; GHCR's challenge says pull.
    let put = standin.http(
        "PUT",
        &manifest,
        "",
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(put.status, 401);
    let challenge = put.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("scope=\"repository:team/app:pull\""),
        "{challenge}"
    );
    assert_eq!(standin.proxy.fired(Rule::ChallengePullOnly), 1);

    let alice = standin.token(
        Some(ALICE),
        &[
            "repository:team/app:pull,push,delete",
            "repository:team/missing:pull",
        ],
    );
    let missing = standin.http(
        "GET",
        &format!("{base}/v2/team/missing/manifests/1"),
        &alice,
        &OCI,
        None,
    );
    assert_eq!(
        (missing.status, missing.error_code()),
        (403, "DENIED".to_owned())
    );
    assert_eq!(standin.proxy.fired(Rule::MissingRepositoryDenied), 1);
    // A blob HEAD in a new repository still says 404, and so does its manifest to one who may create it: what
    // a first push needs.
    let head = standin.http(
        "HEAD",
        &format!("{base}/v2/team/missing/blobs/{layer}"),
        &alice,
        &[],
        None,
    );
    assert_eq!(head.status, 404);
    let creator = standin.token(Some(ALICE), &["repository:team/missing:pull,push"]);
    let head = standin.http(
        "HEAD",
        &format!("{base}/v2/team/missing/manifests/1"),
        &creator,
        &OCI,
        None,
    );
    assert_eq!(head.status, 404);
    assert_eq!(standin.proxy.fired(Rule::MissingRepositoryDenied), 1);

    let start = standin.upload(&base, "team/app", &alice, b"a new blob");
    assert!(start
        .header("location")
        .unwrap()
        .starts_with("/v2/team/app/blobs/uploads/"));
    // The POST's answer and the PUT's (`Location` of the blob).
    assert_eq!(standin.proxy.fired(Rule::RelativeLocation), 2);

    let mut seen = Vec::new();
    let mut next = Some("/v2/team/app/tags/list".to_owned());
    while let Some(path) = next.take() {
        let page = standin.http("GET", &format!("{base}{path}"), &alice, &[], None);
        assert_eq!(page.status, 200, "{}", page.text());
        let tags: Vec<String> = serde_json::from_value(page.json()["tags"].clone()).unwrap();
        assert!(tags.len() <= testkit::personality::GHCR_TAG_PAGE);
        seen.extend(tags);
        next = page.header("link").map(|link| {
            assert!(link.ends_with("rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
    }
    assert_eq!(seen, tags);
    assert_eq!(standin.proxy.fired(Rule::TagPages), 2);

    let digest = Digest::of(&standin.http("GET", &manifest, &alice, &OCI, None).body);
    let delete = standin.http(
        "DELETE",
        &format!("{base}/v2/team/app/manifests/{digest}"),
        &alice,
        &[],
        None,
    );
    assert_eq!(
        (delete.status, delete.error_code()),
        (405, "UNSUPPORTED".to_owned())
    );
    assert_eq!(standin.proxy.fired(Rule::DeleteUnsupported), 1);
    assert!(
        !standin.registry.log().contains("\"DELETE /v2/"),
        "the registry never saw the DELETE"
    );
    assert_eq!(
        standin.http("GET", &manifest, &alice, &OCI, None).status,
        200
    );
}

#[test]
fn the_docker_hub_personality_shows_each_of_its_rules() {
    let standin = Standin::new(Flavor::DockerHub, Duration::from_secs(300));
    let (layer_bytes, layer) = standin.push_image(&["1"]);
    let limits = HubLimits {
        manifest_gets_before_429: 2,
        ..HubLimits::default()
    };
    standin
        .proxy
        .set_personality(Personality::DockerHub(limits))
        .unwrap();
    let base = standin.proxy.base_url();
    let manifest = format!("{base}/v2/team/app/manifests/1");
    let alice = standin.token(
        Some(ALICE),
        &[
            "repository:team/app:pull,push",
            "repository:team/missing:pull,push",
        ],
    );

    // A valid token, and still 401 with a challenge: absent looks like forbidden.
    let missing = standin.http(
        "GET",
        &format!("{base}/v2/team/missing/manifests/1"),
        &alice,
        &OCI,
        None,
    );
    assert_eq!(
        (missing.status, missing.error_code()),
        (401, "UNAUTHORIZED".to_owned())
    );
    let challenge = missing.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("scope=\"repository:team/missing:pull\""),
        "{challenge}"
    );
    let post = standin.http(
        "POST",
        &format!("{base}/v2/team/missing/blobs/uploads/"),
        &alice,
        &[],
        Some(b""),
    );
    assert_eq!(post.status, 401);
    assert_eq!(standin.proxy.fired(Rule::MissingRepositoryUnauthorized), 2);

    let remaining = |reply: &Reply| reply.header("ratelimit-remaining").map(str::to_owned);
    let head = standin.http("HEAD", &manifest, &alice, &OCI, None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("ratelimit-limit"), Some("2;w=21600"));
    assert_eq!(
        remaining(&head).as_deref(),
        Some("2;w=21600"),
        "a HEAD is not counted"
    );
    for left in ["1;w=21600", "0;w=21600"] {
        let get = standin.http("GET", &manifest, &alice, &OCI, None);
        assert_eq!(get.status, 200);
        assert_eq!(remaining(&get).as_deref(), Some(left));
    }
    let limited = standin.http("GET", &manifest, &alice, &OCI, None);
    assert_eq!(
        (limited.status, limited.error_code()),
        (429, "TOOMANYREQUESTS".to_owned())
    );
    assert_eq!(remaining(&limited).as_deref(), Some("0;w=21600"));
    assert_eq!(standin.proxy.fired(Rule::RateLimitHeaders), 3);
    assert_eq!(standin.proxy.fired(Rule::RateLimited), 1);

    let blob = standin.http(
        "GET",
        &format!("{base}/v2/team/app/blobs/{layer}"),
        &alice,
        &[],
        None,
    );
    assert_eq!(blob.status, 307, "{}", blob.text());
    let cdn = blob.header("location").unwrap().to_owned();
    assert!(
        cdn.starts_with("http://localhost:"),
        "another origin: {cdn}"
    );
    assert_eq!(standin.proxy.fired(Rule::BlobRedirect), 1);
    let with_auth = standin.http("GET", &cdn, &alice, &[], None);
    assert_eq!(with_auth.status, 400);
    assert_eq!(standin.proxy.fired(Rule::CdnRefusedAuthorization), 1);
    let served = standin.http("GET", &cdn, "", &[], None);
    assert_eq!(served.status, 200);
    assert_eq!(served.body, layer_bytes);
    assert_eq!(
        standin.http("GET", &cdn, "", &[], None).status,
        404,
        "served once"
    );
    assert_eq!(standin.proxy.fired(Rule::CdnServed), 1);

    let start = standin.upload(&base, "team/app", &alice, b"a new blob");
    let location = start.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{base}/v2/team/app/blobs/uploads/")),
        "{location}"
    );
    // The POST's answer and the PUT's (`Location` of the blob).
    assert_eq!(standin.proxy.fired(Rule::AbsoluteLocation), 2);
}

#[test]
fn over_tls_the_token_service_and_the_docker_hub_cdn_speak_https() {
    let standin = Standin::start(
        Flavor::DockerHub,
        Duration::from_secs(300),
        Some(Ca::new().unwrap()),
    );
    let (layer_bytes, layer) = standin.push_image(&["1"]);
    let limits = HubLimits {
        manifest_gets_before_429: 10,
        ..HubLimits::default()
    };
    standin
        .proxy
        .set_personality(Personality::DockerHub(limits))
        .unwrap();
    let base = standin.proxy.base_url();
    assert!(base.starts_with("https://"), "{base}");
    let challenge = standin.http("GET", &format!("{base}/v2/"), "", &[], None);
    let challenge = challenge.header("www-authenticate").unwrap();
    assert!(
        challenge.contains(&format!(
            "realm=\"https://{}/token\"",
            standin.tokens.addr()
        )),
        "{challenge}"
    );
    let alice = standin.token(Some(ALICE), &["repository:team/app:pull,push"]);

    let blob = standin.http(
        "GET",
        &format!("{base}/v2/team/app/blobs/{layer}"),
        &alice,
        &[],
        None,
    );
    assert_eq!(blob.status, 307, "{}", blob.text());
    let cdn = blob.header("location").unwrap().to_owned();
    assert!(cdn.starts_with("https://localhost:"), "{cdn}");
    assert_eq!(standin.http("GET", &cdn, &alice, &[], None).status, 400);
    let served = standin.http("GET", &cdn, "", &[], None);
    assert_eq!((served.status, served.body), (200, layer_bytes));
    assert_eq!(standin.proxy.fired(Rule::CdnServed), 1);

    let start = standin.upload(&base, "team/app", &alice, b"a new blob");
    let location = start.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{base}/v2/team/app/blobs/uploads/")),
        "{location}"
    );
}

/// A real one-file image (an uncompressed tar layer and its config) in `team/app` under `tag`, pushed straight
/// to the registry: what docker can pull and store.
fn push_runnable_image(standin: &Standin, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "pulled through a stand-in\n").unwrap();
    let tar = Command::new("tar")
        .args([
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-cf",
            "-",
            "-C",
        ])
        .arg(dir.path())
        .arg("hello.txt")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let layer = tar.stdout;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [Digest::of(&layer).to_string()] },
    })
    .to_string()
    .into_bytes();
    standin.push(&config, &layer, &[tag]);
}

/// `docker ARGS` with its own logins in `config`, and stdin.
fn docker(config: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("timeout")
        .arg("120")
        .arg("docker")
        .args(args)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running docker");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[track_caller]
fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn docker_pulls_through_the_hub_like_proxy_and_pushes_through_the_ghcr_like_one() {
    let config = tempfile::tempdir().unwrap();
    let hub = Standin::new(Flavor::DockerHub, Duration::from_secs(300));
    push_runnable_image(&hub, "docker");
    let limits = HubLimits {
        manifest_gets_before_429: 10,
        ..HubLimits::default()
    };
    hub.proxy
        .set_personality(Personality::DockerHub(limits))
        .unwrap();
    let host = hub.proxy.host();
    succeeded(&docker(
        config.path(),
        &["login", "-u", BOB.0, "--password-stdin", &host],
        BOB.1,
    ));
    let pulled = format!("{host}/team/app:docker");
    succeeded(&docker(config.path(), &["pull", &pulled], ""));
    assert!(hub.proxy.fired(Rule::BlobRedirect) >= 1);
    assert!(hub.proxy.fired(Rule::CdnServed) >= 1);
    assert_eq!(
        hub.proxy.fired(Rule::CdnRefusedAuthorization),
        0,
        "docker drops Authorization"
    );

    let ghcr = Standin::new(Flavor::Ghcr, Duration::from_secs(300));
    ghcr.proxy.set_personality(Personality::Ghcr).unwrap();
    let host = ghcr.proxy.host();
    succeeded(&docker(
        config.path(),
        &["login", "-u", ALICE.0, "--password-stdin", &host],
        ALICE.1,
    ));
    let pushed = format!("{host}/team/pushed:1");
    succeeded(&docker(config.path(), &["tag", &pulled, &pushed], ""));
    let push = docker(config.path(), &["push", &pushed], "");
    let _ = docker(config.path(), &["image", "rm", &pulled, &pushed], "");
    succeeded(&push);
    assert!(ghcr.proxy.fired(Rule::RelativeLocation) >= 1);
    // docker asked for push itself, whatever the challenge said, and the registry took the manifest.
    let asked_push = ghcr.tokens.requests().iter().any(|r| {
        r.granted
            .iter()
            .any(|s| s.name == "team/pushed" && s.actions.iter().any(|a| a == "push"))
    });
    assert!(asked_push, "{:?}", ghcr.tokens.requests());
    let alice = ghcr.token(Some(ALICE), &["repository:team/pushed:pull"]);
    let manifest = ghcr.http(
        "HEAD",
        &format!("{}/v2/team/pushed/manifests/1", ghcr.registry.base_url()),
        &alice,
        &OCI,
        None,
    );
    assert_eq!(manifest.status, 200);
}

#[test]
fn in_a_hub_users_own_namespace_a_first_push_creates_the_repository() {
    let standin = Standin::new(Flavor::DockerHub, Duration::from_secs(300));
    let limits = HubLimits {
        push_creates_repository: true,
        ..HubLimits::default()
    };
    standin
        .proxy
        .set_personality(Personality::DockerHub(limits))
        .unwrap();
    let base = standin.proxy.base_url();
    let manifest = format!("{base}/v2/team/new/manifests/1");

    let creator = standin.token(Some(ALICE), &["repository:team/new:pull,push"]);
    assert_eq!(
        standin.http("HEAD", &manifest, &creator, &OCI, None).status,
        404
    );
    standin.upload(&base, "team/new", &creator, b"the first blob");
    assert_eq!(standin.proxy.fired(Rule::MissingRepositoryUnauthorized), 0);

    let reader = standin.token(Some(BOB), &["repository:team/other:pull"]);
    let missing = standin.http(
        "GET",
        &format!("{base}/v2/team/other/manifests/1"),
        &reader,
        &OCI,
        None,
    );
    assert_eq!(
        (missing.status, missing.error_code()),
        (401, "UNAUTHORIZED".to_owned())
    );
    assert_eq!(standin.proxy.fired(Rule::MissingRepositoryUnauthorized), 1);
}

#[test]
fn docker_logs_in_to_both_hosted_stand_ins() {
    use testkit::{Accounts, Hosted};
    let config = tempfile::tempdir().unwrap();
    let accounts = || Accounts::owner(ALICE.0, ALICE.1, "team");
    let ghcr = Hosted::ghcr_like(accounts()).unwrap();
    let hub = Hosted::docker_hub_like(accounts(), HubLimits::default(), Duration::from_secs(300))
        .unwrap();
    for hosted in [&ghcr, &hub] {
        hosted.login(config.path(), ALICE.0, ALICE.1).unwrap();
        assert!(hosted.tokens.count("GET") + hosted.tokens.count("POST") >= 1);
    }
    // GHCR's service refuses docker's OAuth POST, and docker falls back to a GET.
    assert!(ghcr.tokens.count("GET") >= 1);
    let refused = hub.login(config.path(), ALICE.0, "wrong").unwrap_err();
    assert!(!format!("{refused:#}").contains("wrong"), "{refused:#}");
}
