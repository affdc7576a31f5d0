//! Tests of testkit's own parts with the real clients that use them: docker, buildx, skopeo and curl; and the
//! Debian stand-ins (`testkit::real`) running the stack's own files (`make setup` provides docker, mmdebstrap and
//! QEMU).

mod common;
mod faults;
mod hosted_standins;
mod real;
mod standins;
mod tls;
