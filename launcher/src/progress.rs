//! What the screen shows while images are pulled: a header with the total before the first byte ("pulling 4
//! images, 312 MB"), then one line per image with bytes and layers done of their totals and the rate, or, when
//! no byte moved for a while, "stalled, 23 s left" (the stall timeout counting down). On a terminal the lines are
//! redrawn in place (cursor up, erase line: two escape sequences every terminal knows; `indicatif` would bring a
//! dependency tree for that and a thread of its own), and the launcher's own messages go above them. When
//! standard error is not a terminal (CI logs), each image's line is printed as plain text when it changed, at
//! most every 3 s, and never an escape byte.
//!
//! Every pull reports here from its own thread; the state is one `Mutex`, and rendering is plain data
//! ([`Row::line`]) with table tests.

use std::{
    collections::VecDeque,
    io::{IsTerminal, Write},
    sync::{Condvar, Mutex},
    time::{Duration, Instant},
};

use stack_images::{bytes::human_size, engine_api::Report, registry::size::PullSize};

/// How often plain (not a terminal) progress lines may be printed.
pub const PLAIN_EVERY: Duration = Duration::from_secs(3);
/// How often a terminal's lines are redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(150);
/// How long without a byte before a pull is shown as stalled (half the stall bound when that is shorter).
const STALL_SHOWN_AFTER: Duration = Duration::from_secs(5);
/// The window the rate is measured over: a stall shows as a rate falling to zero within it.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// A row of the board.
pub type RowId = usize;

/// Where an image stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Its size is being read, or it waits for a turn.
    Waiting,
    Pulling,
    /// No byte for `quiet`; the pull is stopped after `stall`.
    Stalled {
        quiet: Duration,
        stall: Duration,
    },
    Done {
        took: Duration,
    },
    Failed {
        why: String,
    },
    /// Not pulled: in the local store already, or built here.
    NotPulled {
        why: String,
    },
}

/// Whether the size of an image to pull is known yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    Pending,
    Known(PullSize),
    /// The registry did not say (unreachable, another platform): shown without a total.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub label: String,
    pub reference: String,
    pub sizing: Sizing,
    pub phase: Phase,
    pub bytes: u64,
    pub layers_done: usize,
    pub layers_seen: usize,
    /// Layers the store held already.
    pub layers_present: usize,
    /// Bytes at recent instants, for the rate.
    samples: VecDeque<(Instant, u64)>,
    started: Option<Instant>,
    /// What was last printed for it (plain output prints a line only when it changed).
    printed: String,
}

impl Row {
    fn new(label: &str, reference: &str) -> Row {
        Row {
            label: label.to_owned(),
            reference: reference.to_owned(),
            sizing: Sizing::Pending,
            phase: Phase::Waiting,
            bytes: 0,
            layers_done: 0,
            layers_seen: 0,
            layers_present: 0,
            samples: VecDeque::new(),
            started: None,
            printed: String::new(),
        }
    }

    /// Bytes per second over the last few seconds.
    fn rate(&self) -> u64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                ((b1 - b0) as f64 / (*t1 - *t0).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }

