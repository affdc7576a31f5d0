//! `cargo xtask release`: build, push, mirror, verify, move tags and write the notes of a release.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Subcommand};
use stack_images::{cosign::Cosign, docker::Docker, registry::RegistryClient};
use xshell::Shell;

use crate::{
    display_path,
    maintain::notes::{self, BaseRecord, ImageRecord, LauncherRecord, ReleaseNotes},
    project_root,
    release::dist::LauncherDist,
    release::execute::{self, Executor, Mode, Outcome},
    release::inputs::ReleaseArgs,
    release::lock::ReleaseLock,
    release::plan::{self, Plan},
    release::split,
    table,
};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReleaseCmd {
    #[command(subcommand)]
    merge: Option<MergeCmd>,
    #[command(flatten)]
    release: Option<ReleaseArgs>,
    /// Print the docker commands the release would run, in order, and run none
    #[arg(long)]
    dry_run: bool,
    /// Build every line for this platform only and write --digests-file (one native runner per platform)
    #[arg(long, value_name = "PLATFORM", requires = "digests_file")]
    platform: Option<String>,
    /// With --platform: push untagged, by digest (needs a docker-container builder); without it, staging tags
    #[arg(long, requires = "platform")]
    push_by_digest: bool,
    /// With --platform: where to write what was pushed, for `release merge`
    #[arg(long, value_name = "FILE")]
    digests_file: Option<PathBuf>,
    /// Finish an interrupted release: keep the pins already pushed (after verifying them) and do the rest
    #[arg(long)]
    resume: bool,
    /// A folder sealed by `cargo xtask dist seal` (its dist-manifest.json): the notes list its launcher archives
    #[arg(long, value_name = "DIR")]
    launcher_dist: Option<LauncherDist>,
    #[command(flatten)]
    dirs: Dirs,
}

/// Where a release writes.
#[derive(Args, Debug, Clone)]
pub struct Dirs {
    /// Where the release notes are written
    #[arg(long, value_name = "DIR", default_value = "release-notes")]
    pub notes_dir: PathBuf,
    /// Scratch space for the bake file, build log and command journal (default: target/xtask/VERSION)
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

impl Dirs {
    pub fn work_dir(&self, plan: &Plan) -> PathBuf {
        let default = || {
            project_root()
                .join("target/xtask")
                .join(plan.version.to_string())
        };
        std::path::absolute(self.work_dir.clone().unwrap_or_else(default)).unwrap_or_default()
    }

