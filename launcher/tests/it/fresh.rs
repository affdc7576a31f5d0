//! Images the local store has never seen, made straight in a registry: the engine skips every blob its content
//! store already holds, so a fault on a manifest or a blob only shows when that content is new. A push through
//! buildx leaves its content in the local store; this makes a copy of a pushed image whose configs (a label with a
//! nonce), platform manifests and index are new, over plain HTTP, without docker.

use std::{process::Command, sync::OnceLock};

use serde_json::Value;
use stack_images::Digest;
use testkit::plain_http::{get, put_manifest, upload_blob};

/// Copies the index at `repository:from` to `repository:to` with every platform's config relabelled
/// (`io.20i-test.nonce=NONCE`), so its configs, manifests and index are content no store has; the layers are
/// shared. Returns the new index's digest.
pub fn variant(host: &str, repository: &str, from: &str, to: &str, nonce: &str) -> Digest {
    let mut index = get(host, repository, &format!("manifests/{from}")).unwrap();
    for entry in index["manifests"].as_array_mut().expect("an index") {
        let digest = entry["digest"].as_str().unwrap().to_owned();
        let mut manifest = get(host, repository, &format!("manifests/{digest}")).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
        let mut config = get(host, repository, &format!("blobs/{config_digest}")).unwrap();
        config["config"]["Labels"]["io.20i-test.nonce"] = Value::from(nonce);
        let config = serde_json::to_vec(&config).unwrap();
        manifest["config"]["digest"] =
            Value::from(upload_blob(host, repository, &config).unwrap().to_string());
        manifest["config"]["size"] = Value::from(config.len());
        let (digest, size) = put_manifest(host, repository, None, &manifest).unwrap();
        entry["digest"] = Value::from(digest.to_string());
        entry["size"] = Value::from(size);
    }
    put_manifest(host, repository, Some(to), &index).unwrap().0
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
