//! One attempt of a registry request that failed: why, and whether another may succeed. Made by the transport
//! and the client's requests, judged by the client's retry ([`crate::failure::retry`]).

use std::time::Duration;

use crate::failure::FailureKind;

/// How a registry refused a request after a token exchange with docker's login, which is how GHCR and Docker
/// Hub say a repository does not exist (and how they refuse one this login may not see: they look alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absence {
    /// 403 (GHCR's `DENIED`): a push by an account that may creates the repository.
    Denied,
    /// 401 with a challenge again, the token notwithstanding (Docker Hub, whose token service grants nothing on
    /// a repository that does not exist): a push is refused too, so the repository is created first.
    Challenged,
}

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) kind: FailureKind,
    pub(super) cause: String,
    pub(super) transient: bool,
    pub(super) retry_after: Option<Duration>,
    /// The HTTP status, when the registry answered one.
    pub(super) status: Option<u16>,
    /// See [`super::RegistryError::absence`].
    pub(super) absence: Option<Absence>,
}

impl Failure {
    pub(super) fn transient(kind: FailureKind, cause: impl Into<String>) -> Failure {
        Failure {
            kind,
            cause: cause.into(),
            transient: true,
            retry_after: None,
            status: None,
            absence: None,
        }
    }

    pub(super) fn fatal(kind: FailureKind, cause: impl Into<String>) -> Failure {
        Failure {
            kind,
            cause: cause.into(),
            transient: false,
            retry_after: None,
            status: None,
            absence: None,
        }
    }
}
