//! Images whose download can be watched and timed: a copy of an image in a loopback registry with one more layer
//! of random bytes, new to every image store, made straight in the registry over plain HTTP (curl), without
//! docker, so no store holds any of it. A pull of it downloads at least that layer, which a pull of an image
//! whose layers the store already has (every stand-in pushed from this machine) never does.

use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;
use stack_images::Digest;

use crate::plain_http::{get, put_manifest, upload_blob};

/// A gzipped tar of one file of `size` random bytes, and its diff ID (the digest of the tar).
fn noise_layer(size: usize) -> anyhow::Result<(Vec<u8>, Digest)> {
    let dir = tempfile::tempdir()?;
    let mut noise = vec![0u8; size];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut noise)?;
    std::fs::create_dir(dir.path().join("root"))?;
    std::fs::write(dir.path().join("root/noise"), &noise)?;
    let tar = dir.path().join("layer.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir.path().join("root"))
        .arg("-cf")
        .arg(&tar)
        .arg("noise")
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("tar failed making a noise layer");
    }
    let diff_id = Digest::of(&std::fs::read(&tar)?);
    let gz = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .arg(&tar)
        .output()
        .context("running gzip")?;
    if !gz.status.success() {
        bail!("gzip failed making a noise layer");
    }
    Ok((gz.stdout, diff_id))
}

/// Copies the image at `repository:from` (an index or one manifest) of the loopback registry `host` to
/// `repository:to` with a layer of `size` random bytes on top of every platform (one blob). Returns the digest
/// of what `to` names.
pub fn noisy(
    host: &str,
    repository: &str,
    from: &str,
    to: &str,
    size: usize,
) -> anyhow::Result<Digest> {
    let (layer, diff_id) = noise_layer(size)?;
    let layer_digest = upload_blob(host, repository, &layer)?;
    let with_noise = |mut manifest: Value| -> anyhow::Result<Value> {
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .context("a config")?
            .to_owned();
        let mut config = get(host, repository, &format!("blobs/{config_digest}"))?;
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .context("diff_ids")?
            .push(Value::from(diff_id.to_string()));
        let config = serde_json::to_vec(&config)?;
        manifest["config"]["digest"] =
            Value::from(upload_blob(host, repository, &config)?.to_string());
        manifest["config"]["size"] = Value::from(config.len());
        let layer_type = if manifest["mediaType"]
            .as_str()
            .is_some_and(|t| t.contains("docker"))
        {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        };
        manifest["layers"]
            .as_array_mut()
            .context("layers")?
            .push(serde_json::json!({
                "mediaType": layer_type,
                "size": layer.len(),
                "digest": layer_digest.to_string(),
            }));
        Ok(manifest)
    };
    let mut top = get(host, repository, &format!("manifests/{from}"))?;
    if top.get("manifests").is_none() {
        return Ok(put_manifest(host, repository, Some(to), &with_noise(top)?)?.0);
    }
    for entry in top["manifests"].as_array_mut().expect("checked") {
        let digest = entry["digest"].as_str().context("a digest")?.to_owned();
        let manifest = get(host, repository, &format!("manifests/{digest}"))?;
        // Attestations (unknown/unknown) are left as they are.
        if manifest["layers"].as_array().is_none_or(|l| {
            l.iter()
                .any(|l| l["mediaType"].as_str() == Some("application/vnd.in-toto+json"))
        }) {
            continue;
        }
        let (digest, size) = put_manifest(host, repository, None, &with_noise(manifest)?)?;
        entry["digest"] = Value::from(digest.to_string());
        entry["size"] = Value::from(size);
    }
    Ok(put_manifest(host, repository, Some(to), &top)?.0)
}
