//! The local cache: committed layers, the entry index, logs, workspace file blobs and per-run
//! scratch space, all under one directory that several strata processes may share.
//!
//! Owns the on-disk layout (see [`LocalCache`]), the SQLite index, and every write into the cache
//! directory. Writes are published atomically (temp + rename, entry after blobs): a crash at any
//! moment leaves no partial layer or entry visible.
//!
//! Must not touch: namespaces, processes, or the mounts of a task (it hands out [`Mounts`] as
//! data; the sandbox applies them), or the pipeline model. The one mount it makes is its own:
//! the read-only mount of a layer kept as an erofs image (`layer_images.rs`), so that such a layer
//! has a path like any other.

mod blobs;
mod durability;
mod error;
mod history;
mod import;
mod index;
mod layer_images;
mod layers;
mod local;
mod logs;
mod prune;
mod records;
mod runs;
mod tool_caches;
mod usage;
mod verify;
mod workspace_lists;

pub use blobs::FileMtime;
pub use error::{StoreError, error_chain};
pub use history::{History, RUN_RECORDS_KEPT, RunRecordWriter};
pub use index::{Entry, NewEntry};
pub use layer_images::{mount_image, unmount};
pub use layers::Mounts;
pub use local::{Content, Index, Layers, LocalCache, Runs, default_cache_dir, package_sources_dir};
pub use logs::{LogWriter, WrittenLog};
pub use prune::{DEFAULT_GRACE, PruneOptions, PruneReport};
pub use records::{ArchiveRecord, BROKEN_ENTRY_TTL};
pub use runs::{KeyLock, LiveRun, RunDir};
pub use tool_caches::{
    DEFAULT_TOOL_CACHE_MAX_AGE, ToolCacheId, ToolCacheRecord, ToolCacheUsage, ToolCaches,
};
pub use usage::{CacheStats, DiskUsage, EntryUsage};
pub use verify::{Problem, VerifyReport};
