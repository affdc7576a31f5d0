//! `cargo xtask demo`: a complete local release on this machine. Two registries on loopback stand in for GHCR
//! and Docker Hub as those are reached: the real `distribution` over TLS from a CA made for the demo, with token
//! auth from the token service stand-in, behind a proxy that answers with each service's quirks (testkit's
//! `hosted-standins`, started detached by `scripts/registry.sh hosted-up` so they outlive the demo; `make
//! demo-down` stops them). The demo user's password is made per demo state and only ever read from its 0600
//! file; `docker login` puts it in the demo's own `DOCKER_CONFIG`, which everything the demo runs uses. The
//! images are built from stand-ins, because Docker Hub's `php` images
//! cannot be pulled here: real Debian PHP-FPM for the lines Debian has (8.2, 8.4; `standins.rs`) and busybox for
//! the others, said line by line. Every other step is the real release. The pins are signed with a throwaway
//! cosign key pair made for the run (its password random, given to cosign's environment alone), whose public key
//! the demo names with a `cosign verify` line to run by hand. The launcher's archive for this machine is built and
//! sealed as the release workflow does (`dist build`, `dist seal` with the same key), listed in the notes and
//! served on loopback by python's file server (`scripts/registry.sh files-up`, standing in for the GitHub
//! release's downloads), with the `curl … | sh` line that installs it from there. It ends with the one-line
//! `20i start` that runs the stack from what it published, with the real nginx and MariaDB stand-ins. It says
//! which of its phases it is in and for how long (`crate::progress`), the release's own phases and steps inside
//! it, and every long wait (the stand-ins under emulation, the bake whose log goes to a file) says it is still at
//! it at least every 10 s.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::Args;
use stack_images::{
    cosign::{Cosign, CosignCommand, KeyRef, Subject, Verifier},
    dist::{DistManifest, Target},
    matrix::MATRIX_PATH,
    registry::{transport::DOCKER_CERTS_D, RegistryClient},
    release_notes::{LauncherRecord, ReleaseNotes},
    Matrix, PhpLine, ReleaseVersion, Repository,
};
use testkit::{real, stack as services};
use xshell::{cmd, Shell};

use crate::{
    dev::standins::{self, Flavour},
    display_path,
    maintain::bases,
    progress::Progress,
    project_root,
    release::dist::{self, BaseUrl, SealSigning},
    release::execute::{Mode, Outcome},
    release::git::Revision,
    release::inputs::{Published, ReleaseArgs},
    release::plan::{self, Plan},
    release::release::{self, Dirs},
    release::signing::SigningFlag,
};

/// A fresh key pair in `dir` (`demo.key`, `demo.pub`) under a random password, which only the returned door
/// (and so only cosign's environment) ever holds.
fn throwaway_keys(dir: &Path) -> anyhow::Result<Cosign> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for file in ["demo.key", "demo.pub"] {
        // cosign asks before overwriting, and nobody is there to answer.
        let _ = std::fs::remove_file(dir.join(file));
    }
    let mut random = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("reading /dev/urandom for the demo key's password")?;
    let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let cosign = Cosign::new()
        .with_password(&password)
        .with_policy(stack_images::registry::Policy::from_env()?);
    cosign
        .run(&CosignCommand::generate_key_pair(&dir.join("demo"))?)
        .context("making the demo's signing key pair (is cosign installed? `make setup`)")?;
    Ok(cosign)
}

#[derive(Args, Debug)]
pub struct DemoCmd {
    /// Port of the registry standing in for GHCR; the Docker Hub stand-in gets the next one, the launcher's file
    /// server the one after
    #[arg(long, default_value_t = 5100)]
    port: u16,
    /// Build every line from the busybox stand-in (seconds), not PHP 8.2 and 8.4 from Debian (minutes, arm64
    /// under QEMU)
    #[arg(long)]
    busybox: bool,
}

/// The PHP line the printed `20i start` runs: a real one.
const START_LINE: PhpLine = PhpLine::new(8, 4);

