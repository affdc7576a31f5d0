//! `cargo xtask audit`: whether what every release published is still what its notes say, in every registry, and
//! `--repair`, which puts back what drifted from verified bytes only, without rebuilding.
//!
//! The audit is planned as plain data ([`plan`]: one [`Check`] per recorded tag, child manifest and signature,
//! each read once) and executed with one match per check ([`Auditor::run`]). A moving tag is held to the newest
//! release whose notes record it: the notes record what the tag rules (`stack_images::tags::tags_for`) decided
//! when that release moved it, so an older release's record of `php-8.4` is superseded, not drift. A tag needs a
//! `HEAD` only: an index is named by the digest of its bytes, so a tag serving the recorded digest lists the
//! recorded platforms and attestations; those children are then checked present with a `HEAD` each, once per
//! repository. A registry that cannot be read is "could not check" (exit 2), never drift (exit 1).
//!
//! A repair ([`plan_repairs`], then [`Repairer::run`]) is a copy from a place that holds the recorded digest (the
//! same repository first, then the release's other registries), read by digest so every byte is checked on the
//! way, the tag written last; what no registry still holds is listed with what to do.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use serde::Serialize;
use stack_images::{
    cosign::{self, Cosign, CosignCommand, Subject, Verifier},
    docker::FailureKind,
    registry::{RegistryClient, RegistryError},
    release_notes::SigningRecord,
    tags::TagKind,
    Digest, ImageRef, Namespace, ReleaseNotes, ReleaseVersion, Repository,
};
use xshell::Shell;

use crate::{display_path, maintain::notes, project_root, table::plural, Exit};

#[derive(Args, Debug)]
pub struct AuditCmd {
    /// Audit this release only (default: every release in the notes directory)
    #[arg(long, value_name = "vX.Y.Z")]
    release: Option<ReleaseVersion>,
    /// Release notes directory: the vX.Y.Z.json files say what each release published
    #[arg(long, value_name = "DIR", default_value = "release-notes")]
    notes_dir: PathBuf,
    /// The public key of a release signed with a key (default: the file the notes name, in the notes directory)
    #[arg(long, value_name = "PATH")]
    public_key: Option<PathBuf>,
    /// How signatures are checked: `verify` runs cosign with the release's recorded mode; `digest` only compares
    /// the signature manifest's digest with the recorded one (a HEAD)
    #[arg(long, value_enum, default_value_t = SignatureCheck::Verify)]
    signatures: SignatureCheck,
    /// Print the findings as JSON on standard output
    #[arg(long)]
    json: bool,
    /// Put back what drifted, from verified bytes that some registry still holds
    #[arg(long)]
    repair: bool,
    /// With --repair: print what would be put back, and change nothing
    #[arg(long, requires = "repair")]
    dry_run: bool,
}

/// How a signature is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureCheck {
    Verify,
    Digest,
}

/// One read of a registry, and what the notes say it must find.
#[derive(Clone, Debug)]
pub enum Check {
    /// A pin or moving tag serves the recorded index digest.
    Tag {
        reference: ImageRef,
        kind: TagKind,
        release: ReleaseVersion,
        expected: Digest,
    },
    /// A manifest a recorded index lists (a platform's image or its attestation) is present in the repository.
    Child {
        image: ImageRef,
        what: String,
        of: ImageRef,
        release: ReleaseVersion,
    },
    /// The pin's signature manifest (`sha256-<pin>.sig`) is the one the notes record.
    Signature {
        /// `repository@pin digest`.
        pin: ImageRef,
        /// The pin's tag, to name it.
        tagged: ImageRef,
        expected: Digest,
        release: ReleaseVersion,
    },
    /// cosign verifies the pin's signature with the release's recorded mode (after [`Check::Signature`] held).
    Verify {
        pin: ImageRef,
        tagged: ImageRef,
        /// The verifier, or why there is none (a key release audited without its public key).
        verifier: Result<Verifier, String>,
        release: ReleaseVersion,
    },
}

impl Check {
    fn host(&self) -> &str {
        match self {
            Check::Tag { reference, .. } => reference.namespace().host(),
            Check::Child { image, .. } => image.namespace().host(),
            Check::Signature { pin, .. } | Check::Verify { pin, .. } => pin.namespace().host(),
        }
    }

    fn release(&self) -> &ReleaseVersion {
        match self {
            Check::Tag { release, .. }
            | Check::Child { release, .. }
            | Check::Signature { release, .. }
            | Check::Verify { release, .. } => release,
        }
    }

