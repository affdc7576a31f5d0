//! `cargo xtask republish`: rebuild a published release on refreshed bases (an out-of-band security fix), move
//! its tags, and the moving tags that point at it, to the new digests, and record old → new in its notes.

use clap::Args;
use stack_images::{Digest, PhpLine};
use xshell::Shell;

use crate::{
    display_path,
    execute::Mode,
    inputs::ReleaseArgs,
    notes::{DigestChange, ReleaseNotes, Republish},
    plan,
    release::{self, Dirs},
};

#[derive(Args, Debug)]
pub struct RepublishCmd {
    #[command(flatten)]
    release: ReleaseArgs,
    /// Why the images are rebuilt; recorded, dated, in the release notes and on the new indexes
    #[arg(long)]
    reason: String,
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
        let reason = self.reason.trim();
        anyhow::ensure!(
            !reason.is_empty(),
            "--reason is empty: say why the release is rebuilt (it goes in the notes)"
        );
        anyhow::ensure!(
            !reason.chars().any(char::is_control) && reason.chars().count() <= 300,
            "--reason must be one line of at most 300 characters: it is recorded in the notes and on the images"
        );
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

        let outcome = release::execute(&plan, Mode::Republish, &self.dirs.work_dir(&plan))?;
        let rebuilt = release::release_notes(&plan, &outcome);

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
        let (json, page) = crate::notes::write(&notes, &notes_dir)?;

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
