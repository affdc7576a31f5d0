//! Executes a release plan step by step, phase by phase. [`work`] turns a step's payload into what it does, typed
//! and named: docker commands (builds), cosign commands, and registry requests made in process (every manifest
//! read, hashed here, every mirror copy, registry to registry, and every tag move, a PUT of verified bytes). The
//! run performs that work in one `match` through its doors (docker, registry, cosign), which journal every call
//! once; `--dry-run` lists the same work's [`Work::actions`], so a dry run cannot drift from a run (a test holds
//! the dry run to the journal of a real one). The build phase runs one step after another; the others run their
//! steps concurrently, a few at a time per registry.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use stack_images::{
    cosign::{self, Cosign, CosignCommand, Subject},
    docker::{Docker, DockerCommand, DockerError, FailureKind},
    registry::{auth, Absence, Copied, Manifest, RegistryClient, RegistryError},
    tags::{self, TagKind},
    Digest, ImageRef, IndexSummary, Namespace, PhpLine, Repository,
};

use crate::{
    maintain::notes::{PlatformRecord, Reference},
    progress::Progress,
    release::bake,
    release::plan::{
        self, AssembleStep, BakeOutput, BakeStep, CopySignatureStep, CopyStep, EngineStep,
        FindStep, LoginStep, Phase, Plan, ReadBackStep, ScannerStep, SeedStep, SignStep, SizeStep,
        Step, TagStep, VerifyAttestationsStep, VerifySignatureStep, VerifyStep,
    },
    release::signing::Signing,
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
    /// Attestation manifests read and checked, in every registry.
    pub attestations_verified: usize,
    pub moved: Vec<ImageRef>,
    pub left_alone: Vec<ImageRef>,
    /// What buildx reported for every line it built (the index, or one platform's image in a split build).
    pub reported: BTreeMap<PhpLine, Digest>,
    /// The canonical index of every line.
    pub pins: BTreeMap<PhpLine, IndexSummary>,
    /// The exact bytes of every line's canonical pin, as read and hashed here: what a moving tag is set to.
    pub manifests: BTreeMap<PhpLine, Manifest>,
    /// A split build: each line's single-platform image, by digest, as read back from the registry.
    pub platform_images: BTreeMap<PhpLine, ImageRef>,
    /// Compressed size of every line's platform images.
    pub sizes: BTreeMap<(PhpLine, String), u64>,
    /// Republish: the digest each pin had before, per registry and line.
    pub old_pins: BTreeMap<(Namespace, PhpLine), Digest>,
    /// Every reference pushed or moved, with what it now points at.
    pub references: Vec<crate::maintain::notes::Reference>,
    pub signed: usize,
    pub already_signed: usize,
    pub signatures_copied: usize,
    /// The digest of every pin's signature manifest, per registry and line, as verified there.
    pub signatures: BTreeMap<(Namespace, PhpLine), Digest>,
}

impl Outcome {
    /// The platform images of a line's canonical pin with their sizes, as the notes record them.
    pub fn platform_records(&self, php: PhpLine) -> Vec<PlatformRecord> {
        self.pins[&php]
            .platforms
            .iter()
            .map(|p| PlatformRecord {
                platform: p.platform.clone(),
                digest: p.digest.clone(),
                attestation: p.attestation.clone(),
                size: self
                    .sizes
                    .get(&(php, p.platform.clone()))
                    .copied()
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// An image named by digest: known in a run, a placeholder in a dry run (nothing is built yet).
#[derive(Debug, Clone)]
pub enum Named {
    Known(ImageRef),
    Pending {
        repository: Repository,
        digest: String,
    },
}

impl Named {
    /// What a cosign command names: the image by digest, or the dry run's placeholder.
    fn subject(&self) -> Subject<'_> {
        match self {
            Named::Known(reference) => Subject::Image(reference),
            Named::Pending { repository, digest } => Subject::Pending { repository, digest },
        }
    }
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Named::Known(reference) => write!(f, "{reference}"),
            Named::Pending { repository, digest } => write!(f, "{repository}@{digest}"),
        }
    }
}

/// The digests actions name: known during a run, placeholders in a dry run.
pub enum Names<'a> {
    Run(&'a Outcome),
    Dry,
}

impl Names<'_> {
    fn at(&self, repository: &Repository, digest: Option<&Digest>, what: String) -> Named {
        match self {
            Names::Run(_) => Named::Known(repository.at(digest.expect("a run knows this digest"))),
            Names::Dry => Named::Pending {
                repository: repository.clone(),
                digest: format!("{{digest of {what}}}"),
            },
        }
    }

    fn outcome(&self) -> Option<&Outcome> {
        match self {
            Names::Run(outcome) => Some(outcome),
            Names::Dry => None,
        }
    }

    fn pin(&self, repository: &Repository, php: PhpLine) -> Named {
        let digest = self.outcome().map(|o| &o.pins[&php].digest);
        self.at(repository, digest, format!("PHP {php}"))
    }

    fn reported(&self, repository: &Repository, php: PhpLine, platform: &str) -> Named {
        let digest = self.outcome().map(|o| &o.reported[&php]);
        self.at(repository, digest, format!("PHP {php} {platform}"))
    }

    /// The attestation manifest of every platform image of a line's pin that has one: the index's own entries in
    /// a run (a platform without one is the handler's error), one per planned platform in a dry run.
    fn attestations(&self, plan: &Plan, repository: &Repository, php: PhpLine) -> Vec<Named> {
        match self {
            Names::Run(outcome) => outcome.pins[&php]
                .platforms
                .iter()
                .filter_map(|p| p.attestation.as_ref())
                .map(|digest| Named::Known(repository.at(digest)))
                .collect(),
            Names::Dry => plan
                .platforms
                .iter()
                .map(|p| self.at(repository, None, format!("PHP {php} {p} attestations")))
                .collect(),
        }
    }

    /// Every platform image of a line's pin: the index's own list in a run, the plan's platforms in a dry run.
    fn platforms(&self, plan: &Plan, repository: &Repository, php: PhpLine) -> Vec<Named> {
        match self {
            Names::Run(outcome) => outcome.pins[&php]
                .platforms
                .iter()
                .map(|p| Named::Known(repository.at(&p.digest)))
                .collect(),
            Names::Dry => plan
                .platforms
                .iter()
                .map(|p| self.at(repository, None, format!("PHP {php} {p}")))
                .collect(),
        }
    }
}

/// What a step does at a door: a docker command, or a registry request made in process.
#[derive(Debug, Clone)]
pub enum Action {
    Docker(DockerCommand),
    /// Read a manifest: its exact bytes, hashed here and checked against the digest named or served.
    Read(Named),
    /// Ask for a manifest's digest only (`HEAD`): where a digest is all a step compares, and Docker Hub counts
    /// a `GET` against the pull limit, not a `HEAD`.
    Head(Named),
    /// Store the verified bytes of the pin `from` under the tag `to`, then check the digest the registry reports.
    Put {
        to: ImageRef,
        from: Named,
    },
    Cosign(CosignCommand),
    /// The digest of an image's signature manifest (cosign's `sha256-<digest>.sig` tag), from a `HEAD`.
    ReadSignature(Named),
    /// Copy the signature of the image `from` (its `.sig` manifest and blobs) to the same tag in `to`.
    CopySignature {
        from: Named,
        to: Repository,
    },
    /// Copy the image `from` to `to` registry to registry: every child manifest and blob, then the tag.
    Copy {
        from: Named,
        to: ImageRef,
    },
    Seed(Seed),
}

