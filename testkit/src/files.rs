//! `FileServer`: a stand-in for GitHub's release download host (`github.com/OWNER/REPO/releases/download/vX.Y.Z/…`):
//! a plain-HTTP server on a free loopback port serving the files of one directory (GET and HEAD, 404 for anything
//! else), recording every request so a test can show what the installer fetched. [`unreachable_url`] is the
//! other case: a loopback address nothing listens on.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::server::{Server, Threads};

/// One request as the server answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub method: String,
    /// The request path, from `/`.
    pub path: String,
    pub status: u16,
}

/// Serves `root` on `http://127.0.0.1:PORT/` until dropped. A stand-in: no TLS, no redirects, no ranges.
pub struct FileServer {
    server: Server,
    log: Arc<Mutex<Vec<Served>>>,
}

impl FileServer {
    /// Serves the files under `root` (read at each request, so a test may change them while it runs).
    pub fn start(root: impl Into<PathBuf>) -> io::Result<FileServer> {
        let root: PathBuf = root.into();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let server = Server::start(listener, Arc::new(Threads::default()), "file-server", {
            let log = Arc::clone(&log);
            move |stream| {
                if let Some(served) = serve(&root, stream) {
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(served);
                }
            }
        })?;
        Ok(FileServer { server, log })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Every request answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `http://127.0.0.1:PORT` for a port that was free a moment ago and that nothing listens on now: a download
/// host that cannot be reached (connection refused).
pub fn unreachable_url() -> io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

/// Answers one request on `stream` and closes it; `None` when no request line arrived.
fn serve(root: &Path, mut stream: TcpStream) -> Option<Served> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    // The headers are read and ignored: every answer is the whole file, and the connection closes after it.
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let (status, body) = match method.as_str() {
        "GET" | "HEAD" => match file_under(root, &path).and_then(|file| read(&file)) {
            Some(bytes) => (200, bytes),
            None => (404, b"not found\n".to_vec()),
        },
        _ => (405, b"only GET and HEAD\n".to_vec()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = stream.write_all(&body);
    }
    let _ = stream.flush();
    Some(Served {
        method,
        path,
        status,
    })
}

/// The file a request path names under `root`: only plain names, never `..` or an absolute part.
fn file_under(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.strip_prefix('/')?);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let file = root.join(relative);
    file.is_file().then_some(file)
}

fn read(file: &Path) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .ok()?
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str, method: &str) -> (u16, Vec<u8>) {
        let address = url.strip_prefix("http://").unwrap();
        let (host, path) = address.split_once('/').unwrap();
        let mut stream = TcpStream::connect(host).unwrap();
        write!(stream, "{method} /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text[9..12].parse().unwrap();
        let body_at = text.find("\r\n\r\n").unwrap() + 4;
        (status, answer[body_at..].to_vec())
    }

    #[test]
    fn serves_files_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("v1")).unwrap();
        std::fs::write(dir.path().join("v1/SHA256SUMS"), "abc  f\n").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        let server = FileServer::start(dir.path().join("v1")).unwrap();
        let url = server.url();
        let cases = [
            ("GET", "SHA256SUMS", 200, &b"abc  f\n"[..]),
            ("HEAD", "SHA256SUMS", 200, b""),
            ("GET", "missing", 404, b"not found\n"),
            ("GET", "../secret", 404, b"not found\n"),
            ("GET", "", 404, b"not found\n"),
            ("PUT", "SHA256SUMS", 405, b"only GET and HEAD\n"),
        ];
        for (method, path, status, body) in cases {
            let (got_status, got_body) = get(&format!("{url}/{path}"), method);
            assert_eq!(
                (got_status, &got_body[..]),
                (status, body),
                "{method} /{path}"
            );
        }
        let served = server.served();
        assert_eq!(served.len(), cases.len());
        assert_eq!(served[2].path, "/missing");
        assert_eq!(served[2].status, 404);
    }

    #[test]
    fn the_unreachable_url_refuses_connections() {
        let url = unreachable_url().unwrap();
        let address = url.strip_prefix("http://").unwrap();
        assert!(TcpStream::connect(address).is_err());
    }
}
