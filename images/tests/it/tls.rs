//! The registry client against real `distribution` registries serving TLS with a certificate from a throwaway CA
//! (`testkit::tls::Ca`): trusted through docker's `certs.d` (a temporary root given to the client), through the
//! system store (a child process that sees a bundle with the CA bind-mounted over the system's, in its own mount
//! namespace), or not at all; and through `testkit::ConnectProxy`, a stand-in for a company's HTTPS proxy, with
//! `NO_PROXY` spelled with spaces, a rate limit and a stall.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use stack_images::{
    docker::FailureKind,
    registry::{
        transport::{Proxies, TransportSettings},
        Policy, RegistryClient,
    },
    Digest, ImageRef,
};
use testkit::{
    connect::{ConnectProxy, Limits},
    tls::Ca,
    Registry,
};

use crate::common::{assert_failure, docker_config, quick};

/// An OCI index with no children: what distribution stores without any blob, enough to see bytes cross TLS.
const EMPTY_INDEX: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// A client on `policy` with `certs_d` as docker's `certs.d` and the proxy variables `vars`, never the
/// machine's own settings or logins.
fn client(
    policy: Policy,
    certs_d: &Path,
    vars: &[(&str, &str)],
    proxy_loopback: bool,
) -> (RegistryClient, tempfile::TempDir) {
    let proxies = Proxies::from_vars(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let settings = TransportSettings {
        certs_d: certs_d.to_path_buf(),
        proxies,
        insecure: Default::default(),
        proxy_loopback,
    };
    let logins = docker_config("");
    let client =
        RegistryClient::with_settings(policy, Ok(settings)).with_docker_config(logins.path());
    (client, logins)
}

fn reference(registry: &Registry, tag: &str) -> ImageRef {
    format!("{}/empty:{tag}", registry.namespace("tls"))
        .parse()
        .unwrap()
}

#[test]
fn a_registry_whose_ca_is_in_docker_s_certs_d_is_trusted() -> anyhow::Result<()> {
    let ca = Ca::new()?;
    let registry = Registry::builder().tls(&ca).start()?;
    let certs_d = tempfile::tempdir()?;
    let _trusted = ca.trust_for_docker(certs_d.path(), &registry.host())?;
    let (client, _logins) = client(quick(), certs_d.path(), &[], false);
    let pushed = client.put_manifest(&reference(&registry, "1"), EMPTY_INDEX, INDEX_TYPE)?;
    assert_eq!(pushed, Digest::of(EMPTY_INDEX));
    let read = client.get_manifest(&reference(&registry, "1"))?;
    assert_eq!(read.bytes, EMPTY_INDEX);
    Ok(())
}

#[test]
fn a_registry_whose_ca_is_nowhere_is_refused_at_once_naming_the_host_and_where_to_put_it(
) -> anyhow::Result<()> {
    let ca = Ca::new()?;
    let registry = Registry::builder().tls(&ca).start()?;
    let certs_d = tempfile::tempdir()?;
    let (client, _logins) = client(quick(), certs_d.path(), &[], false);
    let started = Instant::now();
    let error = client.get_manifest(&reference(&registry, "1")).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "{error}");
    assert_failure(&error, FailureKind::Certificate, 1);
    let text = error.to_string();
    let host = registry.host();
    for expected in [
        format!("{host}'s TLS certificate is not trusted"),
        format!("{}/{host}/ca.crt", certs_d.path().display()),
        "system store".to_owned(),
        "SSL_CERT_FILE".to_owned(),
        format!("put the CA that signed {host}'s certificate in one of them"),
    ] {
        assert!(text.contains(&expected), "{expected:?} in {text}");
    }
    Ok(())
}

#[test]
fn a_malformed_crt_in_certs_d_is_an_error_naming_the_file() -> anyhow::Result<()> {
    let ca = Ca::new()?;
    let registry = Registry::builder().tls(&ca).start()?;
    let certs_d = tempfile::tempdir()?;
    let dir = certs_d.path().join(registry.host());
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.crt"), "not a certificate")?;
    let (client, _logins) = client(quick(), certs_d.path(), &[], false);
    let error = client.get_manifest(&reference(&registry, "1")).unwrap_err();
    assert_failure(&error, FailureKind::Certificate, 1);
    assert!(
        error.to_string().contains(&format!(
            "{}/ca.crt holds no PEM certificate",
            dir.display()
        )),
        "{error}"
    );
    Ok(())
}

