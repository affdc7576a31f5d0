//! The maintainers' commands around releases: the audit of what was published, bases, notes and sizes,
//! prune, republish, the generated workflows.

pub mod audit;
pub mod bases;
pub mod notes;
pub mod prune;
pub mod republish;
pub mod sizes;
pub mod workflows;
