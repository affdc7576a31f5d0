//! The one door to docker: every `docker` invocation of the project is a [`DockerCommand`] run here, and every
//! failure comes back classified, so callers decide on a [`FailureKind`] rather than on a string they grep.

use std::{
    fmt,
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use xshell::{cmd, Shell};

use crate::{engine_api, Digest, IndexSummary};

/// One `docker` invocation as data: printed by `--dry-run`, run by [`Docker`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerCommand {
    pub args: Vec<String>,
}

impl DockerCommand {
    pub fn new<I, S>(args: I) -> DockerCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        DockerCommand {
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// `docker buildx imagetools inspect --raw REF`: the manifest bytes exactly as the registry serves them.
    pub fn inspect_raw(reference: &str) -> DockerCommand {
        DockerCommand::new(["buildx", "imagetools", "inspect", "--raw", reference])
    }
}

/// Shell-quoted, so a printed command can be pasted into a terminal.
impl fmt::Display for DockerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_shell_quoted(f, "docker", &self.args)
    }
}

/// `program` and its arguments as a shell reads them back: plain words as they are, anything else in single
/// quotes. How every command this project prints (docker's, cosign's) is shown.
pub(crate) fn write_shell_quoted(
    f: &mut fmt::Formatter<'_>,
    program: &str,
    args: &[String],
) -> fmt::Result {
    f.write_str(program)?;
    for arg in args {
        let plain = !arg.is_empty()
            && arg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b));
        if plain {
            write!(f, " {arg}")?;
        } else {
            write!(f, " '{}'", arg.replace('\'', r"'\''"))?;
        }
    }
    Ok(())
}

/// Why a docker command failed, as far as its output tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The daemon or the registry could not be reached or could not serve the request (offline, connection
    /// refused, DNS, timeout, HTTP 5xx): worth a retry.
    Unreachable,
    /// The registry asked us to slow down (HTTP 429, Docker Hub's pull limit).
    RateLimited,
    /// Credentials are missing or refused.
    Unauthorized,
    /// No such repository, tag or manifest.
    NotFound,
    /// The content did not match its digest.
    DigestMismatch,
    /// The registry's TLS certificate is not trusted (unknown issuer, expired, another name): a CA is missing
    /// from docker's `certs.d` or the system store, or something between here and the registry rewrites TLS.
    /// Never worth a retry.
    Certificate,
    /// A watched command printed nothing for its stall bound and was stopped ([`Docker::watch`]): a registry
    /// that accepted the connection and went silent.
    Stalled,
    /// A watched command ran past its total bound and was stopped ([`Docker::watch`]).
    TimedOut,
    /// Anything else: the message says what.
    Other,
}

impl FailureKind {
    /// Every kind, for tables that must say what happens to each.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Unreachable,
        FailureKind::RateLimited,
        FailureKind::Unauthorized,
        FailureKind::NotFound,
        FailureKind::DigestMismatch,
        FailureKind::Certificate,
        FailureKind::Stalled,
        FailureKind::TimedOut,
        FailureKind::Other,
    ];
}

/// How one kind of failure shows in docker's, buildx's and containerd's output, lowercased.
struct Signs {
    kind: FailureKind,
    /// Error codes of the distribution spec as docker prints them (`MANIFEST_UNKNOWN` → `manifest unknown`),
    /// followed by `:` or the end of the line.
    codes: &'static [&'static str],
    /// HTTP statuses, counted only where docker reports a registry's answer (`unexpected status …: 503 …`).
    statuses: &'static [&'static str],
    /// Phrases docker and containerd print for this failure and for nothing else.
    phrases: &'static [&'static str],
}

