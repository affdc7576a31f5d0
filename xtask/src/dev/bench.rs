//! `cargo xtask bench`: the release, the build cache and the launcher measured side by side against what they
//! replace, on loopback registries, repeated and printed as median and spread next to their targets. Nothing is
//! asserted: a loaded machine makes a slow day, not a failure (docs/performance.md).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use stack_images::{
    docker::{Docker, DockerCommand},
    matrix::MATRIX_PATH,
    Matrix, Namespace, PhpLine, Repository,
};
use testkit::{fixtures, stack as services};
use xshell::Shell;

use crate::{
    dev::standins::{self, Flavour},
    project_root,
    release::execute::{Mode, Outcome},
    release::git::Revision,
    release::inputs::{Published, ReleaseArgs},
    release::plan::{self, Plan, Step, TagStep},
    release::release,
    release::signing::SigningFlag,
    table,
};

#[derive(Args, Debug)]
pub struct BenchCmd {
    /// How many times each comparison runs; the figures are the medians, with min–max beside them
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Also write the figures and every raw time to this JSON file
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// First of five loopback ports for the bench's own registries (release pair, naive pair, bases)
    #[arg(long, default_value_t = 5200, value_parser = clap::value_parser!(u16).range(1024..=65530))]
    port: u16,
    /// What the releases and the launcher build: `real` (Debian's PHP 8.2 and 8.4, extensions installed in the
    /// build, arm64 under QEMU; the default when this machine has the real bases saved), `busybox` (the stand-in,
    /// every line of the matrix), or a build context DIR whose Dockerfile takes PHP_VERSION and PHP_BASE
    #[arg(long, value_name = "real|busybox|DIR")]
    context: Option<ContextChoice>,
    /// Never empty the build cache: every "cold" build may then be warm, so the figures mean little; for trying
    /// the bench out on a machine whose build cache others use
    #[arg(long)]
    keep_build_cache: bool,
    /// The platforms the release comparisons build (default: both; `linux/amd64` alone leaves out the arm64
    /// builds under QEMU, minutes per real-PHP line on a small machine)
    #[arg(long, value_delimiter = ',', value_parser = ["linux/amd64", "linux/arm64"])]
    platforms: Vec<String>,
    /// Release only the first N PHP lines of the matrix in the release, naive and cache comparisons (default: all)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    lines: Option<u16>,
    /// Sections left out, comma-separated: `verify` (the verification curve), `launcher` (the launcher's
    /// sections); the release comparisons always run (the launcher's sections pull their pins)
    #[arg(long, value_delimiter = ',', value_enum)]
    skip: Vec<Skippable>,
    /// Run only the first start's comparison (four images pulled at once by `20i start` against one pull after
    /// another), in about a minute per round
    #[arg(long)]
    first_start_only: bool,
}

/// A section of the bench that can be left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Skippable {
    Verify,
    Launcher,
}

/// What the release comparisons (and the launcher's sections) build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextChoice {
    Real,
    Busybox,
    Dir(PathBuf),
}

impl std::str::FromStr for ContextChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<ContextChoice, String> {
        Ok(match text {
            "real" => ContextChoice::Real,
            "busybox" => ContextChoice::Busybox,
            "" => return Err("give real, busybox or a build context directory".to_owned()),
            dir => ContextChoice::Dir(PathBuf::from(dir)),
        })
    }
}

/// The line counts the verification time is measured at.
const VERIFY_LINE_COUNTS: [usize; 3] = [1, 5, 10];
/// `20i image` and `true` are each run this many times per round (by hyperfine); one run is a few milliseconds.
const IMAGE_ITERATIONS: u32 = 40;

/// One command's timings, in seconds, as `hyperfine --export-json` writes them.
#[derive(Debug, serde::Deserialize, PartialEq)]
struct Hyperfine {
    command: String,
    mean: f64,
    min: f64,
    max: f64,
}

/// The commands of a `hyperfine --export-json` file, in the order they were given.
fn read_hyperfine(json: &str) -> anyhow::Result<Vec<Hyperfine>> {
    #[derive(serde::Deserialize)]
    struct Export {
        results: Vec<Hyperfine>,
    }
    Ok(serde_json::from_str::<Export>(json)?.results)
}

impl BenchCmd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let scratch = project_root().join("target/bench");
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        if self.first_start_only {
            crate::dev::first_start::run(self.rounds, &crate::dev::first_start::scratch(&scratch))?;
            eprintln!("bench took {:.0} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        let choice = match &self.context {
            Some(choice) => choice.clone(),
            None if standins::real_bases_saved() => ContextChoice::Real,
            None => {
                eprintln!(
                    "bench: the real PHP bases are not saved on this machine (`cargo test -p testkit --test it \
                     real::` makes them): measuring the busybox stand-in; --context real makes them first"
                );
                ContextChoice::Busybox
            }
        };
        if let ContextChoice::Dir(dir) = &choice {
            if !dir.join("Dockerfile").is_file() {
                bail!(
                    "--context {}: no Dockerfile there; point it at a build context such as testkit/standins/php-fpm, \
                     or give real or busybox",
                    dir.display()
                );
            }
        }
        eprintln!(
            "bench: {} rounds, {}; {}",
            self.rounds,
            match &choice {
                ContextChoice::Real =>
                    "real PHP (Debian's PHP-FPM for the lines it has, extensions installed in the build)"
                        .to_owned(),
                ContextChoice::Busybox => "the busybox stand-in (no PHP)".to_owned(),
                ContextChoice::Dir(dir) => format!("context {}", dir.display()),
            },
            if self.keep_build_cache {
                "--keep-build-cache: the build cache is never emptied, so cold builds may be warm"
            } else {
                "this empties the machine's docker build cache (`docker buildx prune -af`) before every cold build"
            }
        );
        let _registries = Wiped;
        let bench = Bench::prepare(sh, &self, scratch, &choice)?;
        let mut raw = Raw {
            context: match &choice {
                ContextChoice::Real => format!(
                    "real PHP {} (Debian's PHP-FPM, extensions installed in the build)",
                    join(&bench.lines.iter().map(|(php, _)| *php).collect::<Vec<_>>())
                ),
                ContextChoice::Busybox => "busybox stand-in (no PHP)".to_owned(),
                ContextChoice::Dir(dir) => format!("build context {}", dir.display()),
            } + &format!(" for {}", bench.platforms.join(" and ")),
            ..Raw::default()
        };
        for round in 0..self.rounds {
            eprintln!("==> bench round {} of {}", round + 1, self.rounds);
            bench.release_round(sh, round, &mut raw)?;
            if !self.skip.contains(&Skippable::Verify) {
                bench.verify_round(sh, round, &mut raw)?;
            }
        }
        // The release figures stand on their own: a launcher section that fails is reported, not fatal.
        if self.skip.contains(&Skippable::Launcher) {
            eprintln!("bench: --skip launcher: the launcher's figures are not measured");
        } else if let Err(error) = bench.launcher(self.rounds, &mut raw) {
            eprintln!(
                "bench: the launcher sections failed, their figures are not measured: {error:#}"
            );
        }
        let figures = Figures::of(&raw);
        print!("{}", report(&figures, &raw));
        if !self.skip.contains(&Skippable::Launcher) {
            // Its own table, after the others: a failure is reported, not fatal.
            if let Err(error) = crate::dev::first_start::run(
                self.rounds,
                &crate::dev::first_start::scratch(&bench.scratch),
            ) {
                eprintln!("bench: the first start comparison failed: {error:#}");
            }
        }
        eprintln!("bench took {:.0} s", started.elapsed().as_secs_f64());
        if let Some(path) = &self.json {
            let json = serde_json::to_string_pretty(&figures.json(&raw, self.rounds))?;
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", crate::display_path(path));
        }
        Ok(())
    }
}

