//! How GHCR and Docker Hub answer where `distribution` 2.8 answers otherwise, applied by `FaultProxy` in front of
//! a loopback registry (`FaultProxy::set_personality`): a stand-in for each service's registry behaviour, next to
//! `crate::token`, the stand-in for their token services. Each `Rule` names the public report of the real
//! service doing it, and `FaultProxy::fired` counts the answers it changed, so a test can show the rule was met.
//!
//! The rules work on whole requests and answers: one before forwarding (`respond` may answer itself), and a
//! rewrite of the registry's answer after. Whether a repository exists is asked of the registry with the client's
//! own credentials (`GET /v2/NAME/tags/list`): `NAME_UNKNOWN` means it does not.

use std::{
    collections::HashMap,
    io::{self, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex, MutexGuard},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::Context;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::faults::{forward, read_headers, read_line, Request, Response, Shared};

/// The registry service a `FaultProxy` imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Personality {
    Ghcr,
    DockerHub(HubLimits),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubLimits {
    /// Manifest GETs answered before every further one gets 429; HEADs are not counted.
    pub manifest_gets_before_429: u32,
    /// `false`: an organisation's namespace, where a repository is created on Docker Hub before its first push,
    /// and every request on a missing one is 401. `true`: a user's own namespace, where a first push creates it:
    /// a token that grants push there passes, as on `Rule::MissingRepositoryDenied`.
    pub push_creates_repository: bool,
}

impl Default for HubLimits {
    /// Docker Hub's anonymous limit (100 pulls per 6 hours: `ratelimit-limit: 100;w=21600`, docker/docs#11648),
    /// in an organisation's namespace.
    fn default() -> HubLimits {
        HubLimits {
            manifest_gets_before_429: 100,
            push_creates_repository: false,
        }
    }
}

/// How many tags a GHCR-like tag list answers at most, whatever `n` asks: small, so that tests walk pages.
pub const GHCR_TAG_PAGE: usize = 2;

/// Docker Hub's rate limit window, in seconds, as its headers say it (`;w=21600`).
const HUB_WINDOW: u32 = 21_600;

/// One way GHCR or Docker Hub differs from `distribution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// GHCR: a `WWW-Authenticate` challenge always names `repository:NAME:pull`, even for a PUT or POST. GHCR
    /// sending a pull-only "placeholder scope" is cloudflare/serverless-registry#148 (on `/v2/`); that a push's
    /// own challenge says pull only too is reported by peers; no public source found here. go-containerregistry
    /// and regclient add a challenge's scope to their own and ask for all of them
    /// (`pkg/v1/remote/transport/bearer.go`; regclient's `internal/auth/auth.go`, `ProcessChallenge`).
    ChallengePullOnly,
    /// GHCR: a manifest or tag list of a repository that does not exist answers 403 `DENIED`, where distribution
    /// answers 404 (bytecodealliance/wasm-pkg-tools#40: a non-existent package gives `DENIED` "requested access
    /// to the resource is denied"; getwud/wud#478: packages never pushed, `Head ".../manifests/latest": denied`).
    /// A client whose token may push there (who may create the package) still gets the 404 a first push needs,
    /// as does a blob HEAD: reported by peers; no public source found here (podtato-head/podtato-head#66 saw
    /// `name unknown` once logged in, where anonymously it was `denied`).
    MissingRepositoryDenied,
    /// GHCR: an upload's `Location` is a path, not a URL (apple/swift-container-plugin#44: "GHCR returns a
    /// relative URL causing uploads to fail").
    RelativeLocation,
    /// GHCR: tag lists come in pages with a `Link` to the next one, 100 tags when `n` is not given
    /// (smg-project/smg#2348, argoproj-labs/argocd-image-updater#1660, werf/werf#3654). The stand-in also caps
    /// `n` (`GHCR_TAG_PAGE`), stricter than GHCR, which answered `n=10000` whole in smg-project/smg#2348.
    TagPages,
    /// GHCR and Docker Hub: `DELETE` answers 405 `UNSUPPORTED` (podman-container-tools/skopeo#1880, first filed as
    /// containers/skopeo#1880: "Failed to
    /// delete ... UNSUPPORTED ... (405 Method Not Allowed)" on ghcr.io; docker/hub-feedback#2360 "Support the OCI
    /// delete API": 405 on registry-1.docker.io, where tags are deleted on Docker Hub's own site or API).
    DeleteUnsupported,
    /// Docker Hub: any request on a repository that does not exist answers 401 `UNAUTHORIZED` with a challenge,
    /// even with a valid token, so absent and forbidden look alike (jupyterhub/binderhub#1664 "Docker Hub now
    /// returns 401 for missing repos"; hashicorp/terraform-provider-docker#140: "401 indiscriminately on both
    /// unauthorized access to existing images, and non-existent images"). A push to it is refused too unless
    /// `HubLimits::push_creates_repository` (docker/cli#1743: "denied: requested access to the resource is
    /// denied" for a push to a repository that does not exist).
    MissingRepositoryUnauthorized,
    /// Docker Hub: an upload's `Location` is an absolute URL, as distribution builds it by default
    /// (`http.relativeurls: false`); counted on each upload answer that carries one. Reported by peers; no public
    /// source found here.
    AbsoluteLocation,
    /// Docker Hub: manifest answers carry `ratelimit-limit: L;w=21600` and `ratelimit-remaining: R;w=21600`
    /// (docker/docs#11648); a HEAD shows them without using a pull (docker/docs#11707).
    RateLimitHeaders,
    /// Docker Hub: past the limit a manifest GET answers 429 `TOOMANYREQUESTS` (docker/docs#21908: "429 Too
    /// Many Requests - Server message: toomanyrequests" on a `manifests/` GET; docker/docs#11648, in review:
    /// "it is actually counting manifest requests").
    RateLimited,
    /// Docker Hub: a blob GET answers 307 to a CDN on another origin (opencontainers/distribution-spec#299:
    /// `location: https://production.cloudflare.docker.com/...`).
    BlobRedirect,
    /// The CDN stand-in served a blob.
    CdnServed,
    /// The CDN stand-in refused a request carrying `Authorization` with 400, as Docker Hub's CDN does
    /// (tetratelabs/car#35: "received 400 status code" until the headers were dropped, tetratelabs/car#36:
    /// "Cloudflare R2, the actual storage, rejects requests with the Authorization header";
    /// ciiiii/cloudflare-docker-proxy#104).
    CdnRefusedAuthorization,
}

