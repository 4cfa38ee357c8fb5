//! A shared cache in an OCI registry repository. Blobs are registry blobs; an entry is an OCI
//! artifact manifest tagged `strata-<cache key>` whose config is the entry document and whose
//! layers are the layer archive and the log, so the registry keeps every blob an entry needs
//! alive, and registry tools can list and delete entries like any image.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc;

use strata_key::CacheKey;
use strata_oci::{Descriptor, ImageManifest, MEDIA_LAYER_ZSTD, OciDigest, Registry, RegistryError};

use crate::backend::{BackendError, BlobReader, BlobUpload, CacheBackend, PutOutcome};
use crate::entry::RemoteEntry;

pub const MEDIA_ENTRY: &str = "application/vnd.strata.entry.v1+json";
pub const MEDIA_LOG: &str = "application/vnd.strata.log.v1";

pub struct RegistryBackend {
    registry: Arc<Registry>,
    repository: String,
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
            RegistryError::Unreachable { source, .. } => BackendError::Unreachable {
                location: self.location(),
                message: source.to_string(),
            },
            other => BackendError::Failed {
                location: self.location(),
                action: action.to_string(),
                message: other.to_string(),
            },
        }
    }
}

impl CacheBackend for RegistryBackend {
    fn location(&self) -> String {
        format!("oci://{}/{}", self.registry.host(), self.repository)
    }

    fn get_entry(&self, key: &CacheKey) -> Result<Option<RemoteEntry>, BackendError> {
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
        let Some(mut blob) = self.get_blob(&manifest.config.digest)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        blob.by_ref()
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| BackendError::Unreachable {
                location: self.location(),
                message: format!("reading an entry: {e}"),
            })?;
        if OciDigest::of(&bytes) != manifest.config.digest {
            return Err(BackendError::Corrupt {
                location: self.location(),
                digest: manifest.config.digest,
            });
        }
        Ok(RemoteEntry::from_json(&bytes, key))
    }

    fn put_entry(&self, entry: &RemoteEntry) -> Result<PutOutcome, BackendError> {
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
        self.registry
            .put_manifest(&self.repository, &tag, strata_oci::MEDIA_MANIFEST, &bytes)
            .map_err(|e| self.error("write an entry", e))?;
        Ok(PutOutcome::Stored)
    }

    fn begin_upload(&self) -> Option<Result<Box<dyn BlobUpload + '_>, BackendError>> {
        let start = || -> Result<Box<dyn BlobUpload + '_>, BackendError> {
            let location = self
                .registry
                .start_upload(&self.repository)
                .map_err(|e| self.error("start an upload", e))?;
            // Chunks go up in order from a sender thread, which carries the session's location
            // from one PATCH to the next.
            let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(2);
            let registry = Arc::clone(&self.registry);
            let sender = std::thread::spawn(move || -> Result<String, RegistryError> {
                let (mut location, mut offset) = (location, 0u64);
                for chunk in rx {
                    location = registry.upload_chunk(&location, offset, &chunk)?;
                    offset += chunk.len() as u64;
                }
                Ok(location)
            });
            Ok(Box::new(RegistryUpload {
                backend: self,
                chunk: Vec::with_capacity(CHUNK_SIZE),
                chunks: Some(tx),
                sender: Some(sender),
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
}

/// A blob sent to the registry in chunks as it is produced; the registry checks the digest
/// when the session is closed.
struct RegistryUpload<'a> {
    backend: &'a RegistryBackend,
    chunk: Vec<u8>,
    chunks: Option<mpsc::SyncSender<Vec<u8>>>,
    sender: Option<std::thread::JoinHandle<Result<String, RegistryError>>>,
    finished: bool,
}

impl RegistryUpload<'_> {
    fn send_chunk(&mut self) -> Result<(), BackendError> {
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_SIZE));
        let sent = self
            .chunks
            .as_ref()
            .is_some_and(|tx| tx.send(chunk).is_ok());
        if sent {
            return Ok(());
        }
        // The sender stopped: its error says why.
        Err(match self.join() {
            Err(e) => self.backend.error("upload a chunk", e),
            Ok(_) => BackendError::Failed {
                location: self.backend.location(),
                action: "upload a chunk".into(),
                message: "the upload stopped".into(),
            },
        })
    }

    fn join(&mut self) -> Result<String, RegistryError> {
        self.chunks = None;
        match self.sender.take() {
            Some(h) => h.join().expect("upload thread panicked"),
            None => Ok(String::new()),
        }
    }
}

impl BlobUpload for RegistryUpload<'_> {
    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), BackendError> {
        while !bytes.is_empty() {
            let n = (CHUNK_SIZE - self.chunk.len()).min(bytes.len());
            self.chunk.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.chunk.len() == CHUNK_SIZE {
                self.send_chunk()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, digest: &OciDigest, _size: u64) -> Result<(), BackendError> {
        if !self.chunk.is_empty() {
            self.send_chunk()?;
        }
        let location = self
            .join()
            .map_err(|e| self.backend.error("upload a chunk", e))?;
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
            && let Ok(location) = self.join()
            && !location.is_empty()
        {
            self.backend.registry.cancel_upload(&location);
        }
    }
}
