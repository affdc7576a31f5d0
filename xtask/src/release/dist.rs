//! `cargo xtask dist`: the launcher's release archives. `dist build` compiles `20i` for one target and packs it
//! as `20i-vX.Y.Z-TARGET.tar.gz` (deterministic: sorted, uid 0, one mtime); `dist seal DIR` checksums, signs
//! and describes a folder of them (`SHA256SUMS`, a cosign signature each, `install.sh`, `dist-manifest.json`,
//! the Homebrew formula). The release workflow runs `build` on each target's runner and `seal` in the merge job;
//! `make demo` runs both for this machine. The names are `stack_images::dist`'s; docs/releasing.md has the
//! contract.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{bail, ensure, Context};
use clap::{Args, Subcommand};
use stack_images::{
    cosign::{self, Cosign, CosignCommand, KeyRef, Signer, Verifier},
    dist::{self, DistArchive, DistManifest, DistSigning, Sha256, Target},
    matrix::MATRIX_PATH,
    release_notes::LauncherRecord,
    Matrix, ReleaseVersion,
};
use xshell::{cmd, Shell};

use crate::{display_path, project_root, release::git, release::signing};

/// The launcher's package, and the files beside its binary in every archive.
const PACKAGE: &str = "launcher";
const LICENSE: &str = "LICENSE";
const README: &str = "launcher/README.md";
const INSTALLER_SOURCE: &str = "launcher/install.sh";

#[derive(Subcommand, Debug)]
pub enum DistCmd {
    /// Build `20i` for a target and pack it as DIR/20i-vX.Y.Z-TARGET.tar.gz
    Build(BuildCmd),
    /// Checksum and sign the archives in DIR; write install.sh, dist-manifest.json and the Homebrew formula
    Seal(SealCmd),
}

impl DistCmd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self {
            DistCmd::Build(cmd) => cmd.run(sh),
            DistCmd::Seal(cmd) => cmd.run(sh),
        }
    }
}

#[derive(Args, Debug)]
pub struct BuildCmd {
    /// The Rust target (x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, aarch64-apple-darwin,
    /// x86_64-apple-darwin)
    #[arg(long)]
    pub target: Target,
    /// Where the archive is written
    #[arg(long, value_name = "DIR", default_value = "dist")]
    pub out: PathBuf,
    /// The release (default: Cargo.toml's [workspace.package] version, which the binary prints and must match)
    #[arg(long)]
    pub version: Option<ReleaseVersion>,
}

impl BuildCmd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let version = release_version(self.version)?;
        let archive = build(sh, self.target, &version, &absolute(&self.out)?)?;
        println!("{}", display_path(&archive));
        Ok(())
    }
}

/// The release's version: the workspace's, or the one asked for, which must be the workspace's (the binary
/// prints that one).
fn release_version(asked: Option<ReleaseVersion>) -> anyhow::Result<ReleaseVersion> {
    let workspace = workspace_version()?;
    match asked {
        Some(asked) if asked != workspace => bail!(
            "--version {asked}: this checkout's launcher is {workspace} (Cargo.toml [workspace.package] version), \
             and an archive's 20i prints its own version: build from the release's tag, or drop --version"
        ),
        _ => Ok(workspace),
    }
}

