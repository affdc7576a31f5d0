//! The xtask's library: the release (`release/`), the maintainers' other commands (`maintain/`) and the
//! development tools (`dev/`: demo, bench, stand-ins; compiled with the `dev` feature only, as they need
//! `testkit`), under the `cargo xtask` binary that only dispatches (`main.rs`).

#[cfg(feature = "dev")]
pub mod dev;
pub mod maintain;
pub mod progress;
pub mod release;
mod table;

use std::path::{Path, PathBuf};

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
