//! The maintainers' commands around releases: bases, notes and sizes, prune, republish, the generated workflows.

pub mod bases;
pub mod notes;
pub mod prune;
pub mod republish;
pub mod sizes;
pub mod workflows;