/// `[workspace.package] version` of Cargo.toml, as a release version.
pub fn workspace_version() -> anyhow::Result<ReleaseVersion> {
    let path = project_root().join("Cargo.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    manifest
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .with_context(|| format!("{} has no [workspace.package] version", path.display()))?
        .parse()
        .with_context(|| format!("in {}: [workspace.package] version", path.display()))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Where cargo puts a target's release build: `$CARGO_TARGET_DIR` or the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// Builds the launcher for `target`, checks what it says its version is when this machine can run it, and packs
/// it into `out`; the archive's path.
pub fn build(
    sh: &Shell,
    target: Target,
    version: &ReleaseVersion,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let triple = target.triple();
    eprintln!("==> cargo build --release --locked -p {PACKAGE} --target {triple}");
    cmd!(
        sh,
        "{cargo} build --release --locked -p {PACKAGE} --target {triple}"
    )
    .quiet()
    .run()
    .with_context(|| {
        format!(
            "building the launcher for {triple}: `rustup target add {triple}`{}",
            if target.os() == dist::Os::Linux {
                " and musl-gcc (`apt-get install musl-tools`; `make setup` does both)"
            } else {
                ""
            }
        )
    })?;
    let binary = target_dir().join(triple).join("release").join(dist::BINARY);
    check_version(&binary, target, version)?;
    let mtime = source_date(sh)?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let root = project_root();
    let files = [
        (dist::BINARY, binary, 0o755),
        (LICENSE, root.join(LICENSE), 0o644),
        ("README.md", root.join(README), 0o644),
    ];
    let archive = out.join(dist::archive_name(version, target));
    write_archive(
        &archive,
        &dist::archive_folder(version, target),
        &files,
        mtime,
    )?;
    eprintln!(
        "    {} ({}, sha256 {})",
        display_path(&archive),
        stack_images::bytes::human_size(fs::metadata(&archive)?.len()),
        Sha256::of_file(&archive)?
    );
    Ok(archive)
}

/// Whether this machine can run a target's binary: natively, by Rosetta 2 (maybe), or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runs {
    Native,
    Maybe,
    No,
}

fn runs_here(target: Target) -> Runs {
    match Target::host() {
        Some(host) if host == target => Runs::Native,
        // Apple Silicon runs x86_64 binaries when Rosetta 2 is installed.
        Some(Target::Aarch64AppleDarwin) if target == Target::X86_64AppleDarwin => Runs::Maybe,
        _ => Runs::No,
    }
}

/// `20i --version` must print `20i X.Y.Z`, the release's version: what the launcher pulls is `vX.Y.Z-php-M.m`.
fn check_version(binary: &Path, target: Target, version: &ReleaseVersion) -> anyhow::Result<()> {
    let runs = runs_here(target);
    if runs == Runs::No {
        eprintln!(
            "    {target} cannot run on this machine: its --version is checked on its own runner by the release"
        );
        return Ok(());
    }
    let output = match std::process::Command::new(binary).arg("--version").output() {
        Ok(output) => output,
        Err(error) if runs == Runs::Maybe => {
            eprintln!("    not checking --version of {target} here (Rosetta 2 missing?): {error}");
            return Ok(());
        }
        Err(error) => {
            return Err(error).with_context(|| format!("running {} --version", binary.display()))
        }
    };
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let expected = format!("{} {}", dist::BINARY, version.semver());
    ensure!(
        output.status.success() && printed == expected,
        "{} --version printed `{printed}`, not `{expected}`: the archive would install a launcher that pulls \
         another release's images; build from the release's tag",
        binary.display()
    );
    eprintln!("    {} --version: {printed}", display_path(binary));
    Ok(())
}

/// The archives' one mtime: `SOURCE_DATE_EPOCH` when set, else the commit time of HEAD, so the same commit
/// packs the same bytes.
fn source_date(sh: &Shell) -> anyhow::Result<u64> {
    if let Ok(text) = std::env::var("SOURCE_DATE_EPOCH") {
        return text.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={text:?} is not seconds since the epoch: unset it or fix it")
        });
    }
    let head = git::head_revision(sh)?;
    let time = git::commit_time(sh, &head)?;
    u64::try_from(time).context("HEAD's commit time is before 1970: set SOURCE_DATE_EPOCH")
}

/// A deterministic `.tar.gz`: `folder/` then its files in the order given (sorted), owner 0:0, one mtime, no
/// names of users, gzip without a timestamp. Written beside the destination and renamed over it.
pub fn write_archive(
    archive: &Path,
    folder: &str,
    files: &[(&str, PathBuf, u32)],
    mtime: u64,
) -> anyhow::Result<()> {
    let mut names: Vec<&str> = files.iter().map(|f| f.0).collect();
    names.sort_unstable();
    ensure!(
        names == files.iter().map(|f| f.0).collect::<Vec<_>>(),
        "archive files must be listed sorted"
    );
    let partial = archive.with_extension("gz.partial");
    let write = || -> anyhow::Result<()> {
        let file = fs::File::create(&partial)?;
        let gzip = flate2::GzBuilder::new()
            .mtime(0)
            .write(file, flate2::Compression::best());
        let mut tar = tar::Builder::new(gzip);
        tar.mode(tar::HeaderMode::Deterministic);
        let header = |kind: tar::EntryType, size: u64, mode: u32| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(size);
            header.set_mode(mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(mtime);
            header
        };
        let mut dir = header(tar::EntryType::Directory, 0, 0o755);
        tar.append_data(&mut dir, format!("{folder}/"), std::io::empty())?;
        for (name, source, mode) in files {
            let bytes =
                fs::read(source).with_context(|| format!("reading {}", source.display()))?;
            let mut entry = header(tar::EntryType::Regular, bytes.len() as u64, *mode);
            tar.append_data(&mut entry, format!("{folder}/{name}"), bytes.as_slice())?;
        }
        tar.into_inner()?.finish()?.sync_all()?;
        Ok(())
    };
    if let Err(error) = write() {
        let _ = fs::remove_file(&partial);
        return Err(error).with_context(|| format!("writing {}", archive.display()));
    }
    fs::rename(&partial, archive).with_context(|| format!("writing {}", archive.display()))
}