/// Copy the config and layer blobs of `base`'s images for `platforms` into `to`, while the build runs.
#[derive(Debug, Clone)]
pub struct Seed {
    base: ImageRef,
    platforms: Vec<String>,
    to: Repository,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Docker(command) => write!(f, "{command}"),
            Action::Read(image) => write!(f, "registry GET manifest {image}"),
            Action::Head(image) => write!(f, "registry HEAD manifest {image}"),
            Action::Put { to, from } => {
                write!(f, "registry PUT manifest {to} (the bytes of {from})")
            }
            Action::Cosign(command) => write!(f, "{command}"),
            Action::ReadSignature(image) => {
                write!(f, "registry HEAD manifest of the signature of {image}")
            }
            Action::CopySignature { from, to } => {
                write!(f, "registry copy the signature of {from} -> {to}")
            }
            Action::Copy { from, to } => write!(
                f,
                "registry copy {from} -> {to} (child manifests and blobs the destination lacks, then the tag)"
            ),
            Action::Seed(Seed {
                base,
                platforms,
                to,
            }) => write!(
                f,
                "registry seed {to} with the blobs of {base} ({}) the destination lacks, while the build runs",
                platforms.join(", ")
            ),
        }
    }
}

fn server_version() -> DockerCommand {
    DockerCommand::new(["version", "--format", "{{.Server.Version}}"])
}

fn builder() -> DockerCommand {
    DockerCommand::new(["buildx", "inspect", "--bootstrap"])
}

fn bake_command(work_dir: &Path) -> DockerCommand {
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
    ])
}

/// What one step does at the doors, named and typed: built from the step's payload by [`work`], run by the
/// executor (one `match`), listed by the dry run ([`Work::actions`]).
pub enum Work<'p> {
    /// Run one after another in the build phase, with the executor's state in hand.
    Build(BuildWork<'p>),
    /// Run concurrently, a few at a time per registry host.
    Concurrent(ConcurrentWork<'p>),
}

/// The build phase's work: the bake (with its seeds alongside) or an assembly, then each line read back.
pub enum BuildWork<'p> {
    Seed {
        step: &'p SeedStep,
        seed: Seed,
    },
    Bake {
        step: &'p BakeStep,
        command: DockerCommand,
    },
    Assemble {
        step: &'p AssembleStep,
        command: DockerCommand,
    },
    ReadBack {
        step: &'p ReadBackStep,
        read: Named,
    },
}

/// The work of every other phase: checks, copies, signatures and tags.
pub enum ConcurrentWork<'p> {
    Engine {
        step: &'p EngineStep,
        version: DockerCommand,
        builder: DockerCommand,
    },
    Login(&'p LoginStep),
    Find {
        step: &'p FindStep,
        read: Named,
    },
    Scanner {
        step: &'p ScannerStep,
        read: Named,
    },
    Verify {
        step: &'p VerifyStep,
        head: Named,
    },
    VerifyAttestations {
        step: &'p VerifyAttestationsStep,
        reads: Vec<Named>,
    },
    Copy {
        step: &'p CopyStep,
        from: Named,
    },
    Tag {
        step: &'p TagStep,
        from: Named,
    },
    Size {
        step: &'p SizeStep,
        reads: Vec<Named>,
    },
    /// With a key: the key's pair checked against the public key given.
    SigningReady {
        key: Option<KeyPair<'p>>,
    },
    /// Verified first: a resumed release does not sign a pin its own signature already covers.
    Sign {
        step: &'p SignStep,
        verify: CosignCommand,
        sign: CosignCommand,
    },
    CopySignature {
        step: &'p CopySignatureStep,
        from: Named,
    },
    VerifySignature {
        step: &'p VerifySignatureStep,
        verify: CosignCommand,
        read: Named,
    },
}

/// A signing key and the public key given for it: cosign derives the key's public half, which must be that one.
pub struct KeyPair<'p> {
    derive: CosignCommand,
    key: String,
    public_key: &'p Path,
}

/// What one step does, decided from its payload, the plan and the digests known so far.
pub fn work<'p>(plan: &'p Plan, step: &'p Step, work_dir: &Path, names: &Names) -> Work<'p> {
    let concurrent = match step {
        Step::Seed(step) => {
            return Work::Build(BuildWork::Seed {
                step,
                seed: Seed {
                    base: step.base.clone(),
                    platforms: step.platforms.clone(),
                    to: step.to.repository().clone(),
                },
            })
        }
        Step::Bake(step) => {
            return Work::Build(BuildWork::Bake {
                step,
                command: bake_command(work_dir),
            })
        }
        Step::Assemble(step) => {
            return Work::Build(BuildWork::Assemble {
                step,
                command: assemble_command(plan, step),
            })
        }
        Step::ReadBack(step) => {
            let read = match plan.bake_output() {
                Some(BakeOutput::Staging { platform }) => {
                    let staging = plan::staging(plan.build(step.php), platform)
                        .expect("staging references are checked when the bake file is written");
                    names.reported(staging.repository(), step.php, platform)
                }
                Some(BakeOutput::ByDigest { platform }) => {
                    names.reported(step.pin.repository(), step.php, platform)
                }
                Some(BakeOutput::Pins) | None => Named::Known(step.pin.clone()),
            };
            return Work::Build(BuildWork::ReadBack { step, read });
        }
        Step::Engine(step) => ConcurrentWork::Engine {
            step,
            version: server_version(),
            builder: builder(),
        },
        Step::Login(step) => ConcurrentWork::Login(step),
        Step::Find(step) => ConcurrentWork::Find {
            step,
            read: Named::Known(step.pin.clone()),
        },
        Step::Scanner(step) => ConcurrentWork::Scanner {
            step,
            read: Named::Known(step.image.clone()),
        },
        Step::Verify(step) => ConcurrentWork::Verify {
            step,
            head: Named::Known(step.reference.clone()),
        },
        Step::VerifyAttestations(step) => ConcurrentWork::VerifyAttestations {
            step,
            reads: names.attestations(plan, step.reference.repository(), step.php),
        },
        Step::Copy(step) => ConcurrentWork::Copy {
            step,
            from: names.pin(step.from.repository(), step.php),
        },
        Step::Tag(step) => ConcurrentWork::Tag {
            step,
            from: names.pin(step.from.repository(), step.php),
        },
        Step::Size(step) => ConcurrentWork::Size {
            step,
            reads: names.platforms(plan, step.pin.repository(), step.php),
        },
        Step::SigningReady(_) => ConcurrentWork::SigningReady {
            key: match &plan.signing {
                Signing::Key { key, public_key } => Some(KeyPair {
                    derive: CosignCommand::public_key(key),
                    key: key.to_string(),
                    public_key,
                }),
                Signing::Keyless { .. } | Signing::None => None,
            },
        },
        Step::Sign(step) => {
            let signer = plan
                .signing
                .signer()
                .expect("a plan signs only with a signer");
            let pin = names.pin(step.pin.repository(), step.php);
            ConcurrentWork::Sign {
                step,
                verify: verify_signature(plan, &pin),
                sign: CosignCommand::sign(&signer, pin.subject())
                    .expect("a pin is named by digest"),
            }
        }
        Step::CopySignature(step) => ConcurrentWork::CopySignature {
            step,
            from: names.pin(step.from.repository(), step.php),
        },
        Step::VerifySignature(step) => {
            let pin = names.pin(step.reference.repository(), step.php);
            ConcurrentWork::VerifySignature {
                step,
                verify: verify_signature(plan, &pin),
                read: pin,
            }
        }
    };
    Work::Concurrent(concurrent)
}

