//! `20i start`: get the PHP-FPM image, then `docker compose up --wait` the stack and its modules, and say which
//! image ran, where it came from and how long each step took. `--explain` prints every input instead.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{
    acquire,
    config::{self, Config, Loaded, Source},
    engine::Engine,
    exit::Exit,
    fetch::{self, Fetched},
    preflight,
    selection::{self, BaseImage, Build, Decision},
    stack::{self, Compose, Health, Unready},
    summary::{self, Phase, Step, Times},
};

/// An `up --wait` that returns this close to its timeout may have given up on a service without saying so.
const UP_TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

pub fn run(config: &Config, started: Instant, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut log = std::io::stderr();
    ensure_stack(config, &mut log)?;
    if let Some(warning) = config.exposed_defaults_warning() {
        writeln!(log, "warning: {warning}")?;
    }
    // The stack's files first, then compose's reading of them, and only then the image: a broken file is
    // reported as one, before anything is pulled or built. A cached image needs neither, so then compose reads
    // the files only in `up` (which loads them before it touches a container), and `config` runs only if `up`
    // fails, to tell a broken file from an unhealthy stack: one docker process fewer on every cached start.
    let mut compose = Compose::new(config, &config.selected_reference())?;
    let engine = Engine::new()?;
    preflight::before_start(config, &engine)?;
    // Every image compose will run that the local store lacks is pulled now, alongside the PHP-FPM image, so
    // that `up` has nothing left to pull; with anything to pull, compose reads the files first.
    let survey = fetch::survey(
        &engine,
        config,
        fetch::stack_images(&engine, config, &compose)?,
    )?;
    let missing = survey.missing;
    let mut validated = false;
    if !missing.is_empty() {
        compose.validate(&engine, config)?;
        validated = true;
    }
    let fetched = fetch::fetch(
        &engine,
        config,
        &missing,
        &mut || {
            if !validated {
                compose.validate(&engine, config)?;
                validated = true;
            }
            Ok(())
        },
        survey.php_fpm,
    )?;
    let acquired = &fetched.acquired;
    compose.set_image(&acquired.reference);
    let timeout = config.wait_timeout.to_string();
    let up = compose.command([
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        &timeout,
        "--remove-orphans",
    ]);
    let up_started = Instant::now();
    let ps = compose.command(["ps", "--all", "--format", "json"]);
    let health = || -> anyhow::Result<Health> {
        let listing = engine
            .output_with_env(&ps, &compose.env)
            .context("listing the stack's containers")?;
        stack::health(&String::from_utf8_lossy(&listing))
    };
    if let Err(error) = engine.output_with_env(&up, &compose.env) {
        if !validated {
            compose.validate(&engine, config)?;
        }
        // Compose's own message names a container, not what went wrong in it: the services' state and the end
        // of their logs do. Compose gave up before WAIT_TIMEOUT: a service still starting now (a crash loop
        // restarts) failed.
        let timed_out =
            up_started.elapsed() >= Duration::from_secs(config.wait_timeout.get().into());
        let what = config.redact(&error.to_string());
        let health = match health().unwrap_or(Health::Ready) {
            Health::Starting(services) if !timed_out => Health::Failed(services),
            other => other,
        }
        .with_failed(stack::failed_in_compose_error(&what, &compose.project));
        return Err(not_started(config, &engine, &compose, &health, &what).into());
    }
    // `up --wait` of compose 2.26 was seen returning 0 after its timeout with a service still starting: then the
    // health of every container is checked here too, until the same deadline. An `up` that returned well before
    // its timeout saw every service healthy, and is taken at its word (one docker process fewer).
    let wait = Duration::from_secs(config.wait_timeout.get().into());
    let deadline = up_started + wait;
    while up_started.elapsed() + UP_TIMEOUT_MARGIN >= wait {
        match health()? {
            Health::Ready => break,
            Health::Starting(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            health => {
                return Err(not_started(config, &engine, &compose, &health, "").into());
            }
        }
    }
    let up_took = up_started.elapsed();
    report(
        &mut out, config, &fetched, &compose, up_took, &engine, started, json,
    )?;
    Ok(())
}

/// Lines of a failing service's log shown by `20i start`.
const LOG_TAIL_LINES: &str = "15";

/// Why the stack did not start: each service that is not ready, with the end of its log, and what to do. A
/// service that failed is named first; waiting longer helps only when every one was still starting.
fn not_started(
    config: &Config,
    engine: &Engine,
    compose: &Compose,
    health: &Health,
    compose_error: &str,
) -> Exit {
    use std::fmt::Write as _;
    let timeout = config.wait_timeout;
    let list = |services: &[Unready]| {
        services
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let waiting = "see `20i status` and `20i logs`, or raise WAIT_TIMEOUT".to_owned();
    let (headline, services, fix) = match health {
        Health::Failed(services) if services.is_empty() => (
            "the stack did not start: compose created no container".to_owned(),
            services.as_slice(),
            "see `20i status` and `20i logs`".to_owned(),
        ),
        Health::Failed(services) => (
            format!("the stack did not start, failing: {}", list(services)),
            services.as_slice(),
            format!(
                "fix what its log says (`20i logs {}` shows all of it), then run `20i start` again",
                services[0].service
            ),
        ),
        Health::Starting(services) => (
            format!(
                "the stack did not start healthy within WAIT_TIMEOUT={timeout} s, still starting: {}",
                list(services)
            ),
            services.as_slice(),
            waiting,
        ),
        Health::Ready => ("the stack did not start".to_owned(), &[][..], waiting),
    };
    let mut text = format!("{headline}: {fix}");
    for unready in services {
        let tail = compose.command([
            "logs",
            "--no-color",
            "--no-log-prefix",
            "--tail",
            LOG_TAIL_LINES,
            "--",
            unready.service.as_str(),
        ]);
        let logs = engine
            .output_with_env(&tail, &compose.env)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|error| format!("(its log could not be read: {error})"));
        let _ = write!(text, "\nthe last lines of {}'s log:", unready.service);
        for line in logs.lines().map(without_escapes) {
            if !line.trim().is_empty() {
                let _ = write!(text, "\n  {line}");
            }
        }
    }
    if !compose_error.is_empty() {
        let _ = write!(text, "\n{compose_error}");
    }
    Exit::stack(config.redact(&text))
}

/// `line` without terminal escape sequences (`ESC [ ... letter`): compose writes some even with `--no-color`.
fn without_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// With the default STACK_DIR absent, the shipped stack is written there first (what `20i init` does).
fn ensure_stack(config: &Config, log: &mut dyn Write) -> anyhow::Result<()> {
    let derived = matches!(
        config.entry("STACK_FILE").map(|e| &e.source),
        Some(Source::Derived(_))
    );
    if derived && !config.stack_dir.exists() {
        let written = stack::write_shipped(&config.stack_dir, false)?;
        writeln!(
            log,
            "wrote the shipped stack to {} ({} files; `20i init` does the same)",
            config.stack_dir.display(),
            written.len()
        )?;
    }
    Ok(())
}

/// The summary after a start: one `docker ps` and one `docker image inspect` (for the digest) more.
#[allow(clippy::too_many_arguments)]
fn report(
    out: &mut dyn Write,
    config: &Config,
    fetched: &Fetched,
    compose: &Compose,
    up_took: Duration,
    engine: &Engine,
    started: Instant,
    json: bool,
) -> anyhow::Result<()> {
    let acquired = &fetched.acquired;
    let modules = compose.files.len() - 1;
    let started_what = if modules == 0 {
        "started the stack, every service healthy".to_owned()
    } else {
        format!("started the stack and {modules} module(s), every service healthy")
    };
    let mut steps: Vec<Step> = acquired
        .steps
        .iter()
        .map(|(what, took)| Step {
            phase: summary::phase_of(what),
            what: what.clone(),
            seconds: took.as_secs_f64(),
        })
        .collect();
    for (image, took) in &fetched.pulled {
        steps.push(Step {
            phase: Phase::Pull,
            what: format!("pulled the {} image {}", image.label, image.reference),
            seconds: took.as_secs_f64(),
        });
    }
    if !fetched.pulled.is_empty() {
        steps.push(Step {
            phase: Phase::Pull,
            what: format!("pulled {} images at once", fetched.pulled.len() + 1),
            seconds: fetched.took.as_secs_f64(),
        });
    }
    steps.push(Step {
        phase: Phase::Start,
        what: started_what,
        seconds: up_took.as_secs_f64(),
    });
    let listed =
        summary::list(engine, &compose.project).context("listing the stack's containers")?;
    let image = summary::php_fpm(
        engine,
        &acquired.reference,
        Some(acquired.origin.to_string()),
    );
    let mut summary = summary::gather(config, &listed, image, steps);
    let total = started.elapsed();
    let docker = engine.docker_time();
    summary.time = Some(Times {
        total_seconds: total.as_secs_f64(),
        docker_seconds: docker.as_secs_f64(),
        launcher_seconds: total.saturating_sub(docker).as_secs_f64(),
    });
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&summary)?)
    } else if std::io::stdout().is_terminal() {
        // On a terminal the site's URL is what the eye finds first: its line in bold.
        let text = summary::render(&summary);
        match text.split_once('\n') {
            Some((first, rest)) => format!("\x1b[1m{first}\x1b[0m\n{rest}"),
            None => text,
        }
    } else {
        summary::render(&summary)
    };
    out.write_all(config.redact(&text).as_bytes())?;
    Ok(())
}

