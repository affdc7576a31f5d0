//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of a real registry: it forwards every request and, for
//! the kinds of request a test picks, answers with a rate limit, a server error, a closed or reset connection, a
//! body cut short or with one byte flipped, a slow answer, or no answer at all. Real clients (docker, buildx,
//! containerd, skopeo, curl) talk to it as they would to the registry. With a personality
//! (`FaultProxy::set_personality`, `crate::personality`) it also answers where GHCR or Docker Hub differ from it.
//!
//! Each request is forwarded on its own upstream connection with `Connection: close`, and its answer is read in
//! full before it is sent on: bodies are small here (fixtures), and a whole body is what a fault needs to cut or
//! flip. The client side keeps its connection alive unless it asks otherwise. The `Host` header goes upstream
//! untouched, so the `Location` URLs the registry builds point back at the proxy. When the registry itself is
//! down (`Registry::stop`), the proxy closes the client's connection without an answer.
//!
//! Either leg may be TLS (`ProxyTls`): the proxy then presents a certificate from the test CA to its clients, and
//! checks the registry's against that CA, as a client of GHCR or Docker Hub would; faults and counts are the same
//! on either. `FaultProxy::in_front_of` picks TLS on both legs for a TLS registry.

use std::{
    fmt,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

use crate::personality::{Personality, Rule};
use crate::server::{Server, Threads};

/// What a request asks of a registry, told from its method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// `GET /v2/`: the version check every client starts with.
    Ping,
    ManifestGet,
    ManifestHead,
    ManifestPut,
    BlobGet,
    BlobHead,
    /// `POST`, `PATCH` or `PUT` under `/blobs/uploads/`.
    BlobUpload,
    TagsList,
    Other,
}

impl RequestKind {
    /// The kind of `method target`, where the target may carry a query.
    pub fn of(method: &str, target: &str) -> RequestKind {
        use RequestKind::*;
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        let Some(rest) = path.strip_prefix("/v2/") else {
            return if path == "/v2" { Ping } else { Other };
        };
        if rest.is_empty() {
            return Ping;
        }
        // Repository names may hold `manifests` or `blobs` as a component, so the last one decides, and what
        // follows it must be a single reference.
        if let Some((_, after)) = rest.rsplit_once("/blobs/uploads") {
            let session = after.strip_prefix('/').unwrap_or(after);
            if (after.is_empty() || after.starts_with('/')) && !session.contains('/') {
                return match method {
                    "POST" | "PATCH" | "PUT" => BlobUpload,
                    _ => Other,
                };
            }
        }
        if let Some((_, reference)) = rest.rsplit_once("/manifests/") {
            if !reference.is_empty() && !reference.contains('/') {
                return match method {
                    "GET" => ManifestGet,
                    "HEAD" => ManifestHead,
                    "PUT" => ManifestPut,
                    _ => Other,
                };
            }
        }
        if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
            if !digest.is_empty() && !digest.contains('/') {
                return match method {
                    "GET" => BlobGet,
                    "HEAD" => BlobHead,
                    _ => Other,
                };
            }
        }
        if rest.ends_with("/tags/list") && method == "GET" {
            return TagsList;
        }
        Other
    }
}

/// What the proxy does instead of forwarding faithfully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `429 Too Many Requests`, with `Retry-After: SECONDS` when given; the registry never sees the request.
    RateLimited { retry_after: Option<u64> },
    /// This status (500, 502, 503, ...) with a distribution-style error body; the registry never sees the request.
    Status(u16),
    /// Reads the request, then closes the connection without a byte of answer.
    Refuse,
    /// Reads the request, then resets the connection (RST).
    Reset,
    /// Forwards, then sends the status and headers with the full `Content-Length` but only the first half of the
    /// body, and closes the connection.
    CutBody,
    /// Forwards, then flips the lowest bit of the answer body's middle byte: same length, different sha256 (an
    /// empty body stays as it is).
    FlipByte,
    /// Flips the lowest bit of the request body's middle byte, then forwards: what the registry stores is not
    /// what the client sent (a manifest pushed under a tag, a blob upload).
    FlipRequestByte,
    /// Waits this long before forwarding.
    Delay(Duration),
    /// Forwards, then sends the answer `chunk` bytes at a time with `pause` between them.
    Trickle { chunk: usize, pause: Duration },
    /// Reads the request and never answers, until the proxy is dropped.
    Stall,
}

