//! The release plan: every image, tag, copy and check of a release as plain data, computed without side effects,
//! and the `plan` command that prints it.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::DateTime;
use clap::Args;
use serde::Serialize;
use stack_images::release_notes::{REPUBLISH_DATE, REPUBLISH_REASON};
use stack_images::{
    digest::Predicate,
    matrix::Attestations,
    tags::{self, Skipped, TagKind},
    Base, CommitId, ImageRef, Namespace, PhpLine, ReleaseVersion, RepoName, Tag,
};
use xshell::Shell;

use crate::{
    release::inputs::{LauncherVersion, PlanInputs, PublishedFrom, ReleaseArgs},
    release::signing::Signing,
    table,
};

/// A release, fully decided: what `release` executes, `plan` prints, and tests assert on.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub version: ReleaseVersion,
    pub prerelease: bool,
    pub revision: CommitId,
    /// The release the 20i launcher of this checkout pulls; `release` refuses a mismatch.
    pub launcher: LauncherVersion,
    /// The commit time in RFC 3339: the images' `created`, so a rebuild of the same commit says the same.
    pub created: String,
    pub source_date_epoch: i64,
    pub image: RepoName,
    pub canonical: Namespace,
    pub mirrors: Vec<Namespace>,
    pub platforms: Vec<String>,
    pub attestations: Attestations,
    /// The BuildKit scanner that makes each platform image's SBOM; `None`: no SBOM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom_scanner: Option<ImageRef>,
    /// How every pin is signed before a moving tag may point at it.
    pub signing: Signing,
    /// The releases the tag rules were applied against, oldest first.
    pub published: Vec<ReleaseVersion>,
    pub bases: BasesUsed,
    pub builds: Vec<Build>,
    /// In execution order: pins are built, copied and verified before any moving tag is touched.
    pub steps: Vec<Step>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BasesUsed {
    pub lock: String,
    pub source: String,
    pub read_on: String,
}

/// One image: a PHP line built for every platform and pushed to the canonical registry under its pin.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    pub php: PhpLine,
    /// The target name in the generated bake file.
    pub target: String,
    pub platforms: Vec<String>,
    pub context: String,
    pub dockerfile: String,
    pub base: Base,
    pub build_args: BTreeMap<String, String>,
    /// OCI labels of the image config.
    pub labels: BTreeMap<String, String>,
    /// OCI annotations of the index and of each platform's manifest.
    pub annotations: BTreeMap<String, String>,
    /// The canonical pin this build is pushed to.
    pub pin: ImageRef,
    /// Where the build's layers are cached between releases (`<image>-cache:php-M.m` in the canonical
    /// namespace), read before and written after the build; `None` with `--no-build-cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<ImageRef>,
    /// Set when the line's upstream base is end of life, in the words of the matrix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_life: Option<String>,
}

/// Phases of a release, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Check the engine, the builder and the logins, and find the pins that exist already.
    Preflight,
    /// Build every line and push its pin to the canonical registry (or assemble it from per-platform images).
    Build,
    /// Copy every pin to every mirror, digest unchanged.
    Mirror,
    /// Check every pin in every registry: digest equal to the canonical one, every platform listed.
    VerifyPins,
    /// Sign every canonical pin's index digest with cosign.
    Sign,
    /// Copy every pin's signature to every mirror.
    MirrorSignatures,
    /// Verify every pin's signature in every registry.
    VerifySignatures,
    /// Read the compressed size of every platform image.
    Sizes,
    /// Point the moving tags at verified pins, registry by registry.
    MoveTags,
    /// Check every moved tag the same way.
    VerifyTags,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::Preflight,
        Phase::Build,
        Phase::Mirror,
        Phase::VerifyPins,
        Phase::Sign,
        Phase::MirrorSignatures,
        Phase::VerifySignatures,
        Phase::Sizes,
        Phase::MoveTags,
        Phase::VerifyTags,
    ];

    /// As the release prints it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Build => "build",
            Phase::Mirror => "mirror",
            Phase::VerifyPins => "verify pins",
            Phase::Sign => "sign",
            Phase::MirrorSignatures => "mirror signatures",
            Phase::VerifySignatures => "verify signatures",
            Phase::Sizes => "sizes",
            Phase::MoveTags => "move tags",
            Phase::VerifyTags => "verify tags",
        }
    }
}

