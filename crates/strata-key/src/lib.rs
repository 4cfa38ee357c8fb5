//! The key recipe: everything that can change a task's result, reduced to one versioned digest.
//!
//! Owns: the digest newtypes ([`CacheKey`], [`LayerDigest`], ...), content hashing of files and
//! directory trees, the workspace capture (which files, honouring `.gitignore`; walked, or from
//! the previous walk and the paths a watcher says changed), the base identity, the [`KeyInputs`] that are hashed into a [`CacheKey`] and recorded beside every
//! entry, and the comparison of two recorded inputs that `strata explain` shows.
//! `docs/cache-key.md` lists every input; [`KEY_VERSION`] changes whenever the recipe does.
//!
//! Must not touch: the cache, mounts or processes, or the pipeline model (it is given paths,
//! predicates and digests). It reads files; it never writes any.

mod base;
mod diff;
mod digest;
mod dir_walk;
mod env;
mod file_id;
mod git_checkout;
mod git_index;
mod recipe;
mod sha1dc;
mod stat_cache;
mod test_results;
mod tree;
mod tree_entries;
mod watched;
mod workspace;

pub use base::{
    BaseChange, HostInventory, KeyPath, host_identity, image_identity, rootfs_identity,
};
pub use diff::{Difference, compare};
pub use digest::{ArtifactDigest, BaseId, CacheKey, ContentDigest, LayerDigest, WorkspaceDigest};
pub use env::ExportedEnv;
pub use file_id::{FileId, FileIdError, FileIdHasher, file_id};
pub use git_index::{GitIndex, IndexError};
pub use recipe::{ArtifactInput, EnvInput, KEY_VERSION, KeyInputs, ParentInput, RecordedInputs};
pub use stat_cache::StatCache;
pub use test_results::{TestCase, TestResults, TestStatus};
pub use tree::{
    TreeError, content_digest, tree_digest, tree_digest_known, tree_digest_listing_sockets,
    tree_digest_without,
};
pub use tree_entries::{TreeEntry, TreeEntryKind, tree_digest_of_entries};
pub use watched::{Changed, WalkCache, WalkHow, WatchAnswer, WatchToken, mount_ns, root_id};
pub use workspace::{
    Captured, FileKind, IdSources, Seen, Selection, Watch, Workspace, WorkspaceError, WorkspaceFile,
};
