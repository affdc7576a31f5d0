//! House rules, checked over the whole tree: every Rust module says what it is for, no debugging leftovers.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_starts_with_a_doc_line_and_has_no_leftovers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(
        files.len() > 10,
        "found only {} Rust files under {}",
        files.len(),
        root.display()
    );
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(root).unwrap().display();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{relative}: does not start with a `//!` line saying what it is for"
            ));
        }
        for (n, line) in text.lines().enumerate() {
            // Spelled in two halves so this file does not trip over itself.
            for leftover in [
                concat!("todo", "!("),
                concat!("dbg", "!("),
                concat!("unimplemented", "!("),
            ] {
                if line.contains(leftover) {
                    problems.push(format!("{relative}:{}: `{leftover}` left in", n + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "house rules:\n{}", problems.join("\n"));
}

/// Every path ARCHITECTURE.md names (in backticks, with a `/`, or a `.rs` file by name) exists: the map stays true
/// to the tree. Patterns and placeholders (`*`, `~`, `X.Y.Z`) are not paths.
#[test]
fn architecture_names_only_paths_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut missing = Vec::new();
    let mut checked = 0;
    for (n, quoted) in text.split('`').enumerate() {
        // Odd pieces are inside backticks.
        let placeholder = ['*', '~', '<', ' ', ':']
            .iter()
            .any(|c| quoted.contains(*c))
            || quoted.contains("X.Y.Z")
            || quoted.starts_with('-');
        if n % 2 == 0 || placeholder {
            continue;
        }
        if quoted.contains('/') && !quoted.starts_with('/') {
            checked += 1;
            if !root.join(quoted).exists() {
                missing.push(quoted.to_owned());
            }
        } else if quoted.ends_with(".rs") {
            checked += 1;
            if !files.iter().any(|f| f.file_name().unwrap() == quoted) {
                missing.push(quoted.to_owned());
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} paths found in ARCHITECTURE.md"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what is not there: {missing:?}"
    );
}