/// Where a bake pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "to", rename_all = "kebab-case")]
pub enum BakeOutput {
    /// Every platform, pushed to each line's canonical pin.
    Pins,
    /// One platform, pushed to `<canonical repository>-staging:<pin>-<os>-<arch>` for a later merge: what the
    /// engine's own `docker` driver can do.
    Staging { platform: String },
    /// One platform, pushed untagged by digest to the canonical repository (needs a `docker-container` builder).
    ByDigest { platform: String },
}

impl BakeOutput {
    /// The one platform a split build makes.
    pub fn platform(&self) -> Option<&str> {
        match self {
            BakeOutput::Pins => None,
            BakeOutput::Staging { platform } | BakeOutput::ByDigest { platform } => Some(platform),
        }
    }
}

/// One action of a release, each variant with a named payload holding what it needs (its phase, lines and
/// references, decided here); `execute::actions` turns a step into what it does, for the run and `--dry-run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Step {
    Engine(EngineStep),
    Login(LoginStep),
    Find(FindStep),
    Seed(SeedStep),
    Bake(BakeStep),
    Assemble(AssembleStep),
    ReadBack(ReadBackStep),
    Copy(CopyStep),
    Scanner(ScannerStep),
    Verify(VerifyStep),
    VerifyAttestations(VerifyAttestationsStep),
    Size(SizeStep),
    SigningReady(SigningReadyStep),
    Sign(SignStep),
    CopySignature(CopySignatureStep),
    VerifySignature(VerifySignatureStep),
    Tag(TagStep),
}

/// The engine answers and its builder can build every platform wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineStep {
    pub phase: Phase,
    pub platforms: Vec<String>,
}

/// Docker holds a login for the registry (read from its config and credential helpers; no command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginStep {
    pub phase: Phase,
    pub registry: Namespace,
}

/// Whether a pin exists already, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub pin: ImageRef,
}

/// While the bake runs, copy the blobs of the line's base image for `platforms` into `to`'s repository, so
/// that the push and the mirror copy after the build find them there. Best effort: a seed that fails costs
/// only the time it was meant to save, and the release goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub base: ImageRef,
    pub platforms: Vec<String>,
    pub to: ImageRef,
}

/// Build `lines` in one bake and push them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BakeStep {
    pub phase: Phase,
    pub lines: Vec<PhpLine>,
    pub output: BakeOutput,
}

/// Make one line's pin an index of per-platform images built elsewhere (`release merge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssembleStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub pin: ImageRef,
    pub sources: Vec<ImageRef>,
}

/// Read back what a bake or an assembly pushed: the registry's bytes must be what buildx reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadBackStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub pin: ImageRef,
}

/// Copy the index of the pin `from` to `to` without rebuilding, so both have one digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub from: ImageRef,
    pub to: ImageRef,
}

/// The SBOM scanner can be read from its registry, where BuildKit pulls it: else the release would lose
/// its SBOMs, so it stops before building.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScannerStep {
    pub phase: Phase,
    pub image: ImageRef,
}

/// Check that `reference` has the digest of the canonical pin of `php` and lists every platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub reference: ImageRef,
}

/// Check that, in `reference`'s registry, every platform image of the pin has its attestation manifest and
/// that it holds what the plan attests (SBOM, provenance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyAttestationsStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub reference: ImageRef,
}

/// The compressed size of every platform image of the pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SizeStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub pin: ImageRef,
}

/// The release can sign: the private key reads with its password and is the public key's pair, or the
/// workflow's OIDC token is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SigningReadyStep {
    pub phase: Phase,
}

/// Sign the canonical pin's index digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub pin: ImageRef,
}

/// Copy the signature of the pin `from` to the same digest in `to`'s repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopySignatureStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub from: ImageRef,
    pub to: ImageRef,
}

/// The signature of `reference`'s pin digest verifies in its registry, and is the canonical one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifySignatureStep {
    pub phase: Phase,
    pub php: PhpLine,
    pub reference: ImageRef,
}

/// Point the moving tag `to` at the pin `from` (same registry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagStep {
    pub phase: Phase,
    pub kind: TagKind,
    pub php: PhpLine,
    pub from: ImageRef,
    pub to: ImageRef,
}

