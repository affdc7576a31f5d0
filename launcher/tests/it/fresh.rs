//! Images the local store has never seen, made straight in a registry: the engine skips every blob its content
//! store already holds, so a fault on a manifest or a blob only shows when that content is new. A push through
//! buildx leaves its content in the local store; this makes a copy of a pushed image whose configs (a label with a
//! nonce), platform manifests and index are new, over plain HTTP, without docker.

use std::{process::Command, sync::OnceLock};

use serde_json::Value;
use stack_images::Digest;

const INDEX_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// `curl ARGS`, its output on success; panics with curl's message otherwise.
#[track_caller]
fn curl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body"])
        .args(args)
        .output()
        .expect("running curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output.stdout
}

/// Uploads `bytes` as a blob of `repository` on `host`; returns its digest.
fn upload_blob(host: &str, repository: &str, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    let location = curl(&[
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%header{location}",
        &format!("http://{host}/v2/{repository}/blobs/uploads/"),
    ]);
    let location = String::from_utf8(location).unwrap();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{host}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{location}{separator}digest={digest}"),
    ]);
    digest
}

/// PUTs a manifest (its media type from its own `mediaType`) under `reference`; returns its digest.
fn put_manifest(host: &str, repository: &str, reference: &str, manifest: &Value) -> Digest {
    let bytes = serde_json::to_vec(manifest).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let media_type = manifest["mediaType"].as_str().expect("a mediaType");
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("http://{host}/v2/{repository}/manifests/{reference}"),
    ]);
    Digest::of(&bytes)
}

fn get(host: &str, repository: &str, what: &str) -> Vec<u8> {
    curl(&[
        "-H",
        &format!("Accept: {INDEX_TYPES}"),
        &format!("http://{host}/v2/{repository}/{what}"),
    ])
}

/// Copies the index at `repository:from` to `repository:to` with every platform's config relabelled
/// (`io.20i-test.nonce=NONCE`), so its configs, manifests and index are content no store has; the layers are
/// shared. Returns the new index's digest.
pub fn variant(host: &str, repository: &str, from: &str, to: &str, nonce: &str) -> Digest {
    let mut index: Value =
        serde_json::from_slice(&get(host, repository, &format!("manifests/{from}"))).unwrap();
    for entry in index["manifests"].as_array_mut().expect("an index") {
        let digest = entry["digest"].as_str().unwrap().to_owned();
        let mut manifest: Value =
            serde_json::from_slice(&get(host, repository, &format!("manifests/{digest}"))).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
        let mut config: Value =
            serde_json::from_slice(&get(host, repository, &format!("blobs/{config_digest}")))
                .unwrap();
        config["config"]["Labels"]["io.20i-test.nonce"] = Value::from(nonce);
        let config = serde_json::to_vec(&config).unwrap();
        manifest["config"]["digest"] =
            Value::from(upload_blob(host, repository, &config).to_string());
        manifest["config"]["size"] = Value::from(config.len());
        let size = serde_json::to_vec(&manifest).unwrap().len();
        let digest = put_manifest(
            host,
            repository,
            &Digest::of(&serde_json::to_vec(&manifest).unwrap()).to_string(),
            &manifest,
        );
        entry["digest"] = Value::from(digest.to_string());
        entry["size"] = Value::from(size);
    }
    put_manifest(host, repository, to, &index)
}

/// `skopeo copy --all` from one registry to another (no docker, so the local store stays as it was).
pub fn copy(from: &str, to: &str) {
    skopeo_copy(&format!("docker://{from}"), &format!("docker://{to}"));
}

/// The PHP-FPM stand-in as an OCI layout on disk, built and pushed once per test process: copying it into a
/// cell's registry costs no build.
pub fn standin_layout() -> &'static str {
    static LAYOUT: OnceLock<String> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("php-fpm-standin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The registry goes when this ends; the layout stays for the process.
        let registry = testkit::Registry::start().unwrap();
        let pushed = format!("{}/fixture/php-fpm:standin", registry.host());
        testkit::fixtures::push_busybox(&pushed, testkit::stack::PHP_FPM_STANDIN_LINES, false)
            .unwrap();
        let layout = format!("oci:{}:standin", dir.display());
        skopeo_copy(&format!("docker://{pushed}"), &layout);
        layout
    })
}

/// Copies the stand-in into `reference` (`host/repository:tag`) of a registry.
pub fn put_standin(reference: &str) {
    skopeo_copy(standin_layout(), &format!("docker://{reference}"));
}

fn skopeo_copy(from: &str, to: &str) {
    let output = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            from,
            to,
        ])
        .output()
        .expect("running skopeo");
    assert!(
        output.status.success(),
        "skopeo copy {from} {to}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `skopeo inspect --raw`: the digest of the bytes the registry serves for `reference`.
pub fn registry_digest(reference: &str) -> Digest {
    let output = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .expect("running skopeo");
    assert!(
        output.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Digest::of(&output.stdout)
}