    fn place(&self) -> String {
        match self {
            Check::Tag { reference, .. } => reference.to_string(),
            Check::Child { image, .. } => image.to_string(),
            Check::Signature { tagged, .. } | Check::Verify { tagged, .. } => tagged.to_string(),
        }
    }
}

/// What kind of drift a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A pin serves other bytes.
    PinOverwritten,
    /// A moving tag serves another index than its release's.
    TagMoved,
    /// A tag serves nothing.
    TagMissing,
    /// A platform image or attestation manifest an index lists is gone.
    ManifestMissing,
    SignatureMissing,
    /// The signature manifest is not the recorded one.
    SignatureReplaced,
    /// cosign does not verify the signature with the release's mode.
    SignatureNotVerified,
    /// The registry could not be read: not drift.
    CouldNotCheck,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::PinOverwritten => "pin overwritten",
            Kind::TagMoved => "moving tag moved",
            Kind::TagMissing => "tag missing",
            Kind::ManifestMissing => "manifest missing",
            Kind::SignatureMissing => "signature missing",
            Kind::SignatureReplaced => "signature replaced",
            Kind::SignatureNotVerified => "signature not verified",
            Kind::CouldNotCheck => "could not check",
        }
    }
}

/// One line of the audit's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub release: ReleaseVersion,
    /// Where: the tag, `repository@digest` of a manifest, or the pin whose signature it is.
    #[serde(rename = "where")]
    pub place: String,
    pub expected: String,
    pub found: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({}): expected {}, found {}",
            self.kind.describe(),
            self.place,
            self.release,
            self.expected,
            self.found
        )
    }
}

/// What an executed check came to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Holds,
    /// Not tried: what it depends on drifted, and that finding says so.
    Skipped,
    Drift {
        kind: Kind,
        found: String,
        /// The digest the check expected, for a repair.
        expected: Digest,
    },
    Unchecked(String),
}

/// Every check of the releases in `all` (or of `only`), deduplicated: each tag once under the newest release that
/// records it, each child manifest and signature once per repository.
pub fn plan(
    all: &[ReleaseNotes],
    only: Option<&ReleaseVersion>,
    signatures: SignatureCheck,
    public_key: &dyn Fn(&ReleaseNotes, &str) -> Result<PathBuf, String>,
) -> Vec<Check> {
    // The owner of each moving tag: the newest release that records it.
    let mut owner: BTreeMap<&ImageRef, &ReleaseVersion> = BTreeMap::new();
    for notes in all {
        for reference in notes.references.iter().filter(|r| r.kind.is_moving()) {
            let entry = owner.entry(&reference.reference).or_insert(&notes.version);
            if notes.version > **entry {
                *entry = &notes.version;
            }
        }
    }
    let mut releases: Vec<&ReleaseNotes> = all
        .iter()
        .filter(|n| only.is_none_or(|v| *v == n.version))
        .collect();
    releases.sort_by(|a, b| b.version.cmp(&a.version));

    let mut checks = Vec::new();
    let mut tags = BTreeSet::new();
    let mut children = BTreeSet::new();
    for notes in releases {
        let verifier = match &notes.signing {
            Some(SigningRecord::Key { public_key: name }) => {
                public_key(notes, name).map(Verifier::Key)
            }
            Some(SigningRecord::Keyless { identity, issuer }) => Ok(Verifier::Identity {
                identity: identity.clone(),
                issuer: issuer.clone(),
            }),
            Some(SigningRecord::None) | None => {
                Err("the release records no way to verify".to_owned())
            }
        };
        for reference in &notes.references {
            if reference.kind.is_moving()
                && owner.get(&reference.reference) != Some(&&notes.version)
            {
                continue;
            }
            if !tags.insert(&reference.reference) {
                continue;
            }
            checks.push(Check::Tag {
                reference: reference.reference.clone(),
                kind: reference.kind,
                release: notes.version.clone(),
                expected: reference.digest.clone(),
            });
            let repository = reference.reference.repository();
            let platforms = if reference.platforms.is_empty() {
                notes
                    .images
                    .iter()
                    .find(|i| i.digest == reference.digest)
                    .map(|i| i.platforms.as_slice())
                    .unwrap_or_default()
            } else {
                reference.platforms.as_slice()
            };
            for platform in platforms {
                let mut wanted = vec![(
                    platform.digest.clone(),
                    format!("{} image", platform.platform),
                )];
                if let Some(attestation) = &platform.attestation {
                    wanted.push((
                        attestation.clone(),
                        format!("{} attestation", platform.platform),
                    ));
                }
                for (digest, what) in wanted {
                    if children.insert((repository.clone(), digest.clone())) {
                        checks.push(Check::Child {
                            image: repository.at(&digest),
                            what,
                            of: reference.reference.clone(),
                            release: notes.version.clone(),
                        });
                    }
                }
            }
            if let Some(signature) = &reference.signature {
                let pin = repository.at(&reference.digest);
                checks.push(Check::Signature {
                    pin: pin.clone(),
                    tagged: reference.reference.clone(),
                    expected: signature.digest.clone(),
                    release: notes.version.clone(),
                });
                if signatures == SignatureCheck::Verify {
                    checks.push(Check::Verify {
                        pin,
                        tagged: reference.reference.clone(),
                        verifier: verifier.clone(),
                        release: notes.version.clone(),
                    });
                }
            }
        }
    }
    checks
}

