//! The one subprocess supervisor: starts a command, drains its standard output and error as they come (each line
//! of the output handed on as it arrives), bounds it in time (a stall without output, a total), and when a bound
//! is passed kills its whole process group, so a helper it started (a docker CLI plugin) goes too. Also how every
//! command this project prints or reports is shown. Used by the docker and cosign doors.

use std::{
    fmt,
    io::{self, Read, Write},
    os::unix::process::CommandExt,
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// How long a supervised command may stay silent, and run in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The longest time without a byte of output.
    pub stall: Duration,
    /// The longest run.
    pub total: Duration,
}

/// How a supervised command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Exited(ExitStatus),
    /// Printed nothing for its stall bound (given), and was killed.
    Stalled(Duration),
    /// Ran past its total bound (given), and was killed.
    TimedOut(Duration),
}

/// What a supervised command printed, and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub end: End,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn success(&self) -> bool {
        matches!(self.end, End::Exited(status) if status.success())
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A command's output as it comes: which stream, and the bytes read.
enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
    Closed,
}

/// Runs `command` with `stdin` written to its standard input (or none), its output piped and read as it comes:
/// each non-blank line of its standard output (ended by `\n` or `\r`, as progress bars print) goes to `on_line`
/// and all of it is kept. With `bounds`, the command runs in a process group of its own, and any output counts as
/// progress: one silent for `bounds.stall`, or still running after `bounds.total`, is killed with its group and
/// ends [`End::Stalled`] or [`End::TimedOut`]. Without, it runs until it ends. An error only when it could not be
/// started.
pub fn supervise(
    command: &mut Command,
    stdin: Option<&[u8]>,
    bounds: Option<Bounds>,
    on_line: &mut dyn FnMut(&str),
) -> io::Result<Finished> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if bounds.is_some() {
        command.process_group(0);
    }
    let mut child = command.spawn()?;
    if let (Some(bytes), Some(mut input)) = (stdin, child.stdin.take()) {
        // Small (a password): written whole before reading, then closed so the command sees its end; a command
        // that ends without reading it fails on its own.
        let _ = input.write_all(bytes);
    }
    let (sender, chunks) = mpsc::channel();
    let readers = [
        forward_chunks(
            child.stdout.take().expect("piped"),
            sender.clone(),
            Chunk::Out,
        ),
        forward_chunks(child.stderr.take().expect("piped"), sender, Chunk::Err),
    ];
    let started = Instant::now();
    let (mut stdout, mut stderr, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_output = started;
    let mut open = readers.len();
    let stopped = loop {
        if open == 0 {
            break None;
        }
        let received = match bounds {
            None => chunks
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(bounds) => {
                let deadline = started + bounds.total;
                let (until, end) = if deadline <= last_output + bounds.stall {
                    (deadline, End::TimedOut(bounds.total))
                } else {
                    (last_output + bounds.stall, End::Stalled(bounds.stall))
                };
                match chunks.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Err(mpsc::RecvTimeoutError::Timeout) => break Some(end),
                    received => received,
                }
            }
        };
        match received {
            Ok(Chunk::Out(bytes)) => {
                last_output = Instant::now();
                stdout.extend_from_slice(&bytes);
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
                stderr.extend_from_slice(&bytes);
            }
            Ok(Chunk::Closed) => open -= 1,
            Err(_) => break None,
        }
    };
    if let Some(end) = stopped {
        kill_group(&mut child);
        return Ok(Finished {
            end,
            stdout,
            stderr,
        });
    }
    let status = child.wait()?;
    for reader in readers {
        let _ = reader.join();
    }
    if let Ok(line) = std::str::from_utf8(&pending) {
        if !line.trim().is_empty() {
            on_line(line.trim_end());
        }
    }
    Ok(Finished {
        end: End::Exited(status),
        stdout,
        stderr,
    })
}

