//! The fault proxy in front of a real registry, seen by real clients: with no fault they work as they do against
//! the registry itself, and each fault reaches them as the failure it imitates.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use stack_images::{
    docker::{Docker, DockerCommand},
    Digest,
};
use testkit::{fixtures, Fault, FaultProxy, Registry, RequestKind};

use crate::common::{skopeo, succeeded};

/// Every manifest type a registry may hold for the fixture, as docker's clients ask for them.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A registry holding the busybox fixture (pushed around the proxy), and a proxy in front of it.
struct Setup {
    // Dropped first: the proxy, then the registry behind it.
    proxy: FaultProxy,
    _registry: Registry,
    /// `test/fixture:1` through the proxy.
    tag: String,
    index: Digest,
    /// The first layer of the fixture's first platform: a blob of about a megabyte.
    layer: Digest,
}

impl Setup {
    fn new() -> Setup {
        let registry = Registry::start().unwrap();
        let index = fixtures::push_busybox(
            &format!("{}/fixture:1", registry.namespace("test")),
            "",
            false,
        )
        .unwrap();
        let index = Digest::parse(&index).unwrap();
        let proxy = FaultProxy::in_front_of(&registry).unwrap();
        let tag = format!("{}/fixture:1", proxy.namespace("test"));
        let mut setup = Setup {
            proxy,
            _registry: registry,
            tag,
            index,
            layer: Digest::of(b""),
        };
        let index: serde_json::Value =
            serde_json::from_slice(&setup.get("manifests/1").stdout).unwrap();
        let manifest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&setup.get(&format!("manifests/{manifest}")).stdout).unwrap();
        setup.layer = Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap()).unwrap();
        setup
    }

    /// `http://127.0.0.1:PORT/v2/test/fixture/{path}` through the proxy.
    fn url(&self, path: &str) -> String {
        format!("http://{}/v2/test/fixture/{path}", self.proxy.host())
    }

    /// `curl` GET of `path` under the fixture's repository, with the manifest types accepted.
    fn get(&self, path: &str) -> Output {
        curl(&[
            "-sS",
            "-H",
            &format!("Accept: {MANIFEST_TYPES}"),
            &self.url(path),
        ])
    }
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(args)
        .output()
        .expect("running curl")
}

#[test]
fn docker_skopeo_and_curl_work_through_the_proxy_without_faults() {
    let setup = Setup::new();
    let proxy = &setup.proxy;

    // A two-platform push by the engine (containerd's pusher), through the proxy.
    let pushed = fixtures::push_busybox(
        &format!("{}/pushed:1", proxy.namespace("test")),
        "LABEL through=proxy\n",
        true,
    )
    .unwrap();
    assert!(
        proxy.count(RequestKind::BlobUpload) > 0,
        "{:#?}",
        proxy.requests()
    );
    assert!(
        proxy.count(RequestKind::ManifestPut) > 0,
        "{:#?}",
        proxy.requests()
    );

    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", setup.tag),
    ]);
    assert_eq!(Digest::of(succeeded(&raw)), setup.index);

    let raw = Docker::new()
        .unwrap()
        .output(&DockerCommand::inspect_raw(&setup.tag))
        .unwrap();
    assert_eq!(Digest::of(&raw), setup.index);
    let raw = Docker::new()
        .unwrap()
        .output(&DockerCommand::inspect_raw(&format!(
            "{}/pushed:1",
            proxy.namespace("test")
        )))
        .unwrap();
    assert_eq!(Digest::of(&raw).as_str(), pushed);

    // A pull by the engine (containerd's fetcher), then the image is removed again.
    let docker = Docker::new().unwrap();
    let pulled = format!("{}/pushed:1", proxy.namespace("test"));
    docker
        .run(&DockerCommand::new(["pull", "--quiet", &pulled]))
        .unwrap();
    docker
        .run(&DockerCommand::new(["image", "rm", &pulled]))
        .unwrap();

    let copy = format!("{}/copy:1", proxy.namespace("test"));
    succeeded(&skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}", setup.tag),
        &format!("docker://{copy}"),
    ]));
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{copy}"),
    ]);
    assert_eq!(Digest::of(succeeded(&raw)), setup.index);

    let layer = setup.get(&format!("blobs/{}", setup.layer));
    assert_eq!(Digest::of(succeeded(&layer)), setup.layer);
    let head = curl(&["-sS", "-I", &setup.url(&format!("blobs/{}", setup.layer))]);
    let head = String::from_utf8_lossy(succeeded(&head)).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", layer.stdout.len())),
        "{head}"
    );

    assert!(proxy.requests().iter().all(|r| r.fault.is_none()));
    assert!(proxy.count(RequestKind::Ping) > 0);
    assert!(proxy.count(RequestKind::ManifestGet) > 0);
    assert!(proxy.count(RequestKind::BlobGet) > 0);
    assert!(proxy.count(RequestKind::BlobHead) > 0);
}

