//! TLS in the test kit, seen by real clients: a `distribution` registry serving HTTPS with a certificate from the
//! harness's CA (curl and skopeo trust it only when given the CA), the fault proxy on both TLS legs, and the
//! CONNECT proxy (a stand-in for a company's HTTPS proxy) tunnelling, slowing and stalling TLS.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use stack_images::Digest;
use testkit::{
    tls, Ca, ConnectProxy, Fault, FaultProxy, Limits, Registry, RequestKind, TokenAuthConfig,
};

use crate::common::{skopeo, succeeded};

/// A TLS registry, its CA written as `DIR/ca.crt`: what `curl --cacert` and `skopeo --cert-dir DIR` take.
struct TlsRegistry {
    registry: Registry,
    ca_dir: tempfile::TempDir,
    ca_file: PathBuf,
}

impl TlsRegistry {
    fn start() -> TlsRegistry {
        let ca = Ca::new().unwrap();
        let registry = Registry::builder().tls(&ca).start().unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write(ca_dir.path()).unwrap();
        TlsRegistry {
            registry,
            ca_dir,
            ca_file,
        }
    }

    fn ca_arg(&self) -> &str {
        self.ca_file.to_str().unwrap()
    }

    fn cert_dir(&self) -> &str {
        self.ca_dir.path().to_str().unwrap()
    }

