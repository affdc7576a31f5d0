//! What the test kit's loopback servers (the fault proxy, the CONNECT proxy) share about their threads: an accept
//! loop that gives each connection a thread, a register of open sockets so that stopping can shut them all down,
//! waits that end when the server stops, and a drop that stops it and waits a bounded time for its threads.

use std::{
    collections::HashMap,
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// A listener thread serving each connection on a thread of its own; stopped, and its threads waited for, on drop.
pub(crate) struct Server {
    addr: SocketAddr,
    threads: Arc<Threads>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Accepts on `listener` in a thread named `NAME-PORT`, running `serve` on a thread `NAME-connection` for each
    /// connection, its socket registered with `threads` while it runs.
    pub(crate) fn start(
        listener: TcpListener,
        threads: Arc<Threads>,
        name: &str,
        serve: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let connection = format!("{name}-connection");
        let acceptor = thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn({
                let threads = Arc::clone(&threads);
                move || accept(&listener, &threads, &connection, Arc::new(serve))
            })?;
        Ok(Server {
            addr,
            threads,
            acceptor: Some(acceptor),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        {
            let mut state = self.threads.lock();
            state.stopping = true;
            for socket in state.sockets.values() {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        self.threads.changed.notify_all();
        // The acceptor blocks in accept(): one last connection wakes it to see `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Every socket is shut down and every wait ends on `stopping`, so connection threads end at once; the
        // bound only guards against a thread stuck elsewhere, which is then left detached.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut state = self.threads.lock();
        while state.live > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .threads
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn accept(
    listener: &TcpListener,
    threads: &Arc<Threads>,
    name: &str,
    serve: Arc<dyn Fn(TcpStream) + Send + Sync>,
) {
    for stream in listener.incoming() {
        if threads.lock().stopping {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Some(id) = threads.register(&stream) else {
            return;
        };
        let spawned = threads.spawn(name, {
            let threads = Arc::clone(threads);
            let serve = Arc::clone(&serve);
            move || {
                serve(stream);
                threads.unregister(id);
            }
        });
        if spawned.is_err() {
            threads.unregister(id);
        }
    }
}

/// A server's threads and open sockets, and whether it is stopping.
#[derive(Default)]
pub(crate) struct Threads {
    state: Mutex<State>,
    /// Signalled when the server stops and when a thread ends.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    stopping: bool,
    /// Every open socket, client and upstream, so that stopping can shut them all down.
    sockets: HashMap<u64, TcpStream>,
    next_socket: u64,
    /// Threads still running.
    live: usize,
}

impl Threads {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not turn every later call into a second panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a clone of the socket to shut it down on drop; `None` when the server is already stopping.
    pub(crate) fn register(&self, socket: &TcpStream) -> Option<u64> {
        let mut state = self.lock();
        if state.stopping {
            let _ = socket.shutdown(Shutdown::Both);
            return None;
        }
        let clone = socket.try_clone().ok()?;
        let id = state.next_socket;
        state.next_socket += 1;
        state.sockets.insert(id, clone);
        Some(id)
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.lock().sockets.remove(&id);
    }

    /// Runs `work` on a thread counted in `live`, so that drop waits for it.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: &str,
        work: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        self.lock().live += 1;
        let threads = Arc::clone(self);
        let spawned = thread::Builder::new().name(name.to_owned()).spawn(move || {
            work();
            threads.lock().live -= 1;
            threads.changed.notify_all();
        });
        if let Err(error) = spawned {
            self.lock().live -= 1;
            return Err(error);
        }
        Ok(())
    }

    /// Sleeps until `deadline` unless the server stops first; true when it stopped.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        while !state.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    pub(crate) fn wait_until_stopping(&self) {
        let mut state = self.lock();
        while !state.stopping {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}
