//! `20i prune` against the real engine: fixture images tagged as the launcher tags its pulls and local builds,
//! under a namespace of the test's own; the dry run lists exactly the other releases and the stale local build,
//! `--apply` removes those and nothing a container uses or the configuration selects.

use stack_images::docker::{Docker, DockerCommand};
use testkit::fixtures;

use crate::harness::{docker, forget_image, image_exists, Site};

/// Builds a one-platform busybox fixture under `reference`, with `label` (`key=value`) if given.
fn build(reference: &str, label: Option<&str>) {
    let context = fixtures::busybox_context(&format!("LABEL fixture-for={reference}\n")).unwrap();
    let mut args = vec!["build", "--quiet", "--tag", reference];
    if let Some(label) = label {
        args.extend(["--label", label]);
    }
    let dir = context.path().display().to_string();
    args.push(&dir);
    Docker::new()
        .unwrap()
        .output(&DockerCommand::new(args))
        .unwrap_or_else(|e| panic!("building {reference}: {e}"));
}

/// Removes the test's images and container even when it fails.
struct Cleanup {
    images: Vec<String>,
    container: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Docker::new()
            .map(|d| d.output(&DockerCommand::new(["rm", "--force", &self.container])));
        for image in &self.images {
            forget_image(image);
        }
    }
}

#[test]
fn prune_lists_and_removes_other_releases_and_stale_builds_only() {
    let mut site = Site::new("prune");
    let ns = format!("127.0.0.1:9/prune-{}", std::process::id());
    let release = "0.0.4";
    site.set("IMAGE_REGISTRY", &ns);
    site.set("STACK_RELEASE", release);
    let stale = "io.20i-stack.context-digest=sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let other_release = format!("{ns}/php-fpm:v0.0.1-php-8.5");
    let other_release_too = format!("{ns}/php-fpm:v0.0.2-rc.1-php-8.4");
    let in_use = format!("{ns}/php-fpm:v0.0.3-php-8.5");
    let selected = format!("{ns}/php-fpm:v{release}-php-8.5");
    let same_release = format!("{ns}/php-fpm:v{release}-php-8.4");
    let not_a_pin = format!("{ns}/php-fpm:latest");
    let stale_build = "20i-local/php-fpm:v0.0.3-php-8.5".to_owned();
    let selected_build = format!("20i-local/php-fpm:v{release}-php-8.5");
    let container = format!("{}-prune-user", site.project);
    let cleanup = Cleanup {
        images: vec![
            other_release.clone(),
            other_release_too.clone(),
            in_use.clone(),
            selected.clone(),
            same_release.clone(),
            not_a_pin.clone(),
            stale_build.clone(),
            selected_build.clone(),
        ],
        container: container.clone(),
    };
    for image in &cleanup.images[..6] {
        build(image, None);
    }
    build(&stale_build, Some(stale));
    build(&selected_build, Some(stale));
    docker(&[
        "run", "--detach", "--name", &container, &in_use, "sleep", "300",
    ]);

    let listed = |stdout: &str| -> Vec<String> {
        let mut listed: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("remove  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|r| r.starts_with(&ns) || *r == stale_build || *r == selected_build)
            .map(str::to_owned)
            .collect();
        listed.sort();
        listed
    };
    let mut expected = vec![
        other_release.clone(),
        other_release_too.clone(),
        stale_build.clone(),
    ];
    expected.sort();

    // Pulled images selected: a local build of another context goes, even of this release.
    let dry = site.run(&["prune"], &[]).ok();
    let mut with_local = expected.clone();
    with_local.push(selected_build.clone());
    with_local.sort();
    assert_eq!(listed(&dry.stdout), with_local, "{}", dry.stdout);
    dry.expect_stdout(&format!(
        "keep    {in_use}  container {container} (running) uses it"
    ));
    dry.expect_stdout(&format!(
        "keep    {selected}  the current configuration selects it"
    ));
    dry.expect_stdout("dry run: nothing removed");
    dry.expect_stdout(" freed\n");
    assert!(
        cleanup.images.iter().all(|i| image_exists(i)),
        "a dry run removes nothing"
    );

    // A local build selected: kept even though its context is stale, since it is what `20i start` would run.
    site.set("USE_PREBUILT", "false");
    let local = site.run(&["prune"], &[]).ok();
    assert_eq!(listed(&local.stdout), expected, "{}", local.stdout);
    local.expect_stdout(&format!(
        "keep    {selected_build}  the current configuration selects it"
    ));

    let applied = site.run(&["prune", "--apply"], &[]).ok();
    assert_eq!(listed(&applied.stdout), expected, "{}", applied.stdout);
    for gone in &expected {
        assert!(!image_exists(gone), "{gone} was removed");
    }
    for kept in [
        &in_use,
        &selected,
        &same_release,
        &not_a_pin,
        &selected_build,
    ] {
        assert!(image_exists(kept), "{kept} was kept");
    }
    let again = site.run(&["prune"], &[]).ok();
    assert!(listed(&again.stdout).is_empty(), "{}", again.stdout);
    drop(cleanup);
}