    pub fn notes_dir(&self) -> PathBuf {
        project_root().join(&self.notes_dir)
    }
}

#[derive(Subcommand, Debug)]
enum MergeCmd {
    /// Assemble the pins from per-platform builds (--digests-file each), then mirror, verify, tag and write notes
    Merge {
        #[command(flatten)]
        release: ReleaseArgs,
        /// A digests file written by `release --platform`; one per platform
        #[arg(long = "digests-file", value_name = "FILE", required = true)]
        digests_files: Vec<PathBuf>,
        /// Keep the pins already assembled (after verifying them) and do the rest
        #[arg(long)]
        resume: bool,
        /// Print the docker commands the merge would run, in order, and run none
        #[arg(long)]
        dry_run: bool,
        /// A folder sealed by `cargo xtask dist seal` (its dist-manifest.json): the notes list its launcher archives
        #[arg(long, value_name = "DIR")]
        launcher_dist: Option<LauncherDist>,
        #[command(flatten)]
        dirs: Dirs,
    },
}

impl ReleaseCmd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if let Some(MergeCmd::Merge {
            release,
            digests_files,
            resume,
            dry_run,
            launcher_dist,
            dirs,
        }) = self.merge
        {
            let inputs = release.gather(sh)?;
            inputs.require_launcher_version()?;
            let launcher = launcher_record(launcher_dist.as_ref(), &inputs.version)?;
            let plan = plan::compute(&inputs)?;
            let sources = split::merge_sources(&plan, &digests_files)?;
            let plan = plan.assembling(&sources)?;
            let work_dir = dirs.work_dir(&plan);
            if dry_run {
                return print_commands(&plan, &work_dir);
            }
            let outcome = execute(&plan, Mode::Release { resume }, &work_dir)?;
            return finish(&plan, &outcome, &dirs, launcher);
        }
        let release = self
            .release
            .context("a version is required: cargo xtask release vX.Y.Z")?;
        let inputs = release.gather(sh)?;
        // Before preflight touches docker, and for the dry run too: it shows what the release would do.
        inputs.require_launcher_version()?;
        let launcher = launcher_record(self.launcher_dist.as_ref(), &inputs.version)?;
        let plan = plan::compute(&inputs)?;
        let work_dir = self.dirs.work_dir(&plan);
        if let Some(platform) = &self.platform {
            let plan = plan.for_platform(platform, self.push_by_digest)?;
            if self.dry_run {
                return print_commands(&plan, &work_dir);
            }
            let digests_file = self
                .digests_file
                .as_deref()
                .expect("clap requires --digests-file with --platform");
            split::build_platform(&plan, &work_dir, digests_file)?;
            return Ok(());
        }
        if self.dry_run {
            return print_commands(&plan, &work_dir);
        }
        let outcome = execute(
            &plan,
            Mode::Release {
                resume: self.resume,
            },
            &work_dir,
        )?;
        finish(&plan, &outcome, &self.dirs, launcher)
    }
}

/// The notes' launcher section from `--launcher-dist`, checked against the release before anything runs.
fn launcher_record(
    dist: Option<&LauncherDist>,
    version: &stack_images::ReleaseVersion,
) -> anyhow::Result<Option<LauncherRecord>> {
    dist.map(|dist| dist.record(version)).transpose()
}

/// `--dry-run`: the docker commands and registry requests of every step, in order; nothing runs and nothing is
/// written.
pub fn print_commands(plan: &Plan, work_dir: &std::path::Path) -> anyhow::Result<()> {
    for action in execute::dry_run_actions(plan, work_dir) {
        println!("{action}");
    }
    Ok(())
}

/// Writes the notes (with the launcher's archives, when sealed ones were given) and prints the summary.
fn finish(
    plan: &Plan,
    outcome: &Outcome,
    dirs: &Dirs,
    launcher: Option<LauncherRecord>,
) -> anyhow::Result<()> {
    let notes = ReleaseNotes {
        launcher,
        ..release_notes(plan, outcome)
    };
    let (json, page) = notes::write(&notes, &dirs.notes_dir())?;
    print!(
        "{}",
        summary(plan, outcome, &[display_path(&json), display_path(&page)])
    );
    Ok(())
}

/// Runs the plan with a fresh command journal in the work directory.
pub fn execute(plan: &Plan, mode: Mode, work_dir: &std::path::Path) -> anyhow::Result<Outcome> {
    let cosign = Cosign::new().with_policy(stack_images::registry::Policy::from_env()?);
    execute_with(plan, mode, work_dir, cosign)
}

/// The same, signing through `cosign` (`make demo` gives its throwaway key's password to it alone).
pub fn execute_with(
    plan: &Plan,
    mode: Mode,
    work_dir: &std::path::Path,
    cosign: Cosign,
) -> anyhow::Result<Outcome> {
    let _lock = ReleaseLock::acquire(plan)?;
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let journal = work_dir.join("commands.log");
    let _ = std::fs::remove_file(&journal);
    let docker = Docker::new()?.with_journal(&journal);
    let client = RegistryClient::from_env()?;
    Executor::new(plan, &docker, client, mode, work_dir.to_path_buf())
        .with_cosign(cosign)
        .run()
}