#[track_caller]
fn check_status(
    setup: &Setup,
    fault: Fault,
    expected_status: &str,
    expected_retry_after: Option<&str>,
) {
    setup
        .proxy
        .set(RequestKind::ManifestGet, fault.clone().times(1));
    let output = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-H",
        &format!("Accept: {MANIFEST_TYPES}"),
        &setup.url("manifests/1"),
    ]);
    let head = String::from_utf8_lossy(succeeded(&output)).to_lowercase();
    assert!(
        head.starts_with(&format!("http/1.1 {expected_status} ")),
        "{fault:?}: {head}"
    );
    let retry_after = head
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .map(str::trim);
    assert_eq!(retry_after, expected_retry_after, "{fault:?}: {head}");
    // Used up: the next request is forwarded.
    assert_eq!(
        Digest::of(succeeded(&setup.get("manifests/1"))),
        setup.index,
        "{fault:?}"
    );
}

#[test]
fn rate_limits_and_server_errors_reach_the_client_with_their_headers() {
    let setup = Setup::new();
    check_status(
        &setup,
        Fault::RateLimited {
            retry_after: Some(7),
        },
        "429",
        Some("7"),
    );
    check_status(
        &setup,
        Fault::RateLimited { retry_after: None },
        "429",
        None,
    );
    check_status(&setup, Fault::Status(500), "500", None);
    check_status(&setup, Fault::Status(502), "502", None);
    check_status(&setup, Fault::Status(503), "503", None);
    assert_eq!(setup.proxy.faulted(RequestKind::ManifestGet), 5);
    assert_eq!(setup.proxy.count(RequestKind::ManifestGet), 10 + 2);
}