impl Fault {
    /// This fault for the next `n` matching requests only.
    pub fn times(self, n: u32) -> Injection {
        Injection::from(self).times(n)
    }

    /// This fault only for requests whose target (path and query) contains `text`, such as a repository name,
    /// a tag or a digest.
    pub fn matching(self, text: &str) -> Injection {
        Injection::from(self).matching(text)
    }
}

/// A fault with the requests it applies to: every request of its kind unless narrowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    pub fault: Fault,
    /// How many more requests it applies to; `None` is all of them.
    pub remaining: Option<u32>,
    /// A substring the request target must contain.
    pub matching: Option<String>,
}

impl Injection {
    pub fn times(mut self, n: u32) -> Injection {
        self.remaining = Some(n);
        self
    }

    pub fn matching(mut self, text: &str) -> Injection {
        self.matching = Some(text.to_owned());
        self
    }
}

impl From<Fault> for Injection {
    fn from(fault: Fault) -> Injection {
        Injection {
            fault,
            remaining: None,
            matching: None,
        }
    }
}

/// One request the proxy received, and the fault it got, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    pub kind: RequestKind,
    pub method: String,
    pub target: String,
    pub fault: Option<Fault>,
}

impl fmt::Display for SeenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.target, self.kind)?;
        if let Some(fault) = &self.fault {
            write!(f, " -> {fault:?}")?;
        }
        Ok(())
    }
}

/// TLS on either leg of the proxy: `serve` for what clients connect to, `upstream` for the connection to the
/// registry (trusting the CA its certificate comes from).
#[derive(Clone, Default)]
pub struct ProxyTls {
    pub serve: Option<Arc<ServerConfig>>,
    pub upstream: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for ProxyTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyTls")
            .field("serve", &self.serve.is_some())
            .field("upstream", &self.upstream.is_some())
            .finish()
    }
}

/// The proxy: a listener thread and one thread per client connection, all ended when it is dropped.
pub struct FaultProxy {
    /// Dropped first: stops the threads, which hold `shared` too.
    server: Server,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`, both in plain HTTP.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        FaultProxy::start_with(upstream, ProxyTls::default())
    }

    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`, with TLS on the legs `tls` says.
    pub fn start_with(upstream: SocketAddr, tls: ProxyTls) -> anyhow::Result<FaultProxy> {
        FaultProxy::start_on(0, upstream, tls)
    }

