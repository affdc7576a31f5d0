//! Getting the image without starting anything (`20i pull`, `20i start --explain`): the mirror when the canonical
//! registry is down, pinned digests honoured and refused, and each pull failure classified with its remedy.

use crate::harness::{
    docker, forget_image, image_exists, publish_php_fpm_standin, reference, requests, Site,
};

#[test]
fn the_mirror_serves_when_the_canonical_registry_is_down() {
    let mut canonical = testkit::Registry::start().unwrap();
    let mirror = testkit::Registry::start().unwrap();
    let canonical_ns = canonical.namespace("stack");
    let mirror_ns = mirror.namespace("mirror");
    let (mirrored, digest) = publish_php_fpm_standin(&mirror_ns, "8.5");
    canonical.stop();
    let mut site = Site::new("mirror");
    site.set("IMAGE_REGISTRY", &canonical_ns);
    site.set("IMAGE_MIRRORS", &mirror_ns);
    site.set("ALLOW_LOCAL_BUILD_FALLBACK", "false");
    let image = reference(&canonical_ns, "8.5");
    site.cleanup_images
        .extend([image.clone(), mirrored.clone()]);

    // Pinned to the digest the mirror serves: accepted, and known under the canonical reference afterwards.
    let pinned = format!("{image}@{digest}");
    let pulled = site.run(&["pull"], &[("PHP_FPM_PIN", &pinned)]).ok();
    pulled.expect_stdout(&format!(
        "php-fpm  {image} (pulled from the mirror {mirror_ns})"
    ));
    let known = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &image,
    ]);
    assert!(known.contains(&digest), "{known}");
    assert_eq!(
        site.run(&["image"], &[("PHP_FPM_PIN", &pinned)])
            .ok()
            .stdout
            .trim(),
        pinned
    );

    // Next time it is in the cache: no registry at all.
    let before = requests(&mirror);
    let again = site.run(&["pull"], &[]).ok();
    again.expect_stdout("(cache (no registry request))");
    assert_eq!(requests(&mirror), before);
}

#[test]
fn a_pinned_digest_is_honoured_and_another_is_refused() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let (image, digest) = publish_php_fpm_standin(&namespace, "8.5");
    let mut site = Site::new("pin");
    site.set("IMAGE_REGISTRY", &namespace);
    site.set("ALLOW_LOCAL_BUILD_FALLBACK", "false");
    site.cleanup_images.push(image.clone());

    let wrong = format!("sha256:{}", "0".repeat(64));
    let refused = site.run(&["pull"], &[("PHP_FPM_PIN", &format!("{image}@{wrong}"))]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    refused.expect_stderr(&format!(
        "{image} was pulled with digest {digest}, not the pinned {wrong}: refused and removed"
    ));
    refused.expect_stderr(&format!("{image} does not have the pinned digest {wrong}, and ALLOW_LOCAL_BUILD_FALLBACK=false: run `20i pin` again"));
    assert!(
        !image_exists(&image),
        "the refused image was left in the store"
    );

    // `20i pin` writes the digest from the release notes into .20i-local, and the pull then honours it.
    let notes = site.home.path().join("v-notes.json");
    std::fs::write(&notes, crate::pin::notes_json(&namespace, &digest)).unwrap();
    site.run(&["pin", "--notes", notes.to_str().unwrap()], &[])
        .ok();
    let local = std::fs::read_to_string(site.code_dir().join(".20i-local")).unwrap();
    assert_eq!(local, format!("PHP_FPM_PIN={image}@{digest}\n"));
    let pulled = site.run(&["pull"], &[]).ok();
    pulled.expect_stdout(&format!("php-fpm  {image} (pulled from {namespace})"));
}

#[test]
fn pull_failures_say_why_and_what_to_do() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let private = testkit::Registry::start_with_auth("ci", "not-a-real-secret").unwrap();
    let mut site = Site::new("causes");
    site.set("ALLOW_LOCAL_BUILD_FALLBACK", "false");

    // A PHP line with no published image.
    let missing = site.run(
        &["pull"],
        &[("IMAGE_REGISTRY", &namespace), ("PHP_VERSION", "8.1")],
    );
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    missing.expect_stderr(&format!(
        "{} is not published",
        reference(&namespace, "8.1")
    ));
    missing.expect_stderr("pick a published PHP line with PHP_VERSION");
    assert!(
        !missing.stderr.contains("pull attempt"),
        "a missing image is not retried:\n{}",
        missing.stderr
    );

    // A registry that wants credentials.
    let private_ns = private.namespace("stack");
    let denied = site.run(&["pull"], &[("IMAGE_REGISTRY", &private_ns)]);
    assert_eq!(denied.code, 3, "{}", denied.stderr);
    denied.expect_stderr(&format!("run `docker login {}`", private.host()));
    assert!(!denied.stderr.contains("not-a-real-secret"));

    // A bad value is a configuration error (exit 2), before any docker command.
    let bad = site.run(&["pull"], &[("USE_PREBUILT", "yes")]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains(
        "USE_PREBUILT=\"yes\" (from environment) is not valid: use true or false (or 1 or 0)"
    ));
    forget_image(&reference(&namespace, "8.1"));
}

#[test]
fn explain_shows_every_input_and_its_source_without_asking_the_registry() {
    let registry = testkit::Registry::start().unwrap();
    let namespace = registry.namespace("stack");
    let site = Site::new("explain");
    std::fs::write(
        site.code_dir().join(".20i-local"),
        "PHP_VERSION=8.3\nMYSQL_PASSWORD=hunter2-local\n",
    )
    .unwrap();
    std::fs::create_dir_all(site.home.path().join(".20i")).unwrap();
    std::fs::write(
        site.home.path().join(".20i/config"),
        "PHP_VERSION=8.2\nUSE_PREBUILT=true\n",
    )
    .unwrap();
    let before = requests(&registry);
    let run = site
        .run(&["start", "--explain", "--registry", &namespace], &[])
        .ok();
    let out = &run.stdout;
    assert!(
        out.starts_with(&format!("image    {}\n", reference(&namespace, "8.3"))),
        "{out}"
    );
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_owned()
    };
    assert!(
        line("PHP_VERSION").ends_with(&format!(
            "project {}:1",
            site.code_dir().join(".20i-local").display()
        )),
        "{out}"
    );
    assert!(
        line("USE_PREBUILT").ends_with(&format!(
            "user config {}:2",
            site.home.path().join(".20i/config").display()
        )),
        "{out}"
    );
    assert!(
        line("IMAGE_REGISTRY").ends_with("command line (--registry)"),
        "{out}"
    );
    assert!(line("HOST_PORT").ends_with("environment"), "{out}");
    assert!(line("STACK_RELEASE").contains("this launcher"), "{out}");
    assert!(line("MYSQL_PASSWORD").contains("(set, not shown)"), "{out}");
    assert!(!out.contains("hunter2"), "a secret was printed");
    assert!(
        out.contains("stack vars ") && out.contains("config/stack-vars.yml (read)"),
        "{out}"
    );
    assert!(
        out.contains("not in the local image store, so start pulls it"),
        "{out}"
    );
    assert_eq!(requests(&registry), before, "--explain asked the registry");
    assert_eq!(
        site.containers(),
        Vec::<String>::new(),
        "--explain started something"
    );
}