/// Kills a command started in a process group of its own, with everything it started, and reaps it. Killing a
/// docker client ends the daemon's request too: the engine cancels a pull its client left.
fn kill_group(child: &mut std::process::Child) {
    match i32::try_from(child.id()) {
        // SAFETY: killpg only sends a signal; the group is the child's own (`process_group(0)`), not yet reaped,
        // so its id cannot have been reused.
        Ok(group) => unsafe {
            libc::killpg(group, libc::SIGKILL);
        },
        Err(_) => {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

/// Reads `stream` until it ends, sending what it reads as it comes, then [`Chunk::Closed`].
fn forward_chunks(
    mut stream: impl Read + Send + 'static,
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

/// The last `lines` non-blank lines of a command's stderr, indented under the line that names the command: how
/// every failed command (docker's, cosign's) shows what it said.
pub(crate) fn stderr_tail(stderr: &str, lines: usize) -> String {
    let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    said[said.len().saturating_sub(lines)..].join("\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c SCRIPT` under [`supervise`]: how it ended, its standard output's lines as handed on, and its output.
    fn run(
        script: &str,
        stdin: Option<&[u8]>,
        bounds: Option<Bounds>,
    ) -> (End, Vec<String>, Finished) {
        let mut lines = Vec::new();
        let finished = supervise(
            Command::new("/bin/sh").args(["-c", script]),
            stdin,
            bounds,
            &mut |line| lines.push(line.to_owned()),
        )
        .unwrap();
        (finished.end, lines, finished)
    }

    #[test]
    fn output_is_drained_line_by_line_and_kept() {
        // (script, its stdin, the lines handed on, its stdout, its stderr)
        type Row = (
            &'static str,
            Option<&'static [u8]>,
            &'static [&'static str],
            &'static str,
            &'static str,
        );
        let rows: [Row; 4] = [
            ("printf 'a\\nb'", None, &["a", "b"], "a\nb", ""),
            // Progress bars end their lines with `\r`; blank lines are not handed on.
            (
                "printf '10%%\\r50%%\\r\\n\\ndone\\n'",
                None,
                &["10%", "50%", "done"],
                "10%\r50%\r\n\ndone\n",
                "",
            ),
            (
                "cat; echo said >&2",
                Some(b"secret\n"),
                &["secret"],
                "secret\n",
                "said\n",
            ),
            (
                "exec 0<&-; echo closed",
                Some(b"unread"),
                &["closed"],
                "closed\n",
                "",
            ),
        ];
        for (script, stdin, expected, stdout, stderr) in rows {
            let (end, lines, finished) = run(script, stdin, None);
            assert!(
                matches!(end, End::Exited(s) if s.success()),
                "{script}: {end:?}"
            );
            assert_eq!(lines, expected, "{script}");
            assert_eq!(
                String::from_utf8_lossy(&finished.stdout),
                stdout,
                "{script}"
            );
            assert_eq!(finished.stderr_text(), stderr, "{script}");
        }
        let (end, _, finished) = run("exit 3", None, None);
        assert!(
            matches!(end, End::Exited(s) if s.code() == Some(3)),
            "{end:?}"
        );
        assert!(!finished.success());
    }

    /// Whether process `pid` is gone: no such process, or a zombie its new parent has yet to reap.
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    #[test]
    fn a_stopped_command_is_killed_with_what_it_started() {
        let bounds = Bounds {
            stall: Duration::from_millis(300),
            total: Duration::from_secs(20),
        };
        // The shell starts a sleep of its own and waits, silent: both must go when it is stopped.
        let (end, lines, _) = run("sleep 30 & echo $!; wait", None, Some(bounds));
        assert_eq!(end, End::Stalled(bounds.stall));
        let [grandchild] = &lines[..] else {
            panic!("the script prints its sleep's pid: {lines:?}")
        };
        // The kill is sent before supervise returns; the reaping by init may lag on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(grandchild) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            gone(grandchild),
            "the sleep {grandchild} outlived its stopped parent"
        );
    }
}
