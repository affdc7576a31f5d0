//! A real `distribution` registry (`docker-registry serve`) on a free port of 127.0.0.1, stopped on drop.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// A registry process with its own storage, config and log in a temporary directory.
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    htpasswd: Option<(String, String)>,
    token: Option<TokenAuthConfig>,
}

/// distribution's `auth: token` section: the registry checks bearer tokens itself against `root_cert_bundle`
/// and sends clients to `realm` for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAuthConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_bundle: PathBuf,
}

impl Registry {
    /// Starts an open registry (no auth).
    pub fn start() -> anyhow::Result<Registry> {
        Registry::launch(None, None)
    }

    /// Starts a registry that needs `docker login` with this user and password (bcrypt htpasswd).
    pub fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Registry> {
        Registry::launch(Some((user.to_owned(), password.to_owned())), None)
    }

    /// Starts a registry that takes only bearer tokens from this token service (`TokenService::registry_auth`).
    pub fn start_with_token(token: TokenAuthConfig) -> anyhow::Result<Registry> {
        Registry::launch(None, Some(token))
    }

    fn launch(
        htpasswd: Option<(String, String)>,
        token: Option<TokenAuthConfig>,
    ) -> anyhow::Result<Registry> {
        let dir = tempfile::Builder::new().prefix("20i-registry-").tempdir()?;
        let port = free_port()?;
        let mut registry = Registry {
            dir,
            port,
            child: None,
            htpasswd,
            token,
        };
        registry.write_config()?;
        registry.resume()?;
        Ok(registry)
    }

    /// `127.0.0.1:PORT`: the host part of references to this registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A namespace under this registry, e.g. `127.0.0.1:PORT/test`.
    pub fn namespace(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
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
            storage.display(),
            self.host()
        );
        if let Some((user, password)) = &self.htpasswd {
            let file = self.dir.path().join("htpasswd");
            fs::write(&file, htpasswd_line(user, password)?)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            ));
        }
        if let Some(token) = &self.token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                token.realm,
                token.service,
                token.issuer,
                token.root_cert_bundle.display()
            ));
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
            if let Ok(status) = http_status(self.port, "/v2/") {
                if status == 200 || status == 401 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("no answer on http://{}/v2/ within 20 s", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
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
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let text = std::str::from_utf8(&head)?;
    text.get(9..12)
        .and_then(|code| code.parse().ok())
        .context("not an HTTP answer")
}
