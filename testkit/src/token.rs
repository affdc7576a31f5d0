//! A stand-in for GHCR's and Docker Hub's token services (`https://ghcr.io/token`, `https://auth.docker.io/token`):
//! neither is packaged and `distribution` ships none, so the tests run this one on a free loopback port. It issues
//! real JWTs that `distribution` 2.8 verifies itself with `auth: token` (`TokenService::registry_auth`), following
//! what its `registry/auth/token/token.go` checks:
//!
//! - the header's `x5c` chain must verify against `rootcertbundle` (Go's `x509.Verify`, any key usage): the bundle
//!   holds a CA made here and `x5c` the leaf certificate of the signing key, signed by that CA;
//! - `alg` must match the key (libtrust: ES256 for P-256), the signature being the fixed 64-byte `r || s`;
//! - `iss` must be the configured issuer and `aud` (one string in 2.8) the configured service;
//! - `exp` and `nbf` are checked with 60 s of leeway either way (`token.Leeway`); `access` lists, per resource,
//!   the actions granted, and the registry compares them with what each request needs.
//!
//! The registry allows a token 60 s past its `exp`, so `exp` is written 60 s before the end of `expires_in`:
//! the registry then refuses a token exactly when `expires_in` says it ran out, as Docker Hub's 300 s tokens do.
//!
//! It serves plain HTTP (`start`) or HTTPS (`start_with_tls`, what the real services speak); the handler works
//! over any `Read + Write` stream (`TokenHandler::serve`). Nothing here keeps a password or a token: the counters hold methods, user names and scopes.

use std::{
    collections::HashMap,
    fmt, fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    thread::{self, JoinHandle},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use base64::Engine;
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Which token service the stand-in behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `ghcr.io/token`: a token by GET (github/dependabot-action#131 logs `GET https://ghcr.io:443/token?
    /// service=ghcr.io&scope=...` answered 200); docker's OAuth `POST` answers 405 (open-component-model/ocm#400,
    /// "unexpected status from POST request to `https://ghcr.io/token`: 405 Method Not Allowed"). The answer holds
    /// `token` only: reported by peers; no public source found here.
    Ghcr,
    /// `auth.docker.io/token`: GET, and `POST` with `grant_type=password` or `refresh_token` as distribution's
    /// `docs/spec/auth/oauth.md` describes it; answers hold `token`, `access_token`, `expires_in` and
    /// `issued_at`. Docker Hub's tokens last 300 s: one from `auth.docker.io` quoted in Michsior14/docker-mods#11
    /// has `exp` 300 s after `iat`.
    DockerHub,
}

/// What one user may do on the repositories under a namespace prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub user: String,
    /// `team` covers `team` and every `team/...`; an empty prefix covers every repository.
    pub prefix: String,
    /// Actions such as `pull`, `push`, `delete`.
    pub actions: Vec<String>,
}

