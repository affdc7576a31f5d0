//! Tests of testkit's own parts with the real clients that use them: docker, buildx, skopeo and curl.

mod faults;