/// Names of the bench's registries, from `--port` on: release pair, naive pair, bases.
const REGISTRIES: [&str; 5] = [
    "bench-ghcr",
    "bench-hub",
    "bench-naive-ghcr",
    "bench-naive-hub",
    "bench-bases",
];

/// Stops and deletes the bench's registries when the bench returns, on success or error: they hold only its pushes.
struct Wiped;

impl Drop for Wiped {
    fn drop(&mut self) {
        for name in REGISTRIES {
            let _ = Command::new("bash")
                .args(["scripts/registry.sh", "wipe", name])
                .current_dir(project_root())
                .output();
        }
    }
}

/// A `scripts/registry.sh` registry: its storage is measured and its access log counted.
struct Loopback {
    name: &'static str,
    port: u16,
}

impl Loopback {
    fn fresh(&self, sh: &Shell) -> anyhow::Result<()> {
        crate::dev::demo::fresh_registry(sh, self.name, self.port)
            .context("the bench's registries: pick free ports with --port")
    }

    fn namespace(&self, path: &str) -> Namespace {
        format!("127.0.0.1:{}/{path}", self.port)
            .parse()
            .expect("a loopback host and a lowercase path make a namespace")
    }

    fn dir(&self) -> PathBuf {
        let state = std::env::var_os("STACK_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/20i-stack"));
        state.join("registries").join(self.name)
    }

    /// Bytes under the storage root: what every push left, blobs and manifests alike.
    fn stored_bytes(&self) -> u64 {
        directory_bytes(&self.dir().join("data"))
    }

    /// HTTP requests served so far (access-log lines).
    fn requests(&self) -> usize {
        let log = std::fs::read_to_string(self.dir().join("access.log")).unwrap_or_default();
        count_requests(&log)
    }
}

fn directory_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => directory_bytes(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Access lines (combined log format) among distribution's own log lines.
fn count_requests(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("] \"") && l.contains(" HTTP/1."))
        .count()
}

/// Everything a round needs: registries, stand-in bases and their locks, matrices, the launcher's site.
struct Bench {
    scratch: PathBuf,
    /// What the release, naive and cache comparisons build.
    context: PathBuf,
    /// Whether the releases build real PHP (the launcher's sections then run real PHP too).
    real: bool,
    /// The busybox stand-in: the verification curve measures registry requests, not builds.
    verify_context: PathBuf,
    release_pair: [Loopback; 2],
    naive_pair: [Loopback; 2],
    bases: Loopback,
    /// The matrix (first `--lines` lines) and its lock, for the release, naive and cache comparisons.
    matrix: (PathBuf, PathBuf),
    /// The lines of that matrix, with what each is built from.
    lines: Vec<(PhpLine, Flavour)>,
    /// One matrix and lock per entry of [`VERIFY_LINE_COUNTS`].
    verify_matrices: Vec<(usize, PathBuf, PathBuf)>,
    /// What the release comparisons build for.
    platforms: Vec<String>,
    revision: stack_images::CommitId,
    /// Whether cold builds empty the build cache first (not with `--keep-build-cache`).
    prune: bool,
}

impl Bench {
    fn prepare(
        sh: &Shell,
        cmd: &BenchCmd,
        scratch: PathBuf,
        choice: &ContextChoice,
    ) -> anyhow::Result<Bench> {
        let p = cmd.port;
        let at = |n: u16| Loopback {
            name: REGISTRIES[usize::from(n)],
            port: p + n,
        };
        let real = *choice == ContextChoice::Real;
        let shipped = Matrix::load(&project_root().join(MATRIX_PATH))?;
        let mut lines: Vec<(PhpLine, Flavour)> = shipped
            .php_lines()
            .into_iter()
            .map(|php| (php, Flavour::of(php, real)))
            // Real PHP: only the lines Debian has; the busybox lines would only dilute the build's share.
            .filter(|(_, flavour)| !real || *flavour == Flavour::Real)
            .collect();
        if let Some(n) = cmd.lines {
            lines.truncate(n.into());
        }
        let context = match choice {
            ContextChoice::Real => {
                let dir = scratch.join("context");
                standins::write_context(&dir, &lines)?;
                dir
            }
            ContextChoice::Busybox => fixtures::php_fpm_standin(),
            ContextChoice::Dir(dir) => {
                std::path::absolute(dir).with_context(|| format!("--context {}", dir.display()))?
            }
        };
        let bench = Bench {
            release_pair: [at(0), at(1)],
            naive_pair: [at(2), at(3)],
            bases: at(4),
            matrix: (PathBuf::new(), PathBuf::new()),
            lines: lines.clone(),
            verify_matrices: Vec::new(),
            revision: crate::release::git::head_revision(sh)?,
            scratch,
            context,
            real,
            verify_context: fixtures::php_fpm_standin(),
            prune: !cmd.keep_build_cache,
            platforms: if cmd.platforms.is_empty() {
                vec!["linux/amd64".to_owned(), "linux/arm64".to_owned()]
            } else {
                cmd.platforms.clone()
            },
        };
        bench.bases.fresh(sh)?;
        let release_source: Repository =
            format!("127.0.0.1:{}/fixtures/php-standin", bench.bases.port).parse()?;
        let verify_source: Repository =
            format!("127.0.0.1:{}/fixtures/php-busybox", bench.bases.port).parse()?;
        let client = stack_images::registry::RegistryClient::from_env()?;
        eprintln!(
            "==> bases for PHP {}: {}",
            join(&lines.iter().map(|(php, _)| *php).collect::<Vec<_>>()),
            lines.first().map_or("", |(_, flavour)| flavour.describe())
        );
        standins::push_bases(&release_source, &lines, &client)?;
        let verify_lines = verify_lines();
        eprintln!(
            "==> busybox bases for the verification curve: PHP {}",
            join(&verify_lines)
        );
        let busybox: Vec<(PhpLine, Flavour)> = verify_lines
            .iter()
            .map(|php| (*php, Flavour::Busybox))
            .collect();
        standins::push_bases(&verify_source, &busybox, &client)?;
        let write = |name: String,
                     lines: &[PhpLine],
                     source: &Repository,
                     platforms: &[String]|
         -> anyhow::Result<(PathBuf, PathBuf)> {
            let matrix_path = bench.scratch.join(format!("{name}.matrix.toml"));
            std::fs::write(&matrix_path, matrix_text(lines, platforms))?;
            let matrix = Matrix::load(&matrix_path)?;
            let (lock, _) = crate::maintain::bases::refresh(&matrix, source, None)?;
            let lock_path = bench.scratch.join(format!("{name}.lock.toml"));
            std::fs::write(&lock_path, lock.render())
                .with_context(|| format!("writing {}", lock_path.display()))?;
            Ok((matrix_path, lock_path))
        };
        let release_lines: Vec<PhpLine> = lines.iter().map(|(php, _)| *php).collect();
        let matrix = write(
            "release".to_owned(),
            &release_lines,
            &release_source,
            &bench.platforms,
        )?;
        let both = ["linux/amd64".to_owned(), "linux/arm64".to_owned()];
        let mut verify_matrices = Vec::new();
        for n in VERIFY_LINE_COUNTS {
            let (m, l) = write(
                format!("verify-{n}"),
                &verify_lines[..n],
                &verify_source,
                &both,
            )?;
            verify_matrices.push((n, m, l));
        }
        Ok(Bench {
            matrix,
            verify_matrices,
            ..bench
        })
    }

