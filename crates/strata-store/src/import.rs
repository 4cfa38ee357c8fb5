//! Layers that arrive from elsewhere (a shared cache, an image): unpacked into a private
//! directory under `tmp/`, then published under their digest in one rename, so that a layer
//! directory either is complete or does not exist.

use std::path::{Path, PathBuf};

use strata_key::LayerDigest;

use crate::error::{StoreError, io};
use crate::local::{Content, Layers};

impl Layers<'_> {
    /// A new empty directory to unpack a layer into; hand it to [`Layers::publish`]
    /// when complete, or remove it.
    pub fn import_dir(&self) -> Result<PathBuf, StoreError> {
        let dir = self.cache.tmp_path("import");
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Publishes a completely unpacked layer: hashes it, checks the digest against `expected`
    /// when the sender named one (a mismatch removes the directory and is
    /// [`StoreError::LayerMismatch`]), and places it under its digest, which it returns. When the
    /// cache already has a verified layer with this content, the new copy is removed.
    /// `contents`: the content digests of the files the unpacker wrote, by path, so that they
    /// are not read again (`strata_oci::AppliedLayer::contents`).
    pub fn publish(
        &self,
        dir: &Path,
        expected: Option<&LayerDigest>,
        contents: &std::collections::HashMap<std::path::PathBuf, [u8; 32]>,
    ) -> Result<LayerDigest, StoreError> {
        let found = match strata_key::tree_digest_known(dir, contents) {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                return Err(e.into());
            }
        };
        if let Some(expected) = expected
            && *expected != found
        {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
            return Err(StoreError::LayerMismatch {
                expected: *expected,
                found,
            });
        }
        self.place(dir, &found)?;
        Ok(found)
    }
}

impl Content<'_> {
    /// A path under the cache's `tmp/` for a temporary file (same filesystem as the cache).
    pub fn temp_file(&self, hint: &str) -> PathBuf {
        self.cache.tmp_path(hint)
    }
}
