//! `cargo xtask workflows`: the GitHub workflows generated from the image matrix, and `--check`.
//!
//! `.github/workflows/*.yml` are rendered from templates embedded here (`xtask/templates/`) and
//! `images/matrix.toml`, the one place that lists platforms and registries: the release's per-platform build
//! jobs, the digests files the merge reads, the platforms QEMU emulates and the registries logged in to all come
//! from it. Action pins (full commit SHAs), the runner of each platform and the launcher's archive builds (runner
//! and targets, `LAUNCHER_BUILDS`) are tables below, so a change is one line and every workflow follows. `--check`
//! fails on a stale file, showing the first differing line. The tests hold the permissions to least privilege
//! (`contents: write` only where a release page or pull request is written, `id-token: write` only where images
//! or archives are signed, `issues: write` only where the audit reports drift, `packages: write` in the audit only
//! for the repair run by hand), every job to a timeout and every action to a pinned row of `ACTIONS`.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use clap::Args;
use stack_images::{dist::Target, matrix::MATRIX_PATH, Matrix};
use xshell::Shell;

use crate::{display_path, maintain::notes::first_difference, project_root};

/// GitHub-hosted runner of each platform: a release builds every platform natively, on its own runner.
pub const RUNNERS: &[(&str, &str)] = &[
    ("linux/amd64", "ubuntu-24.04"),
    ("linux/arm64", "ubuntu-24.04-arm"),
];

/// What the real stack's CI job runs for (`ci.yml`, job `real-stack`): a change to any of these paths.
pub const REAL_STACK_PATHS: &[&str] = &[
    "images/",
    "launcher/stack/",
    "launcher/tests/it/real_stack.rs",
    "launcher/tests/it/harness.rs",
];

/// What the launcher's macOS CI job runs for (`ci.yml`, job `launcher-macos`): a change to any of these paths (the
/// launcher, the crate compiled into it, their dependencies, the job itself).
pub const LAUNCHER_PATHS: &[&str] = &[
    "launcher/",
    "images/",
    "Cargo.lock",
    "Cargo.toml",
    ".github/workflows/ci.yml",
];

/// The GitHub-hosted Apple Silicon runner: the release's macOS archives and CI's macOS job. Checked on 2026-12-02:
/// `macos-13` (the last Intel default) was retired on 2025-12-04 (actions/runner-images#13046), `macos-14` on
/// 2026-11-02 (#13518); `macos-26` is generally available since 2026-02-26 and `macos-latest` since July 2026
/// (#14167). A numbered label, so an image change is a reviewed line here, not a silent move of `macos-latest`.
pub const MACOS_RUNNER: &str = "macos-26";

/// The launcher's release archives: the runners of the release's `launcher` jobs, each with the targets of the
/// launcher distribution contract it builds (docs/releasing.md). Both macOS targets share one Apple Silicon runner:
/// Apple's toolchain links either architecture, and GitHub has been retiring its Intel images.
pub const LAUNCHER_BUILDS: &[LauncherBuild] = &[
    LauncherBuild {
        name: "linux-x86_64",
        runner: "ubuntu-24.04",
        targets: &[Target::X86_64LinuxMusl],
    },
    LauncherBuild {
        name: "linux-aarch64",
        runner: "ubuntu-24.04-arm",
        targets: &[Target::Aarch64LinuxMusl],
    },
    LauncherBuild {
        name: "macos",
        runner: MACOS_RUNNER,
        targets: &[Target::Aarch64AppleDarwin, Target::X86_64AppleDarwin],
    },
];

/// One `launcher` job of the release: a runner and the targets it builds, one `cargo xtask dist build` each.
#[derive(Debug, Clone, Copy)]
pub struct LauncherBuild {
    /// The job's name and its artifact's suffix (`launcher-archives-NAME`).
    pub name: &'static str,
    pub runner: &'static str,
    /// Each of `stack_images::dist::Target::ALL` exactly once across the builds (a test holds it).
    pub targets: &'static [Target],
}

/// Targets as the workflow's matrix lists them: triples, space-separated.
fn triples(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| t.triple())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The platform of the runner that builds every platform at once (CI, republish), emulating the others with QEMU.
pub const HOST_PLATFORM: &str = "linux/amd64";

