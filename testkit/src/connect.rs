//! An HTTPS forward proxy on 127.0.0.1, a stand-in for a company's proxy: clients ask it `CONNECT host:port` (as
//! `HTTPS_PROXY` makes them do) and it tunnels the bytes both ways without looking into the TLS inside. It records
//! each tunnel's target and the bytes it carried, and can be limited, as slow or broken company links are: a rate
//! on the server-to-client direction (downloads), or a stall after some bytes of that direction, the connection
//! left open. It only tunnels to 127.0.0.1 (anything else is refused with 403), so a test never reaches off this
//! machine through it. Everything ends when it is dropped.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::server::{Server, Threads};

/// How a tunnel's server-to-client direction is held back; the default holds nothing back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// At most this many bytes a second, averaged from the tunnel's start.
    pub bytes_per_sec: Option<u64>,
    /// After this many bytes, nothing more is forwarded, and the connection stays open until the proxy drops.
    pub stall_after_bytes: Option<u64>,
}

/// One tunnel the proxy opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// `HOST:PORT` as the client asked for it.
    pub target: String,
    /// Bytes forwarded from the client to the server.
    pub to_server: u64,
    /// Bytes forwarded from the server to the client.
    pub to_client: u64,
}

/// The proxy: a listener thread, a thread per client connection and one more per tunnel, ended on drop.
pub struct ConnectProxy {
    /// Dropped first: stops the threads, which hold `shared` too.
    server: Server,
    shared: Arc<Shared>,
}