impl Step {
    /// A step of the build: what it does depends on what the steps before it built.
    pub fn builds(&self) -> bool {
        matches!(
            self,
            Step::Seed(_) | Step::Bake(_) | Step::Assemble(_) | Step::ReadBack(_)
        )
    }

    pub fn phase(&self) -> Phase {
        match self {
            Step::Engine(EngineStep { phase, .. })
            | Step::Login(LoginStep { phase, .. })
            | Step::Find(FindStep { phase, .. })
            | Step::Seed(SeedStep { phase, .. })
            | Step::Bake(BakeStep { phase, .. })
            | Step::Assemble(AssembleStep { phase, .. })
            | Step::ReadBack(ReadBackStep { phase, .. })
            | Step::Copy(CopyStep { phase, .. })
            | Step::Scanner(ScannerStep { phase, .. })
            | Step::Verify(VerifyStep { phase, .. })
            | Step::VerifyAttestations(VerifyAttestationsStep { phase, .. })
            | Step::Size(SizeStep { phase, .. })
            | Step::SigningReady(SigningReadyStep { phase })
            | Step::Sign(SignStep { phase, .. })
            | Step::CopySignature(CopySignatureStep { phase, .. })
            | Step::VerifySignature(VerifySignatureStep { phase, .. })
            | Step::Tag(TagStep { phase, .. }) => *phase,
        }
    }

    /// The registry host a step talks to, fixed by the plan (the executor bounds its requests per host); `None`
    /// for the steps that talk to no registry themselves.
    pub fn registry(&self) -> Option<&str> {
        let reference = match self {
            Step::Login(LoginStep { registry, .. }) => return Some(registry.host()),
            Step::Find(FindStep { pin, .. })
            | Step::ReadBack(ReadBackStep { pin, .. })
            | Step::Size(SizeStep { pin, .. })
            | Step::Assemble(AssembleStep { pin, .. }) => pin,
            Step::Copy(CopyStep { to, .. })
            | Step::Tag(TagStep { to, .. })
            | Step::CopySignature(CopySignatureStep { to, .. })
            | Step::Seed(SeedStep { to, .. }) => to,
            Step::Sign(SignStep { pin, .. }) => pin,
            Step::Verify(VerifyStep { reference, .. })
            | Step::VerifyAttestations(VerifyAttestationsStep { reference, .. })
            | Step::VerifySignature(VerifySignatureStep { reference, .. }) => reference,
            Step::Scanner(ScannerStep { image, .. }) => image,
            Step::Engine(EngineStep { .. })
            | Step::Bake(BakeStep { .. })
            | Step::SigningReady(SigningReadyStep { .. }) => return None,
        };
        Some(reference.namespace().host())
    }
}

/// The build cache of a line: one per line, across releases, so a release reuses what the previous one built.
fn cache_ref(canonical: &Namespace, image: &RepoName, php: PhpLine) -> ImageRef {
    let name: RepoName = format!("{image}-cache")
        .parse()
        .expect("a repository name with `-cache` appended is one");
    canonical.repository(&name).tagged(&tags::line_tag(php))
}

/// The signing phases: every canonical pin signed, its signature copied to every mirror, then verified in every
/// registry, all before the tags move.
fn signing_steps(
    steps: &mut Vec<Step>,
    builds: &[Build],
    canonical: &Namespace,
    mirrors: &[Namespace],
    pin_in: impl Fn(&Namespace, PhpLine) -> ImageRef,
) {
    for build in builds {
        steps.push(Step::Sign(SignStep {
            phase: Phase::Sign,
            php: build.php,
            pin: build.pin.clone(),
        }));
    }
    for mirror in mirrors {
        for build in builds {
            steps.push(Step::CopySignature(CopySignatureStep {
                phase: Phase::MirrorSignatures,
                php: build.php,
                from: build.pin.clone(),
                to: pin_in(mirror, build.php),
            }));
        }
    }
    for namespace in std::iter::once(canonical).chain(mirrors) {
        for build in builds {
            steps.push(Step::VerifySignature(VerifySignatureStep {
                phase: Phase::VerifySignatures,
                php: build.php,
                reference: pin_in(namespace, build.php),
            }));
        }
    }
}

