//! One release of a version at a time on this machine: `release`, `release merge` and `republish` hold an
//! exclusive lock on a file named after the canonical repository and the version, so two runs started side by
//! side cannot overwrite each other's pins. The second is refused at once, naming the first. Across machines the
//! release workflow's concurrency group does the same (docs/releasing.md).

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, SeekFrom, Write},
    path::PathBuf,
};

use anyhow::{bail, Context};

use crate::release::plan::Plan;

/// Held for as long as the release runs; the operating system releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct ReleaseLock {
    _file: File,
}

/// Where the locks live: machine-wide, so two checkouts of the project see each other's releases.
fn lock_dir() -> PathBuf {
    std::env::var_os("STACK_RELEASE_LOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("20i-stack-release-locks"))
}

impl ReleaseLock {
    /// Takes the lock of the plan's release, or says who holds it.
    pub fn acquire(plan: &Plan) -> anyhow::Result<ReleaseLock> {
        let repository = plan.canonical.repository(&plan.image);
        let name: String = format!("{repository}-{}", plan.version)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the release lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process"
                } else {
                    holder
                };
                bail!(
                    "another release of {} to {repository} is running on this machine ({holder}); nothing was \
                     changed. Wait for it to finish: it either publishes {} or stops, and then `--resume` \
                     finishes it (lock: {})",
                    plan.version,
                    plan.version,
                    path.display()
                );
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("locking {}", path.display()))
            }
        }
        // Who holds it, for the message of the one refused; the lock, not this text, is what excludes.
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(
            file,
            "pid {}, started {}",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        )?;
        Ok(ReleaseLock { _file: file })
    }
}
