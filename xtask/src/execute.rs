//! Executes a release plan step by step, phase by phase. [`commands`] turns a step into its docker commands;
//! the run and `--dry-run` both call it, so a dry run cannot drift from a run (a test also holds the dry run to
//! the journal of a real one). Each step kind has one handler here that runs those commands and reads what
//! they return.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use stack_images::{
    docker::{Docker, DockerCommand, DockerError, FailureKind, Found},
    tags::{self, TagKind},
    Digest, ImageRef, IndexSummary, Namespace, PhpLine, Repository,
};

use crate::{
    bake, credentials,
    notes::{PlatformRecord, Reference},
    plan::{BakeOutput, Phase, Plan, Step},
};

/// How the executor treats pins that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new release: an existing pin stops it, unless resuming, when existing pins are verified and kept.
    Release { resume: bool },
    /// An out-of-band rebuild: pins are rebuilt and replaced, and moving tags follow only where they pointed at
    /// this release's old digests.
    Republish,
}

/// What a run did, for the summary and the notes.
#[derive(Debug, Default)]
pub struct Outcome {
    pub timings: Vec<(&'static str, Duration)>,
    pub built: Vec<PhpLine>,
    pub kept: Vec<PhpLine>,
    pub copied: usize,
    pub already_copied: usize,
    pub verified: usize,
    pub moved: Vec<ImageRef>,
    pub left_alone: Vec<ImageRef>,
    /// What buildx reported for every line it built (the index, or one platform's image in a split build).
    pub reported: BTreeMap<PhpLine, Digest>,
    /// The canonical index of every line.
    pub pins: BTreeMap<PhpLine, IndexSummary>,
    /// A split build: each line's single-platform image, by digest, as read back from the registry.
    pub platform_images: BTreeMap<PhpLine, ImageRef>,
    /// Compressed size of every line's platform images.
    pub sizes: BTreeMap<(PhpLine, String), u64>,
    /// Republish: the digest each pin had before, per registry and line.
    pub old_pins: BTreeMap<(Namespace, PhpLine), Digest>,
    /// Every reference pushed or moved, with what it now points at.
    pub references: Vec<Reference>,
}

/// The digests commands name: known during a run, placeholders in a dry run (nothing is built yet).
pub enum Names<'a> {
    Run(&'a Outcome),
    Dry,
}

impl Names<'_> {
    fn pin(&self, php: PhpLine) -> String {
        match self {
            Names::Run(outcome) => outcome.pins[&php].digest.to_string(),
            Names::Dry => format!("{{digest of PHP {php}}}"),
        }
    }

    fn reported(&self, php: PhpLine, platform: &str) -> String {
        match self {
            Names::Run(outcome) => outcome.reported[&php].to_string(),
            Names::Dry => format!("{{digest of PHP {php} {platform}}}"),
        }
    }

    /// Every platform image of a line's pin: the index's own list in a run, the plan's platforms in a dry run.
    fn platforms(&self, plan: &Plan, php: PhpLine) -> Vec<(String, String)> {
        match self {
            Names::Run(outcome) => outcome.pins[&php]
                .platforms
                .iter()
                .map(|p| (p.platform.clone(), p.digest.to_string()))
                .collect(),
            Names::Dry => plan
                .platforms
                .iter()
                .map(|p| (p.clone(), format!("{{digest of PHP {php} {p}}}")))
                .collect(),
        }
    }
}

/// `repository@digest` as a command argument. The digest is text because a dry run names digests it cannot
/// know yet; in a run it is always a [`Digest`] printed.
fn at(repository: &Repository, digest: &str) -> String {
    format!("{repository}@{digest}")
}

fn server_version() -> DockerCommand {
    DockerCommand::new(["version", "--format", "{{.Server.Version}}"])
}

fn builder() -> DockerCommand {
    DockerCommand::new(["buildx", "inspect", "--bootstrap"])
}

fn bake_command(plan: &Plan, work_dir: &Path) -> DockerCommand {
    let file = work_dir.join("bake.json").display().to_string();
    let metadata = work_dir.join("bake-metadata.json").display().to_string();
    DockerCommand::new([
        "buildx",
        "bake",
        "--file",
        &file,
        "--metadata-file",
        &metadata,
        "--progress=plain",
        plan.attestations.provenance_flag(),
    ])
}