/// Every action the workflows use, pinned by full commit SHA, with the release that SHA is.
pub const ACTIONS: &[Action] = &[
    Action {
        name: "actions/checkout",
        sha: "11bd71901bbe5b1630ceea73d27597364c9af683",
        version: "v4.2.2",
    },
    Action {
        name: "actions/upload-artifact",
        sha: "ea165f8d65b6e75b540449e92b4886f43607fa02",
        version: "v4.6.2",
    },
    Action {
        name: "actions/download-artifact",
        sha: "d3f86a106a0bac45b974a628896c90dbdf5c8093",
        version: "v4.3.0",
    },
    Action {
        name: "docker/setup-qemu-action",
        sha: "29109295f81e9208d7d86ff1c6c12d2833863392",
        version: "v3.6.0",
    },
    Action {
        name: "docker/setup-buildx-action",
        sha: "e468171a9de216ec08956ac3ada2f0791b6bd435",
        version: "v3.11.1",
    },
    Action {
        name: "sigstore/cosign-installer",
        sha: "d58896d6a1865668819e1d91763c7751a165e159",
        version: "v3.9.2",
    },
    Action {
        name: "docker/login-action",
        sha: "74a5d142397b4f367a81961eba4e8cd7edddf772",
        version: "v3.4.0",
    },
];

/// The cosign the signing jobs install: the 2.5 line, which the tests run (Debian trixie's 2.5.0); cosign 3
/// changes where signatures are stored.
pub const COSIGN_RELEASE: &str = "v2.5.3";

// Registries the release workflow can log in to, and with what: the matrix's registries must be among them.
const CANONICAL_LOGIN: &str = "ghcr.io"; // GITHUB_TOKEN with packages: write
const MIRROR_LOGIN: &str = "docker.io"; // secrets DOCKERHUB_USERNAME, DOCKERHUB_TOKEN

/// The templates, by the file each one generates under `.github/workflows/`.
const TEMPLATES: &[(&str, &str)] = &[
    ("ci.yml", include_str!("../../templates/ci.yml")),
    ("release.yml", include_str!("../../templates/release.yml")),
    ("bases.yml", include_str!("../../templates/bases.yml")),
    ("audit.yml", include_str!("../../templates/audit.yml")),
];

/// Where the workflows live, relative to the project root.
pub const WORKFLOWS_DIR: &str = ".github/workflows";

#[derive(Debug, Clone, Copy)]
pub struct Action {
    pub name: &'static str,
    pub sha: &'static str,
    pub version: &'static str,
}

#[derive(Args, Debug)]
pub struct WorkflowsCmd {
    /// Fail when a workflow in .github/workflows/ is not what the matrix generates
    #[arg(long)]
    check: bool,
    /// Where the workflows are written (default: .github/workflows)
    #[arg(long, value_name = "DIR", default_value = WORKFLOWS_DIR)]
    workflows_dir: PathBuf,
    /// Image matrix file (default: images/matrix.toml)
    #[arg(long, value_name = "FILE", default_value = MATRIX_PATH)]
    matrix: PathBuf,
}

impl WorkflowsCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let matrix = Matrix::load(&project_root().join(&self.matrix))?;
        let dir = project_root().join(&self.workflows_dir);
        let mut stale = Vec::new();
        for (file, text) in generate(&matrix)? {
            let path = dir.join(file);
            let actual = std::fs::read_to_string(&path).unwrap_or_default();
            if actual == text {
                if !self.check {
                    println!("{} is current", display_path(&path));
                }
                continue;
            }
            if self.check {
                stale.push(format!(
                    "{}:\n{}",
                    display_path(&path),
                    first_difference(&text, &actual)
                ));
            } else {
                write(&path, &text)?;
                println!("wrote {}", display_path(&path));
            }
        }
        if !stale.is_empty() {
            bail!(
                "{} not what {} and xtask/templates/ generate:\n{}\nrun `cargo xtask workflows` to regenerate (edit the template or the matrix, not the workflow)",
                if stale.len() == 1 { "a workflow is" } else { "workflows are" },
                display_path(&project_root().join(&self.matrix)),
                stale.join("\n")
            );
        }
        Ok(())
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Every workflow file name with its text, as the matrix makes it.
pub fn generate(matrix: &Matrix) -> anyhow::Result<Vec<(&'static str, String)>> {
    let values = values(matrix)?;
    TEMPLATES
        .iter()
        .map(|(file, template)| {
            let body = render(template, &values).with_context(|| format!("in template {file}"))?;
            Ok((*file, format!("{}{body}", header(file))))
        })
        .collect()
}

