//! Tests of the xtask binary as a maintainer runs it; those that push use registries on 127.0.0.1.

mod bases;
mod notes;
mod plan;
mod release;
mod tidy;
mod workflows;
