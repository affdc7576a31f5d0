//! Pulls through the Docker Engine API, a part of the docker door (`docker.rs`; [`crate::docker::Docker::pull`]
//! is the only caller): `POST /images/create` on the engine's unix socket, with `X-Registry-Auth` made from the
//! login docker holds for the registry, read as a stream of JSON lines whose `progressDetail` gives each layer's
//! bytes. Progress is bytes, not lines: a pull is stalled when no layer gained a byte (or finished) for the stall
//! bound, whatever the engine prints, and a download that moves is never taken for a stall.
//!
//! HTTP/1.1 over a `UnixStream` by hand (about a hundred lines: a request, a status line, headers, a chunked
//! body): `ureq` (already in the tree for registries) speaks TCP and TLS, and reaching a unix socket needs a
//! connector of its own, while the stall logic needs a read that wakes up every tick to look at the clock, which
//! a socket read timeout gives directly. When `DOCKER_HOST` names a TCP or SSH engine, or `DOCKER_CONTEXT`
//! another context, [`Endpoint::from_env`] says so and the door runs `docker pull` instead, watched as before.

use std::{
    collections::BTreeMap,
    fmt,
    io::{ErrorKind, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::Engine as _;

use crate::{
    docker::{Bounds, FailureKind},
    registry::auth::{self, Credential},
};

/// The engine's default socket.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// How often a pull wakes up to check its bounds (and to report a quiet spell).
const TICK: Duration = Duration::from_millis(250);
/// Bound on writing the request.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the longest line of the stream and of the error body.
const LINE_LIMIT: usize = 1024 * 1024;

/// How this process reaches the engine for a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The engine's API on a unix socket.
    Unix(PathBuf),
    /// Anything else (TCP, SSH, another context): the CLI, which knows how.
    Cli { why: String },
}

impl Endpoint {
    /// From `DOCKER_HOST` and `DOCKER_CONTEXT`, as docker reads them.
    pub fn from_env() -> Endpoint {
        Endpoint::from_values(
            std::env::var("DOCKER_HOST").ok().as_deref(),
            std::env::var("DOCKER_CONTEXT").ok().as_deref(),
        )
    }

    fn from_values(host: Option<&str>, context: Option<&str>) -> Endpoint {
        match (
            host.filter(|h| !h.is_empty()),
            context.filter(|c| !c.is_empty()),
        ) {
            (Some(host), _) => match host.strip_prefix("unix://") {
                Some(path) if !path.is_empty() => Endpoint::Unix(PathBuf::from(path)),
                _ => Endpoint::Cli {
                    why: format!("DOCKER_HOST={host} is not a unix socket"),
                },
            },
            (None, Some(context)) if context != "default" => Endpoint::Cli {
                why: format!("DOCKER_CONTEXT={context}"),
            },
            _ => Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET)),
        }
    }
}

/// One layer as the engine reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layer {
    /// Bytes downloaded so far.
    pub downloaded: u64,
    /// Its compressed size, once the engine said.
    pub total: Option<u64>,
    /// Downloaded (or already in the store).
    pub done: bool,
    /// Already in the store: nothing downloaded.
    pub present: bool,
}

/// A pull as far as it went: every layer the engine named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullProgress {
    pub layers: BTreeMap<String, Layer>,
    /// Bytes extracted, summed: extraction is progress too, after the last byte downloaded.
    pub extracted: u64,
}

impl PullProgress {
    pub fn bytes(&self) -> u64 {
        self.layers.values().map(|l| l.downloaded).sum()
    }

    pub fn layers_done(&self) -> usize {
        self.layers.values().filter(|l| l.done).count()
    }

    /// Layers the store held already (`Already exists`).
    pub fn layers_present(&self) -> usize {
        self.layers.values().filter(|l| l.present).count()
    }

    /// What moving means: a byte more, a layer more, or more extracted.
    fn mark(&self) -> (u64, usize, u64) {
        (self.bytes(), self.layers_done(), self.extracted)
    }

