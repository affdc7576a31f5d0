//! The bake file of a release: one target per PHP line, so one buildx invocation builds the lines in parallel;
//! either every platform pushed as the line's pin, or one platform pushed for a later merge (release on
//! native runners, one per platform).

use anyhow::Context;
use serde_json::{json, Map, Value};
use stack_images::{PhpLine, Tag};

use crate::{
    project_root,
    release::plan::{self, BakeOutput, Build, Plan},
};

fn annotations(build: &Build, levels: &[&str]) -> Vec<String> {
    // buildx 0.13 takes one level per entry: `index,manifest:` in one entry becomes a literal key.
    levels
        .iter()
        .flat_map(|level| {
            build
                .annotations
                .iter()
                .map(move |(k, v)| format!("{level}:{k}={v}"))
        })
        .collect()
}

/// `index:key=value` for every annotation: what a merge puts on the index it assembles.
pub fn index_annotations(build: &Build) -> Vec<String> {
    annotations(build, &["index"])
}

/// What BuildKit attests for every platform image: provenance as the plan says (off explicitly, or buildx adds
/// its default), and an SBOM made by the plan's scanner.
pub fn attest(plan: &Plan) -> Vec<String> {
    let mut attest = vec![plan.attestations.attest_entry().to_owned()];
    if let Some(scanner) = &plan.sbom_scanner {
        attest.push(format!("type=sbom,generator={scanner}"));
    }
    attest
}

/// The bake definition for `lines` (a resumed release builds only what is missing).
pub fn bake_file(plan: &Plan, lines: &[PhpLine], output: &BakeOutput) -> anyhow::Result<Value> {
    let mut targets = Map::new();
    for build in plan.builds.iter().filter(|b| lines.contains(&b.php)) {
        let dockerfile = build.dockerfile.rsplit('/').next().unwrap_or("Dockerfile");
        let repository = build.pin.repository();
        let split_platform = output.platform();
        // OCI media types everywhere, so an index merged from single-platform builds has the bytes, and so the
        // digest, that one multi-platform build would push.
        let (platforms, levels, tags, output) = match output {
            BakeOutput::Pins => {
                (build.platforms.clone(), vec!["index", "manifest"], vec![build.pin.to_string()], "type=image,push=true,oci-mediatypes=true".to_owned())
            }
            BakeOutput::ByDigest { platform } => (
                vec![platform.to_owned()],
                vec!["manifest"],
                vec![],
                format!("type=image,name={repository},push-by-digest=true,name-canonical=true,push=true,oci-mediatypes=true"),
            ),
            BakeOutput::Staging { platform } => (
                vec![platform.to_owned()],
                vec!["manifest"],
                vec![plan::staging(build, platform)?.to_string()],
                "type=image,push=true,oci-mediatypes=true".to_owned(),
            ),
        };
        // The cache is per line, and per platform when one runner builds one platform, so that the runners of a
        // split release do not overwrite each other's. A registry that refuses it fails nothing: it is a speed-up.
        let (cache_from, cache_to) = match &build.cache {
            Some(cache) => {
                let cache = match split_platform {
                    None => cache.clone(),
                    Some(platform) => {
                        let tag: Tag = format!(
                            "{}-{}",
                            cache.tag().expect("a cache ref has a tag"),
                            platform.replace('/', "-")
                        )
                        .parse()
                        .context("the build cache tag of a split build")?;
                        cache.repository().tagged(&tag)
                    }
                };
                (
                    vec![format!("type=registry,ref={cache}")],
                    vec![format!(
                        "type=registry,ref={cache},mode=max,oci-mediatypes=true,ignore-error=true"
                    )],
                )
            }
            None => (vec![], vec![]),
        };
        targets.insert(
            build.target.clone(),
            json!({
                // Absolute: docker runs in whatever directory the xtask was started from.
                "context": project_root().join(&build.context),
                "dockerfile": dockerfile,
                "platforms": platforms,
                "args": build.build_args,
                "labels": build.labels,
                "annotations": annotations(build, &levels),
                "attest": attest(plan),
                "tags": tags,
                "output": [output],
                "cache-from": cache_from,
                "cache-to": cache_to,
            }),
        );
    }
    let names: Vec<&String> = targets.keys().collect();
    Ok(json!({ "group": { "default": { "targets": names } }, "target": targets }))
}
