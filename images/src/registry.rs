//! The in-process registry door: manifests read, checked and written, and blobs read, over the distribution API,
//! with docker's own logins, one [`Policy`] of timeouts and retries, and every byte checked against its digest
//! before it is returned. Bytes that do not hash to the digest asked for (or to the registry's
//! `Docker-Content-Digest`) are read again, then reported as [`FailureKind::DigestMismatch`]; they never leave here.
//!
//! Synchronous, on `ureq`: both binaries are synchronous, and this needs a handful of calls, not a runtime. How a
//! host is reached (its CAs, HTTPS or plain HTTP, the proxy) is [`transport`]'s.

mod attempt;
pub mod auth;
mod copy;
pub mod size;
mod token;
pub mod transport;

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    failure::{self, FailureKind, Verdict},
    Digest, ImageRef, Repository, Tag,
};

pub use crate::failure::Policy;
pub use attempt::Absence;
use attempt::Failure;
pub use auth::{Challenge, Credential};
pub use token::Scopes;
pub use transport::TransportSettings;

/// The manifest types this project reads: OCI and Docker, indexes and single-platform manifests.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The distribution spec's limit for a manifest; blobs read here are configs, far smaller than their limit.
const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;
const BLOB_LIMIT: u64 = 64 * 1024 * 1024;

/// A manifest exactly as served, with its checked digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// sha256 of `bytes`, equal to the digest asked for and to the registry's `Docker-Content-Digest`.
    pub digest: Digest,
}

/// What a `HEAD` of a manifest says, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What a copy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// The digest of the copied top manifest, the same in both repositories.
    pub digest: Digest,
    /// Manifests stored in the destination, the top one included.
    pub manifests: usize,
    /// Blobs the destination already held.
    pub blobs_present: usize,
    /// Blobs mounted from the source repository (same host).
    pub blobs_mounted: usize,
    /// Mounts the registry refused (401/403, or an upload started instead): those blobs were uploaded.
    pub mounts_refused: usize,
    /// Blobs uploaded, and their bytes.
    pub blobs_sent: usize,
    pub bytes_sent: u64,
}

/// What was being done, for the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    GetManifest,
    HeadManifest,
    PutManifest,
    GetBlob,
    /// `HEAD` of a blob in the repository a copy writes to.
    CheckBlob,
    /// A blob uploaded (or mounted) by a copy.
    PutBlob,
    DeleteManifest,
    ListTags,
}

impl Operation {
    fn describe(self) -> &'static str {
        match self {
            Operation::GetManifest => "reading the manifest of",
            Operation::HeadManifest => "checking the manifest of",
            Operation::PutManifest => "pushing the manifest to",
            Operation::GetBlob => "reading the blob",
            Operation::CheckBlob => "checking for the blob",
            Operation::PutBlob => "copying the blob",
            Operation::DeleteManifest => "deleting the manifest",
            Operation::ListTags => "listing the tags of",
        }
    }
}

/// A registry operation that gave up: what, where, why, and after how many attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryError {
    pub kind: FailureKind,
    pub operation: Operation,
    /// The registry host, with its port.
    pub host: String,
    /// The image or blob reference.
    pub reference: String,
    pub attempts: u32,
    pub elapsed: Duration,
    pub cause: String,
    /// Set when the registry refused after a token exchange with docker's login: the repository does not
    /// exist, or the registry will not say to this login. [`FailureKind::Unauthorized`] apart from that: not
    /// "your login is refused".
    pub absence: Option<Absence>,
}

impl RegistryError {
    /// Whether the registry says the repository or manifest does not exist, as each registry says it:
    /// distribution's 404 `NAME_UNKNOWN`/`MANIFEST_UNKNOWN`, and a refusal after a credentialed token exchange
    /// ([`Absence`]), which may also be a repository this login may not see.
    pub fn is_absent(&self) -> bool {
        self.kind == FailureKind::NotFound || self.absence.is_some()
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed on {} after {} attempt{} in {:.1} s: {}",
            self.operation.describe(),
            self.reference,
            self.host,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64(),
            self.cause
        )?;
        let host = &self.host;
        match self.kind {
            FailureKind::Unreachable => write!(f, ": check the network and {host}'s status, then run again"),
            FailureKind::RateLimited => write!(f, ": wait a while and run again (`docker login {host}` may raise the limit)"),
            FailureKind::Unauthorized if self.absence.is_some() => {
                write!(
                    f,
                    ": {host} says the repository does not exist, or will not show it to this login: check the name, \
                     and that the account of `docker login {host}` may use it"
                )?;
                if auth::is_docker_hub(host) {
                    write!(f, " (or create the repository at https://hub.docker.com/repository/create)")?;
                }
                Ok(())
            }
            FailureKind::Unauthorized => write!(f, ": run `docker login {host}` with an account that may do this"),
            FailureKind::NotFound => write!(f, ": check the reference"),
            // The cause names the places a CA is read from for this host.
            FailureKind::Certificate => write!(f, ": put the CA that signed {host}'s certificate in one of them, then run again"),
            FailureKind::DigestMismatch => write!(
                f,
                ": something between here and {host} changed the bytes; run again, and report it if it persists"
            ),
            FailureKind::Stalled | FailureKind::TimedOut => {
                write!(f, ": {host} went silent; run again, and check its status if it persists")
            }
            FailureKind::Other => Ok(()),
        }
    }
}

impl std::error::Error for RegistryError {}

/// The client: cheap to share between threads, one per process is enough.
pub struct RegistryClient {
    policy: Policy,
    /// The agents, per host: its CAs, its scheme, its proxy.
    transport: transport::Transport,
    /// Where docker's config is read; `None` is `$DOCKER_CONFIG` or `~/.docker`.
    docker_config: Option<PathBuf>,
    /// Per host, what answered its challenges: its last challenge and the authorizations granted, each with
    /// its scopes and expiry.
    authorizations: Mutex<HashMap<String, token::Held>>,
}

