//! `cargo xtask workflows`: the workflows in the repository are what the matrix generates, `--check` names a
//! stale line and the fix, and the workflows pass zizmor and GitHub's workflow schema (when those are installed:
//! scripts/setup.sh installs them).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::xtask;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn workflows() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a linter, or says it is skipped when it is not installed.
fn lint(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: {program} is not installed (scripts/setup.sh installs it)");
            None
        }
        Err(error) => panic!("running {program}: {error}"),
    }
}

#[test]
fn the_repository_workflows_are_current() {
    let check = xtask(&["workflows", "--check"]);
    assert!(check.status.success(), "{}", output_text(&check));
    let names: Vec<String> = workflows()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["audit.yml", "bases.yml", "ci.yml", "release.yml"]);
}

#[test]
fn check_catches_a_hand_edited_workflow_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();

    // Nothing there yet: --check fails; writing makes it pass.
    assert!(
        !xtask(&["workflows", "--check", "--workflows-dir", &dir_arg])
            .status
            .success()
    );
    let write = xtask(&["workflows", "--workflows-dir", &dir_arg]);
    assert!(write.status.success(), "{}", output_text(&write));
    let check = xtask(&["workflows", "--check", "--workflows-dir", &dir_arg]);
    assert!(check.status.success(), "{}", output_text(&check));
    for file in ["ci.yml", "release.yml"] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(file)).unwrap(),
            std::fs::read_to_string(root().join(".github/workflows").join(file)).unwrap(),
            "{file}"
        );
    }

    // A runner edited by hand is caught, with the line and the command that regenerates it.
    let release = dir.path().join("release.yml");
    let text = std::fs::read_to_string(&release).unwrap();
    std::fs::write(
        &release,
        text.replacen("ubuntu-24.04-arm", "ubuntu-22.04-arm", 1),
    )
    .unwrap();
    let check = xtask(&["workflows", "--check", "--workflows-dir", &dir_arg]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success());
    assert!(
        stderr.contains("release.yml")
            && stderr.contains("-             runner: ubuntu-22.04-arm")
            && stderr.contains("+             runner: ubuntu-24.04-arm")
            && stderr.contains("run `cargo xtask workflows` to regenerate"),
        "{stderr}"
    );
}

#[test]
fn the_release_build_jobs_follow_the_matrix_platforms() {
    // A matrix with one platform: one build job, one digests file, nothing emulated but the default.
    let dir = tempfile::tempdir().unwrap();
    let matrix = std::fs::read_to_string(root().join("images/matrix.toml"))
        .unwrap()
        .replace(
            r#"platforms = ["linux/amd64", "linux/arm64"]"#,
            r#"platforms = ["linux/arm64"]"#,
        );
    let matrix_path = dir.path().join("matrix.toml");
    std::fs::write(&matrix_path, matrix).unwrap();
    let out = dir.path().join("workflows");
    let write = xtask(&[
        "workflows",
        "--matrix",
        &matrix_path.display().to_string(),
        "--workflows-dir",
        &out.display().to_string(),
    ]);
    assert!(write.status.success(), "{}", output_text(&write));
    let release = std::fs::read_to_string(out.join("release.yml")).unwrap();
    assert!(release.contains("- platform: linux/arm64\n            runner: ubuntu-24.04-arm"));
    assert!(!release.contains("- platform: linux/amd64"));
    assert!(release.contains("--digests-file digests/linux-arm64.json"));
    assert!(!release.contains("digests/linux-amd64.json"));
}

/// The jobs of a workflow, by name, each with its text: the lines under `jobs:` indented by two spaces.
fn jobs(workflow: &str) -> Vec<(String, String)> {
    let body = &workflow[workflow.find("\njobs:\n").expect("a workflow has jobs")..];
    let mut jobs: Vec<(String, String)> = Vec::new();
    for line in body.lines().skip(2) {
        match line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
            Some(name) if !name.starts_with(' ') => jobs.push((name.to_owned(), String::new())),
            _ => {
                if let Some((_, text)) = jobs.last_mut() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    jobs
}

#[test]
fn only_the_jobs_that_sign_may_ask_for_an_oidc_token() {
    let mut signing_jobs = 0;
    for workflow in workflows() {
        let text = std::fs::read_to_string(&workflow).unwrap();
        let name = workflow.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            text.contains("\npermissions: {}\n"),
            "{name}: no permission by default"
        );
        for (job, body) in jobs(&text) {
            let signs = name == "release.yml" && (job == "merge" || job == "republish");
            signing_jobs += usize::from(signs);
            assert_eq!(
                body.contains("id-token: write"),
                signs,
                "{name}: job {job} {} ask for an OIDC token",
                if signs { "must" } else { "must not" }
            );
            // The audit verifies signatures (and its repair copies them): cosign, without an OIDC token.
            let verifies = name == "audit.yml" && (job == "audit" || job == "repair");
            assert_eq!(
                body.contains("uses: sigstore/cosign-installer@d58896d6a1865668819e1d91763c7751a165e159 # v3.9.2"),
                signs || verifies,
                "{name}: job {job} and cosign"
            );
        }
    }
    assert_eq!(
        signing_jobs, 2,
        "release.yml's merge and republish jobs sign"
    );
}

#[test]
fn zizmor_finds_nothing_in_the_workflows() {
    let Some(output) = lint("zizmor", &["--no-progress", ".github/workflows/"]) else {
        return;
    };
    assert!(
        output.status.success(),
        "zizmor .github/workflows/ reports findings:\n{}",
        output_text(&output)
    );
}

#[test]
fn every_workflow_passes_the_github_workflow_schema() {
    let files: Vec<String> = workflows()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["--builtin-schema", "vendor.github-workflows"];
    args.extend(files.iter().map(String::as_str));
    let Some(output) = lint("check-jsonschema", &args) else {
        return;
    };
    assert!(
        output.status.success(),
        "check-jsonschema --builtin-schema vendor.github-workflows fails:\n{}",
        output_text(&output)
    );
}
