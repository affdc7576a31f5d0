//! `cargo xtask bases`: show the digest-pinned base images, or refresh the pins from a registry.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{Args, Subcommand};
use stack_images::{
    bases::{base_tag, LockedBase},
    docker::Docker,
    matrix::MATRIX_PATH,
    BaseLock, Matrix, Repository,
};
use xshell::Shell;

use crate::{display_path, project_root, table};

#[derive(Subcommand, Debug)]
pub enum BasesCmd {
    /// Print the pinned base of every PHP line
    Show(LockArgs),
    /// Read the current index digest of every line's base tag from its registry and rewrite the lock
    Refresh(RefreshArgs),
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock file (default: the matrix's, images/bases/docker-hub.lock.toml)
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// Image matrix file (default: images/matrix.toml)
    #[arg(long, value_name = "FILE")]
    matrix: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RefreshArgs {
    #[command(flatten)]
    lock: LockArgs,
    /// Repository to read the bases from, e.g. a Docker Hub mirror (default: the lock's source)
    #[arg(long, value_name = "REPOSITORY")]
    source: Option<Repository>,
    /// Print the new lock instead of writing it
    #[arg(long)]
    dry_run: bool,
}

impl LockArgs {
    fn load(&self) -> anyhow::Result<(Matrix, PathBuf)> {
        let matrix_path = self
            .matrix
            .clone()
            .unwrap_or_else(|| project_root().join(MATRIX_PATH));
        let matrix = Matrix::load(&matrix_path)?;
        let default = matrix_path
            .parent()
            .unwrap_or(&project_root())
            .join(&matrix.bases);
        Ok((matrix, self.lock.clone().unwrap_or(default)))
    }
}

impl BasesCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        match self {
            BasesCmd::Show(args) => {
                let (matrix, path) = args.load()?;
                let lock = BaseLock::load(&path)?;
                println!(
                    "{} read on {} from {} ({})",
                    lock.source,
                    lock.read_on,
                    lock.read_from,
                    display_path(&path)
                );
                let rows: Vec<Vec<String>> = lock
                    .lines
                    .iter()
                    .map(|(php, base)| {
                        vec![
                            php.to_string(),
                            base.tag.to_string(),
                            base.digest.to_string(),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&rows, "  "));
                // A release would stop at the missing line: say so here, not only when releasing.
                lock.require_lines(&matrix.php_lines(), &path)
            }
            BasesCmd::Refresh(args) => args.run(),
        }
    }
}

/// Reads the index digest of every line's base tag under `source`, checking that every matrix platform is
/// there, and returns the new lock with a row per line saying what changed since `previous`.
pub fn refresh(
    matrix: &Matrix,
    source: &Repository,
    previous: Option<&BaseLock>,
) -> anyhow::Result<(BaseLock, Vec<Vec<String>>)> {
    let docker = Docker::new()?;
    let mut lines = BTreeMap::new();
    let mut rows = Vec::new();
    for php in matrix.php_lines() {
        let tag = base_tag(php);
        let reference = source.tagged(&tag).to_string();
        let index = docker
            .inspect_index(&reference)
            .with_context(|| format!("reading the base of PHP {php}"))?;
        index
            .require_platforms(&matrix.platforms)
            .with_context(|| format!("base {reference}"))?;
        let before = previous
            .filter(|p| p.source == *source)
            .and_then(|p| p.lines.get(&php));
        let change = match before {
            Some(before) if before.digest == index.digest => "unchanged".to_owned(),
            Some(before) => format!("was {}", before.digest.short()),
            None => "new".to_owned(),
        };
        rows.push(vec![
            php.to_string(),
            reference,
            index.digest.to_string(),
            change,
        ]);
        lines.insert(
            php,
            LockedBase {
                tag,
                digest: index.digest,
            },
        );
    }
    let lock = BaseLock {
        source: source.clone(),
        read_on: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        read_from: "registry, with docker buildx imagetools inspect --raw".to_owned(),
        lines,
    };
    Ok((lock, rows))
}

impl RefreshArgs {
    fn run(self) -> anyhow::Result<()> {
        let (matrix, path) = self.lock.load()?;
        let previous = if path.exists() {
            Some(BaseLock::load(&path)?)
        } else {
            None
        };
        let source = match (&self.source, &previous) {
            (Some(source), _) => source.clone(),
            (None, Some(previous)) => previous.source.clone(),
            (None, None) => anyhow::bail!(
                "{} does not exist yet: pass --source REPOSITORY",
                display_path(&path)
            ),
        };

        // Read every line before writing anything: a failed refresh leaves the lock as it was.
        let (lock, rows) = refresh(&matrix, &source, previous.as_ref())?;
        print!("{}", table::render(&rows, "  "));
        if self.dry_run {
            print!("\n{}", lock.render());
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Written aside and renamed over: an interrupted refresh leaves the old lock whole.
        let mut aside = path.clone().into_os_string();
        aside.push(".refresh-tmp");
        std::fs::write(&aside, lock.render())
            .with_context(|| format!("writing {}", Path::new(&aside).display()))?;
        std::fs::rename(&aside, &path).with_context(|| format!("replacing {}", path.display()))?;
        println!("wrote {}", display_path(&path));
        Ok(())
    }
}
