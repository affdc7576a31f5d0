//! `20i pin --notes vX.Y.Z.json`: find the digest of the selected image in a release's notes
//! (`stack_images::ReleaseNotes`, the type the xtask writes) and write `PHP_FPM_PIN=<image>@sha256:…` to the
//! project's `.20i-local`, so every later pull must have that digest.

use std::path::Path;

use anyhow::{anyhow, Context};
use stack_images::{ImageRef, ReleaseNotes};

use crate::{config::Config, exit::Exit};

pub fn run(config: &Config, notes: &Path) -> anyhow::Result<()> {
    // `to_string` first: the configuration's reference becomes an `ImageRef` of its own in time.
    let reference: ImageRef = config
        .prebuilt_reference()
        .to_string()
        .parse()
        .map_err(Exit::config)?;
    // A malformed file is refused here, naming the file and the field, before anything is written.
    let release = ReleaseNotes::load(notes).map_err(Exit::config)?;
    let Some(digest) = release.digest_of(&reference) else {
        return Err(Exit::config(anyhow!(
            "{} (release {}) lists no digest for {reference}: use the notes of release {} \
             (release-notes/{}.json), or set PHP_VERSION and IMAGE_REGISTRY to an image it lists",
            notes.display(),
            release.version,
            config.release,
            config.release
        ))
        .into());
    };
    let local = std::env::current_dir()?.join(".20i-local");
    let existing = match std::fs::read_to_string(&local) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", local.display())),
    };
    let value = reference.with_digest(digest).to_string();
    // Written aside and renamed over: an interrupted pin leaves the old file whole, never half of one.
    let aside = local.with_file_name(".20i-local.pin-tmp");
    std::fs::write(&aside, with_pin(&existing, &value))
        .with_context(|| format!("writing {}", aside.display()))?;
    std::fs::rename(&aside, &local)
        .with_context(|| format!("replacing {} with {}", local.display(), aside.display()))?;
    println!("pinned {value} in {}", local.display());
    Ok(())
}

/// The file with its `PHP_FPM_PIN` line replaced, or one appended.
fn with_pin(existing: &str, value: &str) -> String {
    let line = format!("PHP_FPM_PIN={value}");
    let mut replaced = false;
    let mut lines: Vec<String> = existing
        .lines()
        .map(|l| {
            let bare = l
                .trim_start()
                .strip_prefix("export ")
                .unwrap_or(l.trim_start());
            if bare.starts_with("PHP_FPM_PIN=") {
                replaced = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !replaced {
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_or_appends_the_pin_line() {
        assert_eq!(with_pin("", "r@d"), "PHP_FPM_PIN=r@d\n");
        assert_eq!(with_pin("A=1\n", "r@d"), "A=1\nPHP_FPM_PIN=r@d\n");
        assert_eq!(
            with_pin("A=1\nexport PHP_FPM_PIN=old\nB=2", "r@d"),
            "A=1\nPHP_FPM_PIN=r@d\nB=2\n"
        );
    }
}
