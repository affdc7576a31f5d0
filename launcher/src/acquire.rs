//! Getting the PHP-FPM image: reads what the local store holds, then carries out `selection`'s decisions (use
//! the cache, pull with bounded retries, try the mirrors, build locally) through the docker door, timing each step.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use stack_images::{
    docker::{DockerCommand, FailureKind},
    Digest, Namespace,
};

use crate::{
    config::Config,
    engine::{seconds, Engine},
    exit::Exit,
    selection::{self, BaseImage, Build, Decision, Facts, LocalImage, Next},
};

/// Where the image that runs came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Pulled { from: Namespace },
    Mirror { from: Namespace },
    Built { why: String },
    LocalBuild,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Cache => f.write_str("cache (no registry request)"),
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
    let value: serde_json::Value = serde_json::from_slice(&bytes)
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
    Ok(Some(LocalImage { digests, labels }))
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

/// Makes the selected image available locally and says where it came from.
pub fn acquire(engine: &Engine, config: &Config, log: &mut dyn Write) -> anyhow::Result<Acquired> {
    let mut steps = Vec::new();
    let started = Instant::now();
    let facts = facts(engine, config)?;
    steps.push((
        "checked the local image store".to_owned(),
        started.elapsed(),
    ));
    let (reference, why) = match selection::decide(config, &facts) {
        Decision::Cached { reference } => {
            return Ok(Acquired {
                reference,
                origin: Origin::Cache,
                steps,
            })
        }
        Decision::Local(_) => return build(engine, config, "USE_PREBUILT=false", steps, log),
        Decision::Pull { reference, why } => (reference, why),
    };
    writeln!(log, "pulling {reference} ({why})")?;
    let started = Instant::now();
    let failure = match pull(engine, config, &reference, log) {
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
    writeln!(log, "{}", failure.detail)?;
    let mut next = selection::after_pull_failure(config, failure.kind, false);
    if let Next::TryMirrors(mirrors) = &next {
        for mirror in mirrors {
            let mirrored = config.reference_in(mirror);
            writeln!(log, "trying the mirror: pulling {mirrored}")?;
            let started = Instant::now();
            match pull(engine, config, &mirrored, log) {
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
                    writeln!(log, "{}", failure.detail)?;
                }
            }
        }
        next = selection::after_pull_failure(config, failure.kind, true);
    }
    match next {
        Next::Fallback { why } => {
            writeln!(
                log,
                "{why}: building locally (ALLOW_LOCAL_BUILD_FALLBACK=true)"
            )?;
            build(engine, config, &why, steps, log)
        }
        Next::Stop { message } => Err(Exit::image(message).into()),
        Next::TryMirrors(_) => unreachable!("mirrors are only offered once"),
    }
}

struct PullFailure {
    kind: FailureKind,
    detail: String,
}

/// `docker pull`, retrying transient failures with backoff; with a pin, a pulled image of another digest is
/// untagged again and refused.
fn pull(
    engine: &Engine,
    config: &Config,
    reference: &str,
    log: &mut dyn Write,
) -> Result<(), PullFailure> {
    let command = DockerCommand::new(["pull", "--quiet", reference]);
    let mut attempt = 1;
    loop {
        match engine.output(&command) {
            Ok(_) => break,
            Err(error)
                if selection::is_transient(error.kind) && attempt < selection::PULL_ATTEMPTS =>
            {
                let wait = selection::backoff(attempt);
                let _ = writeln!(
                    log,
                    "pull attempt {attempt} of {} failed ({}); retrying in {}",
                    selection::PULL_ATTEMPTS,
                    error.kind.describe(),
                    seconds(wait)
                );
                std::thread::sleep(wait);
                attempt += 1;
            }
            Err(error) => {
                return Err(PullFailure {
                    kind: error.kind,
                    detail: error.to_string(),
                })
            }
        }
    }
    let Some(pin) = config.pinned_digest() else {
        return Ok(());
    };
    let pulled = inspect_local(engine, reference)
        .ok()
        .flatten()
        .unwrap_or_default();
    if pulled.digests.contains(pin) {
        return Ok(());
    }
    let _ = engine.output(&DockerCommand::new(["image", "rm", reference]));
    let got: Vec<String> = pulled.digests.iter().map(ToString::to_string).collect();
    Err(PullFailure {
        kind: FailureKind::DigestMismatch,
        detail: format!(
            "{reference} was pulled with digest {}, not the pinned {pin}: refused and removed",
            got.join(", ")
        ),
    })
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
    match selection::base_image(config.php) {
        BaseImage::Pinned(base) => {
            args.extend(["--build-arg".into(), format!("PHP_BASE={base}")]);
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
