//! The real stand-ins: PHP-FPM built by the release stand-in Dockerfile runs the stack's php.ini, pool and health
//! check; nginx renders templates as the official image does; MariaDB honours the compose file's variables; and
//! the three serve a page through `launcher/stack/docker-compose.yml` itself.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use stack_images::{
    docker::{Docker, DockerCommand},
    PhpLine,
};
use testkit::{
    probe::{assert_promised_modules, docker, http_get, visits_page, PROMISED_MODULES},
    real::{self, Arch},
    stack, Registry,
};

const PHP_8_2: PhpLine = PhpLine::new(8, 2);
const PHP_8_4: PhpLine = PhpLine::new(8, 4);

/// A container removed (with its anonymous volumes) when the test ends, however it ends.
struct Container(String);

impl Container {
    fn run(args: &[&str]) -> Container {
        let mut all = vec!["run", "--detach"];
        all.extend(args);
        Container(docker(&all).trim().to_owned())
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["exec", self.0.as_str()];
        all.extend(args);
        docker(&all)
    }

    fn health(&self) -> String {
        docker(&["inspect", "--format", "{{.State.Health.Status}}", &self.0])
            .trim()
            .to_owned()
    }

    fn wait_health(&self, wanted: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.health() == wanted {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let log = docker(&["inspect", "--format", "{{json .State.Health}}", &self.0]);
        let logs = Docker::new()
            .unwrap()
            .output(&DockerCommand::new(["logs", self.0.as_str()]))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        panic!("not {wanted} within {within:?}: {log}\nlogs:\n{logs}");
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Docker::new().unwrap().run(&DockerCommand::new([
            "rm",
            "--force",
            "--volumes",
            self.0.as_str(),
        ]));
    }
}

#[test]
fn php_fpm_is_healthy_through_the_stack_check_and_unhealthy_once_fpm_stops() {
    let image = real::php_fpm(PHP_8_2, Arch::host()).unwrap();
    assert_eq!(
        docker(&[
            "inspect",
            "--format",
            "{{json .Config.Healthcheck.Test}}",
            &image
        ])
        .trim(),
        r#"["CMD","php-fpm-healthcheck"]"#
    );
    // FPM under a shell rather than as PID 1, so that stopping it leaves the container and its checks running;
    // checks every second instead of the image's five, with the image's own command.
    let container = Container::run(&[
        "--health-interval=1s",
        "--health-retries=2",
        "--health-start-period=30s",
        &image,
        "sh",
        "-c",
        "php-fpm; exec sleep infinity",
    ]);
    container.wait_health("healthy", Duration::from_secs(60));
    container.exec(&["sh", "-c", "kill -QUIT \"$(cat /run/php-fpm.pid)\""]);
    container.wait_health("unhealthy", Duration::from_secs(30));
    let health = docker(&[
        "inspect",
        "--format",
        "{{json .State.Health.Log}}",
        &container.0,
    ]);
    assert!(
        health.contains("php-fpm-healthcheck: cannot connect to php-fpm on 127.0.0.1:9000"),
        "{health}"
    );
}

#[track_caller]
fn check_php(line: PhpLine) {
    let image = real::php_fpm(line, Arch::host()).unwrap();
    let version = docker(&["run", "--rm", &image, "php", "-r", "echo PHP_VERSION;"]);
    assert!(version.starts_with(&format!("{line}.")), "{version}");
    for sapi in ["php", "php-fpm"] {
        let modules = docker(&["run", "--rm", &image, sapi, "-m"]);
        for module in PROMISED_MODULES {
            assert!(
                modules.lines().any(|l| l == module),
                "{sapi} {line} has no {module}: {modules}"
            );
        }
        let info = docker(&["run", "--rm", &image, sapi, "-i"]);
        for setting in [
            "memory_limit => 256M => 256M",
            "upload_max_filesize => 64M => 64M",
            "post_max_size => 64M => 64M",
            "date.timezone => UTC => UTC",
            "opcache.enable => On => On",
            "/usr/local/etc/php/conf.d/zz-20i-stack.ini",
        ] {
            assert!(info.contains(setting), "{sapi} {line}: no `{setting}`");
        }
    }
}

#[test]
fn php_fpm_of_each_debian_line_loads_every_promised_module_and_the_stack_ini() {
    check_php(PHP_8_2);
    check_php(PHP_8_4);
}

#[test]
fn a_php_line_debian_does_not_ship_is_refused_with_the_lines_it_does() {
    let error = real::php_base(PhpLine::new(8, 3), Arch::host()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Debian ships no PHP 8.3: real PHP stand-ins exist for 8.2 (bookworm), 8.4 (trixie) (use one of those lines)"
    );
}

#[test]
fn nginx_renders_templates_with_only_the_variables_that_are_defined() {
    let image = real::nginx().unwrap();
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("site.conf.template"),
        "server {\n    listen 8080;\n    server_name ${STANDIN_SERVER_NAME};\n    \
         location / { return 200 \"$uri $host\"; }\n}\n",
    )
    .unwrap();
    let mount = format!("{}:/etc/nginx/templates:ro", templates.path().display());
    let config = docker(&[
        "run",
        "--rm",
        "--env",
        "STANDIN_SERVER_NAME=standin.test",
        "--volume",
        &mount,
        &image,
        "nginx",
        "-T",
    ]);
    assert!(
        config.contains("# configuration file /etc/nginx/conf.d/site.conf:"),
        "{config}"
    );
    assert!(config.contains("server_name standin.test;"), "{config}");
    assert!(config.contains("return 200 \"$uri $host\";"), "{config}");
}

