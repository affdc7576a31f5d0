//! `20i completions SHELL`: the shell completion script, generated from the command-line definition.

use clap::CommandFactory;

pub fn run(shell: clap_complete::Shell) -> anyhow::Result<()> {
    clap_complete::generate(
        shell,
        &mut crate::Cli::command(),
        "20i",
        &mut std::io::stdout(),
    );
    Ok(())
}