/// `--launcher-dist DIR` of `release` and `release merge`: a folder sealed by `dist seal`, its manifest read
/// once, here; a folder without one is refused before the release starts.
#[derive(Debug, Clone)]
pub struct LauncherDist {
    pub dir: PathBuf,
    pub manifest: DistManifest,
}

impl FromStr for LauncherDist {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<LauncherDist> {
        let dir = PathBuf::from(text);
        // clap shows only the outermost message: one sentence with every cause.
        let manifest = DistManifest::load(&dir).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(LauncherDist { dir, manifest })
    }
}

impl LauncherDist {
    /// The notes' `launcher` section, if the folder is of `version`.
    pub fn record(&self, version: &ReleaseVersion) -> anyhow::Result<LauncherRecord> {
        ensure!(
            self.manifest.version == *version,
            "--launcher-dist {}: its archives are of {}, not {version}: seal the archives of this release",
            self.dir.display(),
            self.manifest.version
        );
        Ok(LauncherRecord::from(&self.manifest))
    }
}

/// Where a sealed folder's files are downloaded from: an http(s) URL without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl FromStr for BaseUrl {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<BaseUrl> {
        let valid = (text.starts_with("https://") || text.starts_with("http://"))
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "'\"`$\\;&|<>".contains(c));
        if !valid {
            bail!(
                "`{}` is not a base URL: give the http(s) folder that serves the release's files",
                text.escape_debug()
            );
        }
        Ok(BaseUrl(text.trim_end_matches('/').to_owned()))
    }
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("signing").required(true).args(["keyless", "key"])))]
pub struct SealCmd {
    /// The folder holding the archives (`dist build --out`)
    pub dir: PathBuf,
    /// Sign keyless, with the GitHub Actions workflow's identity (the release workflow)
    #[arg(long)]
    pub keyless: bool,
    /// Sign with this cosign private key (its password in COSIGN_PASSWORD), or env://COSIGN_KEY
    #[arg(long, value_name = "PATH")]
    pub key: Option<KeyRef>,
    /// With --key: its public key (default: the key's path with .pub), published as cosign.pub
    #[arg(long, value_name = "PATH", requires = "key")]
    pub public_key: Option<PathBuf>,
    /// Where the files will be downloaded from (default: the GitHub release of the version, from the matrix's
    /// `source`)
    #[arg(long, value_name = "URL")]
    pub base_url: Option<BaseUrl>,
    /// The release (default: Cargo.toml's [workspace.package] version); every archive must be of it
    #[arg(long)]
    pub version: Option<ReleaseVersion>,
}

/// How a seal signs: the door's signer and verifier, and what the manifest records.
pub struct SealSigning {
    pub signer: Signer,
    pub verifier: Verifier,
    pub record: DistSigning,
    /// The public key to publish beside the archives (key mode).
    pub public_key: Option<PathBuf>,
}

impl SealSigning {
    /// Key mode: `key`, checked with `public_key` (default: beside the key, `.pub`).
    pub fn key(key: KeyRef, public_key: Option<PathBuf>) -> anyhow::Result<SealSigning> {
        let public_key = match (public_key, &key) {
            (Some(path), _) => path,
            (None, KeyRef::File(path)) => path.with_extension("pub"),
            (None, KeyRef::Env) => bail!(
                "--key env://{}: give its public key with --public-key PATH",
                cosign::KEY_VARIABLE
            ),
        };
        ensure!(
            public_key.is_file(),
            "the public key {} does not exist: give it with --public-key PATH (cosign generate-key-pair writes \
             it beside the private key)",
            public_key.display()
        );
        Ok(SealSigning {
            signer: Signer::Key(key),
            verifier: Verifier::Key(absolute(&public_key)?),
            record: DistSigning::Key {
                public_key: dist::PUBLIC_KEY.to_owned(),
            },
            public_key: Some(public_key),
        })
    }

