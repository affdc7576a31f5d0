//! `hosted-standins` as `make demo` runs it, through `scripts/registry.sh`: up on given ports (TLS, a login asked
//! for), idempotent, its secrets private, its CAs in a `certs.d` (a temporary one here) only while it runs.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

/// `scripts/registry.sh ARGS` with its state, the binary and `certs.d` of this test.
fn script(state: &Path, certs_d: &Path, args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new("bash")
        .arg(root.join("scripts/registry.sh"))
        .args(args)
        .env("STACK_STATE_DIR", state)
        .env("STACK_CERTS_D", certs_d)
        .env("STACK_HOSTED_BIN", env!("CARGO_BIN_EXE_hosted-standins"))
        .output()
        .expect("running scripts/registry.sh")
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

/// The HTTP status of `https://127.0.0.1:PORT/v2/` checked against `ca`, or 0 when TLS or the connection fails.
fn v2_status(port: u16, ca: &Path) -> u32 {
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{port}/v2/"))
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
}

#[test]
fn the_demo_standins_start_once_serve_tls_and_leave_certs_d_when_stopped() {
    let state = tempfile::tempdir().unwrap();
    let certs_d = tempfile::tempdir().unwrap();
    let [ghcr, hub] = testkit::stack::free_ports::<2>().unwrap();
    let (ghcr_text, hub_text) = (ghcr.to_string(), hub.to_string());
    let up = ["hosted-up", "t", ghcr_text.as_str(), hub_text.as_str()];
    let dir = state.path().join("hosted/t");
    let trusted = |port: u16| certs_d.path().join(format!("127.0.0.1:{port}/ca.crt"));

    let first = succeeded(&script(state.path(), certs_d.path(), &up));
    assert!(first.contains("up: GHCR-like"), "{first}");
    for (port, name) in [(ghcr, "ghcr"), (hub, "hub")] {
        assert_eq!(
            v2_status(port, &dir.join(name).join("ca.crt")),
            401,
            "{name}"
        );
        assert!(trusted(port).is_file(), "{name}'s CA in certs.d");
    }
    for secret in ["password", "user"] {
        let mode = std::fs::metadata(dir.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    let password = std::fs::read_to_string(dir.join("password")).unwrap();
    assert!(
        !first.contains(password.trim()),
        "the password is never printed"
    );

    let again = succeeded(&script(state.path(), certs_d.path(), &up));
    assert!(again.contains("already running"), "{again}");

    succeeded(&script(state.path(), certs_d.path(), &["hosted-down", "t"]));
    for port in [ghcr, hub] {
        assert!(!trusted(port).exists(), "127.0.0.1:{port} left in certs.d");
        assert_eq!(
            v2_status(port, &dir.join("ghcr/ca.crt")),
            0,
            "still serving on {port}"
        );
    }
    // The password outlives a stop (the demo's DOCKER_CONFIG login stays good); a wipe removes it.
    assert!(dir.join("password").is_file());
    succeeded(&script(state.path(), certs_d.path(), &["hosted-wipe", "t"]));
    assert!(!dir.exists());
}
