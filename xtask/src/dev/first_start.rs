//! The first start measured: `20i start` on a store that holds none of the stack's four images, which it pulls
//! at once, against the same four images pulled one after another (`docker pull`), side by side in one run
//! (`cargo xtask bench --first-start-only`, seconds; and at the end of `make bench`). Printed as a ratio to the
//! slowest single pull, target at most 1.1x; never asserted.
//!
//! Every image is a loopback registry's copy of a stand-in with a layer of random bytes on top
//! (`testkit::noise`), new for every round and every side, so each pull downloads it whatever the store held.
//! Two links: the registry as it is (loopback, where the two cores' hashing and unpacking are what is shared),
//! and behind the fault proxy's throttle (each blob trickled, as over a far registry's connections).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use stack_images::docker::{Docker, DockerCommand};
use testkit::{
    faults::{Fault, FaultProxy, RequestKind},
    fixtures, stack as services, Registry,
};

/// Random bytes on top of each image.
const NOISE_BYTES: usize = 8_000_000;
/// The throttled link: this many bytes, then this pause, per blob request (about 2.6 MB/s per connection).
const TRICKLE: (usize, Duration) = (128 * 1024, Duration::from_millis(50));
const LINE: &str = "8.5";

/// What one link measured, one value per round.
#[derive(Debug, Default)]
pub struct Side {
    pub link: &'static str,
    /// The launcher's "pulled 4 images at once" step.
    pub at_once_s: Vec<f64>,
    /// The whole first start (pulls, `up --wait`, summary).
    pub first_start_s: Vec<f64>,
    /// The four `docker pull`s one after another: the slowest and the sum.
    pub slowest_s: Vec<f64>,
    pub sum_s: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs the comparison `rounds` times on both links and prints it; the figures are returned too.
pub fn run(rounds: u32, scratch: &Path) -> anyhow::Result<Vec<Side>> {
    eprintln!("==> first start: building target/debug/20i and the service stand-ins");
    let binary = crate::dev::demo::build_launcher()?;
    services::service_standins()?;
    let registry = Registry::start()?;
    let host = registry.host();
    let version: stack_images::ReleaseVersion = env!("CARGO_PKG_VERSION").parse()?;
    let pin = stack_images::tags::pin_tag(&version, LINE.parse()?);
    let docker = Docker::new()?;
    // The bases the noisy copies are made from, pushed once.
    fixtures::push_busybox(
        &format!("{host}/stack/php-fpm:base"),
        services::PHP_FPM_STANDIN_LINES,
        false,
    )?;
    for (local, name) in images().iter().skip(1).map(|(_, l, n)| (l, n)) {
        let remote = format!("{host}/stack/{name}:base");
        docker.run(&DockerCommand::new(["tag", local, &remote]))?;
        docker.run(&DockerCommand::new(["push", "--quiet", &remote]))?;
        let _ = docker.run(&DockerCommand::new(["image", "rm", &remote]));
    }
    let mut sides = Vec::new();
    for throttled in [false, true] {
        let proxy = FaultProxy::in_front_of(&registry)?;
        if throttled {
            proxy.set(
                RequestKind::BlobGet,
                Fault::Trickle {
                    chunk: TRICKLE.0,
                    pause: TRICKLE.1,
                },
            );
        }
        let mut side = Side {
            link: if throttled {
                "throttled (2.6 MB/s per connection)"
            } else {
                "loopback"
            },
            ..Side::default()
        };
        for round in 0..rounds {
            eprintln!(
                "==> first start, {} link, round {} of {rounds}",
                side.link,
                round + 1
            );
            let tag = format!("r{round}-{throttled}-{}", std::process::id());
            // One after another.
            let mut singles = Vec::new();
            for (_, _, name) in images() {
                let to = format!("{name}-seq-{tag}");
                testkit::noise::noisy(&host, &format!("stack/{name}"), "base", &to, NOISE_BYTES)?;
                let reference = format!("{}/{name}:{to}", proxy.namespace("stack"));
                let started = Instant::now();
                docker.run(&DockerCommand::new(["pull", "--quiet", &reference]))?;
                singles.push(started.elapsed().as_secs_f64());
                let _ = docker.run(&DockerCommand::new(["image", "rm", &reference]));
            }
            side.slowest_s
                .push(singles.iter().copied().fold(0.0, f64::max));
            side.sum_s.push(singles.iter().sum());
            // At once, by `20i start`.
            let site = scratch.join(format!("first-start-{tag}"));
            let (took, at_once) = first_start(&binary, &site, &host, &proxy, &pin, &tag)?;
            side.first_start_s.push(took);
            side.at_once_s.push(at_once);
        }
        sides.push(side);
    }
    print!("{}", report(&sides));
    Ok(sides)
}

/// `(PHP_FPM variable, local stand-in, repository)` of the four images.
fn images() -> [(&'static str, &'static str, &'static str); 4] {
    [
        ("", "", "php-fpm"),
        ("NGINX_IMAGE", services::NGINX_STANDIN, "nginx"),
        ("MARIADB_IMAGE", services::MARIADB_STANDIN, "mariadb"),
        ("PMA_IMAGE", services::PHPMYADMIN_STANDIN, "phpmyadmin"),
    ]
}

/// One first start of a fresh site whose four images are new noisy copies; its wall time and its "pulled 4
/// images at once" step, in seconds.
fn first_start(
    binary: &Path,
    dir: &Path,
    host: &str,
    proxy: &FaultProxy,
    pin: &stack_images::Tag,
    tag: &str,
) -> anyhow::Result<(f64, f64)> {
    let home = dir.join("home");
    let project = format!("bench-first-{tag}")
        .to_lowercase()
        .replace('_', "-");
    let code = home.join(&project);
    std::fs::create_dir_all(&code)?;
    std::fs::write(code.join("index.html"), "bench\n")?;
    let [web, database, admin] = services::free_ports()?.map(|p| p.to_string());
    let namespace = proxy.namespace("stack");
    let mut env: Vec<(String, String)> = vec![
        ("PHP_VERSION".into(), LINE.into()),
        ("IMAGE_REGISTRY".into(), namespace.clone()),
        ("IMAGE_MIRRORS".into(), String::new()),
        ("HOST_PORT".into(), web),
        ("MYSQL_PORT".into(), database),
        ("PMA_PORT".into(), admin),
        ("WAIT_TIMEOUT".into(), "90".into()),
        ("ALLOW_LOCAL_BUILD_FALLBACK".into(), "false".into()),
    ];
    let mut references = Vec::new();
    for (variable, _, name) in images() {
        let to = if name == "php-fpm" {
            pin.to_string()
        } else {
            format!("{name}-start-{tag}")
        };
        testkit::noise::noisy(host, &format!("stack/{name}"), "base", &to, NOISE_BYTES)?;
        let reference = format!("{namespace}/{name}:{to}");
        if !variable.is_empty() {
            env.push((variable.into(), reference.clone()));
        }
        references.push(reference);
    }
    let docker = Docker::new()?;
    for reference in &references {
        let _ = docker.run(&DockerCommand::new(["image", "rm", reference]));
    }
    let launcher = |args: &[&str]| {
        let mut command = Command::new(binary);
        command
            .args(args)
            .current_dir(&code)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("COMPOSE_PROJECT_NAME", &project)
            .envs(env.iter().map(|(k, v)| (k, v)));
        command
    };
    let ran = launcher(&["init"]).output().context("20i init")?;
    if !ran.status.success() {
        bail!("20i init: {}", String::from_utf8_lossy(&ran.stderr));
    }
    let started = Instant::now();
    let ran = launcher(&["start"]).output().context("20i start")?;
    let took = started.elapsed().as_secs_f64();
    let _ = launcher(&["destroy"]).output();
    for reference in &references {
        let _ = docker.run(&DockerCommand::new(["image", "rm", reference]));
    }
    let stdout = String::from_utf8_lossy(&ran.stdout);
    if !ran.status.success() {
        bail!(
            "20i start failed:\n{stdout}{}",
            String::from_utf8_lossy(&ran.stderr)
        );
    }
    let at_once = at_once_seconds(&stdout).with_context(|| {
        format!("no \"pulled 4 images at once\" in 20i start's summary:\n{stdout}")
    })?;
    let _ = std::fs::remove_dir_all(dir);
    Ok((took, at_once))
}

/// The seconds of the summary's `pulled 4 images at once   1.23 s` (or `456 ms`).
fn at_once_seconds(summary: &str) -> Option<f64> {
    let line = summary.lines().find(|l| l.contains("images at once"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let (value, unit) = (words.get(words.len() - 2)?, words.last()?);
    let value: f64 = value.parse().ok()?;
    Some(match *unit {
        "ms" => value / 1000.0,
        _ => value,
    })
}

/// The comparison as a table: medians, and the ratio to the slowest single pull.
pub fn report(sides: &[Side]) -> String {
    let mut out = String::from(
        "\nfirst start: four images pulled at once by `20i start`, against one `docker pull` after another\n",
    );
    out.push_str(&format!(
        "  each image: a stand-in plus {} MB of random bytes, new every round\n",
        NOISE_BYTES / 1_000_000
    ));
    for side in sides {
        let at_once = median(&side.at_once_s);
        let slowest = median(&side.slowest_s);
        out.push_str(&format!(
            "  {} link, median of {}:\n    pulled at once (20i start)        {at_once:>7.2} s\n    \
             slowest single pull               {slowest:>7.2} s\n    four pulls one after another      {:>7.2} s\n    \
             whole first start (with up --wait) {:>6.2} s\n    ratio at once / slowest single    {:>7.2}x  \
             (target <= 1.10x: {})\n",
            side.link,
            side.at_once_s.len(),
            median(&side.sum_s),
            median(&side.first_start_s),
            at_once / slowest,
            if at_once / slowest <= 1.10 { "meets" } else { "misses" },
        ));
    }
    out
}

/// Where `run` keeps its sites: under the bench's scratch directory.
pub fn scratch(root: &Path) -> PathBuf {
    root.join("first-start")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_step_is_read() {
        assert_eq!(
            at_once_seconds("  pulled 4 images at once      1.25 s\n"),
            Some(1.25)
        );
        assert_eq!(
            at_once_seconds("  pulled 4 images at once      456 ms\n"),
            Some(0.456)
        );
        assert_eq!(at_once_seconds("php-fpm  x (cache)\n"), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
