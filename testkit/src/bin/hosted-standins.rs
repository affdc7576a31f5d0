//! `hosted-standins`: `make demo`'s two registries, a GHCR-like and a Docker-Hub-like stand-in ([`Hosted`]: the
//! real `distribution` over TLS with `auth: token`, the token service stand-in (plain HTTP: see [`TOKENS`]), the proxy with each service's
//! rules), on the fixed ports users type, running until SIGTERM or SIGINT. Neither GHCR nor Docker Hub is reached:
//! both are stand-ins, on 127.0.0.1 only.
//!
//! Usage: `hosted-standins STATE_DIR GHCR_PORT HUB_PORT [CERTS_D]` (`scripts/registry.sh hosted-up` runs it
//! detached). It writes into STATE_DIR:
//! - `user` and `password` (0600): the demo user, made on the first start and kept while the state is;
//! - `ghcr/ca.crt`, `hub/ca.crt`: each registry's CA, also put in `CERTS_D/127.0.0.1:PORT/ca.crt`
//!   (`/etc/docker/certs.d` by default: where docker, the registry client and the cosign door read it), removed
//!   when it stops;
//! - `ready`, last, once both answer: `ghcr=127.0.0.1:PORT`, `hub=127.0.0.1:PORT` and `pid=PID` lines.

use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use testkit::{Accounts, Grant, Hosted, HubLimits, Like, TokenTransport};

/// The token services on plain HTTP (loopback): dockerd pushes what BuildKit built fetching the token with a
/// client that trusts only the system store, neither certs.d nor its insecure loopback rule, and a stand-in's CA
/// cannot go there. The real services' token endpoints have public certificates; the registries here are TLS.
const TOKENS: TokenTransport = TokenTransport::PlainHttp;

/// The demo's user on both registries.
const USER: &str = "demo";

/// What the demo user may push to: the canonical namespace and the fixtures (bases, SBOM scanner) on the
/// GHCR-like one, the mirror's namespace on the Docker-Hub-like one.
const GHCR_NAMESPACES: &[&str] = &["20i-stack", "fixtures"];
const HUB_NAMESPACES: &[&str] = &["20istack"];

struct Args {
    state: PathBuf,
    ghcr_port: u16,
    hub_port: u16,
    certs_d: PathBuf,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (state, ghcr, hub, certs_d) = match args.as_slice() {
            [state, ghcr, hub] => (state, ghcr, hub, "/etc/docker/certs.d"),
            [state, ghcr, hub, certs_d] => (state, ghcr, hub, certs_d.as_str()),
            _ => bail!("usage: hosted-standins STATE_DIR GHCR_PORT HUB_PORT [CERTS_D]"),
        };
        let port = |text: &str| -> anyhow::Result<u16> {
            match text.parse::<u16>() {
                Ok(port) if port != 0 => Ok(port),
                _ => bail!("`{text}` is not a port (1 to 65535)"),
            }
        };
        Ok(Args {
            state: PathBuf::from(state),
            ghcr_port: port(ghcr)?,
            hub_port: port(hub)?,
            certs_d: PathBuf::from(certs_d),
        })
    }
}

/// SIGTERM and SIGINT blocked in this thread, before any other starts, so that every thread inherits the mask
/// and [`wait_for_stop`] receives them.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a set owned here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_stop(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: `set` was filled by `block_stop_signals`; sigwait writes one int.
    unsafe { libc::sigwait(set, &mut signal) };
    signal
}

/// A file only its owner reads, written whole.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The demo user's password: the state's, else a new random one stored 0600. Never printed.
fn password(state: &Path) -> anyhow::Result<String> {
    let path = state.join("password");
    if let Ok(text) = fs::read_to_string(&path) {
        if !text.trim().is_empty() {
            return Ok(text.trim().to_owned());
        }
    }
    let mut random = [0u8; 18];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("reading /dev/urandom for the demo user's password")?;
    let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &password)?;
    write_private(&state.join("user"), USER)?;
    Ok(password)
}

fn accounts(password: &str, namespaces: &[&str]) -> Accounts {
    Accounts {
        users: vec![(USER.to_owned(), password.to_owned())],
        grants: namespaces
            .iter()
            .map(|n| Grant::new(USER, n, &["pull", "push", "delete"]))
            .collect(),
        // Public images, as the project's are on both services: `20i start` pulls without a login.
        public_pull: true,
    }
}

fn run(args: &Args, signals: &libc::sigset_t) -> anyhow::Result<()> {
    fs::create_dir_all(&args.state)
        .with_context(|| format!("creating {}", args.state.display()))?;
    let ready = args.state.join("ready");
    let _ = fs::remove_file(&ready);
    let password = password(&args.state)?;

    let ghcr = Hosted::start_on(
        args.ghcr_port,
        Like::Ghcr,
        accounts(&password, GHCR_NAMESPACES),
        Duration::from_secs(300),
        TOKENS,
    )
    .context("starting the GHCR-like stand-in")?;
    // Docker Hub's own token lifetime (300 s), so a demo that runs for minutes renews its tokens as a real
    // release must. `20istack` stands for the demo user's own namespace, where Docker Hub creates a repository
    // on its first push (the release asks for push when it reads the pins, so it sees an absence, not a 401).
    // The pull limit is above what a demo asks for: it is there to be seen in the headers, not to stop the demo.
    let limits = HubLimits {
        manifest_gets_before_429: 1000,
        push_creates_repository: true,
    };
    let hub = Hosted::start_on(
        args.hub_port,
        Like::DockerHub(limits),
        accounts(&password, HUB_NAMESPACES),
        Duration::from_secs(300),
        TOKENS,
    )
    .context("starting the Docker-Hub-like stand-in")?;

    let mut guards = Vec::new();
    for (name, hosted) in [("ghcr", &ghcr), ("hub", &hub)] {
        let dir = args.state.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("ca.crt"), hosted.ca.pem())
            .with_context(|| format!("writing {}", dir.join("ca.crt").display()))?;
        guards.push(hosted.trust_in(&args.certs_d).with_context(|| {
            format!(
                "trusting the {name} stand-in's CA in {}: run as root, or give a writable CERTS_D",
                args.certs_d.display()
            )
        })?);
    }
    fs::write(
        &ready,
        format!(
            "ghcr={}\nhub={}\npid={}\n",
            ghcr.host(),
            hub.host(),
            std::process::id()
        ),
    )
    .with_context(|| format!("writing {}", ready.display()))?;
    eprintln!(
        "hosted-standins: GHCR-like on https://{}, Docker-Hub-like on https://{} (user {USER}, CAs in {})",
        ghcr.host(),
        hub.host(),
        args.state.display()
    );

    let signal = wait_for_stop(signals);
    eprintln!("hosted-standins: signal {signal}, stopping");
    let _ = fs::remove_file(&ready);
    // The CAs leave certs.d with the guards; the proxies, registries and token services with their values.
    drop(guards);
    drop(hub);
    drop(ghcr);
    Ok(())
}

fn main() {
    let signals = block_stop_signals();
    let result = Args::parse().and_then(|args| run(&args, &signals));
    if let Err(error) = result {
        eprintln!("hosted-standins: {error:#}");
        std::process::exit(1);
    }
}