    /// Release (cold) against the naive loop, each on fresh registries; then the warm and the cold release of
    /// the next versions on the release's registries, reusing its registry cache or not.
    fn release_round(&self, sh: &Shell, round: u32, raw: &mut Raw) -> anyhow::Result<()> {
        let (matrix, lock) = &self.matrix;
        let ns = |pair: &[Loopback; 2]| {
            (
                pair[0].namespace("20i-stack"),
                pair[1].namespace("20istack"),
            )
        };
        let release_side = |raw: &mut Raw| -> anyhow::Result<()> {
            for registry in &self.release_pair {
                registry.fresh(sh)?;
            }
            self.prune_build_cache()?;
            let before = stored(&self.release_pair);
            let (canonical, mirror) = ns(&self.release_pair);
            let (outcome, took) =
                self.release(sh, "1.0.0", &canonical, &mirror, matrix, lock, Run::COLD)?;
            let after = stored(&self.release_pair);
            raw.release_s.push(took);
            for (phase, d) in &outcome.timings {
                match raw
                    .release_phases
                    .iter_mut()
                    .find(|(name, _)| name == phase)
                {
                    Some((_, times)) => times.push(d.as_secs_f64()),
                    None => raw.release_phases.push((phase, vec![d.as_secs_f64()])),
                }
            }
            raw.release_bytes.push(grown(before, after));
            raw.release_builds = format!(
                "1 bake: {} lines x {} platforms",
                outcome.built.len(),
                self.platforms.len()
            );
            let build = phase_seconds(&outcome, &["build"]);
            raw.outside_build_s.push(took - build);
            raw.outside_build_share.push((took - build) / took);
            Ok(())
        };
        let naive_side = |raw: &mut Raw| -> anyhow::Result<()> {
            for registry in &self.naive_pair {
                registry.fresh(sh)?;
            }
            self.prune_build_cache()?;
            let before = stored(&self.naive_pair);
            let (canonical, mirror) = ns(&self.naive_pair);
            let plan = self.plan(sh, "1.0.0", &canonical, &mirror, matrix, lock, Run::COLD)?;
            let docker = Docker::new()?;
            let commands = naive_commands(&plan);
            let started = Instant::now();
            let log = self.scratch.join("naive-build.log");
            let attempts = std::cell::Cell::new(0);
            for command in &commands {
                // The same retry policy as the release's docker calls: distribution answers a 500 now and then
                // while buildx pushes several tags of one manifest at once.
                crate::release::execute::with_retries(|| {
                    attempts.set(attempts.get() + 1);
                    docker.run_logged(command, &log)
                })
                .with_context(|| format!("the naive loop's build: see {}", log.display()))?;
            }
            raw.naive_retries += attempts.get() - commands.len();
            raw.naive_s.push(started.elapsed().as_secs_f64());
            raw.naive_bytes
                .push(grown(before, stored(&self.naive_pair)));
            raw.naive_builds = format!(
                "{} buildx builds x {} platforms",
                commands.len(),
                self.platforms.len()
            );
            Ok(())
        };
        // The same cold release without seeding, in the naive pair wiped again (the release pair keeps release
        // A's build cache for the warm release below).
        let unseeded_side = |raw: &mut Raw| -> anyhow::Result<()> {
            for registry in &self.naive_pair {
                registry.fresh(sh)?;
            }
            self.prune_build_cache()?;
            let (canonical, mirror) = ns(&self.naive_pair);
            let unseeded = Run {
                seed: false,
                ..Run::COLD
            };
            let (outcome, took) =
                self.release(sh, "1.0.0", &canonical, &mirror, matrix, lock, unseeded)?;
            let build = phase_seconds(&outcome, &["build"]);
            raw.unseeded_s.push(took);
            raw.unseeded_build_s.push(build);
            raw.unseeded_outside_build_s.push(took - build);
            Ok(())
        };
        // Alternate which side goes first, so a drift in the machine's load falls on both.
        if round.is_multiple_of(2) {
            release_side(raw)?;
            naive_side(raw)?;
            unseeded_side(raw)?;
        } else {
            unseeded_side(raw)?;
            naive_side(raw)?;
            release_side(raw)?;
        }
        let (canonical, mirror) = ns(&self.release_pair);
        self.prune_build_cache()?;
        let (warm, took) =
            self.release(sh, "1.0.1", &canonical, &mirror, matrix, lock, Run::COLD)?;
        raw.warm_s.push(took);
        raw.warm_build_s.push(phase_seconds(&warm, &["build"]));
        self.prune_build_cache()?;
        let (cold, took) = self.release(
            sh,
            "1.0.2",
            &canonical,
            &mirror,
            matrix,
            lock,
            Run::NO_CACHE,
        )?;
        raw.cold_s.push(took);
        raw.cold_build_s.push(phase_seconds(&cold, &["build"]));
        Ok(())
    }

    /// Verification time (verify pins + verify tags) of releases of 1, 5 and 10 lines.
    fn verify_round(&self, sh: &Shell, round: u32, raw: &mut Raw) -> anyhow::Result<()> {
        for (n, matrix, lock) in &self.verify_matrices {
            let canonical = self.release_pair[0].namespace(&format!("verify-{n}-r{round}"));
            let mirror = self.release_pair[1].namespace(&format!("verify-{n}-r{round}"));
            // The release, then the same release resumed: every pin is found, verified and kept, so the build
            // is skipped and the verification phases run again, a few samples of them for the price of one build.
            for resume in [false, true, true, true, true] {
                let run = Run {
                    resume,
                    ..Run::COLD
                };
                let (outcome, _) =
                    self.release(sh, "2.0.0", &canonical, &mirror, matrix, lock, run)?;
                raw.verify_s
                    .entry(*n)
                    .or_default()
                    .push(phase_seconds(&outcome, &["verify pins", "verify tags"]));
            }
        }
        Ok(())
    }

