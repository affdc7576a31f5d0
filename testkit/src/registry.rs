//! A real `distribution` registry (`docker-registry serve`) on a free port of 127.0.0.1, stopped on drop: open, or
//! with htpasswd logins, or with distribution's own bearer-token auth (`auth: token`, the tokens issued by a token
//! service stand-in the test runs); on plain HTTP, or on TLS with a certificate for `127.0.0.1` and `localhost`
//! from a test CA (`tls::Ca`), as GHCR and Docker Hub serve HTTPS.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::tls::{Ca, ServerCert};

/// A registry process with its own storage, config and log in a temporary directory.
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    htpasswd: Option<(String, String)>,
    token: Option<TokenAuthConfig>,
    tls: Option<RegistryTls>,
}

/// The CA a TLS registry's certificate comes from, and that certificate.
struct RegistryTls {
    ca: Ca,
    cert: ServerCert,
}

/// distribution's `auth: token`: the registry answers 401 with a `Bearer` challenge naming `realm` and `service`,
/// and accepts only JWTs from `issuer` signed by a key whose certificate is in `root_cert_bundle`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAuthConfig {
    /// The token service's URL, as the challenge names it.
    pub realm: String,
    /// The `service` of the challenge and the audience tokens must name.
    pub service: String,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// PEM certificates of the keys that sign tokens.
    pub root_cert_bundle: PathBuf,
}

/// How a registry is to be started: `Registry::builder().tls(&ca).htpasswd(user, pass).start()`.
/// Not `Debug`: it holds a password.
#[derive(Default)]
#[must_use]
pub struct RegistryBuilder {
    tls: Option<Ca>,
    htpasswd: Option<(String, String)>,
    token: Option<TokenAuthConfig>,
}

impl RegistryBuilder {
    /// Serves HTTPS with a certificate from `ca` for `127.0.0.1` and `localhost`.
    pub fn tls(mut self, ca: &Ca) -> RegistryBuilder {
        self.tls = Some(ca.clone());
        self
    }

    /// Needs `docker login` with this user and password (bcrypt htpasswd).
    pub fn htpasswd(mut self, user: &str, password: &str) -> RegistryBuilder {
        self.htpasswd = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Needs bearer tokens from the token service `config` names.
    pub fn token(mut self, config: TokenAuthConfig) -> RegistryBuilder {
        self.token = Some(config);
        self
    }

    pub fn start(self) -> anyhow::Result<Registry> {
        if self.htpasswd.is_some() && self.token.is_some() {
            // distribution refuses a config with two auth methods; say so before it does, less cryptically.
            bail!("a registry takes htpasswd or token auth, not both: drop one from the builder");
        }
        let dir = tempfile::Builder::new().prefix("20i-registry-").tempdir()?;
        let port = free_port()?;
        let tls = match self.tls {
            Some(ca) => Some(RegistryTls {
                cert: ca.issue(&["127.0.0.1", "localhost"])?,
                ca,
            }),
            None => None,
        };
        let mut registry = Registry {
            dir,
            port,
            child: None,
            htpasswd: self.htpasswd,
            token: self.token,
            tls,
        };
        registry.write_config()?;
        registry.resume()?;
        Ok(registry)
    }
}

impl Registry {
    /// Starts an open registry (no auth) on plain HTTP.
    pub fn start() -> anyhow::Result<Registry> {
        Registry::builder().start()
    }

    /// Starts a registry on plain HTTP that needs `docker login` with this user and password (bcrypt htpasswd).
    pub fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Registry> {
        Registry::builder().htpasswd(user, password).start()
    }

    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// `127.0.0.1:PORT`: the host part of references to this registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A namespace under this registry, e.g. `127.0.0.1:PORT/test`.
    pub fn namespace(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The CA a TLS registry's certificate chains to.
    pub fn ca(&self) -> Option<&Ca> {
        self.tls.as_ref().map(|tls| &tls.ca)
    }

    /// The CA certificate in PEM, for a TLS registry.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca().map(Ca::pem)
    }

    /// A TLS registry's certificate (for `127.0.0.1` and `localhost`): what a proxy in front of it presents too.
    pub fn server_cert(&self) -> Option<&ServerCert> {
        self.tls.as_ref().map(|tls| &tls.cert)
    }

