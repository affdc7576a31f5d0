//! The stack at a glance, as `20i start` ends and `20i status` shows it: the site's URL first (with the real host
//! port), each service with its state, health and where to reach it, the PHP-FPM image with its digest and
//! origin, and (after a start) the time of each step, pulling apart from starting. Text or `--json`.

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

use serde::Serialize;
use stack_images::docker::DockerCommand;

use crate::{acquire, config::Config, engine::Engine};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub project: String,
    /// The site's URL, from nginx's published port; `None` when nginx is not running.
    pub site: Option<String>,
    pub services: Vec<Service>,
    pub php_fpm: PhpFpm,
    /// After a start: each step, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// After a start: the whole run, the share spent in docker, and the launcher's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Times>,
}

#[derive(Debug, Serialize)]
pub struct Times {
    pub total_seconds: f64,
    pub docker_seconds: f64,
    pub launcher_seconds: f64,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub service: String,
    pub container: String,
    /// `running`, `exited`, `restarting`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`; `None` without a health check.
    pub health: Option<String>,
    /// Where to reach it from this machine.
    pub reach: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PhpFpm {
    pub reference: String,
    /// The registry digest (`sha256:…`); `None` for a local build, or an image not in the store.
    pub digest: Option<String>,
    /// cache, pulled, mirror, local build, with details; `None` for `status`, which gets nothing.
    pub origin: Option<String>,
}

/// What a step was: getting the image (apart by kind) or starting the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Check,
    Pull,
    Build,
    Start,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub phase: Phase,
    pub what: String,
    pub seconds: f64,
}

/// The phase of one of acquire's steps, by what it says it did.
pub fn phase_of(what: &str) -> Phase {
    if what.starts_with("pulled") {
        Phase::Pull
    } else if what.starts_with("built") {
        Phase::Build
    } else {
        Phase::Check
    }
}

/// A container of the project, as `docker ps` lists it.
#[derive(Debug, PartialEq, Eq)]
pub struct Listed {
    pub service: String,
    pub container: String,
    pub state: String,
    pub status: String,
    /// `host address, host port, container port` of each published port.
    pub ports: Vec<(String, u16, u16)>,
}

/// The `docker ps` format [`parse_listing`] reads.
const FORMAT: &str =
    "{{.Label \"com.docker.compose.service\"}}\t{{.Names}}\t{{.State}}\t{{.Status}}\t{{.Ports}}";

/// One `docker ps` of the project's containers (cheaper than `docker compose ps`, which reads the files).
pub fn list(engine: &Engine, project: &str) -> anyhow::Result<Vec<Listed>> {
    let filter = format!("label=com.docker.compose.project={project}");
    let command = DockerCommand::new(["ps", "--all", "--filter", &filter, "--format", FORMAT]);
    let bytes = engine.output(&command)?;
    Ok(parse_listing(&String::from_utf8_lossy(&bytes)))
}

pub fn parse_listing(text: &str) -> Vec<Listed> {
    let mut listed: Vec<Listed> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [service, container, state, status, ports] = fields[..] else {
                return None;
            };
            let ports = ports
                .split(',')
                .filter_map(|mapping| {
                    let (host, inside) = mapping.trim().split_once("->")?;
                    let (address, port) = host.rsplit_once(':')?;
                    let inside = inside.split('/').next()?.parse().ok()?;
                    Some((address.to_owned(), port.parse().ok()?, inside))
                })
                .collect();
            Some(Listed {
                service: service.to_owned(),
                container: container.to_owned(),
                state: state.to_owned(),
                status: status.to_owned(),
                ports,
            })
        })
        .collect();
    listed.sort_by(|a, b| a.service.cmp(&b.service));
    listed
}

/// `healthy` of `Up 5 seconds (healthy)`, `starting` of `(health: starting)`.
fn health_of(status: &str) -> Option<String> {
    let inside = status.rsplit_once('(')?.1.strip_suffix(')')?;
    let health = inside.strip_prefix("health: ").unwrap_or(inside);
    matches!(health, "healthy" | "unhealthy" | "starting").then(|| health.to_owned())
}

