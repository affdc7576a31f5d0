//! `20i prune`: frees docker's local store of this launcher's PHP-FPM images of other releases and of stale local
//! builds (`20i-local/…` built from another build context). A dry run by default, listing what and how much;
//! `--apply` removes. Never an image a container uses (running or stopped: docker would refuse, and a stopped
//! stack is started again), never the image the current configuration selects.
//!
//! What is removed is decided by [`judge`], a pure function of the image list, the containers and the
//! configuration; the docker calls around it only gather those facts and remove tags.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use stack_images::{
    bytes::human_size, docker::DockerCommand, Digest, Matrix, PhpLine, ReleaseVersion,
};

use crate::{
    config::{Config, LOCAL_NAMESPACE},
    engine::Engine,
    selection::LABEL_CONTEXT,
};

/// One tag in docker's local store, with what decides its fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalImage {
    /// `repository:tag`, as docker lists it.
    pub reference: String,
    pub repository: String,
    pub tag: String,
    /// The image ID (`sha256:…`), shared by every tag of the same image.
    pub id: String,
    pub size: u64,
    /// The build context digest a local build was labelled with.
    pub context: Option<String>,
}

/// A container and the image it was created from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub image_id: String,
    /// The reference it was started with.
    pub image: String,
    pub running: bool,
}

/// What this configuration keeps: its release, its selected image, its current build context.
#[derive(Clone, Debug)]
pub struct Current {
    /// `<registry>/php-fpm` and each mirror's.
    pub repositories: Vec<String>,
    /// `20i-local/php-fpm`.
    pub local_repository: String,
    pub release: ReleaseVersion,
    pub selected: String,
    /// The build context's digest now; `None` without a Dockerfile there.
    pub context: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Remove(String),
    Keep(String),
    /// Not this launcher's image.
    NotOurs,
}

/// The release a pin tag names: `v2.0.0` for `v2.0.0-php-8.4`.
fn release_of(tag: &str) -> Option<ReleaseVersion> {
    let (release, line) = tag.rsplit_once("-php-")?;
    line.parse::<PhpLine>().ok()?;
    release.parse().ok()
}

/// Whether `image` goes, and why.
pub fn judge(image: &LocalImage, containers: &[Container], current: &Current) -> Verdict {
    let ours_prebuilt = current.repositories.contains(&image.repository);
    let ours_local = image.repository == current.local_repository;
    if !ours_prebuilt && !ours_local {
        return Verdict::NotOurs;
    }
    if image.reference == current.selected {
        return Verdict::Keep("the current configuration selects it (20i image)".to_owned());
    }
    if let Some(container) = containers
        .iter()
        .find(|c| c.image_id == image.id || c.image == image.reference)
    {
        let state = if container.running {
            "running"
        } else {
            "stopped"
        };
        return Verdict::Keep(format!("container {} ({state}) uses it", container.name));
    }
    if ours_local {
        let label = image.context.as_deref();
        let now = current.context.as_ref().map(Digest::as_str);
        return match (label, now) {
            (Some(label), Some(now)) if label == now => {
                Verdict::Keep("built from the current build context".to_owned())
            }
            (Some(label), _) => Verdict::Remove(format!(
                "local build of another build context ({})",
                &label[..label.len().min(19)]
            )),
            (None, _) => Verdict::Remove("local build without a build context label".to_owned()),
        };
    }
    match release_of(&image.tag) {
        Some(release) if release == current.release => {
            Verdict::Keep("this release (another PHP line, kept for PHP_VERSION)".to_owned())
        }
        Some(release) => Verdict::Remove(format!(
            "release {release}; this launcher uses {}",
            current.release
        )),
        None => Verdict::Keep("not a release pin tag".to_owned()),
    }
}

