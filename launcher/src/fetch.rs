//! The whole stack's images fetched at once: the PHP-FPM image ([`acquire`], with its cache, mirror and
//! local-build rules) and the other images compose will run (nginx, MariaDB, phpMyAdmin, the modules' images)
//! that the local store lacks, pulled concurrently, at most [`MAX_PULLS`] at a time, each with its size read from
//! its manifest first and its progress on one [`Board`]. A first start then costs about its slowest image, not
//! the sum, and `docker compose up` finds nothing left to pull. A failed image is named with its variable.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;
use stack_images::{
    docker::{DockerCommand, FailureKind},
    failure::Policy,
    registry::{
        size::{host_platform, PullSize},
        RegistryClient,
    },
    ImageRef,
};

use crate::{
    acquire::{self, Acquired},
    config::Config,
    engine::Engine,
    exit::Exit,
    progress::{Board, BoardLog},
    selection::{Facts, PullFailure},
    stack::Compose,
};

/// Pulls at once, the PHP-FPM image's included: four images of a stack, and a bound on what a slow link shares.
pub const MAX_PULLS: usize = 4;
/// How long reading an image's size may take: it comes before the pull, so a registry that does not answer
/// costs this, then the pull's own stall bound.
const SIZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stack image's pull waits for the other images' sizes (the header) before it starts anyway.
const HEADER_WAIT: Duration = Duration::from_secs(10);

/// An image compose will run, other than PHP-FPM's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackImage {
    /// The service, as the progress shows it.
    pub label: String,
    /// The variable that names it, for what to fix (a module's image has none).
    pub variable: Option<&'static str>,
    pub reference: String,
}

/// What a start fetched: the PHP-FPM image, and each other image pulled with how long it took (their pulls
/// overlapped the PHP-FPM image's).
pub struct Fetched {
    pub acquired: Acquired,
    pub pulled: Vec<(StackImage, Duration)>,
    /// From the first size read to the last pull's end.
    pub took: Duration,
}

/// The images compose will run besides PHP-FPM's: the stack's own from the configuration (no docker call),
/// and, with modules, what `docker compose config --images` lists.
pub fn stack_images(
    engine: &Engine,
    config: &Config,
    compose: &Compose,
) -> anyhow::Result<Vec<StackImage>> {
    let mut images = vec![
        StackImage {
            label: "nginx".into(),
            variable: Some("NGINX_IMAGE"),
            reference: config.nginx_image.to_string(),
        },
        StackImage {
            label: "mariadb".into(),
            variable: Some("MARIADB_IMAGE"),
            reference: config.mariadb_image.to_string(),
        },
        StackImage {
            label: "phpmyadmin".into(),
            variable: Some("PMA_IMAGE"),
            reference: config.pma_image.to_string(),
        },
    ];
    if !compose.modules.is_empty() {
        let listed = match engine
            .output_with_env(&compose.command(["config", "--images"]), &compose.env)
        {
            Ok(listed) => listed,
            Err(error) => {
                // Compose refused the files: `validate` names the file (or module), with secrets hidden.
                compose.validate(engine, config)?;
                return Err(anyhow::anyhow!(config.redact(&error.to_string())))
                    .context("listing the images of the stack and its modules (`docker compose config --images`)");
            }
        };
        let php_fpm = compose
            .env
            .iter()
            .find(|(name, _)| name == "PHP_FPM_IMAGE")
            .map(|(_, value)| value.as_str());
        for line in String::from_utf8_lossy(&listed).lines().map(str::trim) {
            if line.is_empty()
                || Some(line) == php_fpm
                || images.iter().any(|i| i.reference == line)
            {
                continue;
            }
            // Parsed where it enters: a value that docker would read as an option is refused here.
            let reference: crate::values::ImageName = line.parse().map_err(|e| {
                anyhow::anyhow!(
                    "a module's image `{line}` (from `docker compose config --images`): {e}"
                )
            })?;
            images.push(StackImage {
                label: "module".into(),
                variable: None,
                reference: reference.to_string(),
            });
        }
    }
    Ok(images)
}

/// What the local store holds of what a start needs.
pub struct Survey {
    /// The stack's images it lacks.
    pub missing: Vec<StackImage>,
    /// The PHP-FPM image's facts, when this survey read them (`USE_PREBUILT=true`), and how long it took.
    pub php_fpm: Option<(Facts, Duration)>,
}