impl Work<'_> {
    /// What the work does at the doors, in the order it does it: what the dry run prints and a run journals.
    pub fn actions(&self) -> Vec<Action> {
        match self {
            Work::Build(BuildWork::Seed { seed, .. }) => vec![Action::Seed(seed.clone())],
            Work::Build(BuildWork::Bake { command, .. } | BuildWork::Assemble { command, .. }) => {
                vec![Action::Docker(command.clone())]
            }
            Work::Build(BuildWork::ReadBack { read, .. }) => vec![Action::Read(read.clone())],
            Work::Concurrent(work) => work.actions(),
        }
    }
}

impl ConcurrentWork<'_> {
    fn actions(&self) -> Vec<Action> {
        match self {
            ConcurrentWork::Engine {
                version, builder, ..
            } => vec![
                Action::Docker(version.clone()),
                Action::Docker(builder.clone()),
            ],
            ConcurrentWork::Login(_) => Vec::new(),
            ConcurrentWork::Find { read, .. } | ConcurrentWork::Scanner { read, .. } => {
                vec![Action::Read(read.clone())]
            }
            ConcurrentWork::Verify { head, .. } => vec![Action::Head(head.clone())],
            ConcurrentWork::VerifyAttestations { reads, .. }
            | ConcurrentWork::Size { reads, .. } => {
                reads.iter().cloned().map(Action::Read).collect()
            }
            ConcurrentWork::Copy { step, from } => vec![Action::Copy {
                from: from.clone(),
                to: step.to.clone(),
            }],
            ConcurrentWork::Tag { step, from } => vec![Action::Put {
                to: step.to.clone(),
                from: from.clone(),
            }],
            ConcurrentWork::SigningReady { key } => key
                .iter()
                .map(|pair| Action::Cosign(pair.derive.clone()))
                .collect(),
            ConcurrentWork::Sign { verify, sign, .. } => {
                vec![Action::Cosign(verify.clone()), Action::Cosign(sign.clone())]
            }
            ConcurrentWork::CopySignature { step, from } => vec![Action::CopySignature {
                from: from.clone(),
                to: step.to.repository().clone(),
            }],
            ConcurrentWork::VerifySignature { verify, read, .. } => vec![
                Action::Cosign(verify.clone()),
                Action::ReadSignature(read.clone()),
            ],
        }
    }
}

/// What one step does, in the order it does it.
pub fn actions(plan: &Plan, step: &Step, work_dir: &Path, names: &Names) -> Vec<Action> {
    work(plan, step, work_dir, names).actions()
}

fn assemble_command(plan: &Plan, step: &AssembleStep) -> DockerCommand {
    let mut args = vec![
        "buildx".to_owned(),
        "imagetools".into(),
        "create".into(),
        "--progress=plain".into(),
    ];
    for annotation in bake::index_annotations(plan.build(step.php)) {
        args.extend(["--annotation".to_owned(), annotation]);
    }
    args.extend(["--tag".to_owned(), step.pin.to_string()]);
    args.extend(step.sources.iter().map(ToString::to_string));
    DockerCommand::new(args)
}

/// `cosign verify` of the pin's signature with the plan's verifier.
fn verify_signature(plan: &Plan, pin: &Named) -> CosignCommand {
    let verifier = plan
        .signing
        .verifier()
        .expect("a plan verifies only what it signs");
    CosignCommand::verify(&verifier, pin.subject()).expect("a pin is named by digest")
}

/// Everything a run of `plan` does, in order, with digests not yet known as placeholders.
pub fn dry_run_actions(plan: &Plan, work_dir: &Path) -> Vec<Action> {
    plan.steps
        .iter()
        .flat_map(|step| actions(plan, step, work_dir, &Names::Dry))
        .collect()
}

/// Docker answers and its builder can build every platform wanted.
fn check_engine(
    docker: &Docker,
    version: &DockerCommand,
    builder: &DockerCommand,
    wanted: &[String],
) -> anyhow::Result<()> {
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

/// The SBOM scanner is in its registry as named (its bytes match its digest): BuildKit pulls it there during the
/// build, so a release that cannot read it would build images without SBOMs, and stops here instead.
fn check_scanner(doors: Doors<'_>, scanner: &ImageRef, read: &Named) -> anyhow::Result<()> {
    doors.read(known(read)?).map_err(|error| {
        let why = error.kind.describe();
        anyhow::Error::new(error).context(format!(
            "the SBOM scanner {scanner} cannot be used ({why}): the images would have no SBOM, so nothing is \
             built; make it pullable here (`docker login {}`, network), name another with --sbom-scanner \
             IMAGE:TAG@DIGEST, or release without SBOMs with --no-sbom",
            scanner.namespace().host()
        ))
    })?;
    eprintln!("    SBOM scanner {scanner} is readable");
    Ok(())
}

/// Whether docker holds a login for the registry; an error with the command to run when it must and does not.
fn check_login(registry: &Namespace) -> anyhow::Result<bool> {
    let host = registry.host();
    let logged_in = auth::has_login(None, host)?;
    if !logged_in && !registry.is_loopback() {
        bail!("no credentials for {host}: run `docker login {host}` (or set up a credential helper) and retry");
    }
    Ok(logged_in)
}

/// Runs a docker command, retrying transient failures with the shared registry policy's waits
/// ([`stack_images::docker::with_retries`]). Callers retry only what is safe to repeat: nothing has been verified
/// or moved on the strength of it.
pub fn with_retries<T>(run: impl FnMut() -> Result<T, DockerError>) -> anyhow::Result<T> {
    Ok(stack_images::docker::with_retries(
        &stack_images::registry::Policy::default(),
        run,
    )?)
}

/// What to do about a repository that a registry says does not exist, and refuses pushes to even with a
/// token that asks for push (Docker Hub, in an organisation's namespace: a repository is created on its site
/// before its first push; in a user's own namespace the first push creates it, and `find` sees an absence).
fn create_first(repository: &Repository) -> String {
    let host = repository.namespace().host();
    let path = repository.path();
    let place = if stack_images::registry::auth::is_docker_hub(host) {
        let namespace = path.split('/').next().unwrap_or_default();
        format!("at https://hub.docker.com/repository/create?namespace={namespace}")
    } else {
        format!(
            "where {host}'s repositories are created (on Docker Hub: https://hub.docker.com/repository/create)"
        )
    };
    format!(
        "{repository} does not exist on {host}, or the account of `docker login {host}` may not see it, and \
         {host} refuses a push to a repository that does not exist: create `{path}` {place} (or give that \
         account access), then run again; nothing was pushed"
    )
}

/// What a pin's reference holds before the release touches it.
#[derive(Debug, Clone)]
enum FoundPin {
    Absent,
    Index(IndexSummary, Manifest),
    /// A single manifest whose bytes matched their digest: what an interrupted push of an index leaves.
    Manifest(Digest),
}

/// What a step found or did, recorded in the outcome once its phase's steps are done.
#[derive(Debug)]
enum Done {
    Nothing,
    Found(Namespace, PhpLine, ImageRef, FoundPin),
    Verified,
    AttestationsVerified(usize),
    Copied,
    AlreadyCopied,
    Sized(PhpLine, Vec<(String, u64)>),
    Moved(ImageRef),
    LeftAlone(ImageRef),
    Signed,
    AlreadySigned,
    SignatureCopied,
    SignatureVerified(Namespace, PhpLine, Digest),
}

/// How many requests run at once against one registry: enough to hide latency, few enough to stay polite.
const PER_REGISTRY: usize = 4;

/// What a step needs to be performed on any thread: read-only, shared.
struct Ctx<'a> {
    plan: &'a Plan,
    mode: Mode,
    outcome: &'a Outcome,
    existing: &'a BTreeMap<(Namespace, PhpLine), (IndexSummary, Manifest)>,
}