/// Checked in this order: an auth failure often says "not found" too, and a rate limit comes with a status.
const SIGNS: &[Signs] = &[
    // Before everything: "tls: failed to verify certificate" also says "x509: certificate signed by unknown
    // authority", which no other kind's phrase matches, and it must never be retried as unreachable.
    Signs {
        kind: FailureKind::Certificate,
        codes: &[],
        statuses: &[],
        phrases: &[
            "x509: certificate signed by unknown authority",
            "x509: certificate is valid for",
            "x509: certificate has expired",
            "tls: failed to verify certificate",
            // A TLS server answering plain HTTP: a client allowed to fall back to HTTP (cosign with
            // --allow-http-registry on loopback) did so because it did not trust the certificate, and says only
            // what the fallback met.
            "client sent an http request to an https server",
        ],
    },
    Signs {
        kind: FailureKind::RateLimited,
        codes: &["toomanyrequests"],
        statuses: &["429 too many requests"],
        phrases: &["you have reached your pull rate limit"],
    },
    Signs {
        kind: FailureKind::Unauthorized,
        codes: &["unauthorized", "denied"],
        statuses: &["401 unauthorized", "403 forbidden"],
        phrases: &[
            "authentication required",
            "no basic auth credentials",
            "pull access denied",
            "push access denied",
            "insufficient_scope",
        ],
    },
    Signs {
        kind: FailureKind::DigestMismatch,
        codes: &["digest invalid", "blob unknown to registry"],
        statuses: &[],
        phrases: &[
            "unexpected commit digest",
            "digest mismatch",
            "filesystem layer verification failed",
            "failed size validation",
        ],
    },
    Signs {
        kind: FailureKind::NotFound,
        codes: &["manifest unknown", "name unknown"],
        statuses: &["404 not found"],
        phrases: &["no such image:"],
    },
    Signs {
        kind: FailureKind::Unreachable,
        codes: &[],
        statuses: &[
            "500 internal server error",
            "502 bad gateway",
            "503 service unavailable",
            "504 gateway timeout",
        ],
        phrases: &[
            "connection refused",
            "connection reset by peer",
            "no such host",
            "network is unreachable",
            "i/o timeout",
            "tls handshake timeout",
            "temporary failure in name resolution",
            "cannot connect to the docker daemon",
            "context deadline exceeded",
            "unexpected eof",
            // A registry that closed the connection without an answer: `failed to do request: Head "…": EOF`.
            "\": eof",
        ],
    },
];

impl FailureKind {
    /// Reads docker's and buildx's error output for the registry's error codes, the HTTP statuses docker reports
    /// and docker's own phrases: never for a bare "not found" or "does not exist", which a build prints for a
    /// missing file or a network device too.
    pub fn classify(stderr: &str) -> FailureKind {
        let text = stderr.to_ascii_lowercase();
        let has_code = |code: &str| {
            text.match_indices(code).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let after = text[at + code.len()..].chars().next();
                matches!(before, None | Some(' ' | ':' | '\n' | '"'))
                    && matches!(after, None | Some(':' | '\n' | '"'))
            })
        };
        let has_status = |status: &str| {
            text.lines().any(|line| {
                line.find(status).is_some_and(|at| {
                    let before = &line[..at];
                    before.contains("unexpected status")
                        || before.contains("status code")
                        || before.contains("response status")
                })
            })
        };
        // buildx names what it could not find as `ERROR: <reference>: not found`.
        let reference_not_found = text.lines().any(|line| {
            line.strip_prefix("error: ")
                .and_then(|rest| rest.strip_suffix(": not found"))
                .is_some_and(|reference| !reference.is_empty() && !reference.contains(' '))
                // `docker pull` with the containerd image store:
                // `failed to resolve reference "<reference>": <reference>: not found`.
                || line.split_once("failed to resolve reference \"").is_some_and(|(_, rest)| {
                    rest.split_once("\": ")
                        .and_then(|(reference, after)| after.strip_suffix(": not found").map(|r| (reference, r)))
                        .is_some_and(|(reference, repeated)| reference == repeated)
                })
        });
        for signs in SIGNS {
            if signs.codes.iter().any(|c| has_code(c))
                || signs.statuses.iter().any(|s| has_status(s))
                || signs.phrases.iter().any(|p| text.contains(p))
            {
                return signs.kind;
            }
            if signs.kind == FailureKind::NotFound && reference_not_found {
                return FailureKind::NotFound;
            }
        }
        FailureKind::Other
    }

    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::Unreachable => "unreachable",
            FailureKind::RateLimited => "rate limited",
            FailureKind::Unauthorized => "unauthorised",
            FailureKind::NotFound => "not found",
            FailureKind::DigestMismatch => "digest mismatch",
            FailureKind::Certificate => "certificate not trusted",
            FailureKind::Stalled => "stalled",
            FailureKind::TimedOut => "timed out",
            FailureKind::Other => "failed",
        }
    }
}