/// Reads the store for the pre-built PHP-FPM image (`USE_PREBUILT=true`) and `images`, all in one `docker image
/// inspect` (tens of milliseconds; `docker image ls` took over 2 s on a store of a few hundred images): a cached
/// start asks docker this once, then runs `up`. Docker names each image it does not find (`No such image:
/// REF`).
pub fn survey(engine: &Engine, config: &Config, images: Vec<StackImage>) -> anyhow::Result<Survey> {
    let started = Instant::now();
    let php_fpm = config.use_prebuilt.then(|| config.prebuilt_reference());
    let references: Vec<String> = php_fpm
        .iter()
        .cloned()
        .chain(images.iter().map(|i| i.reference.clone()))
        .collect();
    if references.is_empty() {
        return Ok(Survey {
            missing: images,
            php_fpm: None,
        });
    }
    let error = match engine.output(&DockerCommand::inspect_images(references)) {
        Ok(listed) => {
            let facts = match &php_fpm {
                Some(reference) => {
                    let first = listed.split(|&b| b == b'\n').next().unwrap_or_default();
                    Some((
                        Facts {
                            prebuilt: Some(acquire::local_image(first, reference)?),
                            ..Facts::default()
                        },
                        started.elapsed(),
                    ))
                }
                None => None,
            };
            return Ok(Survey {
                missing: Vec::new(),
                php_fpm: facts,
            });
        }
        Err(error) if error.kind == FailureKind::NotFound => error,
        Err(error) => {
            return Err(error)
                .context("reading the local image store: is the Docker daemon running?")
        }
    };
    let absent = absent_in(&error.stderr);
    // The PHP-FPM image absent is a fact as good as a read; present (its labels unread here), `acquire` reads it.
    let php_fpm = php_fpm
        .filter(|reference| absent.contains(reference))
        .map(|_| (Facts::default(), started.elapsed()));
    Ok(Survey {
        missing: images
            .into_iter()
            .filter(|image| absent.contains(&image.reference))
            .collect(),
        php_fpm,
    })
}

/// The references `docker image inspect` said it has no image of.
fn absent_in(stderr: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter_map(|line| line.split_once("No such image: "))
        .map(|(_, reference)| reference.trim().to_owned())
        .collect()
}

