//! A loopback registry read and written over plain HTTP with curl, without docker: how tests make content that no
//! image store has seen (`noise`, the launcher's fresh-content tests). Test infrastructure only: the product's
//! registry requests all go through `stack_images::registry`.

use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;
use stack_images::Digest;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// `curl ARGS`: its output, or curl's message.
pub fn curl(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "120"])
        .args(args)
        .output()
        .context("running curl")?;
    if !output.status.success() {
        bail!(
            "curl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(output.stdout)
}

/// GETs `what` (`manifests/REF` or `blobs/DIGEST`) of `repository` as JSON.
pub fn get(host: &str, repository: &str, what: &str) -> anyhow::Result<Value> {
    let bytes = curl(&[
        "-H",
        &format!("Accept: {MANIFEST_TYPES}"),
        &format!("http://{host}/v2/{repository}/{what}"),
    ])?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {what} of {repository}"))
}

/// Uploads `bytes` as a blob of `repository`; returns its digest.
pub fn upload_blob(host: &str, repository: &str, bytes: &[u8]) -> anyhow::Result<Digest> {
    let digest = Digest::of(bytes);
    let location = curl(&[
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%header{location}",
        &format!("http://{host}/v2/{repository}/blobs/uploads/"),
    ])?;
    let location = String::from_utf8(location)?;
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{host}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), bytes)?;
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{location}{separator}digest={digest}"),
    ])?;
    Ok(digest)
}

/// PUTs `manifest` under `reference`; returns its digest and size.
pub fn put_manifest(
    host: &str,
    repository: &str,
    reference: Option<&str>,
    manifest: &Value,
) -> anyhow::Result<(Digest, usize)> {
    let bytes = serde_json::to_vec(manifest)?;
    let digest = Digest::of(&bytes);
    let reference = reference.map_or_else(|| digest.to_string(), str::to_owned);
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &bytes)?;
    let media_type = manifest["mediaType"].as_str().context("a mediaType")?;
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("http://{host}/v2/{repository}/manifests/{reference}"),
    ])?;
    Ok((digest, bytes.len()))
}
