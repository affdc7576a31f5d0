//! Every boundary where a value enters `20i` (stack-vars.yml, `~/.20i/config`, `.20i-local`, the environment,
//! `--set`, the named flags, command arguments), one bad input per line: the exit code, a message naming the value
//! (unless secret), where it came from and what to do; and that nothing was written, no docker command ran (a
//! tripwire `docker`), and no secret was printed. Then the secrets of every layer through every command, against the
//! real docker.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::harness::{Run, VERSION};

/// A temporary home, site and stack for one run; `docker` is a tripwire that records being called.
struct Bare {
    root: tempfile::TempDir,
    docker: PathBuf,
}

impl Bare {
    fn new(docker_script: &str) -> Bare {
        let root = tempfile::Builder::new()
            .prefix("20i-bare-")
            .tempdir()
            .unwrap();
        for dir in ["home/.20i", "site", "home/docker/20i-stack/config"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let docker = root.path().join("bin/docker");
        std::fs::create_dir_all(docker.parent().unwrap()).unwrap();
        let marker = root.path().join("bin/docker-was-called");
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\n{docker_script}\n",
            marker.display()
        );
        std::fs::write(&docker, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
        Bare { root, docker }
    }

    fn tripwire() -> Bare {
        Bare::new("exit 1")
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    fn site(&self) -> PathBuf {
        self.root.path().join("site")
    }

    fn docker_calls(&self) -> String {
        std::fs::read_to_string(self.root.path().join("bin/docker-was-called")).unwrap_or_default()
    }

    /// `{local}`, `{user}`, `{vars}`, `{site}`, `{home}` and `{V}` in `text`.
    fn expand(&self, text: &str) -> String {
        let stack = self.home().join("docker/20i-stack");
        text.replace(
            "{local}",
            &self.site().join(".20i-local").display().to_string(),
        )
        .replace(
            "{user}",
            &self.home().join(".20i/config").display().to_string(),
        )
        .replace(
            "{vars}",
            &stack.join("config/stack-vars.yml").display().to_string(),
        )
        .replace("{site}", &self.site().display().to_string())
        .replace("{home}", &self.home().display().to_string())
        .replace("{V}", VERSION)
    }

    /// Writes `local` (`.20i-local`), `user` (`~/.20i/config`), `vars` (stack-vars.yml) or a path under the root.
    fn write(&self, file: &str, text: &str) {
        let path = match file {
            "local" => self.site().join(".20i-local"),
            "user" => self.home().join(".20i/config"),
            "vars" => self.home().join("docker/20i-stack/config/stack-vars.yml"),
            other => self.root.path().join(other),
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, self.expand(text)).unwrap();
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_20i"));
        command
            .args(args)
            .current_dir(self.site())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("DOCKER", &self.docker);
        for (name, value) in env {
            command.env(name, self.expand(value));
        }
        let started = std::time::Instant::now();
        let output = command.output().expect("running 20i");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            took: started.elapsed(),
        }
    }

    /// Every path under the root with its type and content: what a run must leave as it was.
    fn tree(&self) -> Vec<(PathBuf, String)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
                if kind.is_dir() {
                    out.push((path.clone(), "dir".to_owned()));
                    walk(&path, out);
                } else if kind.is_file() {
                    out.push((
                        path.clone(),
                        String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
                    ));
                } else {
                    out.push((path, format!("{kind:?}")));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), &mut out);
        out.sort();
        out
    }
}

/// What a case writes before the run: `(file, text)` as [`Bare::write`] takes it, or `fifo PATH` / `dir PATH`.
type Files<'a> = &'a [(&'a str, &'a str)];

