//! Integration tests against a real Docker engine and real registries on 127.0.0.1 (`make setup` provides both).

mod common;
mod copy;
mod cosign;
mod push;
mod registry;
mod tls;
mod tokens;