/// A personality in force on one proxy, with what its rules counted.
pub(crate) struct Active {
    personality: Personality,
    /// Repositories the registry said it knows: they are not asked about again (distribution never removes one).
    known: std::collections::HashSet<String>,
    fired: HashMap<Rule, usize>,
    manifest_gets: u32,
    cdn: Option<Cdn>,
}

impl Active {
    /// With `tls`, the proxy's own server configuration, the CDN serves HTTPS too.
    pub(crate) fn new(
        personality: Personality,
        tls: Option<Arc<ServerConfig>>,
    ) -> anyhow::Result<Active> {
        let cdn = match personality {
            Personality::Ghcr => None,
            Personality::DockerHub(_) => Some(Cdn::start(tls)?),
        };
        Ok(Active {
            personality,
            known: Default::default(),
            fired: HashMap::new(),
            manifest_gets: 0,
            cdn,
        })
    }

    pub(crate) fn fired(&self, rule: Rule) -> usize {
        let cdn = self.cdn.as_ref().map(|cdn| cdn.lock());
        match (rule, cdn) {
            (Rule::CdnServed, Some(cdn)) => cdn.served,
            (Rule::CdnRefusedAuthorization, Some(cdn)) => cdn.refused,
            _ => self.fired.get(&rule).copied().unwrap_or(0),
        }
    }
}

fn fire(shared: &Shared, rule: Rule) {
    if let Some(active) = shared.personality().as_mut() {
        *active.fired.entry(rule).or_default() += 1;
    }
}

/// The answer to a request no fault was injected into: the registry's, as the personality changes it.
pub(crate) fn respond(shared: &Shared, request: &Request) -> io::Result<Response> {
    let personality = shared.personality().as_ref().map(|a| a.personality);
    match personality {
        None => forward(shared, request),
        Some(Personality::Ghcr) => ghcr(shared, request),
        Some(Personality::DockerHub(limits)) => hub(shared, request, limits),
    }
}