    /// Listens on 127.0.0.1:`port` (a free one for 0) and forwards to `upstream`, with TLS on the legs `tls`
    /// says. A given port is for what users type, as `make demo`'s registries; tests take a free one.
    pub fn start_on(port: u16, upstream: SocketAddr, tls: ProxyTls) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", port)).with_context(|| {
            format!("binding the fault proxy to 127.0.0.1:{port}: is the port taken?")
        })?;
        let shared = Arc::new(Shared {
            upstream,
            tls,
            state: Mutex::new(State::default()),
            threads: Arc::default(),
            personality: Mutex::default(),
            plain_too: Default::default(),
            plain_connections: Default::default(),
        });
        let server = Server::start(listener, Arc::clone(&shared.threads), "fault-proxy", {
            let shared = Arc::clone(&shared);
            move |stream| {
                let _ = serve(&shared, stream);
            }
        })
        .context("starting the fault proxy's thread")?;
        Ok(FaultProxy { server, shared })
    }

    /// A proxy in front of this registry: TLS on both legs for a TLS registry (presenting the registry's own
    /// certificate, which names 127.0.0.1, and trusting its CA), plain HTTP otherwise.
    pub fn in_front_of(registry: &crate::Registry) -> anyhow::Result<FaultProxy> {
        FaultProxy::in_front_of_on(0, registry)
    }

    /// The same on 127.0.0.1:`port` (a free one for 0).
    pub fn in_front_of_on(port: u16, registry: &crate::Registry) -> anyhow::Result<FaultProxy> {
        let upstream = registry
            .host()
            .parse()
            .with_context(|| format!("`{}` is not a socket address", registry.host()))?;
        let tls = match (registry.ca(), registry.server_cert()) {
            (Some(ca), Some(cert)) => ProxyTls {
                serve: Some(cert.server_config()),
                upstream: Some(ca.client_config()),
            },
            _ => ProxyTls::default(),
        };
        FaultProxy::start_on(port, upstream, tls)
    }

    /// With `true`, a TLS proxy also serves clients that open in plain HTTP, in plain HTTP. buildx's own
    /// registry client (`imagetools create`) speaks only plain HTTP to a loopback registry, where it would speak
    /// HTTPS to ghcr.io or docker.io: this lets it reach a TLS stand-in on 127.0.0.1 at all.
    pub fn also_plain_http(&self, yes: bool) {
        use std::sync::atomic::Ordering;
        self.shared.plain_too.store(yes, Ordering::SeqCst);
    }

    /// How many connections a TLS proxy served in plain HTTP ([`FaultProxy::also_plain_http`]).
    pub fn plain_connections(&self) -> usize {
        use std::sync::atomic::Ordering;
        self.shared.plain_connections.load(Ordering::SeqCst)
    }

    /// Whether clients must speak TLS to the proxy.
    pub fn is_tls(&self) -> bool {
        self.shared.tls.serve.is_some()
    }

    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `127.0.0.1:PORT`: the host part of references that go through the proxy.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// A namespace through the proxy, e.g. `127.0.0.1:PORT/test`.
    pub fn namespace(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// Replaces the injections for `kind` with this one.
    pub fn set(&self, kind: RequestKind, injection: impl Into<Injection>) {
        let mut state = self.shared.lock();
        state.rules.retain(|(k, _)| *k != kind);
        state.rules.push((kind, injection.into()));
    }

    /// Adds an injection for `kind` after those already set: the first one that matches and is not used up
    /// applies, so `503.times(2)` then `FlipByte.times(1)` fails two requests then corrupts the third.
    pub fn add(&self, kind: RequestKind, injection: impl Into<Injection>) {
        self.shared.lock().rules.push((kind, injection.into()));
    }

    /// Removes every injection: from now on the proxy forwards faithfully.
    pub fn clear(&self) {
        self.shared.lock().rules.clear();
    }

    /// How many requests of this kind arrived.
    pub fn count(&self, kind: RequestKind) -> usize {
        self.shared
            .lock()
            .seen
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    }

    /// How many requests of this kind got a fault.
    pub fn faulted(&self, kind: RequestKind) -> usize {
        self.shared
            .lock()
            .seen
            .iter()
            .filter(|r| r.kind == kind && r.fault.is_some())
            .count()
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.lock().seen.clone()
    }

    /// From now on, answers as GHCR or Docker Hub would where they differ from `distribution`
    /// (`crate::personality`); injected faults still come first.
    pub fn set_personality(&self, personality: Personality) -> anyhow::Result<()> {
        let active = crate::personality::Active::new(personality, self.shared.tls.serve.clone())?;
        *self.shared.personality() = Some(active);
        Ok(())
    }

    /// How many times a personality rule changed an answer.
    pub fn fired(&self, rule: Rule) -> usize {
        self.shared
            .personality()
            .as_ref()
            .map_or(0, |active| active.fired(rule))
    }
}

