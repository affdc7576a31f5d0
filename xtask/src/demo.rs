//! `cargo xtask demo`: a complete local release on this machine. Two `distribution` registries on loopback
//! stand in for GHCR and Docker Hub, and the images are built from stand-in bases, because Docker Hub's `php`
//! images cannot be pulled here; every other step is the real release.

use anyhow::Context;
use clap::Args;
use stack_images::{matrix::MATRIX_PATH, Matrix};
use testkit::fixtures;
use xshell::{cmd, Shell};

use crate::{
    bases, display_path,
    execute::Mode,
    inputs::ReleaseArgs,
    plan, project_root,
    release::{self, Dirs},
};

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
        let source = format!("127.0.0.1:{canonical_port}/fixtures/php-standin");
        eprintln!("==> stand-in bases: {source}:<M.m>-fpm-alpine (static busybox; the real php base needs Docker Hub)");
        for php in matrix.php_lines() {
            let reference = format!("{source}:{php}-fpm-alpine");
            fixtures::push_busybox(
                &reference,
                &format!("LABEL stand-in-for=php:{php}-fpm-alpine\n"),
                false,
            )
            .with_context(|| format!("building the stand-in base {reference}"))?;
        }
        let (lock, _) = bases::refresh(&matrix, &source, None)?;
        let lock_path = scratch.join("standin.lock.toml");
        std::fs::write(&lock_path, lock.render())
            .with_context(|| format!("writing {}", lock_path.display()))?;

        let args = ReleaseArgs {
            version: "v2.0.0".to_owned(),
            published: Some("v1.0.0".to_owned()),
            // The demo is not a release of this commit's tag: build whatever is checked out.
            revision: Some(crate::git::head_revision(sh)?),
            time: None,
            registry: Some(format!("127.0.0.1:{canonical_port}/20i-stack").parse()?),
            mirror: vec![format!("127.0.0.1:{mirror_port}/20istack").parse()?],
            no_mirrors: false,
            bases: Some(lock_path),
            matrix: None,
            context: Some(fixtures::php_fpm_standin()),
            attestations: None,
        };
        let plan = plan::compute(&args.gather(sh)?)?;
        let dirs = Dirs {
            notes_dir: scratch.join("release-notes"),
            work_dir: Some(scratch.join("work")),
        };
        let outcome = release::execute(
            &plan,
            Mode::Release { resume: false },
            &dirs.work_dir(&plan),
        )?;
        let notes = release::release_notes(&plan, &outcome);
        let (json, page) = notes.write(&dirs.notes_dir())?;
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
        println!(
            "\nThe registries are still running, so you can pull and inspect what was published:\n  \
             docker buildx imagetools inspect {latest}\n  \
             docker run --rm {pin} cat /etc/php-fpm-standin\n  \
             skopeo inspect --raw --tls-verify=false docker://{pin} | sha256sum\n\
             Release notes: {}\n\
             The images were built from stand-ins (testkit/standins/php-fpm on static busybox), since Docker Hub's \
             php bases cannot be pulled here; images/php-fpm/Dockerfile is what a real release builds.\n\
             Stop the registries with: make demo-down",
            display_path(&page)
        );
        Ok(())
    }
}
