//! Preflight: the cheap local checks `20i start` runs before it pulls anything (the configured host ports are
//! free, the engine is new enough, the containers' users can read CODE_DIR), each a [`Line`] that `20i doctor`
//! prints too. A failure stops the start with [`crate::exit::PREFLIGHT`], naming the check and what to do.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use stack_images::docker::DockerCommand;

use crate::{config::Config, engine::Engine, exit::Exit, values::Port};

/// The oldest engine the stack runs on: the compose file's `start_interval` health checks need Docker 25.
pub const MINIMUM_ENGINE: (u32, u32) = (25, 0);

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Failed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Failed => "failed",
        })
    }
}

/// One check's outcome: what was checked, what was found, and what to do when it is not ok.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    pub check: String,
    pub status: Status,
    pub found: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Line {
    pub fn ok(check: impl Into<String>, found: impl Into<String>) -> Line {
        Line {
            check: check.into(),
            status: Status::Ok,
            found: found.into(),
            fix: None,
        }
    }

    pub fn warning(
        check: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            check: check.into(),
            status: Status::Warning,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn failed(
        check: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            check: check.into(),
            status: Status::Failed,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
}

/// `failed  ports  HOST_PORT=8080 is taken by …: set …`.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {:<16} {}", self.status, self.check, self.found)?;
        if let Some(fix) = &self.fix {
            write!(f, ": {fix}")?;
        }
        Ok(())
    }
}

/// The published ports, by variable.
pub fn ports_of(config: &Config) -> [(&'static str, Port); 3] {
    [
        ("HOST_PORT", config.host_port),
        ("MYSQL_PORT", config.mysql_port),
        ("PMA_PORT", config.pma_port),
    ]
}

/// What holds a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A container of this very project: the stack is already up, and `up` keeps it.
    Ours(String),
    Container(String),
    Process {
        pid: u32,
        name: String,
    },
    /// Something listens, and this user may not see what.
    Unknown,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Ours(name) => write!(f, "this stack's container {name}"),
            Holder::Container(name) => write!(f, "the container {name}"),
            Holder::Process { pid, name } => write!(f, "the process {name} (pid {pid})"),
            Holder::Unknown => f.write_str("a process this user cannot see"),
        }
    }
}

/// Whether `address:port` can be listened on: `Err` with the reason when not.
fn listenable(address: Ipv4Addr, port: u16) -> Result<(), std::io::Error> {
    TcpListener::bind(SocketAddrV4::new(address, port)).map(drop)
}

/// The ports check: each published port free, or held by this stack's own containers (a start of a running
/// stack). The holder is looked for (one `docker ps`) only when a port is taken.
pub fn ports(config: &Config, engine: &Engine) -> Vec<Line> {
    let mut containers: Option<Vec<PublishedBy>> = None;
    ports_of(config)
        .into_iter()
        .map(|(name, port)| {
            let check = format!("port {name}");
            let setting = format!("{name}={port}");
            let taken = match listenable(config.bind_address, port.number()) {
                Ok(()) => false,
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => true,
                // Not root, a port under 1024: only the kernel's table says whether someone listens.
                Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                    listening_inodes(port.number()).is_some_and(|i| !i.is_empty())
                }
                Err(error) => {
                    return Line::failed(
                        check,
                        format!("{setting} cannot be listened on at BIND_ADDRESS={}: {error}", config.bind_address),
                        "set BIND_ADDRESS to an address of this machine (127.0.0.1 for this machine only)",
                    )
                }
            };
            if !taken {
                return Line::ok(check, format!("{setting} is free on {}", config.bind_address));
            }
            let containers = containers.get_or_insert_with(|| published(engine));
            let holder = holder(containers, &config.project.to_string(), port.number());
            match holder {
                Holder::Ours(_) => Line::ok(check, format!("{setting} is held by {holder}")),
                _ => Line::failed(
                    check,
                    format!("{setting} is taken on {} by {holder}", config.bind_address),
                    format!(
                        "stop it, or give the stack another port: --set {name}=<free port> (or {name} in the \
                         project's .20i-local)"
                    ),
                ),
            }
        })
        .collect()
}

/// A running container and the host ports it publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedBy {
    pub name: String,
    pub project: String,
    pub ports: Vec<u16>,
}