impl RegistryClient {
    /// A client on docker's TLS places and this process's proxy variables ([`TransportSettings::from_env`]);
    /// settings that cannot be read fail its first request, with what to fix.
    pub fn new(policy: Policy) -> RegistryClient {
        RegistryClient::with_settings(policy, TransportSettings::from_env())
    }

    /// A client on the given transport settings (a test's `certs.d`, its proxy).
    pub fn with_settings(
        policy: Policy,
        settings: anyhow::Result<TransportSettings>,
    ) -> RegistryClient {
        RegistryClient {
            transport: transport::Transport::new(&policy, settings),
            policy,
            docker_config: None,
            authorizations: Mutex::new(HashMap::new()),
        }
    }

    /// The client both binaries use: the default policy, or the one `$STACK_REGISTRY_POLICY` sets (tests).
    pub fn from_env() -> anyhow::Result<RegistryClient> {
        Ok(RegistryClient::new(Policy::from_env()?))
    }

    /// Reads docker's logins from `dir/config.json` instead of `$DOCKER_CONFIG` or `~/.docker`.
    pub fn with_docker_config(mut self, dir: impl Into<PathBuf>) -> RegistryClient {
        self.docker_config = Some(dir.into());
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The manifest a tag or digest names, its bytes checked against the digest asked for and the registry's.
    pub fn get_manifest(&self, reference: &ImageRef) -> Result<Manifest, RegistryError> {
        self.get_manifest_at(
            Target::manifest(reference, Operation::GetManifest),
            reference,
        )
    }

    /// [`Self::get_manifest`] with a token that allows pushing there too, for a reference about to be pushed
    /// to: Docker Hub grants nothing on a repository that does not exist and answers 401, unless the token
    /// asks for push in a namespace where a first push creates it (a user's own); then it is an absence like
    /// any other. GHCR answers such a token 404 where it would answer 403 `DENIED`.
    pub fn get_manifest_to_push(&self, reference: &ImageRef) -> Result<Manifest, RegistryError> {
        let mut target = Target::manifest(reference, Operation::GetManifest);
        target.scopes = target
            .scopes
            .union(&Target::manifest(reference, Operation::PutManifest).scopes);
        self.get_manifest_at(target, reference)
    }

    fn get_manifest_at(
        &self,
        target: Target,
        reference: &ImageRef,
    ) -> Result<Manifest, RegistryError> {
        self.with_retries(&target, |deadline| {
            let mut response = self.send(&target, "GET", None, None, deadline)?;
            let media_type = content_type(&response);
            let served = served_digest(&response)?;
            let bytes = read_body(&mut response, MANIFEST_LIMIT)?;
            let digest = check_bytes(&bytes, reference.digest(), served.as_ref())?;
            Ok(Manifest {
                bytes,
                media_type,
                digest,
            })
        })
    }

    /// The digest, type and size of a manifest, from a `HEAD`; `Docker-Content-Digest` is required.
    pub fn head_manifest(&self, reference: &ImageRef) -> Result<ManifestHead, RegistryError> {
        let target = Target::manifest(reference, Operation::HeadManifest);
        self.with_retries(&target, |deadline| {
            let response = self.send(&target, "HEAD", None, None, deadline)?;
            let digest = served_digest(&response)?.ok_or_else(|| {
                Failure::fatal(
                    FailureKind::Other,
                    "the registry sent no Docker-Content-Digest",
                )
            })?;
            if let Some(asked) = reference.digest() {
                if &digest != asked {
                    return Err(Failure::transient(
                        FailureKind::DigestMismatch,
                        format!("the registry reports {digest} for {asked}"),
                    ));
                }
            }
            let size = header(&response, "content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Ok(ManifestHead {
                digest,
                media_type: content_type(&response),
                size,
            })
        })
    }

    /// Stores `bytes` as a manifest of `media_type` under the reference's tag (or its digest), and checks that
    /// the registry stored these very bytes: its `Docker-Content-Digest` must be their sha256. A mismatch means
    /// the bytes changed on the way; they are sent again, which also puts the tag back on the right content.
    pub fn put_manifest(
        &self,
        reference: &ImageRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let target = Target::manifest(reference, Operation::PutManifest);
        let digest = Digest::of(bytes);
        if let Some(named) = reference.digest() {
            if named != &digest {
                return Err(target.error(
                    Failure::fatal(
                        FailureKind::DigestMismatch,
                        format!("the bytes to push hash to {digest}, not {named}"),
                    ),
                    0,
                    Duration::ZERO,
                ));
            }
        }
        let stored = self.with_retries(&target, |deadline| {
            let response = self.send(&target, "PUT", Some(bytes), Some(media_type), deadline)?;
            let stored = served_digest(&response)?;
            match &stored {
                Some(stored) if stored != &digest => Err(Failure::transient(
                    FailureKind::DigestMismatch,
                    format!("the registry stored {stored}, not the {digest} sent"),
                )),
                _ => Ok(stored),
            }
        })?;
        if stored.is_none() {
            // No digest in the answer: read back what the reference now serves.
            let head = self.head_manifest(reference)?;
            if head.digest != digest {
                return Err(target.error(
                    Failure::fatal(
                        FailureKind::DigestMismatch,
                        format!(
                            "the registry serves {} after {digest} was pushed",
                            head.digest
                        ),
                    ),
                    1,
                    Duration::ZERO,
                ));
            }
        }
        Ok(digest)
    }

