//! Image selection as plain data: from the configuration and what the local image store holds, decide whether
//! `20i start` uses a cached image, pulls, reuses a local build or builds, and what happens when a pull fails.
//! Nothing here runs a command; `acquire` carries the decisions out.

use std::{collections::BTreeMap, time::Duration};

use stack_images::{docker::FailureKind, BaseLock, Digest, Matrix, PhpLine};

use crate::config::{Config, Namespace};

/// Labels a local build carries: that it was built here, and from which build context and Dockerfile content.
pub const LABEL_LOCAL: &str = "io.20i-stack.local-build";
pub const LABEL_CONTEXT: &str = "io.20i-stack.context-digest";
pub const LABEL_DOCKERFILE: &str = "io.20i-stack.dockerfile-digest";

/// Pull attempts for a transient failure, and the wait before each retry.
pub const PULL_ATTEMPTS: u32 = 3;

pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 << attempt.min(6))
}

/// Failures worth retrying, and worth trying a mirror for: the registry may answer a moment later.
pub fn is_transient(kind: FailureKind) -> bool {
    matches!(kind, FailureKind::Unreachable | FailureKind::RateLimited)
}

/// An image in the local store, as `docker image inspect` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalImage {
    /// The registry digests it is known by (from `RepoDigests`).
    pub digests: Vec<Digest>,
    pub labels: BTreeMap<String, String>,
}

/// What the local store holds, read before deciding.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The pre-built reference, if present.
    pub prebuilt: Option<LocalImage>,
    /// The local build's reference, if present.
    pub local_build: Option<LocalImage>,
    /// The build context's digest, if it has a Dockerfile.
    pub context: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Use the cached pre-built image: no registry request at all.
    Cached { reference: String },
    /// Pull it (then mirrors, then maybe a local build, by [`after_pull_failure`]).
    Pull { reference: String, why: String },
    /// `USE_PREBUILT=false`.
    Local(Build),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Build {
    /// The local build is from the current build context: use it as it is.
    Reuse {
        reference: String,
    },
    Build {
        reference: String,
        why: String,
    },
}

pub fn decide(config: &Config, facts: &Facts) -> Decision {
    if !config.use_prebuilt {
        return Decision::Local(build_decision(config, facts));
    }
    let reference = config.prebuilt_reference();
    match (&facts.prebuilt, config.pinned_digest()) {
        (None, _) => Decision::Pull {
            reference,
            why: "not in the local image store".to_owned(),
        },
        (Some(image), Some(pin)) if !image.digests.contains(pin) => Decision::Pull {
            reference,
            why: format!("the cached image is not the pinned {pin}"),
        },
        (Some(_), _) => Decision::Cached { reference },
    }
}

/// Whether the local build can be reused: only when its label names the current build context's digest.
pub fn build_decision(config: &Config, facts: &Facts) -> Build {
    let reference = config.local_reference();
    let built_from = facts
        .local_build
        .as_ref()
        .and_then(|image| image.labels.get(LABEL_CONTEXT));
    let why = match (built_from, &facts.context) {
        (_, None) => "no build context yet".to_owned(),
        (None, _) => "no local build yet".to_owned(),
        (Some(old), Some(new)) if old == new.as_str() => return Build::Reuse { reference },
        (Some(old), Some(new)) => format!(
            "the build context changed ({} now, the image was built from {})",
            new.short(),
            Digest::parse(old)
                .map(|d| d.short().to_owned())
                .unwrap_or_else(|_| old.clone())
        ),
    };
    Build::Build { reference, why }
}

/// The base image a local build starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseImage {
    /// `PHP_BASE`, pinned by digest in the shipped base lock, as a release builds it.
    Pinned(String),
    /// The lock has no base for the line: the Dockerfile's own default (a tag) is built from.
    Unpinned { why: String },
}