    /// The image's line, from its data only; the reference padded to `width` so the columns line up.
    pub fn line(&self, width: usize) -> String {
        let head = format!("  {:<11} {:<width$}", self.label, self.reference);
        let total = match self.sizing {
            Sizing::Known(size) => Some(size),
            Sizing::Pending | Sizing::Unknown => None,
        };
        let bytes = match total {
            Some(size) => format!(
                "{} / {}",
                human_size(self.bytes.min(size.bytes)),
                human_size(size.bytes)
            ),
            None => human_size(self.bytes),
        };
        let layers = match total {
            Some(size) => format!(
                "{}/{} layers",
                self.layers_done.min(size.layers),
                size.layers
            ),
            None => format!("{}/{} layers", self.layers_done, self.layers_seen),
        };
        match &self.phase {
            Phase::Waiting => match total {
                Some(size) => format!("{head}  waiting ({})", human_size(size.bytes)),
                None => format!("{head}  waiting"),
            },
            Phase::Pulling => format!("{head}  {bytes}  {layers}  {}/s", human_size(self.rate())),
            Phase::Stalled { quiet, stall } => format!(
                "{head}  {bytes}  {layers}  stalled, {} s left",
                stall.saturating_sub(*quiet).as_secs()
            ),
            Phase::Done { took } => format!(
                "{head}  {}  done in {:.1} s{}",
                match total {
                    Some(size) => human_size(size.bytes),
                    None => human_size(self.bytes),
                },
                took.as_secs_f64(),
                match (self.layers_present, total) {
                    (0, _) => String::new(),
                    (n, Some(size)) =>
                        format!(" ({n} of {} layers were here already)", size.layers),
                    (n, None) => format!(" ({n} layers were here already)"),
                }
            ),
            Phase::Failed { why } => format!("{head}  failed: {why}"),
            Phase::NotPulled { why } => format!("{head}  {why}"),
        }
    }
}

struct State {
    rows: Vec<Row>,
    header: Option<String>,
    /// Lines of the block on screen now (a terminal only).
    drawn: usize,
    last_draw: Option<Instant>,
}

