//! Exit codes: what a script calling `20i` can tell apart (documented in `20i --help` and
//! docs/prebuilt-images.md).

use std::fmt;

/// Success.
pub const OK: u8 = 0;
/// Anything not listed below (docker not running, a file that cannot be written, ...).
pub const FAILURE: u8 = 1;
/// The command line or the configuration is invalid (a bad value, an unknown flag).
pub const CONFIG: u8 = 2;
/// The PHP-FPM image could not be obtained: the pull failed and the fallback is off, or the build failed.
pub const IMAGE: u8 = 3;
/// The stack did not start or did not become healthy in WAIT_TIMEOUT.
pub const STACK: u8 = 4;
/// A check `20i start` runs before pulling failed (a port taken, the engine too old, CODE_DIR unreadable by the
/// containers): nothing was pulled or started.
pub const PREFLIGHT: u8 = 5;

/// The table printed under `20i --help`.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  any other failure (for example the Docker daemon is not running)
  2  invalid command line or configuration (a bad value, no compose file at STACK_FILE, a compose
     or module file compose refuses)
  3  the PHP-FPM image could not be obtained (pull failed with the fallback off, or the build failed)
  4  the stack did not start, or was not healthy within WAIT_TIMEOUT
  5  a check before the start failed (a host port taken, the engine too old, CODE_DIR not readable by
     the containers): nothing was pulled or started; `20i doctor` shows every check";

/// An error that decides the exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn config(error: anyhow::Error) -> Exit {
        Exit {
            code: CONFIG,
            message: format!("{error:#}"),
        }
    }

    pub fn image(message: String) -> Exit {
        Exit {
            code: IMAGE,
            message,
        }
    }

    pub fn preflight(message: String) -> Exit {
        Exit {
            code: PREFLIGHT,
            message,
        }
    }

    pub fn stack(message: String) -> Exit {
        Exit {
            code: STACK,
            message,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error: the first [`Exit`] in its chain, else [`FAILURE`].
pub fn code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Exit>())
        .map_or(FAILURE, |exit| exit.code)
}
