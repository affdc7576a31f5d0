//! A site for one test: its own HOME (so `~/.20i` is temporary), project directory, stack directory written by
//! `20i init`, free loopback ports, a unique compose project, the stand-ins selected through the users' variables,
//! and a guard that tears the project down (`20i destroy`, i.e. `docker compose down --volumes`) even on failure.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use stack_images::docker::{Docker, DockerCommand};
use testkit::stack as standins;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct Site {
    pub home: tempfile::TempDir,
    pub code: PathBuf,
    pub context: PathBuf,
    pub project: String,
    env: Vec<(String, String)>,
    /// Images to remove from the local store when the site goes.
    pub cleanup_images: Vec<String>,
}

/// What one `20i` run did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "20i failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Site {
    /// A site named after the test, with every service but PHP-FPM on its stand-in.
    pub fn new(label: &str) -> Site {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        standins::service_standins().expect("building the service stand-ins");
        let project = format!(
            "it-{label}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let home = tempfile::Builder::new()
            .prefix("20i-home-")
            .tempdir()
            .unwrap();
        let code = home.path().join(&project);
        std::fs::create_dir_all(&code).unwrap();
        std::fs::write(code.join("index.html"), "hello from the site\n").unwrap();
        // The real Dockerfile's base cannot be pulled here: local builds use a stand-in context, chosen with
        // the launcher's own PHP_FPM_CONTEXT setting.
        let context = home.path().join("php-fpm-standin");
        standins::write_php_fpm_standin_context(&context).unwrap();
        let [web, database, admin] = standins::free_ports().unwrap().map(|p| p.to_string());
        let env = vec![
            ("IMAGE_MIRRORS".to_owned(), String::new()),
            ("PHP_FPM_CONTEXT".to_owned(), context.display().to_string()),
            ("HOST_PORT".to_owned(), web),
            ("MYSQL_PORT".to_owned(), database),
            ("PMA_PORT".to_owned(), admin),
            ("NGINX_IMAGE".to_owned(), standins::NGINX_STANDIN.to_owned()),
            (
                "MARIADB_IMAGE".to_owned(),
                standins::MARIADB_STANDIN.to_owned(),
            ),
            (
                "PMA_IMAGE".to_owned(),
                standins::PHPMYADMIN_STANDIN.to_owned(),
            ),
            ("WAIT_TIMEOUT".to_owned(), "90".to_owned()),
            // The shared registry policy's retries, shortened: a test of a registry that is down waits less.
            (
                "STACK_REGISTRY_POLICY".to_owned(),
                "attempts=3,backoff=200ms,backoff-cap=1s".to_owned(),
            ),
        ];
        let site = Site {
            home,
            code,
            context,
            project,
            env,
            cleanup_images: Vec::new(),
        };
        site.run(&["init"], &[]).ok();
        site
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Runs `20i ARGS` in the project directory with this site's environment plus `extra`.
    pub fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_20i"));
        command
            .args(args)
            .current_dir(&self.code)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path());
        if let Some(docker) = std::env::var_os("DOCKER") {
            command.env("DOCKER", docker);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        for (name, value) in extra {
            command.env(name, value);
        }
        let started = Instant::now();
        let output = command.output().expect("running 20i");
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            took: started.elapsed(),
        };
        eprintln!(
            "$ 20i {} ({:.2} s, exit {})\n{}{}",
            args.join(" "),
            run.took.as_secs_f64(),
            run.code,
            run.stdout,
            run.stderr
        );
        run
    }

    /// The containers of this project, as `name status` lines.
    pub fn containers(&self) -> Vec<String> {
        let out = docker(&[
            "ps",
            "--all",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--format",
            "{{.Names}} {{.Status}}",
        ]);
        let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.project)
    }

    pub fn modules_dir(&self) -> PathBuf {
        self.home.path().join(".20i/modules")
    }

    pub fn dockerfile(&self) -> PathBuf {
        self.context.join("Dockerfile")
    }

    pub fn code_dir(&self) -> &Path {
        &self.code
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let run = self.run(&["destroy"], &[]);
        if run.code != 0 {
            // Without a usable compose file compose still finds the project's containers by label.
            let _ = Docker::new().map(|d| {
                d.output(&DockerCommand::new([
                    "compose",
                    "--project-name",
                    &self.project,
                    "down",
                    "--volumes",
                    "--remove-orphans",
                ]))
            });
        }
        for image in &self.cleanup_images {
            let _ = Docker::new()
                .map(|d| d.output(&DockerCommand::new(["image", "rm", "--force", image])));
        }
    }
}

/// Runs docker and returns its output, panicking with docker's message on failure.
#[track_caller]
pub fn docker(args: &[&str]) -> String {
    let out = Docker::new()
        .unwrap()
        .output(&DockerCommand::new(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8(out).unwrap()
}

pub fn image_exists(reference: &str) -> bool {
    Docker::new()
        .unwrap()
        .output(&DockerCommand::new(["image", "inspect", reference]))
        .is_ok()
}

/// Removes an image from the local store if it is there.
pub fn forget_image(reference: &str) {
    let _ = Docker::new()
        .unwrap()
        .output(&DockerCommand::new(["image", "rm", "--force", reference]));
}

/// The registry's access-log lines (one per HTTP request it served).
pub fn requests(registry: &testkit::Registry) -> usize {
    registry
        .log()
        .lines()
        .filter(|l| l.contains("] \"") && l.contains(" HTTP/1."))
        .count()
}

/// `<namespace>/php-fpm:v<launcher version>-php-<line>`, from the shared tag scheme.
pub fn reference(namespace: &str, line: &str) -> String {
    let version: stack_images::ReleaseVersion = VERSION.parse().unwrap();
    stack_images::tags::reference(
        namespace,
        "php-fpm",
        stack_images::tags::pin_tag(&version, line.parse().unwrap()).as_str(),
    )
}

/// Publishes the PHP-FPM stand-in to a loopback registry under the real tag scheme; returns its reference and
/// index digest.
pub fn publish_php_fpm_standin(namespace: &str, line: &str) -> (String, String) {
    let reference = reference(namespace, line);
    let digest =
        testkit::fixtures::push_busybox(&reference, standins::PHP_FPM_STANDIN_LINES, false)
            .expect("pushing the PHP-FPM stand-in");
    forget_image(&reference);
    (reference, digest)
}

/// Parses the launcher's `time` line: (total, docker, launcher) seconds.
pub fn times(stdout: &str) -> (f64, f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("time "))
        .unwrap_or_else(|| panic!("no time line in:\n{stdout}"));
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}
