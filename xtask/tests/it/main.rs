//! Tests of the xtask binary as a maintainer runs it; those that push use registries on 127.0.0.1.

mod audit;
mod bases;
mod boundaries;
mod dist;
mod dry_run;
mod faults;
mod help;
mod hosted;
mod injection;
mod install;
mod notes;
mod plan;
mod progress;
mod prune;
mod release;
mod sbom;
mod setup;
mod signing;
mod tidy;
mod workflows;

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// The xtask binary, ready to run as a maintainer would (no backtraces in its errors).
pub fn xtask_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.env_remove("RUST_BACKTRACE");
    // A keyless plan names the workflow's identity when run inside GitHub Actions: the tests see the same plan
    // wherever they run, and sign only where they ask to.
    for variable in [
        "GITHUB_WORKFLOW_REF",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "COSIGN_PASSWORD",
        "COSIGN_KEY",
    ] {
        command.env_remove(variable);
    }
    command
}

/// Runs the xtask with `args` and returns what it did.
pub fn xtask(args: &[&str]) -> Output {
    xtask_command()
        .args(args)
        .output()
        .expect("running the xtask binary")
}

/// A PATH holding only a `docker` that records being called, so a test can prove nobody called it.
pub fn tripwire_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("docker-was-called");
    let script = format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display());
    let docker = dir.path().join("docker");
    std::fs::write(&docker, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, marker)
}