/// Runs checks through the registry client and the cosign door, remembering what it learnt (which manifests are
/// where, which registries are down) for the repair.
pub struct Auditor<'a> {
    client: &'a RegistryClient,
    cosign: &'a Cosign,
    /// Hosts that could not be read, with the first error: their other checks are not tried.
    down: BTreeMap<String, String>,
    /// `(repository, digest)` seen present, or seen absent.
    pub present: BTreeSet<(Repository, Digest)>,
    pub absent: BTreeSet<(Repository, Digest)>,
    /// Signatures that hold, by `repository@pin digest`.
    signed: BTreeSet<ImageRef>,
}

/// Every check with its outcome, and what it cost.
pub struct Report {
    pub checks: Vec<Check>,
    outcomes: Vec<Outcome>,
    pub seconds: f64,
}

impl Report {
    pub fn findings(&self) -> Vec<Finding> {
        self.checks
            .iter()
            .zip(&self.outcomes)
            .filter_map(|(check, outcome)| {
                let (kind, found, expected) = match outcome {
                    Outcome::Holds | Outcome::Skipped => return None,
                    Outcome::Drift {
                        kind,
                        found,
                        expected,
                    } => (*kind, found.clone(), expected.to_string()),
                    Outcome::Unchecked(why) => (Kind::CouldNotCheck, why.clone(), expected(check)),
                };
                Some(Finding {
                    kind,
                    release: check.release().clone(),
                    place: check.place(),
                    expected,
                    found,
                })
            })
            .collect()
    }

    fn count(&self, wanted: fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|o| wanted(o)).count()
    }
}

fn expected(check: &Check) -> String {
    match check {
        Check::Tag { expected, .. } | Check::Signature { expected, .. } => expected.to_string(),
        Check::Child { image, .. } => format!("{} present", image.digest().expect("by digest")),
        Check::Verify { .. } => "a verified signature".to_owned(),
    }
}

