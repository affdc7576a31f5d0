//! What several test files here share: running the real clients and checking they succeeded.

use std::process::{Command, Output};

/// The client's stdout, after asserting it exited 0 (its status and stderr in the message otherwise).
#[track_caller]
pub fn succeeded(output: &Output) -> &[u8] {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    &output.stdout
}

pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("running skopeo")
}