    /// Keyless: the release workflow's identity, from GitHub Actions' variables; it must be the workflow at the
    /// release's tag, the identity the installer and the notes verify.
    pub fn keyless(version: &ReleaseVersion) -> anyhow::Result<SealSigning> {
        let identity = signing::github_identity().context(
            "--keyless signs with the GitHub Actions workflow's OIDC identity, and GITHUB_WORKFLOW_REF is not set: \
             seal in the release workflow, or here with --key PATH",
        )?;
        check_keyless_identity(&identity, version)?;
        Ok(SealSigning {
            signer: Signer::Keyless,
            verifier: Verifier::Identity {
                identity: identity.clone(),
                issuer: cosign::GITHUB_ISSUER.to_owned(),
            },
            record: DistSigning::Keyless {
                identity,
                issuer: cosign::GITHUB_ISSUER.to_owned(),
            },
            public_key: None,
        })
    }
}

/// install.sh verifies a keyless bundle against the release workflow at `refs/tags/vX.Y.Z`: a run dispatched from
/// a branch would sign with an identity no installer accepts, so it is refused before anything is signed.
fn check_keyless_identity(identity: &str, version: &ReleaseVersion) -> anyhow::Result<()> {
    let tag = format!("@refs/tags/{version}");
    ensure!(
        identity.ends_with(&tag),
        "the workflow runs as {identity}, and the launcher's installer verifies signatures made at {tag}: \
         run the release workflow from the tag {version} (\"Use workflow from\": {version})"
    );
    Ok(())
}

impl SealCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let version = release_version(self.version)?;
        let dir = absolute(&self.dir)?;
        // The folder first: a wrong one is the likelier mistake, and says what to build.
        find_archives(&dir, &version)?;
        let signing = match self.key {
            Some(key) => SealSigning::key(key, self.public_key)?,
            None => SealSigning::keyless(&version)?,
        };
        let cosign = Cosign::new().with_policy(stack_images::registry::Policy::from_env()?);
        let manifest = seal(&dir, &version, &signing, self.base_url, &cosign)?;
        print!("{}", summary(&dir, &manifest));
        Ok(())
    }
}

/// The archives of `version` in `dir`, in `Target::ALL`'s order; anything named like an archive of another
/// version or target is refused.
fn find_archives(dir: &Path, version: &ReleaseVersion) -> anyhow::Result<Vec<(Target, String)>> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).with_context(|| {
        format!(
            "reading {}: give the folder `cargo xtask dist build --out` wrote",
            dir.display()
        )
    })?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".tar.gz") {
            continue;
        }
        match dist::parse_archive_name(&name) {
            Some((v, target)) if v == *version => found.push((target, name)),
            Some((v, _)) => bail!(
                "{} holds {name}, an archive of {v}, not {version}: remove it, or seal a folder of one release",
                dir.display()
            ),
            None => bail!(
                "{} holds {name}, which is not named 20i-{version}-TARGET.tar.gz for a target of the release \
                 ({}): remove it",
                dir.display(),
                Target::ALL.map(Target::triple).join(", ")
            ),
        }
    }
    ensure!(
        !found.is_empty(),
        "{} holds no archive 20i-{version}-TARGET.tar.gz: run `cargo xtask dist build --target TARGET --out {}` \
         first",
        dir.display(),
        dir.display()
    );
    found.sort();
    Ok(found)
}