    /// The release comparisons build the chosen context; the verification curve's matrices the busybox stand-in.
    fn context_for(&self, matrix: &Path) -> &Path {
        if matrix == self.matrix.0 {
            &self.context
        } else {
            &self.verify_context
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        sh: &Shell,
        version: &str,
        canonical: &Namespace,
        mirror: &Namespace,
        matrix: &Path,
        lock: &Path,
        run: Run,
    ) -> anyhow::Result<Plan> {
        let args = ReleaseArgs {
            version: version.parse()?,
            published: Some(Published(Vec::new())),
            revision: Some(Revision::Full(self.revision.clone())),
            time: None,
            registry: Some(canonical.clone()),
            mirror: vec![mirror.clone()],
            no_mirrors: false,
            bases: Some(lock.to_path_buf()),
            matrix: Some(matrix.to_path_buf()),
            context: Some(self.context_for(matrix).to_path_buf()),
            attestations: None,
            no_sbom: false,
            sbom_scanner: None,
            allow_version_mismatch: true,
            no_build_cache: !run.build_cache,
            no_seed: !run.seed,
            // What is measured is the build and the copies; signing is cosign's time, not ours.
            signing: SigningFlag::None,
            signing_public_key: None,
        };
        plan::compute(&args.gather(sh)?)
    }

    /// A release as `cargo xtask release` runs it; returns what it did and its wall time in seconds.
    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        sh: &Shell,
        version: &str,
        canonical: &Namespace,
        mirror: &Namespace,
        matrix: &Path,
        lock: &Path,
        run: Run,
    ) -> anyhow::Result<(Outcome, f64)> {
        let plan = self.plan(sh, version, canonical, mirror, matrix, lock, run)?;
        let work_dir = self
            .scratch
            .join("work")
            .join(canonical.to_string().replace(['/', ':'], "_") + "-" + version);
        let started = Instant::now();
        let outcome = release::execute(&plan, Mode::Release { resume: run.resume }, &work_dir)
            .with_context(|| format!("releasing {version} to {canonical}"))?;
        Ok((outcome, started.elapsed().as_secs_f64()))
    }

    /// `20i start` cached against `docker compose up` of the same stack, `20i image` against `true`, and the first
    /// start by pull against by local build.
    fn launcher(&self, rounds: u32, raw: &mut Raw) -> anyhow::Result<()> {
        eprintln!("==> launcher: building target/debug/20i and the service stand-ins");
        let launcher = crate::dev::demo::build_launcher()?;
        let image = match self.lines.iter().rev().find(|(_, f)| *f == Flavour::Real) {
            Some((php, _)) if self.real => {
                // The last cold release's pin of the line (its registries stay up until the bench ends).
                let release: Repository =
                    format!("{}/php-fpm", self.release_pair[0].namespace("20i-stack")).parse()?;
                let version: stack_images::ReleaseVersion = "1.0.2".parse()?;
                SiteImage::Real {
                    php: *php,
                    release: release.tagged(&stack_images::tags::pin_tag(&version, *php)),
                    // By digest: `docker build` takes a local image of the same name first, and an earlier
                    // bench's busybox base may be kept under it.
                    base: {
                        let base: stack_images::ImageRef = format!(
                            "{}/fixtures/php-standin:{}",
                            self.bases.namespace("x").host(),
                            stack_images::bases::base_tag(*php)
                        )
                        .parse()?;
                        let digest = stack_images::registry::RegistryClient::from_env()?
                            .head_manifest(&base)?
                            .digest;
                        base.repository().at(&digest).to_string()
                    },
                }
            }
            _ => SiteImage::Busybox,
        };
        eprintln!("==> launcher: PHP-FPM image {}", image.describe());
        let site = Site::new(&self.scratch, launcher, &self.bases, &image)?;
        let result = self.launcher_rounds(&site, rounds, raw);
        site.tear_down();
        result
    }

    fn launcher_rounds(&self, site: &Site, rounds: u32, raw: &mut Raw) -> anyhow::Result<()> {
        let docker = Docker::new()?;
        for round in 0..rounds {
            eprintln!("==> launcher round {} of {}", round + 1, rounds);
            // First start: nothing cached, neither the image nor any build layer.
            site.run(&["destroy"], &[])?;
            forget_image(&docker, &site.image);
            self.prune_build_cache()?;
            raw.first_pull_s.push(site.run(&["start"], &[])?);
            site.run(&["destroy"], &[])?;
            forget_image(&docker, &site.local_image);
            self.prune_build_cache()?;
            raw.first_build_s
                .push(site.run(&["start"], &[("USE_PREBUILT", "false")])?);

            // Cached: the image is in the store (pulled once more here), the containers exist, stopped.
            site.run(&["destroy"], &[])?;
            site.run(&["start"], &[])?;
            site.run(&["stop"], &[])?;
            let before = self.bases.requests();
            raw.cached_start_s.push(site.run(&["start"], &[])?);
            raw.cached_start_requests
                .push((self.bases.requests() - before) as f64);
            site.run(&["stop"], &[])?;
            site.compose(
                &docker,
                &[
                    "up",
                    "--detach",
                    "--wait",
                    "--wait-timeout",
                    "90",
                    "--remove-orphans",
                ],
            )?;
            site.compose(&docker, &["stop"])?;
            raw.compose_s.push(site.compose(
                &docker,
                &[
                    "up",
                    "--detach",
                    "--wait",
                    "--wait-timeout",
                    "90",
                    "--remove-orphans",
                ],
            )?);
            site.compose(&docker, &["stop"])?;

            // `20i image` against a process that does nothing: what the launcher adds to a command.
            let image = format!("{} image", site.binary.display());
            let [image, truth] = site.hyperfine(&self.scratch, &[&image, "true"])?;
            raw.image_ms.push(1000.0 * image.mean);
            raw.true_ms.push(1000.0 * truth.mean);
        }
        Ok(())
    }
}

/// Bytes stored by each registry of a pair (canonical, mirror).
fn stored(pair: &[Loopback; 2]) -> [u64; 2] {
    [pair[0].stored_bytes(), pair[1].stored_bytes()]
}

fn grown(before: [u64; 2], after: [u64; 2]) -> [u64; 2] {
    [
        after[0].saturating_sub(before[0]),
        after[1].saturating_sub(before[1]),
    ]
}

fn phase_seconds(outcome: &Outcome, phases: &[&str]) -> f64 {
    outcome
        .timings
        .iter()
        .filter(|(name, _)| phases.contains(name))
        .map(|(_, d)| d.as_secs_f64())
        .sum()
}

impl Bench {
    /// Empties the local build cache, so the next build starts cold (the registry cache is untouched); with
    /// `--keep-build-cache`, does nothing.
    fn prune_build_cache(&self) -> anyhow::Result<()> {
        if !self.prune {
            return Ok(());
        }
        Docker::new()?
            .run(&DockerCommand::new(["buildx", "prune", "--all", "--force"]))
            .context("emptying the build cache (docker buildx prune -af)")
    }
}

fn forget_image(docker: &Docker, reference: &str) {
    let _ = docker.run(&DockerCommand::new(["image", "rm", "--force", reference]));
}

fn timed(mut command: Command) -> anyhow::Result<f64> {
    let started = Instant::now();
    let output = command.output().context("starting a timed command")?;
    let took = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(took)
}

