//! Getting the PHP-FPM image: reads what the local store holds, then carries out `selection`'s decisions (use
//! the cache, pull with bounded retries, try the mirrors, build locally) through the docker door, timing each step.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use stack_images::{
    cosign::{self, Cosign, CosignCommand, Subject},
    docker::{Bounds, DockerCommand, FailureKind},
    failure::{jitter, retry, Policy, Verdict},
    registry::RegistryClient,
    Digest, ImageRef, Namespace,
};

use crate::{
    config::Config,
    engine::{seconds, Engine},
    exit::Exit,
    fetch,
    freshness::{self, Check, Checks, Freshness, Remote},
    progress::{Board, RowId},
    selection::{self, BaseImage, Build, Decision, Facts, Fault, LocalImage, Next, PullFailure},
    version,
};

/// Where the image that runs came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Cached, and no registry asked (no check due).
    Cache,
    /// Cached, and the `PULL_POLICY` check asked the registry (answered current, or not answered).
    CacheChecked {
        with: Namespace,
    },
    /// Cached, and its signature read from the registry and verified (VERIFY_SIGNATURE=true).
    CacheVerified {
        signatures_from: Namespace,
    },
    Pulled {
        from: Namespace,
    },
    Mirror {
        from: Namespace,
    },
    Built {
        why: String,
    },
    LocalBuild,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Cache => f.write_str("cache (no registry request)"),
            Origin::CacheChecked { with } => write!(f, "cache (checked with {with})"),
            Origin::CacheVerified { signatures_from } => {
                write!(f, "cache (its signature read from {signatures_from})")
            }
            Origin::Pulled { from } => write!(f, "pulled from {from}"),
            Origin::Mirror { from } => write!(f, "pulled from the mirror {from}"),
            Origin::Built { why } => write!(f, "built locally ({why})"),
            Origin::LocalBuild => f.write_str("local build, reused (build context unchanged)"),
        }
    }
}

pub struct Acquired {
    /// The reference compose runs (`PHP_FPM_IMAGE`).
    pub reference: String,
    pub origin: Origin,
    /// What was done and how long it took, in order.
    pub steps: Vec<(String, Duration)>,
}

/// Reads an image from the local store; `None` when it is not there. Never contacts a registry.
pub fn inspect_local(engine: &Engine, reference: &str) -> anyhow::Result<Option<LocalImage>> {
    let command = DockerCommand::new(["image", "inspect", "--format", "{{json .}}", reference]);
    let bytes = match engine.output(&command) {
        Ok(bytes) => bytes,
        Err(error) if error.kind == FailureKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error)
                .context("reading the local image store: is the Docker daemon running?")
        }
    };
    local_image(&bytes, reference).map(Some)
}

