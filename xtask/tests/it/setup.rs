//! What the release tests share: two `distribution` registries on 127.0.0.1 (the mirror wants a login),
//! stand-in bases and their lock, a docker config of the test's own, and checks made independently with skopeo.
//! `Setup::behind_proxies` puts a fault-injecting proxy in front of each registry: the release talks to the
//! proxies, the checks to the registries themselves. `Setup::hosted` releases instead to a GHCR-like canonical and
//! a Docker-Hub-like mirror (`testkit::Hosted`: TLS, token auth, each service's quirks), the bases staying on
//! the plain loopback registry.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use stack_images::{docker::Docker, Digest};
use testkit::{
    fixtures, Accounts, CertsDirGuard, FaultProxy, Hosted, HubLimits, Like, Registry,
    TokenTransport,
};

pub const LINES: [&str; 5] = ["8.1", "8.2", "8.3", "8.4", "8.5"];
pub const USER: &str = "releaser";
pub const PASSWORD: &str = "test-only-password";
/// The signing key's password: only ever in a child's environment, so a test can check no output shows it.
pub const KEY_PASSWORD: &str = "a throwaway test password";

/// Two registries, stand-in bases, a base lock and a docker config with a login to the mirror: what a
/// maintainer's machine has before `cargo xtask release`.
pub struct Setup {
    pub canonical: Registry,
    pub mirror: Registry,
    pub docker_config: tempfile::TempDir,
    pub dir: tempfile::TempDir,
    /// In front of the canonical registry and the mirror, when the release is to meet faults.
    pub proxies: Option<(FaultProxy, FaultProxy)>,
    /// A matrix of fewer lines, for tests about the registries rather than the builds.
    pub matrix: Option<PathBuf>,
    /// The GHCR-like canonical and Docker-Hub-like mirror the release talks to instead of the plain ones.
    pub hosted: Option<HostedPair>,
}

/// Where docker, skopeo, cosign and the xtask's client all read a registry's CA: the hosted registries' CAs are
/// written there, under their own `127.0.0.1:PORT`, for the length of a test.
pub const DOCKER_CERTS_D: &str = "/etc/docker/certs.d";

/// A GHCR-like and a Docker-Hub-like registry, the CA of each trusted in docker's `certs.d` while it lives.
pub struct HostedPair {
    // The CAs leave certs.d before the registries stop.
    _trust: [CertsDirGuard; 2],
    pub ghcr: Hosted,
    pub hub: Hosted,
}

impl HostedPair {
    /// The releaser owns `stack` on the GHCR-like and `mirror` on the Docker-Hub-like (`limits` say whether a
    /// first push creates a repository there); both serve public images to anyone.
    pub fn start(limits: HubLimits) -> anyhow::Result<HostedPair> {
        // dockerd pushes what BuildKit built and fetches that push's token itself, trusting only the system
        // store there: the token services speak plain HTTP (the registries themselves stay TLS).
        let ghcr = Hosted::start_with(
            Like::Ghcr,
            Accounts::owner(USER, PASSWORD, "stack"),
            Duration::from_secs(300),
            TokenTransport::PlainHttp,
        )?;
        let hub = Hosted::start_with(
            Like::DockerHub(limits),
            Accounts::owner(USER, PASSWORD, "mirror"),
            Duration::from_secs(300),
            TokenTransport::PlainHttp,
        )?;
        // A split release's merge assembles its index with `buildx imagetools create`, which speaks plain HTTP to
        // any loopback registry (HTTPS to ghcr.io): the GHCR-like proxy answers it in plain HTTP too.
        ghcr.proxy.also_plain_http(true);
        let root = Path::new(DOCKER_CERTS_D);
        Ok(HostedPair {
            _trust: [ghcr.trust_in(root)?, hub.trust_in(root)?],
            ghcr,
            hub,
        })
    }

    fn serves(&self, reference: &str) -> bool {
        [&self.ghcr, &self.hub]
            .iter()
            .any(|hosted| reference.starts_with(&format!("{}/", hosted.host())))
    }
}

