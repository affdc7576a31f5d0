//! A release: its inputs, its plan (pure), the bake file, signing, and the executor that carries a plan out.

pub mod bake;
pub mod dist;
pub mod execute;
pub mod git;
pub mod inputs;
pub mod lock;
pub mod plan;
#[allow(clippy::module_inception)]
pub mod release;
pub mod signing;
pub mod split;