impl DemoCmd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let scratch = project_root().join("target/demo");
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let (canonical_port, mirror_port) = (self.port, self.port + 1);
        // Stand-ins under emulation and the build (its log in a file) take minutes: never silent for long.
        let progress = Progress::detect();
        let phases = 6;
        progress.phase(1, phases, "registries");
        let docker_config = progress.heartbeat("starting the registries", || {
            start_registries(sh, canonical_port, mirror_port)
        })?;

        let matrix = Matrix::load(&project_root().join(MATRIX_PATH))?;
        let lines: Vec<(PhpLine, Flavour)> = matrix
            .php_lines()
            .into_iter()
            .map(|php| (php, Flavour::of(php, !self.busybox)))
            .collect();
        progress.phase(2, phases, "bases");
        announce(&lines);
        let source: Repository =
            format!("127.0.0.1:{canonical_port}/fixtures/php-standin").parse()?;
        let lock = publish_bases(&matrix, &source, &lines, &scratch, &progress)?;
        let context = scratch.join("context");
        standins::write_context(&context, &lines)?;
        let scanner_namespace = format!("127.0.0.1:{canonical_port}/fixtures");
        progress.phase(3, phases, "SBOM scanner");
        eprintln!("    SBOM scanner stand-in: {scanner_namespace}/{} (testkit/standins/sbom-scanner; docker/buildkit-syft-scanner needs Docker Hub)", testkit::sbom_scanner::NAME);
        let scanner: stack_images::ImageRef = progress
            .heartbeat("building the SBOM scanner stand-in", || {
                testkit::sbom_scanner::push(&scanner_namespace)
            })
            .context("building the SBOM scanner stand-in")?
            .parse()?;

        let keys = scratch.join("cosign");
        progress.phase(4, phases, "signing key");
        eprintln!("    a throwaway cosign key pair in {}", display_path(&keys));
        let cosign = throwaway_keys(&keys)?;

        progress.phase(5, phases, "release (its own phases follow)");
        let (plan, outcome, page, manifest) = release(
            sh,
            [canonical_port, mirror_port, self.port + 2],
            lock,
            (context, scanner),
            (&keys, cosign),
            &scratch,
        )?;
        print_signature(&plan, &outcome, &keys.join("demo.pub"))?;
        print_next_steps(&plan, &page, self.busybox, &docker_config);
        print_install_line(&manifest, &scratch.join("dist"));
        progress.phase(6, phases, "the stack's other services");
        print_start_command(&plan, &outcome, &lines, &docker_config, &progress)?;
        Ok(())
    }
}

/// The name of the demo's stand-ins under `scripts/registry.sh`'s state directory.
const STANDINS: &str = "demo";

/// Where `scripts/registry.sh` keeps the stand-ins' state: `$STACK_STATE_DIR/hosted/demo`.
fn standins_state() -> PathBuf {
    std::env::var_os("STACK_STATE_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp/20i-stack"), PathBuf::from)
        .join("hosted")
        .join(STANDINS)
}

/// Fresh stand-ins on 127.0.0.1: `canonical_port` GHCR-like, `mirror_port` Docker-Hub-like, both over TLS with
/// token auth, their CAs in docker's `certs.d`; the demo user logged in to both in the demo's own `DOCKER_CONFIG`,
/// set for this process (so for docker, buildx, cosign and the registry client alike) and returned.
///
/// The demo's own config, not the user's `~/.docker`: its password is a throwaway one for registries that go with
/// `make demo-down`, and a user's config may hand logins to a credential helper (a keychain) that would keep it.
fn start_registries(sh: &Shell, canonical_port: u16, mirror_port: u16) -> anyhow::Result<PathBuf> {
    eprintln!(
        "==> registries: fresh stand-ins on https://127.0.0.1:{canonical_port} (GHCR-like, for ghcr.io) and \
         https://127.0.0.1:{mirror_port} (Docker-Hub-like, for docker.io): distribution over TLS with token auth"
    );
    // The plain HTTP registries of earlier demos held these ports.
    for old in ["demo-ghcr", "demo-hub"] {
        cmd!(sh, "bash scripts/registry.sh down {old}")
            .quiet()
            .ignore_stdout()
            .run()?;
    }
    let bin = build_bin("testkit", "hosted-standins")?;
    let (ghcr, hub) = (canonical_port.to_string(), mirror_port.to_string());
    cmd!(sh, "bash scripts/registry.sh hosted-wipe {STANDINS}")
        .quiet()
        .ignore_stdout()
        .run()?;
    cmd!(sh, "bash scripts/registry.sh hosted-up {STANDINS} {ghcr} {hub}")
        .env("STACK_HOSTED_BIN", &bin)
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| {
            format!(
                "starting the registry stand-ins on 127.0.0.1:{canonical_port} and :{mirror_port}: is a port \
                 taken? (--port picks others)"
            )
        })?;
    let state = std::fs::canonicalize(standins_state())
        .with_context(|| format!("finding {}", standins_state().display()))?;
    let read = |name: &str| -> anyhow::Result<String> {
        let path = state.join(name);
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned())
    };
    let (user, password) = (read("user")?, read("password")?);
    let docker_config = state.join("docker-config");
    std::fs::create_dir_all(&docker_config)
        .with_context(|| format!("creating {}", docker_config.display()))?;
    for port in [canonical_port, mirror_port] {
        testkit::docker_login(
            &docker_config,
            &format!("127.0.0.1:{port}"),
            &user,
            &password,
        )?;
    }
    // Before the release starts its threads: every docker, buildx and cosign run, and the registry client, read it.
    std::env::set_var("DOCKER_CONFIG", &docker_config);
    eprintln!(
        "    user `{user}` (password in {}, 0600) logged in with DOCKER_CONFIG={}; CAs in \
         /etc/docker/certs.d/127.0.0.1:{canonical_port}/ and :{mirror_port}/ until make demo-down",
        display_path(&state.join("password")),
        display_path(&docker_config)
    );
    eprintln!(
        "    Docker-Hub-like mirror: 20istack is the demo user's own namespace, where (as on Docker Hub) the \
         first push creates 20istack/php-fpm; the release reads the pins asking for push, so it sees an \
         absence. In an organisation's namespace preflight would stop before pushing and name the repository \
         to create at https://hub.docker.com/repository/create"
    );
    Ok(docker_config)
}