    /// A blob (a config, typically), checked against its digest.
    pub fn get_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        let target = Target::blob(repository, digest);
        self.with_retries(&target, |deadline| {
            let mut response = self.send(&target, "GET", None, None, deadline)?;
            let bytes = read_body(&mut response, BLOB_LIMIT)?;
            check_bytes(&bytes, Some(digest), None)?;
            Ok(bytes)
        })
    }

    /// Deletes the manifest `reference`'s digest names (the registry API deletes by digest only), which also
    /// removes every tag on it in that repository. A registry that does not allow deleting (405, or a
    /// distribution `UNSUPPORTED` error) answers [`Deletion::Refused`], and one that no longer holds it
    /// [`Deletion::Gone`]: neither is an error, so a caller deleting many can report them and carry on.
    pub fn delete_manifest(&self, reference: &ImageRef) -> Result<Deletion, RegistryError> {
        let mut target = Target::manifest(reference, Operation::DeleteManifest);
        let Some(digest) = reference.digest() else {
            return Err(target.error(
                Failure::fatal(
                    FailureKind::Other,
                    "a manifest is deleted by digest, and this reference names none",
                ),
                0,
                Duration::ZERO,
            ));
        };
        target.url = Target::manifest(
            &reference.repository().at(digest),
            Operation::DeleteManifest,
        )
        .url;
        self.with_retries(&target, |deadline| {
            match self.send(&target, "DELETE", None, None, deadline) {
                Ok(_) => Ok(Deletion::Deleted),
                Err(failure) if failure.status == Some(404) => Ok(Deletion::Gone),
                Err(failure)
                    if failure.status == Some(405) || failure.cause.contains("UNSUPPORTED") =>
                {
                    Ok(Deletion::Refused(failure.cause))
                }
                Err(failure) => Err(failure),
            }
        })
    }

    /// Every tag of `repository`, following the registry's `Link` pages; a repository the registry does not
    /// know is [`FailureKind::NotFound`].
    pub fn list_tags(&self, repository: &Repository) -> Result<Vec<Tag>, RegistryError> {
        let first = Target::new(
            repository,
            Operation::ListTags,
            repository.to_string(),
            format!("tags/list?n={TAGS_PAGE}"),
            "pull",
        );
        let origin = first.origin().to_owned();
        let mut target = first;
        let mut tags = Vec::new();
        // Bounded, so a registry whose `Link` loops cannot keep this going.
        for _ in 0..10_000 {
            let (page, next) = self.with_retries(&target, |deadline| {
                let mut response = self.send(&target, "GET", None, None, deadline)?;
                let next = header(&response, "link").and_then(|link| next_link(&link));
                let bytes = read_body(&mut response, MANIFEST_LIMIT)?;
                Ok((bytes, next))
            })?;
            let list: TagList = serde_json::from_slice(&page).map_err(|e| {
                target.error(
                    Failure::fatal(
                        FailureKind::Other,
                        format!("the tag list is not valid: {e}"),
                    ),
                    1,
                    Duration::ZERO,
                )
            })?;
            for tag in list.tags.unwrap_or_default() {
                let tag = tag.parse::<Tag>().map_err(|e| {
                    target.error(
                        Failure::fatal(FailureKind::Other, format!("the tag list holds {e:#}")),
                        1,
                        Duration::ZERO,
                    )
                })?;
                tags.push(tag);
            }
            match next.as_deref().map(|next| (next, on_origin(&origin, next))) {
                None => return Ok(tags),
                // A next page on another host is not followed: credentials must not leave for elsewhere.
                Some((_, Some(url))) => target.url = url,
                Some((next, None)) => {
                    return Err(target.error(
                        Failure::fatal(
                            FailureKind::Other,
                            format!("the next page of tags is on another host: {next}"),
                        ),
                        1,
                        Duration::ZERO,
                    ))
                }
            }
        }
        Err(target.error(
            Failure::fatal(FailureKind::Other, "the tag list does not end"),
            1,
            Duration::ZERO,
        ))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the policy's attempts or time run out.
    fn with_retries<T>(
        &self,
        target: &Target,
        attempt: impl FnMut(Instant) -> Result<T, Failure>,
    ) -> Result<T, RegistryError> {
        self.with_retries_within(target, self.policy.operation_timeout, attempt)
    }

    /// [`Self::with_retries`] with `budget` for the whole operation instead of the policy's (a blob's copy gets
    /// more for its size: [`Policy::blob_timeout`]).
    fn with_retries_within<T>(
        &self,
        target: &Target,
        budget: Duration,
        mut attempt: impl FnMut(Instant) -> Result<T, Failure>,
    ) -> Result<T, RegistryError> {
        let started = Instant::now();
        // A century stands for "no bound" where the budget would overflow the clock.
        let deadline = started
            .checked_add(budget)
            .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 24 * 3600));
        let (result, tried) = failure::retry(
            |_| attempt(deadline),
            |failure: &mut Failure, tried| {
                if !failure.transient || tried.failed >= self.policy.attempts {
                    return Verdict::Stop;
                }
                let wait = self.policy.wait_before_retry(
                    tried.failed,
                    failure.retry_after,
                    failure::jitter(),
                );
                if Instant::now() + wait >= deadline {
                    failure.cause = format!(
                        "{}; no time left for another attempt within {} s",
                        failure.cause,
                        budget.as_secs_f64()
                    );
                    return Verdict::Stop;
                }
                Verdict::Wait(wait)
            },
        );
        result.map_err(|failure| target.error(failure, tried.failed, started.elapsed()))
    }

    /// One request, answering the registry's challenge with docker's credentials when it asks; any status
    /// other than success is a [`Failure`]. A 401, or a 403 that says `insufficient_scope`, is answered once:
    /// the authorization sent (if any) is dropped, a new one is fetched for the operation's scopes and the
    /// challenge's together, and the request is sent again; a second refusal is the failure.
    fn send(
        &self,
        target: &Target,
        method: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
        deadline: Instant,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let held = self.held(target);
        let sent = held.as_ref().map(|g| g.authorization.as_str());
        let response = self.request(target, method, body, content_type, sent, deadline)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let refusal = Refusal::read(response);
        if !refusal.asks_to_authenticate() {
            return Err(self.refused(target, refusal, held.as_ref()));
        }
        if let Some(held) = &held {
            self.forget(target, &held.authorization);
        }
        let granted = self.renew(target, &refusal, deadline)?;
        let response = self.request(
            target,
            method,
            body,
            content_type,
            Some(&granted.authorization),
            deadline,
        )?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.refused(target, Refusal::read(response), Some(&granted)))
    }

    /// A new authorization for the target after `refusal`, from the challenge it made (or the host's last one).
    /// One thread at a time fetches for a host: the blobs of a copy are refused together, and the others take
    /// the token the first one fetched.
    fn renew(
        &self,
        target: &Target,
        refusal: &Refusal,
        deadline: Instant,
    ) -> Result<token::Granted, Failure> {
        let (gate, remembered) = {
            let mut authorizations = self.lock();
            let held = authorizations.entry(target.host.clone()).or_default();
            if let Some(challenge) = &refusal.challenge {
                held.challenge = Some(challenge.clone());
            }
            (held.fetching.clone(), held.challenge.clone())
        };
        let _turn = gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fetched) = self.held(target) {
            return Ok(fetched);
        }
        let granted = self
            .answer(
                target,
                &remembered.unwrap_or_default(),
                refusal.status,
                deadline,
            )
            .map_err(|mut failure| {
                // No authorization could be had: the registry's refusal stands, with why.
                failure.status = failure.status.or(Some(refusal.status));
                failure
            })?;
        token::keep(
            &mut self.lock().entry(target.host.clone()).or_default().granted,
            granted.clone(),
        );
        Ok(granted)
    }

    /// The failure a refusal is (see [`Refusal::failure_after`]); an authorization the registry refused is
    /// dropped.
    fn refused(&self, target: &Target, refusal: Refusal, sent: Option<&token::Granted>) -> Failure {
        if let Some(sent) = sent.filter(|_| matches!(refusal.status, 401 | 403)) {
            self.forget(target, &sent.authorization);
        }
        refusal.failure_after(&target.host, sent.map(|s| s.credentialed))
    }

    /// A valid authorization this client holds for the target's host and scopes.
    fn held(&self, target: &Target) -> Option<token::Granted> {
        let mut authorizations = self.lock();
        let held = authorizations.get_mut(&target.host)?;
        token::find(&mut held.granted, &target.scopes, SystemTime::now())
    }

    fn forget(&self, target: &Target, authorization: &str) {
        if let Some(held) = self.lock().get_mut(&target.host) {
            token::forget(&mut held.granted, authorization);
        }
    }

    /// The authorization for a request that carries its body as it is read, and so cannot be sent twice to
    /// answer a challenge: one held for its scopes, or, when the one the upload's `POST` settled has expired
    /// since (a blob read for minutes), a new one for the challenge the host made last. `None` for a host that
    /// never challenged.
    fn authorization_ahead(
        &self,
        target: &Target,
        deadline: Instant,
    ) -> Result<Option<String>, Failure> {
        if let Some(held) = self.held(target) {
            return Ok(Some(held.authorization));
        }
        let challenged = self
            .lock()
            .get(&target.host)
            .is_some_and(|h| h.challenge.is_some());
        if !challenged {
            return Ok(None);
        }
        let expired = Refusal {
            status: 401,
            ..Refusal::default()
        };
        Ok(Some(self.renew(target, &expired, deadline)?.authorization))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, token::Held>> {
        self.authorizations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn request(
        &self,
        target: &Target,
        method: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
        authorization: Option<&str>,
        deadline: Instant,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        self.call(
            &target.url,
            &target.host,
            deadline,
            |builder| {
                let mut builder = builder
                    .method(method)
                    .header("Accept", MANIFEST_TYPES.join(", "));
                if let Some(authorization) = authorization {
                    builder = builder.header("Authorization", authorization);
                }
                if let Some(content_type) = content_type {
                    builder = builder.header("Content-Type", content_type);
                }
                builder
            },
            body,
        )
    }

    /// Sends a request built by `build`, bounded by what is left of the operation's time, trusting the CAs of
    /// the registry `trust` (a token realm is reached with the trust of the registry whose challenge named it).
    fn call(
        &self,
        url: &str,
        trust: &str,
        deadline: Instant,
        build: impl FnOnce(ureq::http::request::Builder) -> ureq::http::request::Builder,
        body: Option<&[u8]>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        self.run_within(trust, deadline, || {
            build(ureq::http::Request::builder().uri(url)).body(body.unwrap_or_default().to_vec())
        })
    }

    /// Sends the request `build` makes (once there is time left for it) with the scheme found for its host and
    /// the agent that trusts `trust`'s CAs, bounded by what is left of the operation's time; whatever its
    /// status, the response.
    fn run_within<B: ureq::AsSendBody>(
        &self,
        trust: &str,
        deadline: Instant,
        build: impl FnOnce() -> Result<ureq::http::Request<B>, ureq::http::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        if deadline.saturating_duration_since(Instant::now()).is_zero() {
            return Err(Failure::fatal(FailureKind::Unreachable, "out of time"));
        }
        let mut request = build().map_err(|e| {
            Failure::fatal(FailureKind::Other, format!("building the request: {e}"))
        })?;
        let (uri, agent) = self
            .transport
            .route(request.uri(), trust, deadline)
            .map_err(|mut failure| {
                if failure.kind == FailureKind::Certificate {
                    failure.cause =
                        format!("{}; {}", failure.cause, self.transport.ca_places(trust));
                }
                failure
            })?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        *request.uri_mut() = uri;
        // The scheme's handshake may have used some of the time.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::fatal(FailureKind::Unreachable, "out of time"));
        }
        let response = ureq::RequestExt::with_agent(request, &agent)
            .configure()
            .timeout_global(Some(left))
            .build()
            .run();
        response.map_err(|error| {
            let mut failure = transport_failure(error);
            if failure.kind == FailureKind::Certificate {
                failure.cause = format!(
                    "{host}'s TLS certificate is not trusted ({}); {}",
                    failure.cause,
                    self.transport.ca_places(trust)
                );
            }
            failure
        })
    }

    /// The `Authorization` that answers a challenge: docker's credentials as Basic, or a bearer token fetched
    /// from the realm with them (anonymously when docker holds none).
    fn answer(
        &self,
        target: &Target,
        challenge: &str,
        status: u16,
        deadline: Instant,
    ) -> Result<token::Granted, Failure> {
        let credential = auth::credential_for(self.docker_config.as_deref(), &target.host)
            .map_err(|e| Failure::fatal(FailureKind::Unauthorized, format!("{e:#}")))?;
        match auth::parse_challenge(challenge) {
            Some(Challenge::Basic) => credential
                .as_ref()
                .and_then(Credential::basic_header)
                .map(|authorization| token::Granted {
                    authorization,
                    scopes: None,
                    expires: None,
                    credentialed: true,
                })
                .ok_or_else(|| {
                    Failure::fatal(
                        FailureKind::Unauthorized,
                        "the registry wants a login and docker holds none for it",
                    )
                }),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes = Scopes::default();
                scopes.add(scope.as_deref().unwrap_or_default());
                let scopes = target.scopes.union(&scopes);
                self.token(
                    target,
                    &realm,
                    service.as_deref(),
                    scopes,
                    credential.as_ref(),
                    deadline,
                )
            }
            None => Err(Failure::fatal(
                FailureKind::Unauthorized,
                format!("the registry answered {status} with an unknown challenge `{challenge}`"),
            )),
        }
    }

    /// A token for `scopes` from the token service at `realm`: one `scope` parameter (or form field) per scope.
    fn token(
        &self,
        target: &Target,
        realm: &str,
        service: Option<&str>,
        scopes: Scopes,
        credential: Option<&Credential>,
        deadline: Instant,
    ) -> Result<token::Granted, Failure> {
        let query = token::token_query(&scopes, service);
        let encode = |pairs: &[(&str, String)]| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", form_encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        };
        let response = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                // docker's OAuth flow: a refresh token is traded by a form POST.
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "20i-stack".to_owned()),
                ];
                form.extend(query);
                let body = encode(&form);
                self.call(
                    realm,
                    &target.host,
                    deadline,
                    |b| {
                        b.method("POST")
                            .header("Content-Type", "application/x-www-form-urlencoded")
                    },
                    Some(body.as_bytes()),
                )?
            }
            other => {
                let separator = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{separator}{}", encode(&query));
                let basic = other.and_then(Credential::basic_header);
                self.call(
                    &url,
                    &target.host,
                    deadline,
                    |b| {
                        let b = b.method("GET");
                        match &basic {
                            Some(basic) => b.header("Authorization", basic),
                            None => b,
                        }
                    },
                    None,
                )?
            }
        };
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let mut failure = status_failure(status, response, &target.host);
            let oauth = matches!(credential, Some(Credential::IdentityToken(_)));
            if oauth && matches!(status, 404 | 405) {
                // GHCR's token service takes no OAuth POST, and a refresh token is good for nothing else.
                failure.kind = FailureKind::Unauthorized;
                failure.cause = format!(
                    "the token service {realm} takes no refresh token ({status} to docker's OAuth POST): docker's \
                     login for {} is an identity token; log in with a user name and a password or access token",
                    target.host
                );
            } else if matches!(status, 401 | 403) {
                failure.cause = match credential {
                    Some(_) => format!("the token service {realm} refused the login ({status})"),
                    None => format!(
                        "the token service {realm} refused an anonymous token ({status}): docker holds no login for {}",
                        target.host
                    ),
                };
            }
            return Err(failure);
        }
        let mut response = response;
        let bytes = read_body(&mut response, 1024 * 1024)?;
        // Never echoed: the answer is the token.
        let answer: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            Failure::fatal(
                FailureKind::Other,
                format!("the token service {realm} answered something other than JSON"),
            )
        })?;
        let token = answer["token"]
            .as_str()
            .or_else(|| answer["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::fatal(
                    FailureKind::Other,
                    format!("the token service {realm} answered no token"),
                )
            })?;
        Ok(token::Granted {
            authorization: format!("Bearer {token}"),
            expires: Some(token::expiry(
                answer["expires_in"].as_i64(),
                answer["issued_at"].as_str(),
                SystemTime::now(),
            )),
            scopes: Some(scopes),
            credentialed: credential.is_some(),
        })
    }
}

