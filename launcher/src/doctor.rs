//! `20i doctor`: checks, without changing anything, what a start needs (the engine and its plugins, the image
//! store and platform, ports, disk, the configuration, the stack files, CODE_DIR, cosign, and with `--online` the
//! registries), one line each: ok, warning or failed, and what to do. Exit 0 when nothing failed, 1 otherwise.

use std::{fmt, path::Path, str::FromStr};

use anyhow::anyhow;
use serde::Serialize;
use stack_images::{
    bytes::human_size,
    cosign::Verifier,
    docker::{DockerCommand, FailureKind},
    registry::{RegistryClient, RegistryError},
    IndexSummary, Namespace,
};

use crate::{
    config::{self, Config, Setting},
    engine::Engine,
    preflight::{self, Line, Status},
    stack::Compose,
};

/// A size of disk space: `2G`, `500M`, `1.5T`, `0` (decimal units, as docker prints sizes; a `B` may follow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSize(pub u64);

impl FromStr for DiskSize {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<DiskSize> {
        let hint = "use a size such as 2G, 500M or 1.5T (decimal units: K, M, G, T)";
        let trimmed = text.trim();
        let without_b = trimmed
            .strip_suffix(['B', 'b'])
            .filter(|rest| rest.ends_with(|c: char| c.is_ascii_alphabetic()))
            .unwrap_or(trimmed);
        let (number, unit) = match without_b.char_indices().last() {
            Some((at, c)) if c.is_ascii_alphabetic() => (&without_b[..at], c.to_ascii_uppercase()),
            _ => (without_b, ' '),
        };
        let scale = match unit {
            ' ' => 1.0,
            'K' => 1e3,
            'M' => 1e6,
            'G' => 1e9,
            'T' => 1e12,
            _ => return Err(anyhow!("`{text}` has an unknown unit: {hint}")),
        };
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0 && !number.starts_with(['+', '-']))
            .ok_or_else(|| anyhow!("`{text}` is not a size: {hint}"))?;
        Ok(DiskSize((value * scale) as u64))
    }
}

impl fmt::Display for DiskSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_size(self.0))
    }
}

/// What `20i doctor` was asked to do.
pub struct Options {
    pub online: bool,
    pub json: bool,
    pub min_free_disk: DiskSize,
}

/// The whole report: `--json` prints it as it is.
#[derive(Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Line>,
}

/// What `docker info` says that the checks use.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EngineInfo {
    pub version: String,
    /// `amd64`, `arm64`, ... (docker's `x86_64` and `aarch64` normalised).
    pub arch: String,
    pub containerd_store: bool,
    pub root_dir: String,
}

/// Reads `docker info --format '{{json .}}'`.
pub fn parse_info(bytes: &[u8]) -> anyhow::Result<EngineInfo> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
    let containerd_store = value["DriverStatus"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|pair| pair.to_string().contains("io.containerd.snapshotter"));
    Ok(EngineInfo {
        version: text("ServerVersion"),
        arch: normal_arch(&text("Architecture")).to_owned(),
        containerd_store,
        root_dir: text("DockerRootDir"),
    })
}

/// Docker's and the kernel's names for an architecture, as image platforms name it.
pub fn normal_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" => "arm",
        other => other,
    }
}

pub fn run(flags: Vec<Setting>, options: &Options) -> anyhow::Result<()> {
    let engine = Engine::new()?;
    let loaded = config::load(flags);
    let checks = checks(&engine, loaded.as_ref().map(|l| &l.config), options);
    let report = Report {
        ok: checks.iter().all(|l| l.status != Status::Failed),
        checks,
    };
    let redact = |text: String| match &loaded {
        Ok(loaded) => loaded.config.redact(&text),
        Err(_) => text,
    };
    if options.json {
        println!("{}", redact(serde_json::to_string_pretty(&report)?));
    } else {
        for line in &report.checks {
            println!("{}", redact(line.to_string()));
        }
    }
    let count = |status| report.checks.iter().filter(|l| l.status == status).count();
    let failed = count(Status::Failed);
    if failed > 0 {
        return Err(anyhow!(
            "{failed} check(s) failed, {} warning(s): each line says what to do",
            count(Status::Warning)
        ));
    }
    Ok(())
}

