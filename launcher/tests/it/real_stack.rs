//! The stack with real software (issue 10): `20i start` from an image pulled from a loopback registry serves a PHP
//! page through the shipped compose file and nginx template, with its rows in MariaDB's volume; the same release
//! built locally (`USE_PREBUILT=false`) behaves the same; health is what the services' own checks say. Images come
//! from [`RealImages`]: Debian stand-ins here, the real ones where `STACK_IT_*` names them (the GitHub CI job).

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    time::{Duration, Instant},
};

use testkit::probe::{assert_promised_modules, visits_page};

use crate::harness::{docker, RealImages, RealSite};

impl RealSite {
    fn with_page(label: &str) -> RealSite {
        let real = RealSite::new(label);
        // The stack's default credentials: MYSQL_* as the compose file defaults them.
        let page = visits_page("site", "site", "site", "");
        std::fs::write(real.site.code.join("index.php"), page).unwrap();
        real
    }

    /// The page for `token`, checked for the line and every promised extension; returns its `read back` and
    /// `rows` lines.
    #[track_caller]
    fn visit(&self, token: &str) -> String {
        let page = self
            .get(&format!("/?token={token}"))
            .unwrap_or_else(|response| {
                let logs = self.site.run(&["logs"], &[]);
                panic!(
                    "GET /?token={token}: {response}\n{}{}",
                    logs.stdout, logs.stderr
                )
            });
        let version = page
            .lines()
            .find_map(|l| l.strip_prefix("PHP_VERSION "))
            .unwrap_or_default();
        assert!(version.starts_with(&format!("{}.", self.line)), "{page}");
        assert_promised_modules(&page);
        page.lines()
            .filter(|l| l.starts_with("read back ") || l.starts_with("rows "))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[test]
fn a_pulled_image_serves_php_and_keeps_its_rows_until_destroy() {
    let real = RealSite::with_page("page");
    let started = real.site.run(&["start"], &[]).ok();
    started.expect_stdout(&format!(
        "php-fpm  {} (pulled from {})",
        real.published,
        real.site.var("IMAGE_REGISTRY").unwrap()
    ));
    assert_eq!(real.visit("first"), "read back first, rows 1");

    real.site.run(&["stop"], &[]).ok();
    real.site.run(&["start"], &[]).ok();
    assert_eq!(real.visit("after-stop"), "read back after-stop, rows 2");

    real.site.run(&["destroy"], &[]).ok();
    real.site.run(&["start"], &[]).ok();
    assert_eq!(
        real.visit("after-destroy"),
        "read back after-destroy, rows 1"
    );
}

/// What a PHP-FPM image says about itself, section by section: `php -v`, `php -m`, every effective ini value
/// (CLI), and the FPM configuration as `php-fpm -tt` dumps it.
const FACTS_SCRIPT: &str = "\
set -e
echo '== php -v'; php -v
echo '== php -m'; php -m
echo '== ini'; php -r 'foreach (ini_get_all(null, false) as $k => $v) { echo $k, \" = \", var_export($v, true), \"\\n\"; }'
echo '== php-fpm -tt'; php-fpm -tt 2>&1
";

/// The facts of `image`, each line normalised, by section.
fn facts(image: &str) -> Vec<(String, Vec<String>)> {
    let out = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image,
        "-c",
        FACTS_SCRIPT,
    ]);
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            sections.push((name.to_owned(), Vec::new()));
        } else if let (Some((_, lines)), Some(line)) = (sections.last_mut(), normalise(line)) {
            lines.push(line);
        }
    }
    sections
}

/// A line of the facts as it may be compared: what legitimately differs between two builds of the same context
/// and base is dropped or masked; `None` drops the line.
fn normalise(line: &str) -> Option<String> {
    // `php-fpm -tt` logs each line with the time it ran: `[26-Nov-2026 10:00:00] NOTICE: ...`.
    let line = match line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((stamp, rest)) if stamp.contains('-') && stamp.contains(':') => rest,
        _ => line,
    };
    let line = line.trim_end();
    if line.is_empty() {
        return None;
    }
    Some(line.to_owned())
}

#[track_caller]
fn check_normalise(line: &str, expected: Option<&str>) {
    assert_eq!(normalise(line).as_deref(), expected, "{line}");
}

