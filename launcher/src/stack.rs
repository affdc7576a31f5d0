//! The stack the launcher ships (compose file, nginx template, stack vars, the PHP-FPM build context) and the
//! `docker compose` invocations every command shares: one project, the stack's compose file plus each user
//! module's, and the resolved variables in the environment.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context};
use stack_images::docker::{DockerCommand, DockerError, FailureKind};

use crate::{config::Config, engine::Engine, exit::Exit};

/// The shipped stack, as `(path under STACK_DIR, content)`. The PHP-FPM files are the release's own.
pub const FILES: &[(&str, &str)] = &[
    (
        "docker-compose.yml",
        include_str!("../stack/docker-compose.yml"),
    ),
    (
        "docker/nginx.conf.tmpl",
        include_str!("../stack/docker/nginx.conf.tmpl"),
    ),
    (
        "config/stack-vars.yml",
        include_str!("../stack/config/stack-vars.yml"),
    ),
    (
        "images/php-fpm/Dockerfile",
        include_str!("../../images/php-fpm/Dockerfile"),
    ),
    (
        "images/php-fpm/php.ini",
        include_str!("../../images/php-fpm/php.ini"),
    ),
    (
        "images/php-fpm/zz-stack-fpm.conf",
        include_str!("../../images/php-fpm/zz-stack-fpm.conf"),
    ),
    (
        "images/php-fpm/php-fpm-healthcheck",
        include_str!("../../images/php-fpm/php-fpm-healthcheck"),
    ),
    (
        "images/php-fpm/build-checks.sh",
        include_str!("../../images/php-fpm/build-checks.sh"),
    ),
];

/// Writes the shipped stack into `dir`, keeping files that exist unless `force`; returns what was written.
pub fn write_shipped(dir: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (relative, content) in FILES {
        let path = dir.join(relative);
        if path.exists() && !force {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The compose files of the user's modules: `~/.20i/modules/<name>/` with a compose file, in name order.
pub fn modules(config: &Config) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = config.user_dir.join("modules");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let file = [
            "docker-compose.yml",
            "docker-compose.yaml",
            "compose.yml",
            "compose.yaml",
        ]
        .iter()
        .map(|f| path.join(f))
        .find(|f| f.is_file());
        if let Some(file) = file {
            found.push((name, file));
        }
    }
    found.sort();
    Ok(found)
}

/// `docker compose` for this project: `-p NAME -f STACK_FILE -f MODULE...` then `args`.
pub struct Compose {
    pub project: String,
    /// The stack's compose file, then each module's.
    pub files: Vec<PathBuf>,
    /// The modules, by name, with their compose files.
    pub modules: Vec<(String, PathBuf)>,
    pub env: Vec<(String, String)>,
}

impl Compose {
    /// The project's compose invocation; `image` is the PHP-FPM reference compose runs. Checks that the compose
    /// file is there, so no command reaches docker without it.
    pub fn new(config: &Config, image: &str) -> anyhow::Result<Compose> {
        if !config.stack_file.is_file() {
            return Err(Exit::config(anyhow!(
                "no compose file at {}: run `20i init` to write the shipped stack to {}, or set STACK_DIR or STACK_FILE",
                config.stack_file.display(),
                config.stack_dir.display()
            ))
            .into());
        }
        let modules = modules(config)?;
        let mut files = vec![config.stack_file.clone()];
        files.extend(modules.iter().map(|(_, file)| file.clone()));
        let mut compose = Compose {
            project: config.project.to_string(),
            files,
            modules,
            env: config.compose_env(),
        };
        compose.set_image(image);
        Ok(compose)
    }

    /// The PHP-FPM reference compose runs (`PHP_FPM_IMAGE`).
    pub fn set_image(&mut self, image: &str) {
        self.env.retain(|(name, _)| name != "PHP_FPM_IMAGE");
        self.env
            .push(("PHP_FPM_IMAGE".to_owned(), image.to_owned()));
    }

    pub fn command<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> DockerCommand {
        Compose::command_for(&self.project, &self.files, args)
    }

    fn command_for<'a>(
        project: &str,
        files: &[PathBuf],
        args: impl IntoIterator<Item = &'a str>,
    ) -> DockerCommand {
        let mut argv = vec![
            "compose".to_owned(),
            "--project-name".to_owned(),
            project.to_owned(),
        ];
        for file in files {
            argv.push("--file".to_owned());
            argv.push(file.display().to_string());
        }
        argv.extend(args.into_iter().map(str::to_owned));
        DockerCommand::new(argv)
    }

    /// `docker compose config --quiet`: compose reads every file with the resolved values before anything is
    /// pulled or started. A file compose refuses is a configuration error (exit 2) naming it: the stack's compose
    /// file, or the module whose file breaks it (each module is tried alone with the stack to find it).
    pub fn validate(&self, engine: &Engine, config: &Config) -> anyhow::Result<()> {
        let loads = |files: &[PathBuf]| {
            engine.output_with_env(
                &Compose::command_for(&self.project, files, ["config", "--quiet"]),
                &self.env,
            )
        };
        let Err(error) = loads(&self.files) else {
            return Ok(());
        };
        if error.kind == FailureKind::Unreachable {
            // Docker itself did not run: not a configuration problem.
            return Err(error).context("checking the compose files");
        }
        let message = |error: &DockerError| {
            let text = error.stderr.trim().to_owned();
            config.redact(if text.is_empty() {
                "(no message)"
            } else {
                &text
            })
        };
        let stack_alone = loads(&self.files[..1]);
        let culprit = match &stack_alone {
            Err(_) => None,
            Ok(_) => self.modules.iter().find_map(|(name, file)| {
                let files = [self.files[0].clone(), file.clone()];
                loads(&files).err().map(|e| (name, file, e))
            }),
        };
        let problem = match (culprit, stack_alone) {
            (Some((name, file, error)), _) => format!(
                "module {name} ({}) does not load in compose: {}\nfix or remove {}",
                file.display(),
                message(&error),
                file.display()
            ),
            (None, Err(error)) => format!(
                "the compose file {} does not load with this configuration: {}\ncheck the values with `20i start \
                 --explain`, or run `20i init --force` to restore the shipped stack",
                config.stack_file.display(),
                message(&error)
            ),
            (None, Ok(_)) => format!(
                "the compose files do not load together: {}\ncheck the modules in {}",
                message(&error),
                config.user_dir.join("modules").display()
            ),
        };
        Err(Exit::config(anyhow!(problem)).into())
    }
}

