//! A site for one test: its own HOME (so `~/.20i` is temporary), project directory, stack directory written by
//! `20i init`, free loopback ports, a unique compose project, the stand-ins selected through the users' variables,
//! and a guard that tears the project down (`20i destroy`, i.e. `docker compose down --volumes`) even on failure.
//! [`RealSite`] is the same site with real software: PHP-FPM pulled from a loopback registry, nginx and MariaDB.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use stack_images::docker::{Docker, DockerCommand};
pub use testkit::probe::docker;
use testkit::{probe::http_get, stack as standins};

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

    /// Asserts that standard output holds `fragment`, showing all of it when not.
    #[track_caller]
    pub fn expect_stdout(&self, fragment: &str) -> &Run {
        assert!(
            self.stdout.contains(fragment),
            "no {fragment:?} in stdout:\n{}",
            self.stdout
        );
        self
    }

    /// Asserts that standard error holds `fragment`, showing all of it when not.
    #[track_caller]
    pub fn expect_stderr(&self, fragment: &str) -> &Run {
        assert!(
            self.stderr.contains(fragment),
            "no {fragment:?} in stderr:\n{}",
            self.stderr
        );
        self
    }
}

impl Site {
    /// A site named after the test, with every service but PHP-FPM on its stand-in.
    pub fn new(label: &str) -> Site {
        standins::service_standins().expect("building the service stand-ins");
        let site = Site::bare(label);
        // The real Dockerfile's base cannot be pulled here: local builds use a stand-in context, chosen with
        // the launcher's own PHP_FPM_CONTEXT setting.
        standins::write_php_fpm_standin_context(&site.context).unwrap();
        site.run(&["init"], &[]).ok();
        site
    }

