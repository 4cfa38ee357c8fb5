//! Layers, in the manner of a containerd snapshotter: `prepare` hands out the directories an
//! overlay mount needs, as data; `commit` turns a finished upper directory into an immutable,
//! content-addressed layer.

use std::path::{Path, PathBuf};

use strata_key::{LayerDigest, tree_digest};

use crate::error::{StoreError, io};
use crate::local::LocalCache;

/// The directories of one overlay mount. Applying them is the sandbox's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounts {
    /// Lower directories, top first (the order overlayfs takes them in).
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
}

impl LocalCache {
    pub fn layer_path(&self, digest: &LayerDigest) -> PathBuf {
        self.root.join("layers").join(digest.to_hex())
    }

    pub fn has_layer(&self, digest: &LayerDigest) -> bool {
        self.layer_path(digest).is_dir()
    }

    /// Creates fresh `upper` and `work` directories under `scratch` and returns the mounts for a
    /// stack of `parents` (bottom first) under them.
    pub fn prepare(&self, scratch: &Path, parents: &[LayerDigest]) -> Result<Mounts, StoreError> {
        let upperdir = scratch.join("upper");
        let workdir = scratch.join("work");
        for dir in [&upperdir, &workdir] {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(io(dir))?;
            }
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Ok(Mounts {
            lowerdirs: parents.iter().rev().map(|d| self.layer_path(d)).collect(),
            upperdir,
            workdir,
        })
    }

    /// Publishes the finished upper directory `upper` as a layer and returns its digest. The
    /// directory is moved, not copied; when the cache already has a layer with this content,
    /// `upper` is removed and the existing layer kept.
    pub fn commit(&self, upper: &Path) -> Result<LayerDigest, StoreError> {
        let digest = tree_digest(upper)?;
        let dest = self.layer_path(&digest);
        if dest.exists() {
            std::fs::remove_dir_all(upper).map_err(io(upper))?;
            return Ok(digest);
        }
        self.note_unsynced(&format!("layers/{}", digest.to_hex()))?;
        match std::fs::rename(upper, &dest) {
            Ok(()) => Ok(digest),
            // Another process committed the same content first.
            Err(_) if dest.is_dir() => {
                std::fs::remove_dir_all(upper).map_err(io(upper))?;
                Ok(digest)
            }
            Err(e) => Err(io(&dest)(e)),
        }
    }
}