/// Tags asked for per page; registries may send fewer and a `Link` to the rest.
const TAGS_PAGE: u32 = 1000;

/// What deleting a manifest did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// The registry holds no such manifest (any more).
    Gone,
    /// The registry does not allow deleting: what it answered.
    Refused(String),
}

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

/// The target of `rel="next"` in a `Link` header: `</v2/name/tags/list?last=x&n=100>; rel="next"`.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

/// `url` (a path, or absolute) when it is on `origin`, as a URL on `origin`: its host and port, whatever its
/// scheme (the transport uses the scheme found for the host, so a registry's `http://` link never downgrades).
fn on_origin(origin: &str, url: &str) -> Option<String> {
    if url.starts_with('/') {
        return Some(format!("{origin}{url}"));
    }
    let authority = |u: &str| -> Option<String> {
        let rest = u
            .strip_prefix("https://")
            .or_else(|| u.strip_prefix("http://"))?;
        Some(
            rest.split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        )
    };
    let (Some(own), Some(theirs)) = (authority(origin), authority(url)) else {
        return None;
    };
    if own != theirs {
        return None;
    }
    let after_scheme = url.find("://")? + 3;
    let path = &url[after_scheme + theirs.len()..];
    path.starts_with('/').then(|| format!("{origin}{path}"))
}

