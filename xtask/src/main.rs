//! `cargo xtask`: the maintainers' commands for the 20i stack images (plan, release, bases, ...).

#[path = "release/bake.rs"]
mod bake;
#[path = "maintain/bases.rs"]
mod bases;
#[path = "dev/bench.rs"]
mod bench;
#[path = "release/credentials.rs"]
mod credentials;
#[path = "dev/demo.rs"]
mod demo;
#[path = "release/execute.rs"]
mod execute;
#[path = "release/git.rs"]
mod git;
#[path = "release/inputs.rs"]
mod inputs;
#[path = "release/lock.rs"]
mod lock;
#[path = "maintain/notes.rs"]
mod notes;
#[path = "release/plan.rs"]
mod plan;
#[path = "maintain/prune.rs"]
mod prune;
#[path = "release/release.rs"]
mod release;
#[path = "maintain/republish.rs"]
mod republish;
#[path = "release/signing.rs"]
mod signing;
#[path = "maintain/sizes.rs"]
mod sizes;
#[path = "release/split.rs"]
mod split;
#[path = "dev/standins.rs"]
mod standins;
mod table;
#[path = "maintain/workflows.rs"]
mod workflows;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use xshell::Shell;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Plan, build and publish the 20i stack's pre-built PHP-FPM images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what releasing a version would build, push and tag, without touching docker or the network
    Plan(plan::PlanCmd),
    /// Build, push, mirror, verify and tag a release, and write its notes
    Release(Box<release::ReleaseCmd>),
    /// A complete local release to registries on 127.0.0.1, built from stand-in bases
    Demo(demo::DemoCmd),
    /// Rebuild a published release on refreshed bases and move its tags (out-of-band security fix)
    Republish(republish::RepublishCmd),
    /// Regenerate release pages from their JSON, or check them (--check)
    Notes(notes::NotesCmd),
    /// Image sizes across releases; --check fails on an unjustified regression
    Sizes(sizes::SizesCmd),
    /// Write the GitHub workflows generated from the image matrix, or check them (--check)
    Workflows(workflows::WorkflowsCmd),
    /// Measure releases and the launcher against what they replace, on loopback registries (prints, never asserts)
    Bench(bench::BenchCmd),
    /// Read or refresh the digest-pinned base images (images/bases/*.lock.toml)
    #[command(subcommand)]
    Bases(bases::BasesCmd),
    /// List what a registry holds that no tag and no release's notes reach; --apply deletes it
    Prune(prune::PruneCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let (code, error) = match error.downcast::<Exit>() {
                Ok(exit) => (ExitCode::from(exit.code), exit.error),
                Err(error) => (ExitCode::FAILURE, error),
            };
            // One line per cause, outermost first: what failed, then why.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            code
        }
    }
}

/// An error that chooses the exit code: a check exits 1 when it found something and 2 when it could not tell.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Exit {
    pub fn new(code: u8, error: anyhow::Error) -> Exit {
        Exit { code, error }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Exit {}

fn run(cli: Cli) -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match cli.command {
        Command::Plan(cmd) => cmd.run(&sh),
        Command::Release(cmd) => cmd.run(&sh),
        Command::Demo(cmd) => cmd.run(&sh),
        Command::Republish(cmd) => cmd.run(&sh),
        Command::Notes(cmd) => cmd.run(&sh),
        Command::Sizes(cmd) => cmd.run(&sh),
        Command::Workflows(cmd) => cmd.run(&sh),
        Command::Bases(cmd) => cmd.run(&sh),
        Command::Bench(cmd) => cmd.run(&sh),
        Command::Prune(cmd) => cmd.run(&sh),
    }
}

/// The workspace root: every path the xtask prints or records is relative to it.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// `path` relative to the project root when it is inside it, for stable output.
pub fn display_path(path: &Path) -> String {
    let root = project_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}