/// The variable that makes [`system_store_child`] run: the registry's host.
const CHILD_VARIABLE: &str = "STACK_TLS_TEST_SYSTEM_STORE_HOST";

#[test]
fn a_registry_whose_ca_is_in_the_system_store_is_trusted() -> anyhow::Result<()> {
    let ca = Ca::new()?;
    let registry = Registry::builder().tls(&ca).start()?;
    let dir = tempfile::tempdir()?;
    let bundle = testkit::tls::bundle_with_system(&ca, dir.path())?;
    // The machine's store is left alone: the child sees the bundle in a mount namespace of its own.
    let mut unshared = Command::new("unshare");
    unshared
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" \"$1\" && shift && exec \"$@\"",
        ])
        .arg(&bundle)
        .arg(testkit::tls::SYSTEM_BUNDLE)
        .arg(std::env::current_exe()?)
        .env_remove("SSL_CERT_FILE");
    run_system_store_child(unshared, &registry)
}

#[test]
fn a_registry_whose_ca_is_in_the_bundle_ssl_cert_file_names_is_trusted() -> anyhow::Result<()> {
    let ca = Ca::new()?;
    let registry = Registry::builder().tls(&ca).start()?;
    let dir = tempfile::tempdir()?;
    let bundle = ca.write(dir.path())?;
    // A process of its own: the system store is read once per process.
    let mut child = Command::new(std::env::current_exe()?);
    child.env("SSL_CERT_FILE", &bundle);
    run_system_store_child(child, &registry)
}

/// Runs [`system_store_child`] through `command` (this test binary, or what execs it with the arguments that
/// follow) for `registry`'s host, `SSL_CERT_DIR` unset, and asserts the child read the registry: one place for
/// what both ways of trusting the system store expect.
fn run_system_store_child(mut command: Command, registry: &Registry) -> anyhow::Result<()> {
    let output = command
        .args(["--exact", "tls::system_store_child", "--nocapture"])
        .env(CHILD_VARIABLE, registry.host())
        .env_remove("SSL_CERT_DIR")
        .output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("read through the system store"), "{said}");
    Ok(())
}

/// Run by [`a_registry_whose_ca_is_in_the_system_store_is_trusted`] in its mount namespace (and with
/// `SSL_CERT_FILE`); nothing otherwise.
#[test]
fn system_store_child() {
    let Ok(host) = std::env::var(CHILD_VARIABLE) else {
        return;
    };
    let certs_d = tempfile::tempdir().unwrap();
    let (client, _logins) = client(quick(), certs_d.path(), &[], false);
    let reference: ImageRef = format!("{host}/tls/empty:1").parse().unwrap();
    client
        .put_manifest(&reference, EMPTY_INDEX, INDEX_TYPE)
        .unwrap();
    assert_eq!(client.get_manifest(&reference).unwrap().bytes, EMPTY_INDEX);
    println!("read through the system store");
}

#[test]
fn https_proxy_is_used_unless_no_proxy_names_the_host_spaces_and_all() -> anyhow::Result<()> {
    let ca = Ca::new()?;
    let registry = Registry::builder().tls(&ca).start()?;
    let certs_d = tempfile::tempdir()?;
    let _trusted = ca.trust_for_docker(certs_d.path(), &registry.host())?;
    let proxy = ConnectProxy::start(Limits::default())?;
    let url = proxy.url();
    let host = registry.host();
    let (direct, _a) = client(
        quick(),
        certs_d.path(),
        &[
            ("HTTPS_PROXY", &url),
            ("NO_PROXY", &format!("localhost, {host}")),
        ],
        true,
    );
    direct.put_manifest(&reference(&registry, "1"), EMPTY_INDEX, INDEX_TYPE)?;
    assert_eq!(proxy.tunnels(), Vec::<String>::new());
    let (proxied, _b) = client(
        quick(),
        certs_d.path(),
        &[
            ("HTTPS_PROXY", &url),
            ("NO_PROXY", "localhost, registry.example"),
        ],
        true,
    );
    assert_eq!(
        proxied.get_manifest(&reference(&registry, "1"))?.bytes,
        EMPTY_INDEX
    );
    let tunnels = proxy.tunnels();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == host),
        "{tunnels:?}"
    );
    Ok(())
}