/// Runs `20i ARGS` with `files` and `env`: asserts the exit code, that stderr contains each of `expected` (with
/// placeholders expanded), and, for a configuration error, that stdout is empty, no file changed and docker never
/// ran. No run prints anything containing `hunter` (every secret in these cases does).
#[track_caller]
fn check(files: Files, args: &[&str], env: &[(&str, &str)], code: i32, expected: &[&str]) {
    let bare = Bare::tripwire();
    for (file, text) in files {
        match file.split_once(' ') {
            Some(("fifo", path)) => {
                let path = bare.root.path().join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                assert!(Command::new("mkfifo")
                    .arg(&path)
                    .status()
                    .unwrap()
                    .success());
            }
            Some(("dir", path)) => std::fs::create_dir_all(bare.root.path().join(path)).unwrap(),
            _ => bare.write(file, text),
        }
    }
    let args: Vec<String> = args.iter().map(|a| bare.expand(a)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = bare.tree();
    let run = bare.run(&args, env);
    let all = format!("{}{}", run.stdout, run.stderr);
    let context = format!("20i {args:?} {env:?}\nexit {}\n{all}", run.code);
    assert_eq!(run.code, code, "{context}");
    for piece in expected {
        assert!(
            run.stderr.contains(&bare.expand(piece)),
            "no {piece:?} in:\n{context}"
        );
    }
    assert!(!all.contains("hunter"), "a secret was printed:\n{context}");
    if code == 2 {
        assert_eq!(run.stdout, "", "{context}");
        assert_eq!(
            bare.docker_calls(),
            "",
            "docker ran for a configuration error:\n{context}"
        );
        assert!(bare.tree() == before, "a file changed:\n{context}");
        assert!(run.stderr.starts_with("error: "), "{context}");
        assert_eq!(run.stderr.matches("error: ").count(), 1, "{context}");
    }
}

const PORT: &str =
    "is not valid: use a port number from 1 to 65535 in plain digits, for example 8080";
const NAMESPACE: &str = "is not a lowercase host name (letters, digits, inner `-` and `.`); use host/namespace without scheme or tag";

#[test]
#[rustfmt::skip]
fn stack_vars() {
    check(&[("vars", "PHP_VERSION: \"8.3\"   # default: the release's default PHP line\n")], &["image"], &[], 0, &[]);
    check(&[("vars", "PHP_VERSION: \"8.5\" x\n")], &["image"], &[], 2, &["{vars}:1: PHP_VERSION: text follows the closing \": quote the whole value"]);
    check(&[("vars", "  MYSQL_PASSWORD: hunter2\n")], &["start"], &[], 2, &["{vars}:1: the setting of MYSQL_PASSWORD is indented: nested values are not read"]);
    check(&[("vars", "DB_PASS hunter2\n")], &["image"], &[], 2, &["{vars}:1: a line that looks like a secret (not shown) has no `:`: write NAME: value"]);
    check(&[("vars", "STACK_DIR: /elsewhere\n")], &["image"], &[], 2, &["STACK_DIR cannot be set in {vars} (stack vars {vars}:1): it decides where the stack is"]);
    check(&[("vars", "# c\nHOST_PORT: \"+80\"\n")], &["start"], &[], 2, &["HOST_PORT=\"+80\" (from stack vars {vars}:2) ", PORT]);
    check(&[("vars", "PHP_VERSION:8.5\n")], &["image"], &[], 2, &["{vars}:1: PHP_VERSION: YAML needs a space after the `:`: write `PHP_VERSION: value`"]);
    check(&[("vars", "PHP_VERSION: '8.4\n")], &["pull"], &[], 2, &["{vars}:1: PHP_VERSION: the closing ' is missing (values are one line): close the quote"]);
}

#[test]
#[rustfmt::skip]
fn user_config() {
    check(&[("user", "MYSQL_PASSWORD hunter2\n")], &["image"], &[], 2, &["{user}:1: the setting of MYSQL_PASSWORD has no `=`: write NAME=value"]);
    check(&[("user", "WAIT_TIMEOUT=2m\n")], &["start"], &[], 2, &["WAIT_TIMEOUT=\"2m\" (from user config {user}:1) is not valid: use a number of seconds from 1 to 86400"]);
    check(&[("user", "IMAGE_REGISTRY=-oops\n")], &["pull"], &[], 2, &["IMAGE_REGISTRY=\"-oops\" (from user config {user}:1) is not valid: registry namespace `-oops` is not valid: the registry host `-oops` ", NAMESPACE]);
    check(&[("user", "1A=x\n")], &["image"], &[], 2, &["{user}:1: \"1A\" is not a variable name (letters, digits and `_`, not starting with a digit): write NAME=value"]);
    check(&[("user", "CODE_DIR=/nonexistent-20i-site\n")], &["status"], &[], 2, &["CODE_DIR=\"/nonexistent-20i-site\" (from user config {user}:1) does not exist: set CODE_DIR to the site's directory"]);
    check(&[("user", "STACK_DIR=stacks/x\nSTACK_FILE=nope.yml\n")], &["start"], &[], 2, &["no compose file at {home}/.20i/nope.yml: run `20i init`"]);
}

#[test]
#[rustfmt::skip]
fn project_local() {
    check(&[("local", "MYSQL_PASSWORD hunter2\n")], &["image"], &[], 2, &["{local}:1: the setting of MYSQL_PASSWORD has no `=`: write NAME=value"]);
    check(&[("local", "X=1\n    MYSQL_PASSWORD hunter2\n")], &["start"], &[], 2, &["{local}:2: the setting of MYSQL_PASSWORD has no `=`"]);
    check(&[("local", "X=1\nDB_PASS hunter2\n")], &["image"], &[], 2, &["{local}:2: a line that looks like a secret (not shown) has no `=`"]);
    check(&[("local", "MYSQL_PASSWORD=\"hunter2\n")], &["image"], &[], 2, &["{local}:1: MYSQL_PASSWORD: the closing \" is missing"]);
    check(&[("local", "HOST_PORT=+80\n")], &["start"], &[], 2, &["HOST_PORT=\"+80\" (from project {local}:1) ", PORT]);
    check(&[("local", "HOST_PORT=0\n")], &["start"], &[], 2, &["HOST_PORT=\"0\" (from project {local}:1) ", PORT]);
    check(&[("local", "HOST_PORT=65536\n")], &["start"], &[], 2, &["HOST_PORT=\"65536\" (from project {local}:1) ", PORT]);
    check(&[("local", "CODE_DIR=/tmp/a:b\n")], &["start"], &[], 2, &["CODE_DIR=\"/tmp/a:b\" (from project {local}:1) is not valid: a `:` in this path breaks compose's HOST:CONTAINER volume syntax"]);
    check(&[("local", "CODE_DIR=index.html\n"), ("site/index.html", "hi")], &["start"], &[], 2, &["CODE_DIR=\"{site}/index.html\" (from project {local}:1) is not a directory: set CODE_DIR to the site's directory"]);
    check(&[("local", "CODE_DIR=missing\n")], &["start"], &[], 2, &["CODE_DIR=\"{site}/missing\" (from project {local}:1) does not exist"]);
    check(&[("local", "IMAGE_MIRRORS=ghcr.io/20i-stack\n")], &["pull"], &[], 2, &["IMAGE_MIRRORS=\"ghcr.io/20i-stack\" (from project {local}:1) is not valid: `ghcr.io/20i-stack` is IMAGE_REGISTRY itself"]);
    check(&[("local", "IMAGE_MIRRORS=docker.io/a, docker.io/a\n")], &["pull"], &[], 2, &["is not valid: `docker.io/a` is listed twice: list each mirror once"]);
    check(&[("local", "PHP_FPM_PIN=sha256:abc\n")], &["image"], &[], 2, &["PHP_FPM_PIN=\"sha256:abc\" (from project {local}:1) is not valid: use <image>@sha256:<64 hex digits>"]);
    check(&[("local", "COMPOSE_PROJECT_NAME=-p\n")], &["stop"], &[], 2, &["COMPOSE_PROJECT_NAME=\"-p\" (from project {local}:1) is not valid: use lowercase letters"]);
    check(&[("local", "NGINX_IMAGE=--privileged\n")], &["start"], &[], 2, &["NGINX_IMAGE=\"--privileged\" (from project {local}:1) is not valid: use an image reference"]);
    check(&[("local", "\u{feff}PHP_VERSION=8.2\n")], &["image"], &[], 0, &[]);
    check(&[("local", "PMA_PORT=8080\n")], &["start"], &[("HOST_PORT", "8080")], 2, &["HOST_PORT=8080 (from environment) and PMA_PORT=8080 (from project {local}:1) are the same host port: give each service its own"]);
    check(&[("local", "PHP_VERSION=8.4.3\n")], &["image"], &[], 2, &["PHP_VERSION=\"8.4.3\" (from project {local}:1) is not valid: PHP version `8.4.3` is not a PHP line: use `8.4`"]);
    check(&[("dir site/.20i-local", "")], &["image"], &[], 2, &["{local} is not a regular file"]);
    check(&[("fifo site/.20i-local", "")], &["start", "--explain"], &[], 2, &["{local} is not a regular file"]);
}

#[test]
#[rustfmt::skip]
fn environment() {
    check(&[], &["start"], &[("HOST_PORT", " 80")], 2, &["HOST_PORT=\" 80\" (from environment) ", PORT]);
    check(&[], &["start"], &[("HOST_PORT", "+80")], 2, &["HOST_PORT=\"+80\" (from environment) ", PORT]);
    check(&[], &["pull"], &[("IMAGE_REGISTRY", "-oops")], 2, &["IMAGE_REGISTRY=\"-oops\" (from environment) is not valid: registry namespace `-oops` is not valid: the registry host `-oops` ", NAMESPACE]);
    check(&[], &["image"], &[("USE_PREBUILT", "yes")], 2, &["USE_PREBUILT=\"yes\" (from environment) is not valid: use true or false (or 1 or 0)"]);
    check(&[], &["start"], &[("WAIT_TIMEOUT", "0")], 2, &["WAIT_TIMEOUT=\"0\" (from environment) is not valid: use a number of seconds from 1 to 86400"]);
    check(&[], &["init"], &[("STACK_DIR", "")], 2, &["STACK_DIR=\"\" (from environment) is not valid: use a path"]);
    check(&[], &["start"], &[("BIND_ADDRESS", "localhost")], 2, &["BIND_ADDRESS=\"localhost\" (from environment) is not valid: use an IPv4 address"]);
    check(&[], &["start"], &[("MYSQL_VERSION", "10.6 --rm")], 2, &["MYSQL_VERSION=\"10.6 --rm\" (from environment) is not valid: use an image tag"]);
    check(&[], &["start"], &[("PMA_PORT", "99999")], 2, &["PMA_PORT=\"99999\" (from environment) ", PORT]);
    check(&[], &["image"], &[("STACK_RELEASE", "2.0")], 2, &["STACK_RELEASE=\"2.0\" (from environment) is not valid: `2.0` is not a release version: use vX.Y.Z"]);
}

#[test]
#[rustfmt::skip]
fn set_and_flags() {
    let usage = "use --set NAME=VALUE, for example --set HOST_PORT=8080";
    check(&[], &["--set", "=v", "image"], &[], 2, &["--set with an empty name (nothing before the `=`): ", usage]);
    check(&[], &["--set", "A B=1", "image"], &[], 2, &["--set \"A B\"=… : \"A B\" is not a variable name", usage]);
    check(&[], &["--set", "MYSQL_PASSWORDhunter2", "start"], &[], 2, &["--set with a line that looks like a secret (not shown): it has no `=`: ", usage]);
    check(&[], &["--set", "HOST_PORT=+80", "start"], &[], 2, &["HOST_PORT=\"+80\" (from command line (--set)) ", PORT]);
    check(&[], &["--set", "IMAGE_MIRRORS=--insecure", "pull"], &[], 2, &["IMAGE_MIRRORS=\"--insecure\" (from command line (--set)) is not valid: registry namespace `--insecure` is not valid: the registry host `--insecure` ", NAMESPACE]);
    check(&[], &["--set", "CODE_DIR=/a:b", "start"], &[], 2, &["CODE_DIR=\"/a:b\" (from command line (--set)) is not valid: a `:`"]);
    check(&[], &["--php-version", "8", "image"], &[], 2, &["PHP_VERSION=\"8\" (from command line (--php-version)) is not valid: PHP version `8` is not a PHP line"]);
    check(&[], &["--registry=-oops", "image"], &[], 2, &["IMAGE_REGISTRY=\"-oops\" (from command line (--registry)) is not valid: registry namespace `-oops` is not valid: the registry host `-oops` ", NAMESPACE]);
    check(&[], &["--use-prebuilt=maybe", "start"], &[], 2, &["USE_PREBUILT=\"maybe\" (from command line (--use-prebuilt)) is not valid: use true or false"]);
    check(&[], &["--allow-local-build-fallback=2", "pull"], &[], 2, &["ALLOW_LOCAL_BUILD_FALLBACK=\"2\" (from command line (--allow-local-build-fallback)) is not valid"]);
    check(&[], &["--stack-dir=", "init"], &[], 2, &["a value is required for '--stack-dir <DIR>'"]);
    check(&[], &["--set", "STACK_FILE=missing.yml", "start"], &[], 2, &["no compose file at {site}/missing.yml: run `20i init`"]);
    check(&[], &["--set", "STACK_FILE=missing.yml", "status"], &[], 2, &["no compose file at {site}/missing.yml"]);
    check(&[], &["logs", "--", "--tail=5"], &[], 2, &["\"--tail=5\" is not a service name: use nginx, apache, mariadb, phpmyadmin"]);
}

/// A value in the environment that is not UTF-8 is refused, naming the variable, never skipped.
#[test]
fn a_non_utf8_environment_value_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let bare = Bare::tripwire();
    let output = Command::new(env!("CARGO_BIN_EXE_20i"))
        .arg("image")
        .current_dir(bare.site())
        .env_clear()
        .env("HOME", bare.home())
        .env("DOCKER", &bare.docker)
        .env("PHP_VERSION", std::ffi::OsStr::from_bytes(b"8.\xff"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: PHP_VERSION in the environment is not UTF-8 text: set it to a UTF-8 value, or unset it\n"
    );
    assert_eq!(bare.docker_calls(), "");
}

/// The defect: with PHP_VERSION in stack-vars.yml and a pin of that line in `.20i-local`, `20i image` failed
/// because the configuration was resolved once without stack-vars.yml.
#[test]
fn a_pin_for_the_stack_vars_line_is_used() {
    let digest = format!("sha256:{}", "c".repeat(64));
    let pinned = format!("ghcr.io/20i-stack/php-fpm:v{VERSION}-php-8.3@{digest}");
    let bare = Bare::tripwire();
    bare.write("vars", "PHP_VERSION: \"8.3\"   # the site's line\n");
    bare.write("local", &format!("PHP_FPM_PIN={pinned}\n"));
    let run = bare.run(&["image"], &[]).ok();
    assert_eq!(run.stdout.trim(), pinned);
    assert_eq!(bare.docker_calls(), "");
}

/// The defect: 80,000 keys in `.20i-local` took 17 s (quadratic). They resolve; no time is asserted.
#[test]
fn many_keys_resolve() {
    let bare = Bare::tripwire();
    let text: String = (0..80_000).map(|i| format!("KEY_{i}=v{i}\n")).collect();
    bare.write("local", &text);
    let run = bare.run(&["image"], &[]).ok();
    assert!(
        run.stdout.starts_with("ghcr.io/20i-stack/php-fpm:"),
        "{}",
        run.stdout
    );
    eprintln!(
        "80,000 keys: `20i image` took {:.2} s",
        run.took.as_secs_f64()
    );
}

/// A FIFO in the build context is refused, naming it, before any docker call (reading it would block).
#[test]
fn a_fifo_in_the_build_context_is_refused() {
    let bare = Bare::tripwire();
    let context = bare.root.path().join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\n").unwrap();
    assert!(Command::new("mkfifo")
        .arg(context.join("pipe"))
        .status()
        .unwrap()
        .success());
    let context_text = context.display().to_string();
    let env = [
        ("USE_PREBUILT", "false"),
        ("PHP_FPM_CONTEXT", context_text.as_str()),
    ];
    for args in [&["start", "--explain"][..], &["pull"]] {
        let run = bare.run(args, &env);
        assert_eq!(run.code, 2, "{}", run.stderr);
        run.expect_stderr(&format!(
            "reading the build context {context_text} (PHP_FPM_CONTEXT): {context_text}/pipe is not a regular \
             file (a FIFO, socket or device)"
        ));
        assert!(!run.stderr.contains("local image store"), "{}", run.stderr);
    }
    // A Dockerfile linked to a FIFO is refused too, without reading it.
    std::fs::remove_file(context.join("pipe")).unwrap();
    std::fs::remove_file(context.join("Dockerfile")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(bare.root.path().join("fifo"))
        .status()
        .unwrap()
        .success());
    std::os::unix::fs::symlink(bare.root.path().join("fifo"), context.join("Dockerfile")).unwrap();
    let run = bare.run(&["start", "--explain"], &env);
    assert_eq!(run.code, 2, "{}", run.stderr);
    run.expect_stderr(&format!("{context_text}/Dockerfile is not a regular file"));
    assert_eq!(bare.docker_calls(), "");
}

/// With docker down, `--explain`'s error says "reading the local image store" once, with docker's reason.
#[test]
fn docker_down_is_said_once() {
    let bare = Bare::new(
        "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1",
    );
    let run = bare.run(&["start", "--explain"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("reading the local image store").count(),
        1,
        "{}",
        run.stderr
    );
    run.expect_stderr("Cannot connect to the Docker daemon");
}

/// A PHP line with no published image and no locked base: a local build says its base is not pinned, and why.
#[test]
fn an_unlocked_line_says_its_base_is_not_pinned() {
    let bare = Bare::new("echo 'Error response from daemon: No such image: x' >&2\nexit 1");
    let run = bare.run(
        &["start", "--explain"],
        &[("PHP_VERSION", "8.0"), ("USE_PREBUILT", "false")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.expect_stdout(
        "a local build's base is not pinned: PHP 8.0 is not a line of this release (its base lock pins 8.1, \
         8.2, 8.3, 8.4, 8.5), so the Dockerfile's default base docker.io/library/php:8.0-fpm-alpine is built by \
         tag",
    );
}

/// No secret given in any layer, well-formed or not, appears in any output of any command (errors included),
/// against the real docker: `image`, `start --explain`, `status`, `pull` (failing), and a failing `start`.
#[test]
fn secrets_never_appear_in_any_output() {
    let bare = Bare::tripwire();
    let docker = std::env::var_os("DOCKER").map_or_else(|| PathBuf::from("docker"), PathBuf::from);
    // Free ports: `start` checks them before it pulls, and the defaults (80, 3306, 8081) may be another's.
    let [web, database, admin] = testkit::stack::free_ports().unwrap().map(|p| p.to_string());
    let with_real_docker = |args: &[&str], env: &[(&str, &str)]| {
        let mut env: Vec<(&str, &str)> = env.to_vec();
        let docker = docker.display().to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_20i"));
        command
            .args(args)
            .current_dir(bare.site())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", bare.home())
            .env("DOCKER", &docker);
        env.push(("IMAGE_REGISTRY", "127.0.0.1:9/nowhere"));
        env.push(("ALLOW_LOCAL_BUILD_FALLBACK", "false"));
        env.extend([
            ("HOST_PORT", web.as_str()),
            ("MYSQL_PORT", database.as_str()),
            ("PMA_PORT", admin.as_str()),
        ]);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    let stack = bare.home().join("docker/20i-stack");
    assert_eq!(with_real_docker(&["init"], &[]).0, 0);
    let well_formed = |bare: &Bare| {
        bare.write("vars", "MYSQL_ROOT_PASSWORD: \"hunter-vars\"  # root\n");
        bare.write(
            "user",
            "MYSQL_PASSWORD=hunter-user\nSMTP_PWD=hunter-user-2\n",
        );
        bare.write(
            "local",
            "DB_PASS=hunter-local\nexport MODULE_SECRET='hunter-local-2'\n",
        );
    };
    well_formed(&bare);
    let env = [
        ("API_TOKEN", "hunter-env"),
        ("MYSQL_PASSWORD", "hunter-env-2"),
    ];
    let set = [
        "--set",
        "GIT_CREDENTIALS=hunter-flag",
        "--set",
        "MYSQL_ROOT_PASSWORD=hunter-flag-2",
    ];
    let mut outputs = Vec::new();
    // The pulls fail (nothing listens on port 9) and the fallback is off: exit 3, with docker's message.
    #[rustfmt::skip]
    let commands = [(&["image"][..], 0), (&["start", "--explain"], 0), (&["status"], 0), (&["pull"], 3), (&["start"], 3)];
    for (command, code) in commands {
        let args: Vec<&str> = set.iter().copied().chain(command.iter().copied()).collect();
        let result = with_real_docker(&args, &env);
        assert_eq!(result.0, code, "{args:?}: {}", result.1);
        outputs.push((args.join(" "), result));
    }
    // A failing start with a module compose refuses: its message comes from compose.
    bare.write(
        "home/.20i/modules/broken/docker-compose.yml",
        "services:\n  x:\n    image: busybox\n    environment:\n      P: ${MYSQL_PASSWORD}\n    ports:\n      - \"${MYSQL_PASSWORD}:80\"\n",
    );
    let args: Vec<&str> = set.iter().copied().chain(["start"]).collect();
    let failing = with_real_docker(&args, &env);
    assert_eq!(failing.0, 2, "{}", failing.1);
    assert!(failing.1.contains("module broken"), "{}", failing.1);
    // Compose read the files before anything was pulled.
    assert!(!failing.1.contains("pulling"), "{}", failing.1);
    outputs.push(("start with a broken module".to_owned(), failing));
    for command in ["status", "stop"] {
        let failing = with_real_docker(&[command], &env);
        assert_eq!(failing.0, 2, "{}", failing.1);
        assert!(failing.1.contains("module broken"), "{}", failing.1);
        outputs.push((format!("{command} with a broken module"), failing));
    }
    std::fs::remove_dir_all(bare.home().join(".20i/modules")).unwrap();
    // Malformed lines holding secrets, in every layer.
    for (file, text) in [
        ("local", "MYSQL_PASSWORD hunter-malformed\n"),
        ("local", "  DB_PASS hunter-malformed\n"),
        ("user", "X=1\nAPI_TOKEN:hunter-malformed\n"),
        ("vars", "  MYSQL_PASSWORD: hunter-malformed\n"),
        ("vars", "MYSQL_PASSWORD: \"hunter-malformed\" trailing\n"),
    ] {
        well_formed(&bare);
        bare.write(file, text);
        for command in [
            &["image"][..],
            &["start", "--explain"],
            &["status"],
            &["pull"],
            &["start"],
        ] {
            let result = with_real_docker(command, &env);
            assert_eq!(result.0, 2, "{file} {text:?} {command:?}: {}", result.1);
            outputs.push((format!("{file} {text:?} {command:?}"), result));
        }
    }
    well_formed(&bare);
    for bad_set in ["MYSQL_PASSWORDhunter-malformed", "DB PASS=hunter-malformed"] {
        let result = with_real_docker(&["--set", bad_set, "start"], &env);
        assert_eq!(result.0, 2, "{}", result.1);
        outputs.push((format!("--set {bad_set}"), result));
    }
    for (what, (code, output)) in &outputs {
        assert!(
            !output.contains("hunter"),
            "{what} (exit {code}) printed a secret:\n{output}"
        );
    }
    // The runs that get as far as docker did run: the explain shows the secrets' names.
    let explain = &outputs[1].1 .1;
    assert!(
        explain.contains("DB_PASS") && explain.contains("(set, not shown)"),
        "{explain}"
    );
    assert!(stack.join("docker-compose.yml").is_file());
}
