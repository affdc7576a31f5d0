//! What long xtask work (`release`, `demo`) is doing and how far along it is: `phase n/N`, `step n/N` and the time
//! elapsed, on standard error. A wait that prints nothing of its own (a bake whose log goes to a file, stand-ins
//! built under emulation) gets a heartbeat: redrawn in place every second on a terminal, a plain line every
//! [`LINE_EVERY`] in CI logs (standard error not a terminal, or `TERM=dumb`), so no stretch is silent for long.
//! Plain lines hold no escape codes.

use std::{
    io::{IsTerminal, Write},
    sync::{mpsc, Mutex},
    time::{Duration, Instant},
};

/// How often a heartbeat prints a plain line, and the most often step lines are printed, where output is a log.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// How progress is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A terminal: a heartbeat is one line redrawn in place.
    InPlace,
    /// A log: plain lines, no escape codes.
    Lines,
}

impl Style {
    /// [`Style::InPlace`] when standard error is a terminal that is not `dumb`.
    pub fn detect() -> Style {
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            Style::InPlace
        } else {
            Style::Lines
        }
    }
}

/// Progress through numbered phases and steps, timed from its creation.
#[derive(Debug)]
pub struct Progress {
    style: Style,
    started: Instant,
    /// `phase n/N name`, for steps and heartbeats to say where they are.
    phase: Mutex<String>,
    /// When the last step line was printed (lines style), so a burst of quick steps prints few lines.
    last_step: Mutex<Option<Instant>>,
}

impl Progress {
    pub fn new(style: Style) -> Progress {
        Progress {
            style,
            started: Instant::now(),
            phase: Mutex::new(String::new()),
            last_step: Mutex::new(None),
        }
    }

    pub fn detect() -> Progress {
        Progress::new(Style::detect())
    }

    /// `==> phase n/N: name (elapsed)`, a line of its own.
    pub fn phase(&self, n: usize, of: usize, name: &str) {
        *self.phase.lock().expect("progress lock") = format!("phase {n}/{of} {name}");
        *self.last_step.lock().expect("progress lock") = None;
        eprintln!(
            "==> phase {n}/{of}: {name} ({} elapsed)",
            elapsed(self.started.elapsed())
        );
    }

    /// `    step n/N done: what (phase, elapsed)`: every step on a terminal, and in a log the first, the last and at
    /// most one every [`LINE_EVERY`] between them.
    pub fn step(&self, n: usize, of: usize, what: &str) {
        let now = Instant::now();
        {
            let mut last = self.last_step.lock().expect("progress lock");
            let due = match (self.style, *last) {
                (Style::InPlace, _) | (Style::Lines, None) => true,
                (Style::Lines, Some(at)) => n == of || now - at >= LINE_EVERY,
            };
            if !due {
                return;
            }
            *last = Some(now);
        }
        eprintln!(
            "    step {n}/{of} done: {what} ({}, {} elapsed)",
            self.phase.lock().expect("progress lock"),
            elapsed(self.started.elapsed())
        );
    }

    /// Runs `work`, saying `still {what}` with the time it has taken and the total while it runs: in place every
    /// second on a terminal (the line cleared when it ends), a plain line every [`LINE_EVERY`] in a log.
    pub fn heartbeat<T>(&self, what: &str, work: impl FnOnce() -> T) -> T {
        self.heartbeat_every(what, LINE_EVERY, work)
    }

    /// [`Progress::heartbeat`] with a line every `every` in a log (tests).
    pub fn heartbeat_every<T>(&self, what: &str, every: Duration, work: impl FnOnce() -> T) -> T {
        let (stop, stopped) = mpsc::channel::<()>();
        let began = Instant::now();
        let phase = self.phase.lock().expect("progress lock").clone();
        let place = if phase.is_empty() {
            String::new()
        } else {
            format!("{phase}, ")
        };
        let (style, started, place) = (self.style, self.started, &place);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let tick = match style {
                    Style::InPlace => Duration::from_secs(1),
                    Style::Lines => every,
                };
                let mut drawn = false;
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    let text = format!(
                        "    still {what}: {} ({place}{} elapsed)",
                        elapsed(began.elapsed()),
                        elapsed(started.elapsed())
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = match style {
                        Style::InPlace => write!(err, "\r\x1b[2K{text}"),
                        Style::Lines => writeln!(err, "{text}"),
                    };
                    let _ = err.flush();
                    drawn = true;
                }
                if drawn && style == Style::InPlace {
                    let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
                }
            });
            let result = work();
            let _ = stop.send(());
            result
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `4.2 s` under a minute, `3m 07s` above.
pub fn elapsed(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let whole = duration.as_secs();
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_at_a_glance() {
        for (seconds, expected) in [
            (0.04, "0.0 s"),
            (4.25, "4.2 s"),
            (59.9, "59.9 s"),
            (60.0, "1m 00s"),
            (187.0, "3m 07s"),
            (3725.0, "62m 05s"),
        ] {
            assert_eq!(elapsed(Duration::from_secs_f64(seconds)), expected);
        }
    }

    #[test]
    fn a_heartbeat_returns_what_its_work_returns() {
        let progress = Progress::new(Style::Lines);
        let value = progress.heartbeat_every("waiting", Duration::from_millis(5), || {
            std::thread::sleep(Duration::from_millis(30));
            42
        });
        assert_eq!(value, 42);
    }
}