/// The repository's matrix with only `lines` (the first is the default line) and only `platforms`, written into
/// `dir`: for tests about registries rather than builds.
pub fn small_matrix(dir: &Path, lines: &[&str], platforms: &[&str]) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/matrix.toml");
    let text = std::fs::read_to_string(root)?;
    let head = &text[..text.find("[[lines]]").expect("the matrix lists lines")];
    let default = format!("default_line = \"{}\"", lines[0]);
    let platforms = format!(
        "platforms = [{}]",
        platforms
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut matrix = head
        .lines()
        .map(|l| {
            if l.starts_with("default_line") {
                default.as_str()
            } else if l.starts_with("platforms") {
                platforms.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    for line in lines {
        matrix.push_str(&format!("\n[[lines]]\nphp = \"{line}\"\n"));
    }
    let path = dir.join("matrix.toml");
    std::fs::write(&path, matrix)?;
    Ok(path)
}

impl Setup {
    pub fn new() -> anyhow::Result<Setup> {
        let canonical = Registry::start()?;
        let mirror = Registry::start_with_auth(USER, PASSWORD)?;
        let dir = tempfile::tempdir()?;
        let source = format!("{}/fixtures/php-standin", canonical.host());
        for line in LINES {
            let reference = format!("{source}:{line}-fpm-alpine");
            fixtures::push_busybox(
                &reference,
                &format!("LABEL stand-in-for=php:{line}-fpm-alpine\n"),
                false,
            )?;
        }
        // The developer's own ~/.docker stays untouched: the test logs in inside its own DOCKER_CONFIG.
        let docker_config = tempfile::tempdir()?;
        Docker::new()?.with_config_dir(docker_config.path()).login(
            &mirror.host(),
            USER,
            PASSWORD,
        )?;
        let setup = Setup {
            canonical,
            mirror,
            docker_config,
            dir,
            proxies: None,
            matrix: None,
            hosted: None,
        };
        let lock = setup.lock().display().to_string();
        let refreshed = setup.xtask(&["bases", "refresh", "--source", &source, "--lock", &lock]);
        assert!(
            refreshed.status.success(),
            "{}",
            String::from_utf8_lossy(&refreshed.stderr)
        );
        Ok(setup)
    }

    /// The same, with the release talking to both registries through fault-injecting proxies, building only
    /// `lines` (the first is the default line).
    pub fn behind_proxies(lines: &[&str]) -> anyhow::Result<Setup> {
        let mut setup = Setup::new()?;
        let canonical = FaultProxy::in_front_of(&setup.canonical)?;
        let mirror = FaultProxy::in_front_of(&setup.mirror)?;
        Docker::new()?
            .with_config_dir(setup.docker_config.path())
            .login(&mirror.host(), USER, PASSWORD)?;
        let path = small_matrix(setup.dir.path(), lines, &["linux/amd64", "linux/arm64"])?;
        setup.matrix = Some(path);
        setup.proxies = Some((canonical, mirror));
        Ok(setup)
    }

    /// The same bases, released to a GHCR-like canonical and a Docker-Hub-like mirror with `limits`, logged in
    /// to both, building only `lines` for `platforms`.
    pub fn hosted(lines: &[&str], platforms: &[&str], limits: HubLimits) -> anyhow::Result<Setup> {
        let mut setup = Setup::new()?;
        let pair = HostedPair::start(limits)?;
        for hosted in [&pair.ghcr, &pair.hub] {
            hosted.login(setup.docker_config.path(), USER, PASSWORD)?;
        }
        setup.matrix = Some(small_matrix(setup.dir.path(), lines, platforms)?);
        setup.hosted = Some(pair);
        Ok(setup)
    }

    /// The GHCR-like canonical and the Docker-Hub-like mirror.
    pub fn pair(&self) -> &HostedPair {
        self.hosted.as_ref().expect("Setup::hosted")
    }

    /// The proxies in front of the canonical registry and the mirror.
    pub fn proxies(&self) -> (&FaultProxy, &FaultProxy) {
        let (canonical, mirror) = self.proxies.as_ref().expect("Setup::behind_proxies");
        (canonical, mirror)
    }

    pub fn lock(&self) -> PathBuf {
        self.dir.path().join("standin.lock.toml")
    }

    pub fn notes_dir(&self) -> PathBuf {
        self.dir.path().join("notes")
    }

    pub fn work_dir(&self, version: &str) -> PathBuf {
        self.dir.path().join("work").join(version)
    }

    pub fn canonical_ns(&self) -> String {
        match &self.hosted {
            Some(pair) => pair.ghcr.namespace("stack"),
            None => self.canonical.namespace("stack"),
        }
    }

    pub fn mirror_ns(&self) -> String {
        match &self.hosted {
            Some(pair) => pair.hub.namespace("mirror"),
            None => self.mirror.namespace("mirror"),
        }
    }

    /// skopeo checks the certificate of a hosted registry (its CA is in certs.d) and takes a plain one's HTTP.
    fn skopeo_tls(&self, reference: &str) -> &'static str {
        match &self.hosted {
            Some(pair) if pair.serves(reference) => "--tls-verify=true",
            _ => "--tls-verify=false",
        }
    }

    pub fn xtask_command(&self, args: &[&str]) -> Command {
        let mut command = crate::xtask_command();
        command
            .args(args)
            .env("DOCKER_CONFIG", self.docker_config.path());
        command
    }

    pub fn xtask(&self, args: &[&str]) -> Output {
        self.xtask_command(args)
            .output()
            .expect("running the xtask binary")
    }

    /// `cargo xtask prune` of a namespace with this setup's notes and matrix (the small one: `Setup::matrix` set),
    /// which must succeed; its stdout.
    pub fn prune(&self, namespace: &str, extra: &[&str]) -> String {
        let notes_dir = self.notes_dir().display().to_string();
        let matrix = self.matrix.as_ref().unwrap().display().to_string();
        let mut args = vec![
            "prune",
            "--registry",
            namespace,
            "--notes-dir",
            &notes_dir,
            "--matrix",
            &matrix,
        ];
        args.extend(extra);
        assert_ok(&self.xtask(&args))
    }

    pub fn release_args(&self, version: &str, published: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "release",
            version,
            "--published",
            published,
            "--registry",
            &self.release_ns(true),
            "--mirror",
            &self.release_ns(false),
            "--bases",
            &self.lock().display().to_string(),
            "--context",
            &fixtures::php_fpm_standin().display().to_string(),
            "--notes-dir",
            &self.notes_dir().display().to_string(),
            "--work-dir",
            &self.work_dir(version).display().to_string(),
            "--revision",
            "0123456789abcdef0123456789abcdef01234567",
            "--time",
            "2026-11-25T10:00:00Z",
            // These releases are v1.9.5, v2.0.0, v2.1.0-rc.1 …, not the workspace's version.
            "--allow-version-mismatch",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(matrix) = &self.matrix {
            args.extend(["--matrix".to_owned(), matrix.display().to_string()]);
        }
        // The matrix's scanner is on Docker Hub, which these machines cannot reach: a release test makes SBOMs
        // only when it names the stand-in (xtask/tests/it/sbom.rs pushes it).
        if !extra.contains(&"--sbom-scanner") {
            args.push("--no-sbom".to_owned());
        }
        // Keyless signing needs GitHub's OIDC token: releases here are unsigned unless a test signs with a key.
        if !extra.iter().any(|a| a.starts_with("--signing")) {
            args.extend(["--signing".to_owned(), "none".to_owned()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// The namespace the release pushes to: through the proxy when there is one.
    pub fn release_ns(&self, canonical: bool) -> String {
        match (&self.proxies, canonical) {
            (Some((proxy, _)), true) => proxy.namespace("stack"),
            (Some((_, proxy)), false) => proxy.namespace("mirror"),
            (None, true) => self.canonical_ns(),
            (None, false) => self.mirror_ns(),
        }
    }

    pub fn release(&self, version: &str, published: &str, extra: &[&str]) -> Output {
        let args = self.release_args(version, published, extra);
        self.xtask(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// sha256 of the bytes skopeo fetches: a second client's word on what a reference serves.
    /// That `reference`, an entry of the notes' `references`, serves to skopeo exactly the digest it records; its
    /// name, for the caller's own checks.
    #[track_caller]
    pub fn assert_serves_recorded<'a>(&self, reference: &'a serde_json::Value) -> &'a str {
        let name = reference["ref"].as_str().unwrap();
        let served = self
            .skopeo_digest(name)
            .unwrap_or_else(|| panic!("{name} is not served"));
        assert_eq!(served.as_str(), reference["digest"], "{name}");
        name
    }

    pub fn skopeo_digest(&self, reference: &str) -> Option<Digest> {
        let authfile = self.docker_config.path().join("config.json");
        let output = Command::new("skopeo")
            .args(["inspect", "--raw", self.skopeo_tls(reference), "--authfile"])
            .arg(&authfile)
            .arg(format!("docker://{reference}"))
            .output()
            .expect("skopeo is installed by `make setup`");
        output.status.success().then(|| Digest::of(&output.stdout))
    }

    /// Every tag of the image in both registries and the digest it serves now.
    pub fn all_tags(&self) -> Vec<(String, Option<Digest>)> {
        let mut all = Vec::new();
        for namespace in [self.canonical_ns(), self.mirror_ns()] {
            let authfile = self.docker_config.path().join("config.json");
            let output = Command::new("skopeo")
                .args(["list-tags", self.skopeo_tls(&namespace), "--authfile"])
                .arg(&authfile)
                .arg(format!("docker://{namespace}/php-fpm"))
                .output()
                .unwrap();
            let listed: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or_default();
            let mut tags: Vec<String> = listed["Tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(String::from))
                .collect();
            tags.sort();
            for tag in tags {
                let reference = format!("{namespace}/php-fpm:{tag}");
                let digest = self.skopeo_digest(&reference);
                all.push((reference, digest));
            }
        }
        all
    }
}

#[track_caller]
pub fn assert_ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "xtask failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn notes(dir: &Path, version: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{version}.json")))
        .expect("the release wrote its JSON");
    serde_json::from_str(&text).unwrap()
}

/// The digest the notes record for a tag in a registry.
pub fn recorded(notes: &serde_json::Value, reference: &str) -> Option<String> {
    notes["references"]
        .as_array()?
        .iter()
        .find(|r| r["ref"] == reference)
        .map(|r| r["digest"].as_str().unwrap().to_owned())
}

pub fn manifest_puts(registry: &Registry) -> usize {
    registry
        .log()
        .lines()
        .filter(|l| l.contains("\"PUT /v2/") && l.contains("/manifests/"))
        .count()
}

pub fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let at = args
        .iter()
        .position(|a| a == flag)
        .expect("the flag is there")
        + 1;
    args[at] = value.to_owned();
    args
}

/// A line of a run's journal or of a dry run without its quotes and with its digest set apart: `…@sha256:…` (a
/// run) and `…@{digest of …}` (a dry run's placeholder) both end `@<digest>`, so the two compare.
pub fn digest_apart(line: &str) -> String {
    let line = line.replace('\'', "");
    match line.find("@sha256:").or_else(|| line.find("@{digest of")) {
        Some(at) => format!("{}@<digest>", &line[..at]),
        None => line,
    }
}

/// A cosign key pair in a temp dir of its own, encrypted with [`KEY_PASSWORD`]: what the signed releases sign
/// with and `cosign verify --key` checks against.
pub struct Keys {
    /// Holds the key files: they go with the pair.
    pub _dir: tempfile::TempDir,
    pub private: PathBuf,
    pub public: PathBuf,
}

pub fn key_pair() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("release");
    let made = Command::new("cosign")
        .arg("generate-key-pair")
        .arg(format!("--output-key-prefix={}", prefix.display()))
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .output()
        .expect("cosign is installed by `make setup`");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    Keys {
        private: prefix.with_extension("key"),
        public: prefix.with_extension("pub"),
        _dir: dir,
    }
}
