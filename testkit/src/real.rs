//! Real-software stand-ins built from Debian's archive: PHP-FPM (8.2 on bookworm, 8.4 on trixie, linux/amd64 and
//! linux/arm64), nginx and MariaDB, so tests run the stack's own files (php.ini, the FPM pool, the health check,
//! the nginx template, the compose file) in the software they configure.
//!
//! Each base is a root file system made by `mmdebstrap` (variant `apt`, the packages it needs, apt lists and docs
//! left out) with a customize hook from `testkit/standins/debian*/`, then `docker import`ed with the image
//! settings the official image has. It is tagged `20i-test/fixtures/<name>-standin:<label>-<arch>-<inputs>`, where
//! `<inputs>` hashes everything that decides its content except the archive's own state (suite, architecture,
//! packages, the hooks' bytes, the import settings, [`RECIPE_VERSION`]): a second run finds it in the local image
//! store and builds nothing. The PHP-FPM stand-in proper is `testkit/standins/php-fpm-real/Dockerfile` built over
//! such a base with `images/php-fpm` as its context, cached the same way. Every stand-in is also kept as a
//! `docker save` tarball in [`saved_dir`], from which an emptied image store refills in seconds, not minutes.
//!
//! Builds are serialised (in this process by a mutex, across processes by a lock file): two builds of the same
//! root file system at once would only double the work on a shared machine.

use std::{
    fmt::Write as _,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Instant,
};

use anyhow::{bail, Context};
use stack_images::{
    docker::{Docker, DockerCommand, FailureKind},
    Digest, ImageRef, Namespace, PhpLine, RepoName, Tag,
};

use crate::Registry;

/// Bump when the way a root file system is made changes in a way its other inputs do not show.
pub const RECIPE_VERSION: u32 = 1;

/// Where the stand-ins are tagged in the local image store.
pub const LOCAL_NAMESPACE: &str = "20i-test/fixtures";

/// A CPU architecture a stand-in is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// This machine's architecture, which runs its stand-ins without emulation (amd64 elsewhere).
    pub fn host() -> Arch {
        match std::env::consts::ARCH {
            "aarch64" => Arch::Arm64,
            _ => Arch::Amd64,
        }
    }

    /// Debian's name, which is also docker's architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn platform(self) -> &'static str {
        match self {
            Arch::Amd64 => "linux/amd64",
            Arch::Arm64 => "linux/arm64",
        }
    }
}

/// A Debian release whose archive the stand-ins are made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Bookworm,
    Trixie,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }
}

/// The PHP lines Debian ships, each with its suite: the only lines a real PHP stand-in exists for.
pub const PHP_LINES: [(PhpLine, Suite); 2] = [
    (PhpLine::new(8, 2), Suite::Bookworm),
    (PhpLine::new(8, 4), Suite::Trixie),
];

