//! A shared cache in an OCI registry repository. Blobs are registry blobs; an entry is an OCI
//! artifact manifest tagged `strata-<cache key>` whose config is the entry document and whose
//! layers are the layer archive and the log, so the registry keeps every blob an entry needs
//! alive, and registry tools can list and delete entries like any image.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use strata_key::CacheKey;
use strata_oci::{Descriptor, ImageManifest, MEDIA_LAYER_ZSTD, OciDigest, Registry, RegistryError};

use crate::backend::{
    BackendError, BlobReader, BlobUpload, CacheBackend, Listed, PutOutcome, read_small,
};
use crate::chunks::{ChunkedUpload, Chunks};
use crate::entry::EntryDocument;

pub const MEDIA_ENTRY: &str = "application/vnd.strata.entry.v1+json";
pub const MEDIA_LOG: &str = "application/vnd.strata.log.v1";

/// How many times an entry is written while the registry calls a blob it names unknown.
const MANIFEST_ATTEMPTS: u32 = 3;

pub struct RegistryBackend {
    registry: Arc<Registry>,
    repository: String,
}

fn backend_error(location: &str, action: &str, e: RegistryError) -> BackendError {
    match e {
        RegistryError::Unreachable { source, .. } => BackendError::Unreachable {
            location: location.to_string(),
            message: source.to_string(),
        },
        other => BackendError::Failed {
            location: location.to_string(),
            action: action.to_string(),
            message: other.to_string(),
        },
    }
}

/// Streamed uploads go up in chunks of this size.
const CHUNK_SIZE: usize = 8 << 20;

impl RegistryBackend {
    pub fn new(host: &str, repository: &str) -> RegistryBackend {
        RegistryBackend {
            registry: Arc::new(Registry::new(host)),
            repository: repository.to_string(),
        }
    }

    fn tag(key: &CacheKey) -> String {
        format!("strata-{}", key.to_hex())
    }

    fn error(&self, action: &str, e: RegistryError) -> BackendError {
        match e {
            RegistryError::Status { status: 405, .. } => BackendError::Unsupported {
                location: self.location(),
                action: format!(
                    "{action}: the registry refuses deletes (docker-registry: `storage: {{delete: {{enabled: true}}}}`)"
                ),
            },
            e => backend_error(&self.location(), action, e),
        }
    }

    /// An entry's manifest and its config (the entry document), if the tag exists.
    fn entry_manifest(
        &self,
        key: &CacheKey,
    ) -> Result<Option<(OciDigest, ImageManifest, Vec<u8>)>, BackendError> {
        let Some(fetched) = self
            .registry
            .get_manifest(&self.repository, &Self::tag(key))
            .map_err(|e| self.error("read an entry", e))?
        else {
            return Ok(None);
        };
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&fetched.bytes) else {
            return Ok(None);
        };
        let config = match self.get_blob(&manifest.config.digest)? {
            Some(blob) => read_small(blob, &self.location(), "an entry")?,
            None => Vec::new(),
        };
        Ok(Some((fetched.digest, manifest, config)))
    }
}

impl CacheBackend for RegistryBackend {
    fn location(&self) -> String {
        format!("oci://{}/{}", self.registry.host(), self.repository)
    }

