//! Real parts for the integration tests: `distribution` registries on free loopback ports, and fixture images
//! built on this machine: static busybox (the stand-in for bases that cannot be pulled here), and real PHP-FPM,
//! nginx and MariaDB stand-ins made from Debian's archive (`real`).

pub mod fixtures;
pub mod real;
pub mod registry;
pub mod stack;

pub use registry::Registry;