/// Both services refuse the registry API's `DELETE` ([`Rule::DeleteUnsupported`]).
fn delete_unsupported(shared: &Shared, request: &Request, path: &str) -> Option<Response> {
    if request.method != "DELETE" || !path.starts_with("/v2/") {
        return None;
    }
    fire(shared, Rule::DeleteUnsupported);
    Some(error(
        request,
        405,
        "UNSUPPORTED",
        "The operation is unsupported.",
        Vec::new(),
    ))
}

fn ghcr(shared: &Shared, request: &Request) -> io::Result<Response> {
    let (path, query) = split_target(&request.target);
    if let Some(refused) = delete_unsupported(shared, request, path) {
        return Ok(refused);
    }
    let tags = path.ends_with("/tags/list") && request.method == "GET";
    let mut response = if tags {
        tag_page(shared, request, path, query)?
    } else {
        forward(shared, request)?
    };
    let read = matches!(request.method.as_str(), "GET" | "HEAD");
    let listing = tags || path.contains("/manifests/");
    if read && listing && response.status() == 404 {
        if let Some(name) = repository(path).filter(|name| !may_push(request, name)) {
            if !exists(shared, request, name)? {
                fire(shared, Rule::MissingRepositoryDenied);
                return Ok(error(
                    request,
                    403,
                    "DENIED",
                    "requested access to the resource is denied",
                    Vec::new(),
                ));
            }
        }
    }
    if response.status() == 401 {
        for (name, value) in &mut response.headers {
            if name.eq_ignore_ascii_case("www-authenticate") {
                if let Some(pull_only) = challenge_pull_only(value) {
                    *value = pull_only;
                    fire(shared, Rule::ChallengePullOnly);
                }
            }
        }
    }
    if path.contains("/blobs/uploads") {
        for (name, value) in &mut response.headers {
            if name.eq_ignore_ascii_case("location") {
                if let Some(relative) = relative_location(value) {
                    *value = relative;
                    fire(shared, Rule::RelativeLocation);
                }
            }
        }
    }
    Ok(response)
}

/// A tag list page cut from the registry's whole list: at most `GHCR_TAG_PAGE` tags after `last`, with a
/// `Link` to the next page when more follow.
fn tag_page(shared: &Shared, request: &Request, path: &str, query: &str) -> io::Result<Response> {
    let mut asked_n = None;
    let mut last = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", n)) => asked_n = n.parse::<usize>().ok(),
            Some(("last", value)) => last = Some(decode(value)),
            _ => {}
        }
    }
    let whole = Request {
        method: "GET".to_owned(),
        target: path.to_owned(),
        headers: request.headers.clone(),
        body: Vec::new(),
        keep_alive: false,
    };
    let mut response = forward(shared, &whole)?;
    if response.status() != 200 {
        return Ok(response);
    }
    let Ok(mut list) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
        return Ok(response);
    };
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    if let Some(last) = &last {
        tags.retain(|tag| tag > last);
    }
    let page = asked_n.unwrap_or(GHCR_TAG_PAGE).min(GHCR_TAG_PAGE);
    let more = tags.len() > page;
    tags.truncate(page);
    if more {
        if let Some(last) = tags.last() {
            response.headers.push((
                "Link".to_owned(),
                format!("<{path}?last={last}&n={page}>; rel=\"next\""),
            ));
            fire(shared, Rule::TagPages);
        }
    }
    list["tags"] = tags.into();
    response.body = list.to_string().into_bytes();
    response
        .headers
        .retain(|(name, _)| !name.eq_ignore_ascii_case("content-length"));
    Ok(response)
}