/// Where a request goes, and how it is named in errors.
struct Target {
    operation: Operation,
    host: String,
    reference: String,
    /// Always `https://` here: the transport puts the scheme found for the host in its place.
    url: String,
    /// The token scopes the operation needs.
    scopes: Scopes,
}

impl Target {
    fn manifest(reference: &ImageRef, operation: Operation) -> Target {
        let repository = reference.repository();
        let action = match operation {
            Operation::PutManifest => "pull,push",
            // distribution's token scope for a DELETE is `delete`; GHCR and Docker Hub accept it with push.
            Operation::DeleteManifest => "pull,push,delete",
            _ => "pull",
        };
        Target::new(
            repository,
            operation,
            reference.to_string(),
            format!("manifests/{}", reference.api_reference()),
            action,
        )
    }

    fn blob(repository: &Repository, digest: &Digest) -> Target {
        Target::new(
            repository,
            Operation::GetBlob,
            format!("{repository}@{digest}"),
            format!("blobs/{digest}"),
            "pull",
        )
    }

    fn new(
        repository: &Repository,
        operation: Operation,
        reference: String,
        below: String,
        action: &str,
    ) -> Target {
        let host = repository.namespace().host().to_owned();
        // Docker Hub answers the API on another host than its name, and keeps official images under `library/`.
        let (api_host, path) = match host.as_str() {
            "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
                let path = repository.path();
                let path = if path.contains('/') {
                    path
                } else {
                    format!("library/{path}")
                };
                ("registry-1.docker.io", path)
            }
            _ => (host.as_str(), repository.path()),
        };
        Target {
            operation,
            url: format!("https://{api_host}/v2/{path}/{below}"),
            scopes: Scopes::repository(&path, action),
            host,
            reference,
        }
    }

    /// `scheme://host[:port]` of the URL.
    fn origin(&self) -> &str {
        let after_scheme = self.url.find("://").map_or(0, |i| i + 3);
        let end = self.url[after_scheme..]
            .find('/')
            .map_or(self.url.len(), |i| after_scheme + i);
        &self.url[..end]
    }

    fn error(&self, failure: Failure, attempts: u32, elapsed: Duration) -> RegistryError {
        RegistryError {
            kind: failure.kind,
            operation: self.operation,
            host: self.host.clone(),
            reference: self.reference.clone(),
            attempts,
            elapsed,
            cause: failure.cause,
            absence: failure.absence,
        }
    }
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The media type without parameters.
fn content_type(response: &ureq::http::Response<ureq::Body>) -> String {
    header(response, "content-type")
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}