/// A reference as docker completes it: Docker Hub when the first component names no host, `library/` for an
/// official image, `:latest` without a tag or digest.
pub fn docker_reference(text: &str) -> anyhow::Result<ImageRef> {
    let (first, _) = text.split_once('/').unwrap_or(("", text));
    let has_host = first.contains(['.', ':']) || first == "localhost";
    let mut full = match (has_host, text.contains('/')) {
        (true, _) => text.to_owned(),
        (false, true) => format!("docker.io/{text}"),
        (false, false) => format!("docker.io/library/{text}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains([':', '@']) {
        full.push_str(":latest");
    }
    full.parse()
}

/// The size of `reference` for this machine's platform, from its manifest through the in-process registry
/// client, within [`SIZE_TIMEOUT`] and one attempt; `None` when it cannot be read in that time.
pub fn pull_size(reference: &str) -> Option<PullSize> {
    let image = docker_reference(reference).ok()?;
    let policy = Policy {
        connect_timeout: SIZE_TIMEOUT,
        read_timeout: SIZE_TIMEOUT,
        operation_timeout: SIZE_TIMEOUT,
        attempts: 1,
        ..Policy::from_env().ok()?
    };
    RegistryClient::new(policy)
        .pull_size(&image, &host_platform())
        .ok()
        .flatten()
}

/// Gets the PHP-FPM image (`acquire`, here) and pulls `missing` alongside, at most [`MAX_PULLS`] at once;
/// `before_work` as for [`acquire::acquire`]. A failure of the PHP-FPM image is reported as `acquire` reports it;
/// one of another image names the image, its variable and docker's reason.
pub fn fetch(
    engine: &Engine,
    config: &Config,
    missing: &[StackImage],
    before_work: &mut dyn FnMut() -> anyhow::Result<()>,
    known: Option<(Facts, Duration)>,
) -> anyhow::Result<Fetched> {
    let started = Instant::now();
    let board = Board::stderr();
    let php_row = board.add("php-fpm", &config.selected_reference());
    let rows: Vec<usize> = missing
        .iter()
        .map(|image| board.add(&image.label, &image.reference))
        .collect();
    let queue = Mutex::new((0..missing.len()).collect::<VecDeque<usize>>());
    let results: Mutex<Vec<Option<Result<Duration, PullFailure>>>> =
        Mutex::new(missing.iter().map(|_| None).collect());
    let policy = Policy::from_env().map_err(Exit::config)?;
    let workers = missing.len().min(MAX_PULLS - 1);
    let (in_docker, scoped) = (engine.docker_time(), Instant::now());
    let acquired = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let Ok(engine) = Engine::new() else {
                    return;
                };
                loop {
                    let Some(index) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        return;
                    };
                    let (image, row) = (&missing[index], rows[index]);
                    board.sized(row, pull_size(&image.reference));
                    board.wait_sized(HEADER_WAIT);
                    let pulled = Instant::now();
                    let mut log = BoardLog::new(&board);
                    let result = acquire::pull_with_retries(
                        &engine,
                        config,
                        &policy,
                        &image.reference,
                        &mut None,
                        &mut log,
                        (&board, row),
                    );
                    match &result {
                        Ok(_) => board.done(row),
                        Err(failure) => board.failed(row, &failure.describe(config)),
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[index] =
                        Some(result.map(|_| pulled.elapsed()));
                }
            });
        }
        let mut log = BoardLog::new(&board);
        acquire::acquire(
            engine,
            config,
            &mut log,
            before_work,
            (&board, php_row),
            known,
        )
    });
    board.finish();
    // The other pulls ran on their own handles: what the scope took beyond this handle's docker time was theirs.
    if workers > 0 {
        let own = engine.docker_time().saturating_sub(in_docker);
        engine.add_docker_time(scoped.elapsed().saturating_sub(own));
    }
    let acquired = acquired?;
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut pulled = Vec::new();
    let mut failed = Vec::new();
    for (image, result) in missing.iter().zip(results) {
        match result {
            Some(Ok(took)) => pulled.push((image.clone(), took)),
            Some(Err(failure)) => failed.push(format!(
                "the {} image {} could not be pulled: {}; {}",
                image.label,
                image.reference,
                failure.describe(config),
                match image.variable {
                    Some(variable) => format!(
                        "check {variable} (`20i start --explain` shows where it is set), or try `docker pull {}`",
                        image.reference
                    ),
                    None => format!(
                        "check the module that names it, or try `docker pull {}`",
                        image.reference
                    ),
                }
            )),
            None => failed.push(format!(
                "the {} image {} was not pulled (its puller could not start)",
                image.label, image.reference
            )),
        }
    }
    if !failed.is_empty() {
        return Err(Exit::image(config.redact(&failed.join("\n"))).into());
    }
    Ok(Fetched {
        acquired,
        pulled,
        took: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_as_docker_completes_them() {
        for (text, expected) in [
            ("nginx:1.25-alpine", "docker.io/library/nginx:1.25-alpine"),
            (
                "phpmyadmin/phpmyadmin:latest",
                "docker.io/phpmyadmin/phpmyadmin:latest",
            ),
            ("redis", "docker.io/library/redis:latest"),
            (
                "127.0.0.1:5000/stack/nginx:2",
                "127.0.0.1:5000/stack/nginx:2",
            ),
            ("localhost/x/y", "localhost/x/y:latest"),
            ("ghcr.io/a/b:1", "ghcr.io/a/b:1"),
        ] {
            assert_eq!(docker_reference(text).unwrap().to_string(), expected);
        }
        assert!(docker_reference("-x").is_err());
    }

    #[test]
    fn absent_images_from_docker_s_message() {
        let stderr = "Error response from daemon: No such image: nope/x:1\n\
                      Error response from daemon: No such image: 127.0.0.1:5000/a/b:c\n";
        let absent: Vec<String> = absent_in(stderr).into_iter().collect();
        assert_eq!(absent, ["127.0.0.1:5000/a/b:c", "nope/x:1"]);
        assert!(absent_in("Cannot connect to the Docker daemon").is_empty());
    }
}