/// What `20i prune` does, or would do.
pub fn run(config: &Config, apply: bool) -> anyhow::Result<()> {
    let engine = Engine::new()?;
    let image = Matrix::embedded().image;
    let current = Current {
        repositories: std::iter::once(&config.registry)
            .chain(&config.mirrors)
            .map(|ns| ns.repository(&image).to_string())
            .collect(),
        local_repository: format!("{LOCAL_NAMESPACE}/{image}"),
        release: config.release.clone(),
        selected: config.selected_reference(),
        context: crate::acquire::context_digest(&config.build_context)?.map(|(c, _)| c),
    };
    let images = local_images(&engine, &current)?;
    let containers = containers(&engine)?;

    let mut removals = Vec::new();
    for image in &images {
        match judge(image, &containers, &current) {
            Verdict::Remove(why) => removals.push((image, why)),
            Verdict::Keep(why) => println!("keep    {}  {why}", image.reference),
            Verdict::NotOurs => {}
        }
    }
    if removals.is_empty() {
        println!("nothing to remove");
        return Ok(());
    }
    // An image's space is freed when its last tag goes: count each image once, and only when all its tags go.
    let removed: BTreeSet<&str> = removals.iter().map(|(i, _)| i.reference.as_str()).collect();
    let mut freed: BTreeMap<&str, u64> = BTreeMap::new();
    for image in &images {
        freed.insert(&image.id, image.size);
    }
    for image in &images {
        if !removed.contains(image.reference.as_str()) {
            freed.remove(image.id.as_str());
        }
    }
    for (image, why) in &removals {
        println!(
            "remove  {}  {}  {why}",
            image.reference,
            human_size(image.size)
        );
    }
    println!(
        "{} tag{}, {} freed",
        removals.len(),
        if removals.len() == 1 { "" } else { "s" },
        human_size(freed.values().sum())
    );
    if !apply {
        println!("dry run: nothing removed; run `20i prune --apply` to remove these");
        return Ok(());
    }
    // By reference, never forced: only these tags go, and docker refuses an image a container started since uses.
    let mut args = vec!["image".to_owned(), "rm".to_owned(), "--".to_owned()];
    args.extend(removals.iter().map(|(image, _)| image.reference.clone()));
    engine.output(&DockerCommand::new(args)).map_err(|error| {
        anyhow::anyhow!(
            "removing the images: {error}\nrun `20i prune` again to see what is left (an image a container started \
             meanwhile stays)"
        )
    })?;
    for (image, _) in &removals {
        println!("removed {}", image.reference);
    }
    Ok(())
}

/// Tags of this launcher's repositories in the local store, with their IDs, sizes and context labels.
fn local_images(engine: &Engine, current: &Current) -> anyhow::Result<Vec<LocalImage>> {
    // Filtered by docker (each `reference=` is one more match): listing a large store in full takes seconds.
    let mut args = vec![
        "image".to_owned(),
        "ls".to_owned(),
        "--no-trunc".to_owned(),
        "--format".to_owned(),
        "{{.Repository}}\t{{.Tag}}".to_owned(),
    ];
    for repository in current
        .repositories
        .iter()
        .chain(std::iter::once(&current.local_repository))
    {
        args.extend(["--filter".to_owned(), format!("reference={repository}:*")]);
    }
    let listing = engine
        .output(&DockerCommand::new(args))
        .context("listing the local images: is the Docker daemon running?")?;
    let listing = String::from_utf8_lossy(&listing);
    let mut references = Vec::new();
    for line in listing.lines() {
        let Some((repository, tag)) = line.split_once('\t') else {
            continue;
        };
        let ours = current.repositories.iter().any(|r| r == repository)
            || repository == current.local_repository;
        // Untagged entries (`<none>`) are not this launcher's to judge.
        let entry = (repository.to_owned(), tag.to_owned());
        if ours && tag != "<none>" && !references.contains(&entry) {
            references.push(entry);
        }
    }
    if references.is_empty() {
        return Ok(Vec::new());
    }
    let inspected = engine
        .output(&DockerCommand::inspect_images(
            references.iter().map(|(r, t)| format!("{r}:{t}")),
        ))
        .context("inspecting the local images")?;
    let mut images = Vec::new();
    for ((repository, tag), line) in references
        .into_iter()
        .zip(String::from_utf8_lossy(&inspected).lines())
    {
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("reading `docker image inspect` of {repository}:{tag}"))?;
        images.push(LocalImage {
            reference: format!("{repository}:{tag}"),
            repository,
            tag,
            id: value["Id"].as_str().unwrap_or_default().to_owned(),
            size: value["Size"].as_u64().unwrap_or(0),
            context: value["Config"]["Labels"][LABEL_CONTEXT]
                .as_str()
                .map(str::to_owned),
        });
    }
    Ok(images)
}

