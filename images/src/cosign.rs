//! The one door to cosign, as [`crate::docker`] is to docker: every `cosign` invocation is a [`CosignCommand`]
//! built here from typed parts (an image is always named by digest; nothing the caller gives lands where cosign
//! reads a flag, since every positional comes after `--`) and run by [`Cosign`] under a time bound, with bounded
//! retries of what is transient. Secrets never reach an argument list or an output: a key's password goes to the
//! child alone as `COSIGN_PASSWORD`, a key is a file path or `env://COSIGN_KEY`. Failures come back classified
//! ([`Failure`]), so a caller tells an unsigned image from a registry that is down without reading stderr.
//!
//! cosign reaches a registry as the registry client does: `--registry-cacert` names docker's CA for the host
//! when `/etc/docker/certs.d/HOST[:PORT]/` holds one (added by [`Cosign`] when it runs the command, since it is
//! a fact of the machine, not of the release), `SSL_CERT_FILE` passes through the environment, and
//! `--allow-http-registry` is given only for a loopback registry, where cosign tries HTTPS first and verifies
//! it. `--allow-insecure-registry`, which skips the certificate check, is never given.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
    time::Duration,
};

use anyhow::{bail, Context};

use crate::{
    failure::{retry_saying, FailureKind, Policy},
    process::{self, Bounds, End},
    Digest, ImageRef, Namespace, Repository, Tag,
};

/// The issuer of the tokens GitHub Actions gives a job with `id-token: write`: what keyless signatures of the
/// release workflow are checked against.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// The variable a private key may be read from (`env://COSIGN_KEY`), never written to a file by this project.
pub const KEY_VARIABLE: &str = "COSIGN_KEY";

/// The variable cosign reads a private key's password from, set in the child's environment only.
pub const PASSWORD_VARIABLE: &str = "COSIGN_PASSWORD";

/// Where a private key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    File(PathBuf),
    /// `env://COSIGN_KEY`: the key's PEM in the environment, as a CI secret gives it.
    Env,
}

impl KeyRef {
    fn argument(&self) -> String {
        match self {
            KeyRef::File(path) => format!("--key={}", path.display()),
            KeyRef::Env => format!("--key=env://{KEY_VARIABLE}"),
        }
    }
}

impl FromStr for KeyRef {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<KeyRef> {
        if let Some(variable) = text.strip_prefix("env://") {
            if variable != KEY_VARIABLE {
                bail!("a key from the environment is read from env://{KEY_VARIABLE}, not env://{variable}: set {KEY_VARIABLE}");
            }
            return Ok(KeyRef::Env);
        }
        if text.chars().any(char::is_control) || text.contains("PRIVATE KEY") {
            // Most likely a key's PEM given where its path belongs: never echoed, it is a secret.
            bail!("the key given is not a path (it has line breaks or a PEM header; it is not shown): give the path of a cosign private key file, or the key itself in ${KEY_VARIABLE} with env://{KEY_VARIABLE}");
        }
        if text.is_empty() || text.contains("://") {
            bail!("`{}` is not a key: give the path of a cosign private key file or env://{KEY_VARIABLE}", text.escape_debug());
        }
        Ok(KeyRef::File(PathBuf::from(text)))
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::File(path) => write!(f, "{}", path.display()),
            KeyRef::Env => write!(f, "env://{KEY_VARIABLE}"),
        }
    }
}

/// How an image is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// With a private key; nothing goes to a transparency log (none is reachable from every machine that signs).
    Key(KeyRef),
    /// With a short-lived certificate for the ambient OIDC identity (GitHub Actions' `id-token: write`), logged in
    /// Rekor.
    Keyless,
}

/// What a signature must verify against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verifier {
    /// A public key file; signatures made with a key have no transparency log entry to check.
    Key(PathBuf),
    /// A keyless signature's certificate: who signed (the workflow's identity) and who vouched for it.
    Identity { identity: String, issuer: String },
}