/// The pulls' progress, shared by the threads that pull.
pub struct Board {
    tty: bool,
    state: Mutex<State>,
    sized: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Board {
    /// On standard error: in place when it is a terminal (and `TERM` is not `dumb`), plain lines otherwise.
    pub fn stderr() -> Board {
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Board::new(
            std::io::stderr().is_terminal() && !dumb,
            Box::new(std::io::stderr()),
        )
    }

    pub fn new(tty: bool, out: Box<dyn Write + Send>) -> Board {
        Board {
            tty,
            state: Mutex::new(State {
                rows: Vec::new(),
                header: None,
                drawn: 0,
                last_draw: None,
            }),
            sized: Condvar::new(),
            out: Mutex::new(out),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, label: &str, reference: &str) -> RowId {
        let mut state = self.state();
        state.rows.push(Row::new(label, reference));
        state.rows.len() - 1
    }

    fn update(&self, id: RowId, change: impl FnOnce(&mut Row), force: bool) {
        let mut state = self.state();
        let mut force = force;
        if let Some(row) = state.rows.get_mut(id) {
            let before = std::mem::discriminant(&row.phase);
            change(row);
            // A new phase (stalled, done) is shown at once.
            force |= before != std::mem::discriminant(&row.phase);
        }
        if state.header.is_none() && state.rows.iter().all(|r| r.sizing != Sizing::Pending) {
            state.header = Some(header(&state.rows));
            self.sized.notify_all();
            self.print_header(&mut state);
        }
        self.draw(&mut state, force);
    }

    pub fn set_reference(&self, id: RowId, reference: &str) {
        self.update(id, |row| reference.clone_into(&mut row.reference), true);
    }

    /// The size of what the row will pull (`None`: unknown).
    pub fn sized(&self, id: RowId, size: Option<PullSize>) {
        self.update(
            id,
            |row| row.sizing = size.map_or(Sizing::Unknown, Sizing::Known),
            true,
        );
    }

    /// The row pulls nothing: `why` says what instead (cached, built).
    pub fn not_pulled(&self, id: RowId, why: &str) {
        self.update(
            id,
            |row| {
                if row.sizing == Sizing::Pending {
                    row.sizing = Sizing::Unknown;
                }
                row.phase = Phase::NotPulled {
                    why: why.to_owned(),
                };
            },
            true,
        );
    }

    /// Waits until every row's size is known (the header is printed), at most `timeout`.
    pub fn wait_sized(&self, timeout: Duration) {
        let state = self.state();
        let _ = self
            .sized
            .wait_timeout_while(state, timeout, |s| s.header.is_none());
    }

    /// What a pull reports, with its stall bound.
    pub fn report(&self, id: RowId, report: &Report<'_>, stall: Duration) {
        let now = Instant::now();
        self.update(
            id,
            |row| {
                row.started.get_or_insert(now);
                row.bytes = report.progress.bytes();
                row.layers_done = report.progress.layers_done();
                row.layers_seen = report.progress.layers.len();
                row.layers_present = report.progress.layers_present();
                row.samples.push_back((now, row.bytes));
                while row
                    .samples
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
                {
                    row.samples.pop_front();
                }
                // The countdown is what tells a stall from a download; the engine reports bytes in steps (seen:
                // 1 MB at a time behind a throttled link), so a few quiet seconds are not yet worth saying.
                row.phase = if report.quiet_for >= STALL_SHOWN_AFTER.min(stall / 2) {
                    Phase::Stalled {
                        quiet: report.quiet_for,
                        stall,
                    }
                } else {
                    Phase::Pulling
                };
            },
            false,
        );
    }

    /// An attempt starts over (a retry, a mirror): the counts of the last one go.
    pub fn restart(&self, id: RowId) {
        self.update(
            id,
            |row| {
                row.bytes = 0;
                row.layers_done = 0;
                row.layers_present = 0;
                row.samples.clear();
            },
            true,
        );
    }

    pub fn done(&self, id: RowId) {
        self.update(
            id,
            |row| {
                let took = row.started.map_or(Duration::ZERO, |s| s.elapsed());
                if let Sizing::Known(size) = row.sizing {
                    row.bytes = size.bytes;
                    row.layers_done = size.layers;
                }
                row.phase = Phase::Done { took };
            },
            true,
        );
    }

    pub fn failed(&self, id: RowId, why: &str) {
        self.update(
            id,
            |row| {
                row.phase = Phase::Failed {
                    why: why.to_owned(),
                }
            },
            true,
        );
    }

    /// A message of the launcher's, above the lines on a terminal.
    pub fn log(&self, line: &str) {
        let mut state = self.state();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if self.tty {
            let drawn = state.drawn;
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A\r\x1b[J");
            }
            let _ = writeln!(out, "{line}");
            state.drawn = 0;
            drop(out);
            self.draw(&mut state, true);
        } else {
            let _ = writeln!(out, "{line}");
        }
    }

    fn print_header(&self, state: &mut State) {
        let Some(header) = state.header.clone().filter(|h| !h.is_empty()) else {
            return;
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if self.tty && state.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\r\x1b[J", state.drawn);
            state.drawn = 0;
        }
        let _ = writeln!(out, "{header}");
    }

    /// Draws the rows: in place on a terminal (at most every `REDRAW_EVERY` unless `force`), else each changed
    /// line at most every `PLAIN_EVERY` (`force`: a row's phase changed, printed now).
    fn draw(&self, state: &mut State, force: bool) {
        let now = Instant::now();
        let every = if self.tty { REDRAW_EVERY } else { PLAIN_EVERY };
        if !force
            && state
                .last_draw
                .is_some_and(|t| now.duration_since(t) < every)
        {
            return;
        }
        // Until the header is out, nothing is drawn: the total comes first. With nothing to pull (a cached
        // start), nothing at all.
        if state.header.as_deref().is_none_or(str::is_empty) {
            return;
        }
        state.last_draw = Some(now);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if self.tty {
            let mut text = String::new();
            if state.drawn > 0 {
                text.push_str(&format!("\x1b[{}A", state.drawn));
            }
            let width = reference_width(&state.rows);
            // A line longer than the terminal would wrap, and the cursor would no longer go back to the first.
            let columns = terminal_columns().saturating_sub(1).max(20);
            for row in &state.rows {
                let line: String = row.line(width).chars().take(columns).collect();
                text.push_str(&format!("\r\x1b[2K{line}\n"));
            }
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            state.drawn = state.rows.len();
        } else {
            let width = reference_width(&state.rows);
            for row in &mut state.rows {
                let line = row.line(width);
                if line != row.printed {
                    let _ = writeln!(out, "{line}");
                    row.printed = line;
                }
            }
        }
    }

    /// The final state of every row, drawn now.
    pub fn finish(&self) {
        let mut state = self.state();
        if state.header.is_none() {
            state.header = Some(header(&state.rows));
            self.print_header(&mut state);
        }
        self.draw(&mut state, true);
        state.drawn = 0;
    }
}

/// The width of the terminal on standard error (80 when it cannot be read).
fn terminal_columns() -> usize {
    // SAFETY: TIOCGWINSZ fills the `winsize` passed; a failure leaves it zeroed, and that is checked.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let read = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    if read == 0 && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// The widest reference of the board.
fn reference_width(rows: &[Row]) -> usize {
    rows.iter().map(|r| r.reference.len()).max().unwrap_or(0)
}

/// "pulling 4 images, 312.0 MB" (what is pulled, not what is cached), or nothing when nothing is.
fn header(rows: &[Row]) -> String {
    let pulled: Vec<&Row> = rows
        .iter()
        .filter(|r| !matches!(r.phase, Phase::NotPulled { .. }))
        .collect();
    if pulled.is_empty() {
        return String::new();
    }
    let known: u64 = pulled
        .iter()
        .filter_map(|r| match r.sizing {
            Sizing::Known(size) => Some(size.bytes),
            _ => None,
        })
        .sum();
    let unknown = pulled
        .iter()
        .filter(|r| !matches!(r.sizing, Sizing::Known(_)))
        .count();
    let images = match pulled.len() {
        1 => "1 image".to_owned(),
        n => format!("{n} images"),
    };
    match unknown {
        0 => format!("pulling {images}, {}", human_size(known)),
        n if n == pulled.len() => format!("pulling {images}, size unknown"),
        n => format!(
            "pulling {images}, {} and {n} of unknown size",
            human_size(known)
        ),
    }
}

/// A `Write` for messages that go through the board: whole lines, above the progress on a terminal.
pub struct BoardLog<'a> {
    board: &'a Board,
    pending: Vec<u8>,
}

impl<'a> BoardLog<'a> {
    pub fn new(board: &'a Board) -> BoardLog<'a> {
        BoardLog {
            board,
            pending: Vec::new(),
        }
    }
}

impl Write for BoardLog<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.board
                .log(String::from_utf8_lossy(&line).trim_end_matches('\n'));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let line = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            self.board.log(&line);
        }
        Ok(())
    }
}

impl Drop for BoardLog<'_> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use stack_images::engine_api::PullProgress;

