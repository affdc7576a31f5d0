//! `cargo xtask plan`: snapshots of the plan, and proof that planning touches no docker and no network.

use std::{path::Path, process::Output};

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
const TIME: &str = "2026-11-25T10:00:00Z";

/// Runs the xtask with `path` as its whole PATH: no git, no docker, nothing but what the test puts there.
fn xtask(path: &Path, args: &[&str]) -> Output {
    crate::xtask_command()
        .args(args)
        .env("PATH", path)
        .env_remove("DOCKER")
        .output()
        .expect("running the xtask binary")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "xtask failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    // The base digests and the day they were read change with every `cargo xtask bases refresh`.
    settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[digest]");
    settings.add_filter(r"sha256:[0-9a-f]{12}", "sha256:[short]");
    settings.add_filter(
        r#""read_on": "\d{4}-\d{2}-\d{2}""#,
        r#""read_on": "[date]""#,
    );
    settings.add_filter(r"read on \d{4}-\d{2}-\d{2}", "read on [date]");
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn plan_args<'a>(version: &'a str, published: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "plan",
        version,
        "--published",
        published,
        "--revision",
        REVISION,
        "--time",
        TIME,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn plan_json_snapshot_without_docker_on_path() {
    let empty = tempfile::tempdir().unwrap();
    let json = stdout(&xtask(
        empty.path(),
        &plan_args("v2.0.0", "v1.0.0", &["--json"]),
    ));
    settings().bind(|| insta::assert_snapshot!("plan_v2.0.0_after_v1.0.0.json", json));
}

#[test]
fn plan_table_snapshots() {
    let empty = tempfile::tempdir().unwrap();
    for (name, version, published) in [
        ("plan_v1.9.5_after_v2.0.0.txt", "v1.9.5", "v1.0.0,v2.0.0"),
        ("plan_v2.1.0-rc.1_after_v2.0.0.txt", "v2.1.0-rc.1", "v2.0.0"),
    ] {
        let text = stdout(&xtask(empty.path(), &plan_args(version, published, &[])));
        settings().bind(|| insta::assert_snapshot!(name, text));
    }
}

#[test]
fn planning_never_calls_docker() {
    let (dir, marker) = crate::tripwire_path();
    for extra in [
        &[][..],
        &["--json"],
        &[
            "--registry",
            "127.0.0.1:5000/test",
            "--mirror",
            "127.0.0.1:5001/mirror",
        ],
    ] {
        stdout(&xtask(dir.path(), &plan_args("v2.0.0", "v1.0.0", extra)));
    }
    assert!(!marker.exists(), "plan ran docker");
}

#[test]
fn registries_are_overridden_per_command() {
    let empty = tempfile::tempdir().unwrap();
    let args = plan_args(
        "v2.0.0",
        "",
        &[
            "--registry",
            "127.0.0.1:5000/test",
            "--mirror",
            "127.0.0.1:5001/a",
            "--json",
        ],
    );
    let plan: serde_json::Value =
        serde_json::from_str(&stdout(&xtask(empty.path(), &args))).unwrap();
    assert_eq!(plan["canonical"], "127.0.0.1:5000/test");
    assert_eq!(plan["mirrors"], serde_json::json!(["127.0.0.1:5001/a"]));
    let args = plan_args("v2.0.0", "", &["--no-mirrors", "--json"]);
    let plan: serde_json::Value =
        serde_json::from_str(&stdout(&xtask(empty.path(), &args))).unwrap();
    assert_eq!(plan["mirrors"], serde_json::json!([]));
    assert!(plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["action"] != "copy"));
}

/// `--signing none` is the only way to a plan without signatures, and the plan says so.
#[test]
fn an_unsigned_release_is_asked_for_by_name() {
    let empty = tempfile::tempdir().unwrap();
    let args = plan_args("v2.0.0", "", &["--signing", "none", "--json"]);
    let plan: serde_json::Value =
        serde_json::from_str(&stdout(&xtask(empty.path(), &args))).unwrap();
    assert_eq!(plan["signing"], serde_json::json!({"mode": "none"}));
    assert!(plan["steps"].as_array().unwrap().iter().all(|s| {
        ![
            "signing-ready",
            "sign",
            "copy-signature",
            "verify-signature",
        ]
        .contains(&s["action"].as_str().unwrap())
    }));
    let args = plan_args("v2.0.0", "", &["--signing", "none"]);
    assert!(stdout(&xtask(empty.path(), &args)).contains("signing     NOT SIGNED (--signing none)"));
}

