//! TLS for loopback stand-ins of GHCR and Docker Hub: a throwaway certificate authority made by the harness
//! (`Ca`, its key only in memory), the server certificates it issues (`ServerCert`, for `127.0.0.1` and
//! `localhost`), the rustls configurations that serve and trust them, and the ways real clients are told to trust
//! it without changing the machine: a docker `certs.d` directory under a root the test picks, and a copy of the
//! system bundle with the CA added, for a client run in its own mount namespace with that copy over the system one.

use std::{
    fmt, fs,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The subject of every CA the harness makes: what a reader of a certificate chain sees it is.
pub const CA_NAME: &str = "20i-stack test CA (stand-in)";

/// Where Debian keeps the system's trusted roots, as one PEM bundle.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A certificate authority made for one test run: cheap to clone (shared), its private key never written out.
#[derive(Clone)]
pub struct Ca {
    inner: Arc<CaInner>,
}

struct CaInner {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
    client_config: Arc<ClientConfig>,
}

impl Ca {
    /// A new CA with a fresh ECDSA P-256 key.
    pub fn new() -> anyhow::Result<Ca> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, CA_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating the test CA's key")?;
        let certificate = params
            .self_signed(&key)
            .context("self-signing the test CA")?;
        let der = certificate.der().clone();
        let mut roots = RootCertStore::empty();
        roots
            .add(der.clone())
            .context("adding the test CA to a root store")?;
        let client_config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions for the test CA's client")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Ca {
            inner: Arc::new(CaInner {
                issuer: Issuer::new(params, key),
                pem: certificate.pem(),
                der,
                client_config: Arc::new(client_config),
            }),
        })
    }

    /// The CA certificate in PEM: what `curl --cacert` and a `ca.crt` hold.
    pub fn pem(&self) -> &str {
        &self.inner.pem
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.inner.der.clone()
    }

    /// Writes the CA certificate to `DIR/ca.crt` and returns that path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("ca.crt");
        fs::write(&path, self.pem()).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A server certificate for these names (an IP address becomes an IP SAN, anything else a DNS name), valid
    /// for server authentication and signed by this CA.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<ServerCert> {
        if names.is_empty() {
            bail!("a server certificate needs at least one name");
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|name| subject_alt_name(name))
            .collect::<anyhow::Result<_>>()?;
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating a server key")?;
        let leaf = params
            .signed_by(&key, &self.inner.issuer)
            .with_context(|| format!("signing a certificate for {}", names.join(", ")))?;
        let chain = vec![leaf.der().clone(), self.der()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut server_config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions for a server")?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .context("loading a server certificate into rustls")?;
        // Servers here speak HTTP/1.1 only; saying so keeps a client that offers h2 from trying it.
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerCert {
            chain_pem: format!("{}{}", leaf.pem(), self.pem()),
            key_pem: key.serialize_pem(),
            server_config: Arc::new(server_config),
        })
    }

    /// A client configuration that trusts this CA and nothing else.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.inner.client_config)
    }

    /// Writes `ROOT/HOST:PORT/ca.crt`, the layout docker reads under `/etc/docker/certs.d`; the directory is
    /// removed when the guard drops. An existing directory is refused: it is someone else's.
    pub fn trust_for_docker(&self, root: &Path, host_port: &str) -> anyhow::Result<CertsDirGuard> {
        check_host_port(host_port)?;
        let dir = root.join(host_port);
        if dir.exists() {
            bail!(
                "{} already exists: another test or the machine trusts a CA there; pick another port",
                dir.display()
            );
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = CertsDirGuard { dir };
        self.write(&guard.dir)?;
        Ok(guard)
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of every output, even though it is a throwaway one.
        f.debug_struct("Ca").field("subject", &CA_NAME).finish()
    }
}

/// A certificate chain (leaf then CA) and its key, as files for a server process or as a rustls configuration.
#[derive(Clone)]
pub struct ServerCert {
    pub chain_pem: String,
    pub key_pem: String,
    server_config: Arc<ServerConfig>,
}

impl ServerCert {
    /// Writes `DIR/STEM.crt` (the chain) and `DIR/STEM.key`, the key readable by its owner only.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        use std::os::unix::fs::OpenOptionsExt;
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        fs::write(&cert, &self.chain_pem).with_context(|| format!("writing {}", cert.display()))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .with_context(|| format!("creating {}", key.display()))?;
        std::io::Write::write_all(&mut file, self.key_pem.as_bytes())
            .with_context(|| format!("writing {}", key.display()))?;
        Ok((cert, key))
    }

    /// A rustls server configuration presenting this chain (HTTP/1.1 by ALPN, no client certificates).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}

/// A `HOST:PORT` directory of docker's `certs.d` layout, removed with what it holds on drop.
#[derive(Debug)]
pub struct CertsDirGuard {
    dir: PathBuf,
}

impl CertsDirGuard {
    /// `ROOT/HOST:PORT`.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CertsDirGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Writes `DIR/ca-certificates.crt`: the system bundle with `ca` appended. A test bind-mounts it over
/// `SYSTEM_BUNDLE` in a mount namespace of its own (`unshare -m`) to see a client trust "the system store" without
/// the machine's store changing.
pub fn bundle_with_system(ca: &Ca, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut bundle = fs::read_to_string(SYSTEM_BUNDLE).with_context(|| {
        format!("reading {SYSTEM_BUNDLE}: install Debian's ca-certificates package")
    })?;
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca.pem());
    let path = dir.join("ca-certificates.crt");
    fs::write(&path, bundle).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// ring, named rather than taken from the process default: another crate in the build may enable a second
/// provider, and then rustls would not pick one on its own.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An IP address (bare, or bracketed IPv6) as an IP SAN, else a DNS name of letters, digits, `-`, `.` and an
/// optional leading `*.`.
fn subject_alt_name(name: &str) -> anyhow::Result<SanType> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let labels = name.strip_prefix("*.").unwrap_or(name);
    let valid = !labels.is_empty()
        && labels.len() <= 253
        && labels.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        bail!("`{name}` is neither an IP address nor a DNS name");
    }
    Ok(SanType::DnsName(name.try_into().with_context(|| {
        format!("`{name}` is not an ASCII DNS name")
    })?))
}