/// A published address as a browser takes it: every address for `0.0.0.0`, so this machine's loopback.
fn host_of(address: &str) -> String {
    match address.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        Ok(ip) => ip.to_string(),
        Err(_) if address.is_empty() || address == "::" || address == "[::]" => {
            "127.0.0.1".to_owned()
        }
        Err(_) => address.to_owned(),
    }
}

/// Where a service is reached from this machine, from what it really publishes.
fn reach(config: &Config, listed: &Listed) -> Option<String> {
    let (address, port, _) = listed.ports.iter().find(|(a, _, _)| !a.contains("::"))?;
    let host = host_of(address);
    Some(match listed.service.as_str() {
        "mariadb" => format!(
            "{host}:{port} (database {}, user {})",
            config.mysql_database, config.mysql_user
        ),
        _ => format!("http://{host}:{port}/"),
    })
}

/// The summary of the project's containers as they are now.
pub fn gather(config: &Config, listed: &[Listed], php_fpm: PhpFpm, steps: Vec<Step>) -> Summary {
    let services: Vec<Service> = listed
        .iter()
        .map(|l| Service {
            service: l.service.clone(),
            container: l.container.clone(),
            state: l.state.clone(),
            health: health_of(&l.status),
            reach: match l.service.as_str() {
                "apache" => {
                    Some("PHP-FPM, reached by nginx inside the stack (port 9000)".to_owned())
                }
                _ => reach(config, l),
            },
        })
        .collect();
    let site = services
        .iter()
        .find(|s| s.service == "nginx" && s.state == "running")
        .and_then(|s| s.reach.clone());
    Summary {
        project: config.project.to_string(),
        site,
        services,
        php_fpm,
        steps,
        time: None,
    }
}

/// The PHP-FPM image's registry digest, from the local store.
pub fn php_fpm(engine: &Engine, reference: &str, origin: Option<String>) -> PhpFpm {
    let digest = acquire::inspect_local(engine, reference)
        .ok()
        .flatten()
        .and_then(|image| image.digests.first().map(ToString::to_string));
    PhpFpm {
        reference: reference.to_owned(),
        digest,
        origin,
    }
}