pub(crate) struct Shared {
    upstream: SocketAddr,
    tls: ProxyTls,
    state: Mutex<State>,
    /// Every connection thread and open socket of the proxy, client and upstream, stopped when it is dropped.
    threads: Arc<Threads>,
    /// The GHCR or Docker Hub rules in force (`crate::personality`): a lock of its own, never held while a
    /// request is forwarded.
    personality: Mutex<Option<crate::personality::Active>>,
    /// A TLS proxy serves a connection that opens in plain HTTP as plain HTTP ([`FaultProxy::also_plain_http`]).
    plain_too: std::sync::atomic::AtomicBool,
    plain_connections: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct State {
    rules: Vec<(RequestKind, Injection)>,
    seen: Vec<SeenRequest>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not turn every later call into a second panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether clients speak TLS to the proxy: the scheme of the URLs it hands out.
    pub(crate) fn serves_tls(&self) -> bool {
        self.tls.serve.is_some()
    }

    pub(crate) fn personality(&self) -> MutexGuard<'_, Option<crate::personality::Active>> {
        self.personality.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the request and takes the fault it gets, using up one of a counted injection.
    fn fault_for(&self, kind: RequestKind, method: &str, target: &str) -> Option<Fault> {
        let mut state = self.lock();
        let fault = state
            .rules
            .iter_mut()
            .filter(|(k, _)| *k == kind)
            .map(|(_, injection)| injection)
            .find(|injection| {
                let wanted = match &injection.matching {
                    Some(text) => target.contains(text.as_str()),
                    None => true,
                };
                injection.remaining != Some(0) && wanted
            })
            .map(|injection| {
                if let Some(n) = &mut injection.remaining {
                    *n -= 1;
                }
                injection.fault.clone()
            });
        state.seen.push(SeenRequest {
            kind,
            method: method.to_owned(),
            target: target.to_owned(),
            fault: fault.clone(),
        });
        fault
    }
}

/// Longest request or status line, or header line, the proxy accepts.
const MAX_LINE: u64 = 64 * 1024;
/// How long a client may stay idle between requests, and a registry silent, before the proxy gives up on it.
const IDLE: Duration = Duration::from_secs(120);

/// Serves one client connection, request after request, until either side closes it or a fault ends it.
fn serve(shared: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(IDLE))?;
    client.set_write_timeout(Some(IDLE))?;
    let _ = client.set_nodelay(true);
    let client = match &shared.tls.serve {
        Some(config) => {
            use std::sync::atomic::Ordering;
            let mut first = [0u8; 1];
            let plain = client.peek(&mut first)? == 1 && first[0] != TLS_HANDSHAKE;
            if plain && shared.plain_too.load(Ordering::SeqCst) {
                shared.plain_connections.fetch_add(1, Ordering::SeqCst);
                Stream::plain(client)
            } else if plain {
                // What Go's TLS servers (distribution's) answer to plain HTTP on their port.
                let mut client = client;
                client.write_all(
                    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
                )?;
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            } else {
                let connection =
                    ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
                Stream::tls(client, TlsConnection::Server(connection))?
            }
        }
        None => Stream::plain(client),
    };
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    if looks_like_tls(&mut reader)? {
        // What Go's servers answer, and what Go's clients (docker, containerd) take as the sign to retry in
        // plain HTTP: anything else, and a push to a loopback registry fails instead of falling back.
        writer.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )?;
        let _ = writer.shutdown(Shutdown::Both);
        return Ok(());
    }
    loop {
        let mut request = match Request::read(&mut reader, &mut writer) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                writer.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                let _ = writer.shutdown(Shutdown::Both);
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let kind = RequestKind::of(&request.method, &request.target);
        let fault = shared.fault_for(kind, &request.method, &request.target);
        let keep_alive = request.keep_alive;
        match fault {
            None => {
                let response = crate::personality::respond(shared, &request)?;
                response.write(&mut writer, keep_alive, &response.body)?;
            }
            Some(Fault::RateLimited { retry_after }) => {
                let mut headers = Vec::new();
                if let Some(seconds) = retry_after {
                    headers.push(("Retry-After".to_owned(), seconds.to_string()));
                }
                let response = Response::error(429, headers);
                response.write(&mut writer, keep_alive, body_of(&request, &response))?;
            }
            Some(Fault::Status(code)) => {
                let response = Response::error(code, Vec::new());
                response.write(&mut writer, keep_alive, body_of(&request, &response))?;
            }
            Some(Fault::Refuse) => {
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::Reset) => {
                reset(writer.raw());
                return Ok(());
            }
            Some(Fault::CutBody) => {
                let response = forward(shared, &request)?;
                let kept = &response.body[..response.body.len() / 2];
                response.write_head(&mut writer, false)?;
                writer.write_all(kept)?;
                writer.flush()?;
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::FlipByte) => {
                let mut response = forward(shared, &request)?;
                let middle = response.body.len() / 2;
                if let Some(byte) = response.body.get_mut(middle) {
                    *byte ^= 0x01;
                }
                response.write(&mut writer, keep_alive, &response.body)?;
            }
            Some(Fault::FlipRequestByte) => {
                let middle = request.body.len() / 2;
                if let Some(byte) = request.body.get_mut(middle) {
                    *byte ^= 0x01;
                }
                let response = forward(shared, &request)?;
                response.write(&mut writer, keep_alive, &response.body)?;
            }
            Some(Fault::Delay(duration)) => {
                if shared.threads.sleep_until(Instant::now() + duration) {
                    return Ok(());
                }
                let response = forward(shared, &request)?;
                response.write(&mut writer, keep_alive, &response.body)?;
            }
            Some(Fault::Trickle { chunk, pause }) => {
                let response = forward(shared, &request)?;
                response.write_head(&mut writer, keep_alive)?;
                for (i, piece) in response.body.chunks(chunk.max(1)).enumerate() {
                    if i > 0 && shared.threads.sleep_until(Instant::now() + pause) {
                        return Ok(());
                    }
                    writer.write_all(piece)?;
                    writer.flush()?;
                }
            }
            Some(Fault::Stall) => {
                shared.threads.wait_until_stopping();
                return Ok(());
            }
        }
        if !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Whether the connection opens with a TLS handshake record rather than a request line.
fn looks_like_tls(reader: &mut impl BufRead) -> io::Result<bool> {
    let first = reader.fill_buf()?;
    Ok(first.first() == Some(&TLS_HANDSHAKE))
}

/// One side of a TLS connection, client or server: rustls's two types behind one `Read` and `Write`.
enum TlsConnection {
    Server(ServerConnection),
    Client(ClientConnection),
}

enum TlsStream {
    Server(StreamOwned<ServerConnection, TcpStream>),
    Client(StreamOwned<ClientConnection, TcpStream>),
}

impl TlsStream {
    fn send_close_notify(&mut self) {
        match self {
            TlsStream::Server(s) => s.conn.send_close_notify(),
            TlsStream::Client(s) => s.conn.send_close_notify(),
        }
        let _ = self.flush();
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            TlsStream::Server(s) => s.read(buf),
            TlsStream::Client(s) => s.read(buf),
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            TlsStream::Server(s) => s.write(buf),
            TlsStream::Client(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            TlsStream::Server(s) => s.flush(),
            TlsStream::Client(s) => s.flush(),
        }
    }
}

/// A connection of the proxy, plain or TLS, used like a `TcpStream`: clones share it (a TLS session cannot be
/// split, but each connection is read and written by one thread in turn), and the raw socket stays at hand to
/// shut down or reset.
struct Stream {
    raw: TcpStream,
    tls: Option<Arc<Mutex<TlsStream>>>,
}

impl Stream {
    fn plain(raw: TcpStream) -> Stream {
        Stream { raw, tls: None }
    }

    fn tls(raw: TcpStream, connection: TlsConnection) -> io::Result<Stream> {
        let socket = raw.try_clone()?;
        let tls = match connection {
            TlsConnection::Server(c) => TlsStream::Server(StreamOwned::new(c, socket)),
            TlsConnection::Client(c) => TlsStream::Client(StreamOwned::new(c, socket)),
        };
        Ok(Stream {
            raw,
            tls: Some(Arc::new(Mutex::new(tls))),
        })
    }

    fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream {
            raw: self.raw.try_clone()?,
            tls: self.tls.clone(),
        })
    }

    fn raw(&self) -> &TcpStream {
        &self.raw
    }

    /// Ends the connection, with a TLS `close_notify` first on TLS.
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if let Some(tls) = &self.tls {
            lock_tls(tls).send_close_notify();
        }
        self.raw.shutdown(how)
    }
}