    /// Uploads `bytes` as a blob of `repository` (POST, then PUT with the digest) and returns its digest.
    fn push_blob(&self, repository: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let base = self.registry.base_url();
        let headers = curl_headers(&[
            "--cacert",
            self.ca_arg(),
            "-X",
            "POST",
            &format!("{base}/v2/{repository}/blobs/uploads/"),
        ]);
        let location = headers
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("location").then(|| value.trim())
            })
            .unwrap_or_else(|| panic!("no Location in {headers}"));
        let location = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location.to_owned()
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), bytes).unwrap();
        self.put(
            "application/octet-stream",
            &format!("@{}", file.path().display()),
            &format!("{location}{separator}digest={digest}"),
            repository,
        );
        digest
    }

    /// Pushes a one-layer OCI image (a stand-in layer of a few bytes) under `repository:tag` and returns the
    /// manifest's digest.
    fn push_image(&self, repository: &str, tag: &str) -> Digest {
        let layer = self.push_blob(repository, b"stand-in layer: not a real file system");
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
        );
        let config_digest = self.push_blob(repository, config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{}}}]}}"#,
            config.len(),
            "stand-in layer: not a real file system".len()
        );
        self.put(
            OCI_MANIFEST,
            &manifest,
            &format!(
                "{}/v2/{repository}/manifests/{tag}",
                self.registry.base_url()
            ),
            &format!("{repository}:{tag}"),
        );
        Digest::of(manifest.as_bytes())
    }

    /// PUTs `data` (what curl's `--data-binary` takes: the bytes, or `@FILE`) to `url` as `content_type`,
    /// trusting the CA; the registry must take it (201), `what` naming it in the failure.
    #[track_caller]
    fn put(&self, content_type: &str, data: &str, url: &str, what: &str) {
        let (code, status) = curl_status(&[
            "--cacert",
            self.ca_arg(),
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
            data,
            url,
        ]);
        assert_eq!((code, status.as_str()), (Some(0), "201"), "{what}");
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

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

/// The response headers curl printed (`-D -`) for a request with these arguments, its body thrown away; the
/// request must succeed.
#[track_caller]
fn curl_headers(args: &[&str]) -> String {
    let mut all = vec!["-sS", "-D", "-", "-o", "/dev/null"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(succeeded(&curl(&all))).into_owned()
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

#[test]
fn a_tls_registry_takes_htpasswd_logins_or_distributions_token_auth() {
    let ca = Ca::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path()).unwrap();
    let ca_arg = ca_file.to_str().unwrap();

    let registry = Registry::builder()
        .tls(&ca)
        .htpasswd("pusher", "s3cret-pass")
        .start()
        .unwrap();
    let url = format!("{}/v2/", registry.base_url());
    assert_eq!(
        curl_status(&["--cacert", ca_arg, &url]),
        (Some(0), "401".to_owned())
    );
    assert_eq!(
        curl_status(&["--cacert", ca_arg, "-u", "pusher:s3cret-pass", &url]),
        (Some(0), "200".to_owned())
    );

    // Any certificate will do as the token signers' bundle: no token is asked for here, only the challenge.
    let token = TokenAuthConfig {
        realm: "https://127.0.0.1:1/token".to_owned(),
        service: "registry.test".to_owned(),
        issuer: "token-standin".to_owned(),
        root_cert_bundle: ca_file.clone(),
    };
    let registry = Registry::builder()
        .tls(&ca)
        .token(token.clone())
        .start()
        .unwrap();
    assert_eq!(registry.token_auth(), Some(&token));
    let headers = curl_headers(&[
        "--max-time",
        "20",
        "--cacert",
        ca_arg,
        &format!("{}/v2/", registry.base_url()),
    ]);
    // distribution speaks HTTP/2 over TLS when the client offers it, as GHCR and Docker Hub do.
    assert!(
        headers
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(" 401 ") || l.ends_with(" 401")),
        "{headers}"
    );
    assert!(
        headers.contains(r#"Bearer realm="https://127.0.0.1:1/token",service="registry.test""#),
        "{headers}"
    );

    let both = Registry::builder()
        .htpasswd("pusher", "s3cret-pass")
        .token(token)
        .start();
    assert!(both.is_err());
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

#[test]
fn skopeo_reads_and_copies_from_a_tls_registry_with_the_ca_in_a_cert_dir() {
    let setup = TlsRegistry::start();
    let manifest = setup.push_image("test/tiny", "1");
    let image = format!("docker://{}/test/tiny:1", setup.registry.host());

    let refused = skopeo(&["inspect", "--raw", &image]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("certificate"), "{message}");

    let raw = skopeo(&["inspect", "--raw", "--cert-dir", setup.cert_dir(), &image]);
    assert_eq!(Digest::of(succeeded(&raw)), manifest);

    let out = tempfile::tempdir().unwrap();
    let destination = format!("dir:{}", out.path().join("tiny").display());
    let copied = skopeo(&[
        "copy",
        "--src-cert-dir",
        setup.cert_dir(),
        &image,
        &destination,
    ]);
    succeeded(&copied);
    let copied_manifest = fs::read(out.path().join("tiny/manifest.json")).unwrap();
    assert_eq!(Digest::of(&copied_manifest), manifest);
}

#[test]
fn the_fault_proxy_forwards_over_tls_and_still_injects_faults() {
    let setup = TlsRegistry::start();
    let body = b"a blob read through the fault proxy over TLS".repeat(100);
    let blob = setup.push_blob("test/blob", &body);
    let manifest = setup.push_image("test/tiny", "1");
    let proxy = FaultProxy::in_front_of(&setup.registry).unwrap();
    assert!(proxy.is_tls());
    assert_eq!(proxy.base_url(), format!("https://{}", proxy.host()));
    let ping = format!("{}/v2/", proxy.base_url());
    let blob_url = format!("{}/v2/test/blob/blobs/{blob}", proxy.base_url());

    assert_eq!(
        curl_status(&["--cacert", setup.ca_arg(), &ping]),
        (Some(0), "200".to_owned())
    );
    assert_eq!(proxy.count(RequestKind::Ping), 1);
    // Plain HTTP to the proxy's TLS port is answered as the registry itself answers it.
    assert_eq!(
        curl_status(&[&format!("http://{}/v2/", proxy.host())]),
        (Some(0), "400".to_owned())
    );

    proxy.set(RequestKind::Ping, Fault::Status(503).times(1));
    assert_eq!(
        curl_status(&["--cacert", setup.ca_arg(), &ping]),
        (Some(0), "503".to_owned())
    );
    assert_eq!(proxy.faulted(RequestKind::Ping), 1);

    proxy.set(RequestKind::BlobGet, Fault::FlipByte.times(1));
    let get = |url: &str| {
        let output = curl(&["-sS", "--max-time", "20", "--cacert", setup.ca_arg(), url]);
        succeeded(&output).to_vec()
    };
    let flipped = get(&blob_url);
    assert_eq!(flipped.len(), body.len());
    assert_ne!(Digest::of(&flipped), blob);
    assert_eq!(proxy.faulted(RequestKind::BlobGet), 1);
    assert_eq!(Digest::of(&get(&blob_url)), blob);

    // Broken connections reach a TLS client as transport errors: 18 is curl's "partial file", 56 its "failure
    // receiving network data".
    for (fault, expected) in [(Fault::CutBody, 18), (Fault::Reset, 56)] {
        proxy.set(RequestKind::BlobGet, fault.clone().times(1));
        let before = proxy.faulted(RequestKind::BlobGet);
        let (code, _) = curl_status(&["--cacert", setup.ca_arg(), &blob_url]);
        assert_eq!(code, Some(expected), "{fault:?}");
        assert_eq!(proxy.faulted(RequestKind::BlobGet), before + 1, "{fault:?}");
    }

    // A real client through the proxy, the CA in its cert dir.
    let image = format!("docker://{}/test/tiny:1", proxy.host());
    let raw = skopeo(&["inspect", "--raw", "--cert-dir", setup.cert_dir(), &image]);
    assert_eq!(Digest::of(succeeded(&raw)), manifest);
    assert!(
        proxy.count(RequestKind::ManifestGet) >= 1,
        "{:#?}",
        proxy.requests()
    );
}

#[test]
fn through_a_tls_fault_proxy_locations_point_back_at_it_and_a_stall_ends_on_drop() {
    let setup = TlsRegistry::start();
    let proxy = FaultProxy::in_front_of(&setup.registry).unwrap();
    // The `Host` header goes upstream untouched, so the registry's upload URL names the proxy.
    let headers = curl_headers(&[
        "--max-time",
        "20",
        "--cacert",
        setup.ca_arg(),
        "-X",
        "POST",
        &format!("{}/v2/test/upload/blobs/uploads/", proxy.base_url()),
    ])
    .to_lowercase();
    assert!(
        headers.contains(&format!("location: {}/v2/test/upload/", proxy.base_url())),
        "{headers}"
    );

    proxy.set(RequestKind::Ping, Fault::Stall);
    let mut client = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert", setup.ca_arg()])
        .arg(format!("{}/v2/", proxy.base_url()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.faulted(RequestKind::Ping) == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled request never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped = Instant::now();
    drop(proxy);
    let status = client.wait().unwrap();
    assert!(!status.success());
    assert!(
        dropped.elapsed() < Duration::from_secs(5),
        "{:?}",
        dropped.elapsed()
    );
}

#[test]
fn curl_reaches_a_tls_registry_through_the_connect_proxy() {
    let setup = TlsRegistry::start();
    let proxy = ConnectProxy::start(Limits::default()).unwrap();
    let url = format!("{}/v2/", setup.registry.base_url());
    assert_eq!(
        curl_status(&["-x", &proxy.url(), "--cacert", setup.ca_arg(), &url]),
        (Some(0), "200".to_owned())
    );
    assert_eq!(proxy.tunnels(), [setup.registry.host()]);
    let tunnel = &proxy.tunnel_stats()[0];
    assert!(tunnel.to_server > 0 && tunnel.to_client > 0, "{tunnel:?}");

    // A target off 127.0.0.1 is refused before anything is connected: 56 is curl's "CONNECT tunnel failed".
    let port = setup.registry.host().rsplit_once(':').unwrap().1.to_owned();
    let elsewhere = format!("https://localhost:{port}/v2/");
    let (code, _) = curl_status(&["-x", &proxy.url(), "--cacert", setup.ca_arg(), &elsewhere]);
    assert_eq!(code, Some(56));
    assert_eq!(proxy.refused(), 1);
    assert_eq!(proxy.tunnels().len(), 1);
}

#[test]
fn the_connect_proxy_slows_a_large_body_and_stalls_one() {
    const SIZE: usize = 5 * 1024 * 1024;
    const RATE: u64 = 2 * 1024 * 1024;
    const STALL_AFTER: u64 = 200_000;
    let setup = TlsRegistry::start();
    let body: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let blob = setup.push_blob("test/large", &body);
    let url = format!("{}/v2/test/large/blobs/{blob}", setup.registry.base_url());
    let proxy = ConnectProxy::start(Limits::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let download = |name: &str, max_time: &str| {
        let file = out.path().join(name);
        let started = Instant::now();
        let output = curl(&[
            "-sS",
            "-x",
            &proxy.url(),
            "--cacert",
            setup.ca_arg(),
            "--max-time",
            max_time,
            "-o",
            file.to_str().unwrap(),
            &url,
        ]);
        (
            output.status.code(),
            started.elapsed(),
            fs::read(&file).unwrap_or_default(),
        )
    };

    let (code, unlimited, bytes) = download("unlimited", "60");
    assert_eq!(code, Some(0));
    assert_eq!(Digest::of(&bytes), blob);

    proxy.set_limits(Limits {
        bytes_per_sec: Some(RATE),
        stall_after_bytes: None,
    });
    let (code, limited, bytes) = download("limited", "60");
    assert_eq!(code, Some(0));
    assert_eq!(Digest::of(&bytes), blob);
    // 5 MiB at 2 MiB/s is 2.5 s; the bounds are wide for a busy machine.
    assert!(
        limited >= Duration::from_secs(2) && limited < Duration::from_secs(30),
        "limited {limited:?}, unlimited {unlimited:?}"
    );
    assert!(
        limited > unlimited,
        "limited {limited:?}, unlimited {unlimited:?}"
    );

    proxy.set_limits(Limits {
        bytes_per_sec: None,
        stall_after_bytes: Some(STALL_AFTER),
    });
    let (code, stalled, bytes) = download("stalled", "3");
    // 28: curl's own time bound ended it.
    assert_eq!(code, Some(28), "after {stalled:?}");
    assert!(bytes.len() < STALL_AFTER as usize, "{} bytes", bytes.len());
    let tunnels = proxy.tunnel_stats();
    assert_eq!(tunnels.len(), 3);
    assert_eq!(tunnels[2].to_client, STALL_AFTER);
    assert!(tunnels[1].to_client > SIZE as u64, "{tunnels:?}");
}
