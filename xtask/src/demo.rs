//! `cargo xtask demo`: a complete local release on this machine. Two `distribution` registries on loopback
//! stand in for GHCR and Docker Hub, and the images are built from stand-in bases, because Docker Hub's `php`
//! images cannot be pulled here; every other step is the real release. The pins are signed with a throwaway cosign
//! key pair made for the run (its password random, given to cosign's environment alone), whose public key the
//! demo names with a `cosign verify` line to run by hand.

use anyhow::Context;
use clap::Args;
use std::{io::Read, path::Path};

use stack_images::{
    bases::base_tag,
    cosign::{Cosign, CosignCommand, Subject, Verifier},
    matrix::MATRIX_PATH,
    Matrix, ReleaseVersion, Repository,
};
use testkit::fixtures;
use xshell::{cmd, Shell};

use crate::{
    bases, display_path,
    execute::Mode,
    git::Revision,
    inputs::{Published, ReleaseArgs},
    plan, project_root,
    release::{self, Dirs},
    signing::SigningFlag,
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
    /// Port of the registry standing in for GHCR; the Docker Hub stand-in gets the next one
    #[arg(long, default_value_t = 5100)]
    port: u16,
}

impl DemoCmd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let (canonical_port, mirror_port) = (self.port, self.port + 1);
        let scratch = project_root().join("target/demo");
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;

        eprintln!("==> registries: fresh ones on 127.0.0.1:{canonical_port} (for ghcr.io) and :{mirror_port} (for docker.io)");
        for (name, port) in [("demo-ghcr", canonical_port), ("demo-hub", mirror_port)] {
            let port = port.to_string();
            cmd!(sh, "bash scripts/registry.sh wipe {name}")
                .quiet()
                .ignore_stdout()
                .run()?;
            cmd!(sh, "bash scripts/registry.sh up {name} {port}")
                .quiet()
                .ignore_stdout()
                .run()?;
        }

        let matrix = Matrix::load(&project_root().join(MATRIX_PATH))?;
        let source: Repository =
            format!("127.0.0.1:{canonical_port}/fixtures/php-standin").parse()?;
        eprintln!("==> stand-in bases: {source}:<M.m>-fpm-alpine (static busybox; the real php base needs Docker Hub)");
        for php in matrix.php_lines() {
            let reference = source.tagged(&base_tag(php)).to_string();
            fixtures::push_busybox(
                &reference,
                &format!("LABEL stand-in-for=php:{php}-fpm-alpine\n"),
                false,
            )
            .with_context(|| format!("building the stand-in base {reference}"))?;
        }
        let scanner_namespace = format!("127.0.0.1:{canonical_port}/fixtures");
        eprintln!("==> SBOM scanner stand-in: {scanner_namespace}/{} (testkit/standins/sbom-scanner; docker/buildkit-syft-scanner needs Docker Hub)", testkit::sbom_scanner::NAME);
        let scanner: stack_images::ImageRef = testkit::sbom_scanner::push(&scanner_namespace)
            .context("building the SBOM scanner stand-in")?
            .parse()?;
        let keys = scratch.join("cosign");
        eprintln!(
            "==> signing key: a throwaway cosign key pair in {}",
            display_path(&keys)
        );
        let cosign = throwaway_keys(&keys)?;
        let public_key = keys.join("demo.pub");

        let (lock, _) = bases::refresh(&matrix, &source, None)?;
        let lock_path = scratch.join("standin.lock.toml");
        std::fs::write(&lock_path, lock.render())
            .with_context(|| format!("writing {}", lock_path.display()))?;

        // The workspace's own version, first release: the 20i launcher built from this checkout pulls exactly
        // these tags (IMAGE_REGISTRY=127.0.0.1:PORT/20i-stack), and the release's version check passes.
        let version: ReleaseVersion = concat!("v", env!("CARGO_PKG_VERSION")).parse()?;
        let args = ReleaseArgs {
            version,
            published: Some(Published(Vec::new())),
            // The demo is not a release of this commit's tag: build whatever is checked out.
            revision: Some(Revision::Full(crate::git::head_revision(sh)?)),
            time: None,
            registry: Some(format!("127.0.0.1:{canonical_port}/20i-stack").parse()?),
            mirror: vec![format!("127.0.0.1:{mirror_port}/20istack").parse()?],
            no_mirrors: false,
            bases: Some(lock_path),
            matrix: None,
            context: Some(fixtures::php_fpm_standin()),
            attestations: None,
            no_sbom: false,
            sbom_scanner: Some(scanner),
            allow_version_mismatch: false,
            no_build_cache: false,
            signing: SigningFlag::Key(stack_images::cosign::KeyRef::File(keys.join("demo.key"))),
            signing_public_key: Some(public_key.clone()),
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
            cosign,
        )?;
        let notes = release::release_notes(&plan, &outcome);
        let (json, page) = crate::notes::write(&notes, &dirs.notes_dir())?;
        print!(
            "{}",
            release::summary(&plan, &outcome, &[display_path(&json), display_path(&page)])
        );

        let latest = plan
            .canonical
            .repository(&plan.image)
            .tagged(&stack_images::tags::latest());
        let pin = plan
            .build(stack_images::PhpLine::new(8, 4))
            .pin
            .in_namespace(&plan.mirrors[0]);
        let signed = pin
            .repository()
            .at(&outcome.pins[&stack_images::PhpLine::new(8, 4)].digest);
        let verify =
            CosignCommand::verify(&Verifier::Key(public_key.clone()), Subject::Image(&signed))?;
        println!(
            "\nEvery pin is signed, in both registries, with the key pair made for this demo; its public key:\n  \
             {}\n\
             Check one (exits 0 only if the signature verifies):\n  {verify}",
            public_key.display()
        );
        println!(
            "\nThe registries are still running, so you can pull and inspect what was published:\n  \
             docker buildx imagetools inspect {latest}\n  \
             docker buildx imagetools inspect {latest} --format '{{{{ json .SBOM }}}}'   # made by the scanner stand-in\n  \
             docker run --rm {pin} cat /etc/php-fpm-standin\n  \
             skopeo inspect --raw --tls-verify=false docker://{pin} | sha256sum\n\
             The 20i launcher built from this checkout pulls these very tags (the release is its version):\n  \
             IMAGE_REGISTRY={} cargo run -p launcher -- image\n\
             Release notes: {}\n\
             The images were built from stand-ins (testkit/standins/php-fpm on static busybox), since Docker Hub's \
             php bases cannot be pulled here; images/php-fpm/Dockerfile is what a real release builds.\n\
             Stop the registries with: make demo-down",
            plan.canonical,
            display_path(&page)
        );
        Ok(())
    }
}
