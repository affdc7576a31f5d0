//! How much a pull will download: an image's compressed size and layer count for one platform, read from its
//! manifest (through the index when the tag names one) before the first layer byte moves, so progress can say
//! "pulling 4 images, 312 MB".

use crate::{
    digest::IndexSummary,
    registry::{RegistryClient, RegistryError},
    ImageRef,
};

/// One platform's image as the registry stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullSize {
    /// Config and layers, compressed: what a pull downloads when the local store has none of it.
    pub bytes: u64,
    pub layers: usize,
}

/// `linux/amd64` or `linux/arm64`: the platform the engine on this machine pulls by default.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux/{arch}")
}

impl RegistryClient {
    /// The size of `reference` for `platform` (`linux/amd64`): its manifest, or, for an index, the manifest of
    /// that platform's entry. `None` when the index does not list the platform.
    pub fn pull_size(
        &self,
        reference: &ImageRef,
        platform: &str,
    ) -> Result<Option<PullSize>, RegistryError> {
        let manifest = self.get_manifest(reference)?;
        let bytes = match IndexSummary::parse(&manifest.bytes) {
            Ok(index) if !index.platforms.is_empty() => {
                let Some(entry) = index.platforms.iter().find(|p| p.platform == platform) else {
                    return Ok(None);
                };
                self.get_manifest(&reference.with_digest(&entry.digest))?
                    .bytes
            }
            _ => manifest.bytes,
        };
        Ok(size_of(&bytes))
    }
}

/// Config plus layers of an image manifest; `None` for anything else.
fn size_of(manifest: &[u8]) -> Option<PullSize> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let layers = value["layers"].as_array()?;
    let config = value["config"]["size"].as_u64()?;
    let sum: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    Some(PullSize {
        bytes: config + sum,
        layers: layers.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_manifests() {
        let manifest = r#"{"schemaVersion":2,"config":{"size":1000,"digest":"sha256:1"},
            "layers":[{"size":30000000},{"size":5000}]}"#;
        assert_eq!(
            size_of(manifest.as_bytes()),
            Some(PullSize {
                bytes: 30_006_000,
                layers: 2
            })
        );
        assert_eq!(size_of(br#"{"manifests":[]}"#), None);
        assert_eq!(size_of(b"not json"), None);
    }
}
