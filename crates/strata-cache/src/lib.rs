//! Shared caches: the interface every backend implements, the backends (a directory,
//! S3-compatible object storage, an OCI registry), the entry document they store, and the
//! run's shared caches in order, for lookup and publishing.
//!
//! Owns: what travels between machines. A shared cache holds *blobs* named by their SHA-256
//! digest (layer archives, logs) and *entry documents*, one small JSON document per cache key
//! that names its blobs. Blobs are uploaded before the entry that names them, so a reader never
//! finds an entry whose blobs are missing; a blob the cache has is never uploaded again; the
//! first entry written under a key wins. An entry may carry ed25519 signatures of its content
//! (`signing.rs`); a shared cache given trusted keys uses only entries one of them signed.
//!
//! Must not touch: mounts, processes or the key recipe (keys arrive computed); writing into the
//! local cache (fetching a hit is the engine's). It reads the local cache only to publish.

mod backend;
mod chunks;
mod dir;
mod entry;
mod flights;
mod gc;
mod gc_tool_caches;
mod registry;
mod s3;
mod shared;
mod signing;
mod spec;
mod tool_cache;

pub use backend::{
    Access, BackendError, BlobReader, BlobUpload, CacheBackend, Listed, PutOutcome, ReadOnly, Swept,
};
pub use dir::DirBackend;
pub use entry::{ArchiveRef, BlobRef, ENTRY_SCHEMA, EntryDocument, EntrySignature};
pub use gc::{SharedPruneOptions, SharedPruneReport, prune_shared};
pub use registry::RegistryBackend;
pub use s3::{AwsCredentials, CredentialChain, CredentialError, Environment, S3Backend};
pub use shared::{Published, RestoreError, Restored, SharedCache, SharedCaches, UntrustedEntry};
pub use signing::{
    KeyError, PublicKey, SigningKey, Untrusted, parse_public_keys, parse_signing_keys, signed_form,
    verify_entry,
};
pub use spec::{SharedCacheSpec, SpecError, open_backend, parse_spec, parse_specs};
pub use tool_cache::{TOOL_CACHE_SCHEMA, ToolCacheDocument, ToolCacheLookup};
