//! `cargo xtask republish`: rebuild a published release on refreshed bases (an out-of-band security fix), move
//! its tags, and the moving tags that point at it, to the new digests, and record old → new in its notes.

use clap::Args;
use stack_images::{Digest, PhpLine};
use xshell::Shell;

use crate::{
    display_path,
    maintain::notes::{DigestChange, ReleaseNotes, Republish},
    release::execute::Mode,
    release::inputs::ReleaseArgs,
    release::plan,
    release::release::{self, Dirs},
};

#[derive(Args, Debug)]
pub struct RepublishCmd {
    #[command(flatten)]
    release: ReleaseArgs,
    /// Why the images are rebuilt; recorded, dated, in the release notes and on the new indexes
    #[arg(long, value_parser = parse_reason)]
    reason: Reason,
    /// The PHP lines to rebuild, comma-separated (default: every line of the release)
    #[arg(long, value_name = "LIST", value_parser = parse_lines)]
    lines: Option<Lines>,
    /// Print the docker commands the republish would run, in order, and run none
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    dirs: Dirs,
}

impl RepublishCmd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let reason = self.reason.0.as_str();
        let mut inputs = self.release.gather(sh)?;
        // The release is published by definition: the tag rules apply as if it were being cut now.
        let version = inputs.version.clone();
        inputs.published.retain(|v| *v != version);
        let plan = plan::compute(&inputs)?;
        let lines = match &self.lines {
            Some(Lines(lines)) => lines.clone(),
            None => plan.builds.iter().map(|b| b.php).collect(),
        };
        let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let plan = plan.republishing(&lines, reason, &date)?;
        if self.dry_run {
            return release::print_commands(&plan, &self.dirs.work_dir(&plan));
        }

        let notes_dir = self.dirs.notes_dir();
        let notes_path = ReleaseNotes::json_path(&notes_dir, &version);
        let mut notes = ReleaseNotes::load(&notes_path).map_err(|e| {
            e.context(format!(
                "republish updates the notes of a published release: is {version} in {}?",
                display_path(&notes_dir)
            ))
        })?;
        // A signed release stays signed: an unsigned rebuild would leave pins whose signature no longer covers them.
        if let Some(signing) = notes
            .signing
            .as_ref()
            .filter(|s| !matches!(s, stack_images::release_notes::SigningRecord::None))
        {
            anyhow::ensure!(
                plan.signing.signs(),
                "{version} was signed ({}): its rebuilt pins must be signed too; drop --signing none \
                 (sign keyless in the release workflow, or with --signing key:PATH)",
                serde_json::to_value(signing)?["mode"].as_str().unwrap_or("signed")
            );
        }

        let outcome = release::execute(&plan, Mode::Republish, &self.dirs.work_dir(&plan))?;
        let rebuilt = release::release_notes(&plan, &outcome);
        // The rebuilt pins carry this run's signatures (each reference names its own verify command).
        if plan.signing.signs() {
            notes.signing = rebuilt.signing.clone();
        }

        let mut changes = Vec::new();
        for reference in &outcome.references {
            let old = notes
                .references
                .iter()
                .find(|r| r.reference == reference.reference)
                .map(|r| r.digest.clone());
            let old = old.or_else(|| {
                let key = (reference.registry.clone(), reference.php);
                outcome.old_pins.get(&key).cloned()
            });
            match notes
                .references
                .iter_mut()
                .find(|r| r.reference == reference.reference)
            {
                Some(entry) => *entry = reference.clone(),
                None => notes.references.push(reference.clone()),
            }
            if let Some(old) = old.filter(|old: &Digest| *old != reference.digest) {
                changes.push(DigestChange {
                    reference: reference.reference.clone(),
                    old,
                    new: reference.digest.clone(),
                });
            }
        }
        // Only the rebuilt lines' records change; the others keep what the release (or an earlier republish) wrote.
        notes.images.retain(|image| !lines.contains(&image.php));
        notes.images.extend(rebuilt.images);
        notes.images.sort_by_key(|image| image.php);
        notes.bases.retain(|base| !lines.contains(&base.php));
        notes.bases.extend(rebuilt.bases.iter().cloned());
        notes.bases.sort_by_key(|base| base.php);
        notes.republished.push(Republish {
            date: rebuilt.date,
            reason: reason.to_owned(),
            lines: lines.clone(),
            bases: rebuilt.bases,
            changes,
        });
        let (json, page) = crate::maintain::notes::write(&notes, &notes_dir)?;

        print!(
            "{}",
            release::summary(&plan, &outcome, &[display_path(&json), display_path(&page)])
        );
        if !outcome.left_alone.is_empty() {
            println!("\nleft alone (they point at another release):");
            for reference in &outcome.left_alone {
                println!("  {reference}");
            }
        }
        let changed = notes.republished.last().map_or(0, |r| r.changes.len());
        println!(
            "\n{changed} references now serve new digests; the old digests stay pullable by digest"
        );
        Ok(())
    }
}

/// `--lines 8.3,8.4`: PHP lines, each once.
#[derive(Debug, Clone)]
struct Lines(Vec<PhpLine>);

fn parse_lines(text: &str) -> anyhow::Result<Lines> {
    let mut lines: Vec<PhpLine> = Vec::new();
    for part in text.split(',').map(str::trim) {
        let line: PhpLine = part.parse()?;
        anyhow::ensure!(!lines.contains(&line), "PHP {line} is listed twice");
        lines.push(line);
    }
    lines.sort();
    Ok(Lines(lines))
}

/// Why a release is rebuilt: one line, recorded in the notes and as an annotation on the new indexes.
#[derive(Debug, Clone)]
struct Reason(String);

/// The longest reason: it is read in a table of the notes and in `imagetools inspect`.
const REASON_MAX_CHARS: usize = 300;

fn parse_reason(text: &str) -> anyhow::Result<Reason> {
    let reason = text.trim();
    anyhow::ensure!(
        !reason.is_empty(),
        "the reason is empty: say why the release is rebuilt (it goes in the notes)"
    );
    anyhow::ensure!(
        !reason.chars().any(char::is_control),
        "the reason has a line break or another control character: write it on one line"
    );
    let chars = reason.chars().count();
    anyhow::ensure!(
        chars <= REASON_MAX_CHARS,
        "the reason is {chars} characters long: say it in at most {REASON_MAX_CHARS} (it is recorded in the notes \
         and on the images)"
    );
    Ok(Reason(reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: Result<&str, &str>) {
        match (parse_reason(text), expected) {
            (Ok(reason), Ok(want)) => assert_eq!(reason.0, want),
            (Err(error), Err(want)) => assert!(error.to_string().contains(want), "{error:#}"),
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn reasons() {
        check("CVE-2026-1234 in libxml2", Ok("CVE-2026-1234 in libxml2"));
        check("  padded  ", Ok("padded"));
        check("", Err("the reason is empty"));
        check("   ", Err("the reason is empty"));
        check("one\ntwo", Err("write it on one line"));
        check("tab\there", Err("write it on one line"));
        check(&"x".repeat(300), Ok(&"x".repeat(300)));
        check(
            &"x".repeat(301),
            Err("301 characters long: say it in at most 300"),
        );
        check(&"é".repeat(300), Ok(&"é".repeat(300)));
    }
}