fn lock_tls(tls: &Mutex<TlsStream>) -> MutexGuard<'_, TlsStream> {
    tls.lock().unwrap_or_else(|e| e.into_inner())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            Some(tls) => lock_tls(tls).read(buf),
            None => self.raw.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            Some(tls) => lock_tls(tls).write(buf),
            None => self.raw.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.tls {
            Some(tls) => lock_tls(tls).flush(),
            None => self.raw.flush(),
        }
    }
}

/// A HEAD answer carries no body, whatever the status.
fn body_of<'a>(request: &Request, response: &'a Response) -> &'a [u8] {
    if request.method == "HEAD" {
        &[]
    } else {
        &response.body
    }
}

/// Closes with an RST instead of a FIN: a zero linger time makes `close` discard and reset.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open for as long as `stream` lives, and the option value is a `linger` of the
    // size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // Closing every descriptor of the socket sends the RST; the clone kept for drop is closed when the
    // connection is unregistered, right after this returns.
}

/// A request as read from a client, its body de-chunked.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    /// Header lines other than those about this hop (framing, connection, `Expect`).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) keep_alive: bool,
}

impl Request {
    /// The next request, or `None` when the client closed the connection between requests.
    fn read(reader: &mut impl BufRead, client: &mut impl Write) -> io::Result<Option<Request>> {
        let line = match read_line(reader)? {
            Some(line) if line.is_empty() => match read_line(reader)? {
                // Some clients send a stray CRLF after a body; RFC 9112 says to ignore it.
                Some(line) => line,
                None => return Ok(None),
            },
            Some(line) => line,
            None => return Ok(None),
        };
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(format!("not an HTTP request line: {line:?}")));
        };
        let head = read_headers(reader)?;
        let connection = head.get("connection").unwrap_or_default().to_lowercase();
        let keep_alive = if version == "HTTP/1.0" {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };
        if head
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            client.flush()?;
        }
        let body = head.read_body(reader, false)?;
        Ok(Some(Request {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: head.end_to_end(),
            body,
            keep_alive,
        }))
    }
}