/// The base of a local build of `php`: from the shipped base lock, or why there is none.
pub fn base_image(php: PhpLine) -> BaseImage {
    let lock = BaseLock::parse(stack_images::bases::SHIPPED_LOCK_TOML)
        .expect("the shipped base lock is checked by stack-images' tests");
    match lock.lines.get(&php) {
        Some(base) => BaseImage::Pinned(format!("{}:{}@{}", lock.source, base.tag, base.digest)),
        None => {
            let lines: Vec<String> = lock.lines.keys().map(ToString::to_string).collect();
            BaseImage::Unpinned {
                why: format!(
                    "PHP {php} is not a line of this release (its base lock pins {}), so the Dockerfile's \
                     default base {}:{} is built by tag, whatever it points at today; use one of those lines \
                     with PHP_VERSION for a pinned base",
                    lines.join(", "),
                    lock.source,
                    stack_images::bases::base_tag(php)
                ),
            }
        }
    }
}

/// What to do after the pull of the pre-built image failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try these mirror namespaces for the same tag.
    TryMirrors(Vec<Namespace>),
    /// `ALLOW_LOCAL_BUILD_FALLBACK=true`: build locally, saying why.
    Fallback { why: String },
    /// Stop with this actionable message.
    Stop { message: String },
}

pub fn after_pull_failure(config: &Config, kind: FailureKind, mirrors_tried: bool) -> Next {
    if is_transient(kind) && !mirrors_tried && !config.mirrors.is_empty() {
        return Next::TryMirrors(config.mirrors.clone());
    }
    let mut why = cause(config, kind);
    if mirrors_tried {
        let mirrors: Vec<String> = config.mirrors.iter().map(ToString::to_string).collect();
        why.push_str(&format!(
            " (the mirrors failed too: {})",
            mirrors.join(", ")
        ));
    }
    if config.allow_fallback {
        Next::Fallback { why }
    } else {
        Next::Stop {
            message: format!(
                "{why}, and ALLOW_LOCAL_BUILD_FALLBACK=false: {}",
                remedy(config, kind)
            ),
        }
    }
}

fn host(config: &Config) -> &str {
    config.registry.host()
}

fn cause(config: &Config, kind: FailureKind) -> String {
    let reference = config.prebuilt_reference();
    let host = host(config);
    match kind {
        FailureKind::Unreachable => {
            format!("could not reach {host} to pull {reference} (offline, or the registry is down)")
        }
        FailureKind::RateLimited => format!("{host} rate-limited the pull of {reference}"),
        FailureKind::Unauthorized => {
            format!("{host} refused to serve {reference} without valid credentials")
        }
        FailureKind::NotFound => {
            let lines: Vec<String> = Matrix::embedded()
                .php_lines()
                .iter()
                .map(ToString::to_string)
                .collect();
            format!(
                "{reference} is not published (this release has PHP {}; a development build of the launcher \
                 has no published images)",
                lines.join(", ")
            )
        }
        FailureKind::DigestMismatch => match config.pinned_digest() {
            Some(pin) => format!("{reference} does not have the pinned digest {pin}"),
            None => format!("{reference} did not match its digest while pulling"),
        },
        FailureKind::Other => format!("pulling {reference} failed"),
    }
}