/// The text: the site first, then the image, the services and the steps.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    match &summary.site {
        Some(url) => {
            let _ = writeln!(out, "site     {url}");
        }
        None => {
            let _ = writeln!(
                out,
                "site     not served: nginx is not running (`20i start`)"
            );
        }
    }
    let image = &summary.php_fpm;
    match &image.origin {
        Some(origin) => {
            let _ = writeln!(out, "php-fpm  {} ({origin})", image.reference);
        }
        None => {
            let _ = writeln!(out, "php-fpm  {}", image.reference);
        }
    }
    if let Some(digest) = &image.digest {
        let _ = writeln!(out, "         {digest}");
    }
    if summary.services.is_empty() {
        let _ = writeln!(
            out,
            "services none: project {} has no container",
            summary.project
        );
    }
    for (at, service) in summary.services.iter().enumerate() {
        let label = if at == 0 { "services" } else { "" };
        let _ = writeln!(
            out,
            "{label:<8} {:<12} {:<10} {:<10} {}",
            service.service,
            service.state,
            service.health.as_deref().unwrap_or("-"),
            service.reach.as_deref().unwrap_or("")
        );
    }
    for (at, step) in summary.steps.iter().enumerate() {
        // Lines of their own per phase: pulling is told apart from starting.
        let label = if at == 0 { "steps" } else { "" };
        let phase = match step.phase {
            Phase::Check => "image",
            Phase::Pull => "pulling",
            Phase::Build => "building",
            Phase::Start => "starting",
        };
        let _ = writeln!(
            out,
            "{label:<8} {phase:<9} {:<60} {}",
            step.what,
            crate::engine::seconds(Duration::from_secs_f64(step.seconds))
        );
    }
    if let Some(time) = &summary.time {
        let _ = writeln!(
            out,
            "time     total {:.3} s, docker {:.3} s, launcher {:.3} s ({:.1}% of the total)",
            time.total_seconds,
            time.docker_seconds,
            time.launcher_seconds,
            100.0 * time.launcher_seconds / time.total_seconds.max(f64::EPSILON)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_and_health() {
        let text = "nginx\tp-nginx-1\trunning\tUp 3 seconds (healthy)\t127.0.0.1:8080->80/tcp\n\
                    apache\tp-apache-1\trunning\tUp 4 seconds (health: starting)\t9000/tcp\n\
                    phpmyadmin\tp-phpmyadmin-1\trunning\tUp 2 seconds\t0.0.0.0:8081->80/tcp, :::8081->80/tcp\n\
                    mariadb\tp-mariadb-1\texited\tExited (1) 2 seconds ago\t\n";
        let listed = parse_listing(text);
        assert_eq!(
            listed
                .iter()
                .map(|l| l.service.as_str())
                .collect::<Vec<_>>(),
            ["apache", "mariadb", "nginx", "phpmyadmin"]
        );
        let table: &[(&str, Option<&str>)] = &[
            ("Up 3 seconds (healthy)", Some("healthy")),
            ("Up 3 seconds (health: starting)", Some("starting")),
            ("Up 3 minutes (unhealthy)", Some("unhealthy")),
            ("Exited (1) 2 seconds ago", None),
            ("Up 2 seconds", None),
        ];
        for (status, health) in table {
            assert_eq!(health_of(status).as_deref(), *health, "{status}");
        }
        assert_eq!(listed[3].ports[0], ("0.0.0.0".to_owned(), 8081, 80));
        assert_eq!(host_of("0.0.0.0"), "127.0.0.1");
        assert_eq!(host_of("192.168.1.5"), "192.168.1.5");
    }

    #[test]
    fn phases() {
        let table = [
            ("pulled 127.0.0.1:5000/s/php-fpm:v1-php-8.4", Phase::Pull),
            ("built 20i-local/php-fpm:v1-php-8.4", Phase::Build),
            ("checked the local image store", Phase::Check),
        ];
        for (what, phase) in table {
            assert_eq!(phase_of(what), phase, "{what}");
        }
    }

    #[test]
    fn text() {
        let summary = Summary {
            project: "site".into(),
            site: Some("http://127.0.0.1:8080/".into()),
            services: vec![
                Service {
                    service: "mariadb".into(),
                    container: "site-mariadb-1".into(),
                    state: "running".into(),
                    health: Some("healthy".into()),
                    reach: Some("127.0.0.1:3306 (database site, user site)".into()),
                },
                Service {
                    service: "nginx".into(),
                    container: "site-nginx-1".into(),
                    state: "running".into(),
                    health: Some("healthy".into()),
                    reach: Some("http://127.0.0.1:8080/".into()),
                },
            ],
            php_fpm: PhpFpm {
                reference: "127.0.0.1:5000/s/php-fpm:v1.0.0-php-8.4".into(),
                digest: Some(format!("sha256:{}", "a".repeat(64))),
                origin: Some("pulled from 127.0.0.1:5000/s".into()),
            },
            steps: vec![
                Step {
                    phase: Phase::Pull,
                    what: "pulled 127.0.0.1:5000/s/php-fpm:v1.0.0-php-8.4".into(),
                    seconds: 1.5,
                },
                Step {
                    phase: Phase::Start,
                    what: "started the stack, every service healthy".into(),
                    seconds: 3.25,
                },
            ],
            time: Some(Times {
                total_seconds: 5.0,
                docker_seconds: 4.9,
                launcher_seconds: 0.1,
            }),
        };
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[digest]");
        settings.bind(|| {
            insta::assert_snapshot!(render(&summary));
            insta::assert_snapshot!("json", serde_json::to_string_pretty(&summary).unwrap());
        });
    }
}