/// An answer from the registry, its body read in full and de-chunked.
pub(crate) struct Response {
    pub(crate) status_line: String,
    pub(crate) headers: Vec<(String, String)>,
    /// `Some` for an answer that has no body (to HEAD, or a 204 or 304): the `Content-Length` the registry
    /// sent with it, if any, which describes what a GET would get.
    pub(crate) bodiless: Option<Option<String>>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// An answer such as distribution gives, with its error code in a JSON body.
    fn error(code: u16, mut headers: Vec<(String, String)>) -> Response {
        let reason = match code {
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Injected Fault",
        };
        let error_code = if code == 429 {
            "TOOMANYREQUESTS"
        } else {
            "UNAVAILABLE"
        };
        let body = format!(
            r#"{{"errors":[{{"code":"{error_code}","message":"injected by the fault proxy"}}]}}"#
        );
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        headers.push((
            "Docker-Distribution-Api-Version".to_owned(),
            "registry/2.0".to_owned(),
        ));
        Response {
            status_line: format!("HTTP/1.1 {code} {reason}"),
            headers,
            bodiless: None,
            body: body.into_bytes(),
        }
    }

    fn write_head(&self, client: &mut impl Write, keep_alive: bool) -> io::Result<()> {
        let mut head = format!("{}\r\n", self.status_line);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        match &self.bodiless {
            Some(Some(length)) => head.push_str(&format!("Content-Length: {length}\r\n")),
            Some(None) => {}
            None => head.push_str(&format!("Content-Length: {}\r\n", self.body.len())),
        }
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        client.write_all(head.as_bytes())
    }

    fn write(&self, client: &mut impl Write, keep_alive: bool, body: &[u8]) -> io::Result<()> {
        self.write_head(client, keep_alive)?;
        client.write_all(body)?;
        client.flush()
    }

    pub(crate) fn status(&self) -> u16 {
        status_code(&self.status_line).unwrap_or(0)
    }

    /// Whether the status allows a body at all (HEAD answers are told apart when reading).
    fn has_body(&self) -> bool {
        let status = self.status();
        !(100..200).contains(&status) && status != 204 && status != 304
    }
}

fn status_code(status_line: &str) -> Option<u16> {
    status_line.split(' ').nth(1)?.parse().ok()
}

/// Sends the request to the registry on a fresh connection and reads its whole answer.
pub(crate) fn forward(shared: &Shared, request: &Request) -> io::Result<Response> {
    let socket = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    let Some(id) = shared.threads.register(&socket) else {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the proxy is stopping",
        ));
    };
    let result = upstream(shared, socket).and_then(|upstream| exchange(&upstream, request));
    shared.threads.unregister(id);
    result
}

/// The connection to the registry: TLS checked against the test CA, for the registry's IP address, when the
/// proxy is set so.
fn upstream(shared: &Shared, socket: TcpStream) -> io::Result<Stream> {
    let Some(config) = &shared.tls.upstream else {
        return Ok(Stream::plain(socket));
    };
    let name = rustls_pki_types::ServerName::IpAddress(shared.upstream.ip().into());
    let connection = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    Stream::tls(socket, TlsConnection::Client(connection))
}

