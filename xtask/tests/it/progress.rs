//! A release whose standard error is not a terminal (a CI log) says what it is doing and how far along it is in
//! plain lines: every phase numbered with the time elapsed, steps counted, and not one escape code.

use crate::setup::{assert_ok, small_matrix, Setup};

#[test]
fn a_release_without_a_terminal_prints_plain_progress_lines() -> anyhow::Result<()> {
    let mut setup = Setup::new()?;
    setup.matrix = Some(small_matrix(setup.dir.path(), &["8.5"], &["linux/amd64"])?);
    let output = setup.release("v2.0.0", "", &[]);
    assert_ok(&output);
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8(output.stderr)?;
    assert!(
        !stderr.contains('\x1b'),
        "an escape code in a log:\n{stderr}"
    );
    assert!(
        !stderr.contains('\r'),
        "a carriage return in a log:\n{stderr}"
    );
    let phases: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("==> phase "))
        .collect();
    let count = phases.len();
    assert!(count >= 5, "{stderr}");
    for (n, line) in phases.iter().enumerate() {
        let prefix = format!("==> phase {}/{count}: ", n + 1);
        assert!(line.starts_with(&prefix), "{line}");
        assert!(line.ends_with(" elapsed)"), "{line}");
    }
    // Each phase's last step is said, with the phase it belongs to.
    let steps: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("    step "))
        .collect();
    assert!(steps.len() >= count, "{stderr}");
    assert!(
        steps.iter().any(|l| l.contains(" done: tag on ")),
        "{steps:#?}"
    );
    assert!(
        steps.iter().any(|l| l.starts_with("    step 6/6 done: ")
            && l.contains(&format!("(phase {count}/{count} "))),
        "{steps:#?}"
    );
    Ok(())
}