/// `Docker-Content-Digest`, when the registry sent a sha256 one (the only algorithm this project uses).
fn served_digest(response: &ureq::http::Response<ureq::Body>) -> Result<Option<Digest>, Failure> {
    match header(response, "docker-content-digest") {
        None => Ok(None),
        Some(value) if !value.starts_with("sha256:") => Ok(None),
        Some(value) => Digest::parse(value.trim()).map(Some).map_err(|e| {
            Failure::transient(
                FailureKind::DigestMismatch,
                format!("Docker-Content-Digest: {e}"),
            )
        }),
    }
}

/// The body, in full; a connection that ends early or stalls is worth another attempt.
fn read_body(
    response: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<Vec<u8>, Failure> {
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Failure::fatal(
                FailureKind::Other,
                format!("the answer is larger than {limit} bytes"),
            ),
            e => {
                let mut failure = transport_failure(e);
                failure.cause = format!("reading the body: {}", failure.cause);
                failure
            }
        })
}

/// The digest of `bytes`, when it is the one asked for and the one the registry announced.
fn check_bytes(
    bytes: &[u8],
    asked: Option<&Digest>,
    served: Option<&Digest>,
) -> Result<Digest, Failure> {
    let digest = Digest::of(bytes);
    for (expected, what) in [(asked, "asked for"), (served, "the registry announced")] {
        if let Some(expected) = expected {
            if expected != &digest {
                return Err(Failure::transient(
                    FailureKind::DigestMismatch,
                    format!("the bytes served hash to {digest}, not the {expected} {what}"),
                ));
            }
        }
    }
    Ok(digest)
}

/// The response when its status is a success, else the [`Failure`] that status is.
fn successful(
    response: ureq::http::Response<ureq::Body>,
    host: &str,
) -> Result<ureq::http::Response<ureq::Body>, Failure> {
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(response);
    }
    Err(status_failure(status, response, host))
}

/// A failure from a status: 429 and 5xx are worth another attempt, after `Retry-After` when given.
fn status_failure(_status: u16, response: ureq::http::Response<ureq::Body>, host: &str) -> Failure {
    Refusal::read(response).failure(host)
}

/// What a registry said when it did not answer with success: the status and the headers and body parts that
/// decide what happens next, read once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Refusal {
    status: u16,
    /// `WWW-Authenticate`.
    challenge: Option<String>,
    retry_after: Option<Duration>,
    /// Docker Hub's `ratelimit-remaining` and `ratelimit-limit`, as sent.
    ratelimit_remaining: Option<String>,
    ratelimit_limit: Option<String>,
    /// The first distribution error code of the body (`NAME_UNKNOWN`, `DENIED`, ...), and its message.
    code: String,
    message: String,
}

impl Refusal {
    fn read(mut response: ureq::http::Response<ureq::Body>) -> Refusal {
        let short = |v: String| v.trim().chars().take(100).collect::<String>();
        let mut refusal = Refusal {
            status: response.status().as_u16(),
            challenge: header(&response, "www-authenticate"),
            retry_after: header(&response, "retry-after")
                .and_then(|v| failure::parse_retry_after(&v, SystemTime::now())),
            ratelimit_remaining: header(&response, "ratelimit-remaining").map(short),
            ratelimit_limit: header(&response, "ratelimit-limit").map(short),
            ..Refusal::default()
        };
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .unwrap_or_default();
        if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            let error = &body["errors"][0];
            refusal.code = error["code"].as_str().unwrap_or_default().to_owned();
            refusal.message = error["message"].as_str().unwrap_or_default().to_owned();
        }
        refusal
    }

    /// A 401, or a 403 whose challenge or body says the token lacks a scope: a new token may be granted.
    fn asks_to_authenticate(&self) -> bool {
        let says = |text: &str| text.to_ascii_lowercase().contains("insufficient_scope");
        self.status == 401
            || (self.status == 403
                && (self.challenge.as_deref().is_some_and(says)
                    || says(&self.code)
                    || says(&self.message)))
    }

    /// `: CODE message` from a distribution error body, shortened; empty when there is none.
    fn said(&self) -> String {
        let text = format!("{} {}", self.code, self.message);
        let text: String = text.trim().chars().take(200).collect();
        if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    }

    /// The failure this refusal is, when nothing was learnt of who sent it.
    fn failure(&self, host: &str) -> Failure {
        let status = self.status;
        let mut cause = format!("{host} answered {status}{}", self.said());
        if status == 429 {
            let limits: Vec<String> = [
                ("ratelimit-remaining", &self.ratelimit_remaining),
                ("ratelimit-limit", &self.ratelimit_limit),
            ]
            .into_iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v}")))
            .collect();
            if !limits.is_empty() {
                cause = format!("{cause} ({})", limits.join(", "));
            }
        }
        let mut failure = match status {
            401 | 403 => Failure::fatal(FailureKind::Unauthorized, cause),
            404 => Failure::fatal(FailureKind::NotFound, cause),
            429 => Failure::transient(FailureKind::RateLimited, cause),
            408 | 500..=599 => Failure::transient(FailureKind::Unreachable, cause),
            // The registry hashed what arrived (a manifest or blob pushed by digest) and found other bytes than
            // the ones sent: they changed on the way, and sending them again is the fix.
            400 if self.code == "DIGEST_INVALID" => {
                Failure::transient(FailureKind::DigestMismatch, cause)
            }
            _ => Failure::fatal(FailureKind::Other, cause),
        };
        failure.retry_after = self.retry_after;
        failure.status = Some(status);
        failure
    }

    /// The failure this refusal is, given the authorization sent with the request (`None`: none;
    /// `Some(credentialed)`: a token or login, from docker's login or anonymous). A refusal after a credentialed
    /// exchange is what GHCR (403 `DENIED`) and Docker Hub (401, challenging again) answer for a repository
    /// that does not exist: absent, or hidden from this login, and not a refused login (the token service
    /// accepted it).
    fn failure_after(&self, host: &str, sent: Option<bool>) -> Failure {
        let mut failure = self.failure(host);
        match (self.status, sent) {
            (401 | 403, Some(false)) => {
                failure.cause = format!(
                    "{}; the token was anonymous: docker holds no login for {host}",
                    failure.cause
                );
            }
            (401, Some(true)) => failure.absence = Some(Absence::Challenged),
            (403, Some(true))
                if matches!(
                    self.code.as_str(),
                    "DENIED" | "NAME_UNKNOWN" | "UNAUTHORIZED"
                ) =>
            {
                failure.absence = Some(Absence::Denied)
            }
            _ => {}
        }
        failure
    }
}