    /// The site without `20i init` and without building anything: a temporary HOME, project directory, ports,
    /// the busybox stand-ins' names.
    fn bare(label: &str) -> Site {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let project = format!(
            "it-{label}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let home = tempfile::Builder::new()
            .prefix("20i-home-")
            .tempdir()
            .unwrap();
        // tempfile makes the folder 0700; the site's folder must be readable by the containers' users (what
        // `20i start` checks first), and so must be its own folder's contents.
        let code = home.path().join(&project);
        std::fs::create_dir_all(&code).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&code, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(code.join("index.html"), "hello from the site\n").unwrap();
        let context = home.path().join("php-fpm-standin");
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
        Site {
            home,
            code,
            context,
            project,
            env,
            cleanup_images: Vec::new(),
        }
    }

    /// The stack directory `20i init` wrote (the default STACK_DIR under this site's HOME).
    pub fn stack_dir(&self) -> PathBuf {
        self.home.path().join("docker/20i-stack")
    }

    /// This site's value of a variable it sets.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Leaves `name` to the launcher's own default.
    pub fn unset(&mut self, name: &str) {
        self.env.retain(|(n, _)| n != name);
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

    /// Runs `20i ARGS` as [`Site::run`] does, but in a pseudo-terminal (`script` from util-linux): what a person
    /// sees, standard output and error in one stream, escape sequences included (in `stdout`).
    pub fn run_in_terminal(&self, args: &[&str]) -> Run {
        let mut line = String::from(env!("CARGO_BIN_EXE_20i"));
        for arg in args {
            line.push_str(&format!(" '{}'", arg.replace('\'', r"'\''")));
        }
        let mut command = Command::new("script");
        command
            .args(["-qfec", &line, "/dev/null"])
            .current_dir(&self.code)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("TERM", "xterm-256color");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let started = Instant::now();
        let output = command.output().expect("running 20i under script");
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            took: started.elapsed(),
        };
        eprintln!(
            "$ 20i {} in a terminal ({:.2} s, exit {})\n{}",
            args.join(" "),
            run.took.as_secs_f64(),
            run.code,
            run.stdout.escape_debug()
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

/// Where a real stack's images come from: this machine's Debian stand-ins (`testkit::real`), or, where Docker
/// Hub is reachable (the GitHub CI job), the images they stand in for. Read once from the environment:
/// - `STACK_IT_PHP_LINE`: the PHP line (8.2 by default);
/// - `STACK_IT_PHP_FPM_CONTEXT`: a build context (relative to the workspace) with the real Dockerfile (`images/php-fpm`), built over the
///   shipped base lock's pin of the line, for the pulled image and for the launcher's local build alike;
/// - `STACK_IT_NGINX_IMAGE`, `STACK_IT_MARIADB_IMAGE`, `STACK_IT_PMA_IMAGE`: the service images, or `default`
///   for the launcher's own default (what users run).
///
/// Unset, each is its stand-in; phpMyAdmin's is the busybox one (nothing here reads its pages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealImages {
    /// `STACK_IT_PHP_LINE`, 8.2 by default (a line Debian ships, for the stand-in).
    pub line: stack_images::PhpLine,
    pub php_fpm: PhpFpmSource,
    pub nginx: ServiceImage,
    pub mariadb: ServiceImage,
    pub phpmyadmin: ServiceImage,
}

/// The image of one of the stack's services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceImage {
    /// Unset: this machine's stand-in.
    Standin,
    /// `default`: what the launcher runs when nothing is set (the stack's own choice: `nginx:1.25-alpine`, ...).
    StackDefault,
    /// An image named in full.
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhpFpmSource {
    /// `testkit/standins/php-fpm-real/Dockerfile` over Debian's PHP, with `images/php-fpm`'s files.
    DebianStandin,
    /// A build context whose Dockerfile is the real one.
    Context(PathBuf),
}

impl RealImages {
    pub fn from_env() -> anyhow::Result<RealImages> {
        RealImages::parse(|name| std::env::var(name).ok())
    }

    /// The images named by `lookup` (the environment): empty is unset; an image may not start with `-` (docker
    /// would take it for an option), and a context must be a directory with a Dockerfile.
    pub fn parse(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<RealImages> {
        let value = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let image = |name: &str| -> anyhow::Result<ServiceImage> {
            match value(name) {
                None => Ok(ServiceImage::Standin),
                Some(image) if image == "default" => Ok(ServiceImage::StackDefault),
                Some(image) if image.starts_with('-') || image.chars().any(char::is_whitespace) => {
                    anyhow::bail!(
                        "{name}={image:?} is not an image reference: name an image such as nginx:1.25-alpine, \
                         `default` for the launcher's, or unset {name} for the stand-in"
                    )
                }
                Some(image) => Ok(ServiceImage::Named(image)),
            }
        };
        let php_fpm = match value("STACK_IT_PHP_FPM_CONTEXT") {
            None => PhpFpmSource::DebianStandin,
            Some(dir) => {
                // Relative to the workspace, as the workflow names it (tests run in launcher/).
                let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
                let dir = std::path::absolute(workspace.join(dir))?;
                if !dir.join("Dockerfile").is_file() {
                    anyhow::bail!(
                        "STACK_IT_PHP_FPM_CONTEXT={} has no Dockerfile: set it to images/php-fpm, or unset it for \
                         the Debian stand-in",
                        dir.display()
                    );
                }
                PhpFpmSource::Context(dir)
            }
        };
        let line = match value("STACK_IT_PHP_LINE") {
            None => stack_images::PhpLine::new(8, 2),
            Some(line) => line
                .parse()
                .map_err(|e| anyhow::anyhow!("STACK_IT_PHP_LINE={line:?}: {e}"))?,
        };
        Ok(RealImages {
            line,
            php_fpm,
            nginx: image("STACK_IT_NGINX_IMAGE")?,
            mariadb: image("STACK_IT_MARIADB_IMAGE")?,
            phpmyadmin: image("STACK_IT_PMA_IMAGE")?,
        })
    }
}

/// A site running real software: PHP-FPM published to its own loopback registry under the release's tag (as a
/// release publishes it; this machine's platform only), nginx and MariaDB (stand-ins made from Debian's archive,
/// or the real images, see [`RealImages`]), and a build context for the launcher's local build from the same
/// Dockerfile, files and base as the published image. Fields drop in order: the stack, then the registry.
pub struct RealSite {
    pub site: Site,
    /// Serves the published image and its base while the site lives.
    _registry: testkit::Registry,
    pub line: stack_images::PhpLine,
    /// What the registry serves: `<registry>/stack/php-fpm:v<version>-php-<line>`.
    pub published: String,
}

impl RealSite {
    pub fn new(label: &str) -> RealSite {
        let images = RealImages::from_env().unwrap();
        let line = images.line;
        let mut site = Site::bare(label);
        site.run(&["init"], &[]).ok();
        let registry = testkit::Registry::start().unwrap();
        let namespace = registry.namespace("stack");
        let published = reference(&namespace, &line.to_string());
        let started = Instant::now();
        let (context, base) = match &images.php_fpm {
            PhpFpmSource::DebianStandin => {
                let (context, base) = publish_debian_php_fpm(&site, &registry, line, &published);
                (context, Some(base))
            }
            PhpFpmSource::Context(context) => {
                publish_from_context(context, line, &published);
                (context.clone(), None)
            }
        };
        eprintln!(
            "published {published} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        forget_image(&published);
        for (name, image, standin) in [
            (
                "NGINX_IMAGE",
                &images.nginx,
                testkit::real::nginx as fn() -> anyhow::Result<String>,
            ),
            ("MARIADB_IMAGE", &images.mariadb, testkit::real::mariadb),
            // Nothing here reads phpMyAdmin's pages: the busybox stand-in is enough where the real one is not
            // at hand.
            ("PMA_IMAGE", &images.phpmyadmin, || {
                standins::service_standins()?;
                Ok(standins::PHPMYADMIN_STANDIN.to_owned())
            }),
        ] {
            match image {
                ServiceImage::Standin => site.set(name, &standin().unwrap()),
                ServiceImage::StackDefault => site.unset(name),
                ServiceImage::Named(image) => site.set(name, image),
            }
        }
        for (name, value) in [
            ("PHP_VERSION", line.to_string()),
            ("IMAGE_REGISTRY", namespace.clone()),
            ("PHP_FPM_CONTEXT", context.display().to_string()),
            // MariaDB's first start initialises its data directory: tens of seconds on a busy machine.
            ("WAIT_TIMEOUT", "240".to_owned()),
            ("ALLOW_LOCAL_BUILD_FALLBACK", "false".to_owned()),
        ] {
            site.set(name, &value);
        }
        if let Some(base) = &base {
            site.set("PHP_BASE", base);
        }
        site.cleanup_images.push(published.clone());
        RealSite {
            site,
            _registry: registry,
            line,
            published,
        }
    }

    /// `GET path` on the site's nginx, within 60 s: the body of a 200, or the whole response as the error.
    pub fn get(&self, path: &str) -> Result<String, String> {
        let port: u16 = self.site.var("HOST_PORT").unwrap().parse().unwrap();
        http_get(port, path, Duration::from_secs(60))
    }

    /// The image a running service's container was created from, by ID (tags are shared between tests).
    pub fn image_of(&self, service: &str) -> String {
        docker(&[
            "inspect",
            "--format",
            "{{.Image}}",
            &self.site.container(service),
        ])
        .trim()
        .to_owned()
    }
}

/// Publishes this machine's Debian PHP-FPM stand-in of `line` as `published`, over a base that the registry
/// serves too (its digest is the local build's `PHP_BASE`); writes the stand-in's build context (its Dockerfile
/// and the other files of `images/php-fpm`, byte for byte) into the site. Returns the context and the base by digest.
fn publish_debian_php_fpm(
    site: &Site,
    registry: &testkit::Registry,
    line: stack_images::PhpLine,
    published: &str,
) -> (PathBuf, String) {
    let arch = testkit::real::Arch::host();
    let local_base = testkit::real::php_base(line, arch).unwrap();
    let base = format!("{}/php-base-standin:{line}", registry.namespace("fixtures"));
    let base = format!("{base}@{}", push_as(&local_base, &base));
    // Built over the local base tag and cached by testkit (the same image the registry now serves as `base`).
    let image = testkit::real::php_fpm(line, arch).unwrap();
    push_as(&image, published);
    let context = site.home.path().join("php-fpm-real");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(
        testkit::real::php_fpm_real_dockerfile(),
        context.join("Dockerfile"),
    )
    .unwrap();
    // Every file of images/php-fpm but its Dockerfile: what the stand-in Dockerfile COPYs and mounts.
    for entry in std::fs::read_dir(testkit::real::php_fpm_context()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "Dockerfile" && entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), context.join(entry.file_name())).unwrap();
        }
    }
    (context, base)
}

/// Builds the real Dockerfile in `context` for `line` over the shipped lock's base, as a release does (one
/// platform: this machine's), and pushes it as `published`.
fn publish_from_context(context: &Path, line: stack_images::PhpLine, published: &str) {
    let lock = stack_images::BaseLock::parse(stack_images::bases::SHIPPED_LOCK_TOML).unwrap();
    let base = lock
        .lines
        .get(&line)
        .unwrap_or_else(|| panic!("the shipped base lock has no PHP {line}"));
    let base = format!("{}:{}@{}", lock.source, base.tag, base.digest);
    let context = context.display().to_string();
    docker(&[
        "build",
        "--quiet",
        "--build-arg",
        &format!("PHP_VERSION={line}"),
        "--build-arg",
        &format!("PHP_BASE={base}"),
        "--tag",
        published,
        &context,
    ]);
    docker(&["push", "--quiet", published]);
}

/// Tags `local` as `remote`, pushes it and drops the remote name again; returns the digest the push reported.
fn push_as(local: &str, remote: &str) -> String {
    docker(&["tag", local, remote]);
    let pushed = docker(&["push", "--quiet", remote]);
    let digest = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        remote,
    ]);
    forget_image(remote);
    let repository = remote
        .parse::<stack_images::ImageRef>()
        .unwrap()
        .repository()
        .to_string();
    let digests: Vec<String> = serde_json::from_str(&digest).unwrap();
    digests
        .iter()
        .find_map(|d| d.strip_prefix(&format!("{repository}@")))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no digest of {remote} after the push: {pushed} {digests:?}"))
}