/// Every check, in the order a start needs them.
fn checks(
    engine: &Engine,
    config: Result<&Config, &anyhow::Error>,
    options: &Options,
) -> Vec<Line> {
    let mut lines = Vec::new();
    let info = engine
        .output(&DockerCommand::new(["info", "--format", "{{json .}}"]))
        .map_err(|e| e.kind)
        .and_then(|bytes| parse_info(&bytes).map_err(|_| FailureKind::Other));
    match &info {
        Ok(info) => lines.push(preflight::engine_line(&info.version)),
        Err(kind) => lines.push(Line::failed(
            "engine",
            format!("the Docker engine does not answer ({})", kind.describe()),
            "start Docker, or point DOCKER_HOST at a running engine (`docker info` must answer)",
        )),
    }
    lines.push(compose_v2(engine));
    let use_prebuilt = config.is_ok_and(|c| c.use_prebuilt);
    lines.push(buildx(engine, use_prebuilt));
    if let Ok(info) = &info {
        lines.push(if info.containerd_store {
            Line::ok("image store", "containerd (multi-platform images)")
        } else {
            Line::ok(
                "image store",
                "docker's classic store (one platform per image; fine for starting the stack)",
            )
        });
    }
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            lines.push(Line::failed(
                "config",
                format!("{error:#}"),
                "fix that value where it was set (the other checks need the configuration and were skipped)",
            ));
            return lines;
        }
    };
    lines.push(Line::ok(
        "config",
        format!(
            "resolves: image {} (`20i start --explain` shows every value)",
            config.selected_reference()
        ),
    ));
    if let Some(warning) = config.exposed_defaults_warning() {
        let (found, fix) = warning.split_once(": ").unwrap_or((&warning, ""));
        lines.push(Line::warning("passwords", found, fix));
    }
    lines.push(stack_files(engine, config));
    lines.extend(preflight::ports(config, engine));
    lines.push(preflight::code_dir(&config.code_dir));
    lines.extend(signature(config));
    let remote = if options.online {
        online(config, &mut lines)
    } else {
        None
    };
    if let Ok(info) = &info {
        let local = local_platform(engine, &config.selected_reference());
        lines.push(platform(config, info, local.as_deref(), remote.as_ref()));
        lines.push(disk(
            info,
            options.min_free_disk,
            local.is_some(),
            remote.as_ref(),
        ));
    }
    lines
}

/// `docker compose version`: the v2 plugin (v1's `docker-compose` is not it).
fn compose_v2(engine: &Engine) -> Line {
    let fix = "install Docker Compose v2 (the `docker compose` plugin: docker-compose-plugin, or docker-compose 2.x)";
    match engine.output(&DockerCommand::new(["compose", "version", "--short"])) {
        Ok(bytes) => {
            let version = String::from_utf8_lossy(&bytes)
                .trim()
                .trim_start_matches('v')
                .to_owned();
            if version
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .is_some_and(|m| m >= 2)
            {
                Line::ok("compose", format!("docker compose {version}"))
            } else {
                Line::failed(
                    "compose",
                    format!("docker compose {version} is not v2"),
                    fix,
                )
            }
        }
        Err(error) => Line::failed(
            "compose",
            format!("`docker compose` does not run ({})", error.kind.describe()),
            fix,
        ),
    }
}