/// An empty registry `name` on 127.0.0.1:`port` (`scripts/registry.sh`), whatever it held before.
pub fn fresh_registry(sh: &Shell, name: &str, port: u16) -> anyhow::Result<()> {
    let port_text = port.to_string();
    cmd!(sh, "bash scripts/registry.sh wipe {name}")
        .quiet()
        .ignore_stdout()
        .run()?;
    cmd!(sh, "bash scripts/registry.sh up {name} {port_text}")
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| {
            format!("starting the registry {name} on 127.0.0.1:{port}: is the port taken?")
        })?;
    Ok(())
}

/// Says, line by line, what each image is built from.
fn announce(lines: &[(PhpLine, Flavour)]) {
    eprintln!("    what each line is built from (Docker Hub's php images cannot be pulled here):");
    for (php, flavour) in lines {
        eprintln!("    PHP {php}: {}", flavour.describe());
    }
}

/// Every line's base in `source`, and the lock a release reads them from.
fn publish_bases(
    matrix: &Matrix,
    source: &Repository,
    lines: &[(PhpLine, Flavour)],
    scratch: &Path,
    progress: &Progress,
) -> anyhow::Result<PathBuf> {
    eprintln!("    bases: {source}:<M.m>-fpm-alpine (both platforms; a real one is Debian's PHP laid out like the php image)");
    let client = RegistryClient::from_env()?;
    progress.heartbeat(
        "making and pushing the stand-in bases (arm64 under emulation)",
        || standins::push_bases(source, lines, &client),
    )?;
    let (lock, _) = bases::refresh(matrix, source, None)?;
    let lock_path = scratch.join("standin.lock.toml");
    std::fs::write(&lock_path, lock.render())
        .with_context(|| format!("writing {}", lock_path.display()))?;
    Ok(lock_path)
}

/// The release of the workspace's own version, exactly as `cargo xtask release` runs it; returns the notes page.
fn release(
    sh: &Shell,
    [canonical_port, mirror_port, files_port]: [u16; 3],
    lock: PathBuf,
    (context, scanner): (PathBuf, stack_images::ImageRef),
    (keys, cosign): (&Path, Cosign),
    scratch: &Path,
) -> anyhow::Result<(Plan, Outcome, PathBuf, DistManifest)> {
    // The workspace's own version, first release: the 20i launcher built from this checkout pulls exactly
    // these tags (IMAGE_REGISTRY=127.0.0.1:PORT/20i-stack), and the release's version check passes.
    let version: ReleaseVersion = concat!("v", env!("CARGO_PKG_VERSION")).parse()?;
    let args = ReleaseArgs {
        version,
        published: Some(Published(Vec::new())),
        // The demo is not a release of this commit's tag: build whatever is checked out.
        revision: Some(Revision::Full(crate::release::git::head_revision(sh)?)),
        time: None,
        registry: Some(format!("127.0.0.1:{canonical_port}/20i-stack").parse()?),
        mirror: vec![format!("127.0.0.1:{mirror_port}/20istack").parse()?],
        no_mirrors: false,
        bases: Some(lock),
        matrix: None,
        context: Some(context),
        attestations: None,
        no_sbom: false,
        sbom_scanner: Some(scanner),
        allow_version_mismatch: false,
        no_build_cache: false,
        no_seed: false,
        signing: SigningFlag::Key(stack_images::cosign::KeyRef::File(keys.join("demo.key"))),
        signing_public_key: Some(keys.join("demo.pub")),
    };
    let inputs = args.gather(sh)?;
    inputs.require_launcher_version()?;
    let plan = plan::compute(&inputs)?;
    let dirs = Dirs {
        notes_dir: scratch.join("release-notes"),
        work_dir: Some(scratch.join("work")),
    };
    let outcome = release::execute_with(
        &plan,
        Mode::Release { resume: false },
        &dirs.work_dir(&plan),
        cosign.clone(),
    )?;
    let manifest = publish_launcher(sh, &plan.version, keys, &cosign, scratch, files_port)?;
    let notes = ReleaseNotes {
        launcher: Some(LauncherRecord::from(&manifest)),
        ..release::release_notes(&plan, &outcome)
    };
    let (json, page) = crate::maintain::notes::write(&notes, &dirs.notes_dir())?;
    print!(
        "{}",
        release::summary(&plan, &outcome, &[display_path(&json), display_path(&page)])
    );
    Ok((plan, outcome, page, manifest))
}