/// Computes the plan: no docker, no network, no clock, no file system.
pub fn compute(inputs: &PlanInputs) -> anyhow::Result<Plan> {
    let matrix = &inputs.matrix;
    let version = &inputs.version;
    let lines = matrix.php_lines();
    let tag_set = tags::tags_for(version, &inputs.published, &lines, matrix.default_line)?;

    let created = DateTime::from_timestamp(inputs.commit_time, 0)
        .ok_or_else(|| anyhow::anyhow!("commit time {} is out of range", inputs.commit_time))?
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let pin_in = |namespace: &Namespace, tag: &stack_images::Tag| {
        namespace.repository(&matrix.image).tagged(tag)
    };
    let canonical = &matrix.registries.canonical;
    let context = inputs.context.clone();
    let dockerfile_name = matrix
        .dockerfile
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("Dockerfile");
    let dockerfile = format!("{}/{dockerfile_name}", context.trim_end_matches('/'));

    let mut builds = Vec::new();
    for tag in tag_set.pins() {
        let base = inputs
            .bases
            .base_for(tag.php, std::path::Path::new(&inputs.bases_path))?;
        let metadata: BTreeMap<String, String> = [
            ("title", format!("{} {}", matrix.title, tag.php)),
            ("description", matrix.description.clone()),
            ("version", tag.tag.to_string()),
            ("revision", inputs.revision.to_string()),
            ("created", created.clone()),
            ("source", matrix.source.clone()),
            ("base.name", base.reference.to_string()),
            ("base.digest", base.digest.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (format!("org.opencontainers.image.{key}"), value))
        .collect();
        builds.push(Build {
            php: tag.php,
            target: format!("php-{}-{}", tag.php.major, tag.php.minor),
            platforms: matrix.platforms.clone(),
            context: context.clone(),
            dockerfile: dockerfile.clone(),
            build_args: BTreeMap::from([
                ("PHP_VERSION".to_owned(), tag.php.to_string()),
                ("PHP_BASE".to_owned(), base.reference.to_string()),
                (
                    "SOURCE_DATE_EPOCH".to_owned(),
                    inputs.commit_time.to_string(),
                ),
            ]),
            base,
            labels: metadata.clone(),
            annotations: metadata,
            pin: pin_in(canonical, &tag.tag),
            cache: inputs
                .build_cache
                .then(|| cache_ref(canonical, &matrix.image, tag.php)),
            end_of_life: matrix.line(tag.php).and_then(|line| line.eol.clone()),
        });
    }

    let mut steps = vec![Step::Engine(EngineStep {
        phase: Phase::Preflight,
        platforms: matrix.platforms.clone(),
    })];
    if inputs.signing.signs() {
        steps.push(Step::SigningReady(SigningReadyStep {
            phase: Phase::Preflight,
        }));
    }
    for namespace in matrix.namespaces() {
        steps.push(Step::Login(LoginStep {
            phase: Phase::Preflight,
            registry: namespace.clone(),
        }));
        for tag in tag_set.pins() {
            steps.push(Step::Find(FindStep {
                phase: Phase::Preflight,
                php: tag.php,
                pin: pin_in(namespace, &tag.tag),
            }));
        }
    }
    let sbom_scanner = matrix.sbom_scanner().cloned();
    if let Some(scanner) = &sbom_scanner {
        steps.push(Step::Scanner(ScannerStep {
            phase: Phase::Preflight,
            image: scanner.clone(),
        }));
    }
    // The build cache is pushed too, with the base's layers in it: its repository is seeded as well.
    let caches = builds
        .iter()
        .filter_map(|build| Some((build, build.cache.clone()?)));
    let pins = matrix.namespaces().flat_map(|namespace| {
        builds
            .iter()
            .map(|build| (build, pin_in(namespace, &tags::pin_tag(version, build.php))))
    });
    if inputs.seed {
        for (build, to) in pins.chain(caches) {
            steps.push(Step::Seed(SeedStep {
                phase: Phase::Build,
                php: build.php,
                base: build.base.reference.clone(),
                platforms: build.platforms.clone(),
                to,
            }));
        }
    }
    steps.push(Step::Bake(BakeStep {
        phase: Phase::Build,
        lines: builds.iter().map(|b| b.php).collect(),
        output: BakeOutput::Pins,
    }));
    for build in &builds {
        steps.push(Step::ReadBack(ReadBackStep {
            phase: Phase::Build,
            php: build.php,
            pin: build.pin.clone(),
        }));
    }
    for mirror in &matrix.registries.mirrors {
        for tag in tag_set.pins() {
            steps.push(Step::Copy(CopyStep {
                phase: Phase::Mirror,
                php: tag.php,
                from: pin_in(canonical, &tag.tag),
                to: pin_in(mirror, &tag.tag),
            }));
        }
    }
    for namespace in matrix.namespaces() {
        for tag in tag_set.pins() {
            steps.push(Step::Verify(VerifyStep {
                phase: Phase::VerifyPins,
                php: tag.php,
                reference: pin_in(namespace, &tag.tag),
            }));
        }
    }
    if matrix.attestations != Attestations::None || sbom_scanner.is_some() {
        for namespace in matrix.namespaces() {
            for tag in tag_set.pins() {
                steps.push(Step::VerifyAttestations(VerifyAttestationsStep {
                    phase: Phase::VerifyPins,
                    php: tag.php,
                    reference: pin_in(namespace, &tag.tag),
                }));
            }
        }
    }
    if inputs.signing.signs() {
        signing_steps(
            &mut steps,
            &builds,
            canonical,
            &matrix.registries.mirrors,
            |namespace, php| pin_in(namespace, &tags::pin_tag(version, php)),
        );
    }
    for build in &builds {
        steps.push(Step::Size(SizeStep {
            phase: Phase::Sizes,
            php: build.php,
            pin: build.pin.clone(),
        }));
    }
    for namespace in matrix.namespaces() {
        for tag in tag_set.moving() {
            steps.push(Step::Tag(TagStep {
                phase: Phase::MoveTags,
                kind: tag.kind,
                php: tag.php,
                from: pin_in(namespace, &tags::pin_tag(version, tag.php)),
                to: pin_in(namespace, &tag.tag),
            }));
        }
    }
    for namespace in matrix.namespaces() {
        for tag in tag_set.moving() {
            steps.push(Step::Verify(VerifyStep {
                phase: Phase::VerifyTags,
                php: tag.php,
                reference: pin_in(namespace, &tag.tag),
            }));
        }
    }
    debug_assert!(
        steps.windows(2).all(|w| w[0].phase() <= w[1].phase()),
        "steps run phase by phase"
    );

    let mut published = inputs.published.clone();
    published.sort();
    published.dedup();
    Ok(Plan {
        version: version.clone(),
        prerelease: version.is_prerelease(),
        revision: inputs.revision.clone(),
        launcher: inputs.launcher.clone(),
        created,
        source_date_epoch: inputs.commit_time,
        image: matrix.image.clone(),
        canonical: canonical.clone(),
        mirrors: matrix.registries.mirrors.clone(),
        platforms: matrix.platforms.clone(),
        attestations: matrix.attestations,
        sbom_scanner,
        signing: inputs.signing.clone(),
        published,
        bases: BasesUsed {
            lock: inputs.bases_path.clone(),
            source: inputs.bases.source.to_string(),
            read_on: inputs.bases.read_on.clone(),
        },
        builds,
        steps,
        skipped: tag_set.skipped,
    })
}

impl Plan {
    /// What every platform image's attestation manifest holds, as the notes and the plan name it.
    pub fn attested(&self) -> Vec<Predicate> {
        let mut attested = Vec::new();
        if self.sbom_scanner.is_some() {
            attested.push(Predicate::Sbom);
        }
        if self.attestations == Attestations::Provenance {
            attested.push(Predicate::Provenance);
        }
        attested
    }

    /// [`Plan::attested`] by name, joined with `separator`.
    pub fn attested_names(&self, separator: &str) -> String {
        let names: Vec<&str> = self.attested().into_iter().map(Predicate::name).collect();
        names.join(separator)
    }

    /// The steps of one phase, in order.
    pub fn steps_in(&self, phase: Phase) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.phase() == phase)
    }

    /// Where the plan's bake pushes; `None` when the pins are assembled instead.
    pub fn bake_output(&self) -> Option<&BakeOutput> {
        self.steps.iter().find_map(|step| match step {
            Step::Bake(BakeStep { output, .. }) => Some(output),
            _ => None,
        })
    }

    /// The build of a line; every line of the plan has one.
    pub fn build(&self, php: PhpLine) -> &Build {
        self.builds
            .iter()
            .find(|b| b.php == php)
            .expect("every line of a plan has a build")
    }

    /// The plan of one native runner of a split release: check the engine and the canonical login, build every
    /// line for `platform` only and read each image back. Nothing is tagged, copied or moved.
    pub fn for_platform(&self, platform: &str, by_digest: bool) -> anyhow::Result<Plan> {
        anyhow::ensure!(
            self.platforms.iter().any(|p| p == platform),
            "--platform {platform} is not in the matrix ({}): use one of them",
            self.platforms.join(", ")
        );
        let output = if by_digest {
            BakeOutput::ByDigest {
                platform: platform.to_owned(),
            }
        } else {
            BakeOutput::Staging {
                platform: platform.to_owned(),
            }
        };
        let mut steps = vec![
            Step::Engine(EngineStep {
                phase: Phase::Preflight,
                platforms: vec![platform.to_owned()],
            }),
            Step::Login(LoginStep {
                phase: Phase::Preflight,
                registry: self.canonical.clone(),
            }),
        ];
        // Each platform's runner runs the scanner: each checks it can before building.
        steps.extend(
            self.steps_in(Phase::Preflight)
                .filter(|s| matches!(s, Step::Scanner(ScannerStep { .. })))
                .cloned(),
        );
        // A runner pushes to the canonical registry only (the merge mirrors): it seeds the repository it pushes
        // to with its one platform, unless the release does not seed.
        let seeds = self
            .steps
            .iter()
            .any(|step| matches!(step, Step::Seed(SeedStep { .. })));
        for build in self.builds.iter().filter(|_| seeds) {
            let to = match &output {
                BakeOutput::Staging { platform } => staging(build, platform)?,
                BakeOutput::Pins | BakeOutput::ByDigest { .. } => build.pin.clone(),
            };
            for to in std::iter::once(to).chain(build.cache.clone()) {
                steps.push(Step::Seed(SeedStep {
                    phase: Phase::Build,
                    php: build.php,
                    base: build.base.reference.clone(),
                    platforms: vec![platform.to_owned()],
                    to,
                }));
            }
        }
        steps.push(Step::Bake(BakeStep {
            phase: Phase::Build,
            lines: self.builds.iter().map(|b| b.php).collect(),
            output,
        }));
        steps.extend(
            self.steps_in(Phase::Build)
                .filter(|s| matches!(s, Step::ReadBack(ReadBackStep { .. })))
                .cloned(),
        );
        Ok(Plan {
            steps,
            ..self.clone()
        })
    }

    /// The plan of `republish --lines`: only `lines` are rebuilt, copied, verified and have their tags moved; every
    /// other line and its tags are left as they are. The new indexes say why and when (OCI annotations
    /// `io.20i-stack.republish.reason` and `.date`), so a client can tell a republish from the release.
    pub fn republishing(
        &self,
        lines: &[PhpLine],
        reason: &str,
        date: &str,
    ) -> anyhow::Result<Plan> {
        for php in lines {
            anyhow::ensure!(
                self.builds.iter().any(|b| b.php == *php),
                "--lines names PHP {php}, which {} does not have ({}): name lines of the release",
                self.version,
                self.builds
                    .iter()
                    .map(|b| b.php.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let kept = |php: &PhpLine| lines.contains(php);
        let builds = self
            .builds
            .iter()
            .filter(|b| kept(&b.php))
            .cloned()
            .map(|mut build| {
                build
                    .annotations
                    .insert(REPUBLISH_REASON.to_owned(), reason.to_owned());
                build
                    .annotations
                    .insert(REPUBLISH_DATE.to_owned(), date.to_owned());
                build
            })
            .collect();
        let steps = self
            .steps
            .iter()
            .filter_map(|step| match step {
                Step::Engine(EngineStep { .. })
                | Step::Login(LoginStep { .. })
                | Step::Scanner(ScannerStep { .. })
                | Step::SigningReady(SigningReadyStep { .. }) => Some(step.clone()),
                Step::Bake(BakeStep {
                    phase,
                    output,
                    lines: baked,
                }) => Some(Step::Bake(BakeStep {
                    phase: *phase,
                    output: output.clone(),
                    lines: baked.iter().copied().filter(kept).collect(),
                })),
                Step::Find(FindStep { php, .. })
                | Step::Seed(SeedStep { php, .. })
                | Step::Assemble(AssembleStep { php, .. })
                | Step::ReadBack(ReadBackStep { php, .. })
                | Step::Copy(CopyStep { php, .. })
                | Step::Verify(VerifyStep { php, .. })
                | Step::VerifyAttestations(VerifyAttestationsStep { php, .. })
                | Step::Size(SizeStep { php, .. })
                | Step::Sign(SignStep { php, .. })
                | Step::CopySignature(CopySignatureStep { php, .. })
                | Step::VerifySignature(VerifySignatureStep { php, .. })
                | Step::Tag(TagStep { php, .. }) => kept(php).then(|| step.clone()),
            })
            .collect();
        Ok(Plan {
            builds,
            steps,
            ..self.clone()
        })
    }

    /// The plan of `release merge`: each line's pin is assembled from the per-platform images in `sources`
    /// instead of being built; everything after the build is unchanged.
    pub fn assembling(&self, sources: &BTreeMap<PhpLine, Vec<ImageRef>>) -> anyhow::Result<Plan> {
        let mut steps = Vec::new();
        for step in &self.steps {
            match step {
                Step::Bake(BakeStep { lines, .. }) => {
                    for php in lines {
                        let sources = sources.get(php).with_context(|| {
                            format!("no per-platform images of PHP {php} to merge")
                        })?;
                        steps.push(Step::Assemble(AssembleStep {
                            phase: Phase::Build,
                            php: *php,
                            pin: self.build(*php).pin.clone(),
                            sources: sources.clone(),
                        }));
                    }
                }
                // Nothing is scanned or built here: the per-platform builds made the SBOMs, and
                // verify-attestations checks the assembled pins hold them; their runners seeded what they pushed.
                Step::Scanner(ScannerStep { .. }) | Step::Seed(SeedStep { .. }) => {}
                step => steps.push(step.clone()),
            }
        }
        Ok(Plan {
            steps,
            ..self.clone()
        })
    }

    /// The plan as a person reads it.
    pub fn render(&self, published_from: PublishedFrom) -> String {
        let mut out = String::new();
        let kind = if self.prerelease {
            "prerelease"
        } else {
            "stable"
        };
        out.push_str(&format!(
            "Release {} ({kind}) of {}\n",
            self.version, self.image
        ));
        let published = if self.published.is_empty() {
            "none".to_owned()
        } else {
            self.published
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let published_from = match published_from {
            PublishedFrom::Flag => "--published",
            PublishedFrom::GitTags => "git tags",
        };
        let mut registries = vec![format!("{} (canonical)", self.canonical)];
        registries.extend(self.mirrors.iter().map(|m| format!("{m} (mirror)")));
        let header = vec![
            vec!["revision".to_owned(), self.revision.to_string()],
            vec!["launcher".to_owned(), self.launcher.describe(&self.version)],
            vec![
                "created".to_owned(),
                format!(
                    "{} (SOURCE_DATE_EPOCH={})",
                    self.created, self.source_date_epoch
                ),
            ],
            vec![
                "published".to_owned(),
                format!("{published} (from {published_from})"),
            ],
            vec!["registries".to_owned(), registries.join(", ")],
            vec!["signing".to_owned(), self.signing.describe()],
            vec![
                "bases".to_owned(),
                format!(
                    "{} read on {} ({})",
                    self.bases.source, self.bases.read_on, self.bases.lock
                ),
            ],
        ];
        out.push_str(&table::render(&header, "  "));

        out.push_str(&format!(
            "\nImages: {} PHP lines x {}\n",
            self.builds.len(),
            self.platforms.join(", ")
        ));
        let mut rows = vec![vec![
            "PHP".to_owned(),
            "pin".to_owned(),
            "base".to_owned(),
            "note".to_owned(),
        ]];
        for build in &self.builds {
            rows.push(vec![
                build.php.to_string(),
                build.pin.tag().map(ToString::to_string).unwrap_or_default(),
                format!(
                    "{}:{}",
                    self.bases.source.rsplit('/').next().unwrap_or("php"),
                    build
                        .base
                        .reference
                        .tag()
                        .map(|t| t.as_str())
                        .unwrap_or_default()
                ) + &format!("@{}", build.base.digest.short()),
                if build.end_of_life.is_some() {
                    "end of life upstream".to_owned()
                } else {
                    String::new()
                },
            ]);
        }
        out.push_str(&table::render(&rows, "  "));

        out.push_str(&format!("\nSteps ({}), in order\n", self.steps.len()));
        let mut rows = Vec::new();
        for (n, step) in self.steps.iter().enumerate() {
            let (action, what) = match step {
                Step::Engine(EngineStep { platforms, .. }) => (
                    "engine",
                    format!("docker answers and builds {}", platforms.join(", ")),
                ),
                Step::Login(LoginStep { registry, .. }) => (
                    "login",
                    format!("docker holds a login for {}", registry.host()),
                ),
                Step::Find(FindStep { pin, .. }) => ("find", pin.to_string()),
                Step::Seed(SeedStep {
                    base,
                    platforms,
                    to,
                    ..
                }) => (
                    "seed",
                    format!(
                        "{} <- blobs of {}:{} ({}), while building",
                        to.repository(),
                        base.repository(),
                        base.tag().map(|t| t.as_str()).unwrap_or_default(),
                        platforms.join(", ")
                    ),
                ),
                Step::Bake(BakeStep { lines, output, .. }) => {
                    let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
                    let to = match output.platform() {
                        None => format!("for {}", self.platforms.join(", ")),
                        Some(platform) => format!("for {platform} only"),
                    };
                    ("bake", format!("PHP {} {to}", lines.join(", ")))
                }
                Step::Assemble(AssembleStep { pin, sources, .. }) => {
                    ("assemble", format!("{pin} <- {} images", sources.len()))
                }
                Step::ReadBack(ReadBackStep { pin, .. }) => ("read back", pin.to_string()),
                Step::Copy(CopyStep { from, to, .. }) => ("copy", format!("{from} -> {to}")),
                Step::Scanner(ScannerStep { image, .. }) => {
                    ("scanner", format!("{image} (SBOM generator)"))
                }
                Step::Verify(VerifyStep { reference, .. }) => ("verify", reference.to_string()),
                Step::VerifyAttestations(VerifyAttestationsStep { reference, .. }) => (
                    "attests",
                    format!("{reference}: {}", self.attested_names(" + ")),
                ),
                Step::Size(SizeStep { pin, .. }) => ("size", pin.to_string()),
                Step::SigningReady(SigningReadyStep { .. }) => ("signing", self.signing.describe()),
                Step::Sign(SignStep { pin, .. }) => ("sign", pin.to_string()),
                Step::CopySignature(CopySignatureStep { from, to, .. }) => {
                    ("copy signature", format!("{from} -> {to}"))
                }
                Step::VerifySignature(VerifySignatureStep { reference, .. }) => {
                    ("verify signature", reference.to_string())
                }
                Step::Tag(TagStep { from, to, .. }) => (
                    "tag",
                    format!(
                        "{to} -> {}",
                        from.tag().map(|t| t.as_str()).unwrap_or_default()
                    ),
                ),
            };
            rows.push(vec![format!("{:>3}", n + 1), action.to_owned(), what]);
        }
        out.push_str(&table::render(&rows, "  "));

        if !self.skipped.is_empty() {
            out.push_str("\nNot moved\n");
            for skipped in &self.skipped {
                out.push_str(&format!("  {}\n", skipped.reason));
            }
        }
        let end_of_life: Vec<&Build> = self
            .builds
            .iter()
            .filter(|b| b.end_of_life.is_some())
            .collect();
        if !end_of_life.is_empty() {
            out.push_str("\nEnd of life\n");
            for build in end_of_life {
                out.push_str(&format!(
                    "  PHP {}: {}\n",
                    build.php,
                    build.end_of_life.as_deref().unwrap_or_default()
                ));
            }
        }
        out
    }
}

/// `cargo xtask plan`.
#[derive(Args, Debug)]
pub struct PlanCmd {
    #[command(flatten)]
    release: ReleaseArgs,
    /// Print the plan as JSON instead of a table
    #[arg(long)]
    json: bool,
}

impl PlanCmd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let inputs = self.release.gather(sh)?;
        let plan = compute(&inputs)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", plan.render(inputs.published_from));
        }
        Ok(())
    }
}
/// The staging reference of one line and platform: `<canonical repository>-staging:<pin>-<os>-<arch>`.
pub fn staging(build: &Build, platform: &str) -> anyhow::Result<ImageRef> {
    let repository = build.pin.repository();
    let name: RepoName = format!("{}-staging", repository.name()).parse()?;
    let pin = build.pin.tag().expect("a pin has a tag");
    let tag: Tag = format!("{pin}-{}", platform.replace('/', "-"))
        .parse()
        .context("the staging tag of a split build")?;
    Ok(repository.namespace().repository(&name).tagged(&tag))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