impl Grant {
    pub fn new(user: &str, prefix: &str, actions: &[&str]) -> Grant {
        Grant {
            user: user.to_owned(),
            prefix: prefix.to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    fn covers(&self, repository: &str) -> bool {
        let prefix = self.prefix.trim_end_matches('/');
        prefix.is_empty()
            || repository == prefix
            || repository
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

pub struct TokenOptions {
    pub flavor: Flavor,
    /// User names and passwords accepted with Basic (GET) or in the OAuth form (POST).
    pub users: Vec<(String, String)>,
    pub grants: Vec<Grant>,
    /// What the answer's `expires_in` says, and when the registry stops accepting the token.
    pub expires_in: Duration,
    /// Whether anyone, without credentials, gets `pull` on every repository (public images).
    pub public_pull: bool,
}

impl fmt::Debug for TokenOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords stay out of every `Debug`.
        let users: Vec<_> = self.users.iter().map(|(user, _)| user).collect();
        f.debug_struct("TokenOptions")
            .field("flavor", &self.flavor)
            .field("users", &users)
            .field("grants", &self.grants)
            .field("expires_in", &self.expires_in)
            .field("public_pull", &self.public_pull)
            .finish()
    }
}

/// `type:name:actions`, one resource scope of the token protocol (distribution's `docs/spec/auth/scope.md`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses `repository:team/app:pull,push`; the name may hold `:` (a registry host with a port), so the
    /// type ends at the first colon and the actions start after the last.
    pub fn parse(text: &str) -> Option<Scope> {
        let (resource_type, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if resource_type.is_empty() || name.is_empty() || text.contains(char::is_whitespace) {
            return None;
        }
        Some(Scope {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.resource_type,
            self.name,
            self.actions.join(",")
        )
    }
}

/// One request to the token service, as a test sees it: no password, no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub method: String,
    /// The user who authenticated; `None` for an anonymous request or failed credentials.
    pub user: Option<String>,
    pub asked: Vec<Scope>,
    /// Each asked scope with the actions granted (possibly none); empty when no token was issued.
    pub granted: Vec<Scope>,
    pub status: u16,
}

/// The service: a listener thread on 127.0.0.1 and a thread per connection, ended when it is dropped.
pub struct TokenService {
    addr: SocketAddr,
    /// Whether the service speaks HTTPS: the scheme of `realm`.
    tls: bool,
    handler: TokenHandler,
    dir: tempfile::TempDir,
    acceptor: Option<JoinHandle<()>>,
}

/// The part that answers requests, cheap to clone, for whatever carries the bytes (plain TCP here, TLS later).
#[derive(Clone)]
pub struct TokenHandler {
    shared: Arc<Shared>,
}

struct Shared {
    options: TokenOptions,
    service: String,
    issuer: String,
    key: EcdsaKeyPair,
    /// The leaf certificate of `key`, DER in standard base64, as `x5c` wants it.
    x5c: String,
    rng: SystemRandom,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stopping: bool,
    requests: Vec<TokenRequest>,
    /// Refresh tokens handed out by the OAuth POST, to the user they stand for.
    refresh_tokens: HashMap<String, String>,
    sockets: HashMap<u64, TcpStream>,
    next_socket: u64,
}

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// distribution's `token.Leeway` on `exp` and `nbf`.
const REGISTRY_LEEWAY: u64 = 60;

impl TokenService {
    /// Serves plain HTTP.
    pub fn start(options: TokenOptions) -> anyhow::Result<TokenService> {
        TokenService::launch(options, None)
    }

    /// Serves HTTPS with this server configuration (`testkit::ServerCert::server_config`, for 127.0.0.1),
    /// as the real services do.
    pub fn start_with_tls(
        options: TokenOptions,
        tls: Arc<ServerConfig>,
    ) -> anyhow::Result<TokenService> {
        TokenService::launch(options, Some(tls))
    }

    fn launch(
        options: TokenOptions,
        tls: Option<Arc<ServerConfig>>,
    ) -> anyhow::Result<TokenService> {
        let dir = tempfile::Builder::new().prefix("20i-token-").tempdir()?;
        let (key, x5c, bundle) = signing_key().context("making the token signing key")?;
        fs::write(dir.path().join("root-bundle.pem"), bundle)?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the token service")?;
        let addr = listener.local_addr()?;
        let (service, issuer) = match options.flavor {
            Flavor::Ghcr => ("ghcr-standin", "ghcr-standin-issuer"),
            Flavor::DockerHub => ("registry-standin.docker.io", "auth-standin.docker.io"),
        };
        let handler = TokenHandler {
            shared: Arc::new(Shared {
                options,
                service: service.to_owned(),
                issuer: issuer.to_owned(),
                key,
                x5c,
                rng: SystemRandom::new(),
                state: Mutex::new(State::default()),
            }),
        };
        let serves_tls = tls.is_some();
        let acceptor = thread::Builder::new()
            .name(format!("token-service-{}", addr.port()))
            .spawn({
                let handler = handler.clone();
                move || handler.accept(&listener, tls.as_ref())
            })
            .context("starting the token service's thread")?;
        Ok(TokenService {
            addr,
            tls: serves_tls,
            handler,
            dir,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://127.0.0.1:PORT/token`: the challenge's `realm`.
    pub fn realm(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/token", self.addr)
    }

    pub fn service(&self) -> &str {
        &self.handler.shared.service
    }

    pub fn issuer(&self) -> &str {
        &self.handler.shared.issuer
    }

    /// The PEM file of the CA the registry must trust (`rootcertbundle`).
    pub fn root_cert_bundle(&self) -> PathBuf {
        self.dir.path().join("root-bundle.pem")
    }

    /// What a registry needs to take this service's tokens (`Registry::start_with_token`).
    pub fn registry_auth(&self) -> crate::registry::TokenAuthConfig {
        crate::registry::TokenAuthConfig {
            realm: self.realm(),
            service: self.service().to_owned(),
            issuer: self.issuer().to_owned(),
            root_cert_bundle: self.root_cert_bundle(),
        }
    }

    pub fn handler(&self) -> TokenHandler {
        self.handler.clone()
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.handler.shared.lock().requests.clone()
    }

    /// How many requests came with this method (`GET`, `POST`).
    pub fn count(&self, method: &str) -> usize {
        self.handler
            .shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == method)
            .count()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        {
            let mut state = self.handler.shared.lock();
            state.stopping = true;
            for socket in state.sockets.values() {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        // The acceptor blocks in accept(): one last connection wakes it to see `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TokenHandler {
    fn accept(&self, listener: &TcpListener, tls: Option<&Arc<ServerConfig>>) {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let id = {
                let mut state = self.shared.lock();
                if state.stopping {
                    return;
                }
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let id = state.next_socket;
                state.next_socket += 1;
                state.sockets.insert(id, clone);
                id
            };
            let handler = self.clone();
            let tls = tls.cloned();
            let spawned = thread::Builder::new()
                .name("token-service-connection".to_owned())
                .spawn(move || {
                    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
                    match tls.map(ServerConnection::new) {
                        Some(Ok(connection)) => {
                            if let Ok(socket) = stream.try_clone() {
                                let mut tls = StreamOwned::new(connection, socket);
                                let _ = handler.serve(&mut tls);
                                tls.conn.send_close_notify();
                                let _ = tls.flush();
                            }
                        }
                        Some(Err(_)) => {}
                        None => {
                            let _ = handler.serve(&stream);
                        }
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                    handler.shared.lock().sockets.remove(&id);
                });
            if spawned.is_err() {
                self.shared.lock().sockets.remove(&id);
            }
        }
    }

    /// Answers one request on `stream` and returns; the answer says `Connection: close`. The caller bounds
    /// the reads (a socket timeout) and closes the stream.
    pub fn serve<S: Read + Write>(&self, stream: S) -> io::Result<()> {
        let mut stream = BufReader::new(stream);
        let answer = match read_request(&mut stream) {
            Ok(request) => self.answer(&request),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                Answer::error(400, "invalid_request", &error.to_string())
            }
            Err(error) => return Err(error),
        };
        let writer = stream.get_mut();
        let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
        for (name, value) in &answer.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            answer.body.len()
        ));
        writer.write_all(head.as_bytes())?;
        writer.write_all(answer.body.as_bytes())?;
        writer.flush()
    }

    fn answer(&self, request: &HttpRequest) -> Answer {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((&request.target, ""));
        if path != "/token" {
            return Answer::error(404, "not_found", "only /token is served here");
        }
        let mut record = TokenRequest {
            method: request.method.clone(),
            user: None,
            asked: Vec::new(),
            granted: Vec::new(),
            status: 0,
        };
        let answer = match request.method.as_str() {
            "GET" => self.get(request, &parse_form(query), &mut record),
            "POST" if self.shared.options.flavor == Flavor::Ghcr => {
                Answer::error(405, "unsupported", "the token is fetched with GET here")
            }
            "POST" => {
                let body = String::from_utf8_lossy(&request.body);
                self.post(&parse_form(&body), &mut record)
            }
            _ => Answer::error(405, "unsupported", "GET or POST only"),
        };
        record.status = answer.status;
        self.shared.lock().requests.push(record);
        answer
    }

    /// The token protocol's GET (distribution's `docs/spec/auth/token.md`): Basic credentials, one `scope`
    /// parameter per scope.
    fn get(&self, request: &HttpRequest, form: &Form, record: &mut TokenRequest) -> Answer {
        let scopes = match self.scopes(form, record, false) {
            Ok(scopes) => scopes,
            Err(answer) => return answer,
        };
        let user = match request.header("authorization") {
            None => None,
            Some(value) => match basic_credentials(value) {
                Some((user, password)) if self.password_matches(&user, &password) => Some(user),
                _ => return Answer::error(401, "unauthorized", "incorrect username or password"),
            },
        };
        record.user = user.clone();
        self.issue(user.as_deref(), &scopes, record, None)
    }

    /// Docker Hub's OAuth POST (distribution's `docs/spec/auth/oauth.md`): a form with `grant_type=password`
    /// (`username`, `password`) or `refresh_token`, the scopes in one parameter joined by spaces as OAuth does.
    fn post(&self, form: &Form, record: &mut TokenRequest) -> Answer {
        let scopes = match self.scopes(form, record, true) {
            Ok(scopes) => scopes,
            Err(answer) => return answer,
        };
        let user = match form.first("grant_type") {
            Some("password") => {
                let (Some(user), Some(password)) = (form.first("username"), form.first("password"))
                else {
                    return Answer::error(400, "invalid_request", "username and password needed");
                };
                if !self.password_matches(user, password) {
                    return Answer::error(401, "unauthorized", "incorrect username or password");
                }
                user.to_owned()
            }
            Some("refresh_token") => {
                let known = form
                    .first("refresh_token")
                    .and_then(|token| self.shared.lock().refresh_tokens.get(token).cloned());
                match known {
                    Some(user) => user,
                    None => return Answer::error(401, "unauthorized", "unknown refresh token"),
                }
            }
            _ => return Answer::error(400, "unsupported_grant_type", "password or refresh_token"),
        };
        record.user = Some(user.clone());
        let refresh = (form.first("access_type") == Some("offline")).then(|| {
            let token = self.random_hex();
            self.shared
                .lock()
                .refresh_tokens
                .insert(token.clone(), user.clone());
            token
        });
        self.issue(Some(&user), &scopes, record, refresh)
    }

    /// The asked scopes, checked: the right service, and (for GET) no scope parameter holding a space.
    fn scopes(
        &self,
        form: &Form,
        record: &mut TokenRequest,
        oauth: bool,
    ) -> Result<Vec<Scope>, Answer> {
        if let Some(service) = form.first("service") {
            if service != self.shared.service {
                return Err(Answer::error(400, "invalid_request", "unknown service"));
            }
        }
        let mut scopes = Vec::new();
        for value in form.all("scope") {
            if !oauth && value.contains(' ') {
                // The token protocol asks for one `scope` parameter per scope; a strict service refuses the
                // OAuth habit of joining them (cesanta/docker_auth answered "invalid scope" until #274).
                return Err(Answer::error(
                    400,
                    "invalid_scope",
                    "one scope per scope parameter",
                ));
            }
            for text in value.split(' ').filter(|s| !s.is_empty()) {
                match Scope::parse(text) {
                    Some(scope) => scopes.push(scope),
                    None => {
                        return Err(Answer::error(400, "invalid_scope", "not type:name:actions"))
                    }
                }
            }
        }
        record.asked = scopes.clone();
        Ok(scopes)
    }

    fn password_matches(&self, user: &str, password: &str) -> bool {
        self.shared
            .options
            .users
            .iter()
            .any(|(u, p)| u == user && p == password)
    }

    /// The actions `user` (or anyone, for `None`) may do on a resource.
    fn allowed(&self, user: Option<&str>, scope: &Scope) -> Vec<String> {
        if scope.resource_type != "repository" {
            return Vec::new();
        }
        let options = &self.shared.options;
        let mut allowed: Vec<String> = Vec::new();
        if options.public_pull {
            allowed.push("pull".to_owned());
        }
        if let Some(user) = user {
            for grant in options.grants.iter().filter(|g| g.user == user) {
                if grant.covers(&scope.name) {
                    allowed.extend(grant.actions.iter().cloned());
                }
            }
        }
        allowed
    }

    fn issue(
        &self,
        user: Option<&str>,
        scopes: &[Scope],
        record: &mut TokenRequest,
        refresh: Option<String>,
    ) -> Answer {
        let granted: Vec<Scope> = scopes
            .iter()
            .map(|scope| {
                let allowed = self.allowed(user, scope);
                Scope {
                    actions: scope
                        .actions
                        .iter()
                        .filter(|a| allowed.contains(a))
                        .cloned()
                        .collect(),
                    ..scope.clone()
                }
            })
            .collect();
        let token = match self.jwt(user, &granted) {
            Ok(token) => token,
            Err(_) => return Answer::error(500, "server_error", "signing failed"),
        };
        record.granted = granted.clone();
        let expires_in = self.shared.options.expires_in.as_secs();
        let issued_at = humantime_utc(SystemTime::now());
        let mut body = match self.shared.options.flavor {
            Flavor::Ghcr => serde_json::json!({ "token": token }),
            Flavor::DockerHub => serde_json::json!({
                "token": token,
                "access_token": token,
                "expires_in": expires_in,
                "issued_at": issued_at,
            }),
        };
        if let Some(refresh) = refresh {
            body["refresh_token"] = refresh.into();
            body["scope"] = granted
                .iter()
                .map(Scope::to_string)
                .collect::<Vec<_>>()
                .join(" ")
                .into();
        }
        Answer {
            status: 200,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    fn jwt(&self, user: Option<&str>, granted: &[Scope]) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let expires_in = self.shared.options.expires_in.as_secs();
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [self.shared.x5c],
        });
        let access: Vec<_> = granted
            .iter()
            .map(|scope| {
                serde_json::json!({
                    "type": scope.resource_type,
                    "name": scope.name,
                    "actions": scope.actions,
                })
            })
            .collect();
        let claims = serde_json::json!({
            "iss": self.shared.issuer,
            "sub": user.unwrap_or_default(),
            "aud": self.shared.service,
            // See the module docs: the registry adds its leeway back.
            "exp": (now + expires_in).saturating_sub(REGISTRY_LEEWAY),
            "nbf": now.saturating_sub(1),
            "iat": now,
            "jti": self.random_hex(),
            "access": access,
        });
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!(
            "{}.{}",
            url.encode(header.to_string()),
            url.encode(claims.to_string())
        );
        let signature = self
            .shared
            .key
            .sign(&self.shared.rng, signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing the token failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            url.encode(signature.as_ref())
        ))
    }

    fn random_hex(&self) -> String {
        let mut bytes = [0u8; 16];
        // The system generator only fails where there is no entropy source at all.
        let _ = self.shared.rng.fill(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A P-256 key for ring, the PEM of a CA for `rootcertbundle`, and the key's certificate (signed by that CA)
/// for `x5c`.
fn signing_key() -> anyhow::Result<(EcdsaKeyPair, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "20i token service stand-in CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(Vec::<String>::new())?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "20i token service stand-in signer");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &leaf_key.serialize_der(),
        &rng,
    )
    .map_err(|e| anyhow::anyhow!("ring refused rcgen's key: {e}"))?;
    let x5c = base64::engine::general_purpose::STANDARD.encode(leaf_cert.der());
    Ok((key, x5c, ca_cert.pem()))
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    /// An error as Docker Hub's service words it: `details`, plus the OAuth `error` code.
    fn error(status: u16, code: &str, details: &str) -> Answer {
        let mut headers = Vec::new();
        if status == 401 {
            headers.push((
                "WWW-Authenticate".to_owned(),
                "Basic realm=\"token\"".to_owned(),
            ));
        }
        Answer {
            status,
            headers,
            body: serde_json::json!({ "error": code, "details": details }).to_string(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    }
}

/// `2026-12-02T15:04:05Z`, as `issued_at` is written.
fn humantime_utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// `user:password` from `Basic BASE64`.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A query string or an `application/x-www-form-urlencoded` body, every value of every name kept in order.
struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    fn first(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_form(text: &str) -> Form {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let pairs = text
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect();
    Form { pairs }
}

struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Longest line, and longest form body, the service reads.
const MAX_LINE: u64 = 16 * 1024;

fn read_request(reader: &mut impl BufRead) -> io::Result<HttpRequest> {
    let line = read_line(reader)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid("not an HTTP request line"));
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("not a header line"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = HttpRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: Vec::new(),
    };
    if let Some(length) = request.header("content-length") {
        let length: u64 = length.parse().map_err(|_| invalid("bad Content-Length"))?;
        if length > MAX_LINE {
            return Err(invalid("body too long"));
        }
        reader.take(length).read_to_end(&mut request.body)?;
    }
    Ok(request)
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(invalid("line too long or cut short"));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("not UTF-8"))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_scope(text: &str, expected: Option<(&str, &str, &[&str])>) {
        let actual = Scope::parse(text);
        let actual = actual
            .as_ref()
            .map(|s| (s.resource_type.as_str(), s.name.as_str(), s.actions.clone()));
        let expected = expected.map(|(t, n, a)| (t, n, a.iter().map(|s| s.to_string()).collect()));
        assert_eq!(actual, expected, "{text}");
    }

    #[test]
    fn scopes_parse_as_type_name_actions() {
        check_scope(
            "repository:team/app:pull,push",
            Some(("repository", "team/app", &["pull", "push"])),
        );
        check_scope(
            "repository:team/app:pull",
            Some(("repository", "team/app", &["pull"])),
        );
        check_scope(
            "repository:host:5000/app:pull",
            Some(("repository", "host:5000/app", &["pull"])),
        );
        check_scope("registry:catalog:*", Some(("registry", "catalog", &["*"])));
        check_scope(
            "repository:team/app:",
            Some(("repository", "team/app", &[])),
        );
        check_scope("repository:a:pull repository:b:pull", None);
        check_scope("repository", None);
        check_scope("repository:app", None);
    }

    #[track_caller]
    fn check_grant(prefix: &str, repository: &str, expected: bool) {
        assert_eq!(
            Grant::new("u", prefix, &["pull"]).covers(repository),
            expected,
            "{prefix} {repository}"
        );
    }

    #[test]
    fn grants_cover_a_namespace_by_whole_components() {
        check_grant("team", "team/app", true);
        check_grant("team", "team", true);
        check_grant("team/", "team/app", true);
        check_grant("team", "teammate/app", false);
        check_grant("", "anything/at/all", true);
    }

    #[test]
    fn forms_decode_repeated_names_and_escapes() {
        let form =
            parse_form("scope=repository%3Aa%2Fb%3Apull&scope=repository:c:push&service=s+t&empty");
        assert_eq!(
            form.all("scope").collect::<Vec<_>>(),
            ["repository:a/b:pull", "repository:c:push"]
        );
        assert_eq!(form.first("service"), Some("s t"));
        assert_eq!(form.first("empty"), Some(""));
        assert_eq!(form.first("missing"), None);
    }

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(
            basic_credentials("Basic dTpwOnE="),
            Some(("u".to_owned(), "p:q".to_owned()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
    }

    #[test]
    fn issued_at_is_utc() {
        let time = UNIX_EPOCH + Duration::from_secs(1_796_223_845);
        assert_eq!(humantime_utc(time), "2026-12-02T15:04:05Z");
        assert_eq!(humantime_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn options_debug_hides_passwords() {
        let options = TokenOptions {
            flavor: Flavor::Ghcr,
            users: vec![("alice".to_owned(), "s3cret-pw".to_owned())],
            grants: Vec::new(),
            expires_in: Duration::from_secs(300),
            public_pull: false,
        };
        let text = format!("{options:?}");
        assert!(
            text.contains("alice") && !text.contains("s3cret-pw"),
            "{text}"
        );
    }
}