/// `docker buildx version`: local builds need it.
fn buildx(engine: &Engine, use_prebuilt: bool) -> Line {
    match engine.output(&DockerCommand::new(["buildx", "version"])) {
        Ok(bytes) => Line::ok(
            "buildx",
            String::from_utf8_lossy(&bytes)
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Err(error) => {
            let found = format!("`docker buildx` does not run ({})", error.kind.describe());
            let fix = "install the buildx plugin (docker-buildx-plugin): local builds need it";
            if use_prebuilt {
                Line::warning("buildx", found, fix)
            } else {
                Line::failed("buildx", found, fix)
            }
        }
    }
}

/// `docker compose config --quiet` of the stack and its modules, as `20i start` loads them.
fn stack_files(engine: &Engine, config: &Config) -> Line {
    let derived = matches!(
        config.entry("STACK_FILE").map(|e| &e.source),
        Some(config::Source::Derived(_))
    );
    if derived && !config.stack_dir.exists() {
        return Line::ok(
            "stack files",
            format!(
                "{} does not exist yet: `20i start` writes the shipped stack there first (as `20i init` does)",
                config.stack_dir.display()
            ),
        );
    }
    let result = Compose::new(config, &config.selected_reference()).and_then(|compose| {
        compose
            .validate(engine, config)
            .map(|()| compose.files.len())
    });
    match result {
        Ok(files) => Line::ok(
            "stack files",
            format!(
                "compose accepts {} and {} module file(s)",
                config.stack_file.display(),
                files - 1
            ),
        ),
        Err(error) => {
            let text = format!("{error:#}");
            // The fix is the message's last line; compose's own message above it may have several.
            match text.rsplit_once('\n') {
                Some((found, fix)) => Line::failed("stack files", found.trim(), fix.trim()),
                // The message says what to do itself (`no compose file at …: run `20i init` …`).
                None => Line {
                    fix: None,
                    ..Line::failed("stack files", text.trim(), "")
                },
            }
        }
    }
}

/// With VERIFY_SIGNATURE=true: cosign runs, and the key is a readable file (or keyless is named).
fn signature(config: &Config) -> Vec<Line> {
    let Some(verifier) = &config.signature else {
        return Vec::new();
    };
    let mut lines = vec![match find_cosign() {
        Some(path) => Line::ok("cosign", format!("{} (VERIFY_SIGNATURE=true)", path.display())),
        None => Line::failed(
            "cosign",
            "VERIFY_SIGNATURE=true, but cosign is not on PATH (nor at $COSIGN)",
            "install cosign (https://docs.sigstore.dev/cosign/system_config/installation/), or set \
             VERIFY_SIGNATURE=false",
        ),
    }];
    lines.push(match verifier {
        Verifier::Key(key) => match std::fs::File::open(key) {
            Ok(_) => Line::ok(
                "signature key",
                format!("SIGNATURE_KEY={} is readable", key.display()),
            ),
            Err(error) => Line::failed(
                "signature key",
                format!("SIGNATURE_KEY={} cannot be read: {error}", key.display()),
                "set SIGNATURE_KEY to the release's public key file (its notes say where it is)",
            ),
        },
        Verifier::Identity { identity, .. } => Line::ok(
            "signature key",
            format!("keyless: signed by {identity} (checking needs the network)"),
        ),
    });
    lines
}

/// `$COSIGN`, or `cosign` in one of PATH's folders.
fn find_cosign() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("COSIGN") {
        let path = std::path::PathBuf::from(path);
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("cosign"))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    path.is_file()
}

/// What a registry serves for the selected tag: its platforms and, for the engine's platform, its size.
#[derive(Debug, Default)]
pub struct Remote {
    pub platforms: Vec<String>,
    /// Layers and config of each platform's image, by platform.
    pub sizes: Vec<(String, u64)>,
}