    pub fn token_auth(&self) -> Option<&TokenAuthConfig> {
        self.token.as_ref()
    }

    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.htpasswd
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Everything the registry logged, access lines included: how a test counts requests.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the process, keeping its storage: what a registry outage looks like to a client.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port with the same storage.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let binary = registry_binary()?;
        let child = Command::new(&binary)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        self.wait_ready().with_context(|| {
            format!(
                "registry on {} did not start; its log:\n{}",
                self.host(),
                self.log()
            )
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let storage = self.dir.path().join("data");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {}\n",
            yaml(&storage.display().to_string()),
            self.host()
        );
        if let Some(tls) = &self.tls {
            let (certificate, key) = tls.cert.write(self.dir.path(), "registry")?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml(&certificate.display().to_string()),
                yaml(&key.display().to_string())
            ));
        }
        if let Some((user, password)) = &self.htpasswd {
            let file = self.dir.path().join("htpasswd");
            fs::write(&file, htpasswd_line(user, password)?)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                yaml(&file.display().to_string())
            ));
        }
        if let Some(token) = &self.token {
            config.push_str(&token_config(token));
        }
        fs::write(self.dir.path().join("config.yml"), config)?;
        Ok(())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("the registry exited with {status}");
            }
            // `/v2/` answers 200 when open and 401 with auth: either way it is serving.
            let status = match &self.tls {
                Some(tls) => https_status(self.port, "/v2/", tls.ca.client_config()),
                None => http_status(self.port, "/v2/"),
            };
            if let Ok(status) = status {
                if status == 200 || status == 401 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("no answer on {}/v2/ within 20 s", self.base_url())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// distribution's `auth: token` section.
fn token_config(token: &TokenAuthConfig) -> String {
    format!(
        "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        yaml(&token.realm),
        yaml(&token.service),
        yaml(&token.issuer),
        yaml(&token.root_cert_bundle.display().to_string())
    )
}

/// A YAML double-quoted scalar: a JSON string is one, so a URL's `:` or a path's space cannot change the config.
fn yaml(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// `docker-registry` (Debian's name for distribution), or `$STACK_REGISTRY_BIN`.
fn registry_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("STACK_REGISTRY_BIN") {
        return Ok(PathBuf::from(path));
    }
    for candidate in [
        "/usr/bin/docker-registry",
        "/usr/local/bin/registry",
        "/usr/bin/registry",
    ] {
        if Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!("no distribution registry binary found: run `make setup` (or set STACK_REGISTRY_BIN)")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A bcrypt htpasswd line, from `htpasswd -Bbn` (apache2-utils), the registry's only supported scheme.
fn htpasswd_line(user: &str, password: &str) -> anyhow::Result<String> {
    let output = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .context("running htpasswd: run `make setup` to install apache2-utils")?;
    if !output.status.success() {
        bail!(
            "htpasswd failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned() + "\n")
}

/// The status code of a plain HTTP GET on loopback.
pub fn http_status(port: u16, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    get_status(&mut stream, port, path)
}

/// The status code of an HTTPS GET on loopback, the server checked against `client` (for `127.0.0.1`).
pub fn https_status(
    port: u16,
    path: &str,
    client: Arc<rustls::ClientConfig>,
) -> anyhow::Result<u16> {
    let stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let connection = rustls::ClientConnection::new(client, name)?;
    let mut stream = rustls::StreamOwned::new(connection, stream);
    get_status(&mut stream, port, path)
}

/// Sends a bare GET over `stream`, plain or TLS, and reads the status code off the answer's first line.
fn get_status(stream: &mut (impl Read + Write), port: u16, path: &str) -> anyhow::Result<u16> {
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    // A TLS stream holds the request in its buffer until flushed; for a TcpStream this does nothing.
    stream.flush()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let text = std::str::from_utf8(&head)?;
    text.get(9..12)
        .and_then(|code| code.parse().ok())
        .context("not an HTTP answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_auth_renders_distributions_section() {
        let config = token_config(&TokenAuthConfig {
            realm: "https://127.0.0.1:5001/token".to_owned(),
            service: "registry.test".to_owned(),
            issuer: "token-standin".to_owned(),
            root_cert_bundle: PathBuf::from("/tmp/a b/signer.crt"),
        });
        assert_eq!(
            config,
            "auth:\n  token:\n    realm: \"https://127.0.0.1:5001/token\"\n    service: \"registry.test\"\n    \
             issuer: \"token-standin\"\n    rootcertbundle: \"/tmp/a b/signer.crt\"\n"
        );
    }
}