impl ConnectProxy {
    /// Listens on a free port of 127.0.0.1 with these limits on every tunnel.
    pub fn start(limits: Limits) -> anyhow::Result<ConnectProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the CONNECT proxy")?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                limits,
                ..State::default()
            }),
            threads: Arc::default(),
        });
        let server = Server::start(listener, Arc::clone(&shared.threads), "connect-proxy", {
            let shared = Arc::clone(&shared);
            move |stream| {
                let _ = serve(&shared, stream);
            }
        })
        .context("starting the CONNECT proxy's thread")?;
        Ok(ConnectProxy { server, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT`: what `HTTPS_PROXY` or `curl -x` take.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The limits of tunnels opened from now on.
    pub fn set_limits(&self, limits: Limits) {
        self.shared.lock().limits = limits;
    }

    /// The target of each tunnel opened so far, in order.
    pub fn tunnels(&self) -> Vec<String> {
        self.shared
            .lock()
            .tunnels
            .iter()
            .map(|t| t.target.clone())
            .collect()
    }

    /// Each tunnel opened so far with the bytes it carried until now.
    pub fn tunnel_stats(&self) -> Vec<Tunnel> {
        self.shared.lock().tunnels.clone()
    }

    /// How many CONNECT requests were refused (a target off 127.0.0.1, a bad request, an unreachable target).
    pub fn refused(&self) -> usize {
        self.shared.lock().refused
    }
}

struct Shared {
    state: Mutex<State>,
    /// Every thread and open socket of the proxy, client and server, stopped when it is dropped.
    threads: Arc<Threads>,
}

#[derive(Default)]
struct State {
    limits: Limits,
    tunnels: Vec<Tunnel>,
    refused: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not turn every later call into a second panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Longest CONNECT request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request, and a tunnel may stay silent both ways, before it is closed.
const IDLE: Duration = Duration::from_secs(120);
/// How long a client waits for the proxy to reach the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads one CONNECT request, opens the tunnel and carries it until either side ends it.
fn serve(shared: &Arc<Shared>, mut client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(IDLE))?;
    client.set_write_timeout(Some(IDLE))?;
    let head = read_head(&mut client)?;
    let target = match parse_connect(&head) {
        Ok(target) => target,
        Err(status) => {
            shared.lock().refused += 1;
            let reason = match status {
                403 => "Forbidden",
                405 => "Method Not Allowed",
                _ => "Bad Request",
            };
            write!(
                client,
                "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    let server = match TcpStream::connect_timeout(&target.addr, CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(_) => {
            shared.lock().refused += 1;
            client.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    let Some(server_id) = shared.threads.register(&server) else {
        return Ok(());
    };
    let result = tunnel(shared, client, server, target.name);
    shared.threads.unregister(server_id);
    result
}

fn tunnel(
    shared: &Arc<Shared>,
    client: TcpStream,
    server: TcpStream,
    target: String,
) -> io::Result<()> {
    server.set_read_timeout(Some(IDLE))?;
    server.set_write_timeout(Some(IDLE))?;
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (index, limits) = {
        let mut state = shared.lock();
        state.tunnels.push(Tunnel {
            target,
            to_server: 0,
            to_client: 0,
        });
        (state.tunnels.len() - 1, state.limits)
    };
    let mut to_client = client.try_clone()?;
    to_client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;

    // Client to server on a thread of its own; server to client, the limited direction, here.
    shared.threads.spawn("connect-proxy-upload", {
        let shared = Arc::clone(shared);
        let mut from_client = client.try_clone()?;
        let mut to_server = server.try_clone()?;
        move || {
            // The client socket is registered again for this thread: the connection's own registration ends
            // with the other direction, which may end first.
            let Some(id) = shared.threads.register(&from_client) else {
                return;
            };
            let _ = pump(
                &shared,
                &mut from_client,
                &mut to_server,
                index,
                Limits::default(),
                Direction::ToServer,
            );
            let _ = to_server.shutdown(Shutdown::Write);
            shared.threads.unregister(id);
        }
    })?;
    let mut from_server = server;
    let result = pump(
        shared,
        &mut from_server,
        &mut to_client,
        index,
        limits,
        Direction::ToClient,
    );
    let _ = to_client.shutdown(Shutdown::Write);
    result
}

#[derive(Clone, Copy)]
enum Direction {
    ToServer,
    ToClient,
}

/// Copies `from` to `to` until the end of `from`, counting bytes, within `limits`.
fn pump(
    shared: &Shared,
    from: &mut TcpStream,
    to: &mut TcpStream,
    index: usize,
    limits: Limits,
    direction: Direction,
) -> io::Result<()> {
    let start = Instant::now();
    let mut sent: u64 = 0;
    // Small pieces under a rate limit, so that the rate holds over short spans too.
    let piece = match limits.bytes_per_sec {
        Some(rate) => (rate / 20).clamp(1, 16 * 1024) as usize,
        None => 64 * 1024,
    };
    let mut buffer = vec![0u8; piece];
    loop {
        let allowed = match limits.stall_after_bytes {
            Some(cap) if sent >= cap => {
                // The stall: the connection stays open and silent until the proxy goes.
                shared.threads.wait_until_stopping();
                return Ok(());
            }
            Some(cap) => buffer.len().min((cap - sent) as usize),
            None => buffer.len(),
        };
        let n = from.read(&mut buffer[..allowed])?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buffer[..n])?;
        sent += n as u64;
        {
            let mut state = shared.lock();
            let tunnel = &mut state.tunnels[index];
            match direction {
                Direction::ToServer => tunnel.to_server += n as u64,
                Direction::ToClient => tunnel.to_client += n as u64,
            }
        }
        if let Some(rate) = limits.bytes_per_sec {
            // Where a rate of `rate` would have got by now: wait until then.
            let due = start + Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
            if shared.threads.sleep_until(due) {
                return Ok(());
            }
        }
    }
}

/// The request head up to its blank line, read a byte at a time so nothing of the tunnel is read with it.
fn read_head(client: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        if client.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Where a tunnel goes: the target as asked and the address it resolves to.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    name: String,
    addr: SocketAddr,
}

/// The target of `CONNECT 127.0.0.1:PORT HTTP/1.1`, or the status that refuses the request: 405 for another
/// method, 403 for a target other than 127.0.0.1 (a name is not resolved: nothing leaves loopback), 400 for a
/// malformed one.
fn parse_connect(head: &str) -> Result<Target, u16> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(400);
    }
    if method != "CONNECT" {
        return Err(405);
    }
    let Some((host, port)) = target.rsplit_once(':') else {
        return Err(400);
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(400);
    };
    if port == 0 {
        return Err(400);
    }
    match host.parse::<Ipv4Addr>() {
        Ok(ip) if ip == Ipv4Addr::LOCALHOST => Ok(Target {
            name: target.to_owned(),
            addr: SocketAddr::from((ip, port)),
        }),
        _ => Err(403),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(head: &str, expected: Result<&str, u16>) {
        let actual = parse_connect(head).map(|t| t.name);
        assert_eq!(actual.as_deref().map_err(|s| *s), expected, "{head:?}");
    }

    #[test]
    fn only_connects_to_loopback_are_tunnelled() {
        check(
            "CONNECT 127.0.0.1:5000 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n",
            Ok("127.0.0.1:5000"),
        );
        check(
            "CONNECT 127.0.0.1:443 HTTP/1.0\r\n\r\n",
            Ok("127.0.0.1:443"),
        );
        check("CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n", Err(403));
        check("CONNECT 127.0.0.2:443 HTTP/1.1\r\n\r\n", Err(403));
        check("CONNECT localhost:443 HTTP/1.1\r\n\r\n", Err(403));
        check("CONNECT ghcr.io:443 HTTP/1.1\r\n\r\n", Err(403));
        check("CONNECT [::1]:443 HTTP/1.1\r\n\r\n", Err(403));
        check("GET http://127.0.0.1:5000/v2/ HTTP/1.1\r\n\r\n", Err(405));
        check("CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", Err(400));
        check("CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n", Err(400));
        check("CONNECT 127.0.0.1:x HTTP/1.1\r\n\r\n", Err(400));
        check("CONNECT 127.0.0.1:5000\r\n\r\n", Err(400));
        check("", Err(400));
    }
}