/// `--online`: each registry (IMAGE_REGISTRY, then IMAGE_MIRRORS) asked for the selected tag with docker's
/// credentials, through the in-process client (its timeouts and retries). The first answer's index is kept.
fn online(config: &Config, lines: &mut Vec<Line>) -> Option<Remote> {
    let client = match RegistryClient::from_env() {
        Ok(client) => client,
        Err(error) => {
            lines.push(Line::failed(
                "registry",
                format!("{error:#}"),
                "fix the registry settings named",
            ));
            return None;
        }
    };
    let namespaces: Vec<(&str, &Namespace)> = std::iter::once(("IMAGE_REGISTRY", &config.registry))
        .chain(config.mirrors.iter().map(|m| ("IMAGE_MIRRORS", m)))
        .collect();
    let mut remote = None;
    for (variable, namespace) in namespaces {
        let image = config.prebuilt_image().in_namespace(namespace);
        let check = format!("registry {}", namespace.host());
        match client.get_manifest(&image) {
            Ok(manifest) => {
                let summary = IndexSummary::parse(&manifest.bytes).ok();
                let platforms: Vec<String> = summary
                    .iter()
                    .flat_map(|s| s.platforms.iter().map(|p| p.platform.clone()))
                    .collect();
                lines.push(Line::ok(
                    check,
                    format!(
                        "{image} is served ({})",
                        if platforms.is_empty() {
                            "one platform".to_owned()
                        } else {
                            platforms.join(", ")
                        }
                    ),
                ));
                if remote.is_none() {
                    let sizes = summary
                        .iter()
                        .flat_map(|s| s.platforms.iter())
                        .filter_map(|p| {
                            let platform_image = image.with_digest(&p.digest);
                            let bytes = client.get_manifest(&platform_image).ok()?.bytes;
                            Some((p.platform.clone(), image_size(&bytes)?))
                        })
                        .collect();
                    remote = Some(Remote { platforms, sizes });
                }
            }
            Err(error) => lines.push(registry_line(check, variable, &image.to_string(), &error)),
        }
    }
    remote
}

fn registry_line(check: String, variable: &str, image: &str, error: &RegistryError) -> Line {
    let host = &error.host;
    match error.kind {
        _ if error.is_absent() => Line::warning(
            check,
            format!("{host} answers, but has no {image}"),
            "check PHP_VERSION and STACK_RELEASE (`20i start --explain`); a start falls back as configured",
        ),
        FailureKind::Unauthorized => Line::failed(
            check,
            format!("{host} refuses docker's credentials for {image}"),
            format!("run `docker login {host}`"),
        ),
        _ => Line::failed(
            check,
            format!(
                "{host} ({variable}) did not answer after {} attempt(s) in {:.1} s: {}",
                error.attempts,
                error.elapsed.as_secs_f64(),
                error.kind.describe()
            ),
            "check the network or proxy (HTTPS_PROXY), or list a reachable mirror in IMAGE_MIRRORS",
        ),
    }
}

/// The bytes an image's layers and config take, from its manifest.
fn image_size(manifest: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let layers: u64 = value["layers"]
        .as_array()?
        .iter()
        .filter_map(|l| l["size"].as_u64())
        .sum();
    Some(layers + value["config"]["size"].as_u64().unwrap_or(0))
}

/// The local image's `os/arch`, when it is in the store.
fn local_platform(engine: &Engine, reference: &str) -> Option<String> {
    let command = DockerCommand::new([
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        "--",
        reference,
    ]);
    let bytes = engine.output(&command).ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_owned())
}