#[test]
fn the_facts_normaliser_drops_only_what_differs_between_runs() {
    check_normalise(
        "[26-Nov-2026 10:00:00] NOTICE: \tpm = dynamic",
        Some("NOTICE: \tpm = dynamic"),
    );
    check_normalise("[26-Nov-2026 10:00:00] NOTICE: configuration file /usr/local/etc/php-fpm.conf test is successful", Some("NOTICE: configuration file /usr/local/etc/php-fpm.conf test is successful"));
    check_normalise("[www]", Some("[www]"));
    check_normalise("[Zend Modules]", Some("[Zend Modules]"));
    check_normalise("memory_limit = '256M'  ", Some("memory_limit = '256M'"));
    check_normalise("", None);
    check_normalise(
        "PHP 8.2.29 (cli) (built: Jul  3 2025 16:16:05) (NTS)",
        Some("PHP 8.2.29 (cli) (built: Jul  3 2025 16:16:05) (NTS)"),
    );
}

/// The lines of each section that only one side has, as a table; empty when the two are equivalent.
fn differences(left: &[(String, Vec<String>)], right: &[(String, Vec<String>)]) -> String {
    let mut table = String::new();
    let names: BTreeSet<&str> = left.iter().chain(right).map(|(n, _)| n.as_str()).collect();
    let lines = |side: &[(String, Vec<String>)], name: &str| -> BTreeSet<String> {
        side.iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, l)| l.iter().cloned())
            .collect()
    };
    for name in names {
        let (l, r) = (lines(left, name), lines(right, name));
        for line in l.difference(&r) {
            let _ = writeln!(table, "  {name:<14} pulled only: {line}");
        }
        for line in r.difference(&l) {
            let _ = writeln!(table, "  {name:<14} local only:  {line}");
        }
    }
    table
}

#[test]
fn the_pulled_image_and_a_local_build_of_the_same_context_and_base_are_equivalent() {
    let real = RealSite::with_page("same");
    real.site.run(&["start"], &[]).ok();
    assert_eq!(real.visit("pulled"), "read back pulled, rows 1");
    let pulled = real.image_of("apache");

    let started = Instant::now();
    let built = real.site.run(&["start"], &[("USE_PREBUILT", "false")]).ok();
    eprintln!(
        "local build and start: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Built now, or reused from an earlier run of the same context and base: the launcher's local build either way.
    assert!(
        built.stdout.contains("(built locally") || built.stdout.contains("(local build, reused"),
        "{}",
        built.stdout
    );
    assert_eq!(real.visit("local"), "read back local, rows 2");
    let local = real.image_of("apache");
    assert_ne!(pulled, local, "the local build is another image");

    let (pulled_facts, local_facts) = (facts(&pulled), facts(&local));
    for (name, lines) in &pulled_facts {
        assert!(!lines.is_empty(), "no {name} from {pulled}");
    }
    let labels = |image: &str| {
        docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            image,
        ])
    };
    eprintln!(
        "labels (may differ: see docs/prebuilt-images.md)\n  pulled {}  local  {}",
        labels(&pulled),
        labels(&local)
    );
    let table = differences(&pulled_facts, &local_facts);
    assert!(
        table.is_empty(),
        "the pulled {pulled} and the local build {local} differ:\n{table}"
    );
}

/// The health docker records for a service's container.
fn health(real: &RealSite, service: &str) -> String {
    docker(&[
        "inspect",
        "--format",
        "{{.State.Health.Status}}",
        &real.site.container(service),
    ])
    .trim()
    .to_owned()
}

