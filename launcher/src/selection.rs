//! Image selection as plain data: from the configuration and what the local image store holds, decide whether
//! `20i start` uses a cached image, pulls, reuses a local build or builds, and what happens when a pull fails.
//! Nothing here runs a command; `acquire` carries the decisions out.

use std::{collections::BTreeMap, time::Duration};

use stack_images::{cosign, docker::FailureKind, BaseLock, Digest, ImageRef, Matrix, PhpLine};

use crate::config::{Config, Namespace};

/// Labels a local build carries: that it was built here, and from which build context and Dockerfile content.
pub const LABEL_LOCAL: &str = "io.20i-stack.local-build";
pub const LABEL_CONTEXT: &str = "io.20i-stack.context-digest";
pub const LABEL_DOCKERFILE: &str = "io.20i-stack.dockerfile-digest";
/// The base a local build was built from (`PHP_BASE`); absent on builds from the shipped lock's base.
pub const LABEL_BASE: &str = "io.20i-stack.base";

/// Whether another attempt at the same registry may succeed: it may answer a moment later. A stall or a pull that
/// ran out of time already cost its bound, so the mirror is next; a digest mismatch gets one more attempt
/// ([`DIGEST_MISMATCH_ATTEMPTS`]).
pub fn retry_same_registry(kind: FailureKind) -> bool {
    matches!(kind, FailureKind::Unreachable | FailureKind::RateLimited)
}

/// Attempts at one registry when the content does not match its digest: a flipped byte in transit is retried
/// once; twice from the same registry, the bytes there are wrong, and the mirror is next.
pub const DIGEST_MISMATCH_ATTEMPTS: u32 = 2;

/// The wait after a digest mismatch before the image is pulled again, from any registry. The engine (containerd's
/// content store) keeps the damaged download until its next garbage collection, seconds later, and a pull of the
/// same digest before then fails on those bytes without asking any registry (measured here: 2 to 4 s).
pub const DAMAGED_DOWNLOAD_WAIT: Duration = Duration::from_secs(5);

/// More waits of [`DAMAGED_DOWNLOAD_WAIT`] when the next registry's pull still meets the damaged download: on a
/// busy machine the engine collects it later than the first wait (seen: more than 15 s at a load of 10 on two
/// cores; 25 s on an idle one). Bounded (a minute), and within PULL_TIMEOUT.
pub const STALE_DOWNLOAD_WAITS: u32 = 12;

/// The digest the bytes of a damaged download really had, from containerd's "unexpected commit digest
/// sha256:…, expected sha256:…".
pub fn damaged_digest(stderr: &str) -> Option<String> {
    let at = stderr.find("unexpected commit digest ")? + "unexpected commit digest ".len();
    let digest: String = stderr[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == ':' || c.is_ascii_lowercase())
        .collect();
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

/// Failures worth a mirror: the same image may be served whole from elsewhere.
pub fn is_transient(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Docker(
            FailureKind::Unreachable
                | FailureKind::RateLimited
                | FailureKind::Stalled
                | FailureKind::TimedOut
                | FailureKind::DigestMismatch
        )
    )
}

/// `Retry-After` where docker's message shows one (`retry-after: 30`, `retry after 30`): docker usually does not
/// print the registry's headers, so this is mostly `None` and the policy's backoff applies.
pub fn retry_after_in(message: &str) -> Option<Duration> {
    let text = message.to_ascii_lowercase();
    ["retry-after:", "retry after"].iter().find_map(|sign| {
        let at = text.find(sign)? + sign.len();
        let digits: String = text[at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok().map(Duration::from_secs)
    })
}

/// Why a pull from one registry ended without the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Docker's pull failed this way, after the retries the kind allows.
    Docker(FailureKind),
    /// The registry served an image whose digest is not `PHP_FPM_PIN`'s.
    NotThePin { got: Vec<Digest> },
    /// VERIFY_SIGNATURE=true and no signature of the image's digest verifies, or none could be checked. Classified
    /// like a digest mismatch (`cosign::Failure::kind`): the bytes are not the publisher's; never retried
    /// elsewhere, and a bad or missing cosign stops before anything is built.
    Signature {
        failure: cosign::Failure,
        digests: Vec<Digest>,
    },
}

/// A pull from one registry that ended without the image: where, why, and what was tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullFailure {
    pub reference: String,
    pub fault: Fault,
    pub attempts: u32,
    /// Time spent waiting between attempts.
    pub waited: Duration,
}