    /// Reads one status of the engine's stream (`{"status":…, "id":…, "progressDetail":{…}}`) or of `docker
    /// pull`'s plain output (`ID: STATUS`).
    pub fn apply(&mut self, id: &str, status: &str, current: Option<u64>, total: Option<u64>) {
        // Statuses about the image, not a layer: `Pulling from library/nginx` (its id is the tag), `Digest: …`.
        if id.is_empty() || status.starts_with("Pulling from") {
            return;
        }
        let layer = match status {
            "Pulling fs layer" | "Waiting" | "Downloading" | "Verifying Checksum"
            | "Download complete" | "Extracting" | "Pull complete" | "Already exists" => {
                self.layers.entry(id.to_owned()).or_default()
            }
            _ => return,
        };
        match status {
            "Downloading" => {
                if let Some(current) = current {
                    layer.downloaded = layer.downloaded.max(current);
                }
                if total.is_some() {
                    layer.total = total;
                }
            }
            "Download complete" | "Verifying Checksum" | "Already exists" | "Pull complete" => {
                if let Some(total) = layer.total {
                    layer.downloaded = total;
                }
                layer.done = status != "Verifying Checksum" || layer.done;
                layer.present |= status == "Already exists";
            }
            "Extracting" => {
                layer.done = true;
                if let Some(total) = layer.total {
                    layer.downloaded = total;
                }
                if let Some(current) = current {
                    self.extracted += current;
                }
            }
            _ => {}
        }
    }

    /// One line of `docker pull`'s output when it is not a terminal (`3f4ca61aafcd: Pull complete`).
    pub fn apply_cli_line(&mut self, line: &str) {
        if let Some((id, status)) = line.split_once(": ") {
            if !id.contains(' ') {
                self.apply(id, status.trim(), None, None);
            }
        }
    }
}

/// What a pull reports as it goes: on every status that changes something, and every tick while quiet.
pub struct Report<'a> {
    pub progress: &'a PullProgress,
    /// How long since the last byte (or layer) moved.
    pub quiet_for: Duration,
}

/// A pull that did not complete: why (classified like `docker pull`'s messages) and what the engine said.
#[derive(Debug)]
pub struct PullError {
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.describe())
    }
}

/// The `X-Registry-Auth` header's value for `host` from the credential docker holds there: base64url of
/// `{"username","password","serveraddress"}` (or `identitytoken`), as the CLI sends it. `None` without a login.
pub fn registry_auth(config_dir: Option<&Path>, host: &str) -> anyhow::Result<Option<String>> {
    let Some(credential) = auth::credential_for(config_dir, host)? else {
        return Ok(None);
    };
    let server = auth::config_keys(host).remove(0);
    let json = match credential {
        Credential::Basic { user, password } => serde_json::json!({
            "username": user, "password": password, "serveraddress": server,
        }),
        Credential::IdentityToken(token) => serde_json::json!({
            "identitytoken": token, "serveraddress": server,
        }),
    };
    Ok(Some(
        base64::engine::general_purpose::URL_SAFE.encode(json.to_string()),
    ))
}

