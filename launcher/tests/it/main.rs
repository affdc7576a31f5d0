//! Integration tests of `20i` against the real Docker engine, loopback `distribution` registries and stand-in
//! services (`make setup` provides them); every compose project a test starts is torn down by its guard.

mod boundaries;
mod doctor;
mod faults;
mod fresh;
mod harness;
mod hosted;
mod pin;
mod progress;
mod prune;
mod pull;
mod real_stack;
mod republished;
mod signature;
mod start;
mod version;