    use super::*;

    fn size(bytes: u64, layers: usize) -> PullSize {
        PullSize { bytes, layers }
    }

    #[test]
    fn lines_from_data() {
        let row = |sizing, phase, bytes, layers_done| Row {
            bytes,
            layers_done,
            layers_seen: 3,
            sizing,
            phase,
            ..Row::new("nginx", "r/nginx:1")
        };
        let known = Sizing::Known(size(40_000_000, 5));
        let secs = Duration::from_secs;
        for (row, expected) in [
            (
                row(known, Phase::Waiting, 0, 0),
                "  nginx       r/nginx:1  waiting (40.0 MB)",
            ),
            (
                row(Sizing::Pending, Phase::Waiting, 0, 0),
                "  nginx       r/nginx:1  waiting",
            ),
            (
                row(known, Phase::Pulling, 12_300_000, 3),
                "  nginx       r/nginx:1  12.3 MB / 40.0 MB  3/5 layers  0 B/s",
            ),
            (
                row(Sizing::Unknown, Phase::Pulling, 1_000, 1),
                "  nginx       r/nginx:1  1.0 kB  1/3 layers  0 B/s",
            ),
            (
                row(
                    known,
                    Phase::Stalled {
                        quiet: secs(7),
                        stall: secs(30),
                    },
                    1_000_000,
                    1,
                ),
                "  nginx       r/nginx:1  1.0 MB / 40.0 MB  1/5 layers  stalled, 23 s left",
            ),
            (
                row(
                    known,
                    Phase::Done {
                        took: Duration::from_millis(3250),
                    },
                    40_000_000,
                    5,
                ),
                "  nginx       r/nginx:1  40.0 MB  done in 3.2 s",
            ),
            (
                row(
                    known,
                    Phase::Failed {
                        why: "not found".into(),
                    },
                    0,
                    0,
                ),
                "  nginx       r/nginx:1  failed: not found",
            ),
            (
                row(
                    Sizing::Unknown,
                    Phase::NotPulled {
                        why: "in the local store".into(),
                    },
                    0,
                    0,
                ),
                "  nginx       r/nginx:1  in the local store",
            ),
        ] {
            assert_eq!(row.line(9), expected);
            assert_eq!(
                row.line(11),
                expected.replacen("r/nginx:1", "r/nginx:1  ", 1)
            );
        }
        let here = Row {
            layers_present: 4,
            ..row(known, Phase::Done { took: secs(1) }, 0, 5)
        };
        assert_eq!(
            here.line(9),
            "  nginx       r/nginx:1  40.0 MB  done in 1.0 s (4 of 5 layers were here already)"
        );
    }

