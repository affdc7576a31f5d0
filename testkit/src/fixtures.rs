//! Fixture images built here: static busybox for amd64 and arm64 on `scratch`, named as fixtures wherever they
//! stand in for an image this machine cannot pull.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use stack_images::{
    docker::{Docker, DockerCommand},
    registry::Policy,
    Digest, IndexSummary,
};

/// Where `scripts/setup.sh` leaves `busybox-amd64` and `busybox-arm64` (`$STACK_FIXTURES_DIR` overrides).
pub fn busybox_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("STACK_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/20i-stack/fixtures"));
    for arch in ["amd64", "arm64"] {
        if !dir.join(format!("busybox-{arch}")).exists() {
            bail!("no busybox-{arch} in {}: run `make setup`", dir.display());
        }
    }
    Ok(dir)
}

/// A build context for a two-platform image that runs busybox: its Dockerfile and both binaries.
pub fn busybox_context(extra_dockerfile_lines: &str) -> anyhow::Result<tempfile::TempDir> {
    let source = busybox_dir()?;
    let dir = tempfile::Builder::new().prefix("20i-fixture-").tempdir()?;
    for arch in ["amd64", "arm64"] {
        let name = format!("busybox-{arch}");
        std::fs::copy(source.join(&name), dir.path().join(&name))
            .with_context(|| format!("copying {name}"))?;
    }
    let dockerfile = format!(
        "FROM scratch\nARG TARGETARCH\nCOPY busybox-${{TARGETARCH}} /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         ENV PATH=/bin\n{extra_dockerfile_lines}"
    );
    std::fs::write(dir.path().join("Dockerfile"), dockerfile)?;
    Ok(dir)
}

/// Builds the busybox fixture for linux/amd64 and linux/arm64 with `extra_dockerfile_lines`, pushes it under
/// `reference`, and returns the index digest buildx recorded in its metadata file.
pub fn push_busybox(
    reference: &str,
    extra_dockerfile_lines: &str,
    attestations: bool,
) -> anyhow::Result<String> {
    let docker = Docker::new()?;
    let context = busybox_context(extra_dockerfile_lines)?;
    let metadata = context.path().join("metadata.json");
    let mut args = vec![
        "buildx",
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "--push",
        "--tag",
        reference,
    ];
    if !attestations {
        args.push("--provenance=false");
    }
    let metadata_arg = metadata.display().to_string();
    let context_arg = context.path().display().to_string();
    args.extend(["--metadata-file", &metadata_arg, &context_arg]);
    // distribution 2.8 sometimes answers 500 to a HEAD that races a tag write: a fixture push is retried on what
    // is transient, by the same loop and policy as the release's own pushes.
    let command = DockerCommand::new(args);
    stack_images::docker::with_retries(&Policy::default(), || docker.run(&command))?;
    let metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(&metadata)?)?;
    let digest = metadata["containerimage.digest"]
        .as_str()
        .context("buildx recorded no containerimage.digest")?;
    Ok(digest.to_owned())
}

/// The build context that stands in for `images/php-fpm` (whose Docker Hub base cannot be pulled here).
pub fn php_fpm_standin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("standins/php-fpm")
}

/// Fetches a manifest index through docker (`imagetools inspect --raw`) and checks it against its own bytes: the
/// digest is sha256 of what was served. How tests read back what buildx pushed.
pub fn inspect_index(docker: &Docker, reference: &str) -> anyhow::Result<IndexSummary> {
    let bytes = docker.output(&DockerCommand::inspect_raw(reference))?;
    IndexSummary::parse(&bytes)
        .map_err(|e| e.context(format!("reading the manifest of {reference}")))
}

/// The digest a registry serves for a reference through docker, computed from the raw bytes.
pub fn digest_of(docker: &Docker, reference: &str) -> anyhow::Result<Digest> {
    let bytes = docker.output(&DockerCommand::inspect_raw(reference))?;
    Ok(Digest::of(&bytes))
}