fn exchange(upstream: &Stream, request: &Request) -> io::Result<Response> {
    upstream.raw().set_read_timeout(Some(IDLE))?;
    upstream.raw().set_write_timeout(Some(IDLE))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !request.body.is_empty() || matches!(request.method.as_str(), "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut writer = upstream.try_clone()?;
    writer.write_all(head.as_bytes())?;
    writer.write_all(&request.body)?;
    writer.flush()?;

    let mut reader = BufReader::new(upstream.try_clone()?);
    loop {
        let status_line = read_line(&mut reader)?
            .ok_or_else(|| invalid("the registry closed the connection without answering"))?;
        let head = read_headers(&mut reader)?;
        let mut response = Response {
            status_line,
            headers: head.end_to_end(),
            bodiless: None,
            body: Vec::new(),
        };
        if (100..200).contains(&response.status()) {
            // An interim answer (`Expect` is not forwarded, so this is unexpected, but harmless): the real one
            // follows.
            continue;
        }
        if request.method == "HEAD" || !response.has_body() {
            response.bodiless = Some(head.get("content-length").map(str::to_owned));
        } else {
            response.body = head.read_body(&mut reader, true)?;
        }
        return Ok(response);
    }
}

/// The header lines of a request or an answer.
pub(crate) struct Head {
    lines: Vec<(String, String)>,
}

impl Head {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The headers that go on to the next hop: framing and connection handling are redone by the proxy.
    fn end_to_end(&self) -> Vec<(String, String)> {
        const HOP_BY_HOP: [&str; 7] = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "content-length",
            "expect",
            "te",
        ];
        self.lines
            .iter()
            .filter(|(name, _)| !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)))
            .cloned()
            .collect()
    }

    /// Reads the body as the headers frame it: chunked, by `Content-Length`, or (for an answer, `until_close`)
    /// everything up to the end of the connection. A request without either has no body.
    fn read_body(&self, reader: &mut impl BufRead, until_close: bool) -> io::Result<Vec<u8>> {
        let chunked = self
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return read_chunked(reader);
        }
        if let Some(length) = self.get("content-length") {
            let length: u64 = length
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
            let mut body = Vec::new();
            reader.take(length).read_to_end(&mut body)?;
            if body.len() as u64 != length {
                return Err(invalid(format!(
                    "body ended after {} of {length} bytes",
                    body.len()
                )));
            }
            return Ok(body);
        }
        let mut body = Vec::new();
        if until_close {
            reader.read_to_end(&mut body)?;
        }
        Ok(body)
    }
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("chunked body cut short"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, if any, end with an empty line like headers do.
            read_headers(reader)?;
            return Ok(body);
        }
        let start = body.len();
        reader.take(size).read_to_end(&mut body)?;
        if (body.len() - start) as u64 != size {
            return Err(invalid("chunked body cut short"));
        }
        read_line(reader)?;
    }
}

pub(crate) fn read_headers(reader: &mut impl BufRead) -> io::Result<Head> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("headers cut short"))?;
        if line.is_empty() {
            return Ok(Head { lines });
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("not a header line: {line:?}")))?;
        lines.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// One line without its CRLF, or `None` at the end of the stream.