/// Seals `dir`: `SHA256SUMS`, each archive signed (and the signature verified), the public key (key mode),
/// `install.sh` with its version filled in, the formula and `dist-manifest.json` (last: a folder with a manifest
/// is sealed).
pub fn seal(
    dir: &Path,
    version: &ReleaseVersion,
    signing: &SealSigning,
    base_url: Option<BaseUrl>,
    cosign: &Cosign,
) -> anyhow::Result<DistManifest> {
    let archives = find_archives(dir, version)?;
    let _ = fs::remove_file(dir.join(dist::MANIFEST));
    let mut records = Vec::new();
    for (target, name) in archives {
        let path = dir.join(&name);
        check_contents(&path, &dist::archive_folder(version, target))?;
        let sha256 = Sha256::of_file(&path)?;
        let signature = signing.record.signature_name(&name);
        let signature_path = dir.join(&signature);
        eprintln!("==> signing {name} ({})", signature);
        cosign
            .run(&CosignCommand::sign_blob(
                &signing.signer,
                &path,
                &signature_path,
            )?)
            .with_context(|| format!("signing {name}"))?;
        cosign
            .run(&CosignCommand::verify_blob(
                &signing.verifier,
                &path,
                &signature_path,
            )?)
            .with_context(|| format!("verifying the signature of {name} just made"))?;
        // cosign writes signatures 0600; they are published like the archive.
        make_readable(&signature_path)?;
        records.push(DistArchive {
            target,
            name,
            sha256,
            signature,
        });
    }
    let sums = dist::sha256sums(records.iter().map(|a| (a.name.as_str(), &a.sha256)));
    write(&dir.join(dist::SHA256SUMS), sums.as_bytes())?;
    if let Some(public_key) = &signing.public_key {
        fs::copy(public_key, dir.join(dist::PUBLIC_KEY))
            .with_context(|| format!("copying {}", public_key.display()))?;
    }
    write_installer(dir, version)?;

    let matrix = Matrix::load(&project_root().join(MATRIX_PATH))?;
    let default_base = format!(
        "{}/releases/download/{version}",
        matrix.source.trim_end_matches('/')
    );
    let (base_url, install) = match base_url {
        Some(BaseUrl(url)) => (
            url.clone(),
            format!(
                "curl -fsSL {url}/{} | sh -s -- --base-url {url}",
                dist::INSTALLER
            ),
        ),
        None => (
            default_base.clone(),
            format!("curl -fsSL {default_base}/{} | sh", dist::INSTALLER),
        ),
    };
    let manifest = DistManifest {
        version: version.clone(),
        base_url,
        install,
        signing: signing.record.clone(),
        archives: records,
    };
    // `cargo binstall` reads launcher/Cargo.toml's templates: they must name these very archives on the release.
    for archive in &manifest.archives {
        let (url, bin) = binstall_names(&matrix.source, version.semver(), archive.target)?;
        let expected = format!("{default_base}/{}", archive.name);
        ensure!(
            url == expected && bin == format!("{}/{}", dist::archive_folder(version, archive.target), dist::BINARY),
            "launcher/Cargo.toml [package.metadata.binstall] resolves to {url} ({bin}), not {expected}: make its \
             pkg-url and bin-dir name the archives `dist build` writes"
        );
    }
    write(
        &dir.join(dist::FORMULA),
        formula(&manifest, &matrix.source)?.as_bytes(),
    )?;
    write(&dir.join(dist::MANIFEST), manifest.to_json().as_bytes())?;
    Ok(manifest)
}

/// What every archive holds, and nothing else: `folder/` with `20i`, `LICENSE` and `README.md`; an archive
/// renamed, truncated or packed by hand is refused before it is signed.
fn check_contents(archive: &Path, folder: &str) -> anyhow::Result<()> {
    let read = || -> anyhow::Result<Vec<String>> {
        let file = fs::File::open(archive)?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut paths = Vec::new();
        for entry in tar.entries()? {
            paths.push(entry?.path()?.to_string_lossy().into_owned());
        }
        Ok(paths)
    };
    let paths = read().with_context(|| format!("reading {}", archive.display()))?;
    let expected: Vec<String> = std::iter::once(format!("{folder}/"))
        .chain(
            [dist::BINARY, LICENSE, "README.md"]
                .iter()
                .map(|name| format!("{folder}/{name}")),
        )
        .collect();
    ensure!(
        paths == expected,
        "{} holds {paths:?}, not {expected:?}: build it again with `cargo xtask dist build`",
        archive.display()
    );
    Ok(())
}

fn make_readable(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("making {} readable", path.display()))?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `launcher/install.sh` with the release's version in place of its placeholder, executable; a warning when the
/// checkout has none yet.
fn write_installer(dir: &Path, version: &ReleaseVersion) -> anyhow::Result<()> {
    let source = project_root().join(INSTALLER_SOURCE);
    let text = match fs::read_to_string(&source) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "warning: {INSTALLER_SOURCE} does not exist in this checkout: the sealed folder has no {}",
                dist::INSTALLER
            );
            return Ok(());
        }
        Err(error) => return Err(error).with_context(|| format!("reading {}", source.display())),
    };
    let target = dir.join(dist::INSTALLER);
    write(
        &target,
        text.replace(dist::INSTALLER_VERSION_PLACEHOLDER, &version.to_string())
            .as_bytes(),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", target.display()))?;
    }
    Ok(())
}

