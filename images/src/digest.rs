//! Digests are data: `sha256:<hex>` of the exact bytes, and the platforms a manifest index lists.

use std::fmt::{self, Write};

use anyhow::{bail, Context};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A content digest, always `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of exactly these bytes: what a registry calls a manifest's digest.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::default();
        hasher.update(bytes);
        hasher.finish()
    }

    pub fn parse(text: &str) -> anyhow::Result<Digest> {
        let hex = text.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!("`{text}` is not a sha256 digest (sha256: and 64 lowercase hex digits)");
        }
        Ok(Digest(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256:0123456789ab`, for tables where the full digest would not fit.
    pub fn short(&self) -> &str {
        &self.0[..7 + 12]
    }
}

/// The digest of bytes that come in pieces (a blob streamed from one registry to another), never all held.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        let mut hex = String::with_capacity(7 + 64);
        hex.push_str("sha256:");
        for byte in self.0.finalize() {
            write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
        }
        Digest(hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One runnable image in an index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformManifest {
    /// `os/arch` or `os/arch/variant`.
    pub platform: String,
    pub digest: Digest,
    /// Size of the platform's manifest document, as the index records it.
    pub manifest_size: u64,
    /// The attestation manifest the index lists for this image (`unknown/unknown`, annotated
    /// `vnd.docker.reference.type=attestation-manifest` and `vnd.docker.reference.digest=<this digest>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Digest>,
}

/// The annotation of an attestation manifest's layer that names what it attests, as BuildKit writes it.
pub const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// The predicate type of an SPDX SBOM.
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
/// The prefix of every SLSA provenance predicate type (`…/v0.2`, `…/v1`).
pub const SLSA_PROVENANCE_PREFIX: &str = "https://slsa.dev/provenance/";

/// What an attestation manifest may hold that a release promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// An SPDX SBOM (`https://spdx.dev/Document`).
    Sbom,
    /// SLSA provenance, any version (`https://slsa.dev/provenance/v0.2`, `…/v1`).
    Provenance,
}

impl Predicate {
    /// Whether a layer's predicate type is this one.
    pub fn is(self, predicate_type: &str) -> bool {
        match self {
            Predicate::Sbom => predicate_type == SPDX_PREDICATE,
            Predicate::Provenance => predicate_type.starts_with(SLSA_PROVENANCE_PREFIX),
        }
    }

    /// `sbom`, `provenance`: as plans, notes and errors name it.
    pub fn name(self) -> &'static str {
        match self {
            Predicate::Sbom => "sbom",
            Predicate::Provenance => "provenance",
        }
    }
}

/// The predicate types an attestation manifest holds, one per in-toto layer, from its raw bytes.
pub fn predicate_types(manifest: &[u8]) -> anyhow::Result<Vec<String>> {
    let manifest: ImageManifest = serde_json::from_slice(manifest)
        .context("not an attestation manifest (an image manifest)")?;
    Ok(manifest
        .layers()
        .iter()
        .filter_map(|layer| layer.annotations().as_ref()?.get(PREDICATE_TYPE).cloned())
        .collect())
}

/// What an image index says, with attestations told apart from platforms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSummary {
    pub digest: Digest,
    pub media_type: String,
    pub platforms: Vec<PlatformManifest>,
    /// Attestation manifests (provenance, SBOM): listed as `unknown/unknown`, never a platform.
    pub attestations: usize,
}

impl IndexSummary {
    /// Parses the raw bytes of an OCI image index or Docker manifest list; the digest is computed from the bytes.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<IndexSummary> {
        let index: ImageIndex =
            serde_json::from_slice(bytes).context("not an image index or manifest list")?;
        let media_type = index
            .media_type()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let mut platforms = Vec::new();
        let mut attestations = 0;
        let mut attesting = Vec::new();
        for manifest in index.manifests() {
            match platform_of(manifest) {
                Some(platform) => platforms.push(PlatformManifest {
                    platform,
                    digest: Digest::parse(manifest.digest().as_ref())?,
                    manifest_size: manifest.size(),
                    attestation: None,
                }),
                None => {
                    attestations += 1;
                    if let Some(subject) = attestation_subject(manifest) {
                        attesting.push((subject, Digest::parse(manifest.digest().as_ref())?));
                    }
                }
            }
        }
        for (subject, attestation) in attesting {
            if let Some(platform) = platforms.iter_mut().find(|p| p.digest.as_str() == subject) {
                platform.attestation = Some(attestation);
            }
        }
        Ok(IndexSummary {
            digest: Digest::of(bytes),
            media_type,
            platforms,
            attestations,
        })
    }

    pub fn platform_names(&self) -> Vec<&str> {
        self.platforms.iter().map(|p| p.platform.as_str()).collect()
    }

    /// Fails unless every wanted platform is listed, naming the missing ones.
    pub fn require_platforms(&self, wanted: &[String]) -> anyhow::Result<()> {
        let listed = self.platform_names();
        let missing: Vec<&str> = wanted
            .iter()
            .map(String::as_str)
            .filter(|w| !listed.contains(w))
            .collect();
        if !missing.is_empty() {
            bail!(
                "index {} lacks {} (it lists {})",
                self.digest,
                missing.join(", "),
                listed.join(", ")
            );
        }
        Ok(())
    }
}

/// Compressed size of an image from the raw bytes of its manifest: config plus layers, as pulled.
pub fn compressed_size(manifest: &[u8]) -> anyhow::Result<u64> {
    let manifest: ImageManifest =
        serde_json::from_slice(manifest).context("not an image manifest")?;
    Ok(manifest.config().size() + manifest.layers().iter().map(Descriptor::size).sum::<u64>())
}

