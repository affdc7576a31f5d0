//! Real parts for the integration tests: `distribution` registries on free loopback ports (plain HTTP or TLS from a
//! test CA in `tls`, open, htpasswd or token auth), fixture images built on this machine (static busybox standing
//! in for bases that cannot be pulled here, and real PHP-FPM, nginx and MariaDB stand-ins made from Debian's
//! archive in `real`), a proxy that injects faults between a client and a registry, a CONNECT proxy standing in
//! for a company's HTTPS proxy (`connect`), and a file server standing in for GitHub's release downloads
//! (`files`).

pub mod connect;
pub mod faults;
pub mod files;
pub mod fixtures;
pub mod hosted;
pub mod noise;
pub mod personality;
pub mod plain_http;
pub mod probe;
pub mod real;
pub mod registry;
pub mod sbom_scanner;
mod server;
pub mod stack;
pub mod tls;
pub mod token;

pub use connect::{ConnectProxy, Limits, Tunnel};
pub use faults::{Fault, FaultProxy, ProxyTls, RequestKind};
pub use files::{unreachable_url, FileServer, Served};
pub use hosted::{docker_login, Accounts, Hosted, Like, TokenTransport};
pub use personality::{HubLimits, Personality, Rule};
pub use registry::{Registry, RegistryBuilder, TokenAuthConfig};
pub use tls::{bundle_with_system, Ca, CertsDirGuard, ServerCert};
pub use token::{Flavor, Grant, Scope, TokenHandler, TokenOptions, TokenRequest, TokenService};
