//! How the registry client reaches a host, the way docker does: the CAs it trusts there (the system store, or the
//! bundle `SSL_CERT_FILE`/`SSL_CERT_DIR` name, and docker's `/etc/docker/certs.d/HOST[:PORT]/*.crt`), HTTPS or
//! plain HTTP, and whether through the environment's proxy. One `ureq` agent per host, built when first needed.
//!
//! HTTPS is tried first for every registry. Plain HTTP is used only where docker would use it, a loopback
//! registry or one of daemon.json's `insecure-registries`, and only when the server does not speak TLS: one TLS
//! handshake per host and process tells, and its answer is remembered. Where the server does speak TLS, its
//! certificate is verified, loopback included: stricter than docker, which takes any certificate there.
//!
//! The settings come from outside (environment, daemon.json) and are parsed once into [`TransportSettings`]; a
//! test gives its own (a temporary `certs.d`, a proxy).

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};

use super::attempt::Failure;
use crate::failure::FailureKind;
use crate::failure::Policy;

/// Where docker reads a registry's CA: `DIR/HOST[:PORT]/*.crt`.
pub const DOCKER_CERTS_D: &str = "/etc/docker/certs.d";
/// Where docker's daemon lists its `insecure-registries`.
pub const DOCKER_DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Tests only: `1` sends loopback registries through the environment's proxy too ([`TransportSettings`]'s
/// `proxy_loopback`), so that a test of a whole binary can put a CONNECT proxy on this machine in front of a
/// registry on it. Users never need it: docker itself never proxies loopback.
pub const PROXY_LOOPBACK_VAR: &str = "STACK_TEST_PROXY_LOOPBACK";

/// Everything from outside that decides how a host is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportSettings {
    /// docker's `certs.d`: [`DOCKER_CERTS_D`] unless a test gives another.
    pub certs_d: PathBuf,
    pub proxies: Proxies,
    pub insecure: InsecureRegistries,
    /// Tests only: a loopback registry goes through the proxy as a remote one would (unless `NO_PROXY` names
    /// it), so that a CONNECT proxy on this machine stands in for a company's in front of a registry on it.
    pub proxy_loopback: bool,
}