/// The doors a step goes through, with the journal in front: each request to a registry or to cosign is
/// recorded once, as the dry run prints it, then made (docker journals its own commands).
#[derive(Clone, Copy)]
struct Doors<'a> {
    docker: &'a Docker,
    client: &'a RegistryClient,
    cosign: &'a Cosign,
}

impl Doors<'_> {
    fn journal(&self, action: Action) {
        self.docker.record_line(&action.to_string());
    }

    /// A manifest's exact bytes, checked against the digest named or served.
    fn read(&self, image: &ImageRef) -> Result<Manifest, RegistryError> {
        self.journal(Action::Read(Named::Known(image.clone())));
        self.client.get_manifest(image)
    }

    /// A manifest read with a token that asks for push too: what tells an absent pin from a refused push.
    fn read_to_push(&self, image: &ImageRef) -> Result<Manifest, RegistryError> {
        self.journal(Action::Read(Named::Known(image.clone())));
        self.client.get_manifest_to_push(image)
    }

    fn head(&self, image: &ImageRef) -> Result<Digest, RegistryError> {
        self.journal(Action::Head(Named::Known(image.clone())));
        Ok(self.client.head_manifest(image)?.digest)
    }

    fn copy(&self, from: &ImageRef, to: &ImageRef) -> Result<Copied, RegistryError> {
        self.journal(Action::Copy {
            from: Named::Known(from.clone()),
            to: to.clone(),
        });
        self.client.copy(from, to)
    }

    /// Stores `manifest` (the bytes of the pin `from`) under the tag `to`; the digest the registry reports.
    fn put(
        &self,
        to: &ImageRef,
        from: &ImageRef,
        manifest: &Manifest,
    ) -> Result<Digest, RegistryError> {
        self.journal(Action::Put {
            to: to.clone(),
            from: Named::Known(from.clone()),
        });
        self.client
            .put_manifest(to, &manifest.bytes, &manifest.media_type)
    }

    /// Copies the signature manifest of `pin` to the same tag of `to`.
    fn copy_signature(&self, pin: &ImageRef, to: &Repository) -> Result<(), RegistryError> {
        self.journal(Action::CopySignature {
            from: Named::Known(pin.clone()),
            to: to.clone(),
        });
        let tag = cosign::signature_tag(pin.digest().expect("a pin is named by digest"));
        self.client
            .copy(&pin.repository().tagged(&tag), &to.tagged(&tag))?;
        Ok(())
    }

    /// The digest of the signature manifest of `pin` (all that is compared across registries: a `HEAD`).
    fn signature_digest(&self, pin: &ImageRef) -> Result<Digest, RegistryError> {
        self.journal(Action::ReadSignature(Named::Known(pin.clone())));
        let tag = cosign::signature_tag(pin.digest().expect("a pin is named by digest"));
        Ok(self
            .client
            .head_manifest(&pin.repository().tagged(&tag))?
            .digest)
    }

    fn cosign(&self, command: &CosignCommand) -> Result<Vec<u8>, cosign::CosignError> {
        self.journal(Action::Cosign(command.clone()));
        self.cosign.output(command)
    }
}

/// The reference a run names: a placeholder reaching a door is an error, never a request.
fn known(named: &Named) -> anyhow::Result<&ImageRef> {
    match named {
        Named::Known(reference) => Ok(reference),
        Named::Pending { .. } => {
            bail!("{named} is a dry run's placeholder: a run names only digests it knows")
        }
    }
}

/// A manifest read through the doors that must be an index.
fn read_index(doors: Doors<'_>, image: &ImageRef) -> anyhow::Result<(IndexSummary, Manifest)> {
    let manifest = doors.read(image)?;
    let index = IndexSummary::parse(&manifest.bytes)
        .with_context(|| format!("reading the manifest of {image}"))?;
    Ok((index, manifest))
}

