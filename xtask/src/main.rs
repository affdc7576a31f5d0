//! `cargo xtask`: the maintainers' commands for the 20i stack images (plan, release, bases, ...).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xshell::Shell;
use xtask::{dev, maintain, project_root, release, Exit};

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
    Plan(release::plan::PlanCmd),
    /// Build, push, mirror, verify and tag a release, and write its notes
    Release(Box<release::release::ReleaseCmd>),
    /// The launcher's release archives: build one for a target, seal a folder of them (checksums, signatures)
    #[command(subcommand)]
    Dist(release::dist::DistCmd),
    /// A complete local release to registries on 127.0.0.1, built from stand-in bases
    Demo(dev::demo::DemoCmd),
    /// Rebuild a published release on refreshed bases and move its tags (out-of-band security fix)
    Republish(maintain::republish::RepublishCmd),
    /// Regenerate release pages from their JSON, or check them (--check)
    Notes(maintain::notes::NotesCmd),
    /// Image sizes across releases; --check fails on an unjustified regression
    Sizes(maintain::sizes::SizesCmd),
    /// Write the GitHub workflows generated from the image matrix, or check them (--check)
    Workflows(maintain::workflows::WorkflowsCmd),
    /// Measure releases and the launcher against what they replace, on loopback registries (prints, never asserts)
    Bench(dev::bench::BenchCmd),
    /// Read or refresh the digest-pinned base images (images/bases/*.lock.toml)
    #[command(subcommand)]
    Bases(maintain::bases::BasesCmd),
    /// List what a registry holds that no tag and no release's notes reach; --apply deletes it
    Prune(maintain::prune::PruneCmd),
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

fn run(cli: Cli) -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match cli.command {
        Command::Plan(cmd) => cmd.run(&sh),
        Command::Release(cmd) => cmd.run(&sh),
        Command::Dist(cmd) => cmd.run(&sh),
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