impl TransportSettings {
    /// docker's places and this process's environment.
    pub fn from_env() -> anyhow::Result<TransportSettings> {
        let insecure = match std::fs::read_to_string(DOCKER_DAEMON_JSON) {
            Ok(text) => InsecureRegistries::from_daemon_json(&text).with_context(|| {
                format!("reading {DOCKER_DAEMON_JSON}: fix it as docker would need")
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => InsecureRegistries::default(),
            Err(e) => bail!("reading {DOCKER_DAEMON_JSON}: {e}"),
        };
        Ok(TransportSettings {
            certs_d: PathBuf::from(DOCKER_CERTS_D),
            proxies: Proxies::from_vars(|name| std::env::var(name).ok())?,
            insecure,
            proxy_loopback: std::env::var(PROXY_LOOPBACK_VAR).is_ok_and(|v| v == "1"),
        })
    }
}

/// HTTPS or plain HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// `host[:port]` split; `[::1]:5000` gives `::1` and 5000.
pub fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((name, after)) = rest.split_once(']') {
            return (name, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// A host on this machine by its name alone: `localhost`, 127.0.0.0/8, `::1`.
pub fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An address block: `10.0.0.0/8`, `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> anyhow::Result<Cidr> {
        let (address, prefix) = text.split_once('/').context("no /prefix")?;
        let network: IpAddr = address.trim().parse().context("not an IP address")?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix.trim().parse() {
            Ok(p) if p <= max => p,
            _ => bail!("the prefix is not a number up to {max}"),
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> Option<(u128, u32)> {
            match ip {
                IpAddr::V4(v4) => Some((u128::from(u32::from(v4)) << 96, 32)),
                IpAddr::V6(v6) => Some((u128::from(v6), 128)),
            }
        };
        let (Some((net, width)), Some((addr, other))) = (bits(self.network), bits(ip)) else {
            return false;
        };
        if width != other {
            return false;
        }
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        net & mask == addr & mask
    }
}

/// daemon.json's `insecure-registries`: `host:port` entries and CIDRs. Docker also counts every loopback
/// address as insecure (its default `127.0.0.0/8` and `::1/128`); that is [`is_loopback_name`] and the resolved
/// addresses here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InsecureRegistries {
    hosts: Vec<String>,
    cidrs: Vec<Cidr>,
}

impl InsecureRegistries {
    pub fn from_daemon_json(text: &str) -> anyhow::Result<InsecureRegistries> {
        #[derive(serde::Deserialize)]
        struct Daemon {
            #[serde(rename = "insecure-registries", default)]
            insecure: Vec<String>,
        }
        let daemon: Daemon = serde_json::from_str(text).context("daemon.json is not valid")?;
        InsecureRegistries::parse(&daemon.insecure)
    }

    pub fn parse(entries: &[String]) -> anyhow::Result<InsecureRegistries> {
        let mut insecure = InsecureRegistries::default();
        for entry in entries {
            // docker accepts and drops a scheme here.
            let entry = entry.trim();
            let entry = entry
                .strip_prefix("http://")
                .or_else(|| entry.strip_prefix("https://"))
                .unwrap_or(entry)
                .trim_end_matches('/');
            if entry.contains('/') {
                insecure.cidrs.push(
                    Cidr::parse(entry)
                        .with_context(|| format!("insecure registry `{entry}` is not a CIDR"))?,
                );
            } else if !entry.is_empty() {
                insecure.hosts.push(entry.to_ascii_lowercase());
            }
        }
        Ok(insecure)
    }

    /// Whether `authority` (as in an image reference), with the addresses it resolves to, is insecure.
    pub fn allows(&self, authority: &str, addresses: &[IpAddr]) -> bool {
        let authority = authority.to_ascii_lowercase();
        self.hosts.contains(&authority)
            || addresses
                .iter()
                .any(|&ip| self.cidrs.iter().any(|c| c.contains(ip)))
    }

    fn has_cidrs(&self) -> bool {
        !self.cidrs.is_empty()
    }
}

/// A proxy URL; its credentials are never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    url: String,
    /// `host:port`, what errors name.
    shown: String,
}

impl ProxyUrl {
    pub fn parse(text: &str) -> anyhow::Result<ProxyUrl> {
        let text = text.trim();
        let url = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("only an http:// proxy is supported (its CONNECT carries the TLS)");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let shown = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host)
            .to_owned();
        if shown.is_empty() {
            bail!("the proxy names no host");
        }
        ureq::Proxy::new(&url).map_err(|_| anyhow::anyhow!("{shown} is not a proxy URL"))?;
        Ok(ProxyUrl { url, shown })
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({})", self.shown)
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// One `NO_PROXY` entry, as curl reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NoProxyEntry {
    /// A name and its subdomains (a leading `.` changes nothing), or an IP address; with a port, that port only.
    Host {
        name: String,
        port: Option<u16>,
    },
    Cidr(Cidr),
}

/// `NO_PROXY`: entries separated by commas, each trimmed (curl trims; ureq 3 does not, and
/// `NO_PROXY="localhost, host"` then still proxied `host`), `*` for every host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    everything: bool,
    entries: Vec<NoProxyEntry>,
}

impl NoProxy {
    pub fn parse(text: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.everything = true;
            } else if let Ok(cidr) = Cidr::parse(entry) {
                no_proxy.entries.push(NoProxyEntry::Cidr(cidr));
            } else {
                let (name, port) = split_host_port(entry);
                let name = name.trim_start_matches('.').to_ascii_lowercase();
                if !name.is_empty() {
                    no_proxy.entries.push(NoProxyEntry::Host { name, port });
                }
            }
        }
        no_proxy
    }

    /// Whether `name:port` is reached directly.
    pub fn matches(&self, name: &str, port: u16) -> bool {
        if self.everything {
            return true;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let ip = name.parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| match entry {
            NoProxyEntry::Cidr(cidr) => ip.is_some_and(|ip| cidr.contains(ip)),
            NoProxyEntry::Host {
                name: entry,
                port: wanted,
            } => {
                wanted.is_none_or(|p| p == port)
                    && (name == *entry || (ip.is_none() && name.ends_with(&format!(".{entry}"))))
            }
        })
    }
}

/// The environment's proxies: `HTTPS_PROXY` (then `https_proxy`, `ALL_PROXY`, `all_proxy`) for HTTPS,
/// `HTTP_PROXY` (then `http_proxy`, the `ALL_PROXY` pair) for plain HTTP, and `NO_PROXY`/`no_proxy`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxies {
    https: Option<ProxyUrl>,
    http: Option<ProxyUrl>,
    no_proxy: NoProxy,
}

impl Proxies {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Proxies> {
        let first = |names: &[&str]| -> anyhow::Result<Option<ProxyUrl>> {
            for name in names {
                if let Some(value) = get(name).filter(|v| !v.trim().is_empty()) {
                    return ProxyUrl::parse(&value)
                        .map(Some)
                        .with_context(|| format!("reading ${name}: fix it or unset it"));
                }
            }
            Ok(None)
        };
        Ok(Proxies {
            https: first(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])?,
            http: first(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])?,
            no_proxy: NoProxy::parse(
                &get("NO_PROXY")
                    .or_else(|| get("no_proxy"))
                    .unwrap_or_default(),
            ),
        })
    }

    /// The proxy for `authority` over `scheme`: none for a loopback host or one `NO_PROXY` names.
    pub fn for_authority(&self, authority: &str, scheme: Scheme) -> Option<&ProxyUrl> {
        self.for_authority_of(authority, scheme, false)
    }

    fn for_authority_of(
        &self,
        authority: &str,
        scheme: Scheme,
        proxy_loopback: bool,
    ) -> Option<&ProxyUrl> {
        let (name, port) = split_host_port(authority);
        if is_loopback_name(name) && !proxy_loopback {
            return None;
        }
        let port = port.unwrap_or(match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        });
        if self.no_proxy.matches(name, port) {
            return None;
        }
        match scheme {
            Scheme::Https => self.https.as_ref(),
            Scheme::Http => self.http.as_ref(),
        }
    }
}

/// The `.crt` files docker reads as CAs for `host` (as in an image reference: `name[:port]`), sorted.
pub fn certs_d_files(certs_d: &Path, host: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = certs_d.join(host);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => bail!("reading {}: {e}", dir.display()),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "crt") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every certificate of a PEM `.crt`, each checked to be usable as a CA; an unreadable file is an error naming it.
fn read_ca_file(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a PEM certificate ({e}): replace it with the registry's CA",
                path.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "{} holds no PEM certificate: replace it with the registry's CA",
            path.display()
        );
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| {
            anyhow::anyhow!(
                "{} holds a certificate that cannot be a CA ({e}): replace it with the registry's CA",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// The system store, or what `SSL_CERT_FILE`/`SSL_CERT_DIR` name: read once per process. Unreadable entries
/// are skipped, as OpenSSL does; none at all is fine when certs.d has the host's CA.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The CAs of a registry host, or why they could not be read (kept: the files are read once).
type Roots = Result<Arc<Vec<CertificateDer<'static>>>, String>;

/// What an agent is built for: the registry host whose CAs it trusts, the proxy URL it goes through, the scheme.
type AgentKey = (String, Option<String>, Scheme);

/// What the transport knows per host, and the agents it built.
pub(super) struct Transport {
    settings: Result<TransportSettings, String>,
    connect_timeout: Duration,
    read_timeout: Duration,
    /// The CAs trusted for a registry host, read once.
    roots: Mutex<HashMap<String, Roots>>,
    agents: Mutex<HashMap<AgentKey, ureq::Agent>>,
    /// The scheme found per `host[:port]`.
    schemes: Mutex<HashMap<String, Scheme>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport {
    pub(super) fn new(policy: &Policy, settings: anyhow::Result<TransportSettings>) -> Transport {
        Transport {
            settings: settings.map_err(|e| format!("{e:#}")),
            connect_timeout: policy.connect_timeout,
            read_timeout: policy.read_timeout,
            roots: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
        }
    }

    fn settings(&self) -> Result<&TransportSettings, Failure> {
        self.settings
            .as_ref()
            .map_err(|e| Failure::fatal(FailureKind::Other, e.clone()))
    }

    /// Where a CA for `host` is read from, for an error.
    pub(super) fn ca_places(&self, host: &str) -> String {
        let certs_d = self
            .settings
            .as_ref()
            .map_or_else(|_| PathBuf::from(DOCKER_CERTS_D), |s| s.certs_d.clone());
        format!(
            "a CA for {host} is read from {}/ca.crt (any *.crt there, as docker reads them) and from the system \
             store or the bundle $SSL_CERT_FILE names",
            certs_d.join(host).display()
        )
    }

    fn roots(&self, trust: &str) -> Result<Arc<Vec<CertificateDer<'static>>>, Failure> {
        let settings = self.settings()?;
        let mut roots = lock(&self.roots);
        let found = roots.entry(trust.to_owned()).or_insert_with(|| {
            let mut certs = system_roots().to_vec();
            for file in certs_d_files(&settings.certs_d, trust).map_err(|e| format!("{e:#}"))? {
                certs.extend(read_ca_file(&file).map_err(|e| format!("{e:#}"))?);
            }
            Ok(Arc::new(certs))
        });
        found
            .clone()
            .map_err(|e| Failure::fatal(FailureKind::Certificate, e))
    }

    /// The agent that reaches `authority` trusting `trust`'s CAs, through the proxy for it if any.
    fn agent(&self, trust: &str, authority: &str, scheme: Scheme) -> Result<ureq::Agent, Failure> {
        let proxy = self.proxy(authority, scheme)?;
        let key = (
            trust.to_owned(),
            proxy.as_ref().map(|p| p.url.clone()),
            scheme,
        );
        if let Some(agent) = lock(&self.agents).get(&key) {
            return Ok(agent.clone());
        }
        // Plain HTTP needs no CA: the system store (some 100 ms to read) is not read for it.
        let roots = match scheme {
            Scheme::Https => self.roots(trust)?,
            Scheme::Http => Arc::new(Vec::new()),
        };
        let certs: Vec<ureq::tls::Certificate<'static>> = roots
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        let proxy = match &proxy {
            Some(p) => Some(ureq::Proxy::new(&p.url).map_err(|_| {
                Failure::fatal(FailureKind::Other, format!("{p} is not a proxy URL"))
            })?),
            None => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(self.connect_timeout))
            .timeout_per_read(Some(self.read_timeout))
            .timeout_per_write(Some(self.read_timeout))
            .user_agent(concat!("20i-stack/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .proxy(proxy)
            .build()
            .into();
        lock(&self.agents).insert(key, agent.clone());
        Ok(agent)
    }

    fn proxy(&self, authority: &str, scheme: Scheme) -> Result<Option<ProxyUrl>, Failure> {
        let settings = self.settings()?;
        Ok(settings
            .proxies
            .for_authority_of(authority, scheme, settings.proxy_loopback)
            .cloned())
    }

    /// Whether docker would use plain HTTP for `authority`: loopback, or an insecure registry (by name, or by
    /// an address in one of daemon.json's blocks; a name is looked up only when there are blocks to match).
    fn plain_allowed(&self, authority: &str, deadline: Instant) -> Result<bool, Failure> {
        let (name, _) = split_host_port(authority);
        if is_loopback_name(name) {
            return Ok(true);
        }
        let insecure = &self.settings()?.insecure;
        if insecure.allows(authority, &[]) {
            return Ok(true);
        }
        if !insecure.has_cidrs() {
            return Ok(false);
        }
        let addresses = resolve(name, self.connect_timeout.min(left(deadline)));
        Ok(insecure.allows(authority, &addresses))
    }

    /// The scheme to reach `authority` with: HTTPS, unless plain HTTP is allowed there and the server does not
    /// speak TLS (one handshake, remembered).
    fn scheme(&self, authority: &str, deadline: Instant) -> Result<Scheme, Failure> {
        if let Some(&scheme) = lock(&self.schemes).get(authority) {
            return Ok(scheme);
        }
        let scheme = if !self.plain_allowed(authority, deadline)? {
            Scheme::Https
        } else if self.proxy(authority, Scheme::Https)?.is_some() {
            // An insecure registry behind the proxy: its handshake would need the tunnel; HTTPS is assumed.
            Scheme::Https
        } else {
            self.probe(authority, deadline)?
        };
        lock(&self.schemes).insert(authority.to_owned(), scheme);
        Ok(scheme)
    }

    /// One TLS handshake with `authority`: whether the server speaks TLS at all.
    fn probe(&self, authority: &str, deadline: Instant) -> Result<Scheme, Failure> {
        let (name, port) = split_host_port(authority);
        let port = port.unwrap_or(443);
        let bound = self.connect_timeout.min(left(deadline));
        if bound.is_zero() {
            return Err(Failure::fatal(FailureKind::Unreachable, "out of time"));
        }
        let unreachable = |e: std::io::Error| {
            Failure::transient(
                FailureKind::Unreachable,
                format!("connecting to {authority}: {e}"),
            )
        };
        let address: SocketAddr = resolve(name, bound)
            .first()
            .map(|&ip| SocketAddr::new(ip, port))
            .ok_or_else(|| {
                Failure::transient(FailureKind::Unreachable, format!("{name} does not resolve"))
            })?;
        let mut tcp = TcpStream::connect_timeout(&address, bound).map_err(unreachable)?;
        tcp.set_read_timeout(Some(bound)).map_err(unreachable)?;
        tcp.set_write_timeout(Some(bound)).map_err(unreachable)?;
        // No CA: whether the server speaks TLS is all this asks, and a TLS server then refuses the handshake with
        // its certificate (unknown issuer), which says so as well as a success would.
        let store = rustls::RootCertStore::empty();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::fatal(FailureKind::Other, e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        let server = ServerName::try_from(name.to_owned())
            .map_err(|e| Failure::fatal(FailureKind::Other, format!("{name}: {e}")))?;
        let mut tls = rustls::ClientConnection::new(Arc::new(config), server)
            .map_err(|e| Failure::fatal(FailureKind::Other, e.to_string()))?;
        let result = tls.complete_io(&mut tcp);
        Ok(match handshake_outcome(result.as_ref().err()) {
            Handshake::Tls => Scheme::Https,
            Handshake::NotTls => Scheme::Http,
            Handshake::Failed => {
                let e = result.err().map(|e| e.to_string()).unwrap_or_default();
                return Err(Failure::transient(
                    FailureKind::Unreachable,
                    format!("the TLS handshake with {authority} failed: {e}"),
                ));
            }
        })
    }

    /// `url` with the scheme found for its host, and the agent for it.
    pub(super) fn route(
        &self,
        uri: &ureq::http::Uri,
        trust: &str,
        deadline: Instant,
    ) -> Result<(ureq::http::Uri, ureq::Agent), Failure> {
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| Failure::fatal(FailureKind::Other, format!("{uri} names no host")))?;
        // A URL the server gave (a token realm, a `Location`) may name plain HTTP: taken as given where docker
        // would use plain HTTP too. Probing instead would upgrade it to HTTPS whenever a proxy applies (see
        // `scheme`), and a plain token service would then meet a TLS handshake. Elsewhere it is upgraded.
        let scheme =
            if uri.scheme_str() == Some("http") && self.plain_allowed(&authority, deadline)? {
                Scheme::Http
            } else {
                self.scheme(&authority, deadline)?
            };
        let agent = self.agent(trust, &authority, scheme)?;
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(
            scheme
                .as_str()
                .parse()
                .map_err(|_| Failure::fatal(FailureKind::Other, "a scheme"))?,
        );
        let uri = ureq::http::Uri::from_parts(parts)
            .map_err(|e| Failure::fatal(FailureKind::Other, format!("{uri}: {e}")))?;
        Ok((uri, agent))
    }
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The addresses of `name`, or none when the lookup fails or takes longer than `bound` (the system resolver
/// has no timeout of its own that this could set).
fn resolve(name: &str, bound: Duration) -> Vec<IpAddr> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return vec![ip];
    }
    let (send, receive) = std::sync::mpsc::channel();
    let query = format!("{name}:0");
    std::thread::spawn(move || {
        let found: Vec<IpAddr> = query
            .to_socket_addrs()
            .map(|a| a.map(|a| a.ip()).collect())
            .unwrap_or_default();
        let _ = send.send(found);
    });
    receive.recv_timeout(bound).unwrap_or_default()
}

/// What a TLS handshake's end says about the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    /// It speaks TLS (its certificate may still be refused: the request says so).
    Tls,
    /// It answered something else than TLS, or closed the connection on the ClientHello: a plain HTTP server.
    NotTls,
    /// It did not answer in time or the connection broke: nothing is learnt.
    Failed,
}

fn handshake_outcome(error: Option<&std::io::Error>) -> Handshake {
    use std::io::ErrorKind::*;
    let Some(error) = error else {
        return Handshake::Tls;
    };
    if let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Handshake::NotTls
            }
            _ => Handshake::Tls,
        };
    }
    match error.kind() {
        UnexpectedEof | ConnectionReset | ConnectionAborted => Handshake::NotTls,
        _ => Handshake::Failed,
    }
}

/// Whether a transport error is a certificate the client does not trust.
pub(super) fn is_certificate_error(error: &ureq::Error) -> bool {
    let tls = match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    matches!(
        tls,
        Some(rustls::Error::InvalidCertificate(_))
            | Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_no_proxy(no_proxy: &str, host: &str, port: u16, direct: bool) {
        assert_eq!(
            NoProxy::parse(no_proxy).matches(host, port),
            direct,
            "NO_PROXY={no_proxy:?} {host}:{port}"
        );
    }

    #[test]
    fn no_proxy_entries_are_trimmed_and_read_as_curl_reads_them() {
        check_no_proxy("localhost, host", "host", 443, true);
        check_no_proxy("localhost,host", "host", 443, true);
        check_no_proxy(" host ", "host", 443, true);
        check_no_proxy("localhost, host", "other", 443, false);
        check_no_proxy("example.com", "example.com", 443, true);
        check_no_proxy("example.com", "registry.example.com", 443, true);
        check_no_proxy(".example.com", "registry.example.com", 443, true);
        check_no_proxy(".example.com", "example.com", 443, true);
        check_no_proxy("example.com", "badexample.com", 443, false);
        check_no_proxy("EXAMPLE.com", "Registry.example.COM", 443, true);
        check_no_proxy("*", "anything", 1, true);
        check_no_proxy("a, *", "anything", 1, true);
        check_no_proxy("*.example.com", "x.example.com", 443, false);
        check_no_proxy("registry:5000", "registry", 5000, true);
        check_no_proxy("registry:5000", "registry", 443, false);
        check_no_proxy("10.0.0.0/8", "10.1.2.3", 443, true);
        check_no_proxy("10.0.0.0/8", "11.1.2.3", 443, false);
        check_no_proxy("10.1.2.3", "10.1.2.3", 443, true);
        check_no_proxy("0.2.3", "10.1.2.3", 443, false);
        check_no_proxy("::1", "[::1]", 443, true);
        check_no_proxy("", "host", 443, false);
        check_no_proxy(" , ,", "host", 443, false);
    }

    #[track_caller]
    fn check_proxy(vars: &[(&str, &str)], authority: &str, scheme: Scheme, expected: Option<&str>) {
        let proxies = Proxies::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        assert_eq!(
            proxies
                .for_authority(authority, scheme)
                .map(ToString::to_string)
                .as_deref(),
            expected,
            "{vars:?} {authority}"
        );
    }

    #[test]
    fn the_proxy_for_a_host() {
        use Scheme::*;
        let https = ("HTTPS_PROXY", "http://user:secret@proxy:3128");
        check_proxy(&[https], "ghcr.io", Https, Some("proxy:3128"));
        check_proxy(&[https], "ghcr.io", Http, None);
        check_proxy(&[https], "127.0.0.1:5000", Https, None);
        check_proxy(&[https], "localhost:5000", Https, None);
        check_proxy(&[https], "[::1]:5000", Https, None);
        check_proxy(
            &[https, ("NO_PROXY", "localhost, ghcr.io")],
            "ghcr.io",
            Https,
            None,
        );
        check_proxy(
            &[https, ("no_proxy", "localhost, ghcr.io")],
            "ghcr.io",
            Https,
            None,
        );
        check_proxy(
            &[https, ("NO_PROXY", "ghcr.io:5000")],
            "ghcr.io",
            Https,
            Some("proxy:3128"),
        );
        check_proxy(
            &[("https_proxy", "proxy:8080")],
            "ghcr.io",
            Https,
            Some("proxy:8080"),
        );
        check_proxy(
            &[("ALL_PROXY", "proxy:1")],
            "ghcr.io",
            Https,
            Some("proxy:1"),
        );
        check_proxy(
            &[("ALL_PROXY", "proxy:1")],
            "ghcr.io",
            Http,
            Some("proxy:1"),
        );
        check_proxy(
            &[("HTTPS_PROXY", "a:1"), ("ALL_PROXY", "b:1")],
            "ghcr.io",
            Https,
            Some("a:1"),
        );
        check_proxy(&[("HTTPS_PROXY", "  ")], "ghcr.io", Https, None);
        check_proxy(&[], "ghcr.io", Https, None);
    }

    #[test]
    fn a_proxy_url_is_checked_and_its_password_never_shown() {
        let parsed = ProxyUrl::parse("http://user:secret@proxy:3128").unwrap();
        assert_eq!(
            format!("{parsed} {parsed:?}"),
            "proxy:3128 ProxyUrl(proxy:3128)"
        );
        let error =
            Proxies::from_vars(|n| (n == "HTTPS_PROXY").then(|| "socks5://u:secret@p:1".into()))
                .unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("$HTTPS_PROXY") && error.contains("http://"),
            "{error}"
        );
        assert!(!error.contains("secret"), "{error}");
    }

    #[track_caller]
    fn check_insecure(entries: &[&str], authority: &str, addresses: &[&str], expected: bool) {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        let addresses: Vec<IpAddr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(
            InsecureRegistries::parse(&entries)
                .unwrap()
                .allows(authority, &addresses),
            expected,
            "{entries:?} {authority}"
        );
    }

    #[test]
    fn insecure_registries_by_name_or_address_block() {
        check_insecure(&["myregistry:5000"], "myregistry:5000", &[], true);
        check_insecure(&["myregistry:5000"], "MyRegistry:5000", &[], true);
        check_insecure(&["myregistry:5000"], "myregistry", &[], false);
        check_insecure(&["myregistry:5000"], "myregistry:5001", &[], false);
        check_insecure(&["http://myregistry:5000/"], "myregistry:5000", &[], true);
        check_insecure(&["10.0.0.0/8"], "10.1.2.3:5000", &["10.1.2.3"], true);
        check_insecure(&["10.0.0.0/8"], "name:5000", &["10.9.9.9"], true);
        check_insecure(&["10.0.0.0/8"], "name:5000", &["192.168.1.1"], false);
        check_insecure(&["fd00::/8"], "[fd00::1]:5000", &["fd00::1"], true);
        check_insecure(&["0.0.0.0/0"], "ghcr.io", &["140.82.1.1"], true);
        check_insecure(&["0.0.0.0/0"], "ghcr.io", &["::1"], false);
        check_insecure(&[], "ghcr.io", &["140.82.1.1"], false);
    }

    #[track_caller]
    fn check_daemon_json(text: &str, expected: Result<usize, &str>) {
        let actual = InsecureRegistries::from_daemon_json(text)
            .map(|i| i.hosts.len() + i.cidrs.len())
            .map_err(|e| format!("{e:#}"));
        match (actual, expected) {
            (Ok(a), Ok(e)) => assert_eq!(a, e, "{text}"),
            (Err(a), Err(e)) => assert!(a.contains(e), "{text}: {a}"),
            (a, e) => panic!("{text}: {a:?} instead of {e:?}"),
        }
    }

    #[test]
    fn daemon_json_is_read_for_its_insecure_registries() {
        check_daemon_json("{}", Ok(0));
        check_daemon_json(r#"{"features": {"containerd-snapshotter": true}}"#, Ok(0));
        check_daemon_json(
            r#"{"insecure-registries": ["a:5000", "10.0.0.0/8"]}"#,
            Ok(2),
        );
        check_daemon_json(
            r#"{"insecure-registries": ["10.0.0.0/33"]}"#,
            Err("`10.0.0.0/33` is not a CIDR"),
        );
        check_daemon_json(
            r#"{"insecure-registries": "a"}"#,
            Err("daemon.json is not valid"),
        );
        check_daemon_json("not json", Err("daemon.json is not valid"));
    }

    #[track_caller]
    fn check_split(authority: &str, name: &str, port: Option<u16>) {
        assert_eq!(split_host_port(authority), (name, port), "{authority}");
    }

    #[test]
    fn authorities_split_into_name_and_port() {
        check_split("ghcr.io", "ghcr.io", None);
        check_split("127.0.0.1:5000", "127.0.0.1", Some(5000));
        check_split("[::1]:5000", "::1", Some(5000));
        check_split("[::1]", "::1", None);
        check_split("::1", "::1", None);
        check_split("host:port", "host:port", None);
    }

    #[track_caller]
    fn check_handshake(error: Option<std::io::Error>, expected: Handshake) {
        assert_eq!(handshake_outcome(error.as_ref()), expected, "{error:?}");
    }

    #[test]
    fn a_handshake_tells_a_plain_http_server() {
        use std::io::{Error, ErrorKind};
        let tls = |e: rustls::Error| Some(Error::new(ErrorKind::InvalidData, e));
        check_handshake(None, Handshake::Tls);
        check_handshake(
            tls(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType,
            )),
            Handshake::NotTls,
        );
        check_handshake(
            tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
            Handshake::Tls,
        );
        check_handshake(Some(ErrorKind::UnexpectedEof.into()), Handshake::NotTls);
        check_handshake(Some(ErrorKind::ConnectionReset.into()), Handshake::NotTls);
        check_handshake(Some(ErrorKind::WouldBlock.into()), Handshake::Failed);
        check_handshake(Some(ErrorKind::TimedOut.into()), Handshake::Failed);
    }

    #[track_caller]
    fn check_certs_d(files: &[(&str, &str)], host: &str, expected: Result<&[&str], &str>) {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let actual = certs_d_files(root.path(), host).and_then(|files| {
            for file in &files {
                read_ca_file(file)?;
            }
            Ok(files
                .iter()
                .map(|f| f.strip_prefix(root.path()).unwrap().display().to_string())
                .collect::<Vec<_>>())
        });
        match (actual.map_err(|e| format!("{e:#}")), expected) {
            (Ok(actual), Ok(expected)) => assert_eq!(actual, expected, "{files:?}"),
            (Err(actual), Err(expected)) => assert!(actual.contains(expected), "{actual}"),
            (actual, expected) => panic!("{actual:?} instead of {expected:?}"),
        }
    }

    /// A self-signed CA certificate made once for these tests (`openssl req -x509 -newkey ec ...`).
    const CA: &str = include_str!("transport/test-ca.crt");

    #[test]
    fn certs_d_holds_every_crt_of_the_host_s_directory() {
        check_certs_d(&[], "registry:5000", Ok(&[]));
        check_certs_d(
            &[("registry:5000/ca.crt", CA)],
            "registry:5000",
            Ok(&["registry:5000/ca.crt"]),
        );
        check_certs_d(
            &[
                ("registry:5000/b.crt", CA),
                ("registry:5000/a.crt", CA),
                ("registry:5000/client.cert", CA),
                ("registry:5000/client.key", "k"),
            ],
            "registry:5000",
            Ok(&["registry:5000/a.crt", "registry:5000/b.crt"]),
        );
        // The port is part of the directory's name, as docker reads it.
        check_certs_d(&[("registry/ca.crt", CA)], "registry:5000", Ok(&[]));
        check_certs_d(
            &[("registry:5000/ca.crt", "not a certificate")],
            "registry:5000",
            Err("registry:5000/ca.crt holds no PEM certificate"),
        );
        check_certs_d(
            &[(
                "registry:5000/ca.crt",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )],
            "registry:5000",
            Err("registry:5000/ca.crt holds a certificate that cannot be a CA"),
        );
    }
}
