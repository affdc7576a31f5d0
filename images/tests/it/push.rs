//! A two-platform image built and pushed for real, then read back: the digest buildx reports is sha256 of the
//! bytes the registry serves, and both platforms are listed (attestations are not platforms).

use stack_images::docker::Docker;
use testkit::{fixtures, Registry};

#[test]
fn two_platform_fixture_pushed_and_read_back() -> anyhow::Result<()> {
    let docker = Docker::new()?;
    let registry = Registry::start()?;
    for (attestations, name) in [(false, "without-attestations"), (true, "with-attestations")] {
        let repository = format!("{}/fixtures/busybox-{name}", registry.namespace("it"));
        let reference = format!("{repository}:1");
        let reported = fixtures::push_busybox(
            &reference,
            "CMD [\"busybox\", \"echo\", \"fixture\"]\n",
            attestations,
        )?;

        // inspect_index fetches the raw bytes (`imagetools inspect --raw`) and computes their sha256.
        let index = fixtures::inspect_index(&docker, &reference)?;
        assert_eq!(
            index.digest.as_str(),
            reported,
            "{reference}: sha256 of the served index is buildx's digest"
        );
        assert_eq!(
            index.platform_names(),
            ["linux/amd64", "linux/arm64"],
            "{reference}"
        );
        assert_eq!(
            index.attestations,
            if attestations { 2 } else { 0 },
            "{reference}"
        );

        // A pin by digest serves the same bytes.
        assert_eq!(
            fixtures::digest_of(&docker, &format!("{repository}@{reported}"))?,
            index.digest
        );
    }
    Ok(())
}