pub(crate) fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    reader.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(invalid("line too long or cut short"));
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("a header line is not UTF-8"))
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(method: &str, target: &str, expected: RequestKind) {
        assert_eq!(
            RequestKind::of(method, target),
            expected,
            "{method} {target}"
        );
    }

    #[test]
    fn request_kinds_from_method_and_path() {
        use RequestKind::*;
        check("GET", "/v2/", Ping);
        check("GET", "/v2", Ping);
        check("HEAD", "/v2/", Ping);
        check("GET", "/v2/test/php-fpm/manifests/v1.2.3", ManifestGet);
        check(
            "HEAD",
            "/v2/test/php-fpm/manifests/sha256:abc",
            ManifestHead,
        );
        check("PUT", "/v2/test/php-fpm/manifests/php-8.4", ManifestPut);
        check("DELETE", "/v2/test/php-fpm/manifests/sha256:abc", Other);
        check("GET", "/v2/a/manifests/b/manifests/latest", ManifestGet);
        check("GET", "/v2/test/php-fpm/blobs/sha256:abc", BlobGet);
        check("HEAD", "/v2/test/php-fpm/blobs/sha256:abc", BlobHead);
        check("GET", "/v2/a/blobs/b/blobs/sha256:abc", BlobGet);
        check("POST", "/v2/test/php-fpm/blobs/uploads/", BlobUpload);
        check(
            "POST",
            "/v2/test/x/blobs/uploads/?mount=sha256:abc&from=test/y",
            BlobUpload,
        );
        check(
            "PATCH",
            "/v2/test/x/blobs/uploads/0f2c-11?_state=abc",
            BlobUpload,
        );
        check(
            "PUT",
            "/v2/test/x/blobs/uploads/0f2c-11?_state=a&digest=sha256:b",
            BlobUpload,
        );
        check("GET", "/v2/test/x/blobs/uploads/0f2c-11", Other);
        check("GET", "/v2/test/php-fpm/tags/list", TagsList);
        check("GET", "/v2/test/php-fpm/tags/list?n=10&last=a", TagsList);
        check("GET", "/v2/_catalog", Other);
        check("GET", "/v2/test/php-fpm/manifests/", Other);
        check("GET", "/", Other);
        check("GET", "/v20/", Other);
    }

    #[track_caller]
    fn check_request(raw: &str, expected: Option<(&str, &str, &[u8], bool)>, interim: &str) {
        let mut reader = io::Cursor::new(raw.as_bytes().to_vec());
        let mut written = Vec::new();
        let request = Request::read(&mut reader, &mut written).expect(raw);
        let actual = request.as_ref().map(|r| {
            (
                r.method.as_str(),
                r.target.as_str(),
                &r.body[..],
                r.keep_alive,
            )
        });
        assert_eq!(actual, expected, "{raw:?}");
        assert_eq!(String::from_utf8_lossy(&written), interim, "{raw:?}");
    }

    #[test]
    fn requests_framed_every_way_clients_frame_them() {
        let continue_ = "HTTP/1.1 100 Continue\r\n\r\n";
        check_request("", None, "");
        check_request(
            "GET /v2/ HTTP/1.1\r\nHost: h\r\n\r\n",
            Some(("GET", "/v2/", b"", true)),
            "",
        );
        check_request(
            "GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            Some(("GET", "/v2/", b"", false)),
            "",
        );
        check_request(
            "GET /v2/ HTTP/1.0\r\n\r\n",
            Some(("GET", "/v2/", b"", false)),
            "",
        );
        check_request(
            "PUT /v2/x/manifests/1 HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
            Some(("PUT", "/v2/x/manifests/1", b"hello", true)),
            "",
        );
        check_request(
            "PATCH /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n",
            Some(("PATCH", "/u", b"hello!", true)),
            "",
        );
        check_request(
            "PUT /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
            Some(("PUT", "/u", b"ok", true)),
            continue_,
        );
        check_request(
            "\r\nGET /v2/ HTTP/1.1\r\n\r\n",
            Some(("GET", "/v2/", b"", true)),
            "",
        );
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let head = Head {
            lines: [
                ("Host", "127.0.0.1:1"),
                ("Connection", "keep-alive"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "3"),
                ("Expect", "100-continue"),
                ("Authorization", "Basic eDp5"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .to_vec(),
        };
        let names: Vec<_> = head.end_to_end().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "Authorization"]);
    }

    #[test]
    fn counted_injections_are_used_up_in_order() {
        let shared = Shared {
            upstream: "127.0.0.1:1".parse().unwrap(),
            tls: ProxyTls::default(),
            state: Mutex::new(State::default()),
            threads: Arc::default(),
            personality: Mutex::default(),
            plain_too: Default::default(),
            plain_connections: Default::default(),
        };
        shared.lock().rules = vec![
            (RequestKind::BlobGet, Fault::Status(503).times(2)),
            (RequestKind::BlobGet, Fault::FlipByte.matching("sha256:b")),
        ];
        let faults: Vec<_> = ["a", "b", "sha256:b", "sha256:a", "sha256:b"]
            .iter()
            .map(|target| shared.fault_for(RequestKind::BlobGet, "GET", target))
            .collect();
        assert_eq!(
            faults,
            [
                Some(Fault::Status(503)),
                Some(Fault::Status(503)),
                Some(Fault::FlipByte),
                None,
                Some(Fault::FlipByte)
            ]
        );
        assert_eq!(shared.fault_for(RequestKind::Ping, "GET", "/v2/"), None);
        assert_eq!(shared.lock().seen.len(), 6);
    }
}