/// The engine's platform against the image's: natively, or under emulation.
pub fn platform(
    config: &Config,
    info: &EngineInfo,
    local: Option<&str>,
    remote: Option<&Remote>,
) -> Line {
    let host = format!("linux/{}", info.arch);
    let emulated = |has: &str| {
        Line::warning(
            "platform",
            format!(
                "the engine runs {host}, and {} has only {has}: it would run under emulation (slow, if QEMU is \
                 installed at all)",
                config.selected_reference()
            ),
            "run the stack on a machine of a published platform, or set USE_PREBUILT=false to build for this one",
        )
    };
    let native = |platforms: &[String]| {
        platforms
            .iter()
            .any(|p| p == &host || p.starts_with(&format!("{host}/")))
    };
    match (local, remote) {
        (_, Some(remote)) if !remote.platforms.is_empty() => {
            if native(&remote.platforms) {
                Line::ok("platform", format!("the engine runs {host}; the image has it natively"))
            } else {
                emulated(&remote.platforms.join(", "))
            }
        }
        (Some(local), _) => {
            if native(&[local.to_owned()]) {
                Line::ok("platform", format!("the engine runs {host}; the local image is {local}"))
            } else {
                emulated(local)
            }
        }
        _ => Line::ok(
            "platform",
            format!("the engine runs {host}; the image is not in the local store (`20i doctor --online` reads its platforms)"),
        ),
    }
}

/// Free space where the engine keeps images, against `--min-free-disk` or the image's size if larger.
fn disk(info: &EngineInfo, min_free: DiskSize, cached: bool, remote: Option<&Remote>) -> Line {
    let host = format!("linux/{}", info.arch);
    let size = remote
        .and_then(|r| r.sizes.iter().find(|(p, _)| p == &host).map(|(_, s)| *s))
        .filter(|_| !cached);
    let needed = min_free.0.max(size.unwrap_or(0) * 2);
    let why = match size {
        Some(size) => format!(
            "twice the image's {} to pull and unpack it, at least --min-free-disk {min_free}",
            human_size(size)
        ),
        None => format!("--min-free-disk {min_free}"),
    };
    match free_bytes(Path::new(&info.root_dir)) {
        None => Line::warning(
            "disk",
            format!("the free space of {} (the engine's) cannot be read from here", info.root_dir),
            format!("make sure the engine's disk has {} free", human_size(needed)),
        ),
        Some(free) if free < needed => Line::failed(
            "disk",
            format!("{} free at {}, less than {} ({why})", human_size(free), info.root_dir, human_size(needed)),
            "free disk space (`20i prune --apply` removes this launcher's old images; `docker system df` shows the rest)",
        ),
        Some(free) => Line::ok("disk", format!("{} free at {} ({why})", human_size(free), info.root_dir)),
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`.
#[cfg(unix)]
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string, `stat` a buffer of the right type that statvfs fills on success.
    let result = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_path: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let table: &[(&str, Option<u64>)] = &[
            ("2G", Some(2_000_000_000)),
            ("2GB", Some(2_000_000_000)),
            ("500m", Some(500_000_000)),
            ("1.5T", Some(1_500_000_000_000)),
            ("0", Some(0)),
            ("1234", Some(1234)),
            ("2X", None),
            ("-1G", None),
            ("G", None),
            ("", None),
            ("NaNG", None),
        ];
        for (text, expected) in table {
            assert_eq!(
                text.parse::<DiskSize>().ok().map(|s| s.0),
                *expected,
                "{text}"
            );
        }
    }

    #[test]
    fn engine_info() {
        let info = parse_info(
            br#"{"ServerVersion":"26.1.5+dfsg1","Architecture":"x86_64","Driver":"overlayfs",
                "DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]],"DockerRootDir":"/var/lib/docker"}"#,
        )
        .unwrap();
        assert_eq!(
            info,
            EngineInfo {
                version: "26.1.5+dfsg1".into(),
                arch: "amd64".into(),
                containerd_store: true,
                root_dir: "/var/lib/docker".into()
            }
        );
        let classic = parse_info(br#"{"Architecture":"aarch64","Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]]}"#).unwrap();
        assert_eq!(
            (classic.arch.as_str(), classic.containerd_store),
            ("arm64", false)
        );
    }

    #[test]
    fn manifest_sizes() {
        let manifest = br#"{"config":{"size":100},"layers":[{"size":1000},{"size":2000}]}"#;
        assert_eq!(image_size(manifest), Some(3100));
        assert_eq!(image_size(b"{}"), None);
    }
}