/// Copies an index to `to` without rebuilding: the digest stays the same.
fn create(to: &ImageRef, source: String) -> DockerCommand {
    DockerCommand::new([
        "buildx".to_owned(),
        "imagetools".into(),
        "create".into(),
        "--progress=plain".into(),
        "--tag".into(),
        to.to_string(),
        source,
    ])
}

/// The docker commands of one step, in the order its handler runs them.
pub fn commands(plan: &Plan, step: &Step, work_dir: &Path, names: &Names) -> Vec<DockerCommand> {
    match step {
        Step::Engine { .. } => vec![server_version(), builder()],
        Step::Login { .. } => Vec::new(),
        Step::Find { pin, .. } | Step::Verify { reference: pin, .. } => {
            vec![DockerCommand::inspect_raw(&pin.to_string())]
        }
        Step::Bake { .. } => vec![bake_command(plan, work_dir)],
        Step::Assemble {
            php, pin, sources, ..
        } => {
            let mut args = vec![
                "buildx".to_owned(),
                "imagetools".into(),
                "create".into(),
                "--progress=plain".into(),
            ];
            for annotation in bake::index_annotations(plan.build(*php)) {
                args.extend(["--annotation".to_owned(), annotation]);
            }
            args.extend(["--tag".to_owned(), pin.to_string()]);
            args.extend(sources.iter().map(ToString::to_string));
            vec![DockerCommand::new(args)]
        }
        Step::ReadBack { php, pin, .. } => {
            let read = match plan.bake_output() {
                Some(BakeOutput::Staging { platform }) => {
                    let staging = bake::staging(plan.build(*php), platform)
                        .expect("staging references are checked when the bake file is written");
                    at(staging.repository(), &names.reported(*php, platform))
                }
                Some(BakeOutput::ByDigest { platform }) => {
                    at(pin.repository(), &names.reported(*php, platform))
                }
                Some(BakeOutput::Pins) | None => pin.to_string(),
            };
            vec![DockerCommand::inspect_raw(&read)]
        }
        Step::Copy { php, from, to, .. } | Step::Tag { php, from, to, .. } => {
            vec![create(to, at(from.repository(), &names.pin(*php)))]
        }
        Step::Size { php, pin, .. } => names
            .platforms(plan, *php)
            .into_iter()
            .map(|(_, digest)| DockerCommand::inspect_raw(&at(pin.repository(), &digest)))
            .collect(),
    }
}

/// Every docker command a run of `plan` makes, in order, with digests not yet known as placeholders.
pub fn dry_run_commands(plan: &Plan, work_dir: &Path) -> Vec<DockerCommand> {
    plan.steps
        .iter()
        .flat_map(|step| commands(plan, step, work_dir, &Names::Dry))
        .collect()
}

/// Docker answers and its builder can build every platform wanted.
fn check_engine(
    docker: &Docker,
    commands: &[DockerCommand],
    wanted: &[String],
) -> anyhow::Result<()> {
    let [version, builder] = commands else {
        unreachable!("an engine step runs two commands")
    };
    let version = docker.output(version).map_err(|e| {
        anyhow::Error::new(e)
            .context("the docker engine does not answer: start it (`make setup` does)")
    })?;
    eprintln!(
        "    docker engine {}",
        String::from_utf8_lossy(&version).trim()
    );
    let builder = String::from_utf8_lossy(&docker.output(builder)?).into_owned();
    let platforms: Vec<&str> = builder
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Platforms:"))
        .flat_map(|l| l.split(','))
        .map(|p| p.trim().trim_end_matches('*'))
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|p| !platforms.contains(p))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the buildx builder cannot build {}: it offers {}; enable emulation (`make setup` registers QEMU) \
             or use a builder with native nodes",
            missing.join(", "),
            platforms.join(", ")
        );
    }
    Ok(())
}

/// Whether docker holds a login for the registry; an error with the command to run when it must and does not.
fn check_login(registry: &Namespace) -> anyhow::Result<bool> {
    let host = registry.host();
    let logged_in = credentials::has_credentials(host)?;
    if !logged_in && !registry.is_loopback() {
        bail!("no credentials for {host}: run `docker login {host}` (or set up a credential helper) and retry");
    }
    Ok(logged_in)
}