/// One image of `docker image inspect --format '{{json .}}'`: its digests and labels.
pub fn local_image(json: &[u8], reference: &str) -> anyhow::Result<LocalImage> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .with_context(|| format!("reading `docker image inspect` of {reference}"))?;
    // The same content under several names lists its digest once per name.
    let mut digests: Vec<Digest> = value["RepoDigests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str()?.rsplit_once('@'))
        .filter_map(|(_, digest)| Digest::parse(digest).ok())
        .collect();
    digests.sort();
    digests.dedup();
    let labels: BTreeMap<String, String> = value["Config"]["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    Ok(LocalImage { digests, labels })
}

/// The digest of a build context (every file's path and content, a symbolic link's target) and of its
/// Dockerfile; `None` without a Dockerfile. Only regular files, directories and links are read: a FIFO, socket or
/// device would block or never end, so it is refused, naming it (exit 2).
pub fn context_digest(dir: &Path) -> anyhow::Result<Option<(Digest, Digest)>> {
    let dockerfile_path = dir.join("Dockerfile");
    match std::fs::metadata(&dockerfile_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A link to a FIFO would block the read below.
        Ok(meta) if !meta.is_file() => {
            return Err(Exit::config(anyhow::anyhow!(
                "{} is not a regular file: make the Dockerfile a file, or set PHP_FPM_CONTEXT to another directory",
                dockerfile_path.display()
            ))
            .into())
        }
        _ => {}
    }
    let mut entries = Vec::new();
    collect_entries(dir, dir, &mut entries).with_context(|| {
        format!(
            "reading the build context {} (PHP_FPM_CONTEXT)",
            dir.display()
        )
    })?;
    entries.sort();
    let dockerfile = std::fs::read(&dockerfile_path)
        .with_context(|| format!("reading {}", dockerfile_path.display()))?;
    let mut summary = String::new();
    for (relative, content) in entries {
        summary.push_str(&format!("{relative}\0{content}\n"));
    }
    Ok(Some((
        Digest::of(summary.as_bytes()),
        Digest::of(&dockerfile),
    )))
}

/// `(path under root, digest or link target)` of every file under `dir`.
fn collect_entries(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let kind = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .file_type();
        let relative = path
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        if kind.is_dir() {
            collect_entries(root, &path, out)?;
        } else if kind.is_symlink() {
            let target =
                std::fs::read_link(&path).with_context(|| format!("reading {}", path.display()))?;
            out.push((relative, format!("-> {}", target.display())));
        } else if kind.is_file() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.push((relative, Digest::of(&bytes).to_string()));
        } else {
            return Err(Exit::config(anyhow::anyhow!(
                "{} is not a regular file (a FIFO, socket or device): a build context holds files and \
                 directories only; remove it, or set PHP_FPM_CONTEXT to another directory",
                path.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Everything the decision needs, read from the local store and the build context. The local build and the
/// build context are only read when they can matter (`USE_PREBUILT=false`): a cached start asks docker once.
pub fn facts(engine: &Engine, config: &Config) -> anyhow::Result<Facts> {
    if config.use_prebuilt {
        return Ok(Facts {
            prebuilt: inspect_local(engine, &config.prebuilt_reference())?,
            ..Facts::default()
        });
    }
    local_facts(engine, config)
}

fn local_facts(engine: &Engine, config: &Config) -> anyhow::Result<Facts> {
    // The build context first: a problem there is the user's files, whatever docker's state.
    let context = context_digest(&config.build_context)?.map(|(context, _)| context);
    Ok(Facts {
        prebuilt: None,
        local_build: inspect_local(engine, &config.local_reference())?,
        context,
    })
}

/// Makes the selected image available locally and says where it came from. `before_work` runs once, before the
/// first pull or build and only then: what must hold before anything is fetched (a cached image needs neither).
/// Its progress is `board`'s row `row`: its size before the first byte, then bytes and layers as they come.
/// `known`: the local store's facts and how long reading them took, when the caller read them already (one
/// docker call fewer), else read here.
pub fn acquire(
    engine: &Engine,
    config: &Config,
    log: &mut dyn Write,
    before_work: &mut dyn FnMut() -> anyhow::Result<()>,
    progress: (&Board, RowId),
    known: Option<(Facts, Duration)>,
) -> anyhow::Result<Acquired> {
    let (board, row) = progress;
    let acquired = acquire_inner(engine, config, log, before_work, progress, known);
    match &acquired {
        Ok(Acquired {
            origin: Origin::Pulled { .. } | Origin::Mirror { .. },
            ..
        }) => board.done(row),
        Ok(acquired) => board.not_pulled(row, &acquired.origin.to_string()),
        Err(_) => board.failed(row, "see below"),
    }
    acquired
}

fn acquire_inner(
    engine: &Engine,
    config: &Config,
    log: &mut dyn Write,
    before_work: &mut dyn FnMut() -> anyhow::Result<()>,
    progress: (&Board, RowId),
    known: Option<(Facts, Duration)>,
) -> anyhow::Result<Acquired> {
    let (board, row) = progress;
    let mut steps = Vec::new();
    // Read before docker is asked anything: a bad override stops here.
    let policy = Policy::from_env().map_err(Exit::config)?;
    let started = Instant::now();
    let (facts, checked) = match known {
        Some((facts, took)) => (facts, took),
        None => (facts(engine, config)?, started.elapsed()),
    };
    steps.push(("checked the local image store".to_owned(), checked));
    let (reference, why) = match selection::decide(config, &facts) {
        Decision::Cached { reference } => match freshen(config, &facts, &reference, log)? {
            fresh @ (Fresh::Unasked | Fresh::Asked) => {
                let started = Instant::now();
                if let Err(failure) = verify_signature(engine, config, &reference, log) {
                    steps.push((
                        format!("signature of {reference} refused"),
                        started.elapsed(),
                    ));
                    writeln!(log, "{}", failure.describe(config))?;
                    let next = selection::after_pull_failure(config, &failure, &[]);
                    return build_or_stop(next, engine, config, steps, log, progress);
                }
                let origin = match config.signature {
                    Some(_) => {
                        steps.push((
                            format!("verified the signature of {reference}"),
                            started.elapsed(),
                        ));
                        Origin::CacheVerified {
                            signatures_from: config.registry.clone(),
                        }
                    }
                    None if fresh == Fresh::Asked => Origin::CacheChecked {
                        with: config.registry.clone(),
                    },
                    None => Origin::Cache,
                };
                return Ok(Acquired {
                    reference,
                    origin,
                    steps,
                });
            }
            Fresh::Newer(why) => (reference, why),
        },
        Decision::Local(_) => {
            board.not_pulled(row, "built here (USE_PREBUILT=false)");
            before_work()?;
            return build(engine, config, "USE_PREBUILT=false", steps, log);
        }
        Decision::Pull { reference, why } => (reference, why),
    };
    before_work()?;
    writeln!(log, "pulling {reference} ({why})")?;
    board.set_reference(row, &reference);
    board.sized(row, fetch::pull_size(&reference));
    let started = Instant::now();
    // The wrong digest of the last damaged download: a mirror's pull that meets the very same one is meeting the
    // engine's stale copy of it, not the mirror's bytes.
    let mut damaged: Option<String> = None;
    let failure = match pull(
        engine,
        config,
        &policy,
        &reference,
        &mut damaged,
        log,
        progress,
    ) {
        Ok(()) => {
            steps.push((format!("pulled {reference}"), started.elapsed()));
            return Ok(Acquired {
                reference,
                origin: Origin::Pulled {
                    from: config.registry.clone(),
                },
                steps,
            });
        }
        Err(failure) => failure,
    };
    steps.push((format!("pull of {reference} failed"), started.elapsed()));
    writeln!(log, "{}", failure.describe(config))?;
    let mut next = selection::after_pull_failure(config, &failure, &[]);
    if let Next::TryMirrors(mirrors) = &next {
        let mut mirror_failures: Vec<PullFailure> = Vec::new();
        for mirror in mirrors {
            let last = mirror_failures.last().unwrap_or(&failure);
            if last.fault == Fault::Docker(FailureKind::DigestMismatch) {
                writeln!(
                    log,
                    "waiting {}: docker keeps the damaged download for a moment, and a pull sooner fails on it",
                    seconds(selection::DAMAGED_DOWNLOAD_WAIT)
                )?;
                std::thread::sleep(selection::DAMAGED_DOWNLOAD_WAIT);
            }
            let mirrored = config.reference_in(mirror);
            writeln!(log, "trying the mirror: pulling {mirrored}")?;
            board.set_reference(row, &mirrored);
            board.sized(row, fetch::pull_size(&mirrored));
            board.restart(row);
            let started = Instant::now();
            match pull(
                engine,
                config,
                &policy,
                &mirrored,
                &mut damaged,
                log,
                progress,
            ) {
                Ok(()) => {
                    // Known locally under the canonical reference from now on: the next start finds it cached.
                    engine
                        .output(&DockerCommand::new(["tag", &mirrored, &reference]))
                        .with_context(|| format!("tagging {mirrored} as {reference}"))?;
                    steps.push((format!("pulled {mirrored}"), started.elapsed()));
                    return Ok(Acquired {
                        reference,
                        origin: Origin::Mirror {
                            from: mirror.clone(),
                        },
                        steps,
                    });
                }
                Err(failure) => {
                    steps.push((format!("pull of {mirrored} failed"), started.elapsed()));
                    writeln!(log, "{}", failure.describe(config))?;
                    mirror_failures.push(failure);
                }
            }
        }
        next = selection::after_pull_failure(config, &failure, &mirror_failures);
    }
    build_or_stop(next, engine, config, steps, log, progress)
}

/// After the pulls failed for good: the local build `next` falls back to, or its stop.
fn build_or_stop(
    next: Next,
    engine: &Engine,
    config: &Config,
    steps: Vec<(String, Duration)>,
    log: &mut dyn Write,
    (board, row): (&Board, RowId),
) -> anyhow::Result<Acquired> {
    match next {
        Next::Fallback { why } => {
            writeln!(
                log,
                "{why}: building locally (ALLOW_LOCAL_BUILD_FALLBACK=true)"
            )?;
            board.not_pulled(row, "building locally");
            build(engine, config, &why, steps, log)
        }
        Next::Stop { message } => Err(Exit::image(message).into()),
        // Mirrors are offered once, after the canonical registry, and never for a refused signature.
        Next::TryMirrors(_) => unreachable!("mirrors are only offered once"),
    }
}

/// What a `PULL_POLICY` check did.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fresh {
    /// No check was due: the registry was not asked.
    Unasked,
    /// The registry was asked; the cached image is used (current, pinned, or no answer).
    Asked,
    /// The registry serves a newer digest: why to pull it.
    Newer(String),
}

/// With `PULL_POLICY` other than `missing` and a check due, asks the registry what the cached image's tag serves
/// now (a manifest `HEAD`, and a `GET` only for a digest it has not seen) and records the answer: whether it asked, and why to pull when the registry
/// serves a newer digest and no pin holds the old one. A check that fails never stops a start: the cached image is used.
/// When the registry answered, one tag list more says whether a newer stable release is out (`version::newer_hint`).
fn freshen(
    config: &Config,
    facts: &Facts,
    reference: &str,
    log: &mut dyn Write,
) -> anyhow::Result<Fresh> {
    let path = Checks::path_in(&config.user_dir);
    let mut checks = Checks::load(&path).map_err(Exit::config)?;
    let image: ImageRef = reference
        .parse()
        .expect("the selected reference is built from typed parts");
    let now = SystemTime::now();
    if !config
        .pull_policy
        .due(checks.get(&image).map(Check::at), now)
    {
        return Ok(Fresh::Unasked);
    }
    let cached = facts
        .prebuilt
        .as_ref()
        .map(|image| image.digests.clone())
        .unwrap_or_default();
    let known: Vec<Digest> = cached
        .iter()
        .chain(config.pinned_digest())
        .cloned()
        .collect();
    let client = RegistryClient::from_env().map_err(Exit::config)?;
    let remote = match Remote::read(&client, &image, &known, checks.get(&image)) {
        Ok(remote) => remote,
        Err(error) => {
            writeln!(
                log,
                "could not check {image} for a republish (PULL_POLICY={}): {error}; starting the cached image",
                config.pull_policy
            )?;
            return Ok(Fresh::Asked);
        }
    };
    checks.record(
        &image,
        Check {
            checked: freshness::epoch_seconds(now),
            digest: remote.digest.clone(),
            republished: remote.republished.clone(),
        },
    )?;
    // The registry answered: one tag list more says whether a newer stable release is out.
    version::newer_hint(config, log)?;
    Ok(
        match freshness::compare(&cached, config.pinned_digest(), remote) {
            Freshness::Current => Fresh::Asked,
            Freshness::Newer(remote) => Fresh::Newer(match remote.republished {
                Some(republished) => republished.to_string(),
                None => format!("{image} now serves {}", remote.digest),
            }),
            Freshness::PinnedButNewer { pinned, newer } => {
                let why = match &newer.republished {
                    Some(republished) => format!(" ({republished})"),
                    None => String::new(),
                };
                writeln!(
                    log,
                    "{image} has a newer digest {}{why}; PHP_FPM_PIN keeps {pinned}. To move to it, set \
                     PHP_FPM_PIN={} in .20i-local (or run `20i pin --notes` with the release's notes)",
                    newer.digest,
                    image.with_digest(&newer.digest)
                )?;
                Fresh::Asked
            }
            Freshness::Overwritten { recorded, found } => {
                writeln!(
                    log,
                    "{image} now serves {found}, not the {recorded} recorded here, and its index says no republish: \
                     a pin never changes, so it was overwritten. Not pulled: starting the cached image. Tell the \
                     project's maintainers (`cargo xtask audit` finds and repairs this)"
                )?;
                Fresh::Asked
            }
        },
    )
}

/// The PHP-FPM image pulled from one registry ([`pull_with_retries`]), then held to the pin and its signature.
/// With a pin, a pulled image of another digest is untagged again and refused.
/// `damaged` is the wrong digest of the damaged download an earlier registry's pull left (if any), and on a
/// digest mismatch here becomes this one's.
fn pull(
    engine: &Engine,
    config: &Config,
    policy: &Policy,
    reference: &str,
    damaged: &mut Option<String>,
    log: &mut dyn Write,
    progress: (&Board, RowId),
) -> Result<(), PullFailure> {
    let (attempt, waited) =
        pull_with_retries(engine, config, policy, reference, damaged, log, progress)?;
    if let Some(pin) = config.pinned_digest() {
        let pulled = inspect_local(engine, reference)
            .ok()
            .flatten()
            .unwrap_or_default();
        if !pulled.digests.contains(pin) {
            let _ = engine.output(&DockerCommand::new(["image", "rm", reference]));
            return Err(PullFailure {
                reference: reference.to_owned(),
                fault: Fault::NotThePin {
                    got: pulled.digests,
                },
                attempts: attempt,
                waited,
            });
        }
    }
    verify_signature(engine, config, reference, log).map_err(|failure| PullFailure {
        attempts: attempt,
        waited,
        ..failure
    })
}

/// A pull from one registry through the docker door ([`Engine::pull`]: progress in bytes to `progress`), the
/// one retry loop of every image the launcher pulls: no byte for `PULL_STALL_TIMEOUT` stops an attempt as
/// stalled, and `PULL_TIMEOUT` bounds the whole, retries included. An unreachable or rate-limiting registry is
/// retried with the shared policy's backoff (its `Retry-After` when docker's message shows one), a digest
/// mismatch once. Returns the attempts it took and the time waited between them. `damaged`: see [`pull`].
pub fn pull_with_retries(
    engine: &Engine,
    config: &Config,
    policy: &Policy,
    reference: &str,
    damaged: &mut Option<String>,
    log: &mut dyn Write,
    progress: (&Board, RowId),
) -> Result<(u32, Duration), PullFailure> {
    let (board, row) = progress;
    let inherited = damaged.take();
    let stall = Duration::from_secs(config.pull_stall_timeout.get().into());
    let budget = Duration::from_secs(config.pull_timeout.get().into());
    let started = Instant::now();
    // `attempt` counts pulls; a wait for the engine to drop a damaged download is not one.
    let (mut attempt, mut mismatches, mut stale_waits) = (1, 0, 0);
    let failure = |kind, attempts, waited| PullFailure {
        reference: reference.to_owned(),
        fault: Fault::Docker(kind),
        attempts,
        waited,
    };
    // The pull's progress and the judge's notes go to the same log, one after the other.
    let log = std::cell::RefCell::new(log);
    // `None`: the budget was spent before another attempt could start.
    let (pulled, tried) = retry(
        |_| {
            let left = budget.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(None);
            }
            let bounds = Bounds { stall, total: left };
            board.restart(row);
            engine
                .pull(reference, bounds, &mut |report| {
                    board.report(row, &report, stall)
                })
                .map_err(Some)
        },
        |error, _| {
            let Some(error) = error else {
                return Verdict::Stop;
            };
            let mut log = log.borrow_mut();
            let kind = error.kind;
            let wrong = (kind == FailureKind::DigestMismatch)
                .then(|| selection::damaged_digest(&error.stderr))
                .flatten();
            if let Some(wrong) = wrong.filter(|w| inherited.as_deref() == Some(w.as_str())) {
                // The same wrong bytes as the registry before: the engine still holds that damaged download (its
                // garbage collection runs less often on a busy machine) and this registry was not asked for them.
                let wait = selection::DAMAGED_DOWNLOAD_WAIT;
                if stale_waits < selection::STALE_DOWNLOAD_WAITS
                    && started.elapsed() + wait < budget
                {
                    stale_waits += 1;
                    let _ = writeln!(
                        log,
                        "the engine still holds the damaged download ({wrong}) of the registry before; waiting {}",
                        seconds(wait)
                    );
                    return Verdict::Wait(wait);
                }
            }
            if kind == FailureKind::DigestMismatch {
                mismatches += 1;
                *damaged = selection::damaged_digest(&error.stderr);
            }
            let allowed = match kind {
                FailureKind::DigestMismatch => selection::DIGEST_MISMATCH_ATTEMPTS,
                kind if selection::retry_same_registry(kind) => policy.attempts,
                _ => attempt,
            };
            let retry_after = selection::retry_after_in(&error.stderr);
            let mut wait = policy.wait_before_retry(attempt, retry_after, jitter());
            if kind == FailureKind::DigestMismatch {
                wait = wait.max(selection::DAMAGED_DOWNLOAD_WAIT);
            }
            let within = if kind == FailureKind::DigestMismatch {
                mismatches < allowed
            } else {
                attempt < allowed
            };
            if !within || started.elapsed() + wait >= budget {
                let _ = writeln!(log, "{error}");
                return Verdict::Stop;
            }
            let _ = writeln!(
                log,
                "pull attempt {attempt} of {allowed} failed ({}) at {reference}; retrying in {}{}",
                kind.describe(),
                seconds(wait),
                if retry_after.is_some() {
                    " (the registry's Retry-After)"
                } else {
                    ""
                }
            );
            attempt += 1;
            Verdict::Wait(wait)
        },
    );
    let waited = tried.waited;
    match pulled {
        Ok(()) => Ok((attempt, waited)),
        Err(None) => Err(failure(FailureKind::TimedOut, attempt - 1, waited)),
        Err(Some(error)) => Err(failure(error.kind, attempt, waited)),
    }
}

/// With VERIFY_SIGNATURE=true: the image `reference` names in the local store (by `PHP_FPM_PIN`'s digest, else
/// by every digest docker recorded for it) has a cosign signature in `reference`'s registry that verifies with
/// the configured key or keyless identity. An image whose signature does not verify is untagged, so that no
/// later start finds it cached; one whose signature could not be read (offline) is kept, and not run either.
fn verify_signature(
    engine: &Engine,
    config: &Config,
    reference: &str,
    log: &mut dyn Write,
) -> Result<(), PullFailure> {
    let Some(verifier) = &config.signature else {
        return Ok(());
    };
    let image: ImageRef = reference
        .parse()
        .expect("the selected reference is built from typed parts");
    let digests = match config.pinned_digest() {
        Some(pin) => vec![pin.clone()],
        None => inspect_local(engine, reference)
            .ok()
            .flatten()
            .map(|local| local.digests)
            .unwrap_or_default(),
    };
    let refused = |failure| PullFailure {
        reference: reference.to_owned(),
        fault: Fault::Signature {
            failure,
            digests: digests.clone(),
        },
        attempts: 1,
        waited: Duration::ZERO,
    };
    let cosign = Cosign::new();
    let mut last = cosign::Failure::NoSignature;
    for digest in &digests {
        let signed = image.with_digest(digest);
        let command = CosignCommand::verify(verifier, Subject::Image(&signed))
            .expect("the image is named by digest");
        match cosign.output(&command) {
            Ok(_) => {
                let _ = writeln!(log, "verified the signature of {signed}");
                return Ok(());
            }
            Err(error) => {
                let _ = writeln!(log, "{error}");
                last = error.failure;
            }
        }
    }
    if matches!(
        last,
        cosign::Failure::NoSignature | cosign::Failure::NotVerified
    ) {
        let _ = engine.output(&DockerCommand::new(["image", "rm", reference]));
    }
    Err(refused(last))
}

/// Builds from the build context with the release's build arguments, unless the local build is already from
/// this very context.
fn build(
    engine: &Engine,
    config: &Config,
    why: &str,
    mut steps: Vec<(String, Duration)>,
    log: &mut dyn Write,
) -> anyhow::Result<Acquired> {
    let context = &config.build_context;
    let Some((context_digest, dockerfile_digest)) = context_digest(context)? else {
        return Err(Exit::image(format!(
            "no Dockerfile in {}: set PHP_FPM_CONTEXT (or STACK_DIR) to the stack's PHP-FPM build context, \
             or run `20i init`",
            context.display()
        ))
        .into());
    };
    let facts = Facts {
        prebuilt: None,
        local_build: inspect_local(engine, &config.local_reference())?,
        context: Some(context_digest.clone()),
    };
    let reference = match selection::build_decision(config, &facts) {
        Build::Reuse { reference } => {
            return Ok(Acquired {
                reference,
                origin: Origin::LocalBuild,
                steps,
            })
        }
        Build::Build {
            reference,
            why: changed,
        } => {
            writeln!(
                log,
                "building {reference} from {} ({changed})",
                context.display()
            )?;
            reference
        }
    };
    let line = config.php.to_string();
    let mut args: Vec<String> = vec![
        "build".into(),
        "--build-arg".into(),
        format!("PHP_VERSION={line}"),
    ];
    match selection::base_image(config) {
        BaseImage::Pinned { base, from } => {
            args.extend(["--build-arg".into(), format!("PHP_BASE={base}")]);
            if from == selection::BASE_FROM_SETTING {
                args.extend([
                    "--label".into(),
                    format!("{}={base}", selection::LABEL_BASE),
                ]);
            }
        }
        BaseImage::Unpinned { why } => writeln!(log, "the base image is not pinned: {why}")?,
    }
    for (label, value) in [
        (selection::LABEL_LOCAL, "true".to_owned()),
        (selection::LABEL_CONTEXT, context_digest.to_string()),
        (selection::LABEL_DOCKERFILE, dockerfile_digest.to_string()),
        (
            "org.opencontainers.image.version",
            config.release.to_string(),
        ),
    ] {
        args.extend(["--label".into(), format!("{label}={value}")]);
    }
    args.extend([
        "--tag".into(),
        reference.clone(),
        context.display().to_string(),
    ]);
    let started = Instant::now();
    engine
        .run_attached(&DockerCommand::new(args), &[])
        .map_err(|error| {
            Exit::image(format!(
                "building {reference} from {} failed (its output is above): fix the Dockerfile, or set \
                 USE_PREBUILT=true to pull the pre-built image\n{error}",
                context.display()
            ))
        })?;
    steps.push((format!("built {reference}"), started.elapsed()));
    Ok(Acquired {
        reference,
        origin: Origin::Built {
            why: why.to_owned(),
        },
        steps,
    })
}