/// `docker ps`'s running containers with their compose project and published host ports; none when docker does
/// not answer (the port is then named by its process).
fn published(engine: &Engine) -> Vec<PublishedBy> {
    let command = DockerCommand::new([
        "ps",
        "--format",
        "{{.Names}}\t{{.Label \"com.docker.compose.project\"}}\t{{.Ports}}",
    ]);
    engine
        .output(&command)
        .map(|bytes| parse_published(&String::from_utf8_lossy(&bytes)))
        .unwrap_or_default()
}

/// Reads `NAME\tPROJECT\t127.0.0.1:8080->80/tcp, :::3306->3306/tcp` lines.
pub fn parse_published(text: &str) -> Vec<PublishedBy> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?.trim().to_owned();
            let project = fields.next().unwrap_or("").trim().to_owned();
            let ports = fields
                .next()
                .unwrap_or("")
                .split(',')
                .filter_map(|mapping| {
                    let (host, _) = mapping.trim().split_once("->")?;
                    let (_, port) = host.rsplit_once(':')?;
                    // A range (`8000-8010`) publishes each of its ports.
                    match port.split_once('-') {
                        Some((from, to)) => Some((from.parse().ok()?..=to.parse().ok()?).collect()),
                        None => Some(vec![port.parse().ok()?]),
                    }
                })
                .flatten()
                .collect();
            (!name.is_empty()).then_some(PublishedBy {
                name,
                project,
                ports,
            })
        })
        .collect()
}

/// Who holds `port`: a container publishing it, else the process whose socket listens on it.
fn holder(containers: &[PublishedBy], project: &str, port: u16) -> Holder {
    if let Some(container) = containers.iter().find(|c| c.ports.contains(&port)) {
        return if container.project == project {
            Holder::Ours(container.name.clone())
        } else {
            Holder::Container(container.name.clone())
        };
    }
    listening_inodes(port)
        .and_then(|inodes| process_of(&inodes))
        .unwrap_or(Holder::Unknown)
}

/// The socket inodes listening on `port` (IPv4 and IPv6), from `/proc/net/tcp*`; `None` where there is no /proc.
fn listening_inodes(port: u16) -> Option<Vec<u64>> {
    let mut inodes = Vec::new();
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        inodes.extend(parse_listening(&text, port));
    }
    read_any.then_some(inodes)
}

/// The inodes of `/proc/net/tcp` lines in state LISTEN (`0A`) whose local port is `port`.
pub fn parse_listening(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let listening = *fields.get(3)? == "0A";
            let matches = u16::from_str_radix(hex_port, 16).ok()? == port;
            (listening && matches).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// The first process with a file descriptor on one of `inodes`, where `/proc/PID/fd` is readable.
fn process_of(inodes: &[u64]) -> Option<Holder> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| "?".to_owned());
                return Some(Holder::Process { pid, name });
            }
        }
    }
    None
}

/// `26.1.5+dfsg1` as (26, 1).
pub fn parse_engine_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The engine's version against [`MINIMUM_ENGINE`]: `docker version` through the door.
pub fn engine(engine: &Engine) -> Line {
    let command = DockerCommand::new(["version", "--format", "{{.Server.Version}}"]);
    match engine.output(&command) {
        Err(error) => Line::failed(
            "engine",
            format!(
                "the Docker engine does not answer ({})",
                error.kind.describe()
            ),
            "start Docker (or point DOCKER_HOST at a running engine), then run `20i doctor` again",
        ),
        Ok(bytes) => engine_line(String::from_utf8_lossy(&bytes).trim()),
    }
}

/// The engine line for a version as `docker version` prints it.
pub fn engine_line(version: &str) -> Line {
    let (major, minor) = MINIMUM_ENGINE;
    match parse_engine_version(version) {
        Some(found) if found >= MINIMUM_ENGINE => {
            Line::ok("engine", format!("Docker engine {version} answers (at least {major}.{minor} needed)"))
        }
        Some(_) => Line::failed(
            "engine",
            format!("Docker engine {version} is older than {major}.{minor}, the oldest the stack's health checks run on"),
            format!("upgrade Docker Engine to {major}.{minor} or later"),
        ),
        None => Line::warning(
            "engine",
            format!("Docker engine version `{version}` is not one this launcher can read"),
            format!("make sure it is {major}.{minor} or later"),
        ),
    }
}