/// Every container, running or not, with its image.
fn containers(engine: &Engine) -> anyhow::Result<Vec<Container>> {
    let ids = engine
        .output(&DockerCommand::new([
            "container",
            "ls",
            "--all",
            "--quiet",
            "--no-trunc",
        ]))
        .context("listing the containers")?;
    let ids: Vec<String> = String::from_utf8_lossy(&ids)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec![
        "container".to_owned(),
        "inspect".to_owned(),
        "--format".to_owned(),
        "{{json .Name}}\t{{json .Image}}\t{{json .Config.Image}}\t{{json .State.Running}}"
            .to_owned(),
        "--".to_owned(),
    ];
    args.extend(ids);
    // A container removed between the listing and the inspection makes docker fail: list again then.
    let inspected = match engine.output(&DockerCommand::new(args)) {
        Ok(out) => out,
        Err(_) => return containers_once_more(engine),
    };
    parse_containers(&String::from_utf8_lossy(&inspected))
}

fn containers_once_more(engine: &Engine) -> anyhow::Result<Vec<Container>> {
    let out = engine
        .output(&DockerCommand::new([
            "container",
            "ls",
            "--all",
            "--no-trunc",
            "--format",
            "{{json .Names}}\t{{json .Image}}\t{{json .Image}}\t{{json .State}}",
        ]))
        .context("listing the containers")?;
    // Without the inspection there is no image ID: the reference they were started with is what protects.
    let text = String::from_utf8_lossy(&out)
        .lines()
        .map(|line| match line.rsplit_once('\t') {
            Some((rest, state)) => format!("{rest}\t{}", state == "\"running\""),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    parse_containers(&text)
}

fn parse_containers(text: &str) -> anyhow::Result<Vec<Container>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<serde_json::Value> = line
                .split('\t')
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading docker's container line `{line}`"))?;
            let text = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            Ok(Container {
                name: text(0).trim_start_matches('/').to_owned(),
                image_id: text(1),
                image: text(2),
                running: fields.get(3).and_then(|v| v.as_bool()).unwrap_or(true),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Current {
        Current {
            repositories: vec![
                "ghcr.io/20i-stack/php-fpm".into(),
                "docker.io/20istack/php-fpm".into(),
            ],
            local_repository: "20i-local/php-fpm".into(),
            release: "v2.0.0".parse().unwrap(),
            selected: "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5".into(),
            context: Some(Digest::of(b"context")),
        }
    }

    fn image(reference: &str, context: Option<&[u8]>) -> LocalImage {
        let (repository, tag) = reference.rsplit_once(':').unwrap();
        LocalImage {
            reference: reference.into(),
            repository: repository.into(),
            tag: tag.into(),
            id: Digest::of(reference.as_bytes()).to_string(),
            size: 1,
            context: context.map(|c| Digest::of(c).to_string()),
        }
    }

    #[track_caller]
    fn check(reference: &str, context: Option<&[u8]>, containers: &[Container], expected: &str) {
        let verdict = judge(&image(reference, context), containers, &current());
        let text = match verdict {
            Verdict::Remove(why) => format!("remove: {why}"),
            Verdict::Keep(why) => format!("keep: {why}"),
            Verdict::NotOurs => "not ours".to_owned(),
        };
        assert_eq!(text, expected, "{reference}");
    }

    fn uses(reference: &str, running: bool) -> Container {
        Container {
            name: "site-php-fpm-1".into(),
            image_id: Digest::of(reference.as_bytes()).to_string(),
            image: "something-else".into(),
            running,
        }
    }

    #[test]
    fn verdicts() {
        let c: &[u8] = b"context";
        check(
            "ghcr.io/20i-stack/php-fpm:v1.9.0-php-8.5",
            None,
            &[],
            "remove: release v1.9.0; this launcher uses v2.0.0",
        );
        check(
            "docker.io/20istack/php-fpm:v2.1.0-rc.1-php-8.4",
            None,
            &[],
            "remove: release v2.1.0-rc.1; this launcher uses v2.0.0",
        );
        check(
            "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5",
            None,
            &[],
            "keep: the current configuration selects it (20i image)",
        );
        check(
            "ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.3",
            None,
            &[],
            "keep: this release (another PHP line, kept for PHP_VERSION)",
        );
        check(
            "ghcr.io/20i-stack/php-fpm:latest",
            None,
            &[],
            "keep: not a release pin tag",
        );
        check(
            "ghcr.io/20i-stack/php-fpm:php-8.4",
            None,
            &[],
            "keep: not a release pin tag",
        );
        check(
            "ghcr.io/20i-stack/php-fpm:v1.9.0-php-8.5",
            None,
            &[uses("ghcr.io/20i-stack/php-fpm:v1.9.0-php-8.5", true)],
            "keep: container site-php-fpm-1 (running) uses it",
        );
        check(
            "ghcr.io/20i-stack/php-fpm:v1.9.0-php-8.5",
            None,
            &[uses("ghcr.io/20i-stack/php-fpm:v1.9.0-php-8.5", false)],
            "keep: container site-php-fpm-1 (stopped) uses it",
        );
        check(
            "20i-local/php-fpm:v2.0.0-php-8.5",
            Some(c),
            &[],
            "keep: built from the current build context",
        );
        check(
            "20i-local/php-fpm:v1.0.0-php-8.2",
            Some(c),
            &[],
            "keep: built from the current build context",
        );
        check(
            "20i-local/php-fpm:v2.0.0-php-8.5",
            Some(b"old"),
            &[],
            &format!(
                "remove: local build of another build context ({})",
                &Digest::of(b"old").as_str()[..19]
            ),
        );
        check(
            "20i-local/php-fpm:v2.0.0-php-8.5",
            None,
            &[],
            "remove: local build without a build context label",
        );
        check(
            "20i-local/php-fpm:v2.0.0-php-8.5",
            Some(b"old"),
            &[uses("20i-local/php-fpm:v2.0.0-php-8.5", true)],
            "keep: container site-php-fpm-1 (running) uses it",
        );
        check(
            "ghcr.io/other/php-fpm:v1.0.0-php-8.5",
            None,
            &[],
            "not ours",
        );
        check("20i-local/nginx:v1.0.0-php-8.5", None, &[], "not ours");
    }

    #[test]
    fn the_selected_local_build_is_kept_even_when_stale() {
        let mut current = current();
        current.selected = "20i-local/php-fpm:v2.0.0-php-8.5".into();
        assert_eq!(
            judge(
                &image("20i-local/php-fpm:v2.0.0-php-8.5", Some(b"old")),
                &[],
                &current
            ),
            Verdict::Keep("the current configuration selects it (20i image)".into())
        );
    }

    #[test]
    fn container_lines_are_read() {
        let parsed = parse_containers(
            "\"/site-php-1\"\t\"sha256:abc\"\t\"ghcr.io/x/php-fpm:v1-php-8.5\"\tfalse\n\n",
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![Container {
                name: "site-php-1".into(),
                image_id: "sha256:abc".into(),
                image: "ghcr.io/x/php-fpm:v1-php-8.5".into(),
                running: false
            }]
        );
    }
}
