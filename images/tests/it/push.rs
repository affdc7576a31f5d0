//! A two-platform image built and pushed for real, then read back: the digest buildx reports is sha256 of the
//! bytes the registry serves, and both platforms are listed (attestations are not platforms).

use stack_images::docker::{Docker, DockerCommand};
use testkit::{fixtures, Registry};

const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

/// Builds the busybox fixture for both platforms, pushes it under `reference`, and returns the digest buildx
/// recorded in its metadata file.
fn build_and_push(docker: &Docker, reference: &str, attestations: bool) -> anyhow::Result<String> {
    let context = fixtures::busybox_context("CMD [\"busybox\", \"echo\", \"fixture\"]\n")?;
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
    docker.run(&DockerCommand::new(args))?;
    let metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(&metadata)?)?;
    let digest = metadata["containerimage.digest"]
        .as_str()
        .expect("buildx records containerimage.digest");
    Ok(digest.to_owned())
}

#[test]
fn two_platform_fixture_pushed_and_read_back() -> anyhow::Result<()> {
    let docker = Docker::new()?;
    let registry = Registry::start()?;
    for (attestations, name) in [(false, "without-attestations"), (true, "with-attestations")] {
        let reference = format!("{}/fixtures/busybox-{name}:1", registry.namespace("it"));
        let reported = build_and_push(&docker, &reference, attestations)?;

        // inspect_index fetches the raw bytes (`imagetools inspect --raw`) and computes their sha256.
        let index = docker.inspect_index(&reference)?;
        assert_eq!(
            index.digest.as_str(),
            reported,
            "{reference}: sha256 of the served index is buildx's digest"
        );
        assert_eq!(index.platform_names(), PLATFORMS, "{reference}");
        assert_eq!(
            index.attestations,
            if attestations { 2 } else { 0 },
            "{reference}"
        );

        // The same index by digest: a pin by digest serves the same bytes.
        let by_digest = format!(
            "{}/fixtures/busybox-{name}@{reported}",
            registry.namespace("it")
        );
        assert_eq!(docker.digest_of(&by_digest)?, index.digest);
    }
    Ok(())
}
