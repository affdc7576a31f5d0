//! What the registry client tests share: the quick policy, a client that reads docker's logins from the test's own
//! directory, such a directory, the busybox fixture pushed to a registry, and the check of a failure's kind and
//! attempts.

use std::{path::Path, time::Duration};

use stack_images::{
    docker::FailureKind,
    registry::{Policy, RegistryClient, RegistryError},
    Digest,
};
use testkit::{fixtures, Registry};

/// Short numbers, so that a test of give-ups takes seconds.
pub fn quick() -> Policy {
    Policy {
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(20),
        min_rate: 256 * 1024,
        attempts: 4,
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(200),
        retry_after_cap: Duration::from_secs(2),
    }
}

/// A client on the [`quick`] policy that reads docker's logins from `docker_config` alone, never the user's.
pub fn client_with_logins(docker_config: &Path) -> RegistryClient {
    RegistryClient::new(quick()).with_docker_config(docker_config)
}

/// A docker config directory whose `config.json` holds `auths` (the inside of its `auths` object).
pub fn docker_config(auths: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths": {{{auths}}}}}"#),
    )
    .unwrap();
    dir
}

/// Pushes the busybox fixture (with its attestation manifests when `attested`) to `registry` as
/// `test/fixture:1`; returns its index digest.
pub fn push_fixture(registry: &Registry, attested: bool) -> Digest {
    let tag = format!("{}/fixture:1", registry.namespace("test"));
    let digest = fixtures::push_busybox(&tag, "", attested).unwrap();
    Digest::parse(&digest).unwrap()
}

/// `error` is a failure of `kind` after `attempts` attempts.
#[track_caller]
pub fn assert_failure(error: &RegistryError, kind: FailureKind, attempts: u32) {
    assert_eq!((error.kind, error.attempts), (kind, attempts), "{error}");
}
