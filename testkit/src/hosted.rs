//! A registry hosted the way GHCR or Docker Hub host theirs, on loopback: the real `distribution` serving TLS from a
//! CA the harness makes, its own `auth: token` checking JWTs from the token service stand-in ([`TokenService`]),
//! and a [`FaultProxy`] in front with the service's [`Personality`] (what the registry does that `distribution`
//! does not). Clients talk to the proxy: [`Hosted::host`] is what goes into references.
//!
//! Every part is a stand-in, named as one: neither service can be reached from the machines this runs on.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};

use crate::{
    tls::CertsDirGuard, Ca, FaultProxy, Flavor, Grant, HubLimits, Personality, Registry,
    TokenOptions, TokenService,
};

/// Which hosted registry the stand-in behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Like {
    /// ghcr.io: challenges name only `:pull`, tokens by GET, 403 `DENIED` for a missing repository, relative
    /// upload locations, paged tag lists, no `DELETE`.
    Ghcr,
    /// Docker Hub: 401 for a missing repository, tokens that expire, pull limits, blobs served by a CDN, no
    /// `DELETE`.
    DockerHub(HubLimits),
}

/// How the token service stand-in is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenTransport {
    /// HTTPS from the test's CA, as ghcr.io/token and auth.docker.io serve it (with public certificates).
    Https,
    /// Plain HTTP on loopback. The real services' token endpoints have public certificates that every client
    /// trusts; the stand-in's CA cannot be given to every client (dockerd's own push of a BuildKit build trusts
    /// only the system store for a token realm, whatever `certs.d` or its insecure loopback say).
    PlainHttp,
}

/// Who may do what: users with passwords, and what each may do under a namespace prefix.
#[derive(Clone, Debug)]
pub struct Accounts {
    pub users: Vec<(String, String)>,
    pub grants: Vec<Grant>,
    /// Whether anyone may pull without a login (public images).
    pub public_pull: bool,
}

impl Accounts {
    /// One user who may pull, push and delete under `namespace`; anyone may pull (public images).
    pub fn owner(user: &str, password: &str, namespace: &str) -> Accounts {
        Accounts {
            users: vec![(user.to_owned(), password.to_owned())],
            grants: vec![Grant::new(user, namespace, &["pull", "push", "delete"])],
            public_pull: true,
        }
    }
}

/// The token service, the registry that takes only its tokens, and the proxy in front, all on TLS from one CA.
pub struct Hosted {
    // Dropped in this order: the proxy, the registry behind it, the service it trusts.
    pub proxy: FaultProxy,
    pub registry: Registry,
    pub tokens: TokenService,
    pub ca: Ca,
    like: Like,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Hosted {
    /// A GHCR-like registry whose tokens last `expires_in`.
    pub fn ghcr_like(accounts: Accounts) -> anyhow::Result<Hosted> {
        Hosted::start(Like::Ghcr, accounts, Duration::from_secs(300))
    }

    /// A Docker-Hub-like registry with these limits; its tokens last `expires_in` (300 s on Docker Hub).
    pub fn docker_hub_like(
        accounts: Accounts,
        limits: HubLimits,
        expires_in: Duration,
    ) -> anyhow::Result<Hosted> {
        Hosted::start(Like::DockerHub(limits), accounts, expires_in)
    }

    pub fn start(like: Like, accounts: Accounts, expires_in: Duration) -> anyhow::Result<Hosted> {
        Hosted::start_with(like, accounts, expires_in, TokenTransport::Https)
    }

    /// With the token service on `token`: [`TokenTransport::PlainHttp`] where a client that cannot be given the
    /// test's CA fetches tokens (dockerd pushing an image it built, which trusts only the system store there).
    pub fn start_with(
        like: Like,
        accounts: Accounts,
        expires_in: Duration,
        token: TokenTransport,
    ) -> anyhow::Result<Hosted> {
        Hosted::start_on(0, like, accounts, expires_in, token)
    }

    /// The same with the proxy, the address users see, on 127.0.0.1:`port` (a free one for 0): `make demo`'s
    /// fixed ports. The token service and the registry behind the proxy take free ports.
    pub fn start_on(
        port: u16,
        like: Like,
        accounts: Accounts,
        expires_in: Duration,
        token: TokenTransport,
    ) -> anyhow::Result<Hosted> {
        let ca = Ca::new()?;
        let dir = tempfile::Builder::new().prefix("20i-hosted-").tempdir()?;
        let ca_file = ca.write(dir.path())?;
        let flavor = match like {
            Like::Ghcr => Flavor::Ghcr,
            Like::DockerHub(_) => Flavor::DockerHub,
        };
        let options = TokenOptions {
            flavor,
            users: accounts.users,
            grants: accounts.grants,
            expires_in,
            public_pull: accounts.public_pull,
        };
        let cert = ca.issue(&["127.0.0.1", "localhost"])?;
        let tokens = match token {
            TokenTransport::Https => TokenService::start_with_tls(options, cert.server_config()),
            TokenTransport::PlainHttp => TokenService::start(options),
        }
        .context("starting the token service stand-in")?;
        let registry = Registry::builder()
            .tls(&ca)
            .token(tokens.registry_auth())
            .start()
            .context("starting the registry behind the token service stand-in")?;
        let proxy = FaultProxy::in_front_of_on(port, &registry)?;
        proxy.set_personality(match like {
            Like::Ghcr => Personality::Ghcr,
            Like::DockerHub(limits) => Personality::DockerHub(limits),
        })?;
        Ok(Hosted {
            proxy,
            registry,
            tokens,
            ca,
            like,
            ca_file,
            _dir: dir,
        })
    }

    pub fn like(&self) -> Like {
        self.like
    }

    /// `127.0.0.1:PORT` of the proxy: the host part of references to this registry.
    pub fn host(&self) -> String {
        self.proxy.host()
    }

    /// A namespace under this registry, e.g. `127.0.0.1:PORT/team`.
    pub fn namespace(&self, name: &str) -> String {
        self.proxy.namespace(name)
    }

    /// The CA's certificate file (`ca.crt`), for `SSL_CERT_FILE`, `--cacert` or cosign's `--registry-cacert`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA trusted for this registry's host the way docker reads it: `ROOT/127.0.0.1:PORT/ca.crt`, removed
    /// when the guard drops. `root` is `/etc/docker/certs.d` for docker itself, a temporary folder for a client
    /// told to read another root.
    pub fn trust_in(&self, root: &Path) -> anyhow::Result<CertsDirGuard> {
        self.ca.trust_for_docker(root, &self.host())
    }

    /// `docker login` to this registry with `DOCKER_CONFIG=config_dir`, the password on standard input.
    pub fn login(&self, config_dir: &Path, user: &str, password: &str) -> anyhow::Result<()> {
        docker_login(config_dir, &self.host(), user, password)
    }
}

/// `docker login HOST` into `config_dir`, the password on standard input (never an argument).
pub fn docker_login(
    config_dir: &Path,
    host: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<()> {
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config_dir)
        .args(["login", "--username", user, "--password-stdin", "--", host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running docker login")?;
    child
        .stdin
        .take()
        .context("docker login's standard input")?
        .write_all(password.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "docker login {host} as {user} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