/// The launcher's archive for this machine, as the release workflow makes it (`dist build`, then `dist seal`,
/// with the demo's key instead of keyless), served on 127.0.0.1:`port` by `scripts/registry.sh files-up` (python's
/// file server, standing in for the GitHub release's downloads).
fn publish_launcher(
    sh: &Shell,
    version: &ReleaseVersion,
    keys: &Path,
    cosign: &Cosign,
    scratch: &Path,
    port: u16,
) -> anyhow::Result<DistManifest> {
    let target = Target::host().context(
        "this machine is none of the launcher's release targets (Linux or macOS, x86_64 or arm64): no archive to \
         publish",
    )?;
    let out = scratch.join("dist");
    // Only this run's files: an earlier demo's archive of another version would stop the seal.
    let _ = std::fs::remove_dir_all(&out);
    eprintln!(
        "==> the launcher: cargo xtask dist build --target {target}, then dist seal with the demo's key \
         (the first static release build takes minutes)"
    );
    dist::build(sh, target, version, &out)?;
    let base_url: BaseUrl = format!("http://127.0.0.1:{port}").parse()?;
    let signing = SealSigning::key(
        KeyRef::File(keys.join("demo.key")),
        Some(keys.join("demo.pub")),
    )?;
    let manifest = dist::seal(&out, version, &signing, Some(base_url), cosign)?;
    let dir = out.display().to_string();
    let port_text = port.to_string();
    cmd!(sh, "bash scripts/registry.sh files-up {dir} {port_text}")
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| {
            format!(
                "serving {} on 127.0.0.1:{port}: is the port taken? (--port moves it)",
                display_path(&out)
            )
        })?;
    Ok(manifest)
}

/// The line that installs the launcher from the demo's file server, and what it serves.
fn print_install_line(manifest: &DistManifest, out: &Path) {
    println!(
        "\nThe launcher {} for this machine, checksummed and signed with the demo's key, is served from {} \
         ({}; `make demo-down` stops it, or `bash scripts/registry.sh files-down PORT` off the default \
         port). Install it into ~/.local/bin (no root):\n  {}\n\
         Add --verify --cosign-key {} to require its cosign signature.",
        manifest.version,
        manifest.base_url,
        display_path(out),
        manifest.install,
        out.join(stack_images::dist::PUBLIC_KEY).display()
    );
}

/// The public key, and the `cosign verify` line that checks one pin with it.
fn print_signature(plan: &Plan, outcome: &Outcome, public_key: &Path) -> anyhow::Result<()> {
    let pin = plan.build(START_LINE).pin.in_namespace(&plan.mirrors[0]);
    let signed = pin.repository().at(&outcome.pins[&START_LINE].digest);
    // cosign reads no certs.d: the line names the registry's CA as the release's own cosign runs do.
    let verify = CosignCommand::verify(
        &Verifier::Key(public_key.to_path_buf()),
        Subject::Image(&signed),
    )?
    .with_docker_ca(Path::new(DOCKER_CERTS_D));
    println!(
        "\nEvery pin is signed, in both registries, with the key pair made for this demo; its public key:\n  \
         {}\n\
         Check one (exits 0 only if the signature verifies):\n  {verify}",
        public_key.display()
    );
    Ok(())
}

