//! `cargo xtask`: the maintainers' commands for the 20i stack images (plan, release, bases, ...). The development
//! tools (demo, bench) are compiled with the `dev` feature only; without it, they are run through
//! `cargo xtask-dev`, which builds the xtask with it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xshell::Shell;
#[cfg(feature = "dev")]
use xtask::dev::{bench::BenchCmd, demo::DemoCmd};
use xtask::{maintain, project_root, release, Exit};

/// A development tool in a build without the `dev` feature: listed by `--help`, run by [`forward_to_dev`].
#[cfg(not(feature = "dev"))]
#[derive(clap::Args)]
struct DevOnly;

#[cfg(not(feature = "dev"))]
type DemoCmd = DevOnly;
#[cfg(not(feature = "dev"))]
type BenchCmd = DevOnly;

/// The commands compiled with the `dev` feature only.
const DEV_COMMANDS: [&str; 2] = ["demo", "bench"];

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
    Demo(DemoCmd),
    /// Rebuild a published release on refreshed bases and move its tags (out-of-band security fix)
    Republish(maintain::republish::RepublishCmd),
    /// Regenerate release pages from their JSON, or check them (--check)
    Notes(maintain::notes::NotesCmd),
    /// Image sizes across releases; --check fails on an unjustified regression
    Sizes(maintain::sizes::SizesCmd),
    /// Write the GitHub workflows generated from the image matrix, or check them (--check)
    Workflows(maintain::workflows::WorkflowsCmd),
    /// Measure releases and the launcher against what they replace, on loopback registries (prints, never asserts)
    Bench(BenchCmd),
    /// Read or refresh the digest-pinned base images (images/bases/*.lock.toml)
    #[command(subcommand)]
    Bases(maintain::bases::BasesCmd),
    /// List what a registry holds that no tag and no release's notes reach; --apply deletes it
    Prune(maintain::prune::PruneCmd),
    /// Check every release's pins, tags, platforms and signatures in every registry; --repair puts back drift
    Audit(maintain::audit::AuditCmd),
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !cfg!(feature = "dev")
        && args
            .first()
            .is_some_and(|a| DEV_COMMANDS.iter().any(|c| a == c))
    {
        // Before clap, so that `demo --help` is the tool's own.
        return forward_to_dev(&args);
    }
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
        #[cfg(feature = "dev")]
        Command::Demo(cmd) => cmd.run(&sh),
        Command::Republish(cmd) => cmd.run(&sh),
        Command::Notes(cmd) => cmd.run(&sh),
        Command::Sizes(cmd) => cmd.run(&sh),
        Command::Workflows(cmd) => cmd.run(&sh),
        Command::Bases(cmd) => cmd.run(&sh),
        #[cfg(feature = "dev")]
        Command::Bench(cmd) => cmd.run(&sh),
        #[cfg(not(feature = "dev"))]
        Command::Demo(DevOnly) | Command::Bench(DevOnly) => Err(anyhow::anyhow!(
            "a development tool: run it with `cargo xtask-dev`"
        )),
        Command::Prune(cmd) => cmd.run(&sh),
        Command::Audit(cmd) => cmd.run(&sh),
    }
}

/// Runs `cargo xtask-dev ARGS` (the xtask built with `--features dev`), saying so, and exits as it does.
fn forward_to_dev(args: &[std::ffi::OsString]) -> ExitCode {
    if std::env::var_os(FORWARDED).is_some() {
        eprintln!("error: `cargo xtask-dev` ran an xtask without the `dev` feature: check .cargo/config.toml");
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "{} is a development tool, built with `--features dev`: running `cargo xtask-dev {}`",
        args[0].to_string_lossy(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let status = std::process::Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--features",
            "dev",
            "--",
        ])
        .args(args)
        .current_dir(project_root())
        .env(FORWARDED, "1")
        .status();
    match status {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        Err(error) => {
            eprintln!("error: running cargo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Set for the xtask [`forward_to_dev`] runs, so that a build without the feature cannot forward in a loop.
const FORWARDED: &str = "XTASK_DEV_FORWARDED";
