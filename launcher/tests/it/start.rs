//! `20i start` for real: pulled from a loopback registry then started from the cache with zero registry requests,
//! the fallback build when the registry is down (or the reasoned refusal), local builds that follow the
//! Dockerfile, a user module started with the same image variables, a stack that never gets healthy, and the
//! shipped compose file's real defaults.

use stack_images::docker::{Docker, DockerCommand};

use crate::harness::{
    docker, forget_image, publish_php_fpm_standin, reference, requests, times, Site,
};

#[test]
fn pulls_when_absent_then_starts_from_the_cache_with_no_registry_request() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let (image, _) = publish_php_fpm_standin(&namespace, "8.5");
    let mut site = Site::new("pull");
    site.set("IMAGE_REGISTRY", &namespace);
    site.cleanup_images.push(image.clone());

    assert_eq!(site.run(&["image"], &[]).ok().stdout.trim(), image);
    let first = site.run(&["start"], &[]).ok();
    first.expect_stdout(&format!("php-fpm  {image} (pulled from {namespace})"));
    assert!(first
        .stdout
        .contains("started the stack, every service healthy"));
    let containers = site.containers();
    assert_eq!(containers.len(), 4, "{containers:?}");
    assert!(
        containers
            .iter()
            .all(|c| c.contains("(healthy)") || c.contains("phpmyadmin")),
        "{containers:?}"
    );
    let running = docker(&[
        "inspect",
        "--format",
        "{{.Config.Image}}",
        &site.container("apache"),
    ]);
    assert_eq!(running.trim(), image);
    // The site is served on the published loopback port.
    let status = site.run(&["status"], &[]).ok();
    status.expect_stdout("healthy");

    site.run(&["stop"], &[]).ok();
    let before = requests(&registry);
    let cached = site.run(&["start"], &[]).ok();
    let after = requests(&registry);
    assert_eq!(
        after - before,
        0,
        "a cached start asked the registry:\n{}",
        registry.log()
    );
    cached.expect_stdout(&format!("php-fpm  {image} (cache (no registry request))"));

    let (total, in_docker, own) = times(&cached.stdout);
    let outside = cached.took.as_secs_f64();
    eprintln!(
        "cached start: {outside:.3} s measured outside, {total:.3} s inside; docker {in_docker:.3} s, launcher's own \
         work {own:.3} s = {:.1}% of the total (ratio launcher:docker = 1:{:.0})",
        100.0 * own / total,
        in_docker / own.max(1e-6)
    );
    // A generous sanity bound, not a benchmark: the launcher's own work is a small share.
    assert!(own < 0.25 * total, "launcher {own} s of {total} s");
    assert!(outside < 60.0, "a cached start took {outside} s");
}

#[test]
fn registry_down_builds_locally_or_stops_with_the_reason() {
    let mut registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    registry.stop();
    let mut site = Site::new("down");
    site.set("IMAGE_REGISTRY", &namespace);
    site.set("PHP_VERSION", "8.3");
    let local = format!("20i-local/php-fpm:v{}-php-8.3", crate::harness::VERSION);
    forget_image(&local);
    site.cleanup_images.push(local.clone());

    let refused = site.run(&["start"], &[("ALLOW_LOCAL_BUILD_FALLBACK", "false")]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    let host = registry.host();
    refused.expect_stderr(&format!(
        "could not reach {host} to pull {}",
        reference(&namespace, "8.3")
    ));
    refused.expect_stderr("and ALLOW_LOCAL_BUILD_FALLBACK=false: connect and run the command again, set IMAGE_MIRRORS to a registry holding the same images, or set ALLOW_LOCAL_BUILD_FALLBACK=true");
    refused.expect_stderr("pull attempt 2 of 3 failed (unreachable) at ");
    assert_eq!(
        site.containers(),
        Vec::<String>::new(),
        "nothing is started"
    );

    let built = site.run(&["start"], &[]).ok();
    built.expect_stderr("building locally (ALLOW_LOCAL_BUILD_FALLBACK=true)");
    built.expect_stdout(&format!(
        "php-fpm  {local} (built locally (could not reach {host}"
    ));
    let running = docker(&[
        "inspect",
        "--format",
        "{{.Config.Image}}",
        &site.container("apache"),
    ]);
    assert_eq!(running.trim(), local);
    let php = docker(&[
        "exec",
        &site.container("apache"),
        "cat",
        "/standin/php-version",
    ]);
    assert_eq!(
        php.trim(),
        "8.3",
        "the build got the release's PHP_VERSION build argument"
    );
}

#[test]
fn local_builds_follow_the_dockerfile() {
    let mut site = Site::new("local");
    site.set("USE_PREBUILT", "false");
    site.set("PHP_VERSION", "8.2");
    let local = format!("20i-local/php-fpm:v{}-php-8.2", crate::harness::VERSION);
    forget_image(&local);
    site.cleanup_images.push(local.clone());
    assert_eq!(site.run(&["image"], &[]).ok().stdout.trim(), local);

    let first = site.run(&["start"], &[]).ok();
    first.expect_stdout(&format!(
        "php-fpm  {local} (built locally (USE_PREBUILT=false))"
    ));
    let labels = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &local,
    ]);
    assert!(
        labels.contains("\"io.20i-stack.local-build\":\"true\""),
        "{labels}"
    );
    assert!(
        labels.contains("\"io.20i-stack.dockerfile-digest\":\"sha256:"),
        "{labels}"
    );

    site.run(&["stop"], &[]).ok();
    let unchanged = site.run(&["start"], &[]).ok();
    unchanged.expect_stdout("(local build, reused (build context unchanged))");

    let mut dockerfile = std::fs::read_to_string(site.dockerfile()).unwrap();
    dockerfile.push_str("RUN echo edited-locally > /standin/edited\n");
    std::fs::write(site.dockerfile(), dockerfile).unwrap();
    let changed = site.run(&["start"], &[]).ok();
    changed.expect_stderr("the build context changed");
    changed.expect_stdout("(built locally (USE_PREBUILT=false))");
    let edited = docker(&["exec", &site.container("apache"), "cat", "/standin/edited"]);
    assert_eq!(
        edited.trim(),
        "edited-locally",
        "the local edit is in the running container"
    );

    site.run(&["logs", "apache"], &[]).ok();
    site.run(&["destroy"], &[]).ok();
    assert_eq!(
        site.containers(),
        Vec::<String>::new(),
        "destroy left containers"
    );
    let label = format!("label=com.docker.compose.project={}", site.project);
    let volumes = docker(&["volume", "ls", "--quiet", "--filter", &label]);
    assert_eq!(volumes.trim(), "", "destroy left the database volume");
}