/// Runs a docker command (through `run`) until it succeeds, fails for good, or `policy`'s attempts are spent:
/// only what is transient (unreachable, rate limited) is tried again, after the policy's backoff, saying so on
/// stderr. The one retry loop for docker commands that talk to a registry (a push that meets distribution 2.8's
/// 500 on a HEAD racing a tag write, a registry restarting): the release's, the bench's and the fixtures'.
pub fn with_retries<T>(
    policy: &crate::registry::Policy,
    mut run: impl FnMut() -> Result<T, DockerError>,
) -> Result<T, DockerError> {
    let mut failed = 0;
    loop {
        match run() {
            Ok(value) => return Ok(value),
            Err(error)
                if failed + 1 < policy.attempts
                    && matches!(
                        error.kind,
                        FailureKind::Unreachable | FailureKind::RateLimited
                    ) =>
            {
                failed += 1;
                let wait =
                    policy.wait_before_retry(failed, None, crate::registry::policy::jitter());
                eprintln!(
                    "    {} ({}); retrying in {:.1} s",
                    error.command,
                    error.kind.describe(),
                    wait.as_secs_f64()
                );
                std::thread::sleep(wait);
            }
            Err(error) => return Err(error),
        }
    }
}

/// The last `lines` non-blank lines of a command's stderr, indented under the line that names the command: how
/// every failed command (docker's, cosign's) shows what it said.
pub(crate) fn stderr_tail(stderr: &str, lines: usize) -> String {
    let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    said[said.len().saturating_sub(lines)..].join("\n  ")
}

/// A failed docker command: what ran, why it failed, and the tail of what it said.
#[derive(Debug)]
pub struct DockerError {
    pub command: String,
    pub kind: FailureKind,
    pub stderr: String,
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = stderr_tail(&self.stderr, 6);
        write!(
            f,
            "`{}` failed ({}):\n  {tail}",
            self.command,
            self.kind.describe()
        )
    }
}

impl std::error::Error for DockerError {}

/// How long a watched command may stay silent, and run in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The longest time without a byte of output.
    pub stall: Duration,
    /// The longest run.
    pub total: Duration,
}

/// A watched command's output as it comes: which stream, and the bytes read.
enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
    Closed,
}

/// What a registry serves for a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Absent,
    Index(IndexSummary),
    /// Not an index: a push of an index that was interrupted leaves a platform manifest at the tag.
    Manifest(Digest),
}

/// Runs docker commands; the only place that does. A clone is a second handle on the same client, journal and
/// config, for another thread.
pub struct Docker {
    sh: Shell,
    binary: PathBuf,
    /// When set, every command is appended to this file before it runs: what a run really did.
    journal: Option<PathBuf>,
    /// When set, `DOCKER_CONFIG` for every command: its own logins, leaving the user's untouched.
    config_dir: Option<PathBuf>,
}

