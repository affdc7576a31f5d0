//! Executes a release plan, phase by phase: preflight, build, mirror, verify pins, sizes, move tags, verify
//! tags. `dry_run_commands` lists the same docker commands without running any; a test holds the two together.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use stack_images::{
    docker::{Docker, DockerCommand, DockerError, FailureKind, Found},
    tags::TagKind,
    Digest, IndexSummary, PhpLine,
};

use crate::{
    bake, credentials,
    notes::{PlatformRecord, Reference},
    plan::{Phase, Plan, Step},
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
    pub moved: Vec<String>,
    pub left_alone: Vec<String>,
    /// The canonical index of every line.
    pub pins: BTreeMap<PhpLine, IndexSummary>,
    /// Compressed size of every line's platform images.
    pub sizes: BTreeMap<(PhpLine, String), u64>,
    /// Republish: the digest each pin had before, per registry and line.
    pub old_pins: BTreeMap<(String, PhpLine), Digest>,
    /// Every reference pushed or moved, with what it now points at.
    pub references: Vec<Reference>,
}

pub struct Executor<'a> {
    plan: &'a Plan,
    docker: &'a Docker,
    mode: Mode,
    work_dir: PathBuf,
    outcome: Outcome,
    /// Pins that hold a single manifest: left by an interrupted push, replaced when resuming.
    incomplete: Vec<(String, PhpLine)>,
    /// A merge: the per-platform images of every line, built elsewhere, to assemble into the pins.
    assemble: Option<BTreeMap<PhpLine, Vec<String>>>,
}

/// `ns/image:tag` → `ns/image`.
pub fn repository(reference: &str) -> &str {
    let slash = reference.rfind('/').unwrap_or(0);
    match reference[slash..].rfind(':') {
        Some(colon) => &reference[..slash + colon],
        None => reference,
    }
}

/// `ns/image:tag` → `ns`: the registry namespace a reference lives in.
fn namespace_of(reference: &str) -> &str {
    repository(reference)
        .rsplit_once('/')
        .map(|(ns, _)| ns)
        .unwrap_or_default()
}

fn tag_of(reference: &str) -> &str {
    &reference[repository(reference).len() + 1..]
}

fn server_version() -> DockerCommand {
    DockerCommand::new(["version", "--format", "{{.Server.Version}}"])
}

fn builder() -> DockerCommand {
    DockerCommand::new(["buildx", "inspect", "--bootstrap"])
}