/// `fromImage` and `tag` of `/images/create` for a reference as docker reads it: a name without a tag or digest
/// is `:latest` (the API alone would pull every tag).
fn query(reference: &str) -> String {
    let slash = reference.rfind('/').map_or(0, |at| at + 1);
    let tagged = reference.contains('@') || reference[slash..].contains(':');
    let (image, tag) = if tagged {
        (reference, "")
    } else {
        (reference, "latest")
    };
    let mut query = format!("fromImage={}", percent_encode(image));
    if !tag.is_empty() {
        query.push_str(&format!("&tag={tag}"));
    }
    query
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Pulls `reference` on the engine at `socket`, reporting through `on_report`; stops (closing the connection,
/// which makes the engine cancel the pull) when no byte moved for `bounds.stall` or after `bounds.total`.
pub fn pull(
    socket: &Path,
    reference: &str,
    registry_auth: Option<&str>,
    bounds: Bounds,
    on_report: &mut dyn FnMut(Report<'_>),
) -> Result<(), PullError> {
    let unreachable = |what: &str, error: std::io::Error| PullError {
        kind: FailureKind::Unreachable,
        message: format!(
            "{what} the Docker engine at {}: {error}; is the Docker daemon running?",
            socket.display()
        ),
    };
    let mut stream =
        UnixStream::connect(socket).map_err(|e| unreachable("cannot connect to", e))?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(TICK)))
        .map_err(|e| unreachable("cannot configure the connection to", e))?;
    let mut request = format!(
        "POST /images/create?{} HTTP/1.1\r\nHost: docker\r\nUser-Agent: 20i\r\nContent-Length: 0\r\n\
         Connection: close\r\n",
        query(reference)
    );
    if let Some(header) = registry_auth {
        request.push_str(&format!("X-Registry-Auth: {header}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unreachable("cannot send the pull to", e))?;

    let started = Instant::now();
    let deadline = started + bounds.total;
    let mut progress = PullProgress::default();
    let mut last_move = started;
    let mut mark = progress.mark();
    let mut reader = Reader {
        stream,
        raw: Vec::new(),
        eof: false,
    };
    // Each wait for bytes is one tick: the clock is read between them.
    let mut check = |progress: &PullProgress, last_move: Instant| -> Result<(), PullError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(PullError {
                kind: FailureKind::TimedOut,
                message: format!(
                    "pulling {reference}: still running after {} s: stopped",
                    bounds.total.as_secs()
                ),
            });
        }
        let quiet_for = now - last_move;
        if quiet_for >= bounds.stall {
            return Err(PullError {
                kind: FailureKind::Stalled,
                message: format!(
                    "pulling {reference}: no byte for {} s: stopped",
                    bounds.stall.as_secs()
                ),
            });
        }
        on_report(Report {
            progress,
            quiet_for,
        });
        Ok(())
    };
    let head = loop {
        if let Some(head) = reader.head().map_err(|e| unreachable("reading from", e))? {
            break head;
        }
        check(&progress, last_move)?;
    };
    if head.status != 200 {
        let body = loop {
            match reader
                .whole_body(&head)
                .map_err(|e| unreachable("reading from", e))?
            {
                Some(body) => break body,
                None => check(&progress, last_move)?,
            }
        };
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(PullError {
            kind: FailureKind::classify(&message),
            message: format!("Error response from daemon: {message}"),
        });
    }
    let mut body = Body::new(&head);
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let ended = body
            .read(&mut reader, &mut pending)
            .map_err(|e| unreachable("reading the pull's progress from", e))?;
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(message) = event["error"].as_str() {
                let message = event["errorDetail"]["message"].as_str().unwrap_or(message);
                return Err(PullError {
                    kind: FailureKind::classify(message),
                    message: message.to_owned(),
                });
            }
            let detail = &event["progressDetail"];
            progress.apply(
                event["id"].as_str().unwrap_or_default(),
                event["status"].as_str().unwrap_or_default(),
                detail["current"].as_u64(),
                detail["total"].as_u64(),
            );
            if progress.mark() != mark {
                mark = progress.mark();
                last_move = Instant::now();
            }
        }
        if pending.len() > LINE_LIMIT {
            return Err(PullError {
                kind: FailureKind::Other,
                message: "the engine sent a progress line longer than 1 MiB".to_owned(),
            });
        }
        if ended {
            return Ok(());
        }
        check(&progress, last_move)?;
    }
}

/// The status line and headers of an answer.
struct Head {
    status: u16,
    chunked: bool,
    length: Option<usize>,
}

/// The connection's bytes, read one tick at a time.
struct Reader {
    stream: UnixStream,
    raw: Vec<u8>,
    eof: bool,
}