/// curl's exit code for a GET of `path` under `fault`, and how long it took.
#[track_caller]
fn check_broken(
    setup: &Setup,
    kind: RequestKind,
    path: &str,
    fault: Fault,
    expected_exit: i32,
) -> Duration {
    setup.proxy.set(kind, fault.clone().times(1));
    let started = Instant::now();
    let output = curl(&[
        "-sS",
        "--max-time",
        "2",
        "-o",
        "/dev/null",
        &setup.url(path),
    ]);
    let took = started.elapsed();
    assert_eq!(
        output.status.code(),
        Some(expected_exit),
        "{fault:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

#[test]
fn broken_connections_reach_the_client_as_transport_errors() {
    let setup = Setup::new();
    let blob = format!("blobs/{}", setup.layer);
    // curl's exit codes: 52 empty reply, 56 failure receiving (reset), 18 partial file, 28 timeout.
    check_broken(
        &setup,
        RequestKind::ManifestGet,
        "manifests/1",
        Fault::Refuse,
        52,
    );
    check_broken(
        &setup,
        RequestKind::ManifestGet,
        "manifests/1",
        Fault::Reset,
        56,
    );
    check_broken(&setup, RequestKind::BlobGet, &blob, Fault::CutBody, 18);
    check_broken(
        &setup,
        RequestKind::ManifestGet,
        "manifests/1",
        Fault::CutBody,
        18,
    );
    let took = check_broken(
        &setup,
        RequestKind::ManifestGet,
        "manifests/1",
        Fault::Stall,
        28,
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    let took = check_broken(
        &setup,
        RequestKind::BlobGet,
        &blob,
        Fault::Delay(Duration::from_secs(10)),
        28,
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn a_flipped_byte_keeps_the_length_and_changes_the_digest() {
    let setup = Setup::new();
    let blob = format!("blobs/{}", setup.layer);
    let whole = setup.get(&blob).stdout;

    setup
        .proxy
        .set(RequestKind::BlobGet, Fault::FlipByte.times(1));
    let flipped = setup.get(&blob).stdout;
    assert_eq!(flipped.len(), whole.len());
    assert_ne!(Digest::of(&flipped), setup.layer);
    assert_eq!(Digest::of(&setup.get(&blob).stdout), setup.layer);

    // What a reader by tag gets: no digest to check the bytes against but its own sha256.
    setup
        .proxy
        .set(RequestKind::ManifestGet, Fault::FlipByte.times(1));
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", setup.tag),
    ]);
    let raw = succeeded(&raw);
    assert_ne!(Digest::of(raw), setup.index);
    assert_eq!(raw.len(), setup.get("manifests/1").stdout.len());

    // By digest, the tools this project calls today hand the flipped bytes over without a word (skopeo 1.9,
    // buildx 0.13): the reason issue 9 checks every digest in process. Should a tool start refusing them, this
    // assertion fails and can go.
    let by_digest = format!("{}/fixture@{}", setup.proxy.namespace("test"), setup.index);
    setup
        .proxy
        .set(RequestKind::ManifestGet, Fault::FlipByte.times(1));
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{by_digest}"),
    ]);
    assert_ne!(Digest::of(succeeded(&raw)), setup.index);
    setup
        .proxy
        .set(RequestKind::ManifestGet, Fault::FlipByte.times(1));
    let raw = Docker::new()
        .unwrap()
        .output(&DockerCommand::inspect_raw(&by_digest))
        .unwrap();
    assert_ne!(Digest::of(&raw), setup.index);
    assert_eq!(setup.proxy.faulted(RequestKind::ManifestGet), 3);
}

#[test]
fn slow_answers_arrive_late_but_whole() {
    let setup = Setup::new();
    let blob = format!("blobs/{}", setup.layer);

    setup.proxy.set(
        RequestKind::BlobGet,
        Fault::Delay(Duration::from_millis(800)).times(1),
    );
    let started = Instant::now();
    assert_eq!(Digest::of(succeeded(&setup.get(&blob))), setup.layer);
    assert!(started.elapsed() >= Duration::from_millis(800));

    let trickle = Fault::Trickle {
        chunk: 256 * 1024,
        pause: Duration::from_millis(200),
    };
    setup.proxy.set(RequestKind::BlobGet, trickle.times(1));
    let started = Instant::now();
    let whole = setup.get(&blob);
    assert_eq!(Digest::of(succeeded(&whole)), setup.layer);
    let pauses = whole.stdout.len().div_ceil(256 * 1024) as u32 - 1;
    assert!(
        started.elapsed() >= Duration::from_millis(200) * pauses,
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn faults_can_target_one_repository_and_follow_each_other() {
    let setup = Setup::new();
    let proxy = &setup.proxy;
    proxy.set(
        RequestKind::ManifestGet,
        Fault::Status(503).matching("/other/"),
    );
    assert_eq!(
        Digest::of(succeeded(&setup.get("manifests/1"))),
        setup.index
    );

    proxy.set(RequestKind::ManifestGet, Fault::Status(503).times(2));
    proxy.add(RequestKind::ManifestGet, Fault::FlipByte.times(1));
    let statuses: Vec<_> = (0..4)
        .map(|_| {
            let output = curl(&[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("Accept: {MANIFEST_TYPES}"),
                &setup.url("manifests/1"),
            ]);
            String::from_utf8(output.stdout).unwrap()
        })
        .collect();
    assert_eq!(statuses, ["503", "503", "200", "200"]);
    let faults: Vec<_> = proxy.requests().into_iter().map(|r| r.fault).collect();
    let tail = &faults[faults.len() - 4..];
    assert_eq!(
        tail,
        [
            Some(Fault::Status(503)),
            Some(Fault::Status(503)),
            Some(Fault::FlipByte),
            None
        ]
    );

    proxy.set(RequestKind::ManifestGet, Fault::Status(503));
    proxy.clear();
    assert_eq!(
        Digest::of(succeeded(&setup.get("manifests/1"))),
        setup.index
    );
}

#[test]
fn dropping_the_proxy_ends_a_stalled_connection_at_once() {
    let registry = Registry::start().unwrap();
    let proxy = FaultProxy::in_front_of(&registry).unwrap();
    proxy.set(RequestKind::Ping, Fault::Stall);
    let mut client = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            &format!("http://{}/v2/", proxy.host()),
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.count(RequestKind::Ping) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(proxy.count(RequestKind::Ping), 1);
    assert!(
        client.try_wait().unwrap().is_none(),
        "curl should still be waiting"
    );

    let started = Instant::now();
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let status = client.wait().unwrap();
    assert_eq!(status.code(), Some(52), "curl sees an empty reply");
}

#[test]
fn a_chunked_upload_follows_the_registrys_location_through_the_proxy() {
    let registry = Registry::start().unwrap();
    let proxy = FaultProxy::in_front_of(&registry).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Over a megabyte, so curl also asks `Expect: 100-continue` before sending it.
    let blob: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect();
    let file = dir.path().join("blob");
    std::fs::write(&file, &blob).unwrap();
    let digest = Digest::of(&blob);

    let start = curl(&[
        "-sS",
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%{redirect_url}%header{location}",
        &format!("http://{}/v2/test/upload/blobs/uploads/", proxy.host()),
    ]);
    let location = String::from_utf8(succeeded(&start).to_vec()).unwrap();
    assert!(
        location.starts_with(&format!("http://{}/", proxy.host())),
        "{location}"
    );

    let patch = curl(&[
        "-sS",
        "-X",
        "PATCH",
        "-o",
        "/dev/null",
        "-w",
        "%header{location}",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &location,
    ]);
    let location = String::from_utf8(succeeded(&patch).to_vec()).unwrap();
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = curl(&[
        "-sS",
        "-X",
        "PUT",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{location}{separator}digest={digest}"),
    ]);
    assert_eq!(succeeded(&put), b"201");

    let url = format!("http://{}/v2/test/upload/blobs/{digest}", proxy.host());
    assert_eq!(Digest::of(succeeded(&curl(&["-sS", &url]))), digest);
    assert_eq!(
        proxy.count(RequestKind::BlobUpload),
        3,
        "{:#?}",
        proxy.requests()
    );
}
