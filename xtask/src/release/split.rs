//! A release split across native runners: each builds every line for its own platform and records what it
//! pushed in a digests file; `release merge` assembles each line's pin from those files and carries on exactly
//! as a single-machine release does (mirror, verify, move tags, notes).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};
use stack_images::{docker::Docker, registry::RegistryClient, ImageRef, PhpLine, ReleaseVersion};

use crate::{
    display_path,
    release::execute::{Executor, Mode},
    release::plan::Plan,
};

/// What one platform's run pushed: one single-platform image per line, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformDigests {
    pub version: ReleaseVersion,
    pub revision: String,
    pub platform: String,
    pub images: Vec<PlatformImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformImage {
    pub php: PhpLine,
    /// `repository@sha256:…`: what the merge reads.
    pub source: ImageRef,
}

/// Runs the plan of one platform (`Plan::for_platform`) and writes the digests file.
pub fn build_platform(
    plan: &Plan,
    work_dir: &Path,
    digests_file: &Path,
) -> anyhow::Result<PlatformDigests> {
    let platform = plan
        .bake_output()
        .and_then(|o| o.platform())
        .expect("a platform plan builds one platform")
        .to_owned();
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let journal = work_dir.join("commands.log");
    let _ = std::fs::remove_file(&journal);
    let docker = Docker::new()?.with_journal(&journal);
    let outcome = Executor::new(
        plan,
        &docker,
        RegistryClient::from_env()?,
        Mode::Release { resume: false },
        work_dir.to_path_buf(),
    )
    .run()?;
    let images = outcome
        .platform_images
        .into_iter()
        .map(|(php, source)| PlatformImage { php, source })
        .collect();
    let digests = PlatformDigests {
        version: plan.version.clone(),
        revision: plan.revision.to_string(),
        platform: platform.clone(),
        images,
    };
    if let Some(dir) = digests_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(digests_file, serde_json::to_string_pretty(&digests)? + "\n")
        .with_context(|| format!("writing {}", digests_file.display()))?;
    println!(
        "{platform}: {} images pushed; digests in {}",
        digests.images.len(),
        display_path(digests_file)
    );
    Ok(digests)
}

/// Reads the digests files of every platform and checks they belong to this release and cover the matrix.
pub fn merge_sources(
    plan: &Plan,
    files: &[PathBuf],
) -> anyhow::Result<BTreeMap<PhpLine, Vec<ImageRef>>> {
    let mut sources: BTreeMap<PhpLine, Vec<ImageRef>> = BTreeMap::new();
    let mut platforms = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let digests: PlatformDigests =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        ensure!(
            digests.version == plan.version && digests.revision == plan.revision.as_str(),
            "{} is from {} at {}, not {} at {}: merge the digests of this release's own build jobs",
            file.display(),
            digests.version,
            digests.revision,
            plan.version,
            plan.revision
        );
        ensure!(
            !platforms.contains(&digests.platform),
            "two digests files for {}",
            digests.platform
        );
        platforms.push(digests.platform.clone());
        for image in digests.images {
            sources.entry(image.php).or_default().push(image.source);
        }
    }
    let missing: Vec<&String> = plan
        .platforms
        .iter()
        .filter(|p| !platforms.contains(p))
        .collect();
    if !missing.is_empty() {
        bail!(
            "no digests file for {}: pass one --digests-file per platform ({})",
            missing
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            plan.platforms.join(", ")
        );
    }
    for build in &plan.builds {
        let count = sources.get(&build.php).map_or(0, Vec::len);
        ensure!(
            count == plan.platforms.len(),
            "PHP {} has {count} platform images, not {}",
            build.php,
            plan.platforms.len()
        );
    }
    Ok(sources)
}