/// The Homebrew formula for the archives sealed: class `TwentyI` (Homebrew's name for `twenty-i.rb`; a formula's
/// name cannot start with a digit), one `url`/`sha256` per platform there is an archive for.
pub fn formula(manifest: &DistManifest, homepage: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    let version = manifest.version.semver();
    writeln!(
        text,
        "# Generated by `cargo xtask dist seal` for {}: put it in a tap as Formula/twenty-i.rb",
        manifest.version
    )?;
    writeln!(text, "class TwentyI < Formula")?;
    writeln!(
        text,
        "  desc \"Launcher of the 20i stack: PHP development with pre-built images\""
    )?;
    writeln!(text, "  homepage \"{homepage}\"")?;
    writeln!(text, "  version \"{version}\"")?;
    writeln!(text, "  license \"MIT\"")?;
    for (os, block) in [(dist::Os::MacOs, "on_macos"), (dist::Os::Linux, "on_linux")] {
        let archives: Vec<&DistArchive> = manifest
            .archives
            .iter()
            .filter(|a| a.target.os() == os)
            .collect();
        if archives.is_empty() {
            continue;
        }
        writeln!(text, "\n  {block} do")?;
        for archive in archives {
            let cpu = match archive.target.arch() {
                dist::Arch::Aarch64 => "on_arm",
                dist::Arch::X86_64 => "on_intel",
            };
            writeln!(text, "    {cpu} do")?;
            writeln!(text, "      url \"{}\"", manifest.url(&archive.name))?;
            writeln!(text, "      sha256 \"{}\"", archive.sha256)?;
            writeln!(text, "    end")?;
        }
        writeln!(text, "  end")?;
    }
    writeln!(text, "\n  def install")?;
    writeln!(text, "    bin.install \"{}\"", dist::BINARY)?;
    writeln!(text, "  end")?;
    writeln!(text, "\n  test do")?;
    writeln!(
        text,
        "    assert_equal \"{} #{{version}}\", shell_output(\"#{{bin}}/{} --version\").strip",
        dist::BINARY,
        dist::BINARY
    )?;
    writeln!(text, "  end")?;
    writeln!(text, "end")?;
    Ok(text)
}

/// What `[package.metadata.binstall]` in launcher/Cargo.toml resolves to for `target`: the archive's URL and the
/// binary's path in it (`cargo binstall` fills `{ repo }`, `{ version }`, `{ target }`, `{ bin }`,
/// `{ binary-ext }` like this).
pub fn binstall_names(
    repo: &str,
    version: &semver::Version,
    target: Target,
) -> anyhow::Result<(String, String)> {
    let path = project_root().join("launcher/Cargo.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let binstall = manifest
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("binstall"))
        .with_context(|| format!("{} has no [package.metadata.binstall]", path.display()))?;
    let field = |name: &str| -> anyhow::Result<String> {
        let template = binstall
            .get(name)
            .and_then(|v| v.as_str())
            .with_context(|| format!("[package.metadata.binstall] has no {name}"))?;
        Ok(template
            .replace("{ repo }", repo)
            .replace("{ version }", &version.to_string())
            .replace("{ target }", target.triple())
            .replace("{ bin }", dist::BINARY)
            .replace("{ binary-ext }", ""))
    };
    ensure!(
        binstall.get("pkg-fmt").and_then(|v| v.as_str()) == Some("tgz"),
        "[package.metadata.binstall] pkg-fmt must be \"tgz\": the archives are .tar.gz"
    );
    Ok((field("pkg-url")?, field("bin-dir")?))
}

