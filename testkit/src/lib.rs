//! Real parts for the integration tests: `distribution` registries on free loopback ports, and fixture images
//! built on this machine from static busybox (the stand-in for bases that cannot be pulled here), and a proxy that
//! injects faults between a client and a registry.

pub mod faults;
pub mod fixtures;
pub mod registry;
pub mod stack;

pub use faults::{Fault, FaultProxy, RequestKind};
pub use registry::Registry;
