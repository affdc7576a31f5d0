//! The bake file of a release: one target per PHP line, every platform, so one buildx invocation builds the
//! lines in parallel.

use serde_json::{json, Map, Value};
use stack_images::PhpLine;

use crate::{plan::Plan, project_root};

/// The bake definition for `lines` (a resumed release builds only what is missing).
pub fn bake_file(plan: &Plan, lines: &[PhpLine]) -> Value {
    let mut targets = Map::new();
    for build in plan.builds.iter().filter(|b| lines.contains(&b.php)) {
        let dockerfile = build.dockerfile.rsplit('/').next().unwrap_or("Dockerfile");
        // buildx 0.13 takes one level per entry: `index,manifest:` in one entry becomes a literal key.
        let annotations: Vec<String> = ["index", "manifest"]
            .iter()
            .flat_map(|level| {
                build
                    .annotations
                    .iter()
                    .map(move |(k, v)| format!("{level}:{k}={v}"))
            })
            .collect();
        targets.insert(
            build.target.clone(),
            json!({
                // Absolute: docker runs in whatever directory the xtask was started from.
                "context": project_root().join(&build.context),
                "dockerfile": dockerfile,
                "platforms": build.platforms,
                "args": build.build_args,
                "labels": build.labels,
                "annotations": annotations,
                "tags": [build.push],
            }),
        );
    }
    let names: Vec<&String> = targets.keys().collect();
    json!({ "group": { "default": { "targets": names } }, "target": targets })
}
