//! The SBOM scanner stand-in (`testkit/standins/sbom-scanner/`): an image that speaks BuildKit's SBOM scanner
//! protocol, built here for linux/amd64 and linux/arm64 and pushed to the registry a test or `make demo` releases
//! to, since docker/buildkit-syft-scanner cannot be pulled on these machines. BuildKit pulls a generator through a
//! registry, like a base image; the builds of the image are cached by BuildKit, so each push after the first only
//! uploads a few kilobytes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use stack_images::docker::{Docker, DockerCommand};

use crate::fixtures;

/// The stand-in's repository name under a namespace, and its tag.
pub const NAME: &str = "sbom-scanner-standin";
pub const TAG: &str = "1";

/// The stand-in's directory: its Dockerfile and `scan.sh`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("standins/sbom-scanner")
}

/// Builds the stand-in and pushes it to `<namespace>/sbom-scanner-standin:1`; returns that reference pinned by the
/// index digest buildx recorded (`…:1@sha256:…`), as a release names its scanner.
pub fn push(namespace: &str) -> anyhow::Result<String> {
    push_with(&Docker::new()?, namespace)
}

/// [`push`] with a docker of the caller's (its own config directory, for a registry that wants a login).
pub fn push_with(docker: &Docker, namespace: &str) -> anyhow::Result<String> {
    let source = fixtures::busybox_dir()?;
    let context = tempfile::Builder::new()
        .prefix("20i-sbom-scanner-")
        .tempdir()?;
    for arch in ["amd64", "arm64"] {
        let name = format!("busybox-{arch}");
        std::fs::copy(source.join(&name), context.path().join(&name))
            .with_context(|| format!("copying {name}"))?;
    }
    for file in ["Dockerfile", "scan.sh"] {
        std::fs::copy(dir().join(file), context.path().join(file))
            .with_context(|| format!("copying standins/sbom-scanner/{file}"))?;
    }
    let reference = format!("{namespace}/{NAME}:{TAG}");
    let metadata = context.path().join("metadata.json");
    docker.run(&DockerCommand::new([
        "buildx".to_owned(),
        "build".into(),
        "--platform".into(),
        "linux/amd64,linux/arm64".into(),
        "--provenance=false".into(),
        "--output".into(),
        "type=image,push=true,oci-mediatypes=true".into(),
        "--tag".into(),
        reference.clone(),
        "--metadata-file".into(),
        metadata.display().to_string(),
        context.path().display().to_string(),
    ]))?;
    let metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(&metadata)?)?;
    let digest = metadata["containerimage.digest"]
        .as_str()
        .context("buildx recorded no containerimage.digest for the SBOM scanner stand-in")?;
    Ok(format!("{reference}@{digest}"))
}