impl<'a> Auditor<'a> {
    pub fn new(client: &'a RegistryClient, cosign: &'a Cosign) -> Auditor<'a> {
        Auditor {
            client,
            cosign,
            down: BTreeMap::new(),
            present: BTreeSet::new(),
            absent: BTreeSet::new(),
            signed: BTreeSet::new(),
        }
    }

    pub fn run(&mut self, checks: Vec<Check>, names: &Names) -> Report {
        let started = Instant::now();
        let outcomes = checks
            .iter()
            .map(|check| match self.down.get(check.host()) {
                Some(error) => Outcome::Unchecked(format!("not read: {error}")),
                None => self.check(check, names),
            })
            .collect();
        Report {
            checks,
            outcomes,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    fn check(&mut self, check: &Check, names: &Names) -> Outcome {
        match check {
            Check::Tag {
                reference,
                kind,
                expected,
                ..
            } => match self.head(reference) {
                Ok(Some(found)) if found == *expected => {
                    self.present.insert((reference.repository().clone(), found));
                    Outcome::Holds
                }
                Ok(Some(found)) => {
                    self.present
                        .insert((reference.repository().clone(), found.clone()));
                    Outcome::Drift {
                        kind: if *kind == TagKind::Pin {
                            Kind::PinOverwritten
                        } else {
                            Kind::TagMoved
                        },
                        found: names.describe(reference.repository(), &found),
                        expected: expected.clone(),
                    }
                }
                Ok(None) => Outcome::Drift {
                    kind: Kind::TagMissing,
                    found: "nothing (the tag does not exist)".to_owned(),
                    expected: expected.clone(),
                },
                Err(error) => self.unchecked(reference, error),
            },
            Check::Child {
                image, what, of, ..
            } => {
                let digest = image.digest().expect("a child is named by digest").clone();
                let key = (image.repository().clone(), digest.clone());
                match self.head(image) {
                    Ok(Some(_)) => {
                        self.present.insert(key);
                        Outcome::Holds
                    }
                    Ok(None) => {
                        self.absent.insert(key);
                        Outcome::Drift {
                            kind: Kind::ManifestMissing,
                            found: format!("no {what} of {of} (it was deleted)"),
                            expected: digest,
                        }
                    }
                    Err(error) => self.unchecked(image, error),
                }
            }
            Check::Signature { pin, expected, .. } => {
                let tag = cosign::signature_tag(pin.digest().expect("a pin is named by digest"));
                let reference = pin.repository().tagged(&tag);
                match self.head(&reference) {
                    Ok(Some(found)) if found == *expected => {
                        self.signed.insert(pin.clone());
                        Outcome::Holds
                    }
                    Ok(Some(found)) => Outcome::Drift {
                        kind: Kind::SignatureReplaced,
                        found: format!("{found} under {tag}"),
                        expected: expected.clone(),
                    },
                    Ok(None) => Outcome::Drift {
                        kind: Kind::SignatureMissing,
                        found: format!("no {tag}"),
                        expected: expected.clone(),
                    },
                    Err(error) => self.unchecked(&reference, error),
                }
            }
            Check::Verify { pin, verifier, .. } => {
                if !self.signed.contains(pin) {
                    // Its signature manifest drifted or was not read: that finding says so already.
                    return Outcome::Skipped;
                }
                let verifier = match verifier {
                    Ok(verifier) => verifier,
                    Err(why) => return Outcome::Unchecked(why.clone()),
                };
                let command = match CosignCommand::verify(verifier, Subject::Image(pin)) {
                    Ok(command) => command,
                    Err(error) => return Outcome::Unchecked(format!("{error:#}")),
                };
                let expected = pin.digest().expect("by digest").clone();
                match self.cosign.output(&command) {
                    Ok(_) => Outcome::Holds,
                    Err(error) => match error.failure {
                        cosign::Failure::NoSignature => Outcome::Drift {
                            kind: Kind::SignatureMissing,
                            found: "cosign finds no signature".to_owned(),
                            expected,
                        },
                        cosign::Failure::NotVerified => Outcome::Drift {
                            kind: Kind::SignatureNotVerified,
                            found: format!("`{}` does not verify it", error.command),
                            expected,
                        },
                        _ => Outcome::Unchecked(error.to_string()),
                    },
                }
            }
        }
    }

    /// The digest a reference serves, `None` when the registry says it has none.
    fn head(&self, reference: &ImageRef) -> Result<Option<Digest>, RegistryError> {
        match self.client.head_manifest(reference) {
            Ok(head) => Ok(Some(head.digest)),
            Err(error) if error.is_absent() => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn unchecked(&mut self, reference: &ImageRef, error: RegistryError) -> Outcome {
        if !matches!(error.kind, FailureKind::DigestMismatch | FailureKind::Other) {
            self.down
                .entry(reference.namespace().host().to_owned())
                .or_insert_with(|| error.to_string());
        }
        Outcome::Unchecked(error.to_string())
    }
}

/// What a digest is, by the notes: `sha256:… (v1.0.0-php-8.4)`, so a tag moved to an older pin says so.
#[derive(Default)]
pub struct Names(BTreeMap<(Repository, Digest), String>);

impl Names {
    pub fn new(all: &[ReleaseNotes]) -> Names {
        let mut names = BTreeMap::new();
        for notes in all {
            for reference in notes.references.iter().filter(|r| r.kind == TagKind::Pin) {
                names.insert(
                    (
                        reference.reference.repository().clone(),
                        reference.digest.clone(),
                    ),
                    reference.tag.to_string(),
                );
            }
        }
        Names(names)
    }

    fn describe(&self, repository: &Repository, digest: &Digest) -> String {
        match self.0.get(&(repository.clone(), digest.clone())) {
            Some(pin) => format!("{digest} (the pin {pin})"),
            None => format!("{digest} (no release records it)"),
        }
    }
}

/// One repair: a copy from verified bytes, or what to do by hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "repair", rename_all = "kebab-case")]
pub enum Repair {
    /// `from` (named by digest, so every byte read is checked) copied to `to`, tried in order until one works;
    /// `to` then serves `digest`.
    Copy {
        finding: Finding,
        sources: Vec<ImageRef>,
        to: ImageRef,
        digest: Digest,
    },
    /// No registry holds verified bytes to put back.
    Manual { finding: Finding, todo: String },
}

/// The repair of every finding, from what the audit learnt of where each digest is.
pub fn plan_repairs(report: &Report, all: &[ReleaseNotes], auditor: &Auditor) -> Vec<Repair> {
    let findings = report.findings();
    let mut findings = findings.into_iter();
    let mut repairs = Vec::new();
    for (check, outcome) in report.checks.iter().zip(&report.outcomes) {
        let finding = match outcome {
            Outcome::Holds | Outcome::Skipped => continue,
            _ => findings
                .next()
                .expect("one finding per outcome that is not Holds"),
        };
        let Outcome::Drift { expected, .. } = outcome else {
            repairs.push(Repair::Manual {
                finding,
                todo: "not drift: run the audit again when the registry answers".to_owned(),
            });
            continue;
        };
        let notes = all
            .iter()
            .find(|n| n.version == *check.release())
            .expect("a check comes from some notes");
        let repositories: Vec<Repository> = std::iter::once(&notes.canonical)
            .chain(&notes.mirrors)
            .map(|n: &Namespace| n.repository(&notes.image))
            .collect();
        let tagged = match check {
            Check::Tag { reference, .. } => reference,
            Check::Child { of, .. } => of,
            Check::Signature { tagged, .. } | Check::Verify { tagged, .. } => tagged,
        };
        let line = notes
            .references
            .iter()
            .find(|r| r.reference == *tagged)
            .map_or_else(|| "M.m".to_owned(), |r| r.php.to_string());
        let republish = format!(
            "no registry holds {expected} any more: republish the line (`cargo xtask republish {} --lines {line} \
             --reason …`) or restore the manifest from a backup, then run the audit again",
            notes.version
        );
        let repair = match check {
            Check::Tag { reference, .. } | Check::Child { image: reference, .. } => {
                let own = reference.repository();
                let mut ordered: Vec<&Repository> = vec![own];
                ordered.extend(repositories.iter().filter(|r| *r != own));
                // The repository itself may still hold the digest untagged (an overwritten tag leaves it).
                let sources: Vec<ImageRef> = ordered
                    .into_iter()
                    .filter(|r| !auditor.absent.contains(&((*r).clone(), expected.clone())))
                    .map(|r| r.at(expected))
                    .collect();
                if sources.is_empty() {
                    Repair::Manual {
                        finding,
                        todo: republish,
                    }
                } else {
                    Repair::Copy {
                        finding,
                        sources,
                        to: reference.clone(),
                        digest: expected.clone(),
                    }
                }
            }
            Check::Signature { pin, .. } => {
                let sources: Vec<ImageRef> = repositories
                    .iter()
                    .filter(|r| *r != pin.repository())
                    .filter(|r| auditor.signed.contains(&r.at(pin.digest().expect("by digest"))))
                    .map(|r| r.at(expected))
                    .collect();
                let tag = cosign::signature_tag(pin.digest().expect("by digest"));
                if sources.is_empty() {
                    Repair::Manual {
                        finding,
                        todo: format!(
                            "no registry holds the recorded signature {expected}: sign the pin again \
                             (`cargo xtask release {} --resume` with the release's signing) and record the new \
                             signature in its notes",
                            notes.version
                        ),
                    }
                } else {
                    Repair::Copy {
                        finding,
                        sources,
                        to: pin.repository().tagged(&tag),
                        digest: expected.clone(),
                    }
                }
            }
            Check::Verify { .. } => Repair::Manual {
                finding,
                todo: "the signature manifest is the recorded one yet does not verify: check the public key \
                       or identity given, then the release's signing"
                    .to_owned(),
            },
        };
        repairs.push(repair);
    }
    repairs
}

/// How a repair went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Repaired {
    Done { from: String },
    Failed { why: String },
    Manual,
    WouldCopy,
}

/// Carries repairs out through the registry client.
pub struct Repairer<'a> {
    pub client: &'a RegistryClient,
    pub dry_run: bool,
}

impl Repairer<'_> {
    pub fn run(&self, repair: &Repair) -> Repaired {
        match repair {
            Repair::Manual { .. } => Repaired::Manual,
            Repair::Copy { .. } if self.dry_run => Repaired::WouldCopy,
            Repair::Copy {
                sources,
                to,
                digest,
                ..
            } => {
                let mut why = Vec::new();
                for source in sources {
                    // Read by digest: every manifest and blob is checked against its digest on the way, and the
                    // tag is written last.
                    match self.client.copy(source, to) {
                        Ok(copied) if copied.digest == *digest => {
                            return match self.client.head_manifest(to) {
                                Ok(head) if head.digest == *digest => Repaired::Done {
                                    from: source.to_string(),
                                },
                                Ok(head) => Repaired::Failed {
                                    why: format!("{to} serves {} after the copy", head.digest),
                                },
                                Err(error) => Repaired::Failed {
                                    why: error.to_string(),
                                },
                            };
                        }
                        Ok(copied) => why.push(format!("{source}: copied {}", copied.digest)),
                        Err(error) => why.push(format!("{source}: {error}")),
                    }
                }
                Repaired::Failed {
                    why: why.join("; "),
                }
            }
        }
    }
}

