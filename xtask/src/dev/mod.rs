//! Development tools, not on the release path: `make demo`, `make bench` and the stand-in bases both release.

pub mod bench;
pub mod demo;
pub mod first_start;
pub mod standins;