impl Reader {
    /// Reads what arrives within one tick; `false` when nothing did.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let mut buffer = [0; 16 * 1024];
        match self.stream.read(&mut buffer) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buffer[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The head once it is all there.
    fn head(&mut self) -> std::io::Result<Option<Head>> {
        if let Some(end) = find(&self.raw, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&self.raw[..end]).into_owned();
            self.raw.drain(..end + 4);
            let mut lines = text.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("the engine's answer has no status line"))?;
            let (mut chunked, mut length) = (false, None);
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    "content-length" => length = value.parse().ok(),
                    _ => {}
                }
            }
            return Ok(Some(Head {
                status,
                chunked,
                length,
            }));
        }
        if self.raw.len() > LINE_LIMIT {
            return Err(std::io::Error::other(
                "the engine's answer head is too long",
            ));
        }
        if !self.fill()? && self.eof {
            return Err(std::io::Error::other(
                "the engine closed the connection before answering",
            ));
        }
        Ok(None)
    }

    /// A whole (short) body, an error's JSON, once it is all there.
    fn whole_body(&mut self, head: &Head) -> std::io::Result<Option<Vec<u8>>> {
        let complete = match (head.chunked, head.length) {
            (true, _) => find(&self.raw, b"0\r\n\r\n").is_some(),
            (false, Some(length)) => self.raw.len() >= length,
            (false, None) => false,
        };
        if !(complete || self.eof || self.raw.len() > LINE_LIMIT) {
            self.fill()?;
            return Ok(None);
        }
        let mut body = Body::new(head);
        let mut out = Vec::new();
        body.decode(self, &mut out)?;
        Ok(Some(out))
    }
}

/// Where a body's decoding stands.
enum Body {
    /// `Transfer-Encoding: chunked`: bytes left in the current chunk, or `None` before a size line.
    Chunked {
        left: Option<usize>,
        crlf: bool,
    },
    Length(usize),
    UntilClose,
    Done,
}

impl Body {
    fn new(head: &Head) -> Body {
        match (head.chunked, head.length) {
            (true, _) => Body::Chunked {
                left: None,
                crlf: false,
            },
            (false, Some(length)) => Body::Length(length),
            (false, None) => Body::UntilClose,
        }
    }

    /// Decodes what `reader` holds into `out`, reading once (one tick) when that did not end the body; `true`
    /// once it ended. A connection closed before the end of a body that has one is an error: a cut stream is
    /// never taken for a finished pull.
    fn read(&mut self, reader: &mut Reader, out: &mut Vec<u8>) -> std::io::Result<bool> {
        self.decode(reader, out)?;
        if self.ended(reader) {
            return Ok(true);
        }
        if reader.eof {
            return Err(std::io::Error::other(
                "the engine closed the connection before the end of its answer",
            ));
        }
        reader.fill()?;
        self.decode(reader, out)?;
        Ok(self.ended(reader))
    }

    fn ended(&self, reader: &Reader) -> bool {
        match self {
            Body::Done => true,
            Body::UntilClose => reader.eof,
            _ => false,
        }
    }

