//! A release split across native runners: each builds every line for its own platform and records what it
//! pushed in a digests file; `release merge` assembles each line's pin from those files and carries on exactly
//! as a single-machine release does (mirror, verify, move tags, notes).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};
use stack_images::{docker::Docker, PhpLine, ReleaseVersion};

use crate::{
    bake::{self, Output},
    credentials, display_path,
    execute::{self, with_retries},
    plan::Plan,
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
    pub source: String,
}

/// Builds every line of `plan` for one platform and writes the digests file.
pub fn build_platform(
    plan: &Plan,
    platform: &str,
    by_digest: bool,
    work_dir: &Path,
    digests_file: &Path,
) -> anyhow::Result<PlatformDigests> {
    ensure!(
        plan.platforms.iter().any(|p| p == platform),
        "--platform {platform} is not in the matrix ({})",
        plan.platforms.join(", ")
    );
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let journal = work_dir.join("commands.log");
    let _ = std::fs::remove_file(&journal);
    let docker = Docker::new()?.with_journal(&journal);

    eprintln!("==> preflight");
    execute::check_engine(&docker, &[platform.to_owned()])?;
    execute::check_login(credentials::host(&plan.canonical))?;

    eprintln!("==> build {platform}");
    let output = if by_digest {
        Output::ByDigest(platform)
    } else {
        Output::Staging(platform)
    };
    let lines: Vec<PhpLine> = plan.builds.iter().map(|b| b.php).collect();
    let bake_path = work_dir.join("bake.json");
    std::fs::write(
        &bake_path,
        serde_json::to_string_pretty(&bake::bake_file(plan, &lines, output))?,
    )
    .with_context(|| format!("writing {}", bake_path.display()))?;
    let metadata_path = work_dir.join("bake-metadata.json");
    let _ = std::fs::remove_file(&metadata_path);
    let log = work_dir.join("build.log");
    eprintln!(
        "    building PHP {} (log: {})",
        lines
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        log.display()
    );
    with_retries(|| docker.run_logged(&execute::bake(plan, work_dir), &log)).map_err(|e| {
        if by_digest {
            e.context("push-by-digest needs a builder that supports it (docker-container); the engine's own docker driver does not: drop --push-by-digest to push to staging tags")
        } else {
            e
        }
    })?;

    let metadata: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&metadata_path)
            .with_context(|| format!("reading {}", metadata_path.display()))?,
    )?;
    let mut images = Vec::new();
    for build in &plan.builds {
        let digest = metadata[&build.target]["containerimage.digest"]
            .as_str()
            .with_context(|| format!("buildx recorded no digest for target {}", build.target))?;
        let pushed_to = match output {
            Output::Staging(_) => bake::staging_tag(build, platform),
            _ => build.push.clone(),
        };
        let repository = pushed_to
            .rsplit_once(':')
            .map(|(r, _)| r)
            .unwrap_or(&pushed_to);
        let source = format!("{repository}@{digest}");
        // Read it back: the merge trusts this file, so it must name what the registry really serves.
        let served = docker.digest_of(&source)?;
        ensure!(served.as_str() == digest, "{source} serves {served}");
        eprintln!("    pushed {source}");
        images.push(PlatformImage {
            php: build.php,
            source,
        });
    }
    let digests = PlatformDigests {
        version: plan.version.clone(),
        revision: plan.revision.to_string(),
        platform: platform.to_owned(),
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
) -> anyhow::Result<BTreeMap<PhpLine, Vec<String>>> {
    let mut sources: BTreeMap<PhpLine, Vec<String>> = BTreeMap::new();
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