/// Runs `run`, retrying transient failures (unreachable, rate limited, a registry's 5xx) twice, after 1 s and
/// 3 s. Callers retry only what is safe to repeat: nothing has been verified or moved on the strength of it.
pub fn with_retries<T>(run: impl Fn() -> Result<T, DockerError>) -> anyhow::Result<T> {
    let delays = [Duration::from_secs(1), Duration::from_secs(3)];
    let mut attempt = 0;
    loop {
        match run() {
            Ok(value) => return Ok(value),
            Err(error)
                if attempt < delays.len()
                    && matches!(
                        error.kind,
                        FailureKind::Unreachable | FailureKind::RateLimited
                    ) =>
            {
                eprintln!(
                    "    {} ({}); retrying in {:?}",
                    error.command,
                    error.kind.describe(),
                    delays[attempt]
                );
                std::thread::sleep(delays[attempt]);
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn read_index(
    docker: &Docker,
    command: &DockerCommand,
    what: &ImageRef,
) -> anyhow::Result<IndexSummary> {
    let bytes = with_retries(|| docker.output(command))?;
    IndexSummary::parse(&bytes).with_context(|| format!("reading the manifest of {what}"))
}

pub struct Executor<'a> {
    plan: &'a Plan,
    docker: &'a Docker,
    mode: Mode,
    work_dir: PathBuf,
    outcome: Outcome,
    /// Whether docker holds a login for each registry host, for the hints of later failures.
    logins: BTreeMap<String, bool>,
    /// Pins that exist already, per registry and line.
    existing: BTreeMap<(Namespace, PhpLine), IndexSummary>,
    /// Pins that hold a single manifest: left by an interrupted push, replaced when resuming.
    incomplete: Vec<ImageRef>,
}

impl<'a> Executor<'a> {
    pub fn new(plan: &'a Plan, docker: &'a Docker, mode: Mode, work_dir: PathBuf) -> Executor<'a> {
        Executor {
            plan,
            docker,
            mode,
            work_dir,
            outcome: Outcome::default(),
            logins: BTreeMap::new(),
            existing: BTreeMap::new(),
            incomplete: Vec::new(),
        }
    }

    /// Runs every phase that has steps; stops at the first failure, before any later step has touched anything.
    pub fn run(mut self) -> anyhow::Result<Outcome> {
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("creating {}", self.work_dir.display()))?;
        for phase in Phase::ALL {
            if self.plan.steps_in(phase).next().is_none() {
                continue;
            }
            eprintln!("==> {}", phase.name());
            let started = Instant::now();
            let result = self
                .phase(phase)
                .with_context(|| format!("{} failed", phase.name()));
            self.outcome.timings.push((phase.name(), started.elapsed()));
            result?;
        }
        self.record_references();
        Ok(self.outcome)
    }

    fn phase(&mut self, phase: Phase) -> anyhow::Result<()> {
        let verified_before = self.outcome.verified;
        for step in self.plan.steps_in(phase) {
            let commands = commands(self.plan, step, &self.work_dir, &Names::Run(&self.outcome));
            self.step(step, &commands)?;
        }
        match phase {
            Phase::Preflight => self.after_preflight()?,
            Phase::VerifyPins | Phase::VerifyTags => eprintln!(
                "    {} references verified",
                self.outcome.verified - verified_before
            ),
            _ => {}
        }
        Ok(())
    }

    fn step(&mut self, step: &Step, commands: &[DockerCommand]) -> anyhow::Result<()> {
        match step {
            Step::Engine { platforms, .. } => check_engine(self.docker, commands, platforms),
            Step::Login { registry, .. } => {
                let logged_in = check_login(registry)?;
                self.logins.insert(registry.host().to_owned(), logged_in);
                Ok(())
            }
            Step::Find { php, pin, .. } => self.find(*php, pin, &commands[0]),
            Step::Bake { lines, output, .. } => self.bake(lines, output, &commands[0]),
            Step::Assemble { php, pin, .. } => self.assemble(*php, pin, &commands[0]),
            Step::ReadBack { php, pin, .. } => self.read_back(*php, pin, &commands[0]),
            Step::Copy { php, to, .. } => self.copy(*php, to, &commands[0]),
            Step::Verify {
                phase,
                php,
                reference,
            } => self.verify(*phase, *php, reference, &commands[0]),
            Step::Size { php, .. } => self.size(*php, commands),
            Step::Tag { php, from, to, .. } => self.tag(*php, from, to, &commands[0]),
        }
    }

    /// Whether the pin exists, and what it holds.
    fn find(
        &mut self,
        php: PhpLine,
        pin: &ImageRef,
        command: &DockerCommand,
    ) -> anyhow::Result<()> {
        let found = with_retries(|| self.docker.find(command));
        match found {
            Ok(Found::Index(index)) => {
                self.existing.insert((pin.namespace().clone(), php), index);
            }
            Ok(Found::Manifest(digest)) => {
                eprintln!(
                    "    {pin} holds a single manifest ({}): an interrupted push",
                    digest.short()
                );
                self.incomplete.push(pin.clone());
            }
            Ok(Found::Absent) => {}
            Err(error) => {
                let host = pin.namespace().host();
                let logged_in = self.logins.get(host).copied().unwrap_or(false);
                let kind = error.downcast_ref::<DockerError>().map(|e| e.kind);
                let hint = match kind {
                    Some(FailureKind::Unauthorized) if logged_in => {
                        format!("{host} refused the credentials docker has: run `docker login {host}` again")
                    }
                    Some(FailureKind::Unauthorized) => {
                        format!("{host} wants credentials: run `docker login {host}`")
                    }
                    Some(FailureKind::Unreachable) => {
                        format!("{host} is unreachable: check the network, or the registry")
                    }
                    Some(FailureKind::RateLimited) => {
                        format!("{host} is rate limiting: wait, then retry")
                    }
                    _ => format!("cannot read {pin}"),
                };
                return Err(error.context(hint));
            }
        }
        Ok(())
    }

    /// What the pins found mean for this mode: a new release stops on any; a republish needs every one.
    fn after_preflight(&mut self) -> anyhow::Result<()> {
        let canonical = &self.plan.canonical;
        match self.mode {
            Mode::Release { resume: false }
                if !self.existing.is_empty() || !self.incomplete.is_empty() =>
            {
                let mut found: Vec<String> = self
                    .existing
                    .iter()
                    .map(|((ns, php), i)| {
                        format!("  {} ({})", self.pin_in(ns, *php), i.digest.short())
                    })
                    .collect();
                found.extend(
                    self.incomplete
                        .iter()
                        .map(|pin| format!("  {pin} (an interrupted push)")),
                );
                bail!(
                    "{} is already (partly) published; nothing was changed. Found:\n{}\n\
                     To finish an interrupted release: add --resume. To rebuild a published one: \
                     `cargo xtask republish {} --reason \"...\"`. Otherwise release a new version.",
                    self.plan.version,
                    found.join("\n"),
                    self.plan.version
                );
            }
            Mode::Republish => {
                for build in &self.plan.builds {
                    if !self.existing.contains_key(&(canonical.clone(), build.php)) {
                        bail!(
                            "{} does not exist: republish rebuilds a published release; release it first",
                            build.pin
                        );
                    }
                }
                self.outcome.old_pins = self
                    .existing
                    .iter()
                    .map(|(k, i)| (k.clone(), i.digest.clone()))
                    .collect();
            }
            Mode::Release { .. } => {}
        }
        eprintln!(
            "    builder can build {}; registries answer",
            self.plan.platforms.join(", ")
        );
        Ok(())
    }

    fn pin_in(&self, namespace: &Namespace, php: PhpLine) -> ImageRef {
        self.plan.build(php).pin.in_namespace(namespace)
    }

    /// On resume, a complete canonical pin that exists already is verified and kept instead of rebuilt.
    fn keep_existing(&mut self, php: PhpLine) -> anyhow::Result<bool> {
        if self.mode != (Mode::Release { resume: true }) {
            return Ok(false);
        }
        let Some(index) = self.existing.get(&(self.plan.canonical.clone(), php)) else {
            return Ok(false);
        };
        let pin = &self.plan.build(php).pin;
        index
            .require_platforms(&self.plan.platforms)
            .with_context(|| format!("{pin} exists but is incomplete: republish it"))?;
        eprintln!("    kept {pin} ({})", index.digest.short());
        self.outcome.kept.push(php);
        self.outcome.pins.insert(php, index.clone());
        Ok(true)
    }

    /// Builds and pushes the lines in one bake (on resume, only the lines not kept).
    fn bake(
        &mut self,
        lines: &[PhpLine],
        output: &BakeOutput,
        command: &DockerCommand,
    ) -> anyhow::Result<()> {
        let mut to_build = Vec::new();
        for php in lines {
            if !self.keep_existing(*php)? {
                to_build.push(*php);
            }
        }
        if to_build.is_empty() {
            return Ok(());
        }
        let bake_path = self.work_dir.join("bake.json");
        let file = serde_json::to_string_pretty(&bake::bake_file(self.plan, &to_build, output)?)?;
        std::fs::write(&bake_path, file)
            .with_context(|| format!("writing {}", bake_path.display()))?;
        let metadata_path = self.work_dir.join("bake-metadata.json");
        let _ = std::fs::remove_file(&metadata_path);
        let log = self.work_dir.join("build.log");
        let names: Vec<String> = to_build.iter().map(ToString::to_string).collect();
        let platforms = match output.platform() {
            Some(platform) => platform.to_owned(),
            None => self.plan.platforms.join(", "),
        };
        eprintln!(
            "    building PHP {} for {platforms} (log: {})",
            names.join(", "),
            log.display()
        );
        with_retries(|| self.docker.run_logged(command, &log)).map_err(|e| match output {
            BakeOutput::ByDigest { .. } => e.context(
                "push-by-digest needs a builder that supports it (docker-container); the engine's own docker \
                 driver does not: drop --push-by-digest to push to staging tags",
            ),
            _ => e,
        })?;

        let metadata: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&metadata_path)
                .with_context(|| format!("reading {}", metadata_path.display()))?,
        )
        .with_context(|| format!("parsing {}", metadata_path.display()))?;
        for php in to_build {
            let target = &self.plan.build(php).target;
            let reported = metadata[target]["containerimage.digest"]
                .as_str()
                .with_context(|| format!("buildx recorded no digest for target {target}"))?;
            let reported = Digest::parse(reported)
                .with_context(|| format!("in {}, target {target}", metadata_path.display()))?;
            self.outcome.reported.insert(php, reported);
        }
        Ok(())
    }

    /// One index for the line from its per-platform images, pushed to the pin with the plan's annotations.
    fn assemble(
        &mut self,
        php: PhpLine,
        pin: &ImageRef,
        command: &DockerCommand,
    ) -> anyhow::Result<()> {
        if self.keep_existing(php)? {
            return Ok(());
        }
        with_retries(|| self.docker.run(command)).with_context(|| format!("assembling {pin}"))?;
        Ok(())
    }

    /// Reads back what was pushed: the registry's bytes decide, and they must be what buildx reported.
    fn read_back(
        &mut self,
        php: PhpLine,
        pin: &ImageRef,
        command: &DockerCommand,
    ) -> anyhow::Result<()> {
        if self.outcome.kept.contains(&php) {
            return Ok(());
        }
        let reported = self.outcome.reported.get(&php).cloned();
        match self.plan.bake_output() {
            Some(BakeOutput::Staging { .. } | BakeOutput::ByDigest { .. }) => {
                let reported = reported.expect("a split build records what it pushed");
                let served = Digest::of(&with_retries(|| self.docker.output(command))?);
                let image = match self.plan.bake_output() {
                    Some(BakeOutput::Staging { platform }) => {
                        bake::staging(self.plan.build(php), platform)?
                    }
                    _ => pin.clone(),
                };
                let image = image.repository().at(&reported);
                ensure!(served == reported, "{image} serves {served}");
                eprintln!("    pushed {image}");
                self.outcome.platform_images.insert(php, image);
            }
            _ => {
                let index = read_index(self.docker, command, pin)?;
                if let Some(reported) = reported {
                    ensure!(
                        index.digest == reported,
                        "{pin} serves {} but buildx reported {reported}",
                        index.digest
                    );
                }
                index
                    .require_platforms(&self.plan.platforms)
                    .with_context(|| format!("reading back {pin}"))?;
                eprintln!("    pushed {pin} ({})", index.digest.short());
                self.outcome.built.push(php);
                self.outcome.pins.insert(php, index);
            }
        }
        Ok(())
    }

    fn pin_digest(&self, php: PhpLine) -> &Digest {
        &self.outcome.pins[&php].digest
    }

    /// Copies a pin to a mirror by digest; an existing mirror pin is kept only if it is the same image.
    fn copy(&mut self, php: PhpLine, to: &ImageRef, command: &DockerCommand) -> anyhow::Result<()> {
        let digest = self.pin_digest(php).clone();
        if let Some(there) = self.existing.get(&(to.namespace().clone(), php)) {
            if there.digest == digest {
                eprintln!("    {to} already has {}", digest.short());
                self.outcome.already_copied += 1;
                return Ok(());
            }
            if self.mode != Mode::Republish {
                bail!(
                    "{to} has {} but the canonical pin has {digest}: a pin is never overwritten; \
                     republish the release to replace it",
                    there.digest
                );
            }
        }
        with_retries(|| self.docker.run(command))?;
        eprintln!("    copied {to}");
        self.outcome.copied += 1;
        Ok(())
    }

    /// The reference serves the digest of its line's canonical pin and lists every platform.
    fn verify(
        &mut self,
        phase: Phase,
        php: PhpLine,
        reference: &ImageRef,
        command: &DockerCommand,
    ) -> anyhow::Result<()> {
        if phase == Phase::VerifyTags && self.outcome.left_alone.contains(reference) {
            return Ok(());
        }
        let expected = self.pin_digest(php).clone();
        let index = read_index(self.docker, command, reference)?;
        if index.digest != expected {
            let state = match phase {
                Phase::VerifyTags => format!(
                    "{} tags were moved before this check; run the release again with --resume to finish it",
                    self.outcome.moved.len()
                ),
                _ => "stopped before moving any tag".to_owned(),
            };
            bail!(
                "{reference} serves {} but PHP {php}'s pin is {expected}: {state}",
                index.digest
            );
        }
        index
            .require_platforms(&self.plan.platforms)
            .with_context(|| format!("verifying {reference}"))?;
        self.outcome.verified += 1;
        Ok(())
    }

    /// Compressed size of every platform image, read once from the canonical registry (mirrors hold the same).
    fn size(&mut self, php: PhpLine, commands: &[DockerCommand]) -> anyhow::Result<()> {
        let platforms = self.outcome.pins[&php].platforms.clone();
        for (platform, command) in platforms.iter().zip(commands) {
            let bytes = with_retries(|| self.docker.output(command))?;
            let size = stack_images::digest::compressed_size(&bytes)
                .with_context(|| format!("reading the size of PHP {php} {}", platform.platform))?;
            self.outcome
                .sizes
                .insert((php, platform.platform.clone()), size);
        }
        Ok(())
    }

    /// Points a moving tag at its verified pin without rebuilding. A republish moves only the tags that pointed
    /// at this release's old images.
    fn tag(
        &mut self,
        php: PhpLine,
        from: &ImageRef,
        to: &ImageRef,
        command: &DockerCommand,
    ) -> anyhow::Result<()> {
        if self.mode == Mode::Republish {
            let old = self.outcome.old_pins.get(&(to.namespace().clone(), php));
            let current = with_retries(|| {
                self.docker
                    .find(&DockerCommand::inspect_raw(&to.to_string()))
            })?;
            let follows = match (&current, old) {
                (Found::Index(current), Some(old)) => current.digest == *old,
                (Found::Absent, _) => to.tag() == Some(&tags::release_tag(&self.plan.version)),
                _ => false,
            };
            if !follows {
                eprintln!(
                    "    left {to} alone: it does not point at {}'s old image",
                    self.plan.version
                );
                self.outcome.left_alone.push(to.clone());
                return Ok(());
            }
        }
        with_retries(|| self.docker.run(command))?;
        eprintln!(
            "    {to} -> {}",
            from.tag().map(|t| t.as_str()).unwrap_or_default()
        );
        self.outcome.moved.push(to.clone());
        Ok(())
    }

    fn record_references(&mut self) {
        let mut references = Vec::new();
        for step in &self.plan.steps {
            let (php, reference, kind) = match step {
                Step::Verify {
                    phase: Phase::VerifyPins,
                    php,
                    reference,
                } => (*php, reference, TagKind::Pin),
                Step::Tag { php, to, kind, .. } if self.outcome.moved.contains(to) => {
                    (*php, to, *kind)
                }
                _ => continue,
            };
            // Every verified or moved reference is tagged: the plan only verifies and moves tags.
            let Some(tag) = reference.tag().cloned() else {
                continue;
            };
            let index = &self.outcome.pins[&php];
            let platforms = index
                .platforms
                .iter()
                .map(|p| PlatformRecord {
                    platform: p.platform.clone(),
                    digest: p.digest.clone(),
                    size: self
                        .outcome
                        .sizes
                        .get(&(php, p.platform.clone()))
                        .copied()
                        .unwrap_or_default(),
                })
                .collect();
            references.push(Reference {
                reference: reference.repository().tagged(&tag),
                registry: reference.namespace().clone(),
                tag,
                kind,
                php,
                digest: index.digest.clone(),
                platforms,
            });
        }
        self.outcome.references = references;
    }
}