fn hub(shared: &Shared, request: &Request, limits: HubLimits) -> io::Result<Response> {
    let (path, _) = split_target(&request.target);
    if let Some(refused) = delete_unsupported(shared, request, path) {
        return Ok(refused);
    }
    let creator = |name: &str| limits.push_creates_repository && may_push(request, name);
    if let Some(name) = repository(path).filter(|name| !creator(name)) {
        if !exists(shared, request, name)? {
            fire(shared, Rule::MissingRepositoryUnauthorized);
            let challenge = challenge(shared, request, name)?;
            return Ok(error(
                request,
                401,
                "UNAUTHORIZED",
                "authentication required",
                challenge
                    .map(|c| vec![("WWW-Authenticate".to_owned(), c)])
                    .unwrap_or_default(),
            ));
        }
    }
    let manifest = path.contains("/manifests/");
    let limit = limits.manifest_gets_before_429;
    if manifest && request.method == "GET" {
        let used = shared
            .personality()
            .as_ref()
            .map_or(0, |active| active.manifest_gets);
        if used >= limit {
            fire(shared, Rule::RateLimited);
            return Ok(error(
                request,
                429,
                "TOOMANYREQUESTS",
                "You have reached your pull rate limit.",
                rate_headers(limit, 0),
            ));
        }
    }
    let mut response = forward(shared, request)?;
    let ok = response.status() == 200;
    if manifest && ok && matches!(request.method.as_str(), "GET" | "HEAD") {
        let used = {
            let mut active = shared.personality();
            let Some(active) = active.as_mut() else {
                return Ok(response);
            };
            if request.method == "GET" {
                active.manifest_gets += 1;
            }
            active.manifest_gets
        };
        response
            .headers
            .extend(rate_headers(limit, limit.saturating_sub(used)));
        fire(shared, Rule::RateLimitHeaders);
    }
    if ok && request.method == "GET" && path.contains("/blobs/sha256:") {
        let location = {
            let active = shared.personality();
            let Some(cdn) = active.as_ref().and_then(|a| a.cdn.as_ref()) else {
                return Ok(response);
            };
            cdn.offer(std::mem::take(&mut response.body))
        };
        fire(shared, Rule::BlobRedirect);
        return Ok(Response {
            status_line: "HTTP/1.1 307 Temporary Redirect".to_owned(),
            headers: vec![
                ("Location".to_owned(), location),
                (
                    "Docker-Distribution-Api-Version".to_owned(),
                    "registry/2.0".to_owned(),
                ),
            ],
            bodiless: None,
            body: Vec::new(),
        });
    }
    if path.contains("/blobs/uploads") {
        let host = header(request, "host").unwrap_or_default().to_owned();
        let scheme = if shared.serves_tls() { "https" } else { "http" };
        for (name, value) in &mut response.headers {
            if name.eq_ignore_ascii_case("location") {
                if value.starts_with('/') {
                    *value = format!("{scheme}://{host}{value}");
                }
                fire(shared, Rule::AbsoluteLocation);
            }
        }
    }
    Ok(response)
}

fn rate_headers(limit: u32, remaining: u32) -> Vec<(String, String)> {
    vec![
        (
            "ratelimit-limit".to_owned(),
            format!("{limit};w={HUB_WINDOW}"),
        ),
        (
            "ratelimit-remaining".to_owned(),
            format!("{remaining};w={HUB_WINDOW}"),
        ),
    ]
}

/// Whether the request's bearer token grants `push` on `name`. The token is only read, not verified: the
/// registry behind verifies it.
fn may_push(request: &Request, name: &str) -> bool {
    use base64::Engine;
    let Some(token) = header(request, "authorization").and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let Some(claims) = token.split('.').nth(1) else {
        return false;
    };
    let Ok(claims) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims.trim_end_matches('='))
    else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&claims) else {
        return false;
    };
    claims["access"].as_array().is_some_and(|access| {
        access.iter().any(|entry| {
            entry["type"] == "repository"
                && entry["name"] == name
                && entry["actions"]
                    .as_array()
                    .is_some_and(|actions| actions.iter().any(|a| a == "push"))
        })
    })
}

/// Whether the registry knows `name`, asked with the client's credentials: only `NAME_UNKNOWN` says no, so a
/// client the registry refuses is refused as usual.
fn exists(shared: &Shared, request: &Request, name: &str) -> io::Result<bool> {
    let known = shared
        .personality()
        .as_ref()
        .is_some_and(|active| active.known.contains(name));
    if known {
        return Ok(true);
    }
    let probe = Request {
        method: "GET".to_owned(),
        target: format!("/v2/{name}/tags/list"),
        headers: request.headers.clone(),
        body: Vec::new(),
        keep_alive: false,
    };
    let answer = forward(shared, &probe)?;
    let unknown =
        answer.status() == 404 && String::from_utf8_lossy(&answer.body).contains("NAME_UNKNOWN");
    if answer.status() == 200 {
        if let Some(active) = shared.personality().as_mut() {
            active.known.insert(name.to_owned());
        }
    }
    Ok(!unknown)
}