fn header(file: &str) -> String {
    format!(
        "# Generated by `cargo xtask workflows` from xtask/templates/{file} and {MATRIX_PATH}: edit those, then\n\
         # regenerate. `cargo xtask workflows --check` (make lint) fails when this file is stale.\n"
    )
}

/// `linux/arm64` → `linux-arm64`: names of artifacts and digests files.
fn slug(platform: &str) -> String {
    platform.replace('/', "-")
}

fn runner(platform: &str) -> anyhow::Result<&'static str> {
    RUNNERS
        .iter()
        .find(|(p, _)| *p == platform)
        .map(|(_, runner)| *runner)
        .with_context(|| {
            format!(
                "no GitHub runner for platform {platform} (images/matrix.toml): add one to RUNNERS in xtask/src/workflows.rs"
            )
        })
}

/// The value of every `@@name@@` the templates use.
fn values(matrix: &Matrix) -> anyhow::Result<Vec<(String, String)>> {
    let canonical = matrix.registries.canonical.host();
    ensure!(
        canonical == CANONICAL_LOGIN,
        "the release workflow logs in to {CANONICAL_LOGIN} with GITHUB_TOKEN, but the canonical registry is {canonical}: \
         give xtask/templates/release.yml a login for it"
    );
    for mirror in &matrix.registries.mirrors {
        ensure!(
            mirror.host() == MIRROR_LOGIN,
            "the release workflow logs in to {MIRROR_LOGIN} with the DOCKERHUB_* secrets, but mirror {mirror} is elsewhere: \
             give xtask/templates/release.yml a login for it"
        );
    }
    let host_runner = runner(HOST_PLATFORM)?;

    let mut build_matrix = String::new();
    let mut digests_files = Vec::new();
    for platform in &matrix.platforms {
        build_matrix.push_str(&format!(
            "- platform: {platform}\n  runner: {}\n  slug: {}\n",
            runner(platform)?,
            slug(platform)
        ));
        digests_files.push(format!("--digests-file digests/{}.json", slug(platform)));
    }
    let emulated: Vec<&str> = matrix
        .platforms
        .iter()
        .filter(|p| *p != HOST_PLATFORM)
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .collect();
    // setup-qemu-action installs every emulator it knows when the list is empty: name one even then.
    let qemu_platforms = if emulated.is_empty() {
        "arm64".to_owned()
    } else {
        emulated.join(",")
    };

    // Every PHP line on every platform, each on its platform's own runner: the real image is built natively.
    let mut real_stack_matrix = String::new();
    for php in matrix.php_lines() {
        for platform in &matrix.platforms {
            real_stack_matrix.push_str(&format!(
                "- php: \"{php}\"\n  platform: {platform}\n  runner: {}\n",
                runner(platform)?
            ));
        }
    }

    let mut launcher_matrix = String::new();
    for build in LAUNCHER_BUILDS {
        launcher_matrix.push_str(&format!(
            "- name: {}\n  runner: {}\n  targets: {}\n",
            build.name,
            build.runner,
            triples(build.targets)
        ));
    }

    let mut values = vec![
        ("host_runner".to_owned(), host_runner.to_owned()),
        ("macos_runner".to_owned(), MACOS_RUNNER.to_owned()),
        ("launcher_matrix".to_owned(), launcher_matrix),
        ("launcher_paths".to_owned(), LAUNCHER_PATHS.join(" ")),
        ("real_stack_matrix".to_owned(), real_stack_matrix),
        ("real_stack_paths".to_owned(), REAL_STACK_PATHS.join(" ")),
        ("platforms".to_owned(), matrix.platforms.join(", ")),
        ("qemu_platforms".to_owned(), qemu_platforms),
        ("build_matrix".to_owned(), build_matrix),
        ("digests_files".to_owned(), digests_files.join("\n")),
        ("canonical_host".to_owned(), canonical.to_owned()),
        ("mirror_host".to_owned(), MIRROR_LOGIN.to_owned()),
        ("cosign_release".to_owned(), COSIGN_RELEASE.to_owned()),
    ];
    for action in ACTIONS {
        values.push((
            action.name.to_owned(),
            format!("{}@{} # {}", action.name, action.sha, action.version),
        ));
    }
    Ok(values)
}