/// The loop many projects run: one multi-platform `docker buildx build --push` per PHP line, tagged with every
/// tag the release publishes in every registry, with the release's build arguments and context.
fn naive_commands(plan: &Plan) -> Vec<DockerCommand> {
    plan.builds
        .iter()
        .map(|build| {
            let mut tags = vec![build.pin.clone()];
            tags.extend(plan.mirrors.iter().map(|m| build.pin.in_namespace(m)));
            tags.extend(plan.steps.iter().filter_map(|step| match step {
                Step::Tag(TagStep { php, to, .. }) if *php == build.php => Some(to.clone()),
                _ => None,
            }));
            let context = project_root().join(&build.context);
            let dockerfile = build.dockerfile.rsplit('/').next().unwrap_or("Dockerfile");
            let mut args = vec![
                "buildx".to_owned(),
                "build".to_owned(),
                "--platform".to_owned(),
                build.platforms.join(","),
                "--push".to_owned(),
            ];
            for tag in tags {
                args.extend(["--tag".to_owned(), tag.to_string()]);
            }
            for (key, value) in &build.build_args {
                args.extend(["--build-arg".to_owned(), format!("{key}={value}")]);
            }
            args.extend([
                "--file".to_owned(),
                context.join(dockerfile).display().to_string(),
                context.display().to_string(),
            ]);
            DockerCommand::new(args)
        })
        .collect()
}

/// PHP 8.1 … 8.9 and 9.0: ten lines for the verification curve (only the first `n` of them are released).
fn verify_lines() -> Vec<PhpLine> {
    (1..=9)
        .map(|minor| PhpLine::new(8, minor))
        .chain([PhpLine::new(9, 0)])
        .collect()
}

/// A matrix with these lines (the last is the default); registries, bases and context are replaced by flags.
fn matrix_text(lines: &[PhpLine], platforms: &[String]) -> String {
    let mut text = String::from(
        "image = \"php-fpm\"\ntitle = \"bench\"\ndescription = \"bench\"\nsource = \"https://example.invalid\"\n\
         dockerfile = \"php-fpm/Dockerfile\"\nbases = \"bench.lock.toml\"\n",
    );
    let default = lines.last().expect("at least one line");
    let _ = write!(
        text,
        "default_line = \"{default}\"\nplatforms = [{}]\nattestations = \"provenance\"\n\
         [registries]\ncanonical = \"127.0.0.1:1/unused\"\nmirrors = []\n",
        platforms
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for php in lines {
        let _ = write!(text, "[[lines]]\nphp = \"{php}\"\n");
    }
    text
}

/// The PHP-FPM image the launcher's sections pull, and build with `USE_PREBUILT=false`.
enum SiteImage {
    /// The busybox stand-in (PHP 8.5's tag).
    Busybox,
    /// A real-PHP release pin, copied registry-side under the launcher's tag; built locally over `base`.
    Real {
        php: PhpLine,
        release: stack_images::ImageRef,
        base: String,
    },
}

impl SiteImage {
    fn describe(&self) -> String {
        match self {
            SiteImage::Busybox => "the busybox stand-in (no PHP)".to_owned(),
            SiteImage::Real { php, release, .. } => {
                format!("real PHP {php} (the release's {release}; built locally over the same Debian base)")
            }
        }
    }
}

/// A project directory, HOME and stack for `20i`, on the service stand-ins and a PHP-FPM image published to
/// the bench's bases registry under the launcher's own tag scheme.
struct Site {
    binary: PathBuf,
    home: PathBuf,
    code: PathBuf,
    project: String,
    env: Vec<(String, String)>,
    image: String,
    local_image: String,
}

impl Site {
    fn new(
        scratch: &Path,
        binary: PathBuf,
        registry: &Loopback,
        php_fpm: &SiteImage,
    ) -> anyhow::Result<Site> {
        services::service_standins()?;
        let home = scratch.join("home");
        let project = format!("bench-{}", std::process::id());
        let code = home.join(&project);
        std::fs::create_dir_all(&code)?;
        std::fs::write(code.join("index.html"), "bench\n")?;
        let context = home.join("php-fpm-standin");
        let namespace = registry.namespace("launcher");
        let version: stack_images::ReleaseVersion = env!("CARGO_PKG_VERSION").parse()?;
        let php = match php_fpm {
            SiteImage::Busybox => PhpLine::new(8, 5),
            SiteImage::Real { php, .. } => *php,
        };
        let pin = stack_images::tags::pin_tag(&version, php);
        let name: stack_images::RepoName = "php-fpm".parse()?;
        let image = namespace.repository(&name).tagged(&pin);
        match php_fpm {
            SiteImage::Busybox => {
                services::write_php_fpm_standin_context(&context)?;
                fixtures::push_busybox(&image.to_string(), services::PHP_FPM_STANDIN_LINES, false)
                    .with_context(|| format!("publishing the PHP-FPM stand-in {image}"))?;
            }
            SiteImage::Real { release, base, .. } => {
                standins::write_local_context(&context, base)?;
                stack_images::registry::RegistryClient::from_env()?
                    .copy(release, &image)
                    .with_context(|| format!("copying {release} to {image}"))?;
            }
        }
        let image = image.to_string();
        let [web, database, admin] = services::free_ports()?.map(|p| p.to_string());
        let env = vec![
            ("PHP_VERSION".to_owned(), php.to_string()),
            ("IMAGE_REGISTRY".to_owned(), namespace.to_string()),
            ("IMAGE_MIRRORS".to_owned(), String::new()),
            ("PHP_FPM_CONTEXT".to_owned(), context.display().to_string()),
            ("COMPOSE_PROJECT_NAME".to_owned(), project.clone()),
            ("HOST_PORT".to_owned(), web),
            ("MYSQL_PORT".to_owned(), database),
            ("PMA_PORT".to_owned(), admin),
            ("NGINX_IMAGE".to_owned(), services::NGINX_STANDIN.to_owned()),
            (
                "MARIADB_IMAGE".to_owned(),
                services::MARIADB_STANDIN.to_owned(),
            ),
            (
                "PMA_IMAGE".to_owned(),
                services::PHPMYADMIN_STANDIN.to_owned(),
            ),
            ("WAIT_TIMEOUT".to_owned(), "90".to_owned()),
        ];
        let site = Site {
            binary,
            home,
            code,
            project,
            env,
            local_image: format!("20i-local/php-fpm:{pin}"),
            image,
        };
        site.run(&["init"], &[])?;
        let printed = site.command(&["image"], &[]).output()?;
        let printed = String::from_utf8_lossy(&printed.stdout);
        if printed.trim() != site.image {
            bail!(
                "20i image prints {} where the bench published {}",
                printed.trim(),
                site.image
            );
        }
        Ok(site)
    }

    fn command(&self, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let mut command = self.in_site(&self.binary);
        command.args(args);
        command.envs(extra.iter().copied());
        command
    }

    /// `program` in the project directory, with the site's HOME and values and nothing else of this process's
    /// environment but PATH (and DOCKER).
    fn in_site(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.code)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home);
        if let Some(docker) = std::env::var_os("DOCKER") {
            command.env("DOCKER", docker);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `hyperfine` over `commands` (each split on spaces, no shell) in the site, [`IMAGE_ITERATIONS`] runs each
    /// after a warm-up: what hyperfine measured, command by command.
    fn hyperfine<const N: usize>(
        &self,
        scratch: &Path,
        commands: &[&str; N],
    ) -> anyhow::Result<[Hyperfine; N]> {
        let export = scratch.join("hyperfine.json");
        let mut command = self.in_site(Path::new("hyperfine"));
        command
            .args(["--shell=none", "--warmup", "3", "--style", "none", "--runs"])
            .arg(IMAGE_ITERATIONS.to_string())
            .arg("--export-json")
            .arg(&export)
            .args(commands);
        timed(command).context("hyperfine (run `make setup` to install it)")?;
        let text = std::fs::read_to_string(&export)
            .with_context(|| format!("reading {}", export.display()))?;
        let results = read_hyperfine(&text)
            .with_context(|| format!("reading hyperfine's {}", export.display()))?;
        results.try_into().map_err(|results: Vec<Hyperfine>| {
            anyhow::anyhow!("hyperfine timed {} commands of {N}", results.len())
        })
    }

    /// Runs `20i ARGS`; its wall time in seconds.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> anyhow::Result<f64> {
        timed(self.command(args, extra)).with_context(|| format!("20i {}", args.join(" ")))
    }

    /// `docker compose` of the same compose file and values, as a project of its own; its wall time.
    fn compose(&self, docker: &Docker, args: &[&str]) -> anyhow::Result<f64> {
        let file = self.home.join("docker/20i-stack/docker-compose.yml");
        let project = format!("{}-compose", self.project);
        let mut argv = vec!["compose", "--project-name", &project, "--file"];
        let file = file.display().to_string();
        argv.push(&file);
        argv.extend(args);
        let mut env: Vec<(String, String)> = self.env.clone();
        env.push(("CODE_DIR".to_owned(), self.code.display().to_string()));
        env.push(("PHP_FPM_IMAGE".to_owned(), self.image.clone()));
        let started = Instant::now();
        docker
            .output_with_env(&DockerCommand::new(argv), &env)
            .with_context(|| format!("docker compose {}", args.join(" ")))?;
        Ok(started.elapsed().as_secs_f64())
    }

    fn tear_down(&self) {
        let _ = self.run(&["destroy"], &[]);
        if let Ok(docker) = Docker::new() {
            let _ = self.compose(&docker, &["down", "--volumes", "--remove-orphans"]);
            forget_image(&docker, &self.image);
            forget_image(&docker, &self.local_image);
        }
    }
}