    #[test]
    fn headers_count_what_is_pulled() {
        let mut a = Row::new("a", "a:1");
        a.sizing = Sizing::Known(size(300_000_000, 3));
        let mut b = Row::new("b", "b:1");
        b.sizing = Sizing::Known(size(12_000_000, 3));
        let mut c = Row::new("c", "c:1");
        c.sizing = Sizing::Unknown;
        let mut cached = Row::new("d", "d:1");
        cached.phase = Phase::NotPulled {
            why: "cached".into(),
        };
        for (rows, expected) in [
            (vec![a.clone(), b.clone()], "pulling 2 images, 312.0 MB"),
            (
                vec![a.clone(), b.clone(), c.clone()],
                "pulling 3 images, 312.0 MB and 1 of unknown size",
            ),
            (vec![c.clone()], "pulling 1 image, size unknown"),
            (vec![a.clone(), cached.clone()], "pulling 1 image, 300.0 MB"),
            (vec![cached], ""),
        ] {
            assert_eq!(header(&rows), expected);
        }
    }

    /// A `Write` whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<Vec<u8>>>);

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run_board(tty: bool) -> String {
        let screen = Screen::default();
        let board = Board::new(tty, Box::new(screen.clone()));
        let php = board.add("php-fpm", "r/php:1");
        let web = board.add("nginx", "r/nginx:1");
        board.sized(php, Some(size(2_000, 2)));
        board.log("a message before the header");
        board.sized(web, Some(size(1_000, 1)));
        let mut progress = PullProgress::default();
        progress.apply("l1", "Downloading", Some(500), Some(1_000));
        let report = Report {
            progress: &progress,
            quiet_for: Duration::from_secs(5),
        };
        board.report(php, &report, Duration::from_secs(30));
        board.done(web);
        board.done(php);
        board.finish();
        let bytes = screen.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_output_has_no_escapes_and_the_total_comes_first() {
        let text = run_board(false);
        assert!(!text.contains('\x1b'), "{text:?}");
        let header = text.find("pulling 2 images, 3.0 kB").expect(&text);
        let first_row = text.find("  php-fpm").expect(&text);
        assert!(header < first_row, "{text}");
        assert!(text.contains("stalled, 25 s left"), "{text}");
        assert!(text.contains("r/nginx:1  1.0 kB  done in"), "{text}");
    }

    #[test]
    fn nothing_to_pull_draws_nothing() {
        let screen = Screen::default();
        let board = Board::new(false, Box::new(screen.clone()));
        let php = board.add("php-fpm", "r/php:1");
        board.not_pulled(php, "cache (no registry request)");
        board.finish();
        assert!(screen.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_terminal_redraws_in_place() {
        let text = run_board(true);
        assert!(text.contains("\x1b[2A"), "{text:?}");
        assert!(text.contains("\r\x1b[2K  php-fpm"), "{text:?}");
    }
}
