//! Tests of the xtask binary as a maintainer runs it; those that push use registries on 127.0.0.1.

mod bases;
mod boundaries;
mod help;
mod notes;
mod plan;
mod release;
mod tidy;
mod workflows;

use std::process::{Command, Output};

/// The xtask binary, ready to run as a maintainer would (no backtraces in its errors).
pub fn xtask_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.env_remove("RUST_BACKTRACE");
    command
}

/// Runs the xtask with `args` and returns what it did.
pub fn xtask(args: &[&str]) -> Output {
    xtask_command()
        .args(args)
        .output()
        .expect("running the xtask binary")
}