#[track_caller]
fn wait_health(real: &RealSite, service: &str, wanted: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if health(real, service) == wanted {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = docker(&[
        "inspect",
        "--format",
        "{{json .State.Health}}",
        &real.site.container(service),
    ]);
    panic!("{service} not {wanted} within {within:?}: {log}");
}

/// Sends `signal` to every FPM pool worker in the apache container (not the master, PID 1: a container's PID 1
/// gets no signal it has no handler for). The workers' command line is FPM's process title, `php-fpm: pool www`.
fn signal_workers(real: &RealSite, signal: &str) -> usize {
    let script = format!(
        "n=0; for p in /proc/[0-9]*; do \
           case \"$(tr '\\0' ' ' < \"$p/cmdline\" 2>/dev/null)\" in \
             'php-fpm: pool '*) kill -{signal} \"${{p#/proc/}}\" && n=$((n + 1));; \
           esac; \
         done; echo \"$n\""
    );
    docker(&["exec", &real.site.container("apache"), "sh", "-c", &script])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn health_is_what_the_services_own_checks_say_and_a_broken_template_names_nginx() {
    let real = RealSite::with_page("health");
    real.site.run(&["start"], &[]).ok();
    assert_eq!(health(&real, "apache"), "healthy");
    assert_eq!(real.get("/20i-health").unwrap(), "ok\n");

    // Workers that answer nothing: the health check's FastCGI ping times out and the container turns unhealthy.
    let stopped = signal_workers(&real, "STOP");
    assert!(stopped >= 1, "no FPM worker found");
    wait_health(&real, "apache", "unhealthy", Duration::from_secs(60));
    let log = docker(&[
        "inspect",
        "--format",
        "{{json .State.Health.Log}}",
        &real.site.container("apache"),
    ]);
    assert!(
        log.contains("php-fpm-healthcheck: timed out waiting for php-fpm to answer"),
        "{log}"
    );
    signal_workers(&real, "CONT");
    wait_health(&real, "apache", "healthy", Duration::from_secs(60));
    assert_eq!(real.visit("after-cont"), "read back after-cont, rows 1");

    // A syntax error in the nginx template: nginx refuses it at start, and `20i start` says so.
    real.site.run(&["stop"], &[]).ok();
    let template = real.site.stack_dir().join("docker/nginx.conf.tmpl");
    let good = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        good.replacen("server_name _;", "server_name _; location /unclosed {", 1),
    )
    .unwrap();
    let failed = real.site.run(&["start"], &[("WAIT_TIMEOUT", "60")]);
    assert_eq!(failed.code, 4, "{}", failed.stderr);
    failed.expect_stderr("error: the stack did not start, failing: nginx (");
    // The tail of nginx's own log says what is wrong, and where.
    failed
        .expect_stderr(
            "fix what its log says (`20i logs nginx` shows all of it), then run `20i start` again",
        )
        .expect_stderr("the last lines of nginx's log:\n")
        .expect_stderr("[emerg]")
        .expect_stderr("is outside location \"/unclosed\"");
    // Restored, the stack starts again.
    std::fs::write(&template, good).unwrap();
    real.site.run(&["start"], &[]).ok();
    assert_eq!(real.get("/20i-health").unwrap(), "ok\n");
}

#[track_caller]
fn check_images(vars: &[(&str, &str)], expected: Result<&str, &str>) {
    let got = RealImages::parse(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    });
    match (got, expected) {
        (Ok(images), Ok(debug)) => assert_eq!(format!("{images:?}"), debug),
        (Err(error), Err(message)) => assert_eq!(error.to_string(), message),
        (got, _) => panic!("{vars:?}: {got:?}"),
    }
}

#[test]
fn the_real_images_come_from_the_environment_once_parsed() {
    check_images(&[], Ok("RealImages { line: PhpLine { major: 8, minor: 2 }, php_fpm: DebianStandin, nginx: Standin, mariadb: Standin, phpmyadmin: Standin }"));
    check_images(&[("STACK_IT_NGINX_IMAGE", "nginx:1.27-alpine"), ("STACK_IT_MARIADB_IMAGE", ""), ("STACK_IT_PMA_IMAGE", "default"), ("STACK_IT_PHP_LINE", "8.5")], Ok("RealImages { line: PhpLine { major: 8, minor: 5 }, php_fpm: DebianStandin, nginx: Named(\"nginx:1.27-alpine\"), mariadb: Standin, phpmyadmin: StackDefault }"));
    check_images(&[("STACK_IT_PMA_IMAGE", "--privileged")], Err("STACK_IT_PMA_IMAGE=\"--privileged\" is not an image reference: name an image such as nginx:1.25-alpine, `default` for the launcher's, or unset STACK_IT_PMA_IMAGE for the stand-in"));
    check_images(
        &[("STACK_IT_PHP_LINE", "8.4.1")],
        Err("STACK_IT_PHP_LINE=\"8.4.1\": PHP version `8.4.1` is not a PHP line: use `8.4`"),
    );
    let context = format!("{}/../images/php-fpm", env!("CARGO_MANIFEST_DIR"));
    let expected = format!("RealImages {{ line: PhpLine {{ major: 8, minor: 2 }}, php_fpm: Context({context:?}), nginx: Standin, mariadb: Standin, phpmyadmin: Standin }}");
    check_images(
        &[("STACK_IT_PHP_FPM_CONTEXT", "images/php-fpm")],
        Ok(&expected),
    );
    check_images(&[("STACK_IT_PHP_FPM_CONTEXT", "/nonexistent/php-fpm")], Err("STACK_IT_PHP_FPM_CONTEXT=/nonexistent/php-fpm has no Dockerfile: set it to images/php-fpm, or unset it for the Debian stand-in"));
}
