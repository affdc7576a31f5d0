//! The one door to docker: every `docker` invocation of the project is a [`DockerCommand`] run here (through
//! [`crate::process`]), and every failure comes back classified, so callers decide on a [`FailureKind`] rather
//! than on a string they grep.

use std::{
    fmt,
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

pub use crate::failure::FailureKind;
pub use crate::process::Bounds;
use crate::{
    engine_api,
    failure::{retry_saying, Policy},
    process::{self, End},
};

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

    /// `docker image inspect` of the local images `references` name, one JSON object a line for each one the store
    /// holds (an absent one fails the command, after the lines of those present).
    pub fn inspect_images<I, S>(references: I) -> DockerCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut args: Vec<String> = ["image", "inspect", "--format", "{{json .}}", "--"]
            .map(str::to_owned)
            .into();
        args.extend(references.into_iter().map(Into::into));
        DockerCommand { args }
    }
}

/// Shell-quoted, so a printed command can be pasted into a terminal.
impl fmt::Display for DockerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::process::write_shell_quoted(f, "docker", &self.args)
    }
}

/// Runs a docker command (through `run`) until it succeeds, fails for good, or `policy`'s attempts are spent:
/// only what is transient (unreachable, rate limited) is tried again, after the policy's backoff, saying so on
/// stderr. For docker commands that talk to a registry (a push that meets distribution 2.8's 500 on a HEAD racing
/// a tag write, a registry restarting): the release's, the bench's and the fixtures'.
pub fn with_retries<T>(
    policy: &Policy,
    run: impl FnMut() -> Result<T, DockerError>,
) -> Result<T, DockerError> {
    retry_saying(policy, run, |error| {
        matches!(
            error.kind,
            FailureKind::Unreachable | FailureKind::RateLimited
        )
        .then(|| format!("{} ({})", error.command, error.kind.describe()))
    })
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
        let tail = process::stderr_tail(&self.stderr, 6);
        write!(
            f,
            "`{}` failed ({}):\n  {tail}",
            self.command,
            self.kind.describe()
        )
    }
}

impl std::error::Error for DockerError {}

/// Runs docker commands; the only place that does. A clone is a second handle on the same client, journal and
/// config, for another thread.
#[derive(Clone, Debug)]
pub struct Docker {
    binary: PathBuf,
    /// When set, every command is appended to this file before it runs: what a run really did.
    journal: Option<PathBuf>,
    /// When set, `DOCKER_CONFIG` for every command: its own logins, leaving the user's untouched.
    config_dir: Option<PathBuf>,
}

impl Docker {
    /// Uses `docker` from PATH, or `$DOCKER` when set (tests point it at a specific client).
    pub fn new() -> anyhow::Result<Docker> {
        let binary = std::env::var_os("DOCKER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("docker"));
        Ok(Docker {
            binary,
            journal: None,
            config_dir: None,
        })
    }

    /// Another handle with the same client, journal and config, for another thread.
    pub fn try_clone(&self) -> anyhow::Result<Docker> {
        Ok(self.clone())
    }

    /// Runs every command with `DOCKER_CONFIG=dir`: logins made through it stay in `dir`.
    pub fn with_config_dir(mut self, dir: &Path) -> Docker {
        self.config_dir = Some(dir.to_path_buf());
        self
    }

    /// `docker login HOST` with the password on standard input: it never appears in a command line or output.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Result<(), DockerError> {
        let command = DockerCommand::new(["login", host, "--username", user, "--password-stdin"]);
        self.supervise(&command, &[], Some(password.as_bytes()), None, &mut |_| {})
            .map(drop)
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

    /// `docker ARGS` with this handle's config and `env`, not yet started.
    fn process(&self, command: &DockerCommand, env: &[(String, String)]) -> Command {
        let mut process = Command::new(&self.binary);
        if let Some(dir) = &self.config_dir {
            process.env("DOCKER_CONFIG", dir);
        }
        process
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(&command.args);
        process
    }

    /// Records and runs a command under [`process::supervise`]; its standard output, or its failure classified
    /// (a stopped one as [`FailureKind::Stalled`] or [`FailureKind::TimedOut`], saying after how long).
    fn supervise(
        &self,
        command: &DockerCommand,
        env: &[(String, String)],
        stdin: Option<&[u8]>,
        bounds: Option<Bounds>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Vec<u8>, DockerError> {
        self.record(command);
        let finished = process::supervise(&mut self.process(command, env), stdin, bounds, on_line)
            .map_err(|error| Docker::not_started(command, error))?;
        let mut stderr = finished.stderr_text();
        let kind = match finished.end {
            End::Exited(status) if status.success() => return Ok(finished.stdout),
            End::Exited(_) => FailureKind::classify(&stderr),
            End::Stalled(stall) => {
                let stall = stall.as_secs_f64();
                stderr.push_str(&format!("\nno output for {stall} s: stopped"));
                FailureKind::Stalled
            }
            End::TimedOut(total) => {
                let total = total.as_secs_f64();
                stderr.push_str(&format!("\nstill running after {total} s: stopped"));
                FailureKind::TimedOut
            }
        };
        Err(DockerError {
            command: command.to_string(),
            kind,
            stderr,
        })
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
        self.supervise(command, env, None, None, &mut |_| {})
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
        let status = self
            .process(command, &[])
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
        self.supervise(command, &[], None, Some(bounds), on_line)
            .map(drop)
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
        let status = self
            .process(command, env)
            .stdin(Stdio::null())
            .status()
            .map_err(|error| DockerError {
                command: command.to_string(),
                kind: FailureKind::Other,
                stderr: error.to_string(),
            })?;
        if status.success() {
            return Ok(());
        }
        Err(DockerError {
            command: command.to_string(),
            kind: FailureKind::Other,
            stderr: format!("exited with {status}"),
        })
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

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