#[test]
fn mariadb_refuses_a_first_start_without_a_root_password() {
    let image = real::mariadb().unwrap();
    let error = Docker::new()
        .unwrap()
        .output(&DockerCommand::new(["run", "--rm", image.as_str()]))
        .unwrap_err();
    assert!(
        error
            .stderr
            .contains("root has no password: set MYSQL_ROOT_PASSWORD"),
        "{error}"
    );
}

/// A `docker compose` project of the stack's own compose file, taken down with its volumes when the test ends.
struct Project {
    name: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Result<String, stack_images::docker::DockerError> {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../launcher/stack/docker-compose.yml");
        let file = file.display().to_string();
        let mut all = vec!["compose", "--project-name", &self.name, "--file", &file];
        all.extend(args);
        Docker::new()
            .unwrap()
            .output_with_env(&DockerCommand::new(all), &self.env)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

impl Project {
    /// A page of the site through nginx; on failure, the response and every service's log.
    fn page(&self, port: u16, path: &str) -> String {
        http_get(port, path, Duration::from_secs(30)).unwrap_or_else(|response| {
            let logs = self.compose(&["logs", "--no-color"]).unwrap_or_default();
            panic!("GET {path}: {response}\n{logs}")
        })
    }

    /// How often each service's container was restarted (`restart: unless-stopped` hides a crash otherwise).
    fn restarts(&self) -> Vec<String> {
        let ids = self.compose(&["ps", "--all", "--quiet"]).unwrap();
        ids.split_whitespace()
            .map(|id| docker(&["inspect", "--format", "{{.Name}} {{.RestartCount}}", id]))
            .map(|line| line.trim().to_owned())
            .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--volumes", "--timeout", "5"]);
    }
}

#[test]
fn the_stack_serves_php_through_nginx_and_keeps_its_rows_in_the_mariadb_volume() {
    let php = real::php_fpm(PHP_8_2, Arch::host()).unwrap();
    let nginx = real::nginx().unwrap();
    let mariadb = real::mariadb().unwrap();
    stack::service_standins().unwrap();

    // Not the compose file's defaults, and quoting that a careless entrypoint would break on.
    let (database, user) = ("shop-db", "shop_user");
    let password = r#"pa$$ 'w"o\rd"#;
    let root_password = "root 'secret' \\";
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("index.php"),
        visits_page(
            database,
            user,
            password,
            r#"echo 'memory_limit ', ini_get('memory_limit'), "\n";
echo 'server ', $pdo->query('SELECT VERSION()')->fetchColumn(), "\n";
"#,
        ),
    )
    .unwrap();

    let [port, mysql_port, pma_port] = stack::free_ports().unwrap();
    let env: Vec<(String, String)> = [
        ("PHP_FPM_IMAGE", php.as_str()),
        ("NGINX_IMAGE", nginx.as_str()),
        ("MARIADB_IMAGE", mariadb.as_str()),
        ("PMA_IMAGE", stack::PHPMYADMIN_STANDIN),
        ("CODE_DIR", &site.path().display().to_string()),
        ("BIND_ADDRESS", "127.0.0.1"),
        ("HOST_PORT", &port.to_string()),
        ("MYSQL_PORT", &mysql_port.to_string()),
        ("PMA_PORT", &pma_port.to_string()),
        ("MYSQL_ROOT_PASSWORD", root_password),
        ("MYSQL_DATABASE", database),
        ("MYSQL_USER", user),
        ("MYSQL_PASSWORD", password),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let project = Project {
        name: format!("realstack{}", std::process::id()),
        env,
    };
    let started = Instant::now();
    if let Err(error) = project.compose(&["up", "--detach", "--wait", "--wait-timeout", "180"]) {
        let logs = project.compose(&["logs", "--no-color"]).unwrap_or_default();
        panic!("{error}\n{logs}");
    }
    eprintln!("stack healthy in {:.1?}", started.elapsed());

    let restarts = project.restarts();
    assert_eq!(restarts.len(), 4, "{restarts:?}");
    assert!(restarts.iter().all(|r| r.ends_with(" 0")), "{restarts:?}");

    let page = project.page(port, "/?token=first-visit");
    assert!(page.contains("PHP_VERSION 8.2."), "{page}");
    assert_promised_modules(&page);
    assert!(page.contains("memory_limit 256M\n"), "{page}");
    assert!(page.contains("read back first-visit\nrows 1\n"), "{page}");
    assert!(page.contains("MariaDB"), "{page}");

    let nginx_logs = project.compose(&["logs", "--no-color", "nginx"]).unwrap();
    assert!(
        nginx_logs.contains("GET /?token=first-visit HTTP/1.0\" 200"),
        "{nginx_logs}"
    );

    let first_logs = project.compose(&["logs", "--no-color", "mariadb"]).unwrap();
    assert!(
        first_logs.contains("created database shop-db"),
        "{first_logs}"
    );
    assert!(
        first_logs.contains("created user shop_user"),
        "{first_logs}"
    );

    // A new MariaDB container on the same volume keeps the data and ignores the variables.
    project
        .compose(&["rm", "--stop", "--force", "mariadb"])
        .unwrap();
    project
        .compose(&["up", "--detach", "--wait", "--wait-timeout", "120"])
        .unwrap();
    let page = project.page(port, "/?token=after-restart");
    assert!(page.contains("read back after-restart\nrows 2\n"), "{page}");
    let second_logs = project.compose(&["logs", "--no-color", "mariadb"]).unwrap();
    assert!(!second_logs.contains("initialising"), "{second_logs}");

    for logs in [first_logs, second_logs] {
        for secret in [password, root_password] {
            assert!(!logs.contains(secret), "a password is in the MariaDB logs");
        }
    }
}

#[test]
fn php_base_goes_to_a_registry_as_a_two_platform_index_and_the_stand_in_builds_over_it_under_qemu()
{
    let registry = Registry::start().unwrap();
    let base = real::push_php_base(&registry, PHP_8_2).unwrap();
    let index =
        testkit::fixtures::inspect_index(&Docker::new().unwrap(), &base.to_string()).unwrap();
    index
        .require_platforms(&["linux/amd64".to_owned(), "linux/arm64".to_owned()])
        .unwrap();

    let standin = real::push_php_fpm(&registry, &base, PHP_8_2).unwrap();
    let index =
        testkit::fixtures::inspect_index(&Docker::new().unwrap(), &standin.to_string()).unwrap();
    index
        .require_platforms(&["linux/amd64".to_owned(), "linux/arm64".to_owned()])
        .unwrap();
    let standin = standin.to_string();
    let machine = docker(&[
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        &standin,
        "php",
        "-r",
        "echo php_uname('m'), ' ', extension_loaded('gd') ? 'gd' : 'no-gd';",
    ]);
    // `docker run` pulled it into the local store; the registry goes away with the test, so does its image.
    let _ = Docker::new().unwrap().run(&DockerCommand::new([
        "image",
        "rm",
        "--force",
        standin.as_str(),
    ]));
    assert_eq!(machine, "aarch64 gd");
}