/// The registry's own challenge (from an anonymous `GET /v2/`), scoped to pulling `name`.
fn challenge(shared: &Shared, request: &Request, name: &str) -> io::Result<Option<String>> {
    let probe = Request {
        method: "GET".to_owned(),
        target: "/v2/".to_owned(),
        headers: request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .cloned()
            .collect(),
        body: Vec::new(),
        keep_alive: false,
    };
    let answer = forward(shared, &probe)?;
    Ok(answer
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, value)| format!("{value},scope=\"repository:{name}:pull\"")))
}

/// The challenge with its scope's actions cut to `pull`, or `None` when it names no other action.
fn challenge_pull_only(value: &str) -> Option<String> {
    let start = value.find("scope=\"")? + "scope=\"".len();
    let end = start + value[start..].find('"')?;
    let scope = &value[start..end];
    let (resource, actions) = scope.rsplit_once(':')?;
    if actions == "pull" || !resource.starts_with("repository:") {
        return None;
    }
    Some(format!(
        "{}{resource}:pull{}",
        &value[..start],
        &value[end..]
    ))
}

/// `http://host/v2/...` as `/v2/...`, or `None` when it is already a path.
fn relative_location(value: &str) -> Option<String> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))?;
    let slash = rest.find('/')?;
    Some(rest[slash..].to_owned())
}

/// The repository a `/v2/NAME/{manifests,blobs,tags}/...` path is about.
fn repository(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    let end = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|marker| rest.rfind(marker))
        .max()?;
    Some(&rest[..end]).filter(|name| !name.is_empty())
}

fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

fn decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// An error answer in distribution's JSON, with no body for a HEAD (the length it would have is kept).
fn error(
    request: &Request,
    status: u16,
    code: &str,
    message: &str,
    mut headers: Vec<(String, String)>,
) -> Response {
    let reason = match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] })
        .to_string()
        .into_bytes();
    headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    headers.push((
        "Docker-Distribution-Api-Version".to_owned(),
        "registry/2.0".to_owned(),
    ));
    let head = request.method == "HEAD";
    Response {
        status_line: format!("HTTP/1.1 {status} {reason}"),
        headers,
        bodiless: head.then(|| Some(body.len().to_string())),
        body: if head { Vec::new() } else { body },
    }
}

/// The "CDN" a Docker-Hub-like proxy redirects blob GETs to: another origin (`localhost` and its own port, HTTPS
/// when the proxy serves HTTPS, with the same certificate, which names `localhost` too) serving each blob once
/// under a random path, refusing any request that carries `Authorization`.
struct Cdn {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Mutex<CdnState>>,
    acceptor: Option<JoinHandle<()>>,
    rng: SystemRandom,
}

#[derive(Default)]
struct CdnState {
    stopping: bool,
    blobs: HashMap<String, Vec<u8>>,
    served: usize,
    refused: usize,
}

