//! `cargo xtask prune` against real registries after a split release (`--platform` twice, then `merge`) and a
//! republish: it lists exactly what no tag and no notes reach (the staging builds and their children), and after
//! `--apply` every tag and every digest of every release's notes still serves the bytes it names.

use std::collections::BTreeSet;

use stack_images::{
    registry::{Policy, RegistryClient},
    Digest, ImageRef, Repository,
};
use testkit::{fixtures, Fault, FaultProxy, Registry, RequestKind};

use crate::setup::{assert_ok, with_flag, Setup};

/// The repository's matrix with two lines, 8.5 the default: a split release of two lines is enough here.
fn two_line_matrix(setup: &Setup) -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/matrix.toml");
    let text = std::fs::read_to_string(root)?;
    let head = &text[..text.find("[[lines]]").expect("the matrix lists lines")];
    let matrix = format!("{head}[[lines]]\nphp = \"8.4\"\n\n[[lines]]\nphp = \"8.5\"\n");
    let path = setup.dir.path().join("matrix.toml");
    std::fs::write(&path, matrix)?;
    Ok(path)
}

/// `repository@digest` of every row `prune` listed.
fn listed(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|r| r.contains("@sha256:"))
        .map(str::to_owned)
        .collect()
}

/// The digest and, for an index, its children, in one repository.
fn with_children(client: &RegistryClient, reference: &ImageRef, into: &mut BTreeSet<String>) {
    let manifest = client.get_manifest(reference).unwrap();
    let repository = reference.repository();
    into.insert(repository.at(&manifest.digest).to_string());
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    for child in json["manifests"].as_array().into_iter().flatten() {
        let digest = Digest::parse(child["digest"].as_str().unwrap()).unwrap();
        with_children(client, &repository.at(&digest), into);
    }
}

/// Every `(reference, digest)` the notes record: tags, platforms, images in each namespace, both sides of a
/// republish.
fn notes_digests(notes: &serde_json::Value) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for reference in notes["references"].as_array().unwrap() {
        let name = reference["ref"].as_str().unwrap();
        let repository = &name[..name.rfind(':').unwrap()];
        all.push((
            name.to_owned(),
            reference["digest"].as_str().unwrap().to_owned(),
        ));
        for platform in reference["platforms"].as_array().unwrap() {
            let digest = platform["digest"].as_str().unwrap();
            all.push((format!("{repository}@{digest}"), digest.to_owned()));
        }
    }
    for change in notes["republished"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["changes"].as_array().unwrap())
    {
        let name = change["ref"].as_str().unwrap();
        let repository = &name[..name.rfind(':').unwrap()];
        for side in ["old", "new"] {
            let digest = change[side].as_str().unwrap();
            all.push((format!("{repository}@{digest}"), digest.to_owned()));
        }
    }
    all
}