impl Ctx<'_> {
    /// Performs the work of one step of a concurrent phase; what it found is recorded afterwards, in step order.
    fn perform(&self, doors: Doors<'_>, work: &ConcurrentWork<'_>) -> anyhow::Result<Done> {
        match work {
            ConcurrentWork::Engine {
                step,
                version,
                builder,
            } => {
                check_engine(doors.docker, version, builder, &step.platforms)?;
                Ok(Done::Nothing)
            }
            ConcurrentWork::Login(step) => {
                check_login(&step.registry)?;
                Ok(Done::Nothing)
            }
            ConcurrentWork::Find { step, read } => self.find(doors, step, read),
            ConcurrentWork::Copy { step, from } => self.copy(doors, step, from),
            ConcurrentWork::Verify { step, head } => self.verify(doors, step, head),
            ConcurrentWork::Scanner { step, read } => {
                check_scanner(doors, &step.image, read)?;
                Ok(Done::Nothing)
            }
            ConcurrentWork::VerifyAttestations { step, reads } => {
                self.verify_attestations(doors, step, reads)
            }
            ConcurrentWork::Size { step, reads } => self.size(doors, step.php, reads),
            ConcurrentWork::Tag { step, from } => self.tag(doors, step, from),
            ConcurrentWork::SigningReady { key } => self.signing_ready(doors, key.as_ref()),
            ConcurrentWork::Sign { step, verify, sign } => {
                self.sign(doors, &step.pin, verify, sign)
            }
            ConcurrentWork::CopySignature { step, from } => {
                let (from_pin, to) = (&step.from, &step.to);
                doors
                    .copy_signature(known(from)?, to.repository())
                    .with_context(|| {
                        format!("copying the signature of {from_pin} to {}", to.repository())
                    })?;
                eprintln!("    copied the signature of {from_pin} to {to}");
                Ok(Done::SignatureCopied)
            }
            ConcurrentWork::VerifySignature { step, verify, read } => {
                self.verify_signature(doors, step, verify, read)
            }
        }
    }

    /// What the pin holds. A read whose bytes never match their digest is an error, never taken for an
    /// interrupted push: that would overwrite a pin. A pin is absent as its registry says so: distribution's
    /// 404, GHCR's 403 `DENIED` (a first push creates the repository), and Docker Hub's 401 after a token
    /// from docker's login, where a push is refused too: that stops the release here, before anything is
    /// pushed, with the repository to create and where.
    fn find(&self, doors: Doors<'_>, step: &FindStep, read: &Named) -> anyhow::Result<Done> {
        let (php, pin) = (step.php, &step.pin);
        // With push asked for: the release pushes there, and that is what tells a repository Docker Hub lets a
        // first push create from one it refuses (see `create_first`).
        let found = match doors.read_to_push(known(read)?) {
            Ok(manifest) => match IndexSummary::parse(&manifest.bytes) {
                Ok(index) => FoundPin::Index(index, manifest),
                Err(_) => FoundPin::Manifest(manifest.digest),
            },
            Err(error) if error.absence == Some(Absence::Challenged) => {
                let hint = create_first(pin.repository());
                return Err(anyhow::Error::new(error).context(hint));
            }
            Err(error) if error.is_absent() => FoundPin::Absent,
            Err(error) => {
                let host = pin.namespace().host();
                let hint = match error.kind {
                    FailureKind::DigestMismatch => format!(
                        "every read of {pin} returned bytes that do not match their digest: nothing was changed, and \
                         such a pin is never taken for an interrupted push; check the network and {host}, then run \
                         again"
                    ),
                    FailureKind::Unauthorized if auth::has_login(None, host).unwrap_or(false) => {
                        format!("{host} refused the credentials docker has: run `docker login {host}` again")
                    }
                    _ => format!("cannot tell what {pin} holds; nothing was changed"),
                };
                return Err(anyhow::Error::new(error).context(hint));
            }
        };
        Ok(Done::Found(
            pin.namespace().clone(),
            php,
            pin.clone(),
            found,
        ))
    }

    /// Signs the canonical pin, unless a signature of it already verifies (a resumed release): signing again would
    /// add a second signature and change the signature's digest under the mirrors' copies.
    fn sign(
        &self,
        doors: Doors<'_>,
        pin: &ImageRef,
        verify: &CosignCommand,
        sign: &CosignCommand,
    ) -> anyhow::Result<Done> {
        match doors.cosign(verify) {
            Ok(_) => {
                eprintln!("    {pin} is signed already (its signature verifies)");
                return Ok(Done::AlreadySigned);
            }
            Err(error)
                if matches!(
                    error.failure,
                    cosign::Failure::NoSignature | cosign::Failure::NotVerified
                ) => {}
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("checking whether {pin} is signed already")))
            }
        }
        doors
            .cosign(sign)
            .with_context(|| format!("signing {pin}"))?;
        eprintln!("    signed {pin}");
        Ok(Done::Signed)
    }

    /// Before anything is built: the private key reads (its password is right) and is the public key's pair, or
    /// the workflow's OIDC token is there.
    fn signing_ready(&self, doors: Doors<'_>, pair: Option<&KeyPair<'_>>) -> anyhow::Result<Done> {
        self.plan.signing.ready()?;
        if let Some(KeyPair {
            derive,
            key,
            public_key,
        }) = pair
        {
            let derived = doors
                .cosign(derive)
                .with_context(|| format!("reading the signing key {key}"))?;
            let given = std::fs::read(public_key).with_context(|| {
                format!("reading --signing-public-key {}", public_key.display())
            })?;
            ensure!(
                String::from_utf8_lossy(&derived).trim() == String::from_utf8_lossy(&given).trim(),
                "the signing key {key} is not the pair of --signing-public-key {}: give the .pub written with that key",
                public_key.display()
            );
        }
        Ok(Done::Nothing)
    }

    /// The pin's signature verifies in this registry; its manifest's digest is recorded (and compared across
    /// registries once the phase is done).
    fn verify_signature(
        &self,
        doors: Doors<'_>,
        step: &VerifySignatureStep,
        verify: &CosignCommand,
        read: &Named,
    ) -> anyhow::Result<Done> {
        let (php, reference) = (step.php, &step.reference);
        let digest = self.pin_digest(php);
        doors.cosign(verify).map_err(|error| {
            let why = match error.failure {
                cosign::Failure::NoSignature => "has no signature there",
                cosign::Failure::NotVerified => "has no signature there that verifies",
                _ => "could not be checked",
            };
            anyhow::Error::new(error).context(format!(
                "{reference} ({}) {why}: a moving tag never points at a pin whose signature does not verify",
                digest.short()
            ))
        })?;
        // Its digest is all that is compared (the same signature in every registry): a HEAD.
        let signature = doors
            .signature_digest(known(read)?)
            .with_context(|| format!("reading the signature of {reference}"))?;
        Ok(Done::SignatureVerified(
            reference.namespace().clone(),
            php,
            signature,
        ))
    }

    fn pin_digest(&self, php: PhpLine) -> &Digest {
        &self.outcome.pins[&php].digest
    }

    /// Copies a pin to a mirror by digest; an existing mirror pin is kept only if it is the same image.
    fn copy(&self, doors: Doors<'_>, step: &CopyStep, from: &Named) -> anyhow::Result<Done> {
        let (php, to) = (step.php, &step.to);
        let digest = self.pin_digest(php);
        if let Some((there, _)) = self.existing.get(&(to.namespace().clone(), php)) {
            if there.digest == *digest {
                eprintln!("    {to} already has {}", digest.short());
                return Ok(Done::AlreadyCopied);
            }
            if self.mode != Mode::Republish {
                bail!(
                    "{to} has {} but the canonical pin has {digest}: a pin is never overwritten; \
                     republish the release to replace it",
                    there.digest
                );
            }
        }
        let copied = doors
            .copy(known(from)?, to)
            .with_context(|| format!("copying {from} to {to}"))?;
        ensure!(
            copied.digest == *digest,
            "{to} was stored as {}, not the pin's {digest}",
            copied.digest
        );
        let refused = match copied.mounts_refused {
            0 => String::new(),
            n => format!(", {n} mounts refused and sent instead"),
        };
        eprintln!(
            "    copied {to} ({} blobs sent, {:.1} MB; {} there already, {} mounted{refused})",
            copied.blobs_sent,
            copied.bytes_sent as f64 / 1e6,
            copied.blobs_present,
            copied.blobs_mounted
        );
        Ok(Done::Copied)
    }

    /// The reference serves the digest of its line's canonical pin, which lists every platform. A `HEAD` says
    /// the digest; the pin's bytes, hashed to that digest when it was read back, say the platforms.
    fn verify(&self, doors: Doors<'_>, step: &VerifyStep, head: &Named) -> anyhow::Result<Done> {
        let (phase, php, reference) = (step.phase, step.php, &step.reference);
        if phase == Phase::VerifyTags && self.outcome.left_alone.contains(reference) {
            return Ok(Done::Nothing);
        }
        let expected = self.pin_digest(php);
        let served = doors.head(known(head)?)?;
        if served != *expected {
            bail!("{reference} serves {served} but PHP {php}'s pin is {expected}");
        }
        self.outcome.pins[&php]
            .require_platforms(&self.plan.platforms)
            .with_context(|| format!("verifying {reference}"))?;
        Ok(Done::Verified)
    }

    /// Every platform image of the pin has its attestation manifest in `reference`'s registry, and each holds a
    /// layer for every predicate the plan attests. The index bytes are the canonical pin's: the verify step of the
    /// same phase holds `reference` to that digest, so the attestation digests are the same in every registry.
    fn verify_attestations(
        &self,
        doors: Doors<'_>,
        step: &VerifyAttestationsStep,
        reads: &[Named],
    ) -> anyhow::Result<Done> {
        let (php, reference) = (step.php, &step.reference);
        let index = &self.outcome.pins[&php];
        let unattested: Vec<&str> = index
            .platforms
            .iter()
            .filter(|p| p.attestation.is_none())
            .map(|p| p.platform.as_str())
            .collect();
        ensure!(
            unattested.is_empty(),
            "{reference} ({}) has no attestation manifest for {}: the index lists none whose \
             vnd.docker.reference.digest is that image; the build did not attest it: republish the release",
            index.digest.short(),
            unattested.join(", ")
        );
        let attested = index.platforms.iter().filter(|p| p.attestation.is_some());
        for (platform, manifest) in attested.zip(reads) {
            let bytes = doors
                .read(known(manifest)?)
                .map_err(|error| {
                    let lost = error.kind == FailureKind::NotFound;
                    anyhow::Error::new(error).context(if lost {
                        format!(
                            "{reference}: the attestation manifest of {} ({manifest}) is missing from {}, though the \
                             index lists it: the copy to this registry lost it; copy the pin again (--resume) \
                             before any tag moves",
                            platform.platform,
                            reference.namespace().host()
                        )
                    } else {
                        format!("reading the attestations of {reference} {}", platform.platform)
                    })
                })?
                .bytes;
            let found = stack_images::digest::predicate_types(&bytes)
                .with_context(|| format!("reading {manifest}"))?;
            for wanted in self.plan.attested() {
                ensure!(
                    found.iter().any(|t| wanted.is(t)),
                    "{reference} {}: its attestation manifest {manifest} holds no {} (it holds {}): \
                     the release attests {} for every image; a pin built without it is republished \
                     (`cargo xtask republish`), never tagged as it is",
                    platform.platform,
                    wanted.name(),
                    if found.is_empty() { "nothing".to_owned() } else { found.join(", ") },
                    self.plan.attested_names(" and ")
                );
            }
        }
        Ok(Done::AttestationsVerified(reads.len()))
    }

    /// Compressed size of every platform image, read once from the canonical registry (mirrors hold the same).
    fn size(&self, doors: Doors<'_>, php: PhpLine, reads: &[Named]) -> anyhow::Result<Done> {
        let platforms = &self.outcome.pins[&php].platforms;
        let mut sizes = Vec::new();
        for (platform, read) in platforms.iter().zip(reads) {
            let manifest = doors.read(known(read)?)?;
            let size = stack_images::digest::compressed_size(&manifest.bytes)
                .with_context(|| format!("reading the size of PHP {php} {}", platform.platform))?;
            sizes.push((platform.platform.clone(), size));
        }
        Ok(Done::Sized(php, sizes))
    }

    /// Points a moving tag at its verified pin by storing the pin's own bytes, read and hashed here, under the
    /// tag. A republish moves only the tags that pointed at this release's old images.
    fn tag(&self, doors: Doors<'_>, step: &TagStep, pin: &Named) -> anyhow::Result<Done> {
        let (php, from, to) = (step.php, &step.from, &step.to);
        if self.mode == Mode::Republish {
            let old = self.outcome.old_pins.get(&(to.namespace().clone(), php));
            let current = match doors.client.head_manifest(to) {
                Ok(head) => Some(head.digest),
                Err(error) if error.is_absent() => None,
                Err(error) => return Err(error.into()),
            };
            let follows = match (&current, old) {
                (Some(current), Some(old)) => current == old,
                (None, _) => to.tag() == Some(&tags::release_tag(&self.plan.version)),
                _ => false,
            };
            if !follows {
                eprintln!(
                    "    left {to} alone: it does not point at {}'s old image",
                    self.plan.version
                );
                return Ok(Done::LeftAlone(to.clone()));
            }
        }
        let manifest = &self.outcome.manifests[&php];
        // The bytes are the canonical pin's, read and hashed when it was verified; a mirror's pin has the same
        // digest, so the same bytes.
        ensure!(
            manifest.digest == *self.pin_digest(php),
            "the bytes kept for PHP {php} are not its verified pin's: nothing was moved to them"
        );
        let stored = match doors.put(to, known(pin)?, manifest) {
            Ok(stored) => stored,
            // The registry stored other bytes than the ones sent, every time: the tag may now serve them.
            Err(error) if error.kind == FailureKind::DigestMismatch => {
                return Err(anyhow::Error::new(error).context(format!(
                    "{to} may now serve bytes that are not its pin's: they changed on the way to the registry; \
                     run again with --resume, which sets it to the pin's bytes again and checks them"
                )))
            }
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("moving {to} to {}", manifest.digest.short())))
            }
        };
        ensure!(
            stored == manifest.digest,
            "{to} was stored as {stored}, not the pin's {}",
            manifest.digest
        );
        eprintln!(
            "    {to} -> {}",
            from.tag().map(|t| t.as_str()).unwrap_or_default()
        );
        Ok(Done::Moved(to.clone()))
    }
}