impl Docker {
    /// Uses `docker` from PATH, or `$DOCKER` when set (tests point it at a specific client).
    pub fn new() -> anyhow::Result<Docker> {
        let sh = Shell::new()?;
        let binary = std::env::var_os("DOCKER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("docker"));
        Ok(Docker {
            sh,
            binary,
            journal: None,
            config_dir: None,
        })
    }

    /// Another handle with the same client, journal and config, for another thread (a shell is not shared).
    pub fn try_clone(&self) -> anyhow::Result<Docker> {
        let mut docker = Docker::new()?;
        docker.binary = self.binary.clone();
        docker.journal = self.journal.clone();
        if let Some(dir) = &self.config_dir {
            docker = docker.with_config_dir(dir);
        }
        Ok(docker)
    }

    /// Runs every command with `DOCKER_CONFIG=dir`: logins made through it stay in `dir`.
    pub fn with_config_dir(mut self, dir: &Path) -> Docker {
        self.sh.set_var("DOCKER_CONFIG", dir);
        self.config_dir = Some(dir.to_path_buf());
        self
    }

    /// `docker login HOST` with the password on standard input: it never appears in a command line or output.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Result<(), DockerError> {
        let command = DockerCommand::new(["login", host, "--username", user, "--password-stdin"]);
        self.record(&command);
        let binary = &self.binary;
        let output = cmd!(
            self.sh,
            "{binary} login {host} --username {user} --password-stdin"
        )
        .stdin(password)
        .quiet()
        .ignore_status()
        .output()
        .map_err(|error| Docker::not_started(&command, error))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        Err(DockerError {
            command: command.to_string(),
            kind: FailureKind::classify(&stderr),
            stderr,
        })
    }

    /// Records every command it runs, one line each, in `path`.
    pub fn with_journal(mut self, path: &Path) -> Docker {
        self.journal = Some(path.to_path_buf());
        self
    }

    fn record(&self, command: &DockerCommand) {
        self.record_line(&command.to_string());
    }