/// `20i start --explain`: every input with its value and source, the layer files, and the decision. Reads the
/// local image store; never contacts a registry and starts nothing.
pub fn explain(loaded: &Loaded) -> anyhow::Result<()> {
    let config = &loaded.config;
    let engine = Engine::new()?;
    // `facts` gives each of its errors its own context (the image store, or the build context).
    let facts = acquire::facts(&engine, config)?;
    let decision = selection::decide(config, &facts);
    let modules = stack::modules(config)?;
    let text = render_explain(
        config,
        &loaded.files,
        &decision,
        &modules,
        config.stack_file.is_file(),
    );
    let text = config.redact(&text);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// The `--explain` text, from data only.
fn render_explain(
    config: &Config,
    files: &[(Source, bool)],
    decision: &Decision,
    modules: &[(String, std::path::PathBuf)],
    stack_file_present: bool,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "image    {}", config.selected_reference());
    let _ = writeln!(out, "\ninputs (value, then where it came from):");
    for entry in &config.entries {
        let about = config::known(&entry.name).map_or("passed to compose as it is", |v| v.about);
        let _ = writeln!(
            out,
            "  {:<28} {:<44} {}\n  {:<28} # {about}",
            entry.name,
            entry.shown(),
            entry.origin(),
            ""
        );
    }
    let _ = writeln!(
        out,
        "\nlayers, lowest first: default, stack vars, user config, project, environment, command line"
    );
    for (source, present) in files {
        let state = if *present { "read" } else { "absent" };
        let _ = writeln!(out, "  {source} ({state})");
    }
    let _ = writeln!(
        out,
        "\ndecision (from the local image store only; no registry was asked):"
    );
    let context = config.build_context.display();
    let fallback = if config.allow_fallback {
        format!("build locally from {context} (ALLOW_LOCAL_BUILD_FALLBACK=true)")
    } else {
        "stop with the reason and what to do (ALLOW_LOCAL_BUILD_FALLBACK=false)".to_owned()
    };
    let _ = match decision {
        Decision::Cached { reference } => writeln!(
            out,
            "  {reference} is in the local image store: start uses it, with no registry request"
        ),
        Decision::Pull { reference, why } => {
            let _ = writeln!(
                out,
                "  {reference}: {why}, so start pulls it (retried while the registry is unreachable or rate \
                 limited; stopped after PULL_STALL_TIMEOUT={} s without progress, PULL_TIMEOUT={} s in all)",
                config.pull_stall_timeout, config.pull_timeout
            );
            if !config.mirrors.is_empty() {
                let mirrors: Vec<String> = config.mirrors.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    out,
                    "  if {} is unreachable, rate limited, stalled or serves damaged bytes: the same tag from {}",
                    config.registry,
                    mirrors.join(", ")
                );
            }
            if let Some(pin) = config.pinned_digest() {
                let _ = writeln!(out, "  a pulled image whose digest is not {pin} is refused");
            }
            writeln!(out, "  if the pull fails: {fallback}")
        }
        Decision::Local(Build::Reuse { reference }) => writeln!(
            out,
            "  USE_PREBUILT=false: {reference} was built from the current {context}: start reuses it"
        ),
        Decision::Local(Build::Build { reference, why }) => writeln!(
            out,
            "  USE_PREBUILT=false: start builds {reference} from {context} ({why})"
        ),
    };
    let _ = match selection::base_image(config) {
        BaseImage::Pinned { base, from } => {
            writeln!(
                out,
                "  a local build's base: {base} (pinned by digest, from {from})"
            )
        }
        BaseImage::Unpinned { why } => writeln!(out, "  a local build's base is not pinned: {why}"),
    };
    let _ = writeln!(out, "\ncompose (project {}):", config.project);
    let state = if stack_file_present {
        ""
    } else {
        " (absent: run `20i init`, or set STACK_DIR or STACK_FILE)"
    };
    let _ = writeln!(out, "  {}{state}", config.stack_file.display());
    for (name, file) in modules {
        let _ = writeln!(out, "  {} (module {name})", file.display());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{parse_env_file, resolve, Inputs, Layer};

    #[track_caller]
    fn check_escapes(line: &str, expected: &str) {
        assert_eq!(without_escapes(line), expected);
    }

    #[test]
    fn log_lines_lose_terminal_escapes_only() {
        check_escapes("\x1b[2Knginx-1  | ok", "nginx-1  | ok");
        check_escapes("\x1b[1;31merror\x1b[0m: x", "error: x");
        check_escapes(
            "[emerg] 1#1: in default.conf:11",
            "[emerg] 1#1: in default.conf:11",
        );
        check_escapes("a\x1bb", "a");
        check_escapes("", "");
    }

    #[test]
    fn explain_text() {
        let layer = |source: Source, text: &str| {
            let mut values = parse_env_file(text).unwrap();
            if matches!(source, Source::Environment | Source::Flag) {
                for setting in &mut values {
                    setting.place = None;
                }
            }
            Layer { source, values }
        };
        let user = PathBuf::from("/home/u/.20i/config");
        let local = PathBuf::from("/work/site/.20i-local");
        let config = resolve(&Inputs {
            home: PathBuf::from("/home/u"),
            cwd: PathBuf::from("/work/site"),
            layers: vec![
                layer(
                    Source::UserConfig(user.clone()),
                    "PHP_VERSION=8.3\nALLOW_LOCAL_BUILD_FALLBACK=0\n",
                ),
                layer(
                    Source::ProjectLocal(local.clone()),
                    "PHP_VERSION=8.4\nMYSQL_PASSWORD=s3cret\nXDEBUG_MODE=debug\n",
                ),
                layer(Source::Environment, "HOST_PORT=8080\n"),
                layer(Source::Flag, "IMAGE_REGISTRY=127.0.0.1:5000/stack\n"),
            ],
        })
        .unwrap();
        let files = [
            (
                Source::StackVars(PathBuf::from(
                    "/home/u/docker/20i-stack/config/stack-vars.yml",
                )),
                true,
            ),
            (Source::UserConfig(user), true),
            (Source::ProjectLocal(local), true),
        ];
        let decision = selection::decide(&config, &selection::Facts::default());
        let modules = [(
            "queue".to_owned(),
            PathBuf::from("/home/u/.20i/modules/queue/docker-compose.yml"),
        )];
        let text = render_explain(&config, &files, &decision, &modules, true);
        assert!(!text.contains("s3cret"));
        let mut settings = insta::Settings::clone_current();
        // The base digests change with every `cargo xtask bases refresh`.
        settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[digest]");
        settings.bind(|| {
            insta::assert_snapshot!(text.replace(env!("CARGO_PKG_VERSION"), "X.Y.Z"));
        });
    }
}