impl PullFailure {
    /// One line saying what happened at this reference: "stalled for 5 s at REF", "digest mismatch twice at REF".
    pub fn describe(&self, config: &Config) -> String {
        let reference = &self.reference;
        let attempts = match self.attempts {
            1 => "once".to_owned(),
            2 => "twice".to_owned(),
            n => format!("{n} times"),
        };
        let waited = if self.waited.is_zero() {
            String::new()
        } else {
            format!(
                ", waited {:.1} s in all between attempts",
                self.waited.as_secs_f64()
            )
        };
        match &self.fault {
            Fault::Docker(FailureKind::Stalled) => format!(
                "stalled for {} s at {reference}: no progress (PULL_STALL_TIMEOUT={})",
                config.pull_stall_timeout, config.pull_stall_timeout
            ),
            Fault::Docker(FailureKind::TimedOut) => format!(
                "timed out at {reference}: not done in PULL_TIMEOUT={} s (tried {attempts}{waited})",
                config.pull_timeout
            ),
            Fault::Docker(FailureKind::DigestMismatch) => format!(
                "digest mismatch {attempts} at {reference}: the bytes served did not match their digest"
            ),
            Fault::Docker(FailureKind::RateLimited) => {
                format!("rate limited at {reference}, tried {attempts}{waited}")
            }
            Fault::Docker(FailureKind::Unreachable) => {
                format!("unreachable at {reference}, tried {attempts}{waited}")
            }
            Fault::Docker(kind) => format!("{} at {reference}", kind.describe()),
            Fault::Signature { failure, digests } => {
                let digests: Vec<String> = digests.iter().map(ToString::to_string).collect();
                let digests = if digests.is_empty() { "no digest".to_owned() } else { digests.join(", ") };
                let verifier = match &config.signature {
                    Some(cosign::Verifier::Key(key)) => format!("the key {} (SIGNATURE_KEY)", key.display()),
                    Some(cosign::Verifier::Identity { identity, issuer }) => {
                        format!("the identity {identity} from {issuer} (SIGNATURE_IDENTITY, SIGNATURE_ISSUER)")
                    }
                    None => "nothing (VERIFY_SIGNATURE=false)".to_owned(),
                };
                match failure {
                    cosign::Failure::NoSignature | cosign::Failure::NotVerified => format!(
                        "{reference} ({digests}) has no signature that verifies with {verifier} ({}): refused and \
                         removed, not run",
                        failure.describe()
                    ),
                    _ => format!(
                        "the signature of {reference} ({digests}) could not be checked with {verifier}: {}",
                        failure.describe()
                    ),
                }
            }
            Fault::NotThePin { got } => {
                let got: Vec<String> = got.iter().map(ToString::to_string).collect();
                format!(
                    "{reference} was pulled with digest {}, not the pinned {}: refused and removed",
                    if got.is_empty() { "unknown".to_owned() } else { got.join(", ") },
                    config.pinned_digest().map_or_else(String::new, ToString::to_string)
                )
            }
        }
    }
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

/// Whether the local build can be reused: only when its labels name the current build context's digest and the
/// current `PHP_BASE`'s digest (the same base served by another registry is the same base).
pub fn build_decision(config: &Config, facts: &Facts) -> Build {
    let reference = config.local_reference();
    let built_base = facts
        .local_build
        .as_ref()
        .and_then(|image| image.labels.get(LABEL_BASE));
    let same_base = match (&config.base, built_base) {
        (None, None) => true,
        (Some(wanted), Some(label)) => {
            // A label is outside input: one that is no reference with a digest is simply another base.
            let built: Option<ImageRef> = label.parse().ok();
            match (built.as_ref().and_then(ImageRef::digest), wanted.digest()) {
                (Some(built), Some(wanted)) => built == wanted,
                _ => false,
            }
        }
        _ => false,
    };
    if facts.local_build.is_some() && facts.context.is_some() && !same_base {
        let lock = || BASE_FROM_LOCK.to_owned() + "'s";
        return Build::Build {
            reference,
            why: format!(
                "the base changed (PHP_BASE: {} now, the image was built from {})",
                config.base.as_ref().map_or_else(lock, ToString::to_string),
                built_base.cloned().unwrap_or_else(lock)
            ),
        };
    }
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
    /// `PHP_BASE`, pinned by digest: set by the user (a mirror of the base), or from the shipped base lock, as a
    /// release builds it.
    Pinned { base: String, from: &'static str },
    /// The lock has no base for the line: the Dockerfile's own default (a tag) is built from.
    Unpinned { why: String },
}

/// Where a base set by `PHP_BASE` comes from, as `--explain` says it.
pub const BASE_FROM_SETTING: &str = "PHP_BASE";
/// Where a base from the shipped lock comes from.
pub const BASE_FROM_LOCK: &str = "the shipped base lock";

/// The base of a local build: `PHP_BASE` when set, else the shipped base lock's pin of the line, or why there is
/// none.
pub fn base_image(config: &Config) -> BaseImage {
    match &config.base {
        Some(base) => BaseImage::Pinned {
            base: base.to_string(),
            from: BASE_FROM_SETTING,
        },
        None => locked_base(config.php),
    }
}

/// The shipped base lock's base of `php`, or why there is none.
fn locked_base(php: PhpLine) -> BaseImage {
    let lock = BaseLock::parse(stack_images::bases::SHIPPED_LOCK_TOML)
        .expect("the shipped base lock is checked by stack-images' tests");
    match lock.lines.get(&php) {
        Some(base) => BaseImage::Pinned {
            base: format!("{}:{}@{}", lock.source, base.tag, base.digest),
            from: BASE_FROM_LOCK,
        },
        None => {
            let lines: Vec<String> = lock.lines.keys().map(ToString::to_string).collect();
            BaseImage::Unpinned {
                why: format!(
                    "PHP {php} is not a line of this release (its base lock pins {}), so the Dockerfile's \
                     default base {}:{} is built by tag, whatever it points at today; use one of those lines \
                     with PHP_VERSION for a pinned base, or set PHP_BASE",
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

/// The next step after the pull from the canonical registry failed (`canonical`) and, once they were tried, every
/// mirror's failure (`mirrors`, empty before).
/// What to do when VERIFY_SIGNATURE=true and cosign cannot be run.
pub const SIGNATURE_NEEDS_COSIGN: &str = "VERIFY_SIGNATURE=true needs cosign: install it (Debian and Ubuntu: \
     `apt-get install cosign`; elsewhere https://docs.sigstore.dev/cosign/system_config/installation/), or set \
     VERIFY_SIGNATURE=false";

pub fn after_pull_failure(
    config: &Config,
    canonical: &PullFailure,
    mirrors: &[PullFailure],
) -> Next {
    // cosign missing or a key that cannot be read is this machine's setup, not the image's: a local build would
    // hide it, so it stops whatever ALLOW_LOCAL_BUILD_FALLBACK says.
    // So is a certificate nobody here trusts (docker's pull or cosign's read of the signature): a local build, or
    // a mirror behind the same TLS-rewriting proxy, would hide that the machine does not trust what it talks to.
    if let Fault::Signature {
        failure:
            cosign::Failure::NotStarted
            | cosign::Failure::Key
            | cosign::Failure::Registry(FailureKind::Certificate),
        ..
    }
    | Fault::Docker(FailureKind::Certificate) = &canonical.fault
    {
        return Next::Stop {
            message: format!(
                "{}: {}",
                cause(config, canonical),
                remedy(config, &canonical.fault)
            ),
        };
    }
    let mirrors_tried = !mirrors.is_empty();
    if is_transient(&canonical.fault) && !mirrors_tried && !config.mirrors.is_empty() {
        return Next::TryMirrors(config.mirrors.clone());
    }
    let mut why = cause(config, canonical);
    if mirrors_tried {
        let mirrors: Vec<String> = mirrors.iter().map(|m| m.describe(config)).collect();
        why.push_str(&format!(
            " (the mirrors failed too: {})",
            mirrors.join("; ")
        ));
    }
    if config.allow_fallback {
        Next::Fallback { why }
    } else {
        Next::Stop {
            message: format!(
                "{why}, and ALLOW_LOCAL_BUILD_FALLBACK=false: {}",
                remedy(config, &canonical.fault)
            ),
        }
    }
}

fn host(config: &Config) -> &str {
    config.registry.host()
}

fn cause(config: &Config, failure: &PullFailure) -> String {
    let reference = &failure.reference;
    let host = host(config);
    match &failure.fault {
        Fault::Docker(FailureKind::Unreachable) => format!(
            "could not reach {host} to pull {reference} (offline, or the registry is down; {})",
            failure.describe(config)
        ),
        Fault::Docker(FailureKind::RateLimited) => {
            format!(
                "{host} rate-limited the pull of {reference} ({})",
                failure.describe(config)
            )
        }
        Fault::Docker(FailureKind::Unauthorized) => {
            format!("{host} refused to serve {reference} without valid credentials")
        }
        Fault::Docker(FailureKind::Certificate) => {
            format!("docker does not trust {host}'s TLS certificate, so {reference} was not pulled")
        }
        Fault::Docker(FailureKind::NotFound) => {
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
        Fault::Docker(
            FailureKind::Stalled | FailureKind::TimedOut | FailureKind::DigestMismatch,
        ) => {
            format!("the pull from {host} failed: {}", failure.describe(config))
        }
        Fault::Signature { .. } => failure.describe(config),
        Fault::NotThePin { .. } => match config.pinned_digest() {
            Some(pin) => format!("{reference} does not have the pinned digest {pin}"),
            None => format!("{reference} does not have the pinned digest"),
        },
        Fault::Docker(FailureKind::Other) => format!("pulling {reference} failed"),
    }
}

fn remedy(config: &Config, fault: &Fault) -> String {
    let host = host(config);
    let build = "or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally";
    let mirror = if config.mirrors.is_empty() {
        "set IMAGE_MIRRORS to a registry holding the same images, "
    } else {
        ""
    };
    match fault {
        Fault::Docker(FailureKind::Unreachable) => {
            format!("connect and run the command again, {mirror}{build}")
        }
        Fault::Docker(FailureKind::RateLimited) => format!(
            "wait for the rate limit to reset, or run `docker login {host}` for a higher limit, {mirror}{build}"
        ),
        Fault::Docker(FailureKind::Unauthorized) => format!(
            "run `docker login {host}` (the public images need no login: check IMAGE_REGISTRY), {build}"
        ),
        // A mirror is not tried, nor a fallback build: the same missing CA (or TLS-rewriting proxy) would refuse
        // the mirror too, and a user must learn that the machine does not trust what it talks to.
        Fault::Docker(FailureKind::Certificate) => format!(
            "put the CA that signed {host}'s certificate in /etc/docker/certs.d/{host}/ca.crt (or in the system \
             store, then restart docker), or check IMAGE_REGISTRY, or set USE_PREBUILT=false to build locally"
        ),
        Fault::Docker(FailureKind::NotFound) => {
            format!("pick a published PHP line with PHP_VERSION, {build}")
        }
        Fault::Docker(FailureKind::Stalled) => format!(
            "run the command again later; on a connection that goes quiet for longer, raise PULL_STALL_TIMEOUT, \
             {mirror}{build}"
        ),
        Fault::Docker(FailureKind::TimedOut) => format!(
            "run the command again later; on a slow connection raise PULL_TIMEOUT, {mirror}{build}"
        ),
        Fault::Docker(FailureKind::DigestMismatch) => format!(
            "run the command again; if it persists, something between here and {host} changes the bytes \
             (a proxy?) or the registry's copy is damaged: report it, {mirror}{build}"
        ),
        Fault::NotThePin { .. } => format!(
            "run `20i pin` again if the release was republished, or remove PHP_FPM_PIN, {build}"
        ),
        Fault::Signature { failure, .. } => match failure {
            cosign::Failure::NoSignature | cosign::Failure::NotVerified => format!(
                "check that SIGNATURE_KEY (or SIGNATURE_IDENTITY) is the release's own (its notes print the `cosign \
                 verify` command); if it is, {host} serves an image its publisher did not sign: report it, {build}"
            ),
            cosign::Failure::NotStarted => SIGNATURE_NEEDS_COSIGN.to_owned(),
            cosign::Failure::Key => "SIGNATURE_KEY must be the path of a readable cosign public key \
                                     (cosign.pub, as the release publishes it)"
                .to_owned(),
            cosign::Failure::Registry(FailureKind::Certificate) => format!(
                "cosign does not trust {host}'s TLS certificate: put the CA that signed it in \
                 /etc/docker/certs.d/{host}/ca.crt (cosign is given it as --registry-cacert) or in the system store \
                 (or the bundle SSL_CERT_FILE names), or set VERIFY_SIGNATURE=false to run images unverified"
            ),
            cosign::Failure::TimedOut | cosign::Failure::Registry(_) => {
                let keyless = match config.signature {
                    Some(cosign::Verifier::Identity { .. }) => {
                        " (and, for a keyless signature, Sigstore's public trust root)"
                    }
                    _ => "",
                };
                format!(
                    "the signature is read from {host}{keyless}: connect and run the command again, or set \
                     VERIFY_SIGNATURE=false to run images unverified, {build}"
                )
            }
        },
        Fault::Docker(FailureKind::Other) => format!("see docker's message above, {build}"),
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
        check("USE_PREBUILT=false", Facts { local_build: image(&[], None), context: Some(digest('d')), ..none.clone() }, "build 20i-local/php-fpm:v{V}-php-8.5: no local build yet");
        // PHP_BASE is recorded by a build: another base, or none, is a rebuild even from the same context.
        let base = format!("PHP_BASE=127.0.0.1:5000/m/php:8.5@sha256:{}", "e".repeat(64));
        let from_base = |b: char| {
            let mut built = image(&[], Some('c'));
            if let Some(image) = &mut built {
                image.labels.insert(LABEL_BASE.to_owned(), format!("127.0.0.1:5000/m/php:8.5@sha256:{}", b.to_string().repeat(64)));
            }
            Facts { local_build: built, context: Some(digest('c')), prebuilt: None }
        };
        check(&format!("USE_PREBUILT=false {base}"), from_base('e'), "reuse 20i-local/php-fpm:v{V}-php-8.5");
        // The same digest from another registry (a test's registry on another port) is the same base.
        check(&format!("USE_PREBUILT=false PHP_BASE=127.0.0.1:6000/n/php:8.5@sha256:{}", "e".repeat(64)), from_base('e'), "reuse 20i-local/php-fpm:v{V}-php-8.5");
        check(&format!("USE_PREBUILT=false {base}"), from_base('f'), &format!("build 20i-local/php-fpm:v{{V}}-php-8.5: the base changed (PHP_BASE: 127.0.0.1:5000/m/php:8.5@sha256:{} now, the image was built from 127.0.0.1:5000/m/php:8.5@sha256:{})", "e".repeat(64), "f".repeat(64)));
        check(&format!("USE_PREBUILT=false {base}"), Facts { local_build: image(&[], Some('c')), context: Some(digest('c')), ..none.clone() }, &format!("build 20i-local/php-fpm:v{{V}}-php-8.5: the base changed (PHP_BASE: 127.0.0.1:5000/m/php:8.5@sha256:{} now, the image was built from the shipped base lock's)", "e".repeat(64)));
        check("USE_PREBUILT=false", from_base('e'), &format!("build 20i-local/php-fpm:v{{V}}-php-8.5: the base changed (PHP_BASE: the shipped base lock's now, the image was built from 127.0.0.1:5000/m/php:8.5@sha256:{})", "e".repeat(64)));
    }

    /// A failure at `reference` (`c` for the canonical registry, `m` for the mirror) after `attempts`, with
    /// `waited` seconds between them.
    fn failure(at: char, fault: Fault, attempts: u32, waited: u64) -> PullFailure {
        let namespace = if at == 'c' {
            "ghcr.io/20i-stack"
        } else {
            "docker.io/20istack"
        };
        PullFailure {
            reference: format!("{namespace}/php-fpm:v{V}-php-8.5"),
            fault,
            attempts,
            waited: Duration::from_secs(waited),
        }
    }

    #[track_caller]
    fn check_failure(
        settings: &str,
        canonical: PullFailure,
        mirrors: &[PullFailure],
        expected: &str,
    ) {
        let actual = match after_pull_failure(&config(settings), &canonical, mirrors) {
            Next::TryMirrors(mirrors) => {
                let mirrors: Vec<String> = mirrors.iter().map(ToString::to_string).collect();
                format!("mirrors {}", mirrors.join(","))
            }
            Next::Fallback { why } => format!("build: {why}"),
            Next::Stop { message } => format!("stop: {message}"),
        };
        assert_eq!(
            actual,
            expected.replace("{V}", V),
            "{settings} {canonical:?}"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn pull_failures() {
        use FailureKind::*;
        let d = Fault::Docker;
        let refuse = "ALLOW_LOCAL_BUILD_FALLBACK=false";
        let no_mirrors = "IMAGE_MIRRORS=";
        let pin = format!("PHP_FPM_PIN=sha256:{}", "a".repeat(64));
        // Transient failures of the canonical registry try the mirrors first, whatever the fallback.
        check_failure("", failure('c', d(Unreachable), 5, 7), &[], "mirrors docker.io/20istack");
        check_failure(refuse, failure('c', d(RateLimited), 5, 7), &[], "mirrors docker.io/20istack");
        check_failure(refuse, failure('c', d(Stalled), 1, 0), &[], "mirrors docker.io/20istack");
        check_failure(refuse, failure('c', d(TimedOut), 3, 2), &[], "mirrors docker.io/20istack");
        check_failure(refuse, failure('c', d(DigestMismatch), 2, 0), &[], "mirrors docker.io/20istack");
        check_failure("", failure('c', d(Unauthorized), 1, 0), &[], "build: ghcr.io refused to serve ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 without valid credentials");
        check_failure("", failure('c', d(Unreachable), 5, 7), &[failure('m', d(Stalled), 1, 0)], "build: could not reach ghcr.io to pull ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 (offline, or the registry is down; unreachable at ghcr.io/20i-stack/php-fpm:v{V}-php-8.5, tried 5 times, waited 7.0 s in all between attempts) (the mirrors failed too: stalled for 30 s at docker.io/20istack/php-fpm:v{V}-php-8.5: no progress (PULL_STALL_TIMEOUT=30))");
        check_failure(no_mirrors, failure('c', d(Unreachable), 1, 0), &[], "build: could not reach ghcr.io to pull ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 (offline, or the registry is down; unreachable at ghcr.io/20i-stack/php-fpm:v{V}-php-8.5, tried once)");
        check_failure(&format!("{refuse} {no_mirrors}"), failure('c', d(Unreachable), 2, 1), &[], "stop: could not reach ghcr.io to pull ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 (offline, or the registry is down; unreachable at ghcr.io/20i-stack/php-fpm:v{V}-php-8.5, tried twice, waited 1.0 s in all between attempts), and ALLOW_LOCAL_BUILD_FALLBACK=false: connect and run the command again, set IMAGE_MIRRORS to a registry holding the same images, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        check_failure(refuse, failure('c', d(RateLimited), 5, 9), &[failure('m', d(RateLimited), 5, 9)], "stop: ghcr.io rate-limited the pull of ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 (rate limited at ghcr.io/20i-stack/php-fpm:v{V}-php-8.5, tried 5 times, waited 9.0 s in all between attempts) (the mirrors failed too: rate limited at docker.io/20istack/php-fpm:v{V}-php-8.5, tried 5 times, waited 9.0 s in all between attempts), and ALLOW_LOCAL_BUILD_FALLBACK=false: wait for the rate limit to reset, or run `docker login ghcr.io` for a higher limit, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        check_failure(&format!("{refuse} {no_mirrors} PULL_STALL_TIMEOUT=5"), failure('c', d(Stalled), 1, 0), &[], "stop: the pull from ghcr.io failed: stalled for 5 s at ghcr.io/20i-stack/php-fpm:v{V}-php-8.5: no progress (PULL_STALL_TIMEOUT=5), and ALLOW_LOCAL_BUILD_FALLBACK=false: run the command again later; on a connection that goes quiet for longer, raise PULL_STALL_TIMEOUT, set IMAGE_MIRRORS to a registry holding the same images, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        check_failure(&format!("{refuse} PULL_TIMEOUT=30"), failure('c', d(TimedOut), 3, 2), &[failure('m', d(TimedOut), 1, 0)], "stop: the pull from ghcr.io failed: timed out at ghcr.io/20i-stack/php-fpm:v{V}-php-8.5: not done in PULL_TIMEOUT=30 s (tried 3 times, waited 2.0 s in all between attempts) (the mirrors failed too: timed out at docker.io/20istack/php-fpm:v{V}-php-8.5: not done in PULL_TIMEOUT=30 s (tried once)), and ALLOW_LOCAL_BUILD_FALLBACK=false: run the command again later; on a slow connection raise PULL_TIMEOUT, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        // A damaged blob is no reason to suggest a pin, set or not.
        for settings in [format!("{refuse} {no_mirrors}"), format!("{refuse} {no_mirrors} {pin}")] {
            check_failure(&settings, failure('c', d(DigestMismatch), 2, 0), &[], "stop: the pull from ghcr.io failed: digest mismatch twice at ghcr.io/20i-stack/php-fpm:v{V}-php-8.5: the bytes served did not match their digest, and ALLOW_LOCAL_BUILD_FALLBACK=false: run the command again; if it persists, something between here and ghcr.io changes the bytes (a proxy?) or the registry's copy is damaged: report it, set IMAGE_MIRRORS to a registry holding the same images, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        }
        check_failure(refuse, failure('c', d(Unauthorized), 1, 0), &[], "stop: ghcr.io refused to serve ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 without valid credentials, and ALLOW_LOCAL_BUILD_FALLBACK=false: run `docker login ghcr.io` (the public images need no login: check IMAGE_REGISTRY), or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        // A certificate nobody trusts stops, whatever the fallback: no mirror, no build hides it.
        for settings in ["", refuse] {
            check_failure(settings, failure('c', d(Certificate), 1, 0), &[], "stop: docker does not trust ghcr.io's TLS certificate, so ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 was not pulled: put the CA that signed ghcr.io's certificate in /etc/docker/certs.d/ghcr.io/ca.crt (or in the system store, then restart docker), or check IMAGE_REGISTRY, or set USE_PREBUILT=false to build locally");
        }
        check_failure(&format!("{refuse} PHP_VERSION=8.0"), PullFailure { reference: format!("ghcr.io/20i-stack/php-fpm:v{V}-php-8.0"), ..failure('c', d(NotFound), 1, 0) }, &[], "stop: ghcr.io/20i-stack/php-fpm:v{V}-php-8.0 is not published (this release has PHP 8.1, 8.2, 8.3, 8.4, 8.5; a development build of the launcher has no published images), and ALLOW_LOCAL_BUILD_FALLBACK=false: pick a published PHP line with PHP_VERSION, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
        // Another digest than the pin is refused: no mirror (it would serve the same release), the pin's remedy.
        check_failure(&format!("{refuse} {pin}"), failure('c', Fault::NotThePin { got: vec![digest('b')] }, 1, 0), &[], &format!("stop: ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 does not have the pinned digest sha256:{}, and ALLOW_LOCAL_BUILD_FALLBACK=false: run `20i pin` again if the release was republished, or remove PHP_FPM_PIN, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally", "a".repeat(64)));
        check_failure(refuse, failure('c', d(Other), 1, 0), &[], "stop: pulling ghcr.io/20i-stack/php-fpm:v{V}-php-8.5 failed, and ALLOW_LOCAL_BUILD_FALLBACK=false: see docker's message above, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally");
    }

    #[test]
    #[rustfmt::skip]
    fn signature_failures() {
        use cosign::Failure::*;
        let signature = |failure| Fault::Signature { failure, digests: vec![digest('b')] };
        let b = "b".repeat(64);
        let key = "VERIFY_SIGNATURE=true SIGNATURE_KEY=/keys/cosign.pub";
        let refuse = "ALLOW_LOCAL_BUILD_FALLBACK=false";
        // Like a digest mismatch: the bytes are not the publisher's; never a mirror (it copies the same signature).
        assert_eq!(NotVerified.kind(), FailureKind::DigestMismatch);
        assert_eq!(NoSignature.kind(), FailureKind::DigestMismatch);
        check_failure(&format!("{key} {refuse}"), failure('c', signature(NotVerified), 1, 0), &[], &format!("stop: ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 (sha256:{b}) has no signature that verifies with the key /keys/cosign.pub (SIGNATURE_KEY) (signature not verified): refused and removed, not run, and ALLOW_LOCAL_BUILD_FALLBACK=false: check that SIGNATURE_KEY (or SIGNATURE_IDENTITY) is the release's own (its notes print the `cosign verify` command); if it is, ghcr.io serves an image its publisher did not sign: report it, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally"));
        check_failure(&format!("VERIFY_SIGNATURE=true {refuse}"), failure('c', signature(NoSignature), 1, 0), &[], &format!("stop: ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 (sha256:{b}) has no signature that verifies with the identity https://github.com/20i-stack/20i-stack/.github/workflows/release.yml@refs/tags/v{{V}} from https://token.actions.githubusercontent.com (SIGNATURE_IDENTITY, SIGNATURE_ISSUER) (no signature): refused and removed, not run, and ALLOW_LOCAL_BUILD_FALLBACK=false: check that SIGNATURE_KEY (or SIGNATURE_IDENTITY) is the release's own (its notes print the `cosign verify` command); if it is, ghcr.io serves an image its publisher did not sign: report it, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally"));
        // With the fallback, the unsigned image is not run: the stack's own build context is built instead, saying why.
        check_failure(key, failure('c', signature(NotVerified), 1, 0), &[], &format!("build: ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 (sha256:{b}) has no signature that verifies with the key /keys/cosign.pub (SIGNATURE_KEY) (signature not verified): refused and removed, not run"));
        // This machine's setup stops, whatever the fallback: a local build would hide it.
        check_failure(key, failure('c', signature(NotStarted), 1, 0), &[], &format!("stop: the signature of ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 (sha256:{b}) could not be checked with the key /keys/cosign.pub (SIGNATURE_KEY): not started: {SIGNATURE_NEEDS_COSIGN}"));
        check_failure(key, failure('c', signature(Key), 1, 0), &[], &format!("stop: the signature of ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 (sha256:{b}) could not be checked with the key /keys/cosign.pub (SIGNATURE_KEY): key unreadable: SIGNATURE_KEY must be the path of a readable cosign public key (cosign.pub, as the release publishes it)"));
        check_failure(key, failure('c', signature(Registry(FailureKind::Certificate)), 1, 0), &[], &format!("stop: the signature of ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 (sha256:{b}) could not be checked with the key /keys/cosign.pub (SIGNATURE_KEY): certificate not trusted: cosign does not trust ghcr.io's TLS certificate: put the CA that signed it in /etc/docker/certs.d/ghcr.io/ca.crt (cosign is given it as --registry-cacert) or in the system store (or the bundle SSL_CERT_FILE names), or set VERIFY_SIGNATURE=false to run images unverified"));
        check_failure(&format!("{key} {refuse}"), failure('c', signature(Registry(FailureKind::Unreachable)), 1, 0), &[], &format!("stop: the signature of ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5 (sha256:{b}) could not be checked with the key /keys/cosign.pub (SIGNATURE_KEY): unreachable, and ALLOW_LOCAL_BUILD_FALLBACK=false: the signature is read from ghcr.io: connect and run the command again, or set VERIFY_SIGNATURE=false to run images unverified, or set ALLOW_LOCAL_BUILD_FALLBACK=true (or USE_PREBUILT=false) to build locally"));
    }

    #[track_caller]
    fn check_retry_after(message: &str, expected: Option<u64>) {
        assert_eq!(
            retry_after_in(message),
            expected.map(Duration::from_secs),
            "{message}"
        );
    }

    #[track_caller]
    fn check_damaged(stderr: &str, expected: Option<&str>) {
        assert_eq!(damaged_digest(stderr).as_deref(), expected, "{stderr}");
    }

    #[test]
    fn the_wrong_digest_of_a_damaged_download() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let line = format!("failed commit on ref \"config-sha256:{b}\": commit failed: unexpected commit digest sha256:{a}, expected sha256:{b}: failed precondition");
        check_damaged(&line, Some(&format!("sha256:{a}")));
        check_damaged(
            &format!("unexpected commit digest sha256:{}", &a[..10]),
            None,
        );
        check_damaged("unexpected commit digest md5:abc, expected", None);
        check_damaged("manifest unknown", None);
        check_damaged("", None);
    }

    #[test]
    fn retry_after_when_docker_shows_it() {
        check_retry_after("toomanyrequests: retry after 30 seconds", Some(30));
        check_retry_after("HTTP 429, Retry-After: 7", Some(7));
        check_retry_after("toomanyrequests: injected by the fault proxy", None);
        check_retry_after("retry after a while", None);
        check_retry_after("", None);
    }

    #[test]
    fn what_is_retried_where() {
        use FailureKind::*;
        let here: Vec<FailureKind> = FailureKind::ALL
            .into_iter()
            .filter(|&k| retry_same_registry(k))
            .collect();
        assert_eq!(here, [Unreachable, RateLimited]);
        let mirror: Vec<FailureKind> = FailureKind::ALL
            .into_iter()
            .filter(|&k| is_transient(&Fault::Docker(k)))
            .collect();
        assert_eq!(
            mirror,
            [Unreachable, RateLimited, DigestMismatch, Stalled, TimedOut]
        );
        assert!(!is_transient(&Fault::NotThePin { got: vec![] }));
    }

    #[track_caller]
    fn check_base(settings: &str, expected: &str) {
        let got = match base_image(&config(settings)) {
            BaseImage::Pinned { base, from } => format!("{base} ({from})"),
            BaseImage::Unpinned { why } => format!("unpinned: {why}"),
        };
        let got = regex_digest(&got);
        assert!(got.starts_with(expected), "{got}");
    }

    /// Lock digests change with every `cargo xtask bases refresh`.
    fn regex_digest(text: &str) -> String {
        match text.find("sha256:") {
            Some(at) => format!("{}sha256:D{}", &text[..at], &text[at + 71..]),
            None => text.to_owned(),
        }
    }

    #[test]
    fn a_local_build_s_base_is_php_base_or_the_lock_s_pin() {
        check_base(
            "PHP_VERSION=8.4",
            "docker.io/library/php:8.4-fpm-alpine@sha256:D (the shipped base lock)",
        );
        check_base(
            &format!(
                "PHP_VERSION=8.2 PHP_BASE=127.0.0.1:5000/mirror/php:8.2@sha256:{}",
                "a".repeat(64)
            ),
            "127.0.0.1:5000/mirror/php:8.2@sha256:D (PHP_BASE)",
        );
        check_base(
            &format!(
                "PHP_VERSION=8.0 PHP_BASE=mirror.test/php:8.0@sha256:{}",
                "b".repeat(64)
            ),
            "mirror.test/php:8.0@sha256:D (PHP_BASE)",
        );
        check_base("PHP_VERSION=8.0", "unpinned: PHP 8.0 is not a line of this release (its base lock pins 8.1, 8.2, 8.3, 8.4, 8.5), so the Dockerfile's default base docker.io/library/php:8.0-fpm-alpine is built by tag");
    }
}