/// `HOST:PORT` as docker names a registry's directory: a host without path separators, a port number.
fn check_host_port(host_port: &str) -> anyhow::Result<()> {
    let valid = host_port.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(['/', '\\'])
            && host != "."
            && host != ".."
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if !valid {
        bail!("`{host_port}` is not HOST:PORT as docker's certs.d names a registry");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Some("ip:..."|"dns:...")` for a name that parses, `None` for one refused.
    #[track_caller]
    fn check(name: &str, expected: Option<&str>) {
        let actual = subject_alt_name(name).ok().map(|san| match san {
            SanType::IpAddress(ip) => format!("ip:{ip}"),
            SanType::DnsName(dns) => format!("dns:{}", dns.as_str()),
            other => format!("{other:?}"),
        });
        assert_eq!(actual.as_deref(), expected, "{name:?}");
    }

    #[test]
    fn names_become_ip_or_dns_sans() {
        check("127.0.0.1", Some("ip:127.0.0.1"));
        check("::1", Some("ip:::1"));
        check("[::1]", Some("ip:::1"));
        check("10.200.0.2", Some("ip:10.200.0.2"));
        check("localhost", Some("dns:localhost"));
        check("registry.test", Some("dns:registry.test"));
        check("ghcr-standin.localhost", Some("dns:ghcr-standin.localhost"));
        check("*.registry.test", Some("dns:*.registry.test"));
        check("", None);
        check("*.", None);
        check("127.0.0.1:5000", None);
        check("a b", None);
        check("a..b", None);
        check("-a.test", None);
        check("a/b", None);
        check("é.test", None);
        check(&"a".repeat(64), None);
    }

    #[track_caller]
    fn check_host_port_case(host_port: &str, valid: bool) {
        assert_eq!(check_host_port(host_port).is_ok(), valid, "{host_port:?}");
    }

    #[test]
    fn certs_dir_names_are_host_and_port() {
        check_host_port_case("127.0.0.1:5000", true);
        check_host_port_case("localhost:443", true);
        check_host_port_case("[::1]:5000", true);
        check_host_port_case("127.0.0.1", false);
        check_host_port_case(":5000", false);
        check_host_port_case("127.0.0.1:0", false);
        check_host_port_case("127.0.0.1:70000", false);
        check_host_port_case("../etc:5000", false);
        check_host_port_case("..:5000", false);
    }

    #[test]
    fn a_server_certificate_chains_to_its_ca_for_each_name() {
        let ca = Ca::new().unwrap();
        let cert = ca.issue(&["127.0.0.1", "localhost"]).unwrap();
        assert_eq!(cert.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(cert.chain_pem.ends_with(ca.pem()));
        assert!(cert.key_pem.contains("BEGIN PRIVATE KEY"));
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        for name in ["127.0.0.1", "localhost"] {
            handshake(&ca.client_config(), &cert, name).unwrap();
        }
        // Not a name in the certificate, and another CA: both refused.
        assert!(handshake(&ca.client_config(), &cert, "example.test").is_err());
        let other = Ca::new().unwrap();
        assert!(handshake(&other.client_config(), &cert, "127.0.0.1").is_err());
    }

    /// A whole TLS handshake in memory, the client checking `name`.
    fn handshake(client: &Arc<ClientConfig>, cert: &ServerCert, name: &str) -> anyhow::Result<()> {
        let name = rustls_pki_types::ServerName::try_from(name.to_owned())?;
        let mut client = rustls::ClientConnection::new(Arc::clone(client), name)?;
        let mut server = rustls::ServerConnection::new(cert.server_config())?;
        while client.is_handshaking() || server.is_handshaking() {
            let mut buffer = Vec::new();
            client.write_tls(&mut buffer)?;
            server.read_tls(&mut buffer.as_slice())?;
            server.process_new_packets()?;
            let mut buffer = Vec::new();
            server.write_tls(&mut buffer)?;
            client.read_tls(&mut buffer.as_slice())?;
            client.process_new_packets()?;
        }
        Ok(())
    }

    #[test]
    fn docker_certs_dir_is_written_and_removed() {
        let ca = Ca::new().unwrap();
        let root = tempfile::tempdir().unwrap();
        let guard = ca.trust_for_docker(root.path(), "127.0.0.1:5999").unwrap();
        let dir = root.path().join("127.0.0.1:5999");
        assert_eq!(guard.path(), dir);
        assert_eq!(fs::read_to_string(dir.join("ca.crt")).unwrap(), ca.pem());
        assert!(ca.trust_for_docker(root.path(), "127.0.0.1:5999").is_err());
        drop(guard);
        assert!(!dir.exists());
    }

    #[test]
    fn the_bundle_holds_the_system_roots_then_the_ca() {
        let ca = Ca::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = bundle_with_system(&ca, dir.path()).unwrap();
        let bundle = fs::read_to_string(path).unwrap();
        let system = fs::read_to_string(SYSTEM_BUNDLE).unwrap();
        assert!(bundle.starts_with(&system));
        assert!(bundle.ends_with(ca.pem()));
    }
}