/// How the project's containers stand after `up`, from `docker compose ps --all --format json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Every container runs, and every one with a health check is healthy.
    Ready,
    /// Some are still starting.
    Starting(Vec<Unready>),
    /// Some exited or are unhealthy (none listed: compose created no container): waiting longer will not help.
    Failed(Vec<Unready>),
}

/// A service that is not ready, and its state or health as compose reports it (`starting`, `exited`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unready {
    pub service: String,
    pub state: String,
}

impl fmt::Display for Unready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.service, self.state)
    }
}

/// The services `docker compose up --wait` itself gave up on, from its error (`container P-S-N is unhealthy`,
/// `container P-S-N exited (1)`): a crash-looping service may look running again by the time `ps` is read.
pub fn failed_in_compose_error(error: &str, project: &str) -> Vec<Unready> {
    let mut failed: Vec<Unready> = Vec::new();
    for line in error.lines() {
        let Some((_, rest)) = line.split_once("container ") else {
            continue;
        };
        let Some((name, state)) = rest.split_once(' ') else {
            continue;
        };
        let state = match state.strip_prefix("is ") {
            Some(health) => health,
            None if state.starts_with("exited") => state,
            None => continue,
        };
        let service = name
            .strip_prefix(project)
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.rsplit_once('-'))
            .filter(|(_, index)| index.chars().all(|c| c.is_ascii_digit()))
            .map(|(service, _)| service);
        if let Some(service) = service {
            if !failed.iter().any(|f| f.service == service) {
                failed.push(Unready {
                    service: service.to_owned(),
                    state: state.to_owned(),
                });
            }
        }
    }
    failed
}

impl Health {
    /// This health, with the services compose itself gave up on counted as failed.
    pub fn with_failed(self, named: Vec<Unready>) -> Health {
        if named.is_empty() {
            return self;
        }
        let mut failed = match self {
            Health::Failed(failed) => failed,
            Health::Ready | Health::Starting(_) => Vec::new(),
        };
        for unready in named {
            if !failed.iter().any(|f| f.service == unready.service) {
                failed.push(unready);
            }
        }
        Health::Failed(failed)
    }
}