/// The busybox fixture with a layer of `megabytes` of random bytes, pushed to `registry` for linux/amd64 and
/// linux/arm64; its index digest.
fn push_big(registry: &Registry, megabytes: u32) -> anyhow::Result<ImageRef> {
    let tag = format!("{}/big:1", registry.namespace("tls"));
    let digest = testkit::fixtures::push_busybox(
        &tag,
        &format!("RUN head -c {}000000 /dev/urandom > /big", megabytes),
        false,
    )?;
    format!("{tag}@{digest}").parse()
}

#[test]
fn a_big_blob_through_a_slow_proxy_finishes_past_the_operation_timeout_and_a_stall_is_stopped(
) -> anyhow::Result<()> {
    let ca = Ca::new()?;
    let source = Registry::builder().tls(&ca).start()?;
    let destination = Registry::start()?;
    let certs_d = tempfile::tempdir()?;
    let _trusted = ca.trust_for_docker(certs_d.path(), &source.host())?;
    let big = push_big(&source, 200)?;
    let proxy = ConnectProxy::start(Limits {
        bytes_per_sec: Some(20_000_000),
        stall_after_bytes: None,
    })?;
    let url = proxy.url();
    // The destination is reached directly (`NO_PROXY` by host:port); the source through the slow tunnel.
    let no_proxy = format!("localhost, {}", destination.host());
    let vars = [
        ("HTTPS_PROXY", url.as_str()),
        ("NO_PROXY", no_proxy.as_str()),
    ];
    let policy = Policy {
        operation_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        min_rate: 16_000_000,
        ..quick()
    };
    let (copier, _logins) = client(policy.clone(), certs_d.path(), &vars, true);
    let to: ImageRef = format!("{}/big:1", destination.namespace("tls")).parse()?;
    let started = Instant::now();
    let copied = copier.copy(&big, &to)?;
    let took = started.elapsed();
    assert!(copied.bytes_sent > 400_000_000, "{copied:?}");
    // 200 MB a platform at 20 MB/s: 10 s each, past the operation's 2 s, within the blob's 2 s + 200 MB / 16 MB/s
    // (the issue's case, 200 MB over 5 Mbit/s against 300 s, scaled to seconds).
    assert!(took > policy.operation_timeout, "{took:?}");
    assert!(
        proxy
            .tunnel_stats()
            .iter()
            .any(|t| t.to_client > 200_000_000),
        "{:?}",
        proxy.tunnel_stats()
    );

    // A stall after 1 MB: each attempt ends at the read timeout, long before the blob's deadline.
    proxy.set_limits(Limits {
        bytes_per_sec: None,
        stall_after_bytes: Some(1_000_000),
    });
    let again: ImageRef = format!("{}/stalled:1", destination.namespace("other")).parse()?;
    let (stalling, _logins) = client(
        Policy {
            attempts: 2,
            read_timeout: Duration::from_millis(500),
            ..policy.clone()
        },
        certs_d.path(),
        &vars,
        true,
    );
    let started = Instant::now();
    let error = stalling.copy(&big, &again).unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.kind, FailureKind::Unreachable, "{error}");
    // Ended by the per-read timeout, not by the blob's deadline.
    assert!(error.to_string().contains("timeout: per read"), "{error}");
    assert!(took < policy.blob_timeout(50_000_000), "{took:?} {error}");
    let stalled = proxy
        .tunnel_stats()
        .into_iter()
        .filter(|t| t.to_client >= 1_000_000 && t.to_client < 2_000_000)
        .count();
    assert!(
        stalled > 0,
        "the stall never fired: {:?}",
        proxy.tunnel_stats()
    );
    Ok(())
}