    /// Decodes as much of `reader.raw` as is there.
    fn decode(&mut self, reader: &mut Reader, out: &mut Vec<u8>) -> std::io::Result<()> {
        loop {
            match self {
                Body::Done => return Ok(()),
                Body::Length(0) => *self = Body::Done,
                Body::Length(left) => {
                    let n = (*left).min(reader.raw.len());
                    out.extend(reader.raw.drain(..n));
                    *left -= n;
                    if *left > 0 {
                        return Ok(());
                    }
                }
                Body::UntilClose => {
                    out.append(&mut reader.raw);
                    return Ok(());
                }
                Body::Chunked { left, crlf } => {
                    if *crlf {
                        if reader.raw.len() < 2 {
                            return Ok(());
                        }
                        reader.raw.drain(..2);
                        *crlf = false;
                    }
                    match left {
                        None => {
                            let Some(end) = find(&reader.raw, b"\r\n") else {
                                return Ok(());
                            };
                            let line = String::from_utf8_lossy(&reader.raw[..end]).into_owned();
                            reader.raw.drain(..end + 2);
                            let size = line.split(';').next().unwrap_or_default().trim();
                            let size = usize::from_str_radix(size, 16).map_err(|_| {
                                std::io::Error::other(format!(
                                    "the engine sent a bad chunk size {size:?}"
                                ))
                            })?;
                            if size == 0 {
                                *self = Body::Done;
                            } else {
                                *left = Some(size);
                            }
                        }
                        Some(n) => {
                            let take = (*n).min(reader.raw.len());
                            out.extend(reader.raw.drain(..take));
                            *n -= take;
                            if *n > 0 {
                                return Ok(());
                            }
                            *left = None;
                            *crlf = true;
                        }
                    }
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_the_environment() {
        let unix = |p: &str| Endpoint::Unix(PathBuf::from(p));
        for (host, context, expected) in [
            (None, None, unix(DEFAULT_SOCKET)),
            (Some(""), None, unix(DEFAULT_SOCKET)),
            (
                Some("unix:///run/user/1000/docker.sock"),
                None,
                unix("/run/user/1000/docker.sock"),
            ),
            (None, Some("default"), unix(DEFAULT_SOCKET)),
            (
                Some("tcp://10.0.0.2:2376"),
                None,
                Endpoint::Cli {
                    why: "DOCKER_HOST=tcp://10.0.0.2:2376 is not a unix socket".into(),
                },
            ),
            (
                Some("ssh://me@box"),
                Some("x"),
                Endpoint::Cli {
                    why: "DOCKER_HOST=ssh://me@box is not a unix socket".into(),
                },
            ),
            (
                None,
                Some("colima"),
                Endpoint::Cli {
                    why: "DOCKER_CONTEXT=colima".into(),
                },
            ),
        ] {
            assert_eq!(
                Endpoint::from_values(host, context),
                expected,
                "{host:?} {context:?}"
            );
        }
    }

    #[test]
    fn queries_name_a_tag() {
        for (reference, expected) in [
            ("nginx:1.25-alpine", "fromImage=nginx%3A1.25-alpine"),
            ("redis", "fromImage=redis&tag=latest"),
            (
                "127.0.0.1:5000/stack/php",
                "fromImage=127.0.0.1%3A5000%2Fstack%2Fphp&tag=latest",
            ),
            (
                "127.0.0.1:5000/a/b:v1",
                "fromImage=127.0.0.1%3A5000%2Fa%2Fb%3Av1",
            ),
            ("a/b@sha256:00", "fromImage=a%2Fb%40sha256%3A00"),
        ] {
            assert_eq!(query(reference), expected);
        }
    }

    #[test]
    fn progress_counts_bytes_and_layers() {
        let mut p = PullProgress::default();
        p.apply("v1", "Pulling from stack/php-fpm", None, None);
        p.apply("a", "Pulling fs layer", None, None);
        p.apply("b", "Pulling fs layer", None, None);
        assert_eq!((p.bytes(), p.layers_done(), p.layers.len()), (0, 0, 2));
        p.apply("a", "Downloading", Some(100), Some(1000));
        p.apply("a", "Downloading", Some(600), Some(1000));
        p.apply("b", "Already exists", None, None);
        assert_eq!(
            (p.bytes(), p.layers_done(), p.layers_present()),
            (600, 1, 1)
        );
        p.apply("a", "Download complete", None, None);
        assert_eq!((p.bytes(), p.layers_done()), (1000, 2));
        p.apply("", "Digest: sha256:00", None, None);
        assert_eq!(p.layers.len(), 2);
        let mut cli = PullProgress::default();
        for line in [
            "v1: Pulling from x",
            "a: Pulling fs layer",
            "a: Pull complete",
            "Digest: sha256:1",
        ] {
            cli.apply_cli_line(line);
        }
        assert_eq!((cli.layers.len(), cli.layers_done()), (1, 1));
    }

    /// A stand-in engine on a unix socket: answers one request with `answer`, sent in `pieces` with `pause`
    /// between them, then keeps the connection open for `hold`.
    fn standin_engine(
        answer: Vec<Vec<u8>>,
        pause: Duration,
        hold: Duration,
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0; 4096];
            let _ = conn.read(&mut request);
            for piece in answer {
                if conn.write_all(&piece).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
            std::thread::sleep(hold);
        });
        (dir, path)
    }

    fn chunk(text: &str) -> Vec<u8> {
        format!("{:x}\r\n{text}\r\n", text.len()).into_bytes()
    }

    const HEAD: &str =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn a_stream_of_progress_is_read_to_its_end() {
        let mut pieces = vec![HEAD.as_bytes().to_vec()];
        pieces.push(chunk("{\"status\":\"Pulling fs layer\",\"id\":\"a\"}\n"));
        for current in [10, 20, 30] {
            pieces.push(chunk(&format!(
                "{{\"status\":\"Downloading\",\"id\":\"a\",\"progressDetail\":{{\"current\":{current},\"total\":30}}}}\n"
            )));
        }
        // A line split across chunks.
        pieces.push(chunk("{\"status\":\"Pull comp"));
        pieces.push(chunk("lete\",\"id\":\"a\"}\n"));
        pieces.push(b"0\r\n\r\n".to_vec());
        let (_dir, socket) = standin_engine(pieces, Duration::from_millis(20), Duration::ZERO);
        let mut seen = Vec::new();
        let bounds = Bounds {
            stall: Duration::from_secs(5),
            total: Duration::from_secs(10),
        };
        pull(&socket, "x/y:1", None, bounds, &mut |r| {
            seen.push((r.progress.bytes(), r.progress.layers_done()))
        })
        .unwrap();
        assert!(seen.contains(&(20, 0)), "{seen:?}");
    }

    #[test]
    fn lines_without_bytes_are_a_stall_and_errors_are_classified() {
        // "Waiting" every 100 ms is output, not progress.
        let mut pieces = vec![HEAD.as_bytes().to_vec()];
        pieces.extend((0..40).map(|_| chunk("{\"status\":\"Waiting\",\"id\":\"a\"}\n")));
        let (_dir, socket) =
            standin_engine(pieces, Duration::from_millis(100), Duration::from_secs(5));
        let bounds = Bounds {
            stall: Duration::from_millis(1000),
            total: Duration::from_secs(20),
        };
        let started = Instant::now();
        let error = pull(&socket, "x/y:1", None, bounds, &mut |_| {}).unwrap_err();
        assert_eq!(error.kind, FailureKind::Stalled, "{error}");
        assert!(started.elapsed() < Duration::from_secs(3));

        let pieces = vec![
            HEAD.as_bytes().to_vec(),
            chunk("{\"errorDetail\":{\"message\":\"toomanyrequests: slow down\"},\"error\":\"toomanyrequests: slow down\"}\n"),
            b"0\r\n\r\n".to_vec(),
        ];
        let (_dir, socket) = standin_engine(pieces, Duration::ZERO, Duration::ZERO);
        let error = pull(&socket, "x/y:1", None, bounds, &mut |_| {}).unwrap_err();
        assert_eq!(error.kind, FailureKind::RateLimited);

        let body =
            "{\"message\":\"manifest for x/y:1 not found: manifest unknown: manifest unknown\"}";
        let answer = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (_dir, socket) =
            standin_engine(vec![answer.into_bytes()], Duration::ZERO, Duration::ZERO);
        let error = pull(&socket, "x/y:1", None, bounds, &mut |_| {}).unwrap_err();
        assert_eq!(error.kind, FailureKind::NotFound, "{error}");
    }
}