/// Reads `docker compose ps --format json` (one object per line, or one array) into a [`Health`].
pub fn health(ps_json: &str) -> anyhow::Result<Health> {
    let mut containers: Vec<serde_json::Value> = Vec::new();
    let text = ps_json.trim();
    if text.starts_with('[') {
        containers = serde_json::from_str(text).context("reading `docker compose ps`")?;
    } else {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            containers.push(serde_json::from_str(line).context("reading `docker compose ps`")?);
        }
    }
    let mut starting = Vec::new();
    let mut failed = Vec::new();
    for container in &containers {
        let service = container["Service"].as_str().unwrap_or("?").to_owned();
        let state = container["State"].as_str().unwrap_or_default();
        let health = container["Health"].as_str().unwrap_or_default();
        let unready = Unready {
            service,
            state: if health.is_empty() { state } else { health }.to_owned(),
        };
        match (state, health) {
            ("running", "" | "healthy") => {}
            ("running", "starting") | ("created" | "restarting", _) => starting.push(unready),
            _ => failed.push(unready),
        }
    }
    Ok(if !failed.is_empty() {
        Health::Failed(failed)
    } else if !starting.is_empty() {
        Health::Starting(starting)
    } else if containers.is_empty() {
        Health::Failed(Vec::new())
    } else {
        Health::Ready
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(ps: &str, expected: Health) {
        assert_eq!(health(ps).unwrap(), expected, "{ps}");
    }

    #[track_caller]
    fn check_named(error: &str, expected: &[(&str, &str)]) {
        let named: Vec<(String, String)> = failed_in_compose_error(error, "it-health-1")
            .into_iter()
            .map(|u| (u.service, u.state))
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(s, t)| ((*s).to_owned(), (*t).to_owned()))
            .collect();
        assert_eq!(named, expected, "{error}");
    }

    #[test]
    fn services_compose_gave_up_on() {
        check_named(
            "  container it-health-1-nginx-1 is unhealthy",
            &[("nginx", "unhealthy")],
        );
        check_named(
            "container it-health-1-php-fpm-2 exited (1)",
            &[("php-fpm", "exited (1)")],
        );
        check_named(
            "   Container it-health-1-apache-1  Healthy\n  container it-health-1-nginx-1 is unhealthy\ncontainer it-health-1-nginx-1 is unhealthy",
            &[("nginx", "unhealthy")],
        );
        // Another project's container, a name without an index, anything else: not ours to name.
        check_named("container other-nginx-1 is unhealthy", &[]);
        check_named("container it-health-1-nginx is unhealthy", &[]);
        check_named(
            "dependency failed to start: container it-health-1-db-1 is unhealthy",
            &[("db", "unhealthy")],
        );
        check_named("", &[]);
    }

    #[test]
    fn compose_named_services_fail_whatever_ps_says() {
        let nginx = || Unready {
            service: "nginx".into(),
            state: "unhealthy".into(),
        };
        assert_eq!(
            Health::Ready.with_failed(vec![nginx()]),
            Health::Failed(vec![nginx()])
        );
        assert_eq!(Health::Ready.with_failed(Vec::new()), Health::Ready);
        let db = Unready {
            service: "mariadb".into(),
            state: "exited".into(),
        };
        assert_eq!(
            Health::Failed(vec![db.clone()]).with_failed(vec![nginx()]),
            Health::Failed(vec![db, nginx()])
        );
    }

    #[test]
    fn health_from_compose_ps() {
        let c = |service: &str, state: &str, health: &str| {
            format!(r#"{{"Service":"{service}","State":"{state}","Health":"{health}"}}"#)
        };
        let lines = |cs: &[String]| cs.join("\n");
        let u = |service: &str, state: &str| Unready {
            service: service.into(),
            state: state.into(),
        };
        check(
            &lines(&[
                c("nginx", "running", "healthy"),
                c("phpmyadmin", "running", ""),
            ]),
            Health::Ready,
        );
        check(
            &format!(
                "[{},{}]",
                c("a", "running", "healthy"),
                c("b", "running", "")
            ),
            Health::Ready,
        );
        check(
            &lines(&[
                c("nginx", "running", "starting"),
                c("apache", "running", "healthy"),
            ]),
            Health::Starting(vec![u("nginx", "starting")]),
        );
        check(
            &lines(&[c("mariadb", "created", ""), c("x", "restarting", "")]),
            Health::Starting(vec![u("mariadb", "created"), u("x", "restarting")]),
        );
        check(
            &lines(&[
                c("nginx", "running", "unhealthy"),
                c("apache", "exited", ""),
                c("w", "running", "starting"),
            ]),
            Health::Failed(vec![u("nginx", "unhealthy"), u("apache", "exited")]),
        );
        check("", Health::Failed(vec![]));
    }
}
