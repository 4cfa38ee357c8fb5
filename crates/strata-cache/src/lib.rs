//! Shared caches: the interface every remote cache backend implements, the backends (a directory,
//! S3-compatible object storage, an OCI registry), the entry format they store, and the chain
//! that puts them behind the local cache.
//!
//! Owns: what travels between machines. A remote holds *blobs* named by their SHA-256 digest
//! (layer archives, logs, entry documents) and *entries*, one small JSON document per cache key
//! that names its blobs. Blobs are uploaded before the entry that names them, so a reader never
//! finds an entry whose blobs are missing; a blob the remote has is never uploaded again; the
//! first entry written under a key wins. An entry may carry ed25519 signatures of its content
//! (`signing.rs`); a remote given trusted keys uses only entries one of them signed.
//!
//! Must not touch: mounts, processes or the key recipe (keys arrive computed). Writes into the
//! local cache go through `strata-store`'s publishing functions only.

mod backend;
mod chain;
mod chunks;
mod dir;
mod entry;
mod gc;
mod registry;
mod s3;
mod signing;
mod spec;
mod tool_cache;

pub use backend::{
    Access, BackendError, BlobReader, BlobUpload, CacheBackend, Listed, PutOutcome, ReadOnly, Swept,
};
pub use chain::{
    CacheChain, Publication, Published, Remote, RestoreError, Restored, UntrustedEntry,
};
pub use dir::DirBackend;
pub use entry::{ArchiveRef, BlobRef, ENTRY_SCHEMA, EntrySignature, RemoteEntry};
pub use gc::{RemotePruneOptions, RemotePruneReport, prune_remote};
pub use registry::RegistryBackend;
pub use s3::{AwsCredentials, CredentialChain, CredentialError, Environment, S3Backend};
pub use signing::{
    KeyError, PublicKey, SigningKey, Untrusted, parse_public_keys, parse_signing_keys, signed_form,
    verify_entry,
};
pub use spec::{RemoteSpec, SpecError, open_backend, parse_spec, parse_specs};
pub use tool_cache::{TOOL_CACHE_SCHEMA, ToolCacheDocument, ToolCacheLookup};