/// The whole audit as `--json` prints it.
#[derive(Serialize)]
struct JsonReport<'a> {
    releases: Vec<String>,
    checks: usize,
    holds: usize,
    drifted: usize,
    could_not_check: usize,
    seconds: f64,
    findings: Vec<Finding>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    repairs: Vec<RepairLine<'a>>,
}

#[derive(Serialize)]
struct RepairLine<'a> {
    #[serde(flatten)]
    repair: &'a Repair,
    #[serde(flatten)]
    result: Repaired,
}

impl AuditCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let notes_dir = project_root().join(&self.notes_dir);
        let all = notes::all_in(&notes_dir)?;
        if let Some(version) = &self.release {
            if !all.iter().any(|n| n.version == *version) {
                anyhow::bail!(
                    "{version} has no notes in {}: pass a published release (its vX.Y.Z.json must be there)",
                    display_path(&notes_dir)
                );
            }
        }
        let public_key = |notes: &ReleaseNotes, name: &str| -> Result<PathBuf, String> {
            public_key_for(self.public_key.as_deref(), &notes_dir, notes, name)
        };
        let checks = plan(&all, self.release.as_ref(), self.signatures, &public_key);
        let client = RegistryClient::from_env()?;
        let cosign = Cosign::new().with_policy(client.policy().clone());
        let mut auditor = Auditor::new(&client, &cosign);
        let report = auditor.run(checks, &Names::new(&all));
        let findings = report.findings();
        let releases: Vec<String> = all
            .iter()
            .filter(|n| self.release.as_ref().is_none_or(|v| *v == n.version))
            .map(|n| n.version.to_string())
            .collect();
        let holds = report.count(|o| *o == Outcome::Holds);
        let unchecked = report.count(|o| matches!(o, Outcome::Unchecked(_)));
        let drifted = report.count(|o| matches!(o, Outcome::Drift { .. }));
        let skipped = report.count(|o| *o == Outcome::Skipped);

        let repairs = if self.repair {
            plan_repairs(&report, &all, &auditor)
        } else {
            Vec::new()
        };
        let repairer = Repairer {
            client: &client,
            dry_run: self.dry_run,
        };
        let mut results = Vec::new();
        if !self.json {
            for finding in &findings {
                println!("{finding}");
            }
            println!(
                "audited {} release{} ({}): {} checks, {holds} hold, {drifted} drifted, {unchecked} could not be \
                 checked{}, in {:.2} s",
                releases.len(),
                plural(releases.len()),
                releases.join(", "),
                report.checks.len(),
                if skipped > 0 {
                    format!(", {skipped} not tried (a signature that drifted is not verified)")
                } else {
                    String::new()
                },
                report.seconds
            );
        }
        for repair in &repairs {
            let result = repairer.run(repair);
            if !self.json {
                println!("{}", describe_repair(repair, &result));
            }
            results.push(result);
        }
        let unrepaired = repairs
            .iter()
            .zip(&results)
            .filter(|(r, result)| {
                matches!(r, Repair::Copy { finding, .. } | Repair::Manual { finding, .. } if finding.kind != Kind::CouldNotCheck)
                    && !matches!(result, Repaired::Done { .. })
            })
            .count();
        if self.json {
            let json = JsonReport {
                releases,
                checks: report.checks.len(),
                holds,
                drifted,
                could_not_check: unchecked,
                seconds: report.seconds,
                findings: findings.clone(),
                repairs: repairs
                    .iter()
                    .zip(results)
                    .map(|(repair, result)| RepairLine { repair, result })
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        let remaining = if self.repair && !self.dry_run {
            unrepaired
        } else {
            drifted
        };
        if remaining > 0 {
            let hint = if self.repair {
                "the lines above say what to do with each"
            } else {
                "run `cargo xtask audit --repair --dry-run` to see what can be put back"
            };
            return Err(Exit::new(
                1,
                anyhow!(
                    "{remaining} finding{} of drift{}: {hint}",
                    plural(remaining),
                    if self.repair && !self.dry_run {
                        " not repaired"
                    } else {
                        ""
                    }
                ),
            )
            .into());
        }
        if unchecked > 0 {
            return Err(Exit::new(
                2,
                anyhow!(
                    "{unchecked} check{} could not be made (a registry could not be read; that is not drift): run \
                     the audit again when it answers",
                    plural(unchecked)
                ),
            )
            .into());
        }
        Ok(())
    }
}

