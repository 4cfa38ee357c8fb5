//! The one interface every shared cache backend implements (after sccache's `Storage`): entries by
//! cache key, blobs by digest. A miss is a value (`Ok(None)`), not an error; a server that cannot
//! be reached is a different error from one that answered with a failure.

use std::io::Read;
use std::time::SystemTime;

use strata_key::CacheKey;
use strata_oci::OciDigest;

use crate::entry::EntryDocument;

/// A blob being read from a backend. The reader verifies its digest.
pub type BlobReader = Box<dyn Read + Send + Sync>;

/// The largest small document (entry, chunk list) read from a remote: anything longer is
/// truncated, and then fails to parse.
const SMALL_DOCUMENT_MAX: u64 = 64 << 20;

/// Reads a small document (`what`, for the message) from a remote at `location`. A transfer that
/// breaks off counts as the remote being unreachable.
pub(crate) fn read_small(
    reader: impl Read,
    location: &str,
    what: &str,
) -> Result<Vec<u8>, BackendError> {
    let mut bytes = Vec::new();
    reader
        .take(SMALL_DOCUMENT_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| BackendError::Unreachable {
            location: location.to_string(),
            message: format!("reading {what}: {e}"),
        })?;
    Ok(bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// Another writer got there first; what it wrote stays.
    AlreadyPresent,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The server could not be reached at all (connection refused, DNS, timeout). strata warns
    /// and carries on without this cache.
    #[error("cache {location} is unreachable: {message}")]
    Unreachable { location: String, message: String },
    /// The server answered, with a failure.
    #[error("cache {location} failed to {action}: {message}")]
    Failed {
        location: String,
        action: String,
        message: String,
    },
    #[error("cache {location} is read-only")]
    ReadOnly { location: String },
    #[error("blob {digest} from cache {location} does not match its digest")]
    Corrupt { location: String, digest: OciDigest },
    /// The backend cannot do this at all (garbage collection on a server that does it itself).
    #[error("cache {location} cannot {action}")]
    Unsupported { location: String, action: String },
}

/// An entry or blob as a listing of a shared cache shows it (for garbage collection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<N> {
    pub name: N,
    pub size: u64,
    /// When it was stored (for an entry: published).
    pub modified: SystemTime,
}

/// What a clean-up of abandoned uploads removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub objects: u64,
    pub bytes: u64,
}

impl BackendError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, BackendError::Unreachable { .. })
    }
}

pub trait CacheBackend: Send + Sync {
    /// Where the cache is, for messages (`s3://bucket/prefix`, ...).
    fn location(&self) -> String;

    fn access(&self) -> Access {
        Access::ReadWrite
    }

    /// The entry stored under `key`, if there is one that this version of strata can use.
    fn get_entry(&self, key: &CacheKey) -> Result<Option<EntryDocument>, BackendError>;

    /// Stores an entry. Its blobs must already be stored. The first writer of a key wins.
    fn put_entry(&self, entry: &EntryDocument) -> Result<PutOutcome, BackendError>;

    fn has_blob(&self, digest: &OciDigest) -> Result<bool, BackendError>;

    /// A blob's content as a stream, or `None` when the cache does not have it.
    fn get_blob(&self, digest: &OciDigest) -> Result<Option<BlobReader>, BackendError>;

    /// Stores `size` bytes read from `content` as the blob `digest`. The backend (or the server)
    /// refuses content that does not match.
    fn put_blob(
        &self,
        digest: &OciDigest,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackendError>;

    /// Starts uploading a blob whose digest will be known only at the end (a layer archive
    /// being built), so that uploading overlaps with producing it. `None`: this backend takes
    /// whole blobs only (`put_blob`).
    fn begin_upload(&self) -> Option<Result<Box<dyn BlobUpload + '_>, BackendError>> {
        None
    }