/// Replaces every `@@name@@` in `template`. A value of several lines must stand alone on its line; each of its
/// lines gets that line's indentation. A name without a value is an error, so a typo cannot reach a workflow.
pub fn render(template: &str, values: &[(String, String)]) -> anyhow::Result<String> {
    let lookup = |name: &str| {
        values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .with_context(|| format!("unknown placeholder @@{name}@@"))
    };
    let mut out = String::with_capacity(template.len());
    for (n, line) in template.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(name) = trimmed
            .strip_prefix("@@")
            .and_then(|rest| rest.strip_suffix("@@"))
            .filter(|name| !name.contains("@@"))
        {
            let value = lookup(name).with_context(|| format!("line {}", n + 1))?;
            for value_line in value.lines() {
                out.push_str(indent);
                out.push_str(value_line);
                out.push('\n');
            }
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("@@") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("@@") else {
                bail!("line {}: unclosed @@", n + 1);
            };
            let value = lookup(&after[..end]).with_context(|| format!("line {}", n + 1))?;
            ensure!(
                !value.contains('\n'),
                "line {}: @@{}@@ has several lines: put it on a line of its own",
                n + 1,
                &after[..end]
            );
            out.push_str(&rest[..start]);
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[track_caller]
    fn check(template: &str, expected: &str) {
        let values = values(&[("a", "one"), ("block", "- x\n- y")]);
        assert_eq!(render(template, &values).unwrap(), expected);
    }

    #[test]
    fn render_replaces_inline_and_block_placeholders() {
        check("plain\n", "plain\n");
        check("k: @@a@@\n", "k: one\n");
        check("@@a@@ and @@a@@\n", "one and one\n");
        check("list:\n  @@block@@\nend\n", "list:\n  - x\n  - y\nend\n");
        check("${{ github.ref }}\n", "${{ github.ref }}\n");
    }

    #[test]
    fn render_refuses_unknown_unclosed_and_misplaced_placeholders() {
        let values = values(&[("block", "- x\n- y")]);
        for bad in ["@@nope@@\n", "k: @@open\n", "k: @@block@@\n"] {
            assert!(render(bad, &values).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_platform_of_the_matrix_gets_a_native_runner_and_a_digests_file() {
        let workflows = generate(&Matrix::embedded()).unwrap();
        let release = &workflows
            .iter()
            .find(|(f, _)| *f == "release.yml")
            .unwrap()
            .1;
        for platform in &Matrix::embedded().platforms {
            let runner = runner(platform).unwrap();
            assert!(
                release.contains(&format!(
                    "- platform: {platform}\n            runner: {runner}\n"
                )),
                "{platform} on {runner}"
            );
            assert!(release.contains(&format!("--digests-file digests/{}.json", slug(platform))));
        }
        let mut matrix = Matrix::embedded();
        matrix.platforms.push("linux/riscv64".into());
        let error = generate(&matrix).unwrap_err().to_string();
        assert!(error.contains("add one to RUNNERS"), "{error}");
    }

    #[test]
    fn the_real_stack_runs_every_line_on_every_platform_natively_when_its_inputs_change() {
        let matrix = Matrix::embedded();
        let workflows = generate(&matrix).unwrap();
        let ci = &workflows.iter().find(|(f, _)| *f == "ci.yml").unwrap().1;
        for php in matrix.php_lines() {
            for platform in &matrix.platforms {
                let entry = format!(
                    "- php: \"{php}\"\n            platform: {platform}\n            runner: {}\n",
                    runner(platform).unwrap()
                );
                assert!(ci.contains(&entry), "{entry}");
            }
        }
        assert!(ci.contains(
            "[[ $EVENT != pull_request ]] || ! git diff --quiet HEAD^1 HEAD -- \"$@\"\n"
        ));
        assert!(ci.contains(&format!("if touches {}; then", REAL_STACK_PATHS.join(" "))));
        assert!(ci.contains("if: needs.changes.outputs.real-stack == 'true'"));
        assert!(ci.contains("run: |\n          cargo test -p launcher --test it real_stack::\n"));
        assert_eq!(
            job_permissions(ci),
            ["ci", "changes", "real-stack", "launcher-macos"]
                .map(|job| (job.to_owned(), vec!["contents: read".to_owned()]))
                .to_vec()
        );
    }

    /// Each job's `permissions:` block, by job name, as `key: value` lines.
    fn job_permissions(workflow: &str) -> Vec<(String, Vec<String>)> {
        let mut jobs: Vec<(String, Vec<String>)> = Vec::new();
        let mut in_jobs = false;
        let mut in_permissions = false;
        for line in workflow.lines() {
            let indent = line.len() - line.trim_start().len();
            if line == "jobs:" {
                in_jobs = true;
                continue;
            }
            if !in_jobs || line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            if indent == 2 && line.trim_end().ends_with(':') {
                jobs.push((line.trim().trim_end_matches(':').to_owned(), Vec::new()));
                in_permissions = false;
            } else if indent == 4 {
                in_permissions = line.trim() == "permissions:";
            } else if indent == 6 && in_permissions {
                let entry = line
                    .trim()
                    .split(" #")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                jobs.last_mut().expect("a job").1.push(entry);
            }
        }
        jobs
    }

    /// The generated workflow `file`.
    fn workflow(file: &str) -> String {
        generate(&Matrix::embedded())
            .unwrap()
            .into_iter()
            .find(|(f, _)| *f == file)
            .unwrap_or_else(|| panic!("no workflow {file}"))
            .1
    }

    /// The text of `job` in `workflow`: its lines up to the next job.
    #[track_caller]
    fn job(workflow: &str, job: &str) -> String {
        let start = workflow
            .find(&format!("\n  {job}:\n"))
            .unwrap_or_else(|| panic!("no job {job}"));
        let body = &workflow[start + job.len() + 5..];
        let end = body
            .lines()
            .scan(0, |offset, line| {
                let at = *offset;
                *offset += line.len() + 1;
                Some((at, line))
            })
            .find(|(_, line)| {
                line.len() > 2 && line.starts_with("  ") && !line[2..].starts_with([' ', '#'])
            })
            .map_or(body.len(), |(at, _)| at);
        body[..end].to_owned()
    }

    fn perms(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn every_release_job_has_least_privilege() {
        let release = workflow("release.yml");
        assert!(release.contains("\npermissions: {}\n"));
        let read = perms(&["contents: read"]);
        let push = perms(&["contents: read", "packages: write"]);
        let sign = perms(&["contents: read", "packages: write", "id-token: write"]);
        assert_eq!(
            job_permissions(&release),
            vec![
                ("plan".to_owned(), read.clone()),
                ("build".to_owned(), push),
                ("launcher".to_owned(), read),
                ("merge".to_owned(), sign.clone()),
                ("republish".to_owned(), sign),
                (
                    "notes".to_owned(),
                    perms(&["contents: write", "pull-requests: write"])
                ),
            ]
        );
    }

    #[test]
    fn only_the_release_page_and_the_bases_pull_request_write_and_only_signers_get_oidc() {
        // (permission, the jobs of every workflow that hold it)
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "contents: write",
                &[("release.yml", "notes"), ("bases.yml", "update")],
            ),
            (
                "id-token: write",
                &[("release.yml", "merge"), ("release.yml", "republish")],
            ),
            (
                "pull-requests: write",
                &[("release.yml", "notes"), ("bases.yml", "update")],
            ),
            (
                "packages: write",
                &[
                    ("release.yml", "build"),
                    ("release.yml", "merge"),
                    ("release.yml", "republish"),
                    ("audit.yml", "repair"),
                ],
            ),
            ("issues: write", &[("audit.yml", "issue")]),
        ];
        let workflows = generate(&Matrix::embedded()).unwrap();
        for (permission, expected) in cases {
            let mut holders = Vec::new();
            for (file, text) in &workflows {
                for (job, entries) in job_permissions(text) {
                    if entries.iter().any(|e| e == permission) {
                        holders.push((*file, job));
                    }
                }
            }
            let mut expected: Vec<(&str, String)> =
                expected.iter().map(|(f, j)| (*f, j.to_string())).collect();
            expected.sort();
            holders.sort();
            assert_eq!(holders, expected, "{permission}");
        }
    }

    #[test]
    fn the_audit_reads_only_and_writes_packages_only_in_a_repair_asked_for_by_hand() {
        let audit = workflow("audit.yml");
        assert!(audit.contains("\npermissions: {}\n"));
        assert_eq!(
            job_permissions(&audit),
            vec![
                ("audit".to_owned(), perms(&["contents: read"])),
                ("issue".to_owned(), perms(&["issues: write"])),
                (
                    "repair".to_owned(),
                    perms(&["contents: read", "packages: write"])
                ),
            ]
        );
        let repair = job(&audit, "repair");
        assert!(repair.contains("if: github.event_name == 'workflow_dispatch' && inputs.repair\n"));
        // The reason reaches the script through the environment, never spliced into it.
        assert!(repair.contains("REASON: ${{ inputs.reason }}"));
        assert!(!audit.contains("run: echo ${{"));
        assert!(job(&audit, "audit").contains("cargo xtask audit >"));
        assert!(repair.contains("cargo xtask audit --repair >"));
        assert!(job(&audit, "issue").contains("if: needs.audit.outputs.drift == 'true'"));
    }

    #[test]
    fn every_job_has_a_timeout() {
        for (file, text) in generate(&Matrix::embedded()).unwrap() {
            for (name, _) in job_permissions(&text) {
                assert!(
                    job(&text, &name).contains("\n    timeout-minutes: "),
                    "{file}: job {name} has no timeout-minutes"
                );
            }
        }
    }

    #[test]
    fn the_launcher_is_built_for_every_target_of_the_dist_contract_on_its_runner() {
        let release = workflow("release.yml");
        let launcher = job(&release, "launcher");
        // (target, the runner that builds it): the contract's four, each once.
        let cases = [
            ("x86_64-unknown-linux-musl", "ubuntu-24.04"),
            ("aarch64-unknown-linux-musl", "ubuntu-24.04-arm"),
            ("aarch64-apple-darwin", MACOS_RUNNER),
            ("x86_64-apple-darwin", MACOS_RUNNER),
        ];
        let mut built: Vec<Target> = LAUNCHER_BUILDS
            .iter()
            .flat_map(|b| b.targets.iter().copied())
            .collect();
        assert_eq!(built.len(), cases.len(), "{built:?}");
        // One list: the release builds exactly the targets of the dist contract, each once.
        built.sort();
        let mut all = Target::ALL.to_vec();
        all.sort();
        assert_eq!(built, all);
        for (target, runner) in cases {
            let target: Target = target.parse().unwrap();
            let build = LAUNCHER_BUILDS
                .iter()
                .find(|b| b.targets.contains(&target))
                .unwrap_or_else(|| panic!("{target} is not built"));
            assert_eq!(build.runner, runner, "{target}");
            assert!(
                launcher.contains(&format!(
                    "- name: {}\n            runner: {runner}\n            targets: {}\n",
                    build.name,
                    triples(build.targets)
                )),
                "{target}:\n{launcher}"
            );
        }
        assert!(launcher.contains("    needs: plan\n"));
        assert!(launcher.contains("cargo xtask dist build --target \"$target\" --out dist\n"));
        assert!(launcher.contains("        if: runner.os == 'Linux'\n"));
        assert!(launcher.contains("name: launcher-archives-${{ matrix.name }}\n"));
    }

    #[test]
    fn the_merge_seals_the_archives_before_any_tag_moves_and_the_notes_attach_them() {
        let release = workflow("release.yml");
        let merge = job(&release, "merge");
        assert!(merge.contains("    needs: [build, launcher]\n"), "{merge}");
        let position = |text: &str, needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
        };
        // In order: the archives, cosign, the seal, the release that moves tags and records the archives, and
        // the sealed folder kept for the notes job.
        let steps = [
            "pattern: launcher-archives-*\n          path: dist\n",
            "uses: sigstore/cosign-installer@",
            "run: cargo xtask dist seal dist --keyless\n",
            "--launcher-dist dist\n",
            "cargo xtask release merge \"$VERSION\"",
            "name: launcher-dist-${{ env.VERSION }}\n          path: dist/\n",
        ];
        let at: Vec<usize> = steps.iter().map(|s| position(&merge, s)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{steps:?} at {at:?}");

        let notes = job(&release, "notes");
        let upload = position(
            &notes,
            "gh release upload \"$VERSION\" \"${files[@]}\" --clobber",
        );
        assert!(position(&notes, "name: launcher-dist-${{ env.VERSION }}\n") < upload);
        assert_eq!(
            notes
                .matches("if: needs.merge.result == 'success'\n")
                .count(),
            2,
            "a republish has no launcher to attach:\n{notes}"
        );
    }

    #[test]
    fn ci_builds_and_tests_the_launcher_on_macos_when_it_changes() {
        let ci = workflow("ci.yml");
        let macos = job(&ci, "launcher-macos");
        assert!(
            macos.contains(&format!("    runs-on: {MACOS_RUNNER}\n")),
            "{macos}"
        );
        assert!(macos.contains("    if: needs.changes.outputs.launcher-macos == 'true'\n"));
        assert!(macos.contains("cargo test --locked -p launcher --bins\n"));
        assert!(macos.contains("cargo test --locked -p stack-images --lib\n"));
        assert!(ci.contains(&format!("if touches {}; then", LAUNCHER_PATHS.join(" "))));
        for path in ["launcher/", "images/", "Cargo.lock"] {
            assert!(LAUNCHER_PATHS.contains(&path), "{path}");
        }
    }

    #[test]
    fn the_bases_workflow_writes_only_in_the_job_that_opens_the_pull_request() {
        let workflows = generate(&Matrix::embedded()).unwrap();
        let bases = &workflows.iter().find(|(f, _)| *f == "bases.yml").unwrap().1;
        assert!(bases.contains("\npermissions: {}\n"), "{bases}");
        assert!(bases.contains("cargo xtask bases refresh --check"));
        assert!(
            bases.contains("  schedule:\n    - cron:") && bases.contains("  workflow_dispatch:")
        );
        assert_eq!(
            job_permissions(bases),
            vec![
                ("check".to_owned(), vec!["contents: read".to_owned()]),
                (
                    "update".to_owned(),
                    vec![
                        "contents: write".to_owned(),
                        "pull-requests: write".to_owned()
                    ]
                ),
            ]
        );
    }

    #[test]
    fn actions_are_pinned_by_full_sha_and_run_blocks_interpolate_nothing() {
        for (file, text) in generate(&Matrix::embedded()).unwrap() {
            let mut run_indent = None;
            for (n, line) in text.lines().enumerate() {
                let trimmed = line.trim_start();
                let indent = line.len() - trimmed.len();
                if let Some(uses) = trimmed
                    .strip_prefix("uses: ")
                    .or(trimmed.strip_prefix("- uses: "))
                {
                    let (reference, comment) = uses.split_once(" # v").unwrap_or((uses, ""));
                    let sha = reference.split_once('@').map_or("", |(_, sha)| sha);
                    assert!(
                        sha.len() == 40
                            && sha.bytes().all(|b| b.is_ascii_hexdigit())
                            && !comment.is_empty(),
                        "{file}:{}: `{uses}` is not pinned by SHA with a # vX.Y.Z comment",
                        n + 1
                    );
                    assert!(
                        ACTIONS
                            .iter()
                            .any(|a| reference == format!("{}@{}", a.name, a.sha)
                                && comment == &a.version[1..]),
                        "{file}:{}: `{uses}` is not a row of ACTIONS",
                        n + 1
                    );
                }
                // Expressions in a shell script are template injection: values go through `env:`.
                match run_indent {
                    Some(i) if indent > i || trimmed.is_empty() => assert!(
                        !line.contains("${{"),
                        "{file}:{}: an expression inside `run:`",
                        n + 1
                    ),
                    _ => run_indent = None,
                }
                if trimmed.starts_with("run:") || trimmed.starts_with("- run:") {
                    assert!(
                        !line.contains("${{"),
                        "{file}:{}: an expression inside `run:`",
                        n + 1
                    );
                    run_indent = Some(indent);
                }
            }
        }
    }
}