/// The public key of a release signed with a key: `--public-key`, else the file the notes name, next to them.
fn public_key_for(
    given: Option<&Path>,
    notes_dir: &Path,
    notes: &ReleaseNotes,
    name: &str,
) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let beside = notes_dir.join(name);
    if beside.is_file() {
        return Ok(beside);
    }
    Err(format!(
        "{} was signed with a key and {} holds no {name}: give its public key with --public-key PATH (it is \
         attached to the GitHub release), or check signatures by digest only (--signatures digest)",
        notes.version,
        display_path(notes_dir)
    ))
}

fn describe_repair(repair: &Repair, result: &Repaired) -> String {
    match (repair, result) {
        (Repair::Copy { to, digest, .. }, Repaired::WouldCopy) => {
            format!("would put {digest} back at {to}, copied from the first that holds it")
        }
        (Repair::Copy { to, digest, .. }, Repaired::Done { from }) => {
            format!("repaired: {to} serves {digest} again (copied from {from}, verified)")
        }
        (Repair::Copy { to, .. }, Repaired::Failed { why }) => {
            format!(
                "not repaired: {to}: {why}: run the audit again; if it persists, {}",
                "republish the line"
            )
        }
        (Repair::Manual { finding, todo }, _) => {
            format!(
                "cannot repair {}: {}: {todo}",
                finding.kind.describe(),
                finding.place
            )
        }
        (Repair::Copy { to, .. }, Repaired::Manual) => format!("{to}: nothing done"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notes of a one-line release `version` whose pin is `pin` and whose `php-8.4` (when `line` is given)
    /// is `line`, in one registry, signed keyless.
    fn notes(version: &str, pin: char, line: Option<char>) -> ReleaseNotes {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let entry = |tag: &str, kind: &str, d: char| {
            format!(
                r#"{{"ref": "ghcr.io/s/php-fpm:{tag}", "registry": "ghcr.io/s", "tag": "{tag}", "kind": "{kind}",
                    "php": "8.4", "digest": "{}", "platforms": []{}}}"#,
                digest(d),
                if kind == "pin" {
                    format!(
                        r#", "signature": {{"digest": "{}", "verify": "cosign verify"}}"#,
                        digest('f')
                    )
                } else {
                    String::new()
                }
            )
        };
        let mut references = vec![entry(&format!("{version}-php-8.4"), "pin", pin)];
        if let Some(line) = line {
            references.push(entry("php-8.4", "line", line));
        }
        let text = format!(
            r#"{{"version": "{version}", "prerelease": {}, "revision": "0123456789abcdef0123456789abcdef01234567",
  "date": "2026-11-25", "created": "2026-11-25T10:00:00Z", "image": "php-fpm", "canonical": "ghcr.io/s",
  "mirrors": [], "attestations": "provenance", "bases": [], "skipped": [],
  "signing": {{"mode": "keyless", "identity": "https://github.com/o/r/.github/workflows/release.yml@refs/tags/{version}",
               "issuer": "https://token.actions.githubusercontent.com"}},
  "images": [{{"php": "8.4", "digest": "{}", "platforms": [
    {{"platform": "linux/amd64", "size": 1, "digest": "{}", "attestation": "{}"}}]}}],
  "references": [{}]}}"#,
            version.contains('-'),
            digest(pin),
            digest('1'),
            digest('2'),
            references.join(",\n")
        );
        ReleaseNotes::parse(&text).unwrap()
    }

    /// Each check as `kind place expected (release)`.
    fn describe(checks: &[Check]) -> Vec<String> {
        checks
            .iter()
            .map(|check| {
                let kind = match check {
                    Check::Tag { .. } => "tag",
                    Check::Child { .. } => "child",
                    Check::Signature { .. } => "signature",
                    Check::Verify { .. } => "verify",
                };
                let expected = expected(check);
                format!(
                    "{kind} {} {} ({})",
                    check.place(),
                    &expected[..expected.len().min(10)],
                    check.release()
                )
            })
            .collect()
    }

    #[test]
    fn a_moving_tag_is_held_to_the_newest_release_that_records_it_and_each_item_is_read_once() {
        let all = [
            notes("v1.0.0", 'a', Some('a')),
            notes("v1.1.0", 'b', Some('b')),
            // A prerelease moves no line tag: its notes record none.
            notes("v1.2.0-rc.1", 'c', None),
        ];
        let no_key = |_: &ReleaseNotes, _: &str| -> Result<PathBuf, String> { unreachable!() };
        // (which releases, signature checks, the checks planned)
        let cases: [(Option<&str>, SignatureCheck, &[&str]); 3] = [
            (
                None,
                SignatureCheck::Digest,
                &[
                    "tag ghcr.io/s/php-fpm:v1.2.0-rc.1-php-8.4 sha256:ccc (v1.2.0-rc.1)",
                    "child ghcr.io/s/php-fpm@sha256:1111111111111111111111111111111111111111111111111111111111111111 sha256:111 (v1.2.0-rc.1)",
                    "child ghcr.io/s/php-fpm@sha256:2222222222222222222222222222222222222222222222222222222222222222 sha256:222 (v1.2.0-rc.1)",
                    "signature ghcr.io/s/php-fpm:v1.2.0-rc.1-php-8.4 sha256:fff (v1.2.0-rc.1)",
                    "tag ghcr.io/s/php-fpm:v1.1.0-php-8.4 sha256:bbb (v1.1.0)",
                    "signature ghcr.io/s/php-fpm:v1.1.0-php-8.4 sha256:fff (v1.1.0)",
                    "tag ghcr.io/s/php-fpm:php-8.4 sha256:bbb (v1.1.0)",
                    "tag ghcr.io/s/php-fpm:v1.0.0-php-8.4 sha256:aaa (v1.0.0)",
                    "signature ghcr.io/s/php-fpm:v1.0.0-php-8.4 sha256:fff (v1.0.0)",
                ],
            ),
            // One release: its superseded php-8.4 is not its to check.
            (
                Some("v1.0.0"),
                SignatureCheck::Digest,
                &[
                    "tag ghcr.io/s/php-fpm:v1.0.0-php-8.4 sha256:aaa (v1.0.0)",
                    "child ghcr.io/s/php-fpm@sha256:1111111111111111111111111111111111111111111111111111111111111111 sha256:111 (v1.0.0)",
                    "child ghcr.io/s/php-fpm@sha256:2222222222222222222222222222222222222222222222222222222222222222 sha256:222 (v1.0.0)",
                    "signature ghcr.io/s/php-fpm:v1.0.0-php-8.4 sha256:fff (v1.0.0)",
                ],
            ),
            (
                Some("v1.1.0"),
                SignatureCheck::Verify,
                &[
                    "tag ghcr.io/s/php-fpm:v1.1.0-php-8.4 sha256:bbb (v1.1.0)",
                    "child ghcr.io/s/php-fpm@sha256:1111111111111111111111111111111111111111111111111111111111111111 sha256:111 (v1.1.0)",
                    "child ghcr.io/s/php-fpm@sha256:2222222222222222222222222222222222222222222222222222222222222222 sha256:222 (v1.1.0)",
                    "signature ghcr.io/s/php-fpm:v1.1.0-php-8.4 sha256:fff (v1.1.0)",
                    "verify ghcr.io/s/php-fpm:v1.1.0-php-8.4 a verified (v1.1.0)",
                    "tag ghcr.io/s/php-fpm:php-8.4 sha256:bbb (v1.1.0)",
                ],
            ),
        ];
        for (only, signatures, expected) in cases {
            let only: Option<ReleaseVersion> = only.map(|v| v.parse().unwrap());
            let checks = plan(&all, only.as_ref(), signatures, &no_key);
            assert_eq!(describe(&checks), expected, "{only:?}");
        }
    }
}