impl Verifier {
    /// The keyless identity of a GitHub workflow run on `git_ref` (`refs/tags/v2.0.0`) of `repository`
    /// (`owner/name`), as Fulcio writes it into the certificate.
    pub fn github_workflow(repository: &str, workflow: &str, git_ref: &str) -> Verifier {
        Verifier::Identity {
            identity: format!(
                "https://github.com/{repository}/.github/workflows/{workflow}@{git_ref}"
            ),
            issuer: GITHUB_ISSUER.to_owned(),
        }
    }

    fn arguments(&self) -> Vec<String> {
        match self {
            Verifier::Key(path) => vec![
                format!("--key={}", path.display()),
                "--insecure-ignore-tlog=true".to_owned(),
            ],
            Verifier::Identity { identity, issuer } => vec![
                format!("--certificate-identity={identity}"),
                format!("--certificate-oidc-issuer={issuer}"),
            ],
        }
    }
}

/// The image a command names: known by digest, or (in a dry run, before the build) a placeholder that prints
/// but never runs.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    Image(&'a ImageRef),
    Pending {
        repository: &'a Repository,
        digest: &'a str,
    },
}

impl Subject<'_> {
    fn namespace(&self) -> &Namespace {
        match self {
            Subject::Image(image) => image.namespace(),
            Subject::Pending { repository, .. } => repository.namespace(),
        }
    }

    /// `repository@digest`; an image named by tag only is refused: a tag can move between two steps.
    fn argument(&self) -> anyhow::Result<(String, bool)> {
        match self {
            Subject::Image(image) => {
                let digest = image.digest().with_context(|| {
                    format!("{image} names no digest: cosign is only ever given an image by digest")
                })?;
                Ok((format!("{}@{digest}", image.repository()), true))
            }
            Subject::Pending { repository, digest } => {
                Ok((format!("{repository}@{digest}"), false))
            }
        }
    }
}

/// The tag cosign stores an image's signatures under when the registry has no referrers API: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> Tag {
    let (algorithm, hex) = digest
        .as_str()
        .split_once(':')
        .expect("a digest is algorithm:hex");
    format!("{algorithm}-{hex}.sig")
        .parse()
        .expect("sha256-<64 hex>.sig is a valid tag")
}

/// One `cosign` invocation as data: printed by `--dry-run`, run by [`Cosign`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignCommand {
    args: Vec<String>,
    /// False for a dry run's command naming an image not built yet.
    runnable: bool,
    /// The registry hosts the command reaches, for the CA [`Cosign`] gives it.
    hosts: Vec<String>,
}

/// Plain HTTP allowed only where every registry named is on this machine (the tests' and `make demo`'s
/// registries), as docker allows it; cosign still tries HTTPS first there, and verifies the certificate.
fn registry_flags(namespaces: &[&Namespace]) -> Vec<String> {
    if namespaces.iter().all(|n| n.is_loopback()) {
        vec!["--allow-http-registry".to_owned()]
    } else {
        Vec::new()
    }
}

/// The CA docker reads for `host` in `certs_d`: its `ca.crt`, else its first `*.crt`.
pub fn docker_ca(certs_d: &Path, host: &str) -> Option<PathBuf> {
    let files = crate::registry::transport::certs_d_files(certs_d, host).ok()?;
    files
        .iter()
        .find(|f| f.file_name().is_some_and(|n| n == "ca.crt"))
        .or(files.first())
        .cloned()
}

impl CosignCommand {
    /// `cosign sign`: signs the image's digest and pushes the signature next to it.
    pub fn sign(signer: &Signer, image: Subject) -> anyhow::Result<CosignCommand> {
        let (target, runnable) = image.argument()?;
        let mut args = vec!["sign".to_owned(), "--yes".to_owned()];
        if let Signer::Key(key) = signer {
            args.extend([key.argument(), "--tlog-upload=false".to_owned()]);
        }
        Ok(CosignCommand::reaching(
            args,
            &[image.namespace()],
            [target],
            runnable,
        ))
    }