/// The Debian suite whose PHP is this line.
pub fn php_suite(line: PhpLine) -> anyhow::Result<Suite> {
    match PHP_LINES.iter().find(|(known, _)| *known == line) {
        Some((_, suite)) => Ok(*suite),
        None => bail!(
            "Debian ships no PHP {line}: real PHP stand-ins exist for {} (use one of those lines)",
            PHP_LINES
                .iter()
                .map(|(line, suite)| format!("{line} ({})", suite.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What makes one stand-in's root file system and image; its tag is derived from all of it.
#[derive(Clone, Debug)]
pub struct Rootfs {
    /// Repository name under [`LOCAL_NAMESPACE`], ending in `-standin` (`<name>-standin` above).
    pub name: &'static str,
    /// The start of the tag, before the architecture: `8.2`, `bookworm`.
    pub label: String,
    pub suite: Suite,
    pub arch: Arch,
    pub packages: Vec<String>,
    /// Customize hooks, in order: a script under `testkit/standins/` and its arguments after the root directory.
    pub hooks: Vec<(&'static str, Vec<String>)>,
    /// Dockerfile-like instructions given to `docker import --change`.
    pub changes: Vec<String>,
}

/// The image settings every Debian stand-in starts from.
const PATH: &str = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The hook every root file system gets first (`testkit/standins/debian/customize.sh`).
const COMMON_HOOK: &str = "debian/customize.sh";

impl Rootfs {
    /// Debian's PHP-FPM of `line`, laid out like the official php image (see `debian-php/customize.sh`); no
    /// extensions beyond what php-fpm brings: the stand-in Dockerfile installs them, as the real build does.
    pub fn php_base(line: PhpLine, arch: Arch) -> anyhow::Result<Rootfs> {
        let suite = php_suite(line)?;
        Ok(Rootfs {
            name: "php-base-standin",
            label: line.to_string(),
            suite,
            arch,
            packages: vec![format!("php{line}-fpm")],
            hooks: vec![
                (COMMON_HOOK, vec![]),
                ("debian-php/customize.sh", vec![line.to_string()]),
            ],
            changes: vec![
                PATH.into(),
                "ENV PHP_INI_DIR=/usr/local/etc/php".into(),
                "ENV PHP_INI_SCAN_DIR=:/usr/local/etc/php/conf.d".into(),
                "WORKDIR /var/www/html".into(),
                "EXPOSE 9000".into(),
                "STOPSIGNAL SIGQUIT".into(),
                r#"CMD ["php-fpm"]"#.into(),
            ],
        })
    }

    /// Debian's nginx with the official image's template rendering (`debian-nginx/`), `wget` for the health check;
    /// for this machine's architecture.
    pub fn nginx() -> Rootfs {
        Rootfs {
            name: "nginx-real-standin",
            label: Suite::Bookworm.name().into(),
            suite: Suite::Bookworm,
            arch: Arch::host(),
            packages: ["nginx", "gettext-base", "wget"].map(String::from).into(),
            hooks: vec![(COMMON_HOOK, vec![]), ("debian-nginx/customize.sh", vec![])],
            changes: vec![
                PATH.into(),
                r#"ENTRYPOINT ["/docker-entrypoint.sh"]"#.into(),
                r#"CMD ["nginx", "-g", "daemon off;"]"#.into(),
                "EXPOSE 80".into(),
                "STOPSIGNAL SIGQUIT".into(),
            ],
        }
    }

    /// Debian's MariaDB with the official image's first-start variables and health check (`debian-mariadb/`);
    /// for this machine's architecture.
    pub fn mariadb() -> Rootfs {
        Rootfs {
            name: "mariadb-real-standin",
            label: Suite::Bookworm.name().into(),
            suite: Suite::Bookworm,
            arch: Arch::host(),
            packages: ["mariadb-server", "mariadb-client"]
                .map(String::from)
                .into(),
            hooks: vec![
                (COMMON_HOOK, vec![]),
                ("debian-mariadb/customize.sh", vec![]),
            ],
            changes: vec![
                PATH.into(),
                r#"ENTRYPOINT ["docker-entrypoint.sh"]"#.into(),
                r#"CMD ["mariadbd"]"#.into(),
                "VOLUME /var/lib/mysql".into(),
                "EXPOSE 3306".into(),
            ],
        }
    }

    /// Everything the image is made from, one item per line: what its tag hashes. Hook scripts count by content,
    /// and so does every other file in their directory (the entrypoints they install).
    pub fn inputs(&self) -> anyhow::Result<String> {
        let mut text = format!(
            "recipe {RECIPE_VERSION}\nname {}\nlabel {}\nsuite {}\narch {}\nvariant apt\n",
            self.name,
            self.label,
            self.suite.name(),
            self.arch.debian()
        );
        for package in &self.packages {
            writeln!(text, "package {package}")?;
        }
        for (script, args) in &self.hooks {
            writeln!(text, "hook {script} {}", args.join(" "))?;
            let dir = standins_dir().join(script);
            let dir = dir.parent().context("a hook script has a directory")?;
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .map(|entry| entry.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.sort();
            for file in files {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                // Relative to testkit/standins: the same files in another checkout make the same image.
                let name = file.strip_prefix(standins_dir()).unwrap_or(&file);
                writeln!(text, "file {} {}", name.display(), Digest::of(&bytes))?;
            }
        }
        for change in &self.changes {
            writeln!(text, "change {change}")?;
        }
        for exclude in DPKG_EXCLUDES {
            writeln!(text, "dpkg {exclude}")?;
        }
        Ok(text)
    }

    /// `20i-test/fixtures/<name>:<label>-<arch>-<first 12 hex digits of the inputs' sha256>`.
    pub fn tag(&self) -> anyhow::Result<String> {
        let inputs = self.inputs()?;
        Ok(format!(
            "{LOCAL_NAMESPACE}/{}:{}-{}-{}",
            self.name,
            self.label,
            self.arch.debian(),
            short_hash(&inputs)
        ))
    }

    /// The `mmdebstrap` argument list that writes the root file system to `tarball`.
    pub fn mmdebstrap_args(&self, tarball: &Path, mirror: &str) -> Vec<String> {
        let mut args = vec![
            "--variant=apt".to_owned(),
            format!("--architectures={}", self.arch.debian()),
            format!("--include={}", self.packages.join(",")),
            "--format=tar".to_owned(),
            "--quiet".to_owned(),
        ];
        args.extend(DPKG_EXCLUDES.iter().map(|e| format!("--dpkgopt={e}")));
        for (script, hook_args) in &self.hooks {
            let mut hook = format!(
                "sh {} \"$1\"",
                shell_quote(&standins_dir().join(script).display().to_string())
            );
            for arg in hook_args {
                write!(hook, " {}", shell_quote(arg)).expect("writing to a String");
            }
            args.push(format!("--customize-hook={hook}"));
        }
        args.extend([
            self.suite.name().to_owned(),
            tarball.display().to_string(),
            mirror.to_owned(),
        ]);
        args
    }

    /// `docker import` of the tarball as this image, for its platform, with its settings.
    pub fn import_command(&self, tarball: &Path, tag: &str) -> DockerCommand {
        let mut args = vec![
            "import".to_owned(),
            "--platform".to_owned(),
            self.arch.platform().to_owned(),
            "--message".to_owned(),
            format!(
                "20i stand-in {} from Debian {} (mmdebstrap)",
                self.name,
                self.suite.name()
            ),
        ];
        for change in &self.changes {
            args.extend(["--change".to_owned(), change.clone()]);
        }
        args.extend([tarball.display().to_string(), tag.to_owned()]);
        DockerCommand::new(args)
    }

    /// The image, from the local store when it is there, else made now (minutes; see the module docs).
    pub fn ensure(&self) -> anyhow::Result<String> {
        let tag = self.tag()?;
        ensure_image(&tag, |docker| {
            let started = Instant::now();
            let work = tempfile::Builder::new().prefix("20i-rootfs-").tempdir()?;
            let tarball = work.path().join("rootfs.tar");
            let log = work.path().join("mmdebstrap.log");
            run_mmdebstrap(&self.mmdebstrap_args(&tarball, &debian_mirror()), &log)
                .with_context(|| format!("making the root file system of {tag}"))?;
            let made = started.elapsed();
            docker
                .run(&self.import_command(&tarball, &tag))
                .with_context(|| format!("importing {tag}"))?;
            eprintln!(
                "real stand-in {tag}: root file system in {:.0?}, imported in {:.0?}",
                made,
                started.elapsed() - made
            );
            Ok(())
        })?;
        Ok(tag)
    }
}

/// Left out of every package installed in the root file system and in builds over it (mmdebstrap writes these to
/// the image's dpkg configuration): documentation except copyright files, manuals, translations.
const DPKG_EXCLUDES: [&str; 5] = [
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
];

/// The PHP base of `line` for `arch`, built if this machine does not have it yet.
pub fn php_base(line: PhpLine, arch: Arch) -> anyhow::Result<String> {
    Rootfs::php_base(line, arch)?.ensure()
}

/// The nginx stand-in for this machine, built if needed.
pub fn nginx() -> anyhow::Result<String> {
    Rootfs::nginx().ensure()
}

/// The MariaDB stand-in for this machine, built if needed.
pub fn mariadb() -> anyhow::Result<String> {
    Rootfs::mariadb().ensure()
}

/// `testkit/standins/php-fpm-real/Dockerfile`.
pub fn php_fpm_real_dockerfile() -> PathBuf {
    standins_dir().join("php-fpm-real/Dockerfile")
}

/// `images/php-fpm`: the real image's build context, which the stand-in Dockerfile builds from too.
pub fn php_fpm_context() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().unwrap_or(testkit).join("images/php-fpm")
}

/// The build arguments the release passes to images/php-fpm/Dockerfile, for the stand-in over `base`.
pub fn php_fpm_build_args(base: &str, line: PhpLine) -> Vec<String> {
    [
        format!("PHP_BASE={base}"),
        format!("PHP_VERSION={line}"),
        "SOURCE_DATE_EPOCH=0".to_owned(),
    ]
    .into_iter()
    .flat_map(|arg| ["--build-arg".to_owned(), arg])
    .collect()
}

/// The PHP-FPM stand-in of `line` for `arch` in the local store: the release stand-in Dockerfile built over
/// [`php_base`], with the stack's files from `images/php-fpm`. Tagged by a hash of the base and every file
/// of the build, so a second call only looks.
pub fn php_fpm(line: PhpLine, arch: Arch) -> anyhow::Result<String> {
    let base = php_base(line, arch)?;
    let mut inputs = format!("recipe {RECIPE_VERSION}\nbase {base}\n");
    let dockerfile = php_fpm_real_dockerfile();
    let context = php_fpm_context();
    for file in [
        dockerfile.clone(),
        context.join("php.ini"),
        context.join("zz-stack-fpm.conf"),
        context.join("php-fpm-healthcheck"),
        context.join("build-checks.sh"),
    ] {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        writeln!(inputs, "file {name} {}", Digest::of(&bytes))?;
    }
    let tag = format!(
        "{LOCAL_NAMESPACE}/php-fpm-real-standin:{line}-{}-{}",
        arch.debian(),
        short_hash(&inputs)
    );
    ensure_image(&tag, |docker| {
        let started = Instant::now();
        let log = kept_log("20i-php-fpm-real-")?;
        let mut args = vec![
            "build".to_owned(),
            "--platform".to_owned(),
            arch.platform().to_owned(),
            "--file".to_owned(),
            dockerfile.display().to_string(),
            "--tag".to_owned(),
            tag.clone(),
        ];
        args.extend(php_fpm_build_args(&base, line));
        args.push(context.display().to_string());
        docker
            .run_logged(&DockerCommand::new(args), &log)
            .with_context(|| format!("building {tag}"))?;
        let _ = std::fs::remove_file(&log);
        eprintln!("real stand-in {tag}: built in {:.0?}", started.elapsed());
        Ok(())
    })?;
    Ok(tag)
}

/// Pushes the PHP base of `line` for linux/amd64 and linux/arm64 (built if needed) to `registry` as one index,
/// `<registry>/fixtures/php-base-standin:<line>`, the way a release's base sits in Docker Hub: each platform to
/// its own tag, then the index put in process (`put_index`). Returns the index's reference by digest.
pub fn push_php_base(registry: &Registry, line: PhpLine) -> anyhow::Result<ImageRef> {
    push_php_base_to(&registry.namespace("fixtures").parse()?, line)
}

/// [`push_php_base`] to any namespace (`make demo` and `make bench` push to `scripts/registry.sh` registries):
/// `<namespace>/php-base-standin:<line>`.
pub fn push_php_base_to(namespace: &Namespace, line: PhpLine) -> anyhow::Result<ImageRef> {
    let repository = namespace.repository(&"php-base-standin".parse::<RepoName>()?);
    let docker = Docker::new()?;
    let mut platform_refs = Vec::new();
    for arch in Arch::ALL {
        let local = php_base(line, arch)?;
        let tag: Tag = format!("{line}-{}", arch.debian()).parse()?;
        let remote = repository.tagged(&tag).to_string();
        docker.run(&DockerCommand::new([
            "tag",
            local.as_str(),
            remote.as_str(),
        ]))?;
        let pushed = docker
            .run(&DockerCommand::new(["push", "--quiet", remote.as_str()]))
            .with_context(|| format!("pushing {remote}"));
        // The registry's name was only needed for the push: the local store keeps the stand-in's own tag.
        let _ = docker.run(&DockerCommand::new(["image", "rm", remote.as_str()]));
        pushed?;
        platform_refs.push(remote);
    }
    let index = repository.tagged(&line.to_string().parse()?);
    let digest = put_index(&index, &platform_refs)
        .with_context(|| format!("assembling the index {index}"))?;
    Ok(index.with_digest(&digest))
}

/// Puts at `index` an index of `platforms` (one per [`Arch::ALL`], in order), through the registry client:
/// `buildx imagetools create` would do it, but speaks plain HTTP to registries on 127.0.0.1, and `make demo`'s
/// speak TLS. A platform pushed as an index itself (the containerd store pushes some so) gives its entries.
fn put_index(index: &ImageRef, platforms: &[String]) -> anyhow::Result<stack_images::Digest> {
    const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    let client = stack_images::registry::RegistryClient::from_env()?;
    let mut entries = Vec::new();
    for (arch, reference) in Arch::ALL.iter().zip(platforms) {
        let reference: ImageRef = reference.parse()?;
        let manifest = client.get_manifest(&reference)?;
        if manifest.media_type == OCI_INDEX || manifest.media_type == DOCKER_LIST {
            let parsed: serde_json::Value = serde_json::from_slice(&manifest.bytes)
                .with_context(|| format!("reading the index {reference}"))?;
            let children = parsed["manifests"].as_array().cloned().unwrap_or_default();
            entries.extend(
                children.into_iter().filter(|child| {
                    child["platform"]["architecture"].as_str() == Some(arch.debian())
                }),
            );
        } else {
            entries.push(serde_json::json!({
                "mediaType": manifest.media_type,
                "digest": manifest.digest.to_string(),
                "size": manifest.bytes.len(),
                "platform": {"architecture": arch.debian(), "os": "linux"},
            }));
        }
    }
    if entries.len() != platforms.len() {
        bail!(
            "expected one manifest per platform in {platforms:?}, found {}",
            entries.len()
        );
    }
    // Docker's list for docker manifests, as imagetools makes it; an OCI index otherwise.
    let media_type = if entries.iter().all(|e| {
        e["mediaType"]
            .as_str()
            .is_some_and(|t| t.starts_with("application/vnd.docker."))
    }) {
        DOCKER_LIST
    } else {
        OCI_INDEX
    };
    let bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": entries,
    }))?;
    Ok(client.put_manifest(index, &bytes, media_type)?)
}

/// Builds the PHP-FPM stand-in of `line` for linux/amd64 and linux/arm64 over `base` (an index such as
/// [`push_php_base`] returns) and pushes it as `<registry>/fixtures/php-fpm-real-standin:<line>`, as a release
/// builds: one buildx build of both platforms, the extension packages installed under QEMU for arm64.
/// Returns the index by digest, as buildx recorded it.
pub fn push_php_fpm(
    registry: &Registry,
    base: &ImageRef,
    line: PhpLine,
) -> anyhow::Result<ImageRef> {
    let namespace: Namespace = registry.namespace("fixtures").parse()?;
    let image = namespace
        .repository(&"php-fpm-real-standin".parse::<RepoName>()?)
        .tagged(&line.to_string().parse()?);
    let work = tempfile::Builder::new()
        .prefix("20i-php-fpm-real-")
        .tempdir()?;
    let metadata = work.path().join("metadata.json");
    let platforms = Arch::ALL.map(Arch::platform).join(",");
    let mut args = vec![
        "buildx".to_owned(),
        "build".to_owned(),
        "--platform".to_owned(),
        platforms,
        "--provenance=false".to_owned(),
        "--file".to_owned(),
        php_fpm_real_dockerfile().display().to_string(),
        // Pushed by BuildKit's exporter itself, as the release's bakes are: `--push` on the docker driver adds a
        // second push "with docker" of a local tag, which fails when anything removes that tag meanwhile.
        "--output".to_owned(),
        format!("type=image,name={image},push=true"),
        "--metadata-file".to_owned(),
        metadata.display().to_string(),
    ];
    args.extend(php_fpm_build_args(&base.to_string(), line));
    args.push(php_fpm_context().display().to_string());
    let started = Instant::now();
    let log = kept_log("20i-php-fpm-real-push-")?;
    with_build_lock(|| {
        Docker::new()?
            .run_logged(&DockerCommand::new(args), &log)
            .with_context(|| format!("building and pushing {image}"))
    })?;
    let _ = std::fs::remove_file(&log);
    // The docker driver also keeps what it pushed in the local store, under the registry's name: not wanted here.
    let _ = Docker::new()?.run(&DockerCommand::new(["image", "rm", &image.to_string()]));
    eprintln!(
        "real stand-in {image}: two platforms built and pushed in {:.0?}",
        started.elapsed()
    );
    let metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(&metadata)?)?;
    let digest = metadata["containerimage.digest"]
        .as_str()
        .context("buildx recorded no containerimage.digest")?;
    Ok(image.with_digest(&Digest::parse(digest)?))
}

/// `testkit/standins`.
pub fn standins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("standins")
}

/// `$STACK_DEBIAN_MIRROR` (as in scripts/setup.sh), else deb.debian.org.
fn debian_mirror() -> String {
    std::env::var("STACK_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// A build log in the temporary directory that outlives a failure (its path is in the error); the caller
/// removes it after a success.
fn kept_log(prefix: &str) -> anyhow::Result<PathBuf> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".log")
        .tempfile()?
        .into_temp_path()
        .keep()?)
}

