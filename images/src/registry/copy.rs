//! Copies an image from one repository to another, registry to registry, in process: an index with every child
//! manifest (platform images and attestation manifests alike), their config and layer blobs, then the manifests
//! bottom-up by digest and the tag last, so the copy has the source's digest and a tag never names something
//! incomplete. A blob the destination holds already is skipped (`HEAD`), one on the same host is mounted from the
//! source repository (a mount the registry refuses, or answers by starting an upload, is uploaded), and any other is streamed from a `GET` into a monolithic upload (`POST`, then `PUT` with the
//! digest), hashed on the way: bytes that do not hash to their digest end the upload before it completes, and are
//! sent again or reported as [`FailureKind::DigestMismatch`]. Blobs move a few at a time, each under the client's
//! [`super::Policy`].

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    io::{self, Read},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::Copied;
use super::{
    form_encode, header, served_digest, Failure, Manifest, Operation, RegistryClient,
    RegistryError, Target,
};
use crate::{digest::Hasher, failure::FailureKind, Digest, ImageRef, Repository};

/// Blobs of one copy in flight at once: enough to overlap round trips, few enough for one registry.
const BLOBS_AT_ONCE: usize = 4;

/// How deep an index may nest: an index of indexes is legal, a loop of them is not possible by digest, but a
/// registry that answers nonsense must not keep this going.
const MAX_DEPTH: usize = 4;

/// What the blobs of one copy needed, counted.
struct BlobCounts {
    present: usize,
    mounted: usize,
    mounts_refused: usize,
    sent: usize,
    bytes: u64,
}

/// What one blob needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlobCopy {
    Present,
    Mounted,
    /// Uploaded, its bytes, and whether a mount was refused first.
    Sent(u64, bool),
}

/// The parts of a manifest or an index a copy follows.
#[derive(Deserialize)]
struct Document {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    size: u64,
    platform: Option<Platform>,
}

impl Document {
    /// The manifest `reference` names, from its bytes.
    fn parse(reference: &ImageRef, bytes: &[u8]) -> Result<Document, RegistryError> {
        serde_json::from_slice(bytes)
            .map_err(|e| not_valid(reference, format!("the manifest is not valid: {e}")))
    }
}

impl Descriptor {
    /// The digest the descriptor names, in the manifest `reference` names.
    fn digest(&self, reference: &ImageRef) -> Result<Digest, RegistryError> {
        Digest::parse(&self.digest)
            .map_err(|e| not_valid(reference, format!("a descriptor names {e:#}")))
    }
}

/// A manifest that `reference` served, hashing to its digest, and still not one a copy can follow: not retried.
fn not_valid(reference: &ImageRef, cause: String) -> RegistryError {
    Target::manifest(reference, Operation::GetManifest).error(
        Failure::fatal(FailureKind::Other, cause),
        1,
        Duration::ZERO,
    )
}

/// Where an index's entry runs.
#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// Whether the entry is for `wanted` (`os/arch`, any variant, or `os/arch/variant`).
    fn is(&self, wanted: &str) -> bool {
        let mut parts = wanted.split('/');
        parts.next() == Some(self.os.as_str())
            && parts.next() == Some(self.architecture.as_str())
            && parts
                .next()
                .is_none_or(|variant| self.variant.as_deref() == Some(variant))
    }
}

/// Everything to copy: blobs with their sizes, and manifests in the order they may be stored (children first).
#[derive(Debug, Default)]
struct Gathered {
    blobs: BTreeMap<Digest, u64>,
    manifests: Vec<Manifest>,
}

impl RegistryClient {
    /// Copies the image `source` names (by digest or tag) to `to`: stored under `to`'s tag, or by digest when
    /// `to` names one (it must then be the source's). Nothing is rebuilt or re-encoded: the destination serves
    /// the very bytes, under the same digests.
    pub fn copy(&self, source: &ImageRef, to: &ImageRef) -> Result<Copied, RegistryError> {
        let top = self.get_manifest(source)?;
        if let Some(named) = to.digest() {
            if named != &top.digest {
                return Err(Target::manifest(to, Operation::PutManifest).error(
                    Failure::fatal(
                        FailureKind::DigestMismatch,
                        format!("{source} is {}, not the {named} asked for", top.digest),
                    ),
                    0,
                    Duration::ZERO,
                ));
            }
        }
        let mut gathered = Gathered::default();
        self.gather(source, top, 0, &mut gathered)?;

        let counts = self.copy_blobs(source.repository(), to.repository(), &gathered.blobs)?;

        let (top, children) = gathered
            .manifests
            .split_last()
            .expect("the top manifest is gathered last");
        let mut stored = BTreeSet::new();
        for child in children {
            if stored.insert(&child.digest) {
                self.put_manifest(
                    &to.repository().at(&child.digest),
                    &child.bytes,
                    &child.media_type,
                )?;
            }
        }
        let digest = self.put_manifest(to, &top.bytes, &top.media_type)?;
        Ok(Copied {
            digest,
            manifests: stored.len() + 1,
            blobs_present: counts.present,
            blobs_mounted: counts.mounted,
            mounts_refused: counts.mounts_refused,
            blobs_sent: counts.sent,
            bytes_sent: counts.bytes,
        })
    }