    /// `cosign verify`: at least one signature of the image's digest verifies; the payloads on standard output.
    pub fn verify(verifier: &Verifier, image: Subject) -> anyhow::Result<CosignCommand> {
        let (target, runnable) = image.argument()?;
        let mut args = vec!["verify".to_owned()];
        args.extend(verifier.arguments());
        Ok(CosignCommand::reaching(
            args,
            &[image.namespace()],
            [target],
            runnable,
        ))
    }

    /// `cosign copy --only=sig --force`: the image's signatures to the same image in `to`, replacing what is there
    /// (a signature of the same digest, as a resumed release makes). cosign 2.5 copies the image itself too, under
    /// a `sha256-<digest>` tag per manifest: the release copies the `.sig` tag in process instead
    /// ([`signature_tag`], `RegistryClient::copy`).
    pub fn copy_signatures(image: Subject, to: &Repository) -> anyhow::Result<CosignCommand> {
        let (source, runnable) = image.argument()?;
        let args = vec![
            "copy".to_owned(),
            "--only=sig".to_owned(),
            "--force".to_owned(),
        ];
        Ok(CosignCommand::reaching(
            args,
            &[image.namespace(), to.namespace()],
            [source, to.to_string()],
            runnable,
        ))
    }

    /// A command that reaches the registries of `namespaces`: `args`, the flags those registries need, then
    /// `positionals` after `--`, where cosign reads no flag.
    fn reaching<const N: usize>(
        mut args: Vec<String>,
        namespaces: &[&Namespace],
        positionals: [String; N],
        runnable: bool,
    ) -> CosignCommand {
        args.extend(registry_flags(namespaces));
        args.push("--".to_owned());
        args.extend(positionals);
        CosignCommand {
            args,
            runnable,
            hosts: namespaces.iter().map(|n| n.host().to_owned()).collect(),
        }
    }

    /// `cosign sign-blob`: signs a file (a launcher archive). With a key, the signature goes to `output`
    /// (`<archive>.sig`) and nothing to a transparency log; keyless, a Sigstore bundle (certificate, signature,
    /// Rekor entry) goes to `output` (`<archive>.sigstore.json`), which `verify-blob --bundle` reads offline
    /// but for the trusted root.
    pub fn sign_blob(signer: &Signer, blob: &Path, output: &Path) -> anyhow::Result<CosignCommand> {
        let mut args = vec!["sign-blob".to_owned(), "--yes".to_owned()];
        match signer {
            Signer::Key(key) => args.extend([
                key.argument(),
                "--tlog-upload=false".to_owned(),
                format!("--output-signature={}", utf8(output)?),
            ]),
            Signer::Keyless => args.extend([
                "--new-bundle-format=true".to_owned(),
                format!("--bundle={}", utf8(output)?),
            ]),
        }
        args.extend(["--".to_owned(), utf8(blob)?.to_owned()]);
        Ok(CosignCommand {
            args,
            runnable: true,
            hosts: Vec::new(),
        })
    }

    /// `cosign verify-blob`: the file's signature (`.sig` with a key, the bundle keyless) verifies.
    pub fn verify_blob(
        verifier: &Verifier,
        blob: &Path,
        signature: &Path,
    ) -> anyhow::Result<CosignCommand> {
        let mut args = vec!["verify-blob".to_owned()];
        args.extend(verifier.arguments());
        args.push(match verifier {
            Verifier::Key(_) => format!("--signature={}", utf8(signature)?),
            Verifier::Identity { .. } => format!("--bundle={}", utf8(signature)?),
        });
        args.extend(["--".to_owned(), utf8(blob)?.to_owned()]);
        Ok(CosignCommand {
            args,
            runnable: true,
            hosts: Vec::new(),
        })
    }

    /// `cosign public-key`: the public half of a private key, PEM on standard output (needs its password).
    pub fn public_key(key: &KeyRef) -> CosignCommand {
        CosignCommand {
            args: vec!["public-key".to_owned(), key.argument()],
            runnable: true,
            hosts: Vec::new(),
        }
    }

