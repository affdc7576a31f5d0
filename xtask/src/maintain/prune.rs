//! `cargo xtask prune`: what a registry namespace holds that no tag and no release's notes reach any more, listed
//! with why and how much; deleted only with `--apply`, and only where the registry allows it.
//!
//! The registry API cannot list a repository's untagged manifests, so the candidates are what this project
//! knows it pushed aside: every manifest under a staging tag (`<image>-staging`, a split release's per-platform
//! builds, once the release's pin exists) and the by-digest pushes named in `--digests-file` files. What is kept,
//! per repository (manifests belong to a repository, not to a registry): every tag of `<image>`, every digest the
//! notes record for that repository (pins, moving tags, platforms, and the old digests a republish promised to
//! keep pullable), and every child of a kept index (its platform and attestation manifests). The plan is plain
//! data ([`Candidate`]); only `--apply` sends a `DELETE`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use anyhow::Context;
use clap::Args;
use stack_images::{
    bytes::human_size,
    matrix::MATRIX_PATH,
    registry::{Deletion, RegistryClient},
    Digest, ImageRef, Matrix, Namespace, ReleaseNotes, RepoName, Repository, Tag,
};
use xshell::Shell;

use crate::{
    display_path, maintain::notes, project_root, release::split::PlatformDigests, table,
    table::plural,
};

#[derive(Args, Debug)]
pub struct PruneCmd {
    /// The namespace to clean, canonical or mirror (default: the matrix's canonical registry)
    #[arg(long, value_name = "NAMESPACE")]
    registry: Option<Namespace>,
    /// Release notes directory: every digest in its vX.Y.Z.json files is kept
    #[arg(long, value_name = "DIR", default_value = "release-notes")]
    notes_dir: PathBuf,
    /// A digests file of `release --platform --push-by-digest`: its untagged pushes are candidates too
    #[arg(long, value_name = "FILE")]
    digests_file: Vec<PathBuf>,
    /// Image matrix file
    #[arg(long, value_name = "FILE", default_value = MATRIX_PATH)]
    matrix: PathBuf,
    /// Delete what is listed (without it, nothing is changed)
    #[arg(long)]
    apply: bool,
}

/// A manifest no tag and no notes reach, and why it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `repository@digest`.
    pub reference: ImageRef,
    pub why: String,
    /// The manifest's bytes, plus its config and layers for an image manifest.
    pub size: u64,
    /// Config and layer digests with their sizes, to total what is freed without counting a blob twice.
    pub blobs: Vec<(Digest, u64)>,
}

impl PruneCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let matrix = Matrix::load(&project_root().join(&self.matrix))?;
        let namespace = self
            .registry
            .clone()
            .unwrap_or_else(|| matrix.registries.canonical.clone());
        let notes_dir = project_root().join(&self.notes_dir);
        let notes = notes::all_in(&notes_dir)?;
        let mut pushed = Vec::new();
        for file in &self.digests_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading digests file {}", file.display()))?;
            let digests: PlatformDigests = serde_json::from_str(&text).with_context(|| {
                format!(
                    "in digests file {}: it is not what `release --platform --digests-file` writes",
                    file.display()
                )
            })?;
            pushed.extend(digests.images.into_iter().map(|i| (i.source, file.clone())));
        }
        let client = RegistryClient::from_env()?;
        let survey = Survey::new(&client, &namespace, &matrix.image, &matrix.platforms);
        let plan = survey.plan(&notes, &pushed)?;

        println!(
            "{namespace}: {} tag{} and the notes of {} release{} in {} keep {} manifest{}",
            plan.tags,
            plural(plan.tags),
            notes.len(),
            plural(notes.len()),
            display_path(&notes_dir),
            plan.kept,
            plural(plan.kept)
        );
        for warning in &plan.warnings {
            println!("warning: {warning}");
        }
        if plan.candidates.is_empty() {
            println!("nothing to prune");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = plan
            .candidates
            .iter()
            .map(|c| vec![c.reference.to_string(), human_size(c.size), c.why.clone()])
            .collect();
        print!("{}", table::render(&rows, "  "));
        println!(
            "{} manifest{}, {} with each blob counted once (a registry frees blob storage when its garbage \
             collector runs, and never a blob a kept image uses)",
            plan.candidates.len(),
            plural(plan.candidates.len()),
            human_size(plan.total())
        );
        if !self.apply {
            println!("dry run: nothing deleted; run again with --apply to delete these");
            return Ok(());
        }
        apply(&client, &plan.candidates)
    }
}