    /// Copies the config and layer blobs of `source`'s images for `platforms` (`os/arch`, any variant) into
    /// `to`, and nothing else: no manifest, no tag (the returned [`Copied`] stores none). A release seeds its
    /// repositories with the base image's blobs while the build runs, so that the build's push and the mirror
    /// copy find them there instead of sending them after the build. Should the release stop before pushing, the
    /// registry's garbage collection removes blobs that no manifest names.
    ///
    /// `seeded`, a repository on `to`'s host seeded with the same blobs before, is where they are mounted from
    /// (no bytes move) or, should the registry not mount, read from.
    pub fn seed(
        &self,
        source: &ImageRef,
        platforms: &[String],
        to: &Repository,
        seeded: Option<&Repository>,
    ) -> Result<Copied, RegistryError> {
        let top = self.get_manifest(source)?;
        let invalid = |cause: String| not_valid(source, cause);
        let document = Document::parse(source, &top.bytes)?;
        let mut images = Vec::new();
        match &document.manifests {
            Some(children) => {
                for child in children.iter().filter(|child| {
                    child
                        .platform
                        .as_ref()
                        .is_some_and(|p| platforms.iter().any(|wanted| p.is(wanted)))
                }) {
                    let at = source.repository().at(&child.digest(source)?);
                    images.push(Document::parse(&at, &self.get_manifest(&at)?.bytes)?);
                }
                if images.is_empty() {
                    return Err(invalid(format!(
                        "the index lists none of {}",
                        platforms.join(", ")
                    )));
                }
            }
            None => images.push(document),
        }
        let mut blobs = BTreeMap::new();
        for blob in images
            .iter()
            .flat_map(|image| image.config.iter().chain(image.layers.iter().flatten()))
        {
            blobs.insert(blob.digest(source)?, blob.size);
        }
        let from = seeded
            .filter(|seeded| seeded.namespace().host() == to.namespace().host())
            .unwrap_or(source.repository());
        let counts = self.copy_blobs(from, to, &blobs)?;
        Ok(Copied {
            digest: top.digest,
            manifests: 0,
            blobs_present: counts.present,
            blobs_mounted: counts.mounted,
            mounts_refused: counts.mounts_refused,
            blobs_sent: counts.sent,
            bytes_sent: counts.bytes,
        })
    }