    /// Appends a line to the journal: what a run did that is not a docker command (an in-process registry
    /// request), so the journal stays the whole record, in order.
    pub fn record_line(&self, line: &str) {
        if let Some(path) = &self.journal {
            // The journal is a record, not a dependency: failing to write it must not fail the command.
            // One write of the whole line: an append that small is never split, so lines written by concurrent
            // steps never interleave (`writeln!` would write the text and the newline separately).
            if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = file.write_all(format!("{line}\n").as_bytes());
            }
        }
    }

    fn not_started(command: &DockerCommand, error: impl fmt::Display) -> DockerError {
        DockerError {
            command: command.to_string(),
            kind: FailureKind::Unreachable,
            stderr: format!("{error}: is docker installed? run `make setup`"),
        }
    }

    /// Runs a command and returns its standard output.
    pub fn output(&self, command: &DockerCommand) -> Result<Vec<u8>, DockerError> {
        self.output_with_env(command, &[])
    }

    /// Runs a command with extra environment variables (how `docker compose` gets the values it interpolates)
    /// and returns its standard output.
    pub fn output_with_env(
        &self,
        command: &DockerCommand,
        env: &[(String, String)],
    ) -> Result<Vec<u8>, DockerError> {
        self.record(command);
        let binary = &self.binary;
        let args = &command.args;
        let result = cmd!(self.sh, "{binary} {args...}")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .quiet()
            .ignore_status()
            .output();
        let output = match result {
            Ok(output) => output,
            Err(error) => return Err(Docker::not_started(command, error)),
        };
        if output.status.success() {
            Ok(output.stdout)
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            Err(DockerError {
                command: command.to_string(),
                kind: FailureKind::classify(&stderr),
                stderr,
            })
        }
    }

    /// Runs a command for its effect; its output is kept for the error only.
    pub fn run(&self, command: &DockerCommand) -> Result<(), DockerError> {
        self.output(command).map(drop)
    }

    /// Runs a long command (a build) with everything it prints appended to `log`, so a terminal stays readable
    /// and the whole output is there to read; a failure carries the log's tail.
    pub fn run_logged(&self, command: &DockerCommand, log: &Path) -> Result<(), DockerError> {
        self.record(command);
        let open = || OpenOptions::new().create(true).append(true).open(log);
        let (stdout, stderr) = match (open(), open()) {
            (Ok(stdout), Ok(stderr)) => (stdout, stderr),
            (Err(error), _) | (_, Err(error)) => {
                return Err(Docker::not_started(
                    command,
                    format!("opening {}: {error}", log.display()),
                ))
            }
        };
        let mut process = Command::new(&self.binary);
        if let Some(dir) = &self.config_dir {
            process.env("DOCKER_CONFIG", dir);
        }
        let status = process
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .map_err(|error| Docker::not_started(command, error))?;
        if status.success() {
            return Ok(());
        }
        // A build log is long: the lines that say what failed, then where the rest is.
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("error:"))
            .collect();
        let errors = &errors[errors.len().saturating_sub(5)..];
        let stderr = format!("{}\n(full output: {})", errors.join("\n"), log.display());
        Err(DockerError {
            command: command.to_string(),
            kind: FailureKind::classify(&stderr),
            stderr,
        })
    }

    /// What an `inspect --raw` command finds: nothing, an index, or a single manifest (which is what a tag holds
    /// for a moment while buildx pushes an index: the platform manifests go to the tag first, the index last).
    pub fn find(&self, inspect_raw: &DockerCommand) -> Result<Found, DockerError> {
        match self.output(inspect_raw) {
            Ok(bytes) => match IndexSummary::parse(&bytes) {
                Ok(index) => Ok(Found::Index(index)),
                Err(_) => Ok(Found::Manifest(Digest::of(&bytes))),
            },
            Err(error) if error.kind == FailureKind::NotFound => Ok(Found::Absent),
            Err(error) => Err(error),
        }
    }

    /// Compressed size of one platform's image: its config and layers as the registry stores them.
    pub fn image_size(&self, repository: &str, manifest: &Digest) -> anyhow::Result<u64> {
        let reference = format!("{repository}@{manifest}");
        let bytes = self.output(&DockerCommand::inspect_raw(&reference))?;
        crate::digest::compressed_size(&bytes)
            .map_err(|e| e.context(format!("reading the manifest of {reference}")))
    }

    /// Runs a command that reports its progress as it goes (`docker pull`), handing each line of its standard
    /// output to `on_line` as it arrives. Any output counts as progress: a command silent for `bounds.stall`, or
    /// still running after `bounds.total`, is killed and fails as [`FailureKind::Stalled`] or
    /// [`FailureKind::TimedOut`], so a registry that never answers cannot hang the caller.
    pub fn watch(
        &self,
        command: &DockerCommand,
        bounds: Bounds,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), DockerError> {
        self.record(command);
        let mut process = Command::new(&self.binary);
        if let Some(dir) = &self.config_dir {
            process.env("DOCKER_CONFIG", dir);
        }
        let mut child = process
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| Docker::not_started(command, error))?;
        let (sender, chunks) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let readers = [
            forward_chunks(stdout, sender.clone(), Chunk::Out),
            forward_chunks(stderr, sender, Chunk::Err),
        ];
        let started = Instant::now();
        let deadline = started + bounds.total;
        let (mut pending, mut said) = (Vec::new(), Vec::new());
        let mut open = readers.len();
        let mut last_output = started;
        let stopped = loop {
            if open == 0 {
                break None;
            }
            let now = Instant::now();
            let (wait, kind) = if deadline <= last_output + bounds.stall {
                (
                    deadline.saturating_duration_since(now),
                    FailureKind::TimedOut,
                )
            } else {
                (
                    (last_output + bounds.stall).saturating_duration_since(now),
                    FailureKind::Stalled,
                )
            };
            match chunks.recv_timeout(wait) {
                Ok(Chunk::Out(bytes)) => {
                    last_output = Instant::now();
                    pending.extend_from_slice(&bytes);
                    while let Some(end) = pending.iter().position(|&b| b == b'\n' || b == b'\r') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let line = String::from_utf8_lossy(&line);
                        if !line.trim().is_empty() {
                            on_line(line.trim_end());
                        }
                    }
                }
                Ok(Chunk::Err(bytes)) => {
                    last_output = Instant::now();
                    said.extend_from_slice(&bytes);
                }
                Ok(Chunk::Closed) => open -= 1,
                Err(mpsc::RecvTimeoutError::Timeout) => break Some(kind),
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            }
        };
        if let Some(kind) = stopped {
            // Killing the client ends the daemon's request too: the engine cancels a pull its client left.
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::from_utf8_lossy(&said).into_owned();
            stderr.push_str(&match kind {
                FailureKind::Stalled => {
                    format!("\nno output for {} s: stopped", bounds.stall.as_secs_f64())
                }
                _ => format!(
                    "\nstill running after {} s: stopped",
                    bounds.total.as_secs_f64()
                ),
            });
            return Err(DockerError {
                command: command.to_string(),
                kind,
                stderr,
            });
        }
        let status = child
            .wait()
            .map_err(|error| Docker::not_started(command, error))?;
        for reader in readers {
            let _ = reader.join();
        }
        if let Ok(line) = std::str::from_utf8(&pending) {
            if !line.trim().is_empty() {
                on_line(line.trim_end());
            }
        }
        if status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&said).into_owned();
        Err(DockerError {
            command: command.to_string(),
            kind: FailureKind::classify(&stderr),
            stderr,
        })
    }

    /// Pulls `reference`, reporting its progress in bytes as it goes: through the engine's API on its unix
    /// socket ([`crate::engine_api`], this door's own part), with the login docker holds for the registry; a
    /// pull that moved no byte for `bounds.stall`, or ran past `bounds.total`, is stopped as
    /// [`FailureKind::Stalled`] or [`FailureKind::TimedOut`]. When the engine is reached another way (TCP, SSH,
    /// a context), `docker pull` runs instead, [watched](Self::watch) line by line as before.
    pub fn pull(
        &self,
        reference: &str,
        bounds: Bounds,
        on_report: &mut dyn FnMut(engine_api::Report<'_>),
    ) -> Result<(), DockerError> {
        let command = DockerCommand::new(["pull", "--", reference]);
        let failed = |kind, stderr: String| DockerError {
            command: command.to_string(),
            kind,
            stderr,
        };
        if reference.is_empty() || reference.starts_with('-') {
            return Err(failed(
                FailureKind::Other,
                format!("`{reference}` is not an image reference"),
            ));
        }
        let socket = match engine_api::Endpoint::from_env() {
            engine_api::Endpoint::Unix(socket) => socket,
            engine_api::Endpoint::Cli { .. } => {
                let mut progress = engine_api::PullProgress::default();
                return self.watch(&command, bounds, &mut |line| {
                    progress.apply_cli_line(line);
                    on_report(engine_api::Report {
                        progress: &progress,
                        quiet_for: Duration::ZERO,
                    });
                });
            }
        };
        self.record_line(&format!("{command} (engine API, {})", socket.display()));
        let header =
            engine_api::registry_auth(self.config_dir.as_deref(), registry_host(reference))
                .map_err(|error| failed(FailureKind::Unauthorized, format!("{error:#}")))?;
        engine_api::pull(&socket, reference, header.as_deref(), bounds, on_report)
            .map_err(|error| failed(error.kind, error.message))
    }

    /// Runs a command attached to the terminal (its output streams, as `logs --follow` needs), with extra
    /// environment variables. Its error output is not captured, so a failure is classified as [`FailureKind::Other`].
    pub fn run_attached(
        &self,
        command: &DockerCommand,
        env: &[(String, String)],
    ) -> Result<(), DockerError> {
        let binary = &self.binary;
        let args = &command.args;
        cmd!(self.sh, "{binary} {args...}")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .quiet()
            .run()
            .map_err(|error| DockerError {
                command: command.to_string(),
                kind: FailureKind::Other,
                stderr: error.to_string(),
            })
    }

    /// Fetches a manifest index and checks it against its own bytes: the digest is sha256 of what was served.
    pub fn inspect_index(&self, reference: &str) -> anyhow::Result<IndexSummary> {
        let bytes = self.output(&DockerCommand::inspect_raw(reference))?;
        IndexSummary::parse(&bytes)
            .map_err(|e| e.context(format!("reading the manifest of {reference}")))
    }

    /// The digest a registry serves for a reference, computed from the raw bytes.
    pub fn digest_of(&self, reference: &str) -> anyhow::Result<Digest> {
        let bytes = self.output(&DockerCommand::inspect_raw(reference))?;
        Ok(Digest::of(&bytes))
    }
}

