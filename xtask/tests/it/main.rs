//! Tests of the xtask binary as a maintainer runs it.

mod plan;