/// Deletes each candidate, parents first (an interrupted prune leaves no index without its children), reporting
/// a registry that refuses rather than stopping at it.
fn apply(client: &RegistryClient, candidates: &[Candidate]) -> anyhow::Result<()> {
    let mut deleted = 0;
    let mut refused = Vec::new();
    let mut failed = Vec::new();
    for candidate in candidates {
        match client.delete_manifest(&candidate.reference) {
            Ok(Deletion::Deleted) => {
                deleted += 1;
                println!("deleted {}", candidate.reference);
            }
            Ok(Deletion::Gone) => println!("already gone: {}", candidate.reference),
            Ok(Deletion::Refused(cause)) => {
                println!("not deleted {}: {cause}", candidate.reference);
                refused.push(candidate.reference.to_string());
            }
            Err(error) => {
                println!("failed {}: {error}", candidate.reference);
                failed.push(format!("{}: {error}", candidate.reference));
            }
        }
    }
    println!("deleted {deleted} of {}", candidates.len());
    if !refused.is_empty() {
        println!(
            "{} refused by the registry (it does not allow deleting through its API; GHCR and Docker Hub delete \
             package versions in their web interface or API instead)",
            refused.len()
        );
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} could not be deleted:\n  {}\nrun `cargo xtask prune --apply` again: what is already deleted \
             is not listed again",
            failed.len(),
            candidates.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// What a prune would delete, and what it kept.
#[derive(Debug, Default)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    /// Tags in the image's repository.
    pub tags: usize,
    /// Manifests kept, children included.
    pub kept: usize,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Bytes of every distinct blob and manifest listed.
    pub fn total(&self) -> u64 {
        let manifests: u64 = self
            .candidates
            .iter()
            .map(|c| c.size - c.blobs.iter().map(|(_, s)| s).sum::<u64>())
            .sum();
        let blobs: BTreeMap<&Digest, u64> = self
            .candidates
            .iter()
            .flat_map(|c| c.blobs.iter().map(|(d, s)| (d, *s)))
            .collect();
        manifests + blobs.values().sum::<u64>()
    }
}

/// One namespace's repositories of the image, read through the client.
struct Survey<'a> {
    client: &'a RegistryClient,
    image: Repository,
    staging: Repository,
    platforms: &'a [String],
}

/// A manifest as read: its children (for an index) and sizes.
struct Read {
    children: Vec<Digest>,
    size: u64,
    blobs: Vec<(Digest, u64)>,
}