/// A failure below HTTP: connection refused or reset, a timeout, a cut body. TLS and address problems will not
/// mend by themselves; a certificate that is not trusted is [`FailureKind::Certificate`].
fn transport_failure(error: ureq::Error) -> Failure {
    use ureq::Error::*;
    if transport::is_certificate_error(&error) {
        return Failure::fatal(FailureKind::Certificate, error.to_string());
    }
    match &error {
        Timeout(what) => {
            Failure::transient(FailureKind::Unreachable, format!("timed out ({what})"))
        }
        ConnectionFailed | HostNotFound | Io(_) | Protocol(_) | BodyStalled => {
            Failure::transient(FailureKind::Unreachable, error.to_string())
        }
        _ => Failure::fatal(FailureKind::Other, error.to_string()),
    }
}

/// `application/x-www-form-urlencoded` for a query or form value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_bytes_case(bytes: &[u8], asked: Option<&[u8]>, served: Option<&[u8]>, ok: bool) {
        let asked = asked.map(Digest::of);
        let served = served.map(Digest::of);
        let result = check_bytes(bytes, asked.as_ref(), served.as_ref());
        assert_eq!(result.is_ok(), ok, "{result:?}");
        if let Err(failure) = result {
            assert_eq!(failure.kind, FailureKind::DigestMismatch);
            assert!(failure.transient);
        }
    }

    #[test]
    fn bytes_are_checked_against_both_digests() {
        check_bytes_case(b"m", None, None, true);
        check_bytes_case(b"m", Some(b"m"), None, true);
        check_bytes_case(b"m", None, Some(b"m"), true);
        check_bytes_case(b"m", Some(b"m"), Some(b"m"), true);
        check_bytes_case(b"m", Some(b"n"), None, false);
        check_bytes_case(b"m", None, Some(b"n"), false);
        check_bytes_case(b"m", Some(b"m"), Some(b"n"), false);
    }

    #[track_caller]
    fn check_encode(value: &str, expected: &str) {
        assert_eq!(form_encode(value), expected);
    }

    #[test]
    fn form_values_are_encoded() {
        check_encode(
            "repository:20i-stack/php-fpm:pull,push",
            "repository%3A20i-stack%2Fphp-fpm%3Apull%2Cpush",
        );
        check_encode("ghcr.io", "ghcr.io");
        check_encode("a b&c=d", "a%20b%26c%3Dd");
    }

    #[track_caller]
    fn check_target(reference: &str, operation: Operation, url: &str, scope: &str) {
        let reference: ImageRef = reference.parse().unwrap();
        let target = Target::manifest(&reference, operation);
        assert_eq!(
            (
                target.url.as_str(),
                target.scopes.to_strings().join(" ").as_str()
            ),
            (url, scope),
            "{reference}"
        );
    }

    #[test]
    fn urls_and_scopes() {
        use Operation::*;
        check_target(
            "ghcr.io/20i-stack/php-fpm:v1.0.0",
            GetManifest,
            "https://ghcr.io/v2/20i-stack/php-fpm/manifests/v1.0.0",
            "repository:20i-stack/php-fpm:pull",
        );
        check_target(
            "docker.io/20istack/php-fpm:latest",
            PutManifest,
            "https://registry-1.docker.io/v2/20istack/php-fpm/manifests/latest",
            "repository:20istack/php-fpm:pull,push",
        );
        check_target(
            &format!("docker.io/php:8.4-fpm@{}", Digest::of(b"x")),
            HeadManifest,
            &format!(
                "https://registry-1.docker.io/v2/library/php/manifests/{}",
                Digest::of(b"x")
            ),
            "repository:library/php:pull",
        );
        check_target(
            "127.0.0.1:5000/test/php-fpm:1",
            GetManifest,
            "https://127.0.0.1:5000/v2/test/php-fpm/manifests/1",
            "repository:test/php-fpm:pull",
        );
        check_target(
            "localhost:5000/php-fpm:1",
            GetManifest,
            "https://localhost:5000/v2/php-fpm/manifests/1",
            "repository:php-fpm:pull",
        );
    }

    fn refusal(status: u16, code: &str, challenge: Option<&str>) -> Refusal {
        Refusal {
            status,
            code: code.to_owned(),
            challenge: challenge.map(str::to_owned),
            ..Refusal::default()
        }
    }

    /// What a refusal means: `sent` is the authorization that went with the request (`None`: nothing;
    /// `Some(true)`: a token from docker's login; `Some(false)`: an anonymous one). `expected` is the kind,
    /// `absent` and the [`Absence`] when the error says so, and `again` when a new token is to be asked for.
    #[track_caller]
    fn check_refusal(status: u16, code: &str, challenge: &str, sent: Option<bool>, expected: &str) {
        let refusal = refusal(status, code, Some(challenge).filter(|c| !c.is_empty()));
        let error = Target::manifest(&"r.example/o/a:1".parse().unwrap(), Operation::GetManifest)
            .error(refusal.failure_after("r.example", sent), 1, Duration::ZERO);
        let mut actual = format!("{:?}", error.kind);
        if error.is_absent() {
            actual.push_str(" absent");
        }
        if let Some(absence) = error.absence {
            actual.push_str(&format!(" {absence:?}"));
        }
        if refusal.asks_to_authenticate() {
            actual.push_str(" again");
        }
        assert_eq!(actual, expected, "{refusal:?} after {sent:?}: {error}");
    }

    #[test]
    fn absent_repositories_as_each_registry_says_it() {
        let bearer = r#"Bearer realm="https://r.example/token",scope="repository:o/a:pull""#;
        let scope = r#"Bearer realm="https://r.example/token",error="insufficient_scope""#;
        let (login, anonymous) = (Some(true), Some(false));
        // distribution: 404 with its code.
        check_refusal(404, "NAME_UNKNOWN", "", login, "NotFound absent");
        check_refusal(404, "MANIFEST_UNKNOWN", "", None, "NotFound absent");
        // GHCR: 403 DENIED to a token from docker's login.
        check_refusal(403, "DENIED", "", login, "Unauthorized absent Denied");
        // Docker Hub: 401 and a challenge again, whatever the token.
        check_refusal(
            401,
            "",
            bearer,
            login,
            "Unauthorized absent Challenged again",
        );
        // Without docker's login a refusal proves nothing: it says `docker login`.
        check_refusal(401, "", bearer, anonymous, "Unauthorized again");
        check_refusal(403, "DENIED", "", anonymous, "Unauthorized");
        check_refusal(401, "", bearer, None, "Unauthorized again");
        // A 403 for a missing scope asks for a new token; only a second one is a refusal.
        check_refusal(403, "", scope, None, "Unauthorized again");
        check_refusal(403, "INSUFFICIENT_SCOPE", "", None, "Unauthorized again");
        check_refusal(403, "TOOMANYREQUESTS", "", login, "Unauthorized");
        check_refusal(429, "TOOMANYREQUESTS", "", login, "RateLimited");
    }

    #[test]
    fn an_absent_or_hidden_repository_says_what_to_check_and_where_to_create_it() {
        let error = |host: &str| {
            Target::manifest(
                &format!("{host}/o/a:1").parse().unwrap(),
                Operation::GetManifest,
            )
            .error(
                refusal(401, "UNAUTHORIZED", None).failure_after(host, Some(true)),
                2,
                Duration::ZERO,
            )
            .to_string()
        };
        let hub = error("docker.io");
        assert!(
            hub.contains("docker.io says the repository does not exist, or will not show it"),
            "{hub}"
        );
        assert!(
            hub.ends_with("(or create the repository at https://hub.docker.com/repository/create)"),
            "{hub}"
        );
        let ghcr = error("ghcr.io");
        assert!(!ghcr.contains("hub.docker.com"), "{ghcr}");
    }

    #[test]
    fn a_rate_limit_says_what_remains() {
        let mut limited = refusal(429, "TOOMANYREQUESTS", None);
        limited.ratelimit_remaining = Some("0;w=21600".into());
        limited.ratelimit_limit = Some("100;w=21600".into());
        assert_eq!(
            limited.failure("registry-1.docker.io").cause,
            "registry-1.docker.io answered 429: TOOMANYREQUESTS (ratelimit-remaining 0;w=21600, ratelimit-limit \
             100;w=21600)"
        );
        assert_eq!(
            refusal(429, "", None).failure("ghcr.io").cause,
            "ghcr.io answered 429"
        );
    }

    #[track_caller]
    fn check_link(link: &str, expected: Option<&str>) {
        assert_eq!(next_link(link).as_deref(), expected, "{link}");
    }

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        check_link(
            "</v2/a/tags/list?last=b&n=2>; rel=\"next\"",
            Some("/v2/a/tags/list?last=b&n=2"),
        );
        check_link(
            "<https://ghcr.io/v2/a/tags/list?last=b>; rel=next",
            Some("https://ghcr.io/v2/a/tags/list?last=b"),
        );
        check_link(
            "</v2/a/tags/list?first>; rel=\"prev\", </v2/a/tags/list?last=z>; rel=\"next\"",
            Some("/v2/a/tags/list?last=z"),
        );
        check_link("</v2/a/tags/list?last=b>; rel=\"prev\"", None);
        check_link("/v2/a/tags/list; rel=\"next\"", None);
        check_link("", None);
    }

    #[test]
    fn one_client_serves_every_thread() {
        fn shared<T: Send + Sync>() {}
        shared::<RegistryClient>();
    }

    #[test]
    fn errors_name_the_host_the_reference_the_cause_and_the_attempts() {
        let error = RegistryError {
            kind: FailureKind::RateLimited,
            operation: Operation::GetManifest,
            host: "ghcr.io".into(),
            reference: "ghcr.io/20i-stack/php-fpm:latest".into(),
            attempts: 5,
            elapsed: Duration::from_millis(12_340),
            cause: "ghcr.io answered 429: TOOMANYREQUESTS slow down".into(),
            absence: None,
        };
        assert_eq!(
            error.to_string(),
            "reading the manifest of ghcr.io/20i-stack/php-fpm:latest failed on ghcr.io after 5 attempts in 12.3 s: \
             ghcr.io answered 429: TOOMANYREQUESTS slow down: wait a while and run again (`docker login ghcr.io` \
             may raise the limit)"
        );
    }
}
