//! What the xtask and the 20i launcher share: the image matrix, the tag scheme, base locks, digests, the release
//! notes JSON, the doors to docker and to cosign with the one failure, retry and
//! subprocess layer under them, and the in-process registry client.

pub mod bases;
pub mod bytes;
mod commit;
pub mod cosign;
pub mod digest;
pub mod dist;
pub mod docker;
pub mod engine_api;
pub mod failure;
pub mod matrix;
mod php_line;
pub mod process;
pub mod reference;
pub mod registry;
pub mod release_notes;
pub mod tags;

pub use bases::{Base, BaseLock};
pub use commit::CommitId;
pub use digest::{Digest, IndexSummary};
pub use matrix::Matrix;
pub use php_line::PhpLine;
pub use reference::{ImageRef, Namespace, RepoName, Repository, Tag};
pub use release_notes::ReleaseNotes;
pub use tags::ReleaseVersion;