    /// `cosign generate-key-pair`: `<prefix>.key` (encrypted with the password) and `<prefix>.pub`.
    pub fn generate_key_pair(prefix: &Path) -> anyhow::Result<CosignCommand> {
        let prefix = prefix.to_str().with_context(|| {
            format!(
                "{} is not UTF-8: choose another directory",
                prefix.display()
            )
        })?;
        Ok(CosignCommand {
            args: vec![
                "generate-key-pair".to_owned(),
                format!("--output-key-prefix={prefix}"),
            ],
            runnable: true,
            hosts: Vec::new(),
        })
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// This command with `--registry-cacert` naming docker's CA for its registry, when `certs_d` has one. cosign
    /// takes one CA file: with two hosts that each have one (a copy between two private registries), the
    /// source's is given and the destination must be trusted by the system store or `SSL_CERT_FILE`.
    pub fn with_docker_ca(&self, certs_d: &Path) -> CosignCommand {
        let Some(ca) = self.hosts.iter().find_map(|host| docker_ca(certs_d, host)) else {
            return self.clone();
        };
        let mut command = self.clone();
        let at = command
            .args
            .iter()
            .position(|a| a == "--")
            .unwrap_or(command.args.len());
        command
            .args
            .insert(at, format!("--registry-cacert={}", ca.display()));
        command
    }
}

/// A path cosign is given as an argument: UTF-8, so what is printed is what runs.
fn utf8(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8: choose another directory", path.display()))
}

/// Shell-quoted, so a printed command can be pasted into a terminal.
impl fmt::Display for CosignCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        process::write_shell_quoted(f, "cosign", &self.args)
    }
}

/// Why a cosign command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The image has no signature at all.
    NoSignature,
    /// Signatures are there and none verifies with the key or identity given.
    NotVerified,
    /// The private key could not be read: a missing file, a wrong password, no password.
    Key,
    /// Not installed, or could not be started.
    NotStarted,
    /// Ran past its bound and was stopped.
    TimedOut,
    /// The registry's answer, classified as for docker.
    Registry(FailureKind),
}

impl Failure {
    fn classify(stderr: &str) -> Failure {
        let text = stderr.to_ascii_lowercase();
        if text.contains("no signatures found") {
            Failure::NoSignature
        } else if text.contains("no matching signatures")
            || text.contains("invalid signature")
            || text.contains("none of the expected identities matched")
        {
            Failure::NotVerified
        } else if [
            "reading key",
            "getting signer",
            "decryption failed",
            "inappropriate ioctl for device",
        ]
        .iter()
        .any(|sign| text.contains(sign))
        {
            Failure::Key
        } else {
            Failure::Registry(FailureKind::classify(stderr))
        }
    }

    /// As the launcher and the release decide on it: a signature that does not verify is like bytes that do
    /// not match their digest.
    pub fn kind(self) -> FailureKind {
        match self {
            Failure::NoSignature | Failure::NotVerified => FailureKind::DigestMismatch,
            Failure::Key => FailureKind::Unauthorized,
            Failure::NotStarted => FailureKind::Other,
            Failure::TimedOut => FailureKind::TimedOut,
            Failure::Registry(kind) => kind,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Failure::NoSignature => "no signature",
            Failure::NotVerified => "signature not verified",
            Failure::Key => "key unreadable",
            Failure::NotStarted => "not started",
            Failure::TimedOut => "timed out",
            Failure::Registry(kind) => kind.describe(),
        }
    }

    fn transient(self) -> bool {
        matches!(
            self,
            Failure::TimedOut
                | Failure::Registry(FailureKind::Unreachable | FailureKind::RateLimited)
        )
    }
}

/// A failed cosign command: what ran, why it failed, and the tail of what it said (secrets removed).
#[derive(Debug)]
pub struct CosignError {
    pub command: String,
    pub failure: Failure,
    pub stderr: String,
}