/// A user a container runs the site's files as.
#[derive(Clone, Copy, Debug)]
pub struct ContainerUser {
    pub service: &'static str,
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
}

/// nginx's workers (nginx:*-alpine: `nginx`, 101) and PHP-FPM's pool (php:*-fpm-alpine: `www-data`, 82).
pub const CONTAINER_USERS: [ContainerUser; 2] = [
    ContainerUser {
        service: "nginx",
        name: "nginx",
        uid: 101,
        gid: 101,
    },
    ContainerUser {
        service: "PHP-FPM",
        name: "www-data",
        uid: 82,
        gid: 82,
    },
];

/// The permission bits (`rwx` as 4/2/1) `user` has on a file of `mode` owned by `uid:gid`.
pub fn access(mode: u32, uid: u32, gid: u32, user: &ContainerUser) -> u32 {
    if user.uid == uid {
        (mode >> 6) & 7
    } else if user.gid == gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    }
}

/// CODE_DIR readable and traversable by the containers' users. Docker mounts the folder itself, so the folders
/// above it do not matter (a site of mode 0755 under a 0750 home is served); the folder and each entry at its top
/// (where `index.php` is) do: the first one a container user cannot read is named, with the `chmod` that fixes it.
/// Linux only: Docker Desktop's file sharing (macOS, Windows) does not go by these bits.
#[cfg(target_os = "linux")]
pub fn code_dir(dir: &Path) -> Line {
    use std::os::unix::fs::MetadataExt;
    let check = "CODE_DIR";
    let metadata = match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => metadata,
        Ok(_) => {
            return Line::failed(
                check,
                format!("{} is not a folder", dir.display()),
                "set CODE_DIR to the site's folder",
            )
        }
        Err(error) => {
            return Line::failed(
                check,
                format!("{} cannot be read: {error}", dir.display()),
                "set CODE_DIR to the site's folder (the current folder by default)",
            )
        }
    };
    for user in &CONTAINER_USERS {
        let bits = access(metadata.mode(), metadata.uid(), metadata.gid(), user);
        if bits & 5 != 5 {
            return Line::failed(
                check,
                format!(
                    "{} (mode {:04o}) cannot be read by {} in its container (user {}, uid {}): it would answer 404 \
                     for every page",
                    dir.display(),
                    metadata.mode() & 0o7777,
                    user.service,
                    user.name,
                    user.uid
                ),
                format!("run `chmod o+rx -- {}`", shell_word(dir)),
            );
        }
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().collect())
        .unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let needed = if metadata.is_dir() { 5 } else { 4 };
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        for user in &CONTAINER_USERS {
            let bits = access(metadata.mode(), metadata.uid(), metadata.gid(), user);
            if bits & needed != needed && !hidden {
                let fix = if metadata.is_dir() { "o+rx" } else { "o+r" };
                return Line::warning(
                    check,
                    format!(
                        "{} is readable by the containers, but {} (mode {:04o}) is not, by {} (uid {})",
                        dir.display(),
                        entry.path().display(),
                        metadata.mode() & 0o7777,
                        user.service,
                        user.uid
                    ),
                    format!("if the site needs it, run `chmod {fix} -- {}`", shell_word(&entry.path())),
                );
            }
        }
    }
    Line::ok(
        check,
        format!(
            "{} is readable by nginx (uid 101) and PHP-FPM (uid 82)",
            dir.display()
        ),
    )
}

#[cfg(not(target_os = "linux"))]
pub fn code_dir(dir: &Path) -> Line {
    Line::ok(
        "CODE_DIR",
        format!(
            "{} (permissions are not checked on this system)",
            dir.display()
        ),
    )
}

/// A path as a shell reads it back.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// How long a passed engine check is trusted by `20i start` (a file in `~/.20i/state`): one `docker version`
/// fewer on every cached start.
const ENGINE_CHECK_FOR: Duration = Duration::from_secs(24 * 3600);

/// The engine check, or its recent pass for the same DOCKER_HOST.
fn engine_cached(config: &Config, engine_handle: &Engine) -> Line {
    let file = config.user_dir.join("state").join("engine-ok");
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let fresh = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .is_ok_and(|at| {
            SystemTime::now()
                .duration_since(at)
                .is_ok_and(|age| age < ENGINE_CHECK_FOR)
        });
    if fresh
        && std::fs::read_to_string(&file)
            .is_ok_and(|text| text.lines().next() == Some(host.as_str()))
    {
        return Line::ok("engine", "checked within the day");
    }
    let line = engine(engine_handle);
    if line.status == Status::Ok {
        // A record, not a dependency: failing to write it only costs the check next time.
        let _ = std::fs::create_dir_all(file.parent().expect("in state"));
        let _ = std::fs::write(&file, format!("{host}\n"));
    }
    line
}