impl Cdn {
    fn start(tls: Option<Arc<ServerConfig>>) -> anyhow::Result<Cdn> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the CDN stand-in")?;
        let addr = listener.local_addr()?;
        let serves_tls = tls.is_some();
        let shared = Arc::new(Mutex::new(CdnState::default()));
        let acceptor = thread::Builder::new()
            .name(format!("cdn-standin-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    for stream in listener.incoming() {
                        if lock(&shared).stopping {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        let shared = Arc::clone(&shared);
                        let tls = tls.clone();
                        let _ = thread::Builder::new()
                            .name("cdn-standin-connection".to_owned())
                            .spawn(move || {
                                let _ = stream.set_read_timeout(Some(CDN_TIMEOUT));
                                let _ = stream.set_write_timeout(Some(CDN_TIMEOUT));
                                match tls.map(ServerConnection::new) {
                                    Some(Ok(connection)) => {
                                        if let Ok(socket) = stream.try_clone() {
                                            let mut tls = StreamOwned::new(connection, socket);
                                            let _ = serve_cdn(&shared, &mut tls);
                                            tls.conn.send_close_notify();
                                            let _ = tls.flush();
                                        }
                                    }
                                    Some(Err(_)) => {}
                                    None => {
                                        let _ = serve_cdn(&shared, &stream);
                                    }
                                }
                                let _ = stream.shutdown(Shutdown::Both);
                            });
                    }
                }
            })
            .context("starting the CDN stand-in's thread")?;
        Ok(Cdn {
            addr,
            tls: serves_tls,
            shared,
            acceptor: Some(acceptor),
            rng: SystemRandom::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CdnState> {
        lock(&self.shared)
    }

    /// Keeps `body` for one GET and returns its URL.
    fn offer(&self, body: Vec<u8>) -> String {
        let mut bytes = [0u8; 16];
        // The system generator only fails where there is no entropy source at all.
        let _ = self.rng.fill(&mut bytes);
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.lock().blobs.insert(key.clone(), body);
        let scheme = if self.tls { "https" } else { "http" };
        // `localhost`, not the proxy's `127.0.0.1`: another host name, as Docker Hub's CDN is, so that clients
        // that keep `Authorization` across a redirect to the same host (Go's net/http compares names without the
        // port) drop it here as they do for the real CDN. It still resolves to the listener on 127.0.0.1.
        format!(
            "{scheme}://localhost:{}/registry-v2/blobs/{key}/data",
            self.addr.port()
        )
    }
}

impl Drop for Cdn {
    fn drop(&mut self) {
        self.lock().stopping = true;
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn lock(shared: &Mutex<CdnState>) -> MutexGuard<'_, CdnState> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long the CDN stand-in waits on a client.
const CDN_TIMEOUT: Duration = Duration::from_secs(10);

fn serve_cdn(shared: &Mutex<CdnState>, stream: impl Read + Write) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    let Some(line) = read_line(&mut reader)? else {
        return Ok(());
    };
    let head = read_headers(&mut reader)?;
    let mut parts = line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let key = target
        .strip_prefix("/registry-v2/blobs/")
        .and_then(|rest| rest.strip_suffix("/data"))
        .unwrap_or_default();
    let (status, body): (&str, Vec<u8>) = {
        let mut state = lock(shared);
        if head.get("authorization").is_some() {
            state.refused += 1;
            (
                "400 Bad Request",
                b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>"
                    .to_vec(),
            )
        } else if method != "GET" {
            ("405 Method Not Allowed", Vec::new())
        } else if let Some(blob) = state.blobs.remove(key) {
            state.served += 1;
            ("200 OK", blob)
        } else {
            ("404 Not Found", Vec::new())
        }
    };
    let writer = reader.get_mut();
    write!(
        writer,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    writer.write_all(&body)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_challenge(value: &str, expected: Option<&str>) {
        assert_eq!(challenge_pull_only(value).as_deref(), expected, "{value}");
    }

    #[test]
    fn challenges_are_cut_to_pull() {
        check_challenge(
            r#"Bearer realm="http://a/token",service="s",scope="repository:team/app:pull,push""#,
            Some(r#"Bearer realm="http://a/token",service="s",scope="repository:team/app:pull""#),
        );
        check_challenge(
            r#"Bearer realm="r",service="s",scope="repository:team/app:push",error="insufficient_scope""#,
            Some(
                r#"Bearer realm="r",service="s",scope="repository:team/app:pull",error="insufficient_scope""#,
            ),
        );
        check_challenge(
            r#"Bearer realm="r",service="s",scope="repository:a:pull""#,
            None,
        );
        check_challenge(r#"Bearer realm="r",service="s""#, None);
        check_challenge(r#"Bearer realm="r",scope="registry:catalog:*""#, None);
    }

    #[track_caller]
    fn check_repository(path: &str, expected: Option<&str>) {
        assert_eq!(repository(path), expected, "{path}");
    }

    #[test]
    fn repositories_from_paths() {
        check_repository("/v2/team/app/manifests/1", Some("team/app"));
        check_repository("/v2/team/app/blobs/sha256:ab", Some("team/app"));
        check_repository("/v2/team/app/blobs/uploads/", Some("team/app"));
        check_repository("/v2/team/app/blobs/uploads/u-1", Some("team/app"));
        check_repository("/v2/team/app/tags/list", Some("team/app"));
        check_repository("/v2/a/manifests/b/manifests/latest", Some("a/manifests/b"));
        check_repository("/v2/", None);
        check_repository("/v2/_catalog", None);
    }

    #[track_caller]
    fn check_location(value: &str, expected: Option<&str>) {
        assert_eq!(relative_location(value).as_deref(), expected, "{value}");
    }

    #[test]
    fn locations_lose_their_origin() {
        check_location(
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x",
            Some("/v2/a/blobs/uploads/u?_state=x"),
        );
        check_location(
            "https://h/v2/a/blobs/uploads/u",
            Some("/v2/a/blobs/uploads/u"),
        );
        check_location("/v2/a/blobs/uploads/u", None);
    }
}