#[test]
fn a_module_is_started_with_the_same_image_variables() {
    let mut site = Site::new("module");
    site.set("USE_PREBUILT", "false");
    site.set("PHP_VERSION", "8.4");
    let local = format!("20i-local/php-fpm:v{}-php-8.4", crate::harness::VERSION);
    site.cleanup_images.push(local.clone());
    let module = site.modules_dir().join("queue-worker");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(
        module.join("docker-compose.yml"),
        "# A user module: no credentials, only the stack's variables.\n\
         services:\n  worker:\n    image: ${PHP_FPM_IMAGE}\n    environment:\n      \
         SEEN_PHP_VERSION: ${PHP_VERSION}\n      SEEN_PMA_IMAGE: ${PMA_IMAGE}\n    \
         volumes:\n      - ${CODE_DIR}:/var/www/site\n",
    )
    .unwrap();

    let explain = site.run(&["start", "--explain"], &[]).ok();
    explain.expect_stdout("(module queue-worker)");
    let started = site.run(&["start"], &[]).ok();
    started.expect_stdout("started the stack and 1 module(s), every service healthy");
    let worker = site.container("worker");
    let image = docker(&["inspect", "--format", "{{.Config.Image}}", &worker]);
    assert_eq!(image.trim(), local);
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &worker]);
    assert!(env.contains("\"SEEN_PHP_VERSION=8.4\""), "{env}");
    assert!(
        env.contains(&format!(
            "\"SEEN_PMA_IMAGE={}\"",
            testkit::stack::PHPMYADMIN_STANDIN
        )),
        "{env}"
    );
    let health = docker(&["inspect", "--format", "{{.State.Health.Status}}", &worker]);
    assert_eq!(health.trim(), "healthy");
    assert!(site.code_dir().join("index.html").exists());
}

#[test]
fn the_shipped_compose_file_runs_the_real_images_by_default_and_never_builds() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/stack/docker-compose.yml");
    let code = tempfile::tempdir().unwrap();
    let out = Docker::new()
        .unwrap()
        .output_with_env(
            &DockerCommand::new([
                "compose",
                "--project-name",
                "it-config",
                "--file",
                file,
                "config",
                "--format",
                "json",
            ]),
            &[
                ("CODE_DIR".to_owned(), code.path().display().to_string()),
                (
                    "PHP_FPM_IMAGE".to_owned(),
                    "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.4".to_owned(),
                ),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let config: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let services = &config["services"];
    let image = |s: &str| services[s]["image"].as_str().unwrap_or_default().to_owned();
    assert_eq!(image("nginx"), "nginx:1.25-alpine");
    assert_eq!(image("apache"), "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.4");
    assert_eq!(image("mariadb"), "mariadb:10.6");
    assert_eq!(image("phpmyadmin"), "phpmyadmin/phpmyadmin:latest");
    for service in ["nginx", "apache", "mariadb", "phpmyadmin"] {
        assert!(
            services[service].get("build").is_none(),
            "{service} has a build:"
        );
    }
    let published: Vec<String> = ["nginx", "mariadb", "phpmyadmin"]
        .iter()
        .map(|s| {
            services[*s]["ports"][0]["host_ip"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        published, ["127.0.0.1"; 3],
        "ports are published on loopback by default"
    );
}

#[test]
fn a_stack_that_never_gets_healthy_exits_4_with_what_to_do() {
    let mut site = Site::new("unhealthy");
    site.set("USE_PREBUILT", "false");
    site.set("PHP_VERSION", "8.1");
    site.cleanup_images.push(format!(
        "20i-local/php-fpm:v{}-php-8.1",
        crate::harness::VERSION
    ));
    // A web server that never answers the health check: the MariaDB stand-in listens on 3306, not 80.
    site.set("NGINX_IMAGE", testkit::stack::MARIADB_STANDIN);
    site.set("WAIT_TIMEOUT", "5");
    let run = site.run(&["start"], &[]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    run.expect_stderr("the stack did not start healthy within WAIT_TIMEOUT=5 s, still starting: nginx (starting): see `20i status` and `20i logs`, or raise WAIT_TIMEOUT\nthe last lines of nginx's log:");
}
