//! `20i doctor` for real, one case per way a start goes wrong (engine down, a site folder the containers cannot
//! read, a port held by a socket or a container, an image without the engine's platform, too little disk, a bad
//! value, a broken module, cosign missing, a registry down): each names the check, its status and what to do.
//! And `20i start` with a taken port stops before pulling, naming the port and its variable.

use std::{net::TcpListener, os::unix::fs::PermissionsExt, path::Path};

use crate::harness::{docker, forget_image, publish_php_fpm_standin, reference, requests, Site};

/// One line of `20i doctor --json`.
#[derive(Debug)]
struct Checked {
    status: String,
    found: String,
    fix: String,
}

/// The doctor's line for `check`, from `--json`.
#[track_caller]
fn line(stdout: &str, check: &str) -> Checked {
    let report: serde_json::Value =
        serde_json::from_str(stdout).expect("doctor --json prints JSON");
    let line = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["check"] == check)
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{stdout}"));
    Checked {
        status: line["status"].as_str().unwrap().to_owned(),
        found: line["found"].as_str().unwrap().to_owned(),
        fix: line["fix"].as_str().unwrap_or_default().to_owned(),
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether a container running as nginx's user (uid 101) reads the site's index through the same bind mount.
fn container_reads(code: &Path) -> bool {
    let mount = format!("{}:/var/www/site:ro", code.display());
    stack_images::docker::Docker::new()
        .unwrap()
        .output(&stack_images::docker::DockerCommand::new([
            "run",
            "--rm",
            "--user",
            "101:101",
            "--volume",
            &mount,
            "--entrypoint",
            "cat",
            testkit::stack::NGINX_STANDIN,
            "/var/www/site/index.html",
        ]))
        .is_ok()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A folder whose only program is `docker`: PATH without cosign.
fn path_without_cosign(dir: &Path) -> String {
    let docker = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
        .expect("docker on PATH");
    std::os::unix::fs::symlink(docker, dir.join("docker")).unwrap();
    dir.display().to_string()
}

#[test]
fn each_doctor_line_names_the_problem_and_what_to_do() {
    // (case, check, status, a fragment of what was found, a fragment of the fix)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );
    let cases: &[Case] = &[
        (
            "engine down",
            "engine",
            "failed",
            "does not answer",
            "start Docker",
        ),
        (
            "site 0700",
            "CODE_DIR",
            "failed",
            "(mode 0700) cannot be read by nginx",
            "chmod o+rx -- ",
        ),
        (
            "site under 0750",
            "CODE_DIR",
            "ok",
            "readable by nginx (uid 101) and PHP-FPM (uid 82)",
            "",
        ),
        (
            "port held by a socket",
            "port HOST_PORT",
            "failed",
            "is taken on 127.0.0.1 by the process",
            "--set HOST_PORT=<free port>",
        ),
        (
            "port held by a container",
            "port HOST_PORT",
            "failed",
            "by the container doctor-holder-",
            "--set HOST_PORT=<free port>",
        ),
        (
            "too little disk",
            "disk",
            "failed",
            "less than 1000000.0 GB",
            "free disk space",
        ),
        (
            "bad value",
            "config",
            "failed",
            "USE_PREBUILT=\"maybe\" (from project",
            "fix that value where it was set",
        ),
        (
            "broken module",
            "stack files",
            "failed",
            "module broken",
            "fix or remove",
        ),
        (
            "cosign missing",
            "cosign",
            "failed",
            "cosign is not on PATH",
            "install cosign",
        ),
        (
            "registry down",
            "registry 127.0.0.1",
            "failed",
            "did not answer",
            "IMAGE_MIRRORS",
        ),
    ];
    for (case, check, status, found, fix) in cases {
        let mut site = Site::new("doctor");
        let mut args = vec!["doctor", "--json"];
        let mut extra: Vec<(String, String)> = Vec::new();
        let tools = tempfile::tempdir().unwrap();
        let mut _listener = None;
        let mut holder = None;
        let mut check = check.to_string();
        match *case {
            "engine down" => extra.push((
                "DOCKER_HOST".into(),
                format!("unix://{}/none.sock", tools.path().display()),
            )),
            "site 0700" => set_mode(&site.code, 0o700),
            "site under 0750" => set_mode(site.home.path(), 0o750),
            "port held by a socket" => {
                _listener = Some(
                    TcpListener::bind((
                        "127.0.0.1",
                        site.var("HOST_PORT").unwrap().parse::<u16>().unwrap(),
                    ))
                    .unwrap(),
                );
            }
            "port held by a container" => {
                let name = format!("doctor-holder-{}", site.project);
                let publish = format!("127.0.0.1:{}:80", site.var("HOST_PORT").unwrap());
                docker(&[
                    "run",
                    "--detach",
                    "--name",
                    &name,
                    "--publish",
                    &publish,
                    testkit::stack::NGINX_STANDIN,
                ]);
                holder = Some(name);
            }
            "too little disk" => args.extend(["--min-free-disk", "1000000G"]),
            "bad value" => {
                std::fs::write(site.code.join(".20i-local"), "USE_PREBUILT=maybe\n").unwrap()
            }
            "broken module" => {
                let dir = site.modules_dir().join("broken");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(
                    dir.join("docker-compose.yml"),
                    "services:\n  queue:\n    image: [unclosed\n",
                )
                .unwrap();
            }
            "cosign missing" => {
                std::fs::write(tools.path().join("cosign.pub"), "not a key").unwrap();
                extra.push(("VERIFY_SIGNATURE".into(), "true".into()));
                extra.push((
                    "SIGNATURE_KEY".into(),
                    tools.path().join("cosign.pub").display().to_string(),
                ));
                extra.push(("PATH".into(), path_without_cosign(tools.path())));
            }
            "registry down" => {
                let registry = format!("127.0.0.1:{}", closed_port());
                site.set("IMAGE_REGISTRY", &format!("{registry}/stack"));
                check = format!("registry {registry}");
                args.push("--online");
            }
            other => unreachable!("{other}"),
        }
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let run = site.run(&args, &extra);
        if let Some(name) = holder {
            docker(&["rm", "--force", &name]);
        }
        let got = line(&run.stdout, &check);
        assert_eq!(got.status, *status, "{case}: {got:?}");
        assert!(got.found.contains(found), "{case}: {got:?}");
        assert!(got.fix.contains(fix), "{case}: {got:?}");
        // Every line that is not ok says what to do; the exit code says whether anything failed.
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        for other in report["checks"].as_array().unwrap() {
            assert!(
                other["status"] == "ok" || other["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "{case}: {other}"
            );
        }
        let failed = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["status"] == "failed");
        assert_eq!(run.code, if failed { 1 } else { 0 }, "{case}");
        assert_eq!(report["ok"], !failed);
        // What the doctor says of the site's folder is what a container finds.
        if check == "CODE_DIR" {
            assert_eq!(container_reads(&site.code), *status == "ok", "{case}");
        }
        set_mode(&site.code, 0o755);
        set_mode(site.home.path(), 0o700);
    }
}

#[test]
fn doctor_warns_when_the_image_lacks_the_engines_platform() {
    let registry = testkit::Registry::start().unwrap();
    let (multi, _) = publish_php_fpm_standin(&registry.namespace("multi"), "8.5");
    // The same image with only its arm64 manifest: an index without this engine's platform (amd64 here).
    let raw = docker(&["buildx", "imagetools", "inspect", "--raw", &multi]);
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        _ => "arm64",
    };
    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    let digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == other)
        .expect("the stand-in has both platforms")["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let namespace = registry.namespace("single");
    let single = reference(&namespace, "8.5");
    let source = format!(
        "{}@{digest}",
        multi.rsplit_once(':').map(|(repo, _)| repo).unwrap()
    );
    docker(&["buildx", "imagetools", "create", "--tag", &single, &source]);
    forget_image(&single);
    let mut site = Site::new("doctor-platform");
    site.set("IMAGE_REGISTRY", &namespace);
    let run = site.run(&["doctor", "--json", "--online"], &[]);
    let got = line(&run.stdout, "platform");
    assert_eq!(got.status, "warning", "{got:?}");
    assert!(
        got.found.contains(&format!("the engine runs linux/{arch}")),
        "{got:?}"
    );
    assert!(
        got.found.contains(&format!("has only linux/{other}")),
        "{got:?}"
    );
    assert!(got.found.contains("emulation"), "{got:?}");
    assert!(got.fix.contains("USE_PREBUILT=false"), "{got:?}");
    let reached = line(&run.stdout, &format!("registry {}", registry.host()));
    assert_eq!(reached.status, "ok", "{reached:?}");
    // Warnings only: exit 0, and the disk line weighs the image's size.
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(line(&run.stdout, "disk").found.contains("free at"));
}

#[test]
fn start_with_a_taken_port_stops_before_pulling_naming_the_port_and_its_variable() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let (image, _) = publish_php_fpm_standin(&namespace, "8.5");
    let mut site = Site::new("taken-port");
    site.set("IMAGE_REGISTRY", &namespace);
    site.cleanup_images.push(image.clone());
    let port = site.var("PMA_PORT").unwrap().to_owned();
    let _listener = TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    let before = requests(&registry);
    let run = site.run(&["start"], &[]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    run.expect_stderr(&format!(
        "PMA_PORT={port} is taken on 127.0.0.1 by the process"
    ))
    .expect_stderr("--set PMA_PORT=<free port>")
    .expect_stderr("nothing was pulled or started");
    assert_eq!(
        requests(&registry),
        before,
        "the start asked the registry:\n{}",
        registry.log()
    );
    assert!(site.containers().is_empty(), "{:?}", site.containers());
}

#[test]
fn start_and_status_json_show_the_same_site_services_and_image() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let (image, _) = publish_php_fpm_standin(&namespace, "8.5");
    let mut site = Site::new("summary");
    site.set("IMAGE_REGISTRY", &namespace);
    site.cleanup_images.push(image.clone());
    let port = site.var("HOST_PORT").unwrap().to_owned();
    let started = site.run(&["start", "--json"], &[]).ok();
    let start: serde_json::Value =
        serde_json::from_str(&started.stdout).expect("start --json prints JSON");
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(start["site"], url.as_str(), "{}", started.stdout);
    assert_eq!(start["php_fpm"]["reference"], image.as_str());
    assert!(start["php_fpm"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        start["php_fpm"]["origin"],
        format!("pulled from {namespace}").as_str()
    );
    let phases: Vec<&str> = start["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["phase"].as_str().unwrap())
        .collect();
    assert!(
        phases.contains(&"pull") && phases.last() == Some(&"start"),
        "{phases:?}"
    );
    let services: Vec<(&str, &str)> = start["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        services,
        [
            ("apache", "running"),
            ("mariadb", "running"),
            ("nginx", "running"),
            ("phpmyadmin", "running")
        ]
    );
    let mysql = format!("127.0.0.1:{}", site.var("MYSQL_PORT").unwrap());
    assert!(
        start["services"][1]["reach"]
            .as_str()
            .unwrap()
            .starts_with(&mysql),
        "{}",
        started.stdout
    );
    // The URL printed answers (200; the nginx stand-in serves its own page).
    let _page = testkit::probe::http_get(
        port.parse().unwrap(),
        "/",
        std::time::Duration::from_secs(10),
    )
    .expect("the site's URL answers 200");

    let status = site.run(&["status", "--json"], &[]).ok();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["site"], start["site"]);
    assert_eq!(status["services"], start["services"]);
    assert_eq!(status["php_fpm"]["digest"], start["php_fpm"]["digest"]);
    assert!(status.get("steps").is_none());
}