/// Every moving tag comes after every pin has been built, copied and verified, in every registry.
#[test]
fn moving_tags_only_after_all_pins_are_verified() {
    let empty = tempfile::tempdir().unwrap();
    let plan: serde_json::Value = serde_json::from_str(&stdout(&xtask(
        empty.path(),
        &plan_args("v2.0.0", "v1.0.0", &["--json"]),
    )))
    .unwrap();
    let steps = plan["steps"].as_array().unwrap();
    let first_tag = steps.iter().position(|s| s["action"] == "tag").unwrap();
    let last_pin_check = steps
        .iter()
        .rposition(|s| s["phase"] == "verify-pins")
        .unwrap();
    assert!(last_pin_check < first_tag);
    let pins_verified = steps
        .iter()
        .filter(|s| s["phase"] == "verify-pins" && s["action"] == "verify")
        .count();
    assert_eq!(pins_verified, 5 * 2, "5 lines in 2 registries");
    let attestations_verified = steps
        .iter()
        .filter(|s| s["phase"] == "verify-pins" && s["action"] == "verify-attestations")
        .count();
    assert_eq!(
        attestations_verified,
        5 * 2,
        "SBOM and provenance of 5 lines in 2 registries"
    );
    let scanner = steps.iter().position(|s| s["action"] == "scanner").unwrap();
    let bake = steps.iter().position(|s| s["action"] == "bake").unwrap();
    assert!(
        scanner < bake,
        "the SBOM scanner is checked before anything is built"
    );
    // Signed (keyless by default) after the pins are verified, each signature checked in every registry first.
    let signed = steps.iter().position(|s| s["action"] == "sign").unwrap();
    assert!(last_pin_check < signed);
    let last_signature_check = steps
        .iter()
        .rposition(|s| s["phase"] == "verify-signatures")
        .unwrap();
    assert!(last_signature_check < first_tag);
    let count = |action: &str| steps.iter().filter(|s| s["action"] == action).count();
    assert_eq!(
        (
            count("sign"),
            count("copy-signature"),
            count("verify-signature")
        ),
        (5, 5, 5 * 2),
        "5 pins signed, their signatures copied to the mirror and verified in 2 registries"
    );
    let moved: Vec<&str> = steps
        .iter()
        .filter(|s| s["action"] == "tag")
        .map(|s| s["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        moved.len(),
        7 * 2,
        "v2.0.0, five php-M.m and latest, in 2 registries"
    );
}

#[track_caller]
fn check_error(args: &[&str], expected: &str) {
    let empty = tempfile::tempdir().unwrap();
    let output = xtask(empty.path(), args);
    assert!(!output.status.success(), "xtask {args:?} succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(expected),
        "stderr of {args:?}:\n{stderr}\ndoes not contain: {expected}"
    );
}

#[test]
fn bad_input_gets_an_actionable_error() {
    check_error(
        &plan_args("2.0", "", &[]),
        "`2.0` is not a release version: use vX.Y.Z or X.Y.Z, for example v2.0.0",
    );
    check_error(
        &plan_args("v2.0.0", "v1.0.0,v2.0.0", &[]),
        "v2.0.0 is already published: release a new version",
    );
    check_error(
        &plan_args("v2.0.0", "v1,v2", &[]),
        "`v1` is not a release version",
    );
    check_error(
        &[
            "plan",
            "v2.0.0",
            "--published",
            "",
            "--revision",
            REVISION,
            "--time",
            "noon",
        ],
        "neither seconds since the epoch nor RFC 3339",
    );
    check_error(
        &plan_args("v2.0.0", "", &["--registry", "https://ghcr.io/x"]),
        "registry namespace `https://ghcr.io/x` is not valid",
    );
    check_error(
        &plan_args("v2.0.0", "", &["--bases", "/nonexistent.lock.toml"]),
        "reading base lock /nonexistent.lock.toml",
    );
    // Without --revision and with no git on PATH, the error says which flag replaces git.
    check_error(&["plan", "v2.0.0", "--published", ""], "pass --revision");
}