pub fn bake(plan: &Plan, work_dir: &Path) -> DockerCommand {
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
fn create(to: &str, source: &str) -> DockerCommand {
    DockerCommand::new([
        "buildx",
        "imagetools",
        "create",
        "--progress=plain",
        "--tag",
        to,
        source,
    ])
}

/// Docker answers and its builder can build every platform wanted.
pub fn check_engine(docker: &Docker, wanted: &[String]) -> anyhow::Result<()> {
    let version = docker.output(&server_version()).map_err(|e| {
        anyhow::Error::new(e)
            .context("the docker engine does not answer: start it (`make setup` does)")
    })?;
    eprintln!(
        "    docker engine {}",
        String::from_utf8_lossy(&version).trim()
    );
    let builder = String::from_utf8_lossy(&docker.output(&builder())?).into_owned();
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

/// Whether docker holds a login for `host`; an error with the command to run when it must and does not.
pub fn check_login(host: &str) -> anyhow::Result<bool> {
    let logged_in = credentials::has_credentials(host)?;
    if !logged_in && !credentials::is_loopback(host) {
        bail!("no credentials for {host}: run `docker login {host}` (or set up a credential helper) and retry");
    }
    Ok(logged_in)
}

/// Runs `run`, retrying transient failures (unreachable, rate limited, a registry's 5xx) twice, after 1 s and
/// 3 s. Callers retry only what is safe to repeat: nothing has been verified or moved on the strength of it.
pub fn with_retries(run: impl Fn() -> Result<(), DockerError>) -> anyhow::Result<()> {
    let delays = [Duration::from_secs(1), Duration::from_secs(3)];
    let mut attempt = 0;
    loop {
        match run() {
            Ok(()) => return Ok(()),
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

/// The docker commands a run of `plan` makes, phase by phase, with digests not yet known written as
/// placeholders. A test holds this to the journal of a real run.
pub fn dry_run_commands(plan: &Plan, work_dir: &Path) -> Vec<DockerCommand> {
    let by_digest = |reference: &str, php: PhpLine| {
        format!("{}@{{digest of PHP {php}}}", repository(reference))
    };
    let step_command = |step: &Step| match step {
        Step::Copy { php, from, to, .. } | Step::Tag { php, from, to, .. } => {
            create(to, &by_digest(from, *php))
        }
        Step::Build { reference, .. } | Step::Verify { reference, .. } => {
            DockerCommand::inspect_raw(reference)
        }
    };
    // Preflight: the engine, the builder, and whether any pin exists yet.
    let mut commands = vec![server_version(), builder()];
    for namespace in std::iter::once(&plan.canonical).chain(&plan.mirrors) {
        for build in &plan.builds {
            commands.push(DockerCommand::inspect_raw(&format!(
                "{namespace}/{}:{}",
                plan.image,
                tag_of(&build.push)
            )));
        }
    }
    // Build: one bake, then each pushed pin read back.
    commands.push(bake(plan, work_dir));
    commands.extend(
        plan.builds
            .iter()
            .map(|b| DockerCommand::inspect_raw(&b.push)),
    );
    commands.extend(plan.steps_in(Phase::Mirror).map(step_command));
    commands.extend(plan.steps_in(Phase::VerifyPins).map(step_command));
    // Sizes: each platform manifest of each canonical pin.
    for build in &plan.builds {
        for platform in &build.platforms {
            let manifest = format!(
                "{}@{{digest of PHP {} {platform}}}",
                repository(&build.push),
                build.php
            );
            commands.push(DockerCommand::inspect_raw(&manifest));
        }
    }
    commands.extend(plan.steps_in(Phase::MoveTags).map(step_command));
    commands.extend(plan.steps_in(Phase::VerifyTags).map(step_command));
    commands
}

impl<'a> Executor<'a> {
    pub fn new(plan: &'a Plan, docker: &'a Docker, mode: Mode, work_dir: PathBuf) -> Executor<'a> {
        Executor {
            plan,
            docker,
            mode,
            work_dir,
            outcome: Outcome::default(),
            incomplete: Vec::new(),
            assemble: None,
        }
    }

    /// Assembles each line's pin from images built per platform (`release merge`) instead of building.
    pub fn assembling(mut self, sources: BTreeMap<PhpLine, Vec<String>>) -> Executor<'a> {
        self.assemble = Some(sources);
        self
    }

    /// One index per line from its per-platform images, pushed to the pin with the plan's index annotations.
    fn assemble_pins(
        &mut self,
        lines: &[PhpLine],
        sources: &BTreeMap<PhpLine, Vec<String>>,
    ) -> anyhow::Result<()> {
        for php in lines {
            let build = self
                .plan
                .builds
                .iter()
                .find(|b| b.php == *php)
                .expect("every line has a build");
            let images = sources
                .get(php)
                .with_context(|| format!("no per-platform images of PHP {php} to merge"))?;
            let mut args = vec![
                "buildx".to_owned(),
                "imagetools".into(),
                "create".into(),
                "--progress=plain".into(),
            ];
            for annotation in bake::index_annotations(build) {
                args.extend(["--annotation".to_owned(), annotation]);
            }
            args.extend(["--tag".to_owned(), build.push.clone()]);
            args.extend(images.iter().cloned());
            let command = DockerCommand::new(args);
            with_retries(|| self.docker.run(&command))?;
            let index = self.docker.inspect_index(&build.push)?;
            index
                .require_platforms(&self.plan.platforms)
                .with_context(|| format!("merging {}", build.push))?;
            eprintln!("    assembled {} ({})", build.push, index.digest.short());
            self.outcome.built.push(*php);
            self.outcome.pins.insert(*php, index);
        }
        Ok(())
    }

    /// Runs every phase; stops at the first failure, before any later phase has touched anything.
    pub fn run(mut self) -> anyhow::Result<Outcome> {
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("creating {}", self.work_dir.display()))?;
        let existing = self.timed("preflight", |x| x.preflight())?;
        self.timed("build", |x| x.build(&existing))?;
        self.timed("mirror", |x| x.mirror(&existing))?;
        self.timed("verify pins", |x| x.verify(Phase::VerifyPins))?;
        self.timed("sizes", |x| x.sizes())?;
        self.timed("move tags", |x| x.move_tags())?;
        self.timed("verify tags", |x| x.verify(Phase::VerifyTags))?;
        self.record_references();
        Ok(self.outcome)
    }

    fn timed<T>(
        &mut self,
        name: &'static str,
        phase: impl FnOnce(&mut Self) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        eprintln!("==> {name}");
        let started = Instant::now();
        let result = phase(self).with_context(|| format!("{name} failed"));
        self.outcome.timings.push((name, started.elapsed()));
        result
    }

    fn namespaces(&self) -> impl Iterator<Item = &'a String> {
        std::iter::once(&self.plan.canonical).chain(&self.plan.mirrors)
    }

    fn pin_in(&self, namespace: &str, php: PhpLine) -> String {
        let build = self
            .plan
            .builds
            .iter()
            .find(|b| b.php == php)
            .expect("every line has a build");
        format!("{namespace}/{}:{}", self.plan.image, tag_of(&build.push))
    }

    /// Checks docker, the builder and every registry, and finds the pins that already exist.
    fn preflight(&mut self) -> anyhow::Result<BTreeMap<(String, PhpLine), IndexSummary>> {
        check_engine(self.docker, &self.plan.platforms)?;

        let mut existing = BTreeMap::new();
        for namespace in self.namespaces() {
            let host = credentials::host(namespace);
            let logged_in = check_login(host)?;
            for build in &self.plan.builds {
                let pin = self.pin_in(namespace, build.php);
                match self.docker.find(&pin) {
                    Ok(Found::Index(index)) => {
                        existing.insert((namespace.clone(), build.php), index);
                    }
                    Ok(Found::Manifest(digest)) => {
                        eprintln!(
                            "    {pin} holds a single manifest ({}): an interrupted push",
                            digest.short()
                        );
                        self.incomplete.push((namespace.clone(), build.php));
                    }
                    Ok(Found::Absent) => {}
                    Err(error) => {
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
            }
        }
        match self.mode {
            Mode::Release { resume: false }
                if !existing.is_empty() || !self.incomplete.is_empty() =>
            {
                let mut found: Vec<String> = existing
                    .iter()
                    .map(|((ns, php), i)| {
                        format!("  {} ({})", self.pin_in(ns, *php), i.digest.short())
                    })
                    .collect();
                found.extend(
                    self.incomplete.iter().map(|(ns, php)| {
                        format!("  {} (an interrupted push)", self.pin_in(ns, *php))
                    }),
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
                    let key = (self.plan.canonical.clone(), build.php);
                    if !existing.contains_key(&key) {
                        bail!(
                            "{} does not exist: republish rebuilds a published release; release it first",
                            self.pin_in(&self.plan.canonical, build.php)
                        );
                    }
                }
                self.outcome.old_pins = existing
                    .iter()
                    .map(|(k, i)| (k.clone(), i.digest.clone()))
                    .collect();
            }
            _ => {}
        }
        eprintln!(
            "    builder can build {}; registries answer",
            self.plan.platforms.join(", ")
        );
        Ok(existing)
    }

    /// Builds and pushes the canonical pins in one bake; on resume, pins already there are verified and kept.
    fn build(
        &mut self,
        existing: &BTreeMap<(String, PhpLine), IndexSummary>,
    ) -> anyhow::Result<()> {
        let mut to_build = Vec::new();
        for build in &self.plan.builds {
            let there = existing.get(&(self.plan.canonical.clone(), build.php));
            match (self.mode, there) {
                (Mode::Release { resume: true }, Some(index)) => {
                    index
                        .require_platforms(&self.plan.platforms)
                        .with_context(|| {
                            format!("{} exists but is incomplete: republish it", build.push)
                        })?;
                    eprintln!("    kept {} ({})", build.push, index.digest.short());
                    self.outcome.kept.push(build.php);
                    self.outcome.pins.insert(build.php, index.clone());
                }
                _ => to_build.push(build.php),
            }
        }
        if to_build.is_empty() {
            return Ok(());
        }
        if let Some(sources) = self.assemble.clone() {
            return self.assemble_pins(&to_build, &sources);
        }
        let bake_path = self.work_dir.join("bake.json");
        let file = serde_json::to_string_pretty(&bake::bake_file(
            self.plan,
            &to_build,
            bake::Output::Pin,
        ))?;
        std::fs::write(&bake_path, file)
            .with_context(|| format!("writing {}", bake_path.display()))?;
        let metadata_path = self.work_dir.join("bake-metadata.json");
        let _ = std::fs::remove_file(&metadata_path);
        let log = self.work_dir.join("build.log");
        let lines: Vec<String> = to_build.iter().map(ToString::to_string).collect();
        eprintln!(
            "    building PHP {} for {} (log: {})",
            lines.join(", "),
            self.plan.platforms.join(", "),
            log.display()
        );
        with_retries(|| {
            self.docker
                .run_logged(&bake(self.plan, &self.work_dir), &log)
        })?;

        let metadata: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&metadata_path)
                .with_context(|| format!("reading {}", metadata_path.display()))?,
        )?;
        for php in to_build {
            let build = self
                .plan
                .builds
                .iter()
                .find(|b| b.php == php)
                .expect("built lines are planned");
            let reported = metadata[&build.target]["containerimage.digest"]
                .as_str()
                .with_context(|| {
                    format!("buildx recorded no digest for target {}", build.target)
                })?;
            let reported = Digest::parse(reported)?;
            // The registry's bytes decide: what buildx reports must be what is served.
            let index = self.docker.inspect_index(&build.push)?;
            if index.digest != reported {
                bail!(
                    "{} serves {} but buildx reported {}",
                    build.push,
                    index.digest,
                    reported
                );
            }
            eprintln!("    pushed {} ({})", build.push, index.digest.short());
            self.outcome.built.push(php);
            self.outcome.pins.insert(php, index);
        }
        Ok(())
    }

    fn pin_digest(&self, php: PhpLine) -> &Digest {
        &self.outcome.pins[&php].digest
    }

    /// Copies every pin to every mirror by digest; an existing mirror pin is kept only if it is the same image.
    fn mirror(
        &mut self,
        existing: &BTreeMap<(String, PhpLine), IndexSummary>,
    ) -> anyhow::Result<()> {
        for step in self.plan.steps_in(Phase::Mirror) {
            let Step::Copy { php, from, to, .. } = step else {
                continue;
            };
            let digest = self.pin_digest(*php).clone();
            let mirror = namespace_of(to);
            if let Some(there) = existing.get(&(mirror.to_owned(), *php)) {
                if there.digest == digest {
                    eprintln!("    {to} already has {}", digest.short());
                    self.outcome.already_copied += 1;
                    continue;
                }
                if self.mode != Mode::Republish {
                    bail!(
                        "{to} has {} but the canonical pin has {digest}: a pin is never overwritten; \
                         republish the release to replace it",
                        there.digest
                    );
                }
            }
            let source = format!("{}@{digest}", repository(from));
            with_retries(|| self.docker.run(&create(to, &source)))?;
            eprintln!("    copied {to}");
            self.outcome.copied += 1;
        }
        Ok(())
    }

    /// Every reference of the phase serves the digest of its line's canonical pin and lists every platform.
    fn verify(&mut self, phase: Phase) -> anyhow::Result<()> {
        let before = self.outcome.verified;
        for step in self.plan.steps_in(phase) {
            let Step::Verify { php, reference, .. } = step else {
                continue;
            };
            if phase == Phase::VerifyTags && self.outcome.left_alone.contains(reference) {
                continue;
            }
            let expected = self.pin_digest(*php).clone();
            let index = self.docker.inspect_index(reference)?;
            if index.digest != expected {
                bail!("{reference} serves {} but PHP {php}'s pin is {expected}: stopped before moving any tag", index.digest);
            }
            index
                .require_platforms(&self.plan.platforms)
                .with_context(|| format!("verifying {reference}"))?;
            self.outcome.verified += 1;
        }
        eprintln!("    {} references verified", self.outcome.verified - before);
        Ok(())
    }

    /// Compressed size of every platform image, read once from the canonical registry (mirrors hold the same).
    fn sizes(&mut self) -> anyhow::Result<()> {
        for build in &self.plan.builds {
            let index = self.outcome.pins[&build.php].clone();
            for platform in &index.platforms {
                let size = self
                    .docker
                    .image_size(repository(&build.push), &platform.digest)?;
                self.outcome
                    .sizes
                    .insert((build.php, platform.platform.clone()), size);
            }
        }
        Ok(())
    }

    /// Points every moving tag at its verified pin, registry by registry, without rebuilding.
    fn move_tags(&mut self) -> anyhow::Result<()> {
        for step in self.plan.steps_in(Phase::MoveTags) {
            let Step::Tag { php, from, to, .. } = step else {
                continue;
            };
            let digest = self.pin_digest(*php).clone();
            if self.mode == Mode::Republish {
                let namespace = namespace_of(to).to_owned();
                let old = self.outcome.old_pins.get(&(namespace, *php));
                let current = self.docker.find(to)?;
                let follows = match (&current, old) {
                    (Found::Index(current), Some(old)) => current.digest == *old,
                    (Found::Absent, _) => tag_of(to) == self.plan.version.to_string(),
                    _ => false,
                };
                if !follows {
                    eprintln!(
                        "    left {to} alone: it does not point at {}'s old image",
                        self.plan.version
                    );
                    self.outcome.left_alone.push(to.clone());
                    continue;
                }
            }
            let source = format!("{}@{digest}", repository(from));
            with_retries(|| self.docker.run(&create(to, &source)))?;
            eprintln!("    {to} -> {}", tag_of(from));
            self.outcome.moved.push(to.clone());
        }
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
            let registry = namespace_of(reference).to_owned();
            references.push(Reference {
                reference: reference.clone(),
                registry,
                tag: tag_of(reference).to_owned(),
                kind,
                php,
                digest: index.digest.clone(),
                platforms,
            });
        }
        self.outcome.references = references;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_tags() {
        assert_eq!(
            repository("127.0.0.1:5000/ns/php-fpm:v2.0.0-php-8.5"),
            "127.0.0.1:5000/ns/php-fpm"
        );
        assert_eq!(
            tag_of("127.0.0.1:5000/ns/php-fpm:v2.0.0-php-8.5"),
            "v2.0.0-php-8.5"
        );
        assert_eq!(
            repository("ghcr.io/20i-stack/php-fpm:latest"),
            "ghcr.io/20i-stack/php-fpm"
        );
        assert_eq!(
            repository("127.0.0.1:5000/ns/php-fpm"),
            "127.0.0.1:5000/ns/php-fpm"
        );
    }
}