fn short_hash(text: &str) -> String {
    let digest = Digest::of(text.as_bytes());
    digest.as_str()["sha256:".len()..][..12].to_owned()
}

/// A word for `sh -c`, quoted unless it is plainly safe.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn image_present(docker: &Docker, tag: &str) -> anyhow::Result<bool> {
    match docker.output(&DockerCommand::new([
        "image", "inspect", "--format", "{{.Id}}", tag,
    ])) {
        Ok(_) => Ok(true),
        Err(error) if error.kind == FailureKind::NotFound => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Makes sure the local store has `tag`: there already, loaded from its `docker save` tarball in
/// [`saved_dir`], or built by `build` (and then saved there, so a fresh docker store refills in seconds).
fn ensure_image(
    tag: &str,
    build: impl FnOnce(&Docker) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let docker = Docker::new()?;
    let saved = saved_dir().join(format!("{}.tar", tag.replace(['/', ':'], "_")));
    // The usual case needs no lock, so it never waits for another stand-in's build.
    if saved.is_file() && image_present(&docker, tag)? {
        return Ok(());
    }
    with_build_lock(|| {
        if image_present(&docker, tag)? {
            // Made before the cache was kept, or the cache was wiped: seconds now, minutes on a fresh store.
            if !saved.is_file() {
                save(&docker, tag, &saved);
            }
            return Ok(());
        }
        if saved.is_file() {
            let started = Instant::now();
            let load =
                DockerCommand::new(["load", "--quiet", "--input", &saved.display().to_string()]);
            match docker.run(&load) {
                Ok(()) if image_present(&docker, tag)? => {
                    eprintln!(
                        "real stand-in {tag}: loaded from {} in {:.0?}",
                        saved.display(),
                        started.elapsed()
                    );
                    return Ok(());
                }
                Ok(()) => eprintln!(
                    "real stand-in {tag}: {} did not hold it; building",
                    saved.display()
                ),
                Err(error) => eprintln!("real stand-in {tag}: {error}; building"),
            }
        }
        build(&docker)?;
        save(&docker, tag, &saved);
        Ok(())
    })
}

/// Keeps a `docker save` tarball of a stand-in; a cache, so failing to write it only warns.
fn save(docker: &Docker, tag: &str, file: &Path) {
    let started = Instant::now();
    let partial = file.with_extension("tar.partial");
    let result = std::fs::create_dir_all(saved_dir())
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            let output = partial.display().to_string();
            Ok(docker.run(&DockerCommand::new(["save", "--output", &output, tag]))?)
        })
        .and_then(|()| Ok(std::fs::rename(&partial, file)?));
    match result {
        Ok(()) => {
            eprintln!(
                "real stand-in {tag}: saved to {} in {:.0?}",
                file.display(),
                started.elapsed()
            );
            remove_superseded(file);
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            eprintln!(
                "real stand-in {tag}: not saved to {} ({error:#})",
                file.display()
            );
        }
    }
}