impl<'a> Survey<'a> {
    fn new(
        client: &'a RegistryClient,
        namespace: &Namespace,
        image: &RepoName,
        platforms: &'a [String],
    ) -> Survey<'a> {
        let staging: RepoName = format!("{image}-staging")
            .parse()
            .expect("an image name with -staging is a repository name");
        Survey {
            client,
            image: namespace.repository(image),
            staging: namespace.repository(&staging),
            platforms,
        }
    }

    /// Tags of a repository; one the registry does not know (or, as GHCR and Docker Hub say it, will not show)
    /// has none.
    fn tags(&self, repository: &Repository) -> anyhow::Result<Vec<Tag>> {
        match self.client.list_tags(repository) {
            Ok(tags) => Ok(tags),
            Err(error) if error.is_absent() => Ok(Vec::new()),
            Err(error) => Err(error.into()),
        }
    }

    fn read(&self, reference: &ImageRef) -> anyhow::Result<Option<Read>> {
        let manifest = match self.client.get_manifest(reference) {
            Ok(manifest) => manifest,
            Err(error) if error.is_absent() => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let json: serde_json::Value = serde_json::from_slice(&manifest.bytes)
            .with_context(|| format!("{reference} is not a JSON manifest"))?;
        let digest_at = |value: &serde_json::Value| -> anyhow::Result<(Digest, u64)> {
            let digest = value["digest"]
                .as_str()
                .with_context(|| format!("{reference}: a descriptor without a digest"))?;
            let digest = Digest::parse(digest).with_context(|| format!("in {reference}"))?;
            Ok((digest, value["size"].as_u64().unwrap_or(0)))
        };
        let mut read = Read {
            children: Vec::new(),
            size: manifest.bytes.len() as u64,
            blobs: Vec::new(),
        };
        if let Some(manifests) = json["manifests"].as_array() {
            for child in manifests {
                read.children.push(digest_at(child)?.0);
            }
        } else {
            if json["config"].is_object() {
                read.blobs.push(digest_at(&json["config"])?);
            }
            for layer in json["layers"].as_array().into_iter().flatten() {
                read.blobs.push(digest_at(layer)?);
            }
            read.size += read.blobs.iter().map(|(_, s)| s).sum::<u64>();
        }
        Ok(Some(read))
    }

    /// Everything reachable in `repository` from `roots`: the roots and, through every index, its children.
    fn closure(
        &self,
        repository: &Repository,
        roots: impl IntoIterator<Item = (Digest, String)>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<BTreeSet<Digest>> {
        let mut kept = BTreeSet::new();
        let mut queue: Vec<(Digest, String)> = roots.into_iter().collect();
        while let Some((digest, from)) = queue.pop() {
            if !kept.insert(digest.clone()) {
                continue;
            }
            match self.read(&repository.at(&digest))? {
                Some(read) => queue.extend(read.children.into_iter().map(|c| (c, from.clone()))),
                None => warnings.push(format!("{repository}@{digest} ({from}) is not served")),
            }
        }
        Ok(kept)
    }

    fn plan(&self, notes: &[ReleaseNotes], pushed: &[(ImageRef, PathBuf)]) -> anyhow::Result<Plan> {
        let mut plan = Plan::default();
        let image_tags = self.tags(&self.image)?;
        plan.tags = image_tags.len();

        // Roots of the image's repository: its tags, then what the notes record for it.
        let mut roots = Vec::new();
        for tag in &image_tags {
            let reference = self.image.tagged(tag);
            match self.client.head_manifest(&reference) {
                Ok(head) => roots.push((head.digest, format!("tag {tag}"))),
                // Deleted between the listing and now: nothing to keep.
                Err(error) if error.is_absent() => {}
                Err(error) => return Err(error.into()),
            }
        }
        let mut staging_roots = Vec::new();
        for notes in notes {
            for (repository, digest) in recorded(notes) {
                let from = format!("notes of {}", notes.version);
                if repository == self.image {
                    roots.push((digest, from));
                } else if repository == self.staging {
                    staging_roots.push((digest, from));
                }
            }
        }
        // Staging tags: a merged one is a candidate; one whose release has no pin yet is kept, children and all.
        let pins: BTreeSet<&Tag> = image_tags.iter().collect();
        let mut merged = Vec::new();
        for tag in self.tags(&self.staging)? {
            let Some(pin) = self.pin_of(&tag) else {
                plan.warnings.push(format!(
                    "{}:{tag} is not a staging tag of this project: left alone",
                    self.staging
                ));
                if let Some(digest) = self.digest_of(&self.staging.tagged(&tag))? {
                    staging_roots.push((digest, format!("staging tag {tag}")));
                }
                continue;
            };
            let Some(digest) = self.digest_of(&self.staging.tagged(&tag))? else {
                continue;
            };
            if pins.contains(&pin) {
                merged.push((tag, pin, digest));
            } else {
                plan.warnings.push(format!(
                    "{}:{tag} is kept: {}:{pin} does not exist yet (a split release not merged)",
                    self.staging, self.image
                ));
                staging_roots.push((digest, format!("staging tag {tag}")));
            }
        }
        let kept = self.closure(&self.image, roots, &mut plan.warnings)?;
        let kept_staging = self.closure(&self.staging, staging_roots, &mut plan.warnings)?;
        plan.kept = kept.len() + kept_staging.len();

        // Candidates: merged staging builds, and untagged pushes from digests files.
        let mut seen = BTreeSet::new();
        for (tag, pin, digest) in merged {
            self.add(
                &self.staging,
                digest,
                format!("staging tag {tag} (merged into {pin})"),
                &kept_staging,
                &mut seen,
                &mut plan,
            )?;
        }
        for (source, file) in pushed {
            let Some(digest) = source.digest() else {
                continue;
            };
            let repository = source.repository();
            let kept = if *repository == self.image {
                &kept
            } else if *repository == self.staging {
                &kept_staging
            } else {
                continue;
            };
            self.add(
                repository,
                digest.clone(),
                format!(
                    "pushed by digest ({}), in no tag or notes",
                    display_path(file)
                ),
                kept,
                &mut seen,
                &mut plan,
            )?;
        }
        Ok(plan)
    }

    /// Lists `digest` in `repository` and, if it is an index, its children, unless kept or already listed.
    fn add(
        &self,
        repository: &Repository,
        digest: Digest,
        why: String,
        kept: &BTreeSet<Digest>,
        seen: &mut BTreeSet<(Repository, Digest)>,
        plan: &mut Plan,
    ) -> anyhow::Result<()> {
        if kept.contains(&digest) || !seen.insert((repository.clone(), digest.clone())) {
            return Ok(());
        }
        let reference = repository.at(&digest);
        let Some(read) = self.read(&reference)? else {
            return Ok(());
        };
        plan.candidates.push(Candidate {
            reference,
            why,
            size: read.size,
            blobs: read.blobs,
        });
        for child in read.children {
            self.add(
                repository,
                child,
                format!("child of {}", digest.short()),
                kept,
                seen,
                plan,
            )?;
        }
        Ok(())
    }

    /// The digest a tag names now; `None` when it went meanwhile.
    fn digest_of(&self, reference: &ImageRef) -> anyhow::Result<Option<Digest>> {
        match self.client.head_manifest(reference) {
            Ok(head) => Ok(Some(head.digest)),
            Err(error) if error.is_absent() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// The pin a staging tag belongs to: `v2.0.0-php-8.4` for `v2.0.0-php-8.4-linux-amd64`.
    fn pin_of(&self, staging: &Tag) -> Option<Tag> {
        self.platforms.iter().find_map(|platform| {
            let suffix = format!("-{}", platform.replace('/', "-"));
            staging.as_str().strip_suffix(&suffix)?.parse().ok()
        })
    }
}

/// Every digest the notes record, with the repository it is in: pins and moving tags with their platforms, every
/// image in the canonical repository and each mirror's, and both sides of each republish (the old digests stay
/// pullable: that is a republish's promise).
fn recorded(notes: &ReleaseNotes) -> Vec<(Repository, Digest)> {
    let mut all = Vec::new();
    for reference in &notes.references {
        let repository = reference.reference.repository().clone();
        all.push((repository.clone(), reference.digest.clone()));
        for platform in &reference.platforms {
            all.push((repository.clone(), platform.digest.clone()));
        }
    }
    for namespace in std::iter::once(&notes.canonical).chain(&notes.mirrors) {
        let repository = namespace.repository(&notes.image);
        for image in &notes.images {
            all.push((repository.clone(), image.digest.clone()));
            for platform in &image.platforms {
                all.push((repository.clone(), platform.digest.clone()));
            }
        }
    }
    for republish in &notes.republished {
        for change in &republish.changes {
            let repository = change.reference.repository().clone();
            all.push((repository.clone(), change.old.clone()));
            all.push((repository, change.new.clone()));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_pin(staging: &str, expected: Option<&str>) {
        let client = RegistryClient::new(Default::default());
        let namespace: Namespace = "127.0.0.1:5000/stack".parse().unwrap();
        let platforms = vec!["linux/amd64".to_owned(), "linux/arm64/v8".to_owned()];
        let survey = Survey::new(&client, &namespace, &"php-fpm".parse().unwrap(), &platforms);
        assert_eq!(
            survey
                .pin_of(&staging.parse().unwrap())
                .map(|t| t.to_string())
                .as_deref(),
            expected
        );
    }

    #[test]
    fn a_staging_tag_names_its_pin() {
        check_pin("v2.0.0-php-8.4-linux-amd64", Some("v2.0.0-php-8.4"));
        check_pin("v2.0.0-php-8.4-linux-arm64-v8", Some("v2.0.0-php-8.4"));
        check_pin("v2.0.0-php-8.4-linux-arm64", None);
        check_pin("v2.0.0-php-8.4", None);
        check_pin("latest", None);
    }

    #[test]
    fn the_total_counts_a_shared_blob_once() {
        let blob = |n: u8, size| (Digest::of(&[n]), size);
        let candidate = |n: u8, blobs: Vec<(Digest, u64)>| Candidate {
            reference: format!("127.0.0.1:5000/s/p@{}", Digest::of(&[100 + n]))
                .parse()
                .unwrap(),
            why: String::new(),
            size: 10 + blobs.iter().map(|(_, s)| s).sum::<u64>(),
            blobs,
        };
        let plan = Plan {
            candidates: vec![
                candidate(1, vec![blob(1, 100), blob(2, 1000)]),
                candidate(2, vec![blob(3, 100), blob(2, 1000)]),
                candidate(3, vec![]),
            ],
            ..Plan::default()
        };
        assert_eq!(plan.total(), 30 + 100 + 1000 + 100);
    }
}