    fn get_entry(&self, key: &CacheKey) -> Result<Option<EntryDocument>, BackendError> {
        let Some(fetched) = self
            .registry
            .get_manifest(&self.repository, &Self::tag(key))
            .map_err(|e| self.error("read an entry", e))?
        else {
            return Ok(None);
        };
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&fetched.bytes) else {
            return Ok(None);
        };
        if manifest.config.media_type != MEDIA_ENTRY {
            return Ok(None);
        }
        let Some(blob) = self.get_blob(&manifest.config.digest)? else {
            return Ok(None);
        };
        let bytes = read_small(blob, &self.location(), "an entry")?;
        if OciDigest::of(&bytes) != manifest.config.digest {
            return Err(BackendError::Corrupt {
                location: self.location(),
                digest: manifest.config.digest,
            });
        }
        Ok(EntryDocument::from_json(&bytes, key))
    }

    fn put_entry(&self, entry: &EntryDocument) -> Result<PutOutcome, BackendError> {
        let tag = Self::tag(&entry.key);
        if self
            .registry
            .has_manifest(&self.repository, &tag)
            .map_err(|e| self.error("look up an entry", e))?
        {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let json = entry.to_json();
        let config = OciDigest::of(&json);
        self.put_blob(&config, json.len() as u64, &mut &json[..])?;
        let mut layer = Descriptor::new(MEDIA_LAYER_ZSTD, entry.archive.digest, entry.archive.size);
        layer
            .annotations
            .insert("dev.strata.layer".to_string(), entry.layer.to_hex());
        let manifest = ImageManifest::new(
            Descriptor::new(MEDIA_ENTRY, config, json.len() as u64),
            vec![
                layer,
                Descriptor::new(MEDIA_LOG, entry.log.digest, entry.log.size),
            ],
        );
        let bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
        // The blobs were uploaded (or found) just before. A registry that still calls one of
        // them unknown is most likely catching up with another machine's upload of the same
        // blob (docker-registry rewrites a blob's link file on each commit): ask again, briefly.
        let mut pause = Duration::from_millis(100);
        for attempt in 1.. {
            match self.registry.put_manifest(
                &self.repository,
                &tag,
                strata_oci::MEDIA_MANIFEST,
                &bytes,
            ) {
                Ok(()) => break,
                Err(RegistryError::Status {
                    status: 400, body, ..
                }) if attempt < MANIFEST_ATTEMPTS && body.contains("MANIFEST_BLOB_UNKNOWN") => {
                    std::thread::sleep(pause);
                    pause *= 4;
                }
                Err(e) => return Err(self.error("write an entry", e)),
            }
        }
        Ok(PutOutcome::Stored)
    }

    fn begin_upload(&self) -> Option<Result<Box<dyn BlobUpload + '_>, BackendError>> {
        let start = || -> Result<Box<dyn BlobUpload + '_>, BackendError> {
            let location = self
                .registry
                .start_upload(&self.repository)
                .map_err(|e| self.error("start an upload", e))?;
            // Chunks go up in order from one sender thread, which carries the session's location
            // from one PATCH to the next.
            let chunks = ChunkedUpload::start(self.location(), CHUNK_SIZE, 1, |chunks: Chunks| {
                let registry = Arc::clone(&self.registry);
                let (mut location, where_) = (location.clone(), self.location());
                std::thread::spawn(move || {
                    let mut offset = 0u64;
                    loop {
                        let Some((_, chunk)) = chunks.next() else {
                            return Ok(location);
                        };
                        location = registry
                            .upload_chunk(&location, offset, &chunk)
                            .map_err(|e| backend_error(&where_, "upload a chunk", e))?;
                        offset += chunk.len() as u64;
                        chunks.spent(chunk);
                    }
                })
            });
            Ok(Box::new(RegistryUpload {
                backend: self,
                chunks,
                finished: false,
            }))
        };
        Some(start())
    }

    fn has_blob(&self, digest: &OciDigest) -> Result<bool, BackendError> {
        self.registry
            .has_blob(&self.repository, digest)
            .map_err(|e| self.error("look up a blob", e))
    }

    fn get_blob(&self, digest: &OciDigest) -> Result<Option<BlobReader>, BackendError> {
        Ok(self
            .registry
            .get_blob(&self.repository, digest)
            .map_err(|e| self.error("read a blob", e))?
            .map(|(_, r)| r))
    }

    fn put_blob(
        &self,
        digest: &OciDigest,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackendError> {
        self.registry
            .put_blob(&self.repository, digest, size, content)
            .map_err(|e| self.error("write a blob", e))
    }

    /// Tags `strata-<key>`; a tag has no time of its own, so an entry's is the `created_at_ms`
    /// its document records (one manifest and config read per entry).
    fn list_entries(&self) -> Result<Vec<Listed<CacheKey>>, BackendError> {
        let tags = self
            .registry
            .list_tags(&self.repository)
            .map_err(|e| self.error("list entries", e))?;
        let mut out = Vec::new();
        for tag in tags {
            let Some(key) = tag.strip_prefix("strata-").and_then(CacheKey::parse) else {
                continue;
            };
            let Some((_, manifest, config)) = self.entry_manifest(&key)? else {
                continue;
            };
            let created_ms = serde_json::from_slice::<serde_json::Value>(&config)
                .ok()
                .and_then(|v| v.get("created_at_ms")?.as_u64())
                .unwrap_or(0);
            out.push(Listed {
                name: key,
                size: manifest.layers.iter().map(|l| l.size).sum(),
                modified: std::time::UNIX_EPOCH + std::time::Duration::from_millis(created_ms),
            });
        }
        Ok(out)
    }

    fn entry_document(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.entry_manifest(key)?.map(|(_, _, config)| config))
    }

    /// Deletes the entry's manifest; the registry's garbage collector reclaims its blobs.
    fn delete_entry(&self, key: &CacheKey) -> Result<(), BackendError> {
        let Some(fetched) = self
            .registry
            .get_manifest(&self.repository, &Self::tag(key))
            .map_err(|e| self.error("read an entry", e))?
        else {
            return Ok(());
        };
        self.registry
            .delete_manifest(&self.repository, &fetched.digest)
            .map_err(|e| self.error("delete an entry", e))?;
        Ok(())
    }

    /// Blobs are the registry's: unreferenced ones (and abandoned `_uploads`) are reclaimed by
    /// its own garbage collector (`registry garbage-collect`), never deleted by a client.
    fn list_blobs(&self) -> Result<Option<Vec<Listed<OciDigest>>>, BackendError> {
        Ok(None)
    }
}

/// A blob sent to the registry in chunks as it is produced; the registry checks the digest
/// when the session is closed.
struct RegistryUpload<'a> {
    backend: &'a RegistryBackend,
    /// The sender returns the session's last location.
    chunks: ChunkedUpload<String>,
    finished: bool,
}

impl BlobUpload for RegistryUpload<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.chunks.write_all(bytes)
    }

    fn finish(mut self: Box<Self>, digest: &OciDigest, _size: u64) -> Result<(), BackendError> {
        self.chunks.flush(false)?;
        let location = self.chunks.join()?.pop().unwrap_or_default();
        self.finished = true;
        self.backend
            .registry
            .finish_upload(&location, digest)
            .map_err(|e| self.backend.error("publish a blob", e))
    }
}

impl Drop for RegistryUpload<'_> {
    fn drop(&mut self) {
        if !self.finished
            && let Ok(mut locations) = self.chunks.join()
            && let Some(location) = locations.pop()
        {
            self.backend.registry.cancel_upload(&location);
        }
    }
}