/// The image an attestation manifest entry attests (`vnd.docker.reference.digest`), if it is one.
fn attestation_subject(manifest: &Descriptor) -> Option<String> {
    let annotations = manifest.annotations().as_ref()?;
    (annotations.get("vnd.docker.reference.type")? == "attestation-manifest")
        .then(|| annotations.get("vnd.docker.reference.digest").cloned())?
}

/// `os/arch[/variant]` of a runnable manifest; `None` for attestations and entries without a platform.
fn platform_of(manifest: &Descriptor) -> Option<String> {
    let is_attestation = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|t| t == "attestation-manifest");
    let platform = manifest.platform().as_ref()?;
    let (os, arch) = (
        platform.os().to_string(),
        platform.architecture().to_string(),
    );
    if is_attestation || os == "unknown" || arch == "unknown" {
        return None;
    }
    Some(match platform.variant() {
        // arm64's only variant is v8; registries list it both ways, so `linux/arm64` is the one name for it.
        Some(variant) if !(arch == "arm64" && variant == "v8") => format!("{os}/{arch}/{variant}"),
        _ => format!("{os}/{arch}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_bytes() {
        // sha256 of the empty string, as `sha256sum` prints it.
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::of(b"").as_str(), empty);
        assert_eq!(Digest::parse(empty).unwrap().short(), "sha256:e3b0c44298fc");
    }

    #[test]
    fn digest_parsing() {
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    /// An index as buildx 0.13 pushes it with provenance on: two platforms and two attestations.
    const INDEX_WITH_ATTESTATIONS: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 673,
         "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 673,
         "digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222",
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 566,
         "digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333",
         "annotations": {"vnd.docker.reference.digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                         "vnd.docker.reference.type": "attestation-manifest"},
         "platform": {"architecture": "unknown", "os": "unknown"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 566,
         "digest": "sha256:4444444444444444444444444444444444444444444444444444444444444444",
         "annotations": {"vnd.docker.reference.digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222",
                         "vnd.docker.reference.type": "attestation-manifest"},
         "platform": {"architecture": "unknown", "os": "unknown"}}
      ]
    }"#;

    #[test]
    fn attestations_are_not_platforms() {
        let index = IndexSummary::parse(INDEX_WITH_ATTESTATIONS.as_bytes()).unwrap();
        assert_eq!(index.platform_names(), ["linux/amd64", "linux/arm64"]);
        assert_eq!(index.attestations, 2);
        let attestations: Vec<&str> = index
            .platforms
            .iter()
            .map(|p| p.attestation.as_ref().map_or("none", Digest::short))
            .collect();
        assert_eq!(attestations, ["sha256:333333333333", "sha256:444444444444"]);
        let one_lost = INDEX_WITH_ATTESTATIONS.replace(
            "\"vnd.docker.reference.digest\": \"sha256:2222",
            "\"vnd.docker.reference.digest\": \"sha256:5555",
        );
        let index_one_lost = IndexSummary::parse(one_lost.as_bytes()).unwrap();
        assert_eq!(index_one_lost.platforms[1].attestation, None);
        assert_eq!(index.digest, Digest::of(INDEX_WITH_ATTESTATIONS.as_bytes()));
        index
            .require_platforms(&["linux/amd64".into(), "linux/arm64".into()])
            .unwrap();
        let error = index
            .require_platforms(&["linux/amd64".into(), "linux/riscv64".into()])
            .unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("lacks linux/riscv64 (it lists linux/amd64, linux/arm64)"),
            "{error}"
        );
    }

    #[test]
    fn predicate_types_of_an_attestation_manifest() {
        // As BuildKit 0.13 pushes one with an SBOM and provenance (mode=min).
        let manifest = r#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 241,
                     "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111"},
          "layers": [
            {"mediaType": "application/vnd.in-toto+json", "size": 1007,
             "digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222",
             "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}},
            {"mediaType": "application/vnd.in-toto+json", "size": 1092,
             "digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333",
             "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]}"#;
        assert_eq!(
            predicate_types(manifest.as_bytes()).unwrap(),
            [SPDX_PREDICATE, "https://slsa.dev/provenance/v0.2"]
        );
        assert!(predicate_types(INDEX_WITH_ATTESTATIONS.as_bytes()).is_err());
        for (predicate, predicate_type, expected) in [
            (Predicate::Sbom, SPDX_PREDICATE, true),
            (Predicate::Sbom, "https://cyclonedx.org/bom", false),
            (
                Predicate::Provenance,
                "https://slsa.dev/provenance/v0.2",
                true,
            ),
            (
                Predicate::Provenance,
                "https://slsa.dev/provenance/v1",
                true,
            ),
            (Predicate::Provenance, SPDX_PREDICATE, false),
            (
                Predicate::Provenance,
                "https://slsa.dev/verification_summary/v1",
                false,
            ),
        ] {
            assert_eq!(
                predicate.is(predicate_type),
                expected,
                "{predicate:?} {predicate_type}"
            );
        }
        assert!(predicate_types(b"{").is_err());
    }

    #[test]
    fn compressed_size_is_config_plus_layers() {
        let manifest = r#"{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
          "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1000,
                     "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111"},
          "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 30000000,
             "digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222"},
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 5000,
             "digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333"}]}"#;
        assert_eq!(compressed_size(manifest.as_bytes()).unwrap(), 30_006_000);
        assert!(compressed_size(INDEX_WITH_ATTESTATIONS.as_bytes()).is_err());
    }

    #[test]
    fn docker_manifest_lists_parse_too() {
        let list = INDEX_WITH_ATTESTATIONS.replace(
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        );
        let index = IndexSummary::parse(list.as_bytes()).unwrap();
        assert_eq!(
            index.media_type,
            "application/vnd.docker.distribution.manifest.list.v2+json"
        );
        assert_eq!(index.platforms.len(), 2);
    }
}