fn print_next_steps(plan: &Plan, page: &Path, busybox: bool, docker_config: &Path) {
    let (run, built) = if busybox {
        (
            "cat /standin/php-version",
            "every line is a busybox stand-in (testkit/standins/php-fpm), as --busybox asked",
        )
    } else {
        (
            "php -v",
            "PHP 8.2 and 8.4 are Debian's PHP-FPM built with testkit/standins/php-fpm-real/Dockerfile over \
             images/php-fpm's own files, and the other lines busybox stand-ins (testkit/standins/php-fpm)",
        )
    };
    let latest = plan
        .canonical
        .repository(&plan.image)
        .tagged(&stack_images::tags::latest());
    let pin = plan.build(START_LINE).pin.in_namespace(&plan.mirrors[0]);
    println!(
        "\nThe registries are still running, so you can pull and inspect what was published (anyone may pull, \
         as from the real ones; DOCKER_CONFIG holds the demo user's login, to push):\n  \
         export DOCKER_CONFIG={}\n  \
         skopeo inspect --raw docker://{latest}   # the index: both platforms, and their SBOM attestations \
         (made by the scanner stand-in)\n  \
         docker run --rm {pin} {run}\n  \
         skopeo inspect --raw docker://{pin} | sha256sum   # TLS checked with the CA in /etc/docker/certs.d\n\
         (not `docker buildx imagetools`: it speaks plain HTTP to registries on 127.0.0.1, and these speak only \
         TLS.)\n\
         Release notes: {}\n\
         Docker Hub's php bases cannot be pulled here, so {built}; images/php-fpm/Dockerfile is what a real \
         release builds.\n\
         Stop the registries (and take their CAs out of /etc/docker/certs.d) with: make demo-down",
        docker_config.display(),
        display_path(page)
    );
}

/// The one line that runs the stack from what was published: only `VAR=value` assignments, then `20i start`.
fn print_start_command(
    plan: &Plan,
    outcome: &Outcome,
    lines: &[(PhpLine, Flavour)],
    docker_config: &Path,
    progress: &Progress,
) -> anyhow::Result<()> {
    if !lines.contains(&(START_LINE, Flavour::Real)) || !outcome.pins.contains_key(&START_LINE) {
        println!("\n(--busybox: no real PHP line was published, so there is no stack to start.)");
        return Ok(());
    }
    eprintln!("    real nginx and MariaDB stand-ins from Debian, the phpMyAdmin stand-in");
    let nginx = progress
        .heartbeat("making the real nginx stand-in", real::nginx)
        .context("making the real nginx stand-in")?;
    let mariadb = progress
        .heartbeat("making the real MariaDB stand-in", real::mariadb)
        .context("making the real MariaDB stand-in")?;
    progress
        .heartbeat(
            "building the phpMyAdmin stand-in",
            services::service_standins,
        )
        .context("building the phpMyAdmin stand-in")?;
    let launcher = progress.heartbeat("building the launcher", build_launcher)?;
    let mirrors: Vec<String> = plan.mirrors.iter().map(ToString::to_string).collect();
    let assignments = [
        ("DOCKER_CONFIG", docker_config.display().to_string()),
        ("IMAGE_REGISTRY", plan.canonical.to_string()),
        ("IMAGE_MIRRORS", mirrors.join(",")),
        ("PHP_VERSION", START_LINE.to_string()),
        ("NGINX_IMAGE", nginx),
        ("MARIADB_IMAGE", mariadb),
        ("PMA_IMAGE", services::PHPMYADMIN_STANDIN.to_owned()),
        ("HOST_PORT", "8080".to_owned()),
    ];
    let mut line = String::new();
    for (name, value) in assignments {
        if value.is_empty()
            || value.contains(|c: char| c.is_whitespace() || "'\"$`\\;&|<>".contains(c))
        {
            bail!("{name}={value:?} cannot be printed as a plain assignment");
        }
        line.push_str(&format!("{name}={value} "));
    }
    line.push_str(&format!("{} start", launcher.display()));
    println!(
        "\nRun the stack from these images (PHP {START_LINE}, pulled over TLS from the GHCR-like 127.0.0.1:{}, \
         the Docker-Hub-like mirror behind it, as the demo user of DOCKER_CONFIG) in a directory with an index.php; it serves on http://127.0.0.1:8080 (`20i stop` and `20i destroy` end it):\n{line}",
        plan.canonical.host().rsplit(':').next().unwrap_or_default()
    );
    Ok(())
}

/// `target/debug/20i`, built from this checkout: the launcher whose version the demo (or the bench) released.
pub fn build_launcher() -> anyhow::Result<PathBuf> {
    build_bin("launcher", "20i")
}

/// `target/debug/BIN` of `package`, built from this checkout.
fn build_bin(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(project_root())
        .status()
        .with_context(|| format!("running cargo build -p {package} --bin {bin}"))?;
    if !status.success() {
        bail!("cargo build -p {package} --bin {bin} failed: fix the build, then run the command again");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    Ok(target.join("debug").join(bin))
}
