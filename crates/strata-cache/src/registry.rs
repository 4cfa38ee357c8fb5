//! A shared cache in an OCI registry repository. Blobs are registry blobs; an entry is an OCI
//! artifact manifest tagged `strata-<cache key>` whose config is the entry document and whose
//! layers are the layer archive and the log, so the registry keeps every blob an entry needs
//! alive, and registry tools can list and delete entries like any image.

use std::io::Read;

use strata_key::CacheKey;
use strata_oci::{Descriptor, ImageManifest, MEDIA_LAYER_ZSTD, OciDigest, Registry, RegistryError};

use crate::backend::{BackendError, BlobReader, CacheBackend, PutOutcome};
use crate::entry::RemoteEntry;

pub const MEDIA_ENTRY: &str = "application/vnd.strata.entry.v1+json";
pub const MEDIA_LOG: &str = "application/vnd.strata.log.v1";

pub struct RegistryBackend {
    registry: Registry,
    repository: String,
}

impl RegistryBackend {
    pub fn new(host: &str, repository: &str) -> RegistryBackend {
        RegistryBackend {
            registry: Registry::new(host),
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