/// The checks `20i start` runs before it gets the image: a failure stops it before any pull.
pub fn before_start(config: &Config, engine: &Engine) -> anyhow::Result<()> {
    let mut lines = vec![engine_cached(config, engine)];
    if lines[0].status != Status::Failed {
        lines.extend(ports(config, engine));
    }
    lines.push(code_dir(&config.code_dir));
    let failed: Vec<String> = lines
        .iter()
        .filter(|l| l.status == Status::Failed)
        .map(ToString::to_string)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Exit::preflight(format!(
        "a check before the start failed, so nothing was pulled or started (`20i doctor` checks everything):\n{}",
        failed.join("\n")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports() {
        let text = "web-1\tsite\t127.0.0.1:8080->80/tcp\n\
                    db\t\t0.0.0.0:3306->3306/tcp, :::3306->3306/tcp\n\
                    range\tx\t0.0.0.0:9000-9002->9000-9002/tcp\n\
                    quiet\t\t\n";
        let table: &[(u16, &str, Holder)] = &[
            (8080, "site", Holder::Ours("web-1".into())),
            (8080, "other", Holder::Container("web-1".into())),
            (3306, "site", Holder::Container("db".into())),
            (9001, "site", Holder::Container("range".into())),
        ];
        let containers = parse_published(text);
        assert_eq!(containers.len(), 4);
        for (port, project, expected) in table {
            assert_eq!(
                &holder(&containers, project, *port),
                expected,
                "{port} {project}"
            );
        }
    }

    #[test]
    fn listening_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
           1: 0100007F:1F90 0100007F:D3C8 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0\n\
           2: 00000000:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0\n";
        assert_eq!(parse_listening(table, 8080), vec![4242]);
        assert_eq!(parse_listening(table, 3306), vec![77]);
        assert!(parse_listening(table, 80).is_empty());
    }

    #[test]
    fn engine_versions() {
        let table: &[(&str, Status)] = &[
            ("26.1.5+dfsg1", Status::Ok),
            ("25.0.0", Status::Ok),
            ("28.2.2", Status::Ok),
            ("24.0.9", Status::Failed),
            ("20.10.24+dfsg1", Status::Failed),
            ("dev", Status::Warning),
        ];
        for (version, status) in table {
            let line = engine_line(version);
            assert_eq!(line.status, *status, "{version}: {line}");
            assert!(line.status == Status::Ok || line.fix.is_some());
        }
    }

    #[test]
    fn permission_bits() {
        let nginx = &CONTAINER_USERS[0];
        let table: &[(u32, u32, u32, u32)] = &[
            (0o755, 0, 0, 7 & 5),
            (0o700, 0, 0, 0),
            (0o750, 0, 101, 5),
            (0o700, 101, 0, 7),
            (0o705, 1000, 1000, 5),
        ];
        for (mode, uid, gid, bits) in table {
            assert_eq!(
                access(*mode, *uid, *gid, nginx),
                *bits,
                "{mode:o} {uid}:{gid}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn code_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let set = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let root = tempfile::tempdir().unwrap();
        let site = root.path().join("my site");
        std::fs::create_dir(&site).unwrap();
        std::fs::write(site.join("index.php"), "<?php").unwrap();
        set(&site.join("index.php"), 0o644);
        set(root.path(), 0o750);
        set(&site, 0o755);
        assert_eq!(code_dir(&site).status, Status::Ok);
        set(&site.join("index.php"), 0o600);
        let line = code_dir(&site);
        assert_eq!(line.status, Status::Warning, "{line}");
        assert!(line.fix.unwrap().contains("chmod o+r -- '"));
        set(&site, 0o700);
        let line = code_dir(&site);
        assert_eq!(line.status, Status::Failed, "{line}");
        assert_eq!(
            line.fix.unwrap(),
            format!("run `chmod o+rx -- '{}'`", site.display())
        );
        assert_eq!(code_dir(&root.path().join("absent")).status, Status::Failed);
    }
}