/// The notes of a release, from its plan and what the run found.
pub fn release_notes(plan: &Plan, outcome: &Outcome) -> ReleaseNotes {
    let images = plan
        .builds
        .iter()
        .map(|build| ImageRecord {
            php: build.php,
            digest: outcome.pins[&build.php].digest.clone(),
            platforms: outcome.platform_records(build.php),
            end_of_life: build.end_of_life.clone(),
        })
        .collect();
    ReleaseNotes {
        version: plan.version.clone(),
        prerelease: plan.prerelease,
        revision: plan.revision.clone(),
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        created: plan.created.clone(),
        image: plan.image.clone(),
        canonical: plan.canonical.clone(),
        mirrors: plan.mirrors.clone(),
        attestations: plan.attestations,
        sbom_scanner: plan.sbom_scanner.clone(),
        bases: plan
            .builds
            .iter()
            .map(|b| BaseRecord {
                php: b.php,
                reference: b.base.reference.clone(),
                digest: b.base.digest.clone(),
            })
            .collect(),
        images,
        references: outcome.references.clone(),
        skipped: plan.skipped.clone(),
        republished: Vec::new(),
        signing: Some(plan.signing.record()),
        launcher: None,
    }
}

/// What was built, pushed, copied and moved, the time each phase took, and the canonical digests.
pub fn summary(plan: &Plan, outcome: &Outcome, written: &[String]) -> String {
    let lines = |v: &[stack_images::PhpLine]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let total: Duration = outcome.timings.iter().map(|(_, d)| *d).sum();
    let timings: Vec<String> = outcome
        .timings
        .iter()
        .map(|(name, d)| format!("{name} {:.1}s", d.as_secs_f64()))
        .collect();
    let mut rows = vec![
        vec![
            "built".to_owned(),
            if outcome.built.is_empty() {
                "nothing".to_owned()
            } else {
                format!(
                    "PHP {} for {}",
                    lines(&outcome.built),
                    plan.platforms.join(", ")
                )
            },
        ],
        vec![
            "pushed".to_owned(),
            format!("{} pins to {}", outcome.built.len(), plan.canonical),
        ],
    ];
    if !outcome.kept.is_empty() {
        rows.push(vec![
            "kept".to_owned(),
            format!("PHP {} (already pushed, verified)", lines(&outcome.kept)),
        ]);
    }
    rows.push(vec![
        "copied".to_owned(),
        format!(
            "{} pins to {} ({} already there)",
            outcome.copied,
            plan.mirrors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            outcome.already_copied
        ),
    ]);
    rows.push(vec![
        "signed".to_owned(),
        if plan.signing.signs() {
            format!(
                "{} pins ({} signed already), {}; {} signatures copied, {} verified",
                outcome.signed,
                outcome.already_signed,
                plan.signing.describe(),
                outcome.signatures_copied,
                outcome.signatures.len()
            )
        } else {
            plan.signing.describe()
        },
    ]);
    rows.push(vec![
        "moved".to_owned(),
        format!("{} tags", outcome.moved.len()),
    ]);
    rows.push(vec![
        "verified".to_owned(),
        format!("{} references, digest and platforms", outcome.verified),
    ]);
    rows.push(vec!["notes".to_owned(), written.join(", ")]);
    rows.push(vec![
        "took".to_owned(),
        format!("{:.1}s: {}", total.as_secs_f64(), timings.join(", ")),
    ]);
    let mut out = format!("\n{} of {}: done\n", plan.version, plan.image);
    out.push_str(&table::render(&rows, "  "));
    out.push_str(&format!("\n{}/{}\n", plan.canonical, plan.image));
    let digests: Vec<Vec<String>> = outcome
        .references
        .iter()
        .filter(|r| r.registry == plan.canonical)
        .map(|r| {
            let sizes: Vec<String> = r
                .platforms
                .iter()
                .map(|p| format!("{} {}", p.platform, notes::megabytes(p.size)))
                .collect();
            vec![r.tag.to_string(), r.digest.to_string(), sizes.join(", ")]
        })
        .collect();
    out.push_str(&table::render(&digests, "  "));
    out
}
