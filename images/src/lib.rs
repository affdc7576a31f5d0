//! What the xtask and the 20i launcher share: the image matrix, the tag scheme, base locks, digests, and the one
//! door to docker.

pub mod bases;
pub mod digest;
pub mod docker;
pub mod matrix;
mod php_line;
pub mod reference;
pub mod tags;

pub use bases::{Base, BaseLock};
pub use digest::{Digest, IndexSummary};
pub use matrix::Matrix;
pub use php_line::PhpLine;
pub use reference::{ImageRef, Namespace, RepoName, Repository, Tag};
pub use tags::ReleaseVersion;