/// Removes the saved tarballs of the same stand-in, line and architecture made from other inputs (the file
/// names differ only in the hash at the end): the cache keeps the current one only.
fn remove_superseded(file: &Path) {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Some(prefix) = name.rfind('-').map(|at| &name[..=at]) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let other = entry.file_name();
        let other = other.to_string_lossy();
        if other != name
            && other.len() == name.len()
            && other.starts_with(prefix)
            && other.ends_with(".tar")
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Where stand-ins are saved: `$STACK_CACHE_DIR/standins` (as in scripts/setup.sh), else
/// `/var/cache/20i-stack/standins`.
pub fn saved_dir() -> PathBuf {
    std::env::var_os("STACK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/20i-stack"))
        .join("standins")
}

/// Runs `f` while holding this machine's stand-in build lock.
fn with_build_lock<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = std::env::temp_dir().join("20i-real-standins.lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    f()
}

fn run_mmdebstrap(args: &[String], log: &Path) -> anyhow::Result<()> {
    let out = File::create(log)?;
    let status = Command::new("mmdebstrap")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("running mmdebstrap: run `make setup` to install it")?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "mmdebstrap failed ({status}):\n  {}",
            lines[lines.len().saturating_sub(15)..].join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_suite(line: &str, expected: Result<&str, &str>) {
        let got = php_suite(line.parse().unwrap())
            .map(Suite::name)
            .map_err(|e| e.to_string());
        match expected {
            Ok(suite) => assert_eq!(got.unwrap(), suite),
            Err(message) => assert!(got.unwrap_err().contains(message)),
        }
    }

    #[test]
    fn php_lines_map_to_the_suite_that_ships_them() {
        check_suite("8.2", Ok("bookworm"));
        check_suite("8.4", Ok("trixie"));
        check_suite("8.3", Err("Debian ships no PHP 8.3"));
        check_suite("8.5", Err("8.2 (bookworm), 8.4 (trixie)"));
    }

    #[track_caller]
    fn check_tag_changes(change: impl FnOnce(&mut Rootfs), expected_change: bool) {
        let base = Rootfs::php_base(PhpLine::new(8, 2), Arch::Amd64).unwrap();
        let mut changed = base.clone();
        change(&mut changed);
        assert_eq!(
            base.tag().unwrap() != changed.tag().unwrap(),
            expected_change
        );
    }

    #[test]
    fn the_tag_follows_every_input() {
        check_tag_changes(|_| {}, false);
        check_tag_changes(|r| r.label = "8.x".into(), true);
        check_tag_changes(|r| r.arch = Arch::Arm64, true);
        check_tag_changes(|r| r.suite = Suite::Trixie, true);
        check_tag_changes(|r| r.packages.push("wget".into()), true);
        check_tag_changes(|r| r.changes.push("EXPOSE 9001".into()), true);
        check_tag_changes(|r| r.hooks[1].1 = vec!["8.4".into()], true);
        check_tag_changes(|r| r.hooks.pop().map(drop).unwrap_or(()), true);
    }

    #[test]
    fn tags_name_the_line_and_architecture() {
        let tag = Rootfs::php_base(PhpLine::new(8, 4), Arch::Arm64)
            .unwrap()
            .tag()
            .unwrap();
        let (name, rest) = tag.split_once(':').unwrap();
        assert_eq!(name, "20i-test/fixtures/php-base-standin");
        let hash = rest.strip_prefix("8.4-arm64-").unwrap();
        assert!(hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(Rootfs::nginx()
            .tag()
            .unwrap()
            .starts_with("20i-test/fixtures/nginx-real-standin:bookworm-amd64-"));
    }

    #[test]
    fn mmdebstrap_gets_the_suite_packages_and_quoted_hooks() {
        let rootfs = Rootfs::php_base(PhpLine::new(8, 2), Arch::Arm64).unwrap();
        let args = rootfs.mmdebstrap_args(Path::new("/tmp/x/rootfs.tar"), "http://m/debian");
        assert!(args.contains(&"--architectures=arm64".to_owned()));
        assert!(args.contains(&"--include=php8.2-fpm".to_owned()));
        let hook = args
            .iter()
            .find(|a| a.contains("debian-php/customize.sh"))
            .unwrap();
        assert!(
            hook.ends_with("/debian-php/customize.sh \"$1\" 8.2"),
            "{hook}"
        );
        assert_eq!(
            &args[args.len() - 3..],
            ["bookworm", "/tmp/x/rootfs.tar", "http://m/debian"]
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn import_sets_the_platform_and_each_change() {
        let rootfs = Rootfs::mariadb();
        let command = rootfs
            .import_command(Path::new("/t/rootfs.tar"), "x/y:z")
            .to_string();
        assert!(command.starts_with("docker import --platform linux/amd64 --message "));
        assert!(
            command.contains("--change 'VOLUME /var/lib/mysql'"),
            "{command}"
        );
        assert!(command.ends_with(" /t/rootfs.tar x/y:z"), "{command}");
    }
}