/// How a bench release runs: the release's own flags, as `cargo xtask release` would take them.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Read and write the registry build cache (else `--no-build-cache`).
    build_cache: bool,
    /// Seed the registries with the bases' blobs while building (else `--no-seed`).
    seed: bool,
    resume: bool,
}

impl Run {
    /// A first release, as the release workflow runs it (the local build cache is emptied by the caller).
    const COLD: Run = Run {
        build_cache: true,
        seed: true,
        resume: false,
    };
    /// `--no-build-cache`.
    const NO_CACHE: Run = Run {
        build_cache: false,
        ..Run::COLD
    };
}

/// Every time measured, in seconds unless named otherwise.
#[derive(Debug, Default)]
struct Raw {
    /// What the releases built, said in the report.
    context: String,
    release_s: Vec<f64>,
    /// The cold release's phases, in the order they ran.
    release_phases: Vec<(&'static str, Vec<f64>)>,
    naive_s: Vec<f64>,
    /// Naive builds run again after a transient failure, over every round.
    naive_retries: usize,
    /// Bytes stored by each side, per registry (canonical, mirror).
    release_bytes: Vec<[u64; 2]>,
    naive_bytes: Vec<[u64; 2]>,
    release_builds: String,
    naive_builds: String,
    warm_s: Vec<f64>,
    cold_s: Vec<f64>,
    warm_build_s: Vec<f64>,
    cold_build_s: Vec<f64>,
    outside_build_s: Vec<f64>,
    outside_build_share: Vec<f64>,
    /// The cold release again, with `--no-seed`.
    unseeded_s: Vec<f64>,
    unseeded_build_s: Vec<f64>,
    unseeded_outside_build_s: Vec<f64>,
    verify_s: std::collections::BTreeMap<usize, Vec<f64>>,
    cached_start_s: Vec<f64>,
    cached_start_requests: Vec<f64>,
    compose_s: Vec<f64>,
    image_ms: Vec<f64>,
    true_ms: Vec<f64>,
    first_pull_s: Vec<f64>,
    first_build_s: Vec<f64>,
}

/// Median and spread of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(values: &[f64]) -> Stat {
        if values.is_empty() {
            return Stat {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Stat {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }

    fn show(&self, unit: &str, decimals: usize) -> (String, String) {
        (
            format!("{:.*}{unit}", decimals, self.median),
            format!("{:.*}–{:.*}{unit}", decimals, self.min, decimals, self.max),
        )
    }
}

/// Whether `points` (lines, seconds), sorted by lines, grow at most linearly: each step's time ratio is within
/// its line ratio, with a quarter more allowed for noise on a loaded machine.
fn at_most_linear(points: &[(usize, f64)]) -> bool {
    points.windows(2).all(|pair| {
        let ((n0, t0), (n1, t1)) = (pair[0], pair[1]);
        t1 <= t0.max(0.01) * (n1 as f64 / n0 as f64) * 1.25
    })
}

/// The headline figures, each a ratio or a share of medians.
struct Figures {
    release_vs_naive: f64,
    warm_vs_cold: f64,
    warm_vs_cold_build: f64,
    outside_build_share: f64,
    outside_build_s: f64,
    cached_start_vs_compose: f64,
    cached_start_requests: f64,
    image_ms_over_true: f64,
    first_start_pull_vs_build: f64,
    verify_linear: bool,
}

impl Figures {
    fn of(raw: &Raw) -> Figures {
        let m = |v: &[f64]| Stat::of(v).median;
        Figures {
            release_vs_naive: m(&raw.release_s) / m(&raw.naive_s),
            warm_vs_cold: m(&raw.warm_s) / m(&raw.cold_s),
            warm_vs_cold_build: m(&raw.warm_build_s) / m(&raw.cold_build_s),
            outside_build_share: m(&raw.outside_build_share),
            outside_build_s: m(&raw.outside_build_s),
            cached_start_vs_compose: m(&raw.cached_start_s) / m(&raw.compose_s),
            cached_start_requests: raw
                .cached_start_requests
                .iter()
                .copied()
                .fold(0.0, f64::max),
            image_ms_over_true: m(&raw.image_ms) - m(&raw.true_ms),
            first_start_pull_vs_build: m(&raw.first_pull_s) / m(&raw.first_build_s),
            verify_linear: at_most_linear(&verify_points(raw)),
        }
    }

    fn json(&self, raw: &Raw, rounds: u32) -> serde_json::Value {
        let bytes = |v: &[[u64; 2]], i: usize| v.iter().map(|b| b[i]).collect::<Vec<_>>();
        let verify: serde_json::Map<String, serde_json::Value> = raw
            .verify_s
            .iter()
            .map(|(n, v)| (format!("verify_s_{n}_lines"), json!(v)))
            .collect();
        json!({
            "date": chrono::Utc::now().to_rfc3339(),
            "rounds": rounds,
            "context": raw.context,
            "machine": machine(),
            "release_vs_naive": self.release_vs_naive,
            "warm_vs_cold": self.warm_vs_cold,
            "warm_vs_cold_build": self.warm_vs_cold_build,
            "outside_build_share": self.outside_build_share,
            "outside_build_s": self.outside_build_s,
            "seeded_vs_unseeded": Stat::of(&raw.release_s).median / Stat::of(&raw.unseeded_s).median,
            "cached_start_vs_compose": self.cached_start_vs_compose,
            "cached_start_registry_requests": self.cached_start_requests,
            "image_ms_over_true": self.image_ms_over_true,
            "first_start_pull_vs_build": self.first_start_pull_vs_build,
            "verify_at_most_linear": self.verify_linear,
            "raw": {
                "release_s": raw.release_s,
                "naive_s": raw.naive_s,
                "naive_retries": raw.naive_retries,
                "release_phases_s": raw.release_phases.iter().map(|(p, t)| (p.to_string(), json!(t))).collect::<serde_json::Map<_, _>>(),
                "release_bytes_canonical": bytes(&raw.release_bytes, 0),
                "release_bytes_mirror": bytes(&raw.release_bytes, 1),
                "naive_bytes_canonical": bytes(&raw.naive_bytes, 0),
                "naive_bytes_mirror": bytes(&raw.naive_bytes, 1),
                "warm_s": raw.warm_s,
                "cold_s": raw.cold_s,
                "warm_build_s": raw.warm_build_s,
                "cold_build_s": raw.cold_build_s,
                "outside_build_s": raw.outside_build_s,
                "outside_build_share": raw.outside_build_share,
                "unseeded_s": raw.unseeded_s,
                "unseeded_build_s": raw.unseeded_build_s,
                "unseeded_outside_build_s": raw.unseeded_outside_build_s,
                "verify": verify,
                "cached_start_s": raw.cached_start_s,
                "cached_start_registry_requests": raw.cached_start_requests,
                "compose_up_s": raw.compose_s,
                "image_ms": raw.image_ms,
                "true_ms": raw.true_ms,
                "first_start_pull_s": raw.first_pull_s,
                "first_start_build_s": raw.first_build_s,
            },
        })
    }
}

fn verify_points(raw: &Raw) -> Vec<(usize, f64)> {
    raw.verify_s
        .iter()
        .map(|(n, v)| (*n, Stat::of(v).median))
        .collect()
}

/// Cores and load average, for the record: figures from a loaded machine are read as such.
fn machine() -> serde_json::Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    json!({
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "load_average": load.join(" "),
    })
}

/// Whether `value` meets a target of at most `limit`.
fn status(value: f64, limit: f64) -> String {
    if value.is_nan() {
        "not measured".to_owned()
    } else if value <= limit {
        "meets".to_owned()
    } else {
        "misses".to_owned()
    }
}

fn report(f: &Figures, raw: &Raw) -> String {
    let mut rows = vec![vec![
        "measurement".to_owned(),
        "median".to_owned(),
        "min–max".to_owned(),
    ]];
    // (what, values, unit, decimals)
    let seconds =
        |name: &str, values: &[f64], decimals| (name.to_owned(), values.to_vec(), " s", decimals);
    let mb = |name: &str, v: &[[u64; 2]], i: usize| {
        let values: Vec<f64> = v.iter().map(|b| b[i] as f64 / 1e6).collect();
        (name.to_owned(), values, " MB", 2)
    };
    let mut measured = vec![seconds(
        &format!("release ({})", raw.release_builds),
        &raw.release_s,
        1,
    )];
    for (phase, times) in &raw.release_phases {
        measured.push(seconds(&format!("  {phase}"), times, 2));
    }
    let naive = format!(
        "naive loop ({}, {} retried)",
        raw.naive_builds, raw.naive_retries
    );
    measured.extend([
        seconds(&naive, &raw.naive_s, 1),
        mb("release: bytes stored, canonical", &raw.release_bytes, 0),
        mb("release: bytes stored, mirror", &raw.release_bytes, 1),
        mb("naive: bytes stored, canonical", &raw.naive_bytes, 0),
        mb("naive: bytes stored, mirror", &raw.naive_bytes, 1),
        seconds("release, registry cache only (warm)", &raw.warm_s, 1),
        seconds("release, --no-build-cache (cold)", &raw.cold_s, 1),
        seconds("  build phase, warm", &raw.warm_build_s, 1),
        seconds("  build phase, cold", &raw.cold_build_s, 1),
        seconds("release: time outside the build", &raw.outside_build_s, 2),
        seconds("release, --no-seed (cold)", &raw.unseeded_s, 1),
        seconds("  build phase, --no-seed", &raw.unseeded_build_s, 2),
        seconds(
            "  time outside the build, --no-seed",
            &raw.unseeded_outside_build_s,
            2,
        ),
    ]);
    for (n, v) in &raw.verify_s {
        measured.push(seconds(&format!("verify pins + tags, {n} lines"), v, 3));
    }
    measured.extend([
        seconds("20i start, cached", &raw.cached_start_s, 2),
        seconds("docker compose up --wait, same stack", &raw.compose_s, 2),
        ("20i image".to_owned(), raw.image_ms.clone(), " ms", 1),
        ("true".to_owned(), raw.true_ms.clone(), " ms", 1),
        seconds("first 20i start, pulled", &raw.first_pull_s, 1),
        seconds(
            "first 20i start, built (USE_PREBUILT=false)",
            &raw.first_build_s,
            1,
        ),
    ]);
    for (name, values, unit, decimals) in measured {
        let (median, spread) = Stat::of(&values).show(unit, decimals);
        rows.push(vec![name, median, spread]);
    }

    let figures = vec![
        vec![
            "figure".to_owned(),
            "value".to_owned(),
            "target".to_owned(),
            "status".to_owned(),
        ],
        figure(
            "release_vs_naive",
            f.release_vs_naive,
            "≤ 0.5",
            status(f.release_vs_naive, 0.5),
        ),
        figure(
            "warm_vs_cold",
            f.warm_vs_cold,
            "≤ 0.2",
            status(f.warm_vs_cold, 0.2),
        ),
        figure(
            "  (build phase only)",
            f.warm_vs_cold_build,
            "",
            String::new(),
        ),
        figure(
            "outside_build_share",
            f.outside_build_share,
            "< 0.05 and < 1 s",
            if f.outside_build_share.is_nan() {
                "not measured".to_owned()
            } else if f.outside_build_share < 0.05 && f.outside_build_s < 1.0 {
                "meets".to_owned()
            } else {
                "misses".to_owned()
            },
        ),
        figure(
            "cached_start_vs_compose",
            f.cached_start_vs_compose,
            "≤ 1.10, 0 requests",
            {
                let s = status(f.cached_start_vs_compose, 1.10);
                format!("{s}, {} registry requests", f.cached_start_requests)
            },
        ),
        figure(
            "image_ms_over_true",
            f.image_ms_over_true,
            "< 20 ms",
            status(f.image_ms_over_true, 20.0 - f64::EPSILON),
        ),
        figure(
            "first_start_pull_vs_build",
            f.first_start_pull_vs_build,
            "≤ 0.2",
            status(f.first_start_pull_vs_build, 0.2),
        ),
        vec![
            "verification growth".to_owned(),
            if f.verify_linear {
                "at most linear"
            } else {
                "faster than linear"
            }
            .to_owned(),
            "at most linear".to_owned(),
            if f.verify_linear { "meets" } else { "misses" }.to_owned(),
        ],
    ];
    let mut out = format!(
        "\nMeasured, building {} (docker buildx prune -af emptied this machine's build cache before each cold \
         build, unless --keep-build-cache)\n",
        raw.context
    );
    out.push_str(&table::render(&rows, "  "));
    out.push_str("\nFigures (printed, never asserted; docs/performance.md)\n");
    out.push_str(&table::render(&figures, "  "));
    out
}

fn figure(name: &str, value: f64, target: &str, status: String) -> Vec<String> {
    vec![
        name.to_owned(),
        format!("{value:.3}"),
        target.to_owned(),
        status,
    ]
}

fn join(lines: &[PhpLine]) -> String {
    lines
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperfine_s_export_is_read_command_by_command() {
        // The shape hyperfine 1.15 writes (times and exit codes cut short).
        let json = r#"{"results": [
            {"command": "/t/20i image", "mean": 0.0042, "stddev": 0.0003, "median": 0.0041, "user": 0.002,
             "system": 0.001, "min": 0.0038, "max": 0.0051, "times": [0.0041, 0.0038], "exit_codes": [0, 0]},
            {"command": "true", "mean": 0.0007, "stddev": null, "median": 0.0007, "user": 0.0,
             "system": 0.0005, "min": 0.0006, "max": 0.0009, "times": [0.0007], "exit_codes": [0]}
        ]}"#;
        let results = read_hyperfine(json).unwrap();
        assert_eq!(
            results,
            [
                Hyperfine {
                    command: "/t/20i image".to_owned(),
                    mean: 0.0042,
                    min: 0.0038,
                    max: 0.0051
                },
                Hyperfine {
                    command: "true".to_owned(),
                    mean: 0.0007,
                    min: 0.0006,
                    max: 0.0009
                },
            ]
        );
        assert!(read_hyperfine("{}").is_err());
    }

    #[track_caller]
    fn check_stat(values: &[f64], expected: (f64, f64, f64)) {
        let s = Stat::of(values);
        assert_eq!((s.median, s.min, s.max), expected);
    }

    #[test]
    fn stat_is_median_and_range() {
        check_stat(&[3.0], (3.0, 3.0, 3.0));
        check_stat(&[3.0, 1.0, 2.0], (2.0, 1.0, 3.0));
        check_stat(&[4.0, 1.0, 2.0, 3.0], (2.5, 1.0, 4.0));
        check_stat(&[5.0, 5.0, 9.0], (5.0, 5.0, 9.0));
    }

    #[track_caller]
    fn check_linear(points: &[(usize, f64)], expected: bool) {
        assert_eq!(at_most_linear(points), expected, "{points:?}");
    }

    #[test]
    fn growth_is_linear_within_a_quarter() {
        check_linear(&[(1, 0.1), (5, 0.5), (10, 1.0)], true);
        check_linear(&[(1, 0.1), (5, 0.2), (10, 0.3)], true);
        check_linear(&[(1, 0.1), (5, 0.6), (10, 1.2)], true);
        check_linear(&[(1, 0.1), (5, 0.7), (10, 1.4)], false);
        check_linear(&[(1, 0.1), (5, 0.5), (10, 1.3)], false);
        // Times under 10 ms are noise: growth is judged from 10 ms.
        check_linear(&[(1, 0.001), (5, 0.05), (10, 0.1)], true);
    }

    #[track_caller]
    fn check_status(value: f64, limit: f64, expected: &str) {
        assert_eq!(status(value, limit), expected);
    }

    #[test]
    fn status_against_a_target() {
        check_status(0.4, 0.5, "meets");
        check_status(0.5, 0.5, "meets");
        check_status(0.51, 0.5, "misses");
        check_status(f64::NAN, 0.5, "not measured");
    }

    #[test]
    fn requests_are_access_lines_only() {
        let log = "time=\"2026\" level=info msg=\"response completed\" http.request.method=GET\n\
                   127.0.0.1 - - [26/Nov/2026:08:00:00 +0000] \"GET /v2/ HTTP/1.1\" 200 2 \"\" \"docker\"\n\
                   127.0.0.1 - - [26/Nov/2026:08:00:01 +0000] \"HEAD /v2/x/manifests/y HTTP/1.1\" 200 0 \"\" \"\"\n";
        assert_eq!(count_requests(log), 2);
        assert_eq!(count_requests(""), 0);
    }

    #[test]
    fn bench_matrices_parse_with_their_lines() {
        for n in VERIFY_LINE_COUNTS {
            let lines = &verify_lines()[..n];
            let platforms = ["linux/amd64".to_owned()];
            let matrix = Matrix::parse(&matrix_text(lines, &platforms)).unwrap();
            assert_eq!(matrix.platforms, platforms);
            assert_eq!(matrix.php_lines(), lines);
            assert_eq!(matrix.default_line, *lines.last().unwrap());
        }
    }

    #[test]
    fn bench_flags_parse() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchCmd,
        }
        use clap::Parser;
        let cli = Cli::try_parse_from(["bench", "--rounds", "1", "--lines", "2", "--port", "6000"])
            .unwrap();
        assert_eq!(
            (cli.bench.rounds, cli.bench.lines, cli.bench.port),
            (1, Some(2), 6000)
        );
        let context =
            |arg: &str| Cli::try_parse_from(["bench", "--context", arg]).map(|c| c.bench.context);
        assert_eq!(context("real").unwrap(), Some(ContextChoice::Real));
        assert_eq!(context("busybox").unwrap(), Some(ContextChoice::Busybox));
        assert_eq!(
            context("ctx/php").unwrap(),
            Some(ContextChoice::Dir("ctx/php".into()))
        );
        assert!(context("").is_err());
        assert!(Cli::try_parse_from(["bench", "--rounds", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--port", "65535"]).is_err());
        assert_eq!(Cli::try_parse_from(["bench"]).unwrap().bench.rounds, 3);
        let skip = |arg: &str| Cli::try_parse_from(["bench", "--skip", arg]).map(|c| c.bench.skip);
        assert_eq!(
            skip("verify,launcher").unwrap(),
            [Skippable::Verify, Skippable::Launcher]
        );
        assert!(skip("release").is_err());
    }
}