/// What was sealed, where it is, and how it is installed and verified.
fn summary(dir: &Path, manifest: &DistManifest) -> String {
    let written: Vec<&str> = [
        dist::SHA256SUMS,
        dist::PUBLIC_KEY,
        dist::INSTALLER,
        dist::FORMULA,
        dist::MANIFEST,
    ]
    .into_iter()
    .filter(|name| dir.join(name).is_file())
    .collect();
    let mut text = format!(
        "sealed {} ({}): {}\n",
        display_path(dir),
        manifest.version,
        written.join(", ")
    );
    for archive in &manifest.archives {
        text.push_str(&format!(
            "  {}  {}  {}\n",
            archive.name, archive.sha256, archive.signature
        ));
    }
    text.push_str(&format!("install: {}\n", manifest.install));
    if let Some(archive) = manifest.archives.first() {
        text.push_str(&format!(
            "verify:  {}\n",
            manifest.signing.verify_command(&archive.name)
        ));
    }
    text.push_str(
        "cargo binstall: launcher/Cargo.toml [package.metadata.binstall] resolves to these archives on the GitHub \
         release (pkg-url \"{ repo }/releases/download/v{ version }/20i-v{ version }-{ target }.tar.gz\", \
         bin-dir \"20i-v{ version }-{ target }/{ bin }{ binary-ext }\", pkg-fmt \"tgz\"): \
         cargo binstall --git <repository> launcher\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binstall_metadata_names_the_archives_dist_builds() {
        let version: ReleaseVersion = "v2.1.0".parse().unwrap();
        let matrix = Matrix::load(&project_root().join(MATRIX_PATH)).unwrap();
        for target in Target::ALL {
            let (url, bin) = binstall_names(&matrix.source, version.semver(), target).unwrap();
            assert_eq!(
                url,
                format!(
                    "{}/releases/download/{version}/{}",
                    matrix.source,
                    dist::archive_name(&version, target)
                )
            );
            assert_eq!(
                bin,
                format!(
                    "{}/{}",
                    dist::archive_folder(&version, target),
                    dist::BINARY
                )
            );
        }
    }

    #[test]
    fn the_formula_lists_each_platform_archive() {
        let version: ReleaseVersion = "v2.1.0".parse().unwrap();
        let archive = |target: Target| {
            let name = dist::archive_name(&version, target);
            DistArchive {
                target,
                signature: format!("{name}.sigstore.json"),
                sha256: Sha256::of(name.as_bytes()),
                name,
            }
        };
        let manifest = DistManifest {
            version: version.clone(),
            base_url: "https://github.com/20i-stack/20i-stack/releases/download/v2.1.0".to_owned(),
            install: String::new(),
            signing: DistSigning::Keyless {
                identity: "https://github.com/20i-stack/20i-stack/.github/workflows/release.yml@refs/tags/v2.1.0"
                    .to_owned(),
                issuer: cosign::GITHUB_ISSUER.to_owned(),
            },
            archives: Target::ALL.into_iter().map(archive).collect(),
        };
        insta::assert_snapshot!(
            formula(&manifest, "https://github.com/20i-stack/20i-stack").unwrap()
        );
    }

    #[test]
    fn keyless_signatures_are_made_only_at_the_release_s_tag() {
        let version: ReleaseVersion = "v2.1.0".parse().unwrap();
        let workflow = "https://github.com/o/r/.github/workflows/release.yml";
        assert!(check_keyless_identity(&format!("{workflow}@refs/tags/v2.1.0"), &version).is_ok());
        assert_eq!(
            check_keyless_identity(&format!("{workflow}@refs/heads/main"), &version)
                .unwrap_err()
                .to_string(),
            "the workflow runs as https://github.com/o/r/.github/workflows/release.yml@refs/heads/main, and the \
             launcher's installer verifies signatures made at @refs/tags/v2.1.0: run the release workflow from the \
             tag v2.1.0 (\"Use workflow from\": v2.1.0)"
        );
        assert!(
            check_keyless_identity(&format!("{workflow}@refs/tags/v2.1.0-rc.1"), &version).is_err()
        );
    }

    #[track_caller]
    fn check_base_url(text: &str, expected: &str) {
        match text.parse::<BaseUrl>() {
            Ok(url) => assert_eq!(url.0, expected),
            Err(error) => assert_eq!(format!("error: {error}"), expected),
        }
    }

    #[test]
    fn base_urls() {
        check_base_url("http://127.0.0.1:5102/", "http://127.0.0.1:5102");
        check_base_url(
            "https://mirror.example/20i/v2.1.0",
            "https://mirror.example/20i/v2.1.0",
        );
        check_base_url(
            "--base-url",
            "error: `--base-url` is not a base URL: give the http(s) folder that serves the release's files",
        );
        check_base_url(
            "http://x/$(id)",
            "error: `http://x/$(id)` is not a base URL: give the http(s) folder that serves the release's files",
        );
    }
}