    /// Reads every child of `manifest` (depth first), and notes its blobs; `manifest` itself is pushed last.
    fn gather(
        &self,
        reference: &ImageRef,
        mut manifest: Manifest,
        depth: usize,
        gathered: &mut Gathered,
    ) -> Result<(), RegistryError> {
        if depth > MAX_DEPTH {
            return Err(not_valid(
                reference,
                format!("indexes nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        let document = Document::parse(reference, &manifest.bytes)?;
        if manifest.media_type.is_empty() {
            // The registry sent no type: the document's own field says what it is.
            manifest.media_type = document.media_type.clone().unwrap_or_default();
        }
        for child in document.manifests.iter().flatten() {
            let at = reference.repository().at(&child.digest(reference)?);
            let mut bytes = self.get_manifest(&at)?;
            if bytes.media_type.is_empty() {
                bytes.media_type = child.media_type.clone().unwrap_or_default();
            }
            self.gather(&at, bytes, depth + 1, gathered)?;
        }
        for blob in document
            .config
            .iter()
            .chain(document.layers.iter().flatten())
        {
            gathered.blobs.insert(blob.digest(reference)?, blob.size);
        }
        gathered.manifests.push(manifest);
        Ok(())
    }

    /// Every blob, [`BLOBS_AT_ONCE`] at a time; the first failure stops the others from starting.
    fn copy_blobs(
        &self,
        from: &Repository,
        to: &Repository,
        blobs: &BTreeMap<Digest, u64>,
    ) -> Result<BlobCounts, RegistryError> {
        let queue: Mutex<VecDeque<(&Digest, u64)>> =
            Mutex::new(blobs.iter().map(|(d, s)| (d, *s)).collect());
        let (present, mounted, mounts_refused, sent, bytes) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicU64::new(0),
        );
        let failure: Mutex<Option<RegistryError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..blobs.len().min(BLOBS_AT_ONCE) {
                scope.spawn(|| loop {
                    if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        return;
                    }
                    let Some((digest, size)) =
                        queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        return;
                    };
                    match self.copy_blob(from, to, digest, size) {
                        Ok(BlobCopy::Present) => _ = present.fetch_add(1, Ordering::Relaxed),
                        Ok(BlobCopy::Mounted) => _ = mounted.fetch_add(1, Ordering::Relaxed),
                        Ok(BlobCopy::Sent(n, refused)) => {
                            if refused {
                                mounts_refused.fetch_add(1, Ordering::Relaxed);
                            }
                            sent.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(error) => {
                            failure
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(error);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(error) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(error);
        }
        Ok(BlobCounts {
            present: present.into_inner(),
            mounted: mounted.into_inner(),
            mounts_refused: mounts_refused.into_inner(),
            sent: sent.into_inner(),
            bytes: bytes.into_inner(),
        })
    }

    /// One blob: skipped when the destination holds it, mounted on the same host, else streamed across.
    fn copy_blob(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobCopy, RegistryError> {
        let check = blob_target(to, digest, Operation::CheckBlob);
        let present = self.with_retries(&check, |deadline| {
            match self.send(&check, "HEAD", None, None, deadline) {
                Ok(_) => Ok(true),
                Err(failure) if failure.status == Some(404) => Ok(false),
                Err(failure) => Err(failure),
            }
        })?;
        if present {
            return Ok(BlobCopy::Present);
        }
        let same_host = from.namespace().host() == to.namespace().host() && from != to;
        let upload = blob_target(to, digest, Operation::PutBlob);
        let source = Target::blob(from, digest);
        let plain = upload.below("blobs/uploads/");
        let mut mount = same_host.then(|| {
            let mut mount = upload.below(&format!(
                "blobs/uploads/?mount={}&from={}",
                form_encode(digest.as_str()),
                form_encode(&from.path())
            ));
            // The token must allow reading the source too: the challenge names only the destination.
            mount.scopes = mount.scopes.union(&source.scopes);
            mount
        });
        let mut mount_refused = false;
        // The deadline grows with the blob's size; a stalled transfer is still ended by the per-read timeout.
        self.with_retries_within(&upload, self.policy.blob_timeout(size), |deadline| {
            let started = match &mount {
                Some(target) => match self.send(target, "POST", None, None, deadline) {
                    Ok(started) if started.status() == 201 => return Ok(BlobCopy::Mounted),
                    // The registry started an upload instead of mounting: it is used as it is.
                    Ok(started) => {
                        mount_refused = true;
                        started
                    }
                    // A refused mount is no failure of the copy: the bytes are uploaded instead, and every
                    // retry of this blob uploads.
                    Err(failure) if matches!(failure.status, Some(401 | 403)) => {
                        mount_refused = true;
                        mount = None;
                        self.send(&plain, "POST", None, None, deadline)?
                    }
                    Err(failure) => return Err(failure),
                },
                None => self.send(&plain, "POST", None, None, deadline)?,
            };
            let location = header(&started, "location").ok_or_else(|| {
                Failure::fatal(
                    FailureKind::Other,
                    "the registry opened an upload without a Location",
                )
            })?;
            let url = upload_url(upload.origin(), &location, digest).ok_or_else(|| {
                Failure::fatal(
                    FailureKind::Other,
                    format!("the registry sent the upload to another host: {location}"),
                )
            })?;
            let mut served = self.send(&source, "GET", None, None, deadline)?;
            let mut body = Checked::new(served.body_mut().as_reader(), digest, size);
            let result = self.stream(&upload, &url, &mut body, size, deadline);
            if let Some(stalled) = body.stalled.take() {
                return Err(Failure::transient(FailureKind::Unreachable, stalled));
            }
            if let Some(mismatch) = body.mismatch.take() {
                return Err(Failure::transient(FailureKind::DigestMismatch, mismatch));
            }
            let response = result?;
            if let Some(stored) = served_digest(&response)? {
                if &stored != digest {
                    return Err(Failure::transient(
                        FailureKind::DigestMismatch,
                        format!("the registry stored {stored}, not the {digest} sent"),
                    ));
                }
            }
            Ok(BlobCopy::Sent(size, mount_refused))
        })
    }

    /// The `PUT` that ends a monolithic upload, its body read from `body` as it is sent. The authorization is
    /// settled before it starts (a streamed body cannot be sent twice to answer a challenge).
    fn stream(
        &self,
        target: &Target,
        url: &str,
        body: &mut dyn Read,
        size: u64,
        deadline: Instant,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let authorization = self.authorization_ahead(target, deadline)?;
        let response = self.run_within(&target.host, deadline, || {
            let mut builder = ureq::http::Request::builder()
                .uri(url)
                .method("PUT")
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", size.to_string());
            if let Some(authorization) = &authorization {
                builder = builder.header("Authorization", authorization);
            }
            builder.body(ureq::SendBody::from_reader(body))
        })?;
        super::successful(response, &target.host).map_err(|mut failure| {
            // The token was refused on the way (revoked, or the registry's clock ahead of ours): the blob is
            // read and sent again, after a new token.
            if failure.status == Some(401) {
                if let Some(sent) = &authorization {
                    self.forget(target, sent);
                    failure.transient = true;
                }
            }
            failure
        })
    }
}

/// A blob request on the destination; with the push scope, so that one token serves the whole copy.
fn blob_target(repository: &Repository, digest: &Digest, operation: Operation) -> Target {
    Target::new(
        repository,
        operation,
        format!("{repository}@{digest}"),
        format!("blobs/{digest}"),
        "pull,push",
    )
}

impl Target {
    /// The same repository, operation and scope, at another path below `/v2/<name>/`.
    fn below(&self, path: &str) -> Target {
        let base = self
            .url
            .rsplit_once("/blobs/")
            .map_or(self.url.as_str(), |(base, _)| base);
        Target {
            operation: self.operation,
            host: self.host.clone(),
            reference: self.reference.clone(),
            url: format!("{base}/{path}"),
            scopes: self.scopes.clone(),
        }
    }
}

/// Where to `PUT` the blob: the upload's `Location` (relative, or absolute on the same origin: credentials never
/// leave for another host) with the digest added to its query.
fn upload_url(origin: &str, location: &str, digest: &Digest) -> Option<String> {
    let url = super::on_origin(origin, location)?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!(
        "{url}{separator}digest={}",
        form_encode(digest.as_str())
    ))
}

/// A blob's bytes on their way, hashed and counted: at the end they must be `size` bytes hashing to `digest`,
/// or the read fails, which ends the upload before the registry completes it.
struct Checked<'a, R> {
    inner: R,
    hasher: Option<Hasher>,
    read: u64,
    digest: &'a Digest,
    size: u64,
    /// Why the bytes were refused, for the caller (the upload itself only sees an I/O error).
    mismatch: Option<String>,
    /// The source went silent past the per-read timeout: a stall, not changed bytes.
    stalled: Option<String>,
}

impl<'a, R: Read> Checked<'a, R> {
    fn new(inner: R, digest: &'a Digest, size: u64) -> Checked<'a, R> {
        Checked {
            inner,
            hasher: Some(Hasher::default()),
            read: 0,
            digest,
            size,
            mismatch: None,
            stalled: None,
        }
    }

    fn refuse(&mut self, why: String) -> io::Error {
        self.mismatch = Some(why.clone());
        io::Error::new(io::ErrorKind::InvalidData, why)
    }
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(error) if is_timeout(&error) => {
                let why = format!(
                    "the source of the blob {} went silent after {} of {} bytes: {error}",
                    self.digest, self.read, self.size
                );
                self.stalled = Some(why.clone());
                return Err(io::Error::new(io::ErrorKind::TimedOut, why));
            }
            Err(error) => {
                let why = format!(
                    "the blob {} was cut after {} of {} bytes: {error}",
                    self.digest, self.read, self.size
                );
                return Err(self.refuse(why));
            }
        };
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        if n > 0 {
            hasher.update(&buf[..n]);
            self.read += n as u64;
            if self.read > self.size {
                let why = format!(
                    "the blob {} is longer than its {} bytes",
                    self.digest, self.size
                );
                return Err(self.refuse(why));
            }
            return Ok(n);
        }
        let served = self.hasher.take().expect("checked above").finish();
        if self.read != self.size {
            let why = format!(
                "the blob {} ended after {} of its {} bytes",
                self.digest, self.read, self.size
            );
            return Err(self.refuse(why));
        }
        if &served != self.digest {
            let why = format!(
                "the bytes served hash to {served}, not the {} asked for",
                self.digest
            );
            return Err(self.refuse(why));
        }
        Ok(0)
    }
}

/// A read that ended at a timeout (ureq's per-read or global one), as opposed to a connection cut.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) || error
        .get_ref()
        .and_then(|e| e.downcast_ref::<ureq::Error>())
        .is_some_and(|e| matches!(e, ureq::Error::Timeout(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_upload_url(location: &str, expected: Option<&str>) {
        let digest = Digest::of(b"b");
        let expected = expected.map(|e| e.replace("{d}", &digest.as_str().replace(':', "%3A")));
        assert_eq!(
            upload_url("http://127.0.0.1:5000", location, &digest),
            expected,
            "{location}"
        );
    }

    #[test]
    fn uploads_stay_on_the_registrys_origin() {
        check_upload_url(
            "/v2/a/blobs/uploads/u1",
            Some("http://127.0.0.1:5000/v2/a/blobs/uploads/u1?digest={d}"),
        );
        check_upload_url(
            "/v2/a/blobs/uploads/u1?_state=x",
            Some("http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=x&digest={d}"),
        );
        check_upload_url(
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=x",
            Some("http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=x&digest={d}"),
        );
        check_upload_url("http://127.0.0.1:50001/v2/a/blobs/uploads/u1", None);
        check_upload_url("https://elsewhere.example/upload", None);
        check_upload_url("v2/a/blobs/uploads/u1", None);
    }

    /// Reads `served` through a check for a blob of `expected` bytes; `Err` is why it was refused.
    #[track_caller]
    fn check_stream(served: &[u8], expected: &[u8], size: u64, refused: Option<&str>) {
        let digest = Digest::of(expected);
        let mut checked = Checked::new(served, &digest, size);
        let mut sink = Vec::new();
        let result = io::copy(&mut checked, &mut sink);
        match refused {
            None => {
                assert_eq!(result.unwrap(), served.len() as u64);
                assert!(checked.mismatch.is_none());
            }
            Some(why) => {
                assert!(result.is_err());
                let mismatch = checked.mismatch.expect("a refusal is explained");
                assert!(mismatch.contains(why), "{mismatch}");
            }
        }
    }

    #[test]
    fn streamed_blobs_are_refused_unless_whole_and_hashing_to_their_digest() {
        check_stream(b"layer", b"layer", 5, None);
        check_stream(b"", b"", 0, None);
        check_stream(b"lay", b"layer", 5, Some("ended after 3 of its 5 bytes"));
        check_stream(b"layer!", b"layer", 5, Some("longer than its 5 bytes"));
        check_stream(b"lAyer", b"layer", 5, Some("hash to"));
    }

    #[track_caller]
    fn check_gather(document: &str, blobs: &[&str], children: &[&str]) {
        let parsed: Document = serde_json::from_str(document).unwrap();
        let found_blobs: Vec<&str> = parsed
            .config
            .iter()
            .chain(parsed.layers.iter().flatten())
            .map(|d| d.digest.as_str())
            .collect();
        let found_children: Vec<&str> = parsed
            .manifests
            .iter()
            .flatten()
            .map(|d| d.digest.as_str())
            .collect();
        assert_eq!(
            (found_blobs.as_slice(), found_children.as_slice()),
            (blobs, children)
        );
    }

    #[test]
    fn indexes_lead_to_children_and_manifests_to_blobs() {
        check_gather(
            r#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
                {"digest":"m1","size":1,"platform":{"architecture":"amd64","os":"linux"}},
                {"digest":"a1","size":1,"platform":{"architecture":"unknown","os":"unknown"},
                 "annotations":{"vnd.docker.reference.type":"attestation-manifest"}}]}"#,
            &[],
            &["m1", "a1"],
        );
        check_gather(
            r#"{"config":{"digest":"c","size":2},"layers":[{"digest":"l1","size":3},{"digest":"l2","size":4}]}"#,
            &["c", "l1", "l2"],
            &[],
        );
        check_gather(
            r#"{"config":{"digest":"c","size":2},"layers":[],"subject":{"digest":"s","size":1}}"#,
            &["c"],
            &[],
        );
    }
}