#[test]
fn prune_lists_only_unreachable_manifests_and_apply_keeps_every_tag_and_notes_digest(
) -> anyhow::Result<()> {
    let mut setup = Setup::new()?;
    setup.matrix = Some(two_line_matrix(&setup)?);
    let dir = setup.dir.path().to_owned();
    let run = |args: Vec<String>| {
        assert_ok(&setup.xtask(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };

    // A split release: one run per platform pushing to staging tags, then the merge.
    let mut files = Vec::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let slug = platform.replace('/', "-");
        let file = dir
            .join(format!("digests-{slug}.json"))
            .display()
            .to_string();
        let mut args = setup.release_args("v2.0.0", "v1.0.0", &[]);
        args = with_flag(
            args,
            "--work-dir",
            &dir.join(format!("work-{slug}")).display().to_string(),
        );
        args.extend([
            "--platform".into(),
            platform.into(),
            "--digests-file".into(),
            file.clone(),
        ]);
        run(args);
        files.push(file);
    }
    let mut merge = setup.release_args("v2.0.0", "v1.0.0", &[]);
    merge = with_flag(
        merge,
        "--work-dir",
        &dir.join("work-merge").display().to_string(),
    );
    merge.insert(1, "merge".into());
    for file in &files {
        merge.extend(["--digests-file".into(), file.clone()]);
    }
    run(merge);

    // Then upstream rebuilds 8.5's base, and v2.0.0 is republished on it.
    let source = format!("{}/fixtures/php-standin", setup.canonical.host());
    fixtures::push_busybox(
        &format!("{source}:8.5-fpm-alpine"),
        "LABEL rebuilt=1\n",
        false,
    )?;
    let lock = setup.lock().display().to_string();
    assert_ok(&setup.xtask(&["bases", "refresh", "--lock", &lock]));
    let mut republish =
        setup.release_args("v2.0.0", "v1.0.0,v2.0.0", &["--reason", "base rebuilt"]);
    republish[0] = "republish".into();
    run(republish);

    let client =
        RegistryClient::new(Policy::default()).with_docker_config(setup.docker_config.path());
    let staging: Repository = format!("{}/php-fpm-staging", setup.canonical_ns()).parse()?;
    let staging_tags = client.list_tags(&staging)?;
    assert_eq!(
        staging_tags.len(),
        2 * 2,
        "a staging tag per line and platform"
    );
    let mut expected = BTreeSet::new();
    for tag in &staging_tags {
        with_children(&client, &staging.tagged(tag), &mut expected);
    }
    let tags_before = setup.all_tags();
    assert!(tags_before.iter().all(|(_, digest)| digest.is_some()));

    // The dry run lists exactly the staging builds and their children, and deletes nothing.
    let canonical = setup.canonical_ns();
    let dry = setup.prune(&canonical, &[]);
    assert_eq!(listed(&dry), expected, "{dry}");
    assert!(
        dry.contains("staging tag v2.0.0-php-8.4-linux-amd64 (merged into v2.0.0-php-8.4)"),
        "{dry}"
    );
    assert!(dry.contains("dry run: nothing deleted"), "{dry}");
    assert_eq!(client.list_tags(&staging)?.len(), 4);
    // The mirror has no staging: nothing there is unreachable.
    let mirror = setup.prune(&setup.mirror_ns(), &[]);
    assert!(mirror.contains("nothing to prune"), "{mirror}");

    let applied = setup.prune(&canonical, &["--apply"]);
    assert!(
        applied.contains(&format!("deleted {} of {}", expected.len(), expected.len())),
        "{applied}"
    );
    assert!(client
        .list_tags(&staging)
        .map(|t| t.is_empty())
        .unwrap_or(true));
    let again = setup.prune(&canonical, &[]);
    assert!(again.contains("nothing to prune"), "{again}");

    // Every tag serves what it served before, and every digest the notes record still serves its bytes.
    assert_eq!(setup.all_tags(), tags_before);
    let notes = crate::setup::notes(&setup.notes_dir(), "v2.0.0");
    let recorded = notes_digests(&notes);
    assert!(recorded.len() > 40, "{}", recorded.len());
    for (reference, digest) in recorded {
        assert_eq!(
            setup
                .skopeo_digest(&reference)
                .map(|d| d.to_string())
                .as_deref(),
            Some(digest.as_str()),
            "{reference}"
        );
    }
    Ok(())
}

#[test]
fn a_registry_that_refuses_deletes_is_reported_and_an_unmerged_staging_build_is_left_alone(
) -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let proxy = FaultProxy::in_front_of(&registry)?;
    let ns = proxy.namespace("stack");
    fixtures::push_busybox(
        &format!("{}/php-fpm:v1.0.0-php-8.5", registry.namespace("stack")),
        "",
        false,
    )?;
    let staging: Repository = format!("{}/php-fpm-staging", registry.namespace("stack")).parse()?;
    fixtures::push_busybox(&format!("{staging}:v1.0.0-php-8.5-linux-amd64"), "", false)?;
    // A split release not merged yet, whose build shares the first platform manifest with the merged one.
    let client = RegistryClient::new(Policy::default());
    let merged = client.get_manifest(&staging.tagged(&"v1.0.0-php-8.5-linux-amd64".parse()?))?;
    let mut index: serde_json::Value = serde_json::from_slice(&merged.bytes)?;
    let shared = index["manifests"][0].clone();
    index["manifests"] = serde_json::json!([shared]);
    let unmerged = serde_json::to_vec(&index)?;
    client.put_manifest(
        &staging.tagged(&"v1.1.0-php-8.5-linux-amd64".parse()?),
        &unmerged,
        &merged.media_type,
    )?;
    let shared = format!(
        "{ns}/php-fpm-staging@{}",
        shared["digest"].as_str().unwrap()
    );

    let notes = tempfile::tempdir()?;
    let notes_arg = notes.path().display().to_string();
    proxy.set(RequestKind::Other, Fault::Status(405));
    let output = crate::xtask(&[
        "prune",
        "--registry",
        &ns,
        "--notes-dir",
        &notes_arg,
        "--apply",
    ]);
    let stdout = assert_ok(&output);
    assert!(
        stdout.contains(&format!(
            "{ns}/php-fpm-staging:v1.1.0-php-8.5-linux-amd64 is kept: {ns}/php-fpm:v1.1.0-php-8.5 does not exist yet"
        )),
        "{stdout}"
    );
    let listed = listed(&stdout);
    assert_eq!(
        listed.len(),
        2,
        "the merged staging index and the platform it does not share: {stdout}"
    );
    assert!(!listed.contains(&shared), "{stdout}");
    assert!(stdout.contains("deleted 0 of 2"), "{stdout}");
    assert!(stdout.contains("2 refused by the registry"), "{stdout}");
    assert_eq!(stdout.matches("answered 405").count(), 2, "{stdout}");
    assert_eq!(client.list_tags(&staging)?.len(), 2, "nothing was deleted");
    Ok(())
}