impl fmt::Display for CosignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = process::stderr_tail(&self.stderr, 4);
        write!(
            f,
            "`{}` failed ({}):\n  {tail}",
            self.command,
            self.failure.describe()
        )?;
        match self.failure {
            Failure::NotStarted => write!(f, "\n  install cosign (`make setup` does)"),
            Failure::Registry(FailureKind::Certificate) => write!(
                f,
                "\n  put the CA that signed the registry's certificate in /etc/docker/certs.d/HOST[:PORT]/ca.crt \
                 (given to cosign as --registry-cacert) or in the system store (or the bundle SSL_CERT_FILE names)"
            ),
            Failure::Key => write!(
                f,
                "\n  check the key's path and set {PASSWORD_VARIABLE} to its password (never on the command line)"
            ),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for CosignError {}

/// Runs cosign commands; the only place that does.
#[derive(Clone)]
pub struct Cosign {
    binary: PathBuf,
    /// The private key's password, for the child's environment only; never printed (no `Debug`).
    password: Option<String>,
    docker_config: Option<PathBuf>,
    /// docker's `certs.d`, where a registry's CA is looked for.
    certs_d: PathBuf,
    /// The longest one attempt may run.
    pub timeout: Duration,
    pub policy: Policy,
}

impl fmt::Debug for Cosign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cosign")
            .field("binary", &self.binary)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Cosign {
    /// Uses `cosign` from PATH, or `$COSIGN` when set (tests point it at a specific binary).
    pub fn new() -> Cosign {
        Cosign {
            binary: std::env::var_os("COSIGN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("cosign")),
            password: None,
            docker_config: None,
            certs_d: PathBuf::from(crate::registry::transport::DOCKER_CERTS_D),
            timeout: Duration::from_secs(180),
            policy: Policy::default(),
        }
    }

    /// The password of the private key, given to each child as `COSIGN_PASSWORD`. Without it the child inherits
    /// the variable from this process, if set.
    pub fn with_password(mut self, password: &str) -> Cosign {
        self.password = Some(password.to_owned());
        self
    }

    /// Retries by `policy` (`STACK_REGISTRY_POLICY`, as the registry client's), each attempt bounded by its
    /// operation timeout.
    pub fn with_policy(mut self, policy: Policy) -> Cosign {
        self.timeout = policy.operation_timeout;
        self.policy = policy;
        self
    }

    /// Registry logins from `dir` (`DOCKER_CONFIG`), as the docker door uses them.
    pub fn with_docker_config(mut self, dir: &Path) -> Cosign {
        self.docker_config = Some(dir.to_path_buf());
        self
    }

    /// Looks for registries' CAs in `dir` instead of `/etc/docker/certs.d` (tests).
    pub fn with_certs_d(mut self, dir: &Path) -> Cosign {
        self.certs_d = dir.to_path_buf();
        self
    }

    /// Runs a command, retrying what is transient with the registry policy's waits; its standard output.
    pub fn output(&self, command: &CosignCommand) -> Result<Vec<u8>, CosignError> {
        if !command.runnable {
            return Err(CosignError {
                command: command.to_string(),
                failure: Failure::NotStarted,
                stderr: "a dry run's placeholder digest cannot be run".to_owned(),
            });
        }
        retry_saying(
            &self.policy,
            || self.attempt(command),
            |error| {
                error
                    .failure
                    .transient()
                    .then(|| format!("{} ({})", error.command, error.failure.describe()))
            },
        )
    }

    /// Runs a command for its effect.
    pub fn run(&self, command: &CosignCommand) -> Result<(), CosignError> {
        self.output(command).map(drop)
    }

    fn attempt(&self, command: &CosignCommand) -> Result<Vec<u8>, CosignError> {
        let command = &command.with_docker_ca(&self.certs_d);
        let error = |failure, stderr: String| CosignError {
            command: command.to_string(),
            failure,
            stderr: self.redact(stderr),
        };
        let mut process = Command::new(&self.binary);
        process.args(&command.args);
        if let Some(password) = &self.password {
            process.env(PASSWORD_VARIABLE, password);
        }
        if let Some(dir) = &self.docker_config {
            process.env("DOCKER_CONFIG", dir);
        }
        // No stall bound: cosign says nothing until it is done.
        let bounds = Bounds {
            stall: self.timeout,
            total: self.timeout,
        };
        let finished =
            process::supervise(&mut process, None, Some(bounds), &mut |_| {}).map_err(|e| {
                error(
                    Failure::NotStarted,
                    format!("starting {}: {e}", self.binary.display()),
                )
            })?;
        let stderr = finished.stderr_text();
        match finished.end {
            End::Exited(status) if status.success() => Ok(finished.stdout),
            End::Exited(_) => Err(error(Failure::classify(&stderr), stderr)),
            End::Stalled(_) | End::TimedOut(_) => Err(error(
                Failure::TimedOut,
                format!("{stderr}\nstopped after {} s", self.timeout.as_secs()),
            )),
        }
    }

    /// Cosign never prints the password; this makes sure an error of ours never does either.
    fn redact(&self, text: String) -> String {
        match &self.password {
            Some(password) if !password.is_empty() => text.replace(password.as_str(), "<redacted>"),
            _ => text,
        }
    }
}

impl Default for Cosign {
    fn default() -> Cosign {
        Cosign::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(text: &str) -> ImageRef {
        text.parse().unwrap()
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[track_caller]
    fn check(command: anyhow::Result<CosignCommand>, expected: &str) {
        match command {
            Ok(command) => assert_eq!(command.to_string(), expected),
            Err(error) => assert_eq!(format!("error: {error:#}"), expected),
        }
    }

    #[test]
    fn commands() {
        let local = image(&format!("127.0.0.1:5000/st/php-fpm:v1-php-8.4@{DIGEST}"));
        let remote = image(&format!("ghcr.io/20i-stack/php-fpm@{DIGEST}"));
        let key = Signer::Key("/keys/cosign.key".parse().unwrap());
        let public = Verifier::Key("/keys/cosign.pub".into());
        let identity = Verifier::github_workflow("20i/stack", "release.yml", "refs/tags/v2.0.0");
        check(
            CosignCommand::sign(&key, Subject::Image(&remote)),
            &format!("cosign sign --yes --key=/keys/cosign.key --tlog-upload=false -- ghcr.io/20i-stack/php-fpm@{DIGEST}"),
        );
        check(
            CosignCommand::sign(&Signer::Keyless, Subject::Image(&remote)),
            &format!("cosign sign --yes -- ghcr.io/20i-stack/php-fpm@{DIGEST}"),
        );
        check(
            CosignCommand::sign(&Signer::Key(KeyRef::Env), Subject::Image(&local)),
            &format!("cosign sign --yes --key=env://COSIGN_KEY --tlog-upload=false --allow-http-registry -- 127.0.0.1:5000/st/php-fpm@{DIGEST}"),
        );
        check(
            CosignCommand::sign(&key, Subject::Image(&image("ghcr.io/20i-stack/php-fpm:v1"))),
            "error: ghcr.io/20i-stack/php-fpm:v1 names no digest: cosign is only ever given an image by digest",
        );
        check(
            CosignCommand::verify(&public, Subject::Image(&remote)),
            &format!("cosign verify --key=/keys/cosign.pub --insecure-ignore-tlog=true -- ghcr.io/20i-stack/php-fpm@{DIGEST}"),
        );
        check(
            CosignCommand::verify(&identity, Subject::Image(&remote)),
            &format!("cosign verify --certificate-identity=https://github.com/20i/stack/.github/workflows/release.yml@refs/tags/v2.0.0 --certificate-oidc-issuer=https://token.actions.githubusercontent.com -- ghcr.io/20i-stack/php-fpm@{DIGEST}"),
        );
        let mirror: Repository = "127.0.0.1:5001/st/php-fpm".parse().unwrap();
        check(
            CosignCommand::copy_signatures(Subject::Image(&local), &mirror),
            &format!("cosign copy --only=sig --force --allow-http-registry -- 127.0.0.1:5000/st/php-fpm@{DIGEST} 127.0.0.1:5001/st/php-fpm"),
        );
        let docker_hub: Repository = "docker.io/20i/php-fpm".parse().unwrap();
        check(
            CosignCommand::copy_signatures(Subject::Image(&local), &docker_hub),
            &format!("cosign copy --only=sig --force -- 127.0.0.1:5000/st/php-fpm@{DIGEST} docker.io/20i/php-fpm"),
        );
        check(
            CosignCommand::sign(
                &key,
                Subject::Pending {
                    repository: remote.repository(),
                    digest: "{digest of PHP 8.4}",
                },
            ),
            "cosign sign --yes --key=/keys/cosign.key --tlog-upload=false -- 'ghcr.io/20i-stack/php-fpm@{digest of PHP 8.4}'",
        );
        let (blob, sig) = (
            Path::new("dist/20i.tar.gz"),
            Path::new("dist/20i.tar.gz.sig"),
        );
        check(
            CosignCommand::sign_blob(&key, blob, sig),
            "cosign sign-blob --yes --key=/keys/cosign.key --tlog-upload=false --output-signature=dist/20i.tar.gz.sig -- dist/20i.tar.gz",
        );
        let bundle = Path::new("dist/20i.tar.gz.sigstore.json");
        check(
            CosignCommand::sign_blob(&Signer::Keyless, blob, bundle),
            "cosign sign-blob --yes --new-bundle-format=true --bundle=dist/20i.tar.gz.sigstore.json -- dist/20i.tar.gz",
        );
        check(
            CosignCommand::verify_blob(&public, blob, sig),
            "cosign verify-blob --key=/keys/cosign.pub --insecure-ignore-tlog=true --signature=dist/20i.tar.gz.sig -- dist/20i.tar.gz",
        );
        check(
            CosignCommand::verify_blob(&identity, Path::new("-odd.tar.gz"), bundle),
            "cosign verify-blob --certificate-identity=https://github.com/20i/stack/.github/workflows/release.yml@refs/tags/v2.0.0 --certificate-oidc-issuer=https://token.actions.githubusercontent.com --bundle=dist/20i.tar.gz.sigstore.json -- -odd.tar.gz",
        );
        check(
            Ok(CosignCommand::public_key(&"-odd.key".parse().unwrap())),
            "cosign public-key --key=-odd.key",
        );
    }

    #[test]
    fn docker_s_ca_for_the_registry_is_given_to_cosign() {
        let certs_d = tempfile::tempdir().unwrap();
        let private = certs_d.path().join("registry.example:5000");
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(private.join("ca.crt"), "CA").unwrap();
        let other = certs_d.path().join("other.example");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("b.crt"), "CA").unwrap();
        std::fs::write(other.join("a.crt"), "CA").unwrap();
        let key = Signer::Key("/k.key".parse().unwrap());
        let root = certs_d.path().display();
        let signed = |reference: &str| {
            CosignCommand::sign(
                &key,
                Subject::Image(&image(&format!("{reference}@{DIGEST}"))),
            )
            .unwrap()
            .with_docker_ca(certs_d.path())
            .to_string()
        };
        assert_eq!(
            signed("registry.example:5000/a/b"),
            format!("cosign sign --yes --key=/k.key --tlog-upload=false --registry-cacert={root}/registry.example:5000/ca.crt -- registry.example:5000/a/b@{DIGEST}")
        );
        assert_eq!(
            signed("other.example/a/b"),
            format!("cosign sign --yes --key=/k.key --tlog-upload=false --registry-cacert={root}/other.example/a.crt -- other.example/a/b@{DIGEST}")
        );
        // The port is part of docker's directory name.
        assert_eq!(
            signed("registry.example/a/b"),
            format!("cosign sign --yes --key=/k.key --tlog-upload=false -- registry.example/a/b@{DIGEST}")
        );
        assert_eq!(
            signed("ghcr.io/a/b"),
            format!("cosign sign --yes --key=/k.key --tlog-upload=false -- ghcr.io/a/b@{DIGEST}")
        );
        let to: Repository = "registry.example:5000/c/d".parse().unwrap();
        assert_eq!(
            CosignCommand::copy_signatures(Subject::Image(&image(&format!("ghcr.io/a/b@{DIGEST}"))), &to)
                .unwrap()
                .with_docker_ca(certs_d.path())
                .to_string(),
            format!("cosign copy --only=sig --force --registry-cacert={root}/registry.example:5000/ca.crt -- ghcr.io/a/b@{DIGEST} registry.example:5000/c/d")
        );
    }

    #[track_caller]
    fn check_key(text: &str, expected: &str) {
        match text.parse::<KeyRef>() {
            Ok(key) => assert_eq!(format!("{key:?}"), expected),
            Err(error) => assert_eq!(format!("error: {error}"), expected),
        }
    }

    #[test]
    fn keys() {
        check_key("cosign.key", r#"File("cosign.key")"#);
        check_key("env://COSIGN_KEY", "Env");
        check_key(
            "env://OTHER",
            "error: a key from the environment is read from env://COSIGN_KEY, not env://OTHER: set COSIGN_KEY",
        );
        check_key(
            "awskms://x",
            "error: `awskms://x` is not a key: give the path of a cosign private key file or env://COSIGN_KEY",
        );
        check_key(
            "",
            "error: `` is not a key: give the path of a cosign private key file or env://COSIGN_KEY",
        );
        // A key's PEM where its path belongs is refused without a byte of it in the message.
        let pem = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nc2VjcmV0\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----";
        let refused = "error: the key given is not a path (it has line breaks or a PEM header; it is not shown): give the path of a cosign private key file, or the key itself in $COSIGN_KEY with env://COSIGN_KEY";
        check_key(pem, refused);
        check_key(
            "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY----- c2VjcmV0",
            refused,
        );
    }

    #[track_caller]
    fn check_failure(stderr: &str, expected: Failure) {
        assert_eq!(Failure::classify(stderr), expected, "{stderr}");
    }

    #[test]
    fn failures() {
        check_failure(
            "Error: no signatures found\nerror during command execution: no signatures found",
            Failure::NoSignature,
        );
        check_failure(
            "error during command execution: no matching signatures: invalid signature when validating ASN.1 encoded signature",
            Failure::NotVerified,
        );
        check_failure(
            "Error: signing [x]: getting signer: reading key: decrypt: encrypted: decryption failed",
            Failure::Key,
        );
        check_failure(
            "Error: signing [x]: getting signer: reading key: open nokey: no such file or directory",
            Failure::Key,
        );
        check_failure(
            "Error: decrypt: encrypted: decryption failed\nerror during command execution: decrypt: encrypted: decryption failed",
            Failure::Key,
        );
        check_failure(
            "error during command execution: Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
            Failure::Registry(FailureKind::Unreachable),
        );
        check_failure(
            "Error: GET http://127.0.0.1:5/v2/st/php-fpm/manifests/sha256-x.sig: MANIFEST_UNKNOWN: manifest unknown",
            Failure::Registry(FailureKind::NotFound),
        );
        assert_eq!(Failure::NotVerified.kind(), FailureKind::DigestMismatch);
    }

    #[test]
    fn signature_tags() {
        assert_eq!(
            signature_tag(&Digest::parse(DIGEST).unwrap()).as_str(),
            "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
        );
    }

    #[test]
    fn the_password_never_shows() {
        let cosign = Cosign::new().with_password("hunter22");
        assert!(!format!("{cosign:?}").contains("hunter22"));
        assert_eq!(
            cosign.redact("bad password hunter22".to_owned()),
            "bad password <redacted>"
        );
    }
}