    /// Stores a blob that strata hashed itself while writing it (a layer archive it just built)
    /// and that the caller knows the cache lacks. A backend that has to hash content on its own
    /// to check it (S3 does not check our digests) may skip that here.
    fn put_own_blob(
        &self,
        digest: &OciDigest,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackendError> {
        self.put_blob(digest, size, content)
    }

    // Tool caches (`tool_cache.rs`): one small document per tool cache, replaced whole, so the
    // last writer wins. A backend without them has none and refuses to write one.

    /// The document of the tool cache whose file name is `name` (`<digest>.json`).
    fn get_tool_cache(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let _ = name;
        Ok(None)
    }

    /// Replaces the tool cache's document (atomically: a reader sees the old or the new one).
    fn put_tool_cache(&self, name: &str, document: &[u8]) -> Result<(), BackendError> {
        let _ = (name, document);
        Err(self.unsupported("publish a tool cache"))
    }

    /// Every tool cache document's file name, with when it was stored (for garbage
    /// collection). A backend without tool caches has none.
    fn list_tool_caches(&self) -> Result<Vec<Listed<String>>, BackendError> {
        Ok(Vec::new())
    }

    /// Removes a tool cache's document (gone already is fine).
    fn delete_tool_cache(&self, name: &str) -> Result<(), BackendError> {
        let _ = name;
        Err(self.unsupported("delete tool caches"))
    }

    // Garbage collection (`strata cache prune --remote`). A backend that cannot list or delete
    // says so with `Unsupported`.

    /// Every entry's key, with when it was published.
    fn list_entries(&self) -> Result<Vec<Listed<CacheKey>>, BackendError> {
        Err(self.unsupported("list entries"))
    }

    /// An entry's document as stored, whatever its schema (a prune must keep the blobs that
    /// entries of other strata versions name), or `None` when it is gone.
    fn entry_document(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, BackendError> {
        let _ = key;
        Err(self.unsupported("read entry documents"))
    }

    /// Removes an entry (gone already is fine).
    fn delete_entry(&self, key: &CacheKey) -> Result<(), BackendError> {
        let _ = key;
        Err(self.unsupported("delete entries"))
    }

    /// Every blob with its size and time; `None` when the server reclaims unreferenced blobs
    /// itself (a registry's garbage collector).
    fn list_blobs(&self) -> Result<Option<Vec<Listed<OciDigest>>>, BackendError> {
        Err(self.unsupported("list blobs"))
    }

    /// Removes a blob (gone already is fine).
    fn delete_blob(&self, digest: &OciDigest) -> Result<(), BackendError> {
        let _ = digest;
        Err(self.unsupported("delete blobs"))
    }

    /// Removes uploads abandoned (never published) before `before`.
    fn clean_uploads(&self, before: SystemTime) -> Result<Swept, BackendError> {
        let _ = before;
        Ok(Swept::default())
    }

    fn unsupported(&self, action: &str) -> BackendError {
        BackendError::Unsupported {
            location: self.location(),
            action: action.to_string(),
        }
    }
}

/// A blob being uploaded while it is produced. Nothing is visible under its digest before
/// `finish`; dropping it unfinished abandons the upload.
pub trait BlobUpload: Send {
    /// Appends bytes; parts may be sent in the background.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError>;
    /// Publishes what was written as the blob `digest` of `size` bytes.
    fn finish(self: Box<Self>, digest: &OciDigest, size: u64) -> Result<(), BackendError>;
}

/// A backend used for reading only: every write is refused before it reaches the server.
pub struct ReadOnly(pub Box<dyn CacheBackend>);

impl CacheBackend for ReadOnly {
    fn location(&self) -> String {
        self.0.location()
    }

    fn get_tool_cache(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.0.get_tool_cache(name)
    }

    fn access(&self) -> Access {
        Access::ReadOnly
    }

    fn get_entry(&self, key: &CacheKey) -> Result<Option<EntryDocument>, BackendError> {
        self.0.get_entry(key)
    }

    fn put_entry(&self, _: &EntryDocument) -> Result<PutOutcome, BackendError> {
        Err(BackendError::ReadOnly {
            location: self.location(),
        })
    }

    fn has_blob(&self, digest: &OciDigest) -> Result<bool, BackendError> {
        self.0.has_blob(digest)
    }

    fn get_blob(&self, digest: &OciDigest) -> Result<Option<BlobReader>, BackendError> {
        self.0.get_blob(digest)
    }

    fn put_blob(&self, _: &OciDigest, _: u64, _: &mut dyn Read) -> Result<(), BackendError> {
        Err(BackendError::ReadOnly {
            location: self.location(),
        })
    }

    fn put_own_blob(&self, _: &OciDigest, _: u64, _: &mut dyn Read) -> Result<(), BackendError> {
        Err(BackendError::ReadOnly {
            location: self.location(),
        })
    }

    fn list_entries(&self) -> Result<Vec<Listed<CacheKey>>, BackendError> {
        self.0.list_entries()
    }

    fn entry_document(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, BackendError> {
        self.0.entry_document(key)
    }

    fn list_blobs(&self) -> Result<Option<Vec<Listed<OciDigest>>>, BackendError> {
        self.0.list_blobs()
    }

    fn delete_entry(&self, _: &CacheKey) -> Result<(), BackendError> {
        Err(BackendError::ReadOnly {
            location: self.location(),
        })
    }

    fn delete_blob(&self, _: &OciDigest) -> Result<(), BackendError> {
        Err(BackendError::ReadOnly {
            location: self.location(),
        })
    }

    fn clean_uploads(&self, _: SystemTime) -> Result<Swept, BackendError> {
        Err(BackendError::ReadOnly {
            location: self.location(),
        })
    }
}