pub struct Executor<'a> {
    plan: &'a Plan,
    docker: &'a Docker,
    client: RegistryClient,
    cosign: Cosign,
    mode: Mode,
    work_dir: PathBuf,
    outcome: Outcome,
    /// Pins that exist already, per registry and line, with their bytes.
    existing: BTreeMap<(Namespace, PhpLine), (IndexSummary, Manifest)>,
    /// Pins that hold a single manifest: left by an interrupted push, replaced when resuming.
    incomplete: Vec<ImageRef>,
    /// Phase n/N, step n/N and the time elapsed, on standard error.
    progress: Progress,
}

impl<'a> Executor<'a> {
    pub fn new(
        plan: &'a Plan,
        docker: &'a Docker,
        client: RegistryClient,
        mode: Mode,
        work_dir: PathBuf,
    ) -> Executor<'a> {
        Executor {
            plan,
            docker,
            client,
            cosign: Cosign::new(),
            mode,
            work_dir,
            outcome: Outcome::default(),
            existing: BTreeMap::new(),
            incomplete: Vec::new(),
            progress: Progress::detect(),
        }
    }

    /// Signs through `cosign` (by default, `cosign` from PATH with this process's environment).
    pub fn with_cosign(mut self, cosign: Cosign) -> Executor<'a> {
        self.cosign = cosign;
        self
    }

    /// Runs every phase that has steps; stops at the first failure, saying what was done and what to do.
    pub fn run(mut self) -> anyhow::Result<Outcome> {
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("creating {}", self.work_dir.display()))?;
        let phases: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|phase| self.plan.steps_in(*phase).next().is_some())
            .collect();
        for (n, phase) in phases.iter().copied().enumerate() {
            self.progress.phase(n + 1, phases.len(), phase.name());
            let started = Instant::now();
            let result = self.phase(phase);
            self.outcome.timings.push((phase.name(), started.elapsed()));
            if let Err(error) = result {
                return Err(error.context(self.stopped_in(phase)));
            }
        }
        self.record_references();
        Ok(self.outcome)
    }

    /// What a failure in `phase` leaves behind, and how to finish.
    fn stopped_in(&self, phase: Phase) -> String {
        let name = phase.name();
        let resume = match self.mode {
            Mode::Release { .. }
                if self.plan.bake_output().and_then(|o| o.platform()).is_none() =>
            {
                "run the same command with --resume to finish the release"
            }
            Mode::Republish => "run the republish again",
            Mode::Release { .. } => "run the same command again",
        };
        match phase {
            Phase::Preflight => format!("{name} failed: nothing was changed"),
            Phase::Build
            | Phase::Mirror
            | Phase::VerifyPins
            | Phase::Sign
            | Phase::MirrorSignatures
            | Phase::VerifySignatures
            | Phase::Sizes => format!(
                "{name} failed: no moving tag was touched; pins pushed so far stay and are verified, never \
                 overwritten, on the next run: {resume}"
            ),
            Phase::MoveTags => format!(
                "{name} failed after {} of {} moving tags were set, each to a verified pin; the others are where \
                 they were: {resume}",
                self.outcome.moved.len(),
                self.plan.steps_in(Phase::MoveTags).count()
            ),
            Phase::VerifyTags => format!(
                "{name} failed: all {} moving tags were set to verified pins, and a check read something else \
                 back: {resume}",
                self.outcome.moved.len()
            ),
        }
    }

    /// The doors of this run, with the executor's own docker.
    fn doors(&self) -> Doors<'_> {
        Doors {
            docker: self.docker,
            client: &self.client,
            cosign: &self.cosign,
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            plan: self.plan,
            mode: self.mode,
            outcome: &self.outcome,
            existing: &self.existing,
        }
    }

    fn phase(&mut self, phase: Phase) -> anyhow::Result<()> {
        let plan = self.plan;
        // A phase that builds runs one step after another: what it reads back depends on the bake, so its
        // work is decided step by step, once the digests before it are known.
        if plan.steps_in(phase).any(Step::builds) {
            return self.one_by_one(phase);
        }
        let names = Names::Run(&self.outcome);
        let mut works = Vec::new();
        for step in plan.steps_in(phase) {
            match work(plan, step, &self.work_dir, &names) {
                Work::Concurrent(work) => works.push((step, work)),
                Work::Build(_) => return self.one_by_one(phase),
            }
        }
        let done = self.concurrently(&works)?;
        let verified_before = self.outcome.verified;
        for done in done {
            self.record(done);
        }
        match phase {
            Phase::Preflight => self.after_preflight()?,
            Phase::VerifyPins | Phase::VerifyTags => {
                eprintln!(
                    "    {} references verified",
                    self.outcome.verified - verified_before
                );
                if phase == Phase::VerifyPins && self.outcome.attestations_verified > 0 {
                    eprintln!(
                        "    {} attestation manifests verified ({} each)",
                        self.outcome.attestations_verified,
                        self.plan.attested_names(" + ")
                    );
                }
            }
            Phase::VerifySignatures => self.same_signatures()?,
            _ => {}
        }
        Ok(())
    }

    /// The build phase, one step after another: the bake (or the assemblies) with the seeds alongside, then
    /// each line read back, each step's work decided when it starts, with the digests known by then.
    fn one_by_one(&mut self, phase: Phase) -> anyhow::Result<()> {
        let plan = self.plan;
        let names = Names::Run(&self.outcome);
        let seeds: Vec<(PhpLine, Seed)> = plan
            .steps_in(phase)
            .filter(|step| matches!(step, Step::Seed(_)))
            .filter_map(|step| match work(plan, step, &self.work_dir, &names) {
                Work::Build(BuildWork::Seed { step, seed }) => Some((step.php, seed)),
                _ => None,
            })
            .collect();
        let steps = plan.steps_in(phase).count();
        for (n, step) in plan.steps_in(phase).enumerate() {
            // Said when the next one starts: a step's work is done by then.
            if let Some(previous) = n.checked_sub(1).and_then(|m| plan.steps_in(phase).nth(m)) {
                self.progress.step(n, steps, &label(previous));
            }
            match work(plan, step, &self.work_dir, &Names::Run(&self.outcome)) {
                // Run alongside the bake, by `bake`.
                Work::Build(BuildWork::Seed { .. }) => {}
                Work::Build(BuildWork::Bake { step, command }) => {
                    self.bake(&step.lines, &step.output, &command, &seeds)?
                }
                Work::Build(BuildWork::Assemble { step, command }) => {
                    self.assemble(step.php, &step.pin, &command)?
                }
                Work::Build(BuildWork::ReadBack { step, read }) => {
                    self.read_back(step.php, &step.pin, &read)?
                }
                Work::Concurrent(work) => {
                    let done = self.ctx().perform(self.doors(), &work)?;
                    self.record(done);
                }
            }
        }
        if let Some(last) = plan.steps_in(phase).last() {
            self.progress.step(steps, steps, &label(last));
        }
        Ok(())
    }

    /// Runs the steps of a phase at most [`PER_REGISTRY`] at a time per registry host; the first failure in step
    /// order is the phase's, and once one failed no further step starts.
    fn concurrently(&self, works: &[(&Step, ConcurrentWork<'_>)]) -> anyhow::Result<Vec<Done>> {
        let mut queues: BTreeMap<String, VecDeque<usize>> = BTreeMap::new();
        for (n, (step, _)) in works.iter().enumerate() {
            queues
                .entry(step.registry().unwrap_or_default().to_owned())
                .or_default()
                .push_back(n);
        }
        let ctx = self.ctx();
        let results: Vec<Mutex<Option<anyhow::Result<Done>>>> =
            works.iter().map(|_| Mutex::new(None)).collect();
        let failed = AtomicBool::new(false);
        let finished = AtomicUsize::new(0);
        let queues: Vec<Mutex<VecDeque<usize>>> = queues.into_values().map(Mutex::new).collect();
        let mut workers = Vec::new();
        for queue in &queues {
            let count = queue
                .lock()
                .expect("no worker has started")
                .len()
                .min(PER_REGISTRY);
            for _ in 0..count {
                workers.push((queue, self.docker.try_clone()?));
            }
        }
        std::thread::scope(|scope| {
            for (queue, docker) in workers {
                let (ctx, client, cosign, results, failed, finished, progress) = (
                    &ctx,
                    &self.client,
                    &self.cosign,
                    &results,
                    &failed,
                    &finished,
                    &self.progress,
                );
                scope.spawn(move || loop {
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let Some(n) = queue.lock().expect("a worker panicked").pop_front() else {
                        break;
                    };
                    let doors = Doors {
                        docker: &docker,
                        client,
                        cosign,
                    };
                    let result = ctx.perform(doors, &works[n].1);
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    } else {
                        let count = finished.fetch_add(1, Ordering::SeqCst) + 1;
                        progress.step(count, works.len(), &label(works[n].0));
                    }
                    *results[n].lock().expect("a worker panicked") = Some(result);
                });
            }
        });
        let mut done = Vec::new();
        for result in results {
            match result.into_inner().expect("a worker panicked") {
                Some(result) => done.push(result?),
                // Not started because another step failed first; that failure comes earlier or later in order.
                None => continue,
            }
        }
        ensure!(
            !failed.load(Ordering::SeqCst),
            "a step failed without an error"
        );
        Ok(done)
    }

    fn record(&mut self, done: Done) {
        match done {
            Done::Nothing => {}
            Done::Found(namespace, php, pin, found) => match found {
                FoundPin::Absent => {}
                FoundPin::Index(index, manifest) => {
                    self.existing.insert((namespace, php), (index, manifest));
                }
                FoundPin::Manifest(digest) => {
                    eprintln!(
                        "    {pin} holds a single manifest ({}): an interrupted push",
                        digest.short()
                    );
                    self.incomplete.push(pin);
                }
            },
            Done::Verified => self.outcome.verified += 1,
            Done::AttestationsVerified(count) => self.outcome.attestations_verified += count,
            Done::Copied => self.outcome.copied += 1,
            Done::AlreadyCopied => self.outcome.already_copied += 1,
            Done::Sized(php, sizes) => {
                for (platform, size) in sizes {
                    self.outcome.sizes.insert((php, platform), size);
                }
            }
            Done::Moved(reference) => self.outcome.moved.push(reference),
            Done::LeftAlone(reference) => self.outcome.left_alone.push(reference),
            Done::Signed => self.outcome.signed += 1,
            Done::AlreadySigned => self.outcome.already_signed += 1,
            Done::SignatureCopied => self.outcome.signatures_copied += 1,
            Done::SignatureVerified(namespace, php, digest) => {
                self.outcome.signatures.insert((namespace, php), digest);
            }
        }
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
                    .map(|((ns, php), (i, _))| {
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
                    .map(|(k, (i, _))| (k.clone(), i.digest.clone()))
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

    /// Every registry serves the canonical signature of each pin, byte for byte: a mirror's copy that verifies
    /// but differs (another signature added or one lost) is not the release's.
    fn same_signatures(&self) -> anyhow::Result<()> {
        let canonical = &self.plan.canonical;
        for ((namespace, php), digest) in &self.outcome.signatures {
            let Some(expected) = self.outcome.signatures.get(&(canonical.clone(), *php)) else {
                continue;
            };
            ensure!(
                digest == expected,
                "the signature of {} is {digest} but the canonical one is {expected}: the copy to the mirror changed it",
                self.pin_in(namespace, *php)
            );
        }
        eprintln!(
            "    {} signatures verified, the same in every registry",
            self.outcome.signatures.len()
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
        let Some((index, manifest)) = self.existing.get(&(self.plan.canonical.clone(), php)) else {
            return Ok(false);
        };
        let pin = &self.plan.build(php).pin;
        index
            .require_platforms(&self.plan.platforms)
            .with_context(|| format!("{pin} exists but is incomplete: republish it"))?;
        eprintln!("    kept {pin} ({})", index.digest.short());
        self.outcome.kept.push(php);
        self.outcome.pins.insert(php, index.clone());
        self.outcome.manifests.insert(php, manifest.clone());
        Ok(true)
    }

    /// Builds and pushes the lines in one bake (on resume, only the lines not kept), seeding the registries with
    /// the built lines' base blobs meanwhile.
    fn bake(
        &mut self,
        lines: &[PhpLine],
        output: &BakeOutput,
        command: &DockerCommand,
        seeds: &[(PhpLine, Seed)],
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
        let seeds: Vec<&Seed> = seeds
            .iter()
            .filter(|(php, _)| to_build.contains(php))
            .map(|(_, seed)| seed)
            .collect();
        for seed in &seeds {
            self.doors().journal(Action::Seed((*seed).clone()));
        }
        let built = self
            .progress
            .heartbeat(&format!("building PHP {}", names.join(", ")), || {
                self.seeding(&seeds, || {
                    with_retries(|| self.docker.run_logged(command, &log))
                })
            });
        built.map_err(|e| match output {
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

    /// Runs `build` while the seeds run, one registry host at a time each (its blobs a few at a time), and
    /// reports them. A seed that fails is a warning: its blobs are sent by the push and the copy, as without it.
    /// Seeds not started when the build fails are dropped.
    fn seeding<T>(
        &self,
        seeds: &[&Seed],
        build: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut by_host: BTreeMap<&str, Vec<&Seed>> = BTreeMap::new();
        for seed in seeds {
            by_host
                .entry(seed.to.namespace().host())
                .or_default()
                .push(seed);
        }
        let built = AtomicBool::new(false);
        let started = Instant::now();
        let (result, seeded) = std::thread::scope(|scope| {
            let workers: Vec<_> = by_host
                .into_values()
                .map(|host_seeds| {
                    let (client, built) = (&self.client, &built);
                    scope.spawn(move || {
                        let mut results = Vec::new();
                        // Per base, the first repository of this host seeded with its blobs: the next ones
                        // mount them from there.
                        let mut seeded: BTreeMap<&ImageRef, &Repository> = BTreeMap::new();
                        for Seed {
                            base,
                            platforms,
                            to,
                        } in host_seeds
                        {
                            if built.load(Ordering::SeqCst) {
                                break;
                            }
                            let result = client
                                .seed(base, platforms, to, seeded.get(base).copied())
                                .with_context(|| format!("seeding {to} with the blobs of {base}"));
                            if result.is_ok() {
                                seeded.entry(base).or_insert(to);
                            }
                            results.push((started.elapsed(), result));
                        }
                        results
                    })
                })
                .collect();
            let result = build();
            built.store(true, Ordering::SeqCst);
            let seeded: Vec<_> = workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("a seed worker panicked"))
                .collect();
            (result, seeded)
        });
        let (mut present, mut mounted, mut sent, mut bytes, mut last) =
            (0, 0, 0, 0, Duration::ZERO);
        for (at, result) in &seeded {
            match result {
                Ok(copied) => {
                    present += copied.blobs_present;
                    mounted += copied.blobs_mounted;
                    sent += copied.blobs_sent;
                    bytes += copied.bytes_sent;
                    last = last.max(*at);
                }
                Err(error) => eprintln!(
                    "    warning: {error:#}; the push and the mirror copy send those blobs instead"
                ),
            }
        }
        if seeded.iter().any(|(_, result)| result.is_ok()) {
            eprintln!(
                "    seeded {} of {} repositories with their base's blobs while building, done after {:.1} s: \
                 {sent} blobs sent ({:.1} MB), {present} there already, {mounted} mounted",
                seeded.iter().filter(|(_, result)| result.is_ok()).count(),
                seeds.len(),
                last.as_secs_f64(),
                bytes as f64 / 1e6,
            );
        }
        result
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
    fn read_back(&mut self, php: PhpLine, pin: &ImageRef, read: &Named) -> anyhow::Result<()> {
        if self.outcome.kept.contains(&php) {
            return Ok(());
        }
        let reported = self.outcome.reported.get(&php).cloned();
        if let Some(BakeOutput::Staging { .. } | BakeOutput::ByDigest { .. }) =
            self.plan.bake_output()
        {
            // Read by digest: the client checks the bytes against it.
            let image = known(read)?;
            self.doors()
                .read(image)
                .with_context(|| format!("reading back {image}"))?;
            eprintln!("    pushed {image}");
            self.outcome.platform_images.insert(php, image.clone());
            return Ok(());
        }
        let (index, manifest) = read_index(self.doors(), known(read)?)?;
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
        self.outcome.manifests.insert(php, manifest);
        Ok(())
    }

    fn record_references(&mut self) {
        let mut references = Vec::new();
        for step in &self.plan.steps {
            let (php, reference, kind) = match step {
                Step::Verify(VerifyStep {
                    phase: Phase::VerifyPins,
                    php,
                    reference,
                }) => (*php, reference, TagKind::Pin),
                Step::Tag(TagStep { php, to, kind, .. }) if self.outcome.moved.contains(to) => {
                    (*php, to, *kind)
                }
                _ => continue,
            };
            // Every verified or moved reference is tagged: the plan only verifies and moves tags.
            let Some(tag) = reference.tag().cloned() else {
                continue;
            };
            let index = &self.outcome.pins[&php];
            let platforms = self.outcome.platform_records(php);
            let signature = (kind == TagKind::Pin)
                .then(|| {
                    let digest = self
                        .outcome
                        .signatures
                        .get(&(reference.namespace().clone(), php))?;
                    Some(crate::maintain::notes::SignatureRecord {
                        digest: digest.clone(),
                        verify: self
                            .plan
                            .signing
                            .notes_command(&reference.repository().at(&index.digest))?,
                    })
                })
                .flatten();
            references.push(Reference {
                reference: reference.repository().tagged(&tag),
                registry: reference.namespace().clone(),
                tag,
                kind,
                php,
                digest: index.digest.clone(),
                platforms,
                signature,
            });
        }
        self.outcome.references = references;
    }
}

/// What a step is, for progress lines: its kind and the registry it talks to.
fn label(step: &Step) -> String {
    let kind = match step {
        Step::Engine(_) => "engine check",
        Step::Login(_) => "login",
        Step::Find(_) => "find the pin",
        Step::Seed(_) => "seed",
        Step::Bake(_) => "bake",
        Step::Assemble(_) => "assemble",
        Step::ReadBack(_) => "read back",
        Step::Copy(_) => "copy",
        Step::Scanner(_) => "SBOM scanner",
        Step::Verify(_) => "verify",
        Step::VerifyAttestations(_) => "verify attestations",
        Step::Size(_) => "size",
        Step::SigningReady(_) => "signing ready",
        Step::Sign(_) => "sign",
        Step::CopySignature(_) => "copy the signature",
        Step::VerifySignature(_) => "verify the signature",
        Step::Tag(_) => "tag",
    };
    match step.registry() {
        Some(host) => format!("{kind} on {host}"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_create_first(repository: &str, expected: &str) {
        let repository: Repository = repository.parse().unwrap();
        let hint = create_first(&repository);
        assert!(hint.contains(expected), "{hint}");
        assert!(
            hint.ends_with("then run again; nothing was pushed"),
            "{hint}"
        );
    }

    #[test]
    fn a_repository_to_create_is_named_with_where() {
        check_create_first(
            "docker.io/20istack/php-fpm",
            "create `20istack/php-fpm` at https://hub.docker.com/repository/create?namespace=20istack",
        );
        check_create_first(
            "127.0.0.1:5000/20istack/php-fpm",
            "create `20istack/php-fpm` where 127.0.0.1:5000's repositories are created",
        );
    }
}
