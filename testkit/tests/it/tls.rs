//! TLS in the test kit, seen by real clients: a `distribution` registry serving HTTPS with a certificate from the
//! harness's CA (curl and skopeo trust it only when given the CA), the fault proxy on both TLS legs, and the
//! CONNECT proxy (a stand-in for a company's HTTPS proxy) tunnelling, slowing and stalling TLS.

use std::process::{Command, Output};

use testkit::{tls, Ca, Registry};

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(args)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .expect("running curl")
}

/// curl's exit code and the HTTP status it printed (`-w %{http_code}`).
#[track_caller]
fn curl_status(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec![
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "20",
    ];
    all.extend_from_slice(args);
    let output = curl(&all);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn a_tls_registry_answers_only_clients_that_trust_its_ca() {
    let ca = Ca::new().unwrap();
    let registry = Registry::builder().tls(&ca).start().unwrap();
    assert!(registry.is_tls());
    assert_eq!(registry.ca_pem(), Some(ca.pem()));
    assert_eq!(registry.base_url(), format!("https://{}", registry.host()));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path()).unwrap();
    let url = format!("{}/v2/", registry.base_url());

    let ca_arg = ca_file.to_str().unwrap();
    assert_eq!(
        curl_status(&["--cacert", ca_arg, &url]),
        (Some(0), "200".to_owned())
    );
    let localhost = format!(
        "https://localhost:{}/v2/",
        registry.host().rsplit_once(':').unwrap().1
    );
    assert_eq!(
        curl_status(&["--cacert", ca_arg, &localhost]),
        (Some(0), "200".to_owned())
    );
    // 60: the peer's certificate cannot be authenticated with the known CA certificates.
    assert_eq!(curl_status(&[&url]).0, Some(60));
    let other_dir = tempfile::tempdir().unwrap();
    let other = Ca::new().unwrap().write(other_dir.path()).unwrap();
    assert_eq!(
        curl_status(&["--cacert", other.to_str().unwrap(), &url]).0,
        Some(60)
    );
    // Plain HTTP to the TLS port is answered as Go answers it, not served.
    assert_eq!(
        curl_status(&[&format!("http://{}/v2/", registry.host())]),
        (Some(0), "400".to_owned())
    );
}

/// The system bundle with the CA added, bind-mounted over the system's in a mount namespace of curl's own
/// (private propagation, so the machine's store never changes): curl then trusts the registry with no flag.
#[test]
fn the_ca_in_a_private_copy_of_the_system_store_is_trusted() {
    let ca = Ca::new().unwrap();
    let registry = Registry::builder().tls(&ca).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = tls::bundle_with_system(&ca, dir.path()).unwrap();
    let url = format!("{}/v2/", registry.base_url());
    let script = format!(
        "mount --bind {} {} && curl -sS -o /dev/null -w %{{http_code}} --max-time 20 {url}",
        bundle.display(),
        tls::SYSTEM_BUNDLE
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("running unshare");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "200");
    // Outside that namespace the system store is as it was.
    assert_eq!(curl_status(&[&url]).0, Some(60));
}