/// The registry host of a reference as docker reads it: the first component when it names a host (a `.` or a
/// `:`, or `localhost`), else Docker Hub.
fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Reads `stream` until it ends, sending what it reads as it comes, then [`Chunk::Closed`].
fn forward_chunks(
    mut stream: impl std::io::Read + Send + 'static,
    sender: mpsc::Sender<Chunk>,
    wrap: fn(Vec<u8>) -> Chunk,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buffer = [0; 8192];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.send(wrap(buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sender.send(Chunk::Closed);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(stderr: &str, expected: FailureKind) {
        assert_eq!(FailureKind::classify(stderr), expected, "{stderr}");
    }

    #[test]
    fn classifies_real_failure_messages() {
        use FailureKind::*;
        check("Error response from daemon: Get \"https://ghcr.io/v2/\": dial tcp: lookup ghcr.io on 10.0.0.2:53: no such host", Unreachable);
        check("ERROR: failed to do request: Head \"http://127.0.0.1:5000/v2/x/manifests/1\": dial tcp 127.0.0.1:5000: connect: connection refused", Unreachable);
        check("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", Unreachable);
        check(
            "Error response from daemon: toomanyrequests: You have reached your pull rate limit.",
            RateLimited,
        );
        check("Error response from daemon: Head \"https://ghcr.io/v2/o/p/manifests/v1\": unauthorized", Unauthorized);
        check("push access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed", Unauthorized);
        check(
            "ERROR: failed to push: no basic auth credentials",
            Unauthorized,
        );
        check("Error response from daemon: manifest for ghcr.io/o/php-fpm:v9.9.9-php-8.5 not found: manifest unknown: manifest unknown", NotFound);
        check("ERROR: 127.0.0.1:5000/x/y:z: not found", NotFound);
        check("failed commit on ref \"layer-sha256:ab\": unexpected commit digest sha256:cd, expected sha256:ab: failed precondition", DigestMismatch);
        check("ERROR: unexpected status from HEAD request to http://127.0.0.1:5100/v2/a/b/manifests/v1: 500 Internal Server Error", Unreachable);
        check("exit status 1", Other);
        // What classification used to take for "not found", and is not about a registry at all.
        check("ERROR: failed to solve: failed to create endpoint k8x on network bridge: adding interface veth1 to bridge docker0 failed: Device does not exist", Other);
        check(
            "ERROR: failed to solve: failed to compute cache key: \"/php.ini\": not found",
            Other,
        );
        check("E: Failed to fetch http://deb.debian.org/debian/pool/x.deb  404  Not Found [IP: 1.2.3.4 80]", Other);
        check("ERROR: failed to solve: process \"/bin/sh -c php -m | grep -q gd\" did not complete successfully: exit code: 1", Other);
        check(
            "curl: (6) Could not resolve host: example; the manifest unknown to nobody",
            Other,
        );
        // Registry codes and statuses as docker reports them.
        check("Error response from daemon: Get \"http://127.0.0.1:5000/v2/\": toomanyrequests: retry later", RateLimited);
        check("ERROR: unexpected status from GET request to http://127.0.0.1:5000/v2/x/manifests/y: 429 Too Many Requests", RateLimited);
        check("ERROR: unexpected status from GET request to http://127.0.0.1:5000/v2/x/manifests/y: 503 Service Unavailable", Unreachable);
        check("Error response from daemon: pull access denied for x, repository does not exist or may require 'docker login'", Unauthorized);
        check("Error response from daemon: manifest for 127.0.0.1:5000/a/b:c not found: name unknown: repository name not known to registry", NotFound);
        check("ERROR: 127.0.0.1:5000/a/b:v1: not found", NotFound);
        check("Error: No such image: 20i-local/php-fpm:8.4", NotFound);
        check("Error response from daemon: failed to resolve reference \"127.0.0.1:46213/stack/php-fpm:v0.1.0-php-8.1\": 127.0.0.1:46213/stack/php-fpm:v0.1.0-php-8.1: not found", NotFound);
        check("failed to copy: httpReadSeeker: failed open: failed to do request: Get \"http://127.0.0.1:5000/v2/a/blobs/sha256:x\": read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", Unreachable);
        check("Error response from daemon: failed to resolve reference \"127.0.0.1:1/x/p:v6\": failed to do request: Head \"https://127.0.0.1:1/v2/x/p/manifests/v6\": EOF", Unreachable);
        check(
            "failed to read expected number of bytes: unexpected EOF",
            Unreachable,
        );
        check("Error response from daemon: Get \"https://registry.example:5000/v2/\": tls: failed to verify certificate: x509: certificate signed by unknown authority", Certificate);
        check("ERROR: failed to do request: Head \"https://10.1.2.3/v2/a/manifests/b\": x509: certificate is valid for other.example, not 10.1.2.3", Certificate);
        check("Error: GET http://127.0.0.1:34645/v2/: unexpected status code 400 Bad Request: Client sent an HTTP request to an HTTPS server.", Certificate);
        check("failed commit on ref \"layer-sha256:ab\": \"layer-sha256:ab\" failed size validation: 10 != 12: failed precondition", DigestMismatch);
    }

    /// `sh -c SCRIPT` through [`Docker::watch`]: what it returned, the lines it passed on, and how long it took.
    fn watch_shell(
        script: &str,
        stall_ms: u64,
        total_ms: u64,
    ) -> (Result<(), FailureKind>, Vec<String>, Duration) {
        let mut docker = Docker::new().unwrap();
        docker.binary = PathBuf::from("/bin/sh");
        let bounds = Bounds {
            stall: Duration::from_millis(stall_ms),
            total: Duration::from_millis(total_ms),
        };
        let mut lines = Vec::new();
        let started = Instant::now();
        let result = docker.watch(&DockerCommand::new(["-c", script]), bounds, &mut |line| {
            lines.push(line.to_owned())
        });
        (result.map_err(|e| e.kind), lines, started.elapsed())
    }

    #[test]
    fn a_watched_command_is_stopped_when_silent_or_too_long() {
        use FailureKind::*;
        let (result, lines, took) = watch_shell("echo one; echo two", 2000, 5000);
        assert_eq!(
            (result, lines),
            (Ok(()), vec!["one".to_owned(), "two".to_owned()])
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Silent from the start: stopped after the stall bound, long before the sleep ends.
        let (result, lines, took) = watch_shell("echo started; exec sleep 30", 300, 10_000);
        assert_eq!((result, lines), (Err(Stalled), vec!["started".to_owned()]));
        assert!(took < Duration::from_secs(5), "{took:?}");
        // Output every 100 ms is progress, but the total bound still ends it.
        let (result, _, took) = watch_shell("while :; do echo tick; sleep 0.1; done", 1000, 700);
        assert_eq!(result, Err(TimedOut));
        assert!(took < Duration::from_secs(5), "{took:?}");
        // Error output counts as progress, and a failure is classified from it.
        let (result, _, _) =
            watch_shell("echo 'toomanyrequests: slow down' >&2; exit 1", 2000, 5000);
        assert_eq!(result, Err(RateLimited));
    }

    #[test]
    fn commands_print_shell_quoted() {
        let command =
            DockerCommand::new(["buildx", "build", "--label", "title=20i stack", "it's", ""]);
        assert_eq!(
            command.to_string(),
            "docker buildx build --label 'title=20i stack' 'it'\\''s' ''"
        );
        assert_eq!(
            DockerCommand::inspect_raw("127.0.0.1:5000/a/b:v1").to_string(),
            "docker buildx imagetools inspect --raw 127.0.0.1:5000/a/b:v1"
        );
    }
}