fn remedy(config: &Config, kind: FailureKind) -> String {
    let host = host(config);
    let build = "or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally";
    match kind {
        FailureKind::Unreachable => format!("connect and run `20i start` again, {build}"),
        FailureKind::RateLimited => format!(
            "wait for the rate limit to reset, or run `docker login {host}` for a higher limit, {build}"
        ),
        FailureKind::Unauthorized => format!(
            "run `docker login {host}` (the public images need no login: check IMAGE_REGISTRY), {build}"
        ),
        FailureKind::NotFound => format!("pick a published PHP line with PHP_VERSION, {build}"),
        FailureKind::DigestMismatch => format!(
            "run `20i pin` again if the release was republished, or remove PHP_FPM_PIN, {build}"
        ),
        FailureKind::Other => format!("see docker's message below, {build}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{parse_env_file, resolve, Inputs, Layer, Source};

    const V: &str = env!("CARGO_PKG_VERSION");

    fn config(settings: &str) -> Config {
        resolve(&Inputs {
            home: PathBuf::from("/home/u"),
            cwd: PathBuf::from("/work/site"),
            layers: vec![Layer {
                source: Source::Environment,
                values: parse_env_file(&settings.replace(' ', "\n")).unwrap(),
            }],
        })
        .unwrap()
    }

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn image(digests: &[char], context: Option<char>) -> Option<LocalImage> {
        let mut labels = BTreeMap::new();
        if let Some(c) = context {
            labels.insert(LABEL_CONTEXT.to_owned(), digest(c).to_string());
        }
        Some(LocalImage {
            digests: digests.iter().map(|&c| digest(c)).collect(),
            labels,
        })
    }

    #[track_caller]
    fn check(settings: &str, facts: Facts, expected: &str) {
        let actual = match decide(&config(settings), &facts) {
            Decision::Cached { reference } => format!("cached {reference}"),
            Decision::Pull { reference, why } => format!("pull {reference}: {why}"),
            Decision::Local(Build::Reuse { reference }) => format!("reuse {reference}"),
            Decision::Local(Build::Build { reference, why }) => format!("build {reference}: {why}"),
        };
        assert_eq!(actual, expected.replace("{V}", V), "{settings}");
    }

    #[test]
    #[rustfmt::skip]
    fn decisions() {
        let pin = format!("PHP_FPM_PIN=sha256:{}", "a".repeat(64));
        let none = Facts::default();
        check("", none.clone(), "pull ghcr.io/20i-stack/php-fpm:v{V}-php-8.5: not in the local image store");
        check("", Facts { prebuilt: image(&['a'], None), ..none.clone() }, "cached ghcr.io/20i-stack/php-fpm:v{V}-php-8.5");
        check("PHP_VERSION=8.2", Facts { prebuilt: image(&[], None), ..none.clone() }, "cached ghcr.io/20i-stack/php-fpm:v{V}-php-8.2");
        check(&pin, Facts { prebuilt: image(&['b', 'a'], None), ..none.clone() }, "cached ghcr.io/20i-stack/php-fpm:v{V}-php-8.5");
        check(&pin, Facts { prebuilt: image(&['b'], None), ..none.clone() }, &format!("pull ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5: the cached image is not the pinned sha256:{}", "a".repeat(64)));
        // A local build never passes for the pre-built image: USE_PREBUILT=true ignores it.
        check("", Facts { local_build: image(&[], Some('c')), context: Some(digest('c')), ..none.clone() }, "pull ghcr.io/20i-stack/php-fpm:v{V}-php-8.5: not in the local image store");
        check("USE_PREBUILT=false", Facts { context: Some(digest('c')), ..none.clone() }, "build 20i-local/php-fpm:v{V}-php-8.5: no local build yet");
        check("USE_PREBUILT=false", none.clone(), "build 20i-local/php-fpm:v{V}-php-8.5: no build context yet");
        check("USE_PREBUILT=false", Facts { prebuilt: image(&['a'], None), local_build: image(&[], Some('c')), context: Some(digest('c')) }, "reuse 20i-local/php-fpm:v{V}-php-8.5");
        check("USE_PREBUILT=false", Facts { local_build: image(&[], Some('c')), context: Some(digest('d')), ..none.clone() }, "build 20i-local/php-fpm:v{V}-php-8.5: the build context changed (sha256:dddddddddddd now, the image was built from sha256:cccccccccccc)");
        check("USE_PREBUILT=false", Facts { local_build: image(&[], None), context: Some(digest('d')), ..none }, "build 20i-local/php-fpm:v{V}-php-8.5: no local build yet");
    }

    #[track_caller]
    fn check_failure(settings: &str, kind: FailureKind, mirrors_tried: bool, expected: &str) {
        let actual = match after_pull_failure(&config(settings), kind, mirrors_tried) {
            Next::TryMirrors(mirrors) => {
                let mirrors: Vec<String> = mirrors.iter().map(ToString::to_string).collect();
                format!("mirrors {}", mirrors.join(","))
            }
            Next::Fallback { why } => format!("build: {why}"),
            Next::Stop { message } => format!("stop: {message}"),
        };
        assert_eq!(actual, expected.replace("{V}", V), "{settings} {kind:?}");
    }

    #[test]
    #[rustfmt::skip]
    fn pull_failures() {
        use FailureKind::*;
        let refuse = "ALLOW_LOCAL_BUILD_FALLBACK=false";
        let no_mirrors = "IMAGE_MIRRORS=";
        // Transient failures of the canonical registry try the mirrors first, whatever the fallback.
        check_failure("", Unreachable, false, "mirrors docker.io/20istack");
        check_failure(refuse, RateLimited, false, "mirrors docker.io/20istack");
        check_failure("", Unauthorized, false, "build: ghcr.io refused to serve ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 without valid credentials");
        check_failure("", Unreachable, true, "build: could not reach ghcr.io to pull ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 (offline, or the registry is down) (the mirrors failed too: docker.io/20istack)");
        check_failure(no_mirrors, Unreachable, false, "build: could not reach ghcr.io to pull ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 (offline, or the registry is down)");
        check_failure(&format!("{refuse} {no_mirrors}"), Unreachable, false, "stop: could not reach ghcr.io to pull ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 (offline, or the registry is down), and ALLOW_LOCAL_BUILD_FALLBACK=false: connect and run `20i start` again, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        check_failure(refuse, RateLimited, true, "stop: ghcr.io rate-limited the pull of ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 (the mirrors failed too: docker.io/20istack), and ALLOW_LOCAL_BUILD_FALLBACK=false: wait for the rate limit to reset, or run `docker login ghcr.io` for a higher limit, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        check_failure(refuse, Unauthorized, false, "stop: ghcr.io refused to serve ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 without valid credentials, and ALLOW_LOCAL_BUILD_FALLBACK=false: run `docker login ghcr.io` (the public images need no login: check IMAGE_REGISTRY), or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        check_failure(&format!("{refuse} PHP_VERSION=8.0"), NotFound, false, "stop: ghcr.io/20i-stack/php-fpm:v{V}-php-8.0 is not published (this release has PHP 8.1, 8.2, 8.3, 8.4, 8.5; a development build of the launcher has no published images), and ALLOW_LOCAL_BUILD_FALLBACK=false: pick a published PHP line with PHP_VERSION, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        check_failure(&format!("{refuse} PHP_FPM_PIN=sha256:{}", "a".repeat(64)), DigestMismatch, false, &format!("stop: ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 does not have the pinned digest sha256:{}, and ALLOW_LOCAL_BUILD_FALLBACK=false: run `20i pin` again if the release was republished, or remove PHP_FPM_PIN, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally", "a".repeat(64)));
        check_failure(&format!("{refuse} IMAGE_REGISTRY=127.0.0.1:5000/t"), Other, false, "stop: pulling 127.0.0.1:5000/t/php-fpm:v{V}-php-8.5 failed, and ALLOW_LOCAL_BUILD_FALLBACK=false: see docker's message below, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
    }

    #[test]
    fn a_line_without_a_locked_base_says_so() {
        let pinned = base_image(PhpLine::new(8, 4));
        assert!(
            matches!(&pinned, BaseImage::Pinned(base) if base.contains(":8.4-fpm-alpine@sha256:")),
            "{pinned:?}"
        );
        let BaseImage::Unpinned { why } = base_image(PhpLine::new(8, 0)) else {
            panic!("8.0 has a base");
        };
        assert!(why.starts_with("PHP 8.0 is not a line of this release (its base lock pins 8.1, 8.2, 8.3, 8.4, 8.5), so the Dockerfile's default base docker.io/library/php:8.0-fpm-alpine is built by tag"), "{why}");
    }

    #[test]
    fn retries_are_bounded_with_backoff() {
        let waits: Vec<u128> = (1..PULL_ATTEMPTS).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(waits, [1000, 2000]);
        assert!(is_transient(FailureKind::Unreachable) && !is_transient(FailureKind::NotFound));
    }
}
