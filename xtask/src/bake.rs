//! The bake file of a release: one target per PHP line, so one buildx invocation builds the lines in parallel;
//! either every platform pushed as the line's pin, or one platform pushed for a later merge (release on
//! native runners, one per platform).

use serde_json::{json, Map, Value};
use stack_images::PhpLine;

use crate::{
    plan::{Build, Plan},
    project_root,
};

/// Where a build goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    /// Every platform, pushed to the line's canonical pin.
    Pin,
    /// One platform, pushed untagged by digest to the canonical repository (needs a builder that can: not the
    /// engine's own `docker` driver).
    ByDigest(&'a str),
    /// One platform, pushed to `<canonical repository>-staging:<pin>-<os>-<arch>`: what the `docker` driver can do.
    Staging(&'a str),
}

/// The staging reference of one line and platform.
pub fn staging_tag(build: &Build, platform: &str) -> String {
    let (repository, pin) = build.push.rsplit_once(':').expect("a pin has a tag");
    format!("{repository}-staging:{pin}-{}", platform.replace('/', "-"))
}

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

/// The bake definition for `lines` (a resumed release builds only what is missing).
pub fn bake_file(plan: &Plan, lines: &[PhpLine], output: Output) -> Value {
    let mut targets = Map::new();
    for build in plan.builds.iter().filter(|b| lines.contains(&b.php)) {
        let dockerfile = build.dockerfile.rsplit('/').next().unwrap_or("Dockerfile");
        let repository = build
            .push
            .rsplit_once(':')
            .map(|(r, _)| r)
            .unwrap_or(&build.push);
        // OCI media types everywhere, so an index merged from single-platform builds has the bytes, and so the
        // digest, that one multi-platform build would push.
        let (platforms, levels, tags, output) = match output {
            Output::Pin => {
                (build.platforms.clone(), vec!["index", "manifest"], vec![build.push.clone()], "type=image,push=true,oci-mediatypes=true".to_owned())
            }
            Output::ByDigest(platform) => (
                vec![platform.to_owned()],
                vec!["manifest"],
                vec![],
                format!("type=image,name={repository},push-by-digest=true,name-canonical=true,push=true,oci-mediatypes=true"),
            ),
            Output::Staging(platform) => (
                vec![platform.to_owned()],
                vec!["manifest"],
                vec![staging_tag(build, platform)],
                "type=image,push=true,oci-mediatypes=true".to_owned(),
            ),
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
                "tags": tags,
                "output": [output],
            }),
        );
    }
    let names: Vec<&String> = targets.keys().collect();
    json!({ "group": { "default": { "targets": names } }, "target": targets })
}
