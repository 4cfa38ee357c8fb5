//! Layers, in the manner of a containerd snapshotter: `prepare` hands out the directories an
//! overlay mount needs, as data; `commit` turns a finished upper directory into an immutable,
//! content-addressed layer.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use strata_key::{LayerDigest, tree_digest};

use crate::error::{StoreError, io};
use crate::local::Layers;

/// The directories of one overlay mount. Applying them is the sandbox's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounts {
    /// Lower directories, top first (the order overlayfs takes them in).
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
}

impl Layers<'_> {
    /// Where the layer's tree is read: its directory, or the mount point of its image (mounted
    /// now if it is not yet in this boot). When the image cannot be mounted this is the mount
    /// point all the same, empty or absent, so that what reads it fails rather than reads
    /// nothing; [`Layers::open`] says why.
    pub fn path(&self, digest: &LayerDigest) -> PathBuf {
        self.open(digest)
            .unwrap_or_else(|_| self.mount_point(digest))
    }

    /// [`Layers::path`], with the reason when an image cannot be mounted.
    pub fn open(&self, digest: &LayerDigest) -> Result<PathBuf, StoreError> {
        let dir = self.dir_path(digest);
        if !dir.is_dir() && self.image_path(digest).is_file() {
            return self.mounted(digest);
        }
        Ok(dir)
    }

    /// Where the layer's directory is, when it is kept as one.
    pub(crate) fn dir_path(&self, digest: &LayerDigest) -> PathBuf {
        self.cache.root.join("layers").join(digest.to_hex())
    }

    /// Whether the layer is here, as a directory or as an image (not mounted by asking).
    pub fn has(&self, digest: &LayerDigest) -> bool {
        self.dir_path(digest).is_dir() || self.image_path(digest).is_file()
    }

    /// Whether the layer is here and can be read on this machine: a directory, or an image this
    /// kernel mounts (mounted by asking). An image from a machine whose kernel mounts erofs
    /// images, in a cache now used where none can be, is not: its tasks are restored or built
    /// again, as directories.
    pub fn usable(&self, digest: &LayerDigest) -> bool {
        self.dir_path(digest).is_dir()
            || (self.image_path(digest).is_file() && self.open(digest).is_ok())
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
            lowerdirs: parents
                .iter()
                .rev()
                .map(|d| self.open(d))
                .collect::<Result<_, _>>()?,
            upperdir,
            workdir,
        })
    }

    /// Publishes the finished upper directory `upper` as a layer and returns its digest. The
    /// directory is moved, not copied; when the cache already has a verified layer with this
    /// content, `upper` is removed and the existing layer kept.
    /// Unix sockets a task left are not part of its layer (an archive cannot carry them):
    /// they are removed, so that this machine's layer is the tree every other machine restores.
    pub fn commit(&self, upper: &Path) -> Result<LayerDigest, StoreError> {
        let (digest, sockets) = strata_key::tree_digest_listing_sockets(upper)?;
        for socket in sockets {
            std::fs::remove_file(&socket).map_err(io(&socket))?;
        }
        self.place(upper, &digest)?;
        Ok(digest)
    }

    /// Moves the hashed directory `dir` to `layers/<digest>` and records it as verified. A
    /// layer already there is trusted only if it is recorded as verified, or hashes to its name
    /// now; otherwise it is replaced: a name alone is never trusted.
    pub(crate) fn place(&self, dir: &Path, digest: &LayerDigest) -> Result<(), StoreError> {
        let dest = self.dir_path(digest);
        // Touching the record keeps a concurrent prune from taking the layer this commit is
        // about to name (`prune.rs`); when the prune got there first, the record is gone and
        // this copy takes the place.
        if self.usable(digest) && self.verified(digest)? && self.touch_verified(digest)? {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
            return Ok(());
        }
        self.cache
            .note_unsynced(&format!("layers/{}", digest.to_hex()))?;
        match std::fs::rename(dir, &dest) {
            Ok(()) => {}
            // Another process placed the same content first (and verified it).
            Err(_) if dest.is_dir() => std::fs::remove_dir_all(dir).map_err(io(dir))?,
            Err(e) => return Err(io(&dest)(e)),
        }
        self.record_verified(digest)
    }

    /// Whether `layers/<digest>` exists and holds what its name says: recorded as verified when
    /// it entered the cache, or hashed now (a layer from before verification was recorded, or
    /// put there by something else) and recorded. A layer that does not match is removed.
    /// An image is hashed through its mount; one that cannot be mounted is not usable here
    /// and is left alone (the caller restores the layer as a directory instead).
    pub fn verified(&self, digest: &LayerDigest) -> Result<bool, StoreError> {
        if !self.has(digest) {
            return Ok(false);
        }
        if self.is_recorded_verified(digest)? {
            return Ok(true);
        }
        let (name, tree) = if self.dir_path(digest).is_dir() {
            (digest.to_hex(), self.dir_path(digest))
        } else {
            let Ok(at) = self.mounted(digest) else {
                return Ok(false);
            };
            (
                format!("{}{}", digest.to_hex(), crate::layer_images::IMAGE_SUFFIX),
                at,
            )
        };
        if tree_digest(&tree)? == *digest {
            self.record_verified(digest)?;
            return Ok(true);
        }
        // Moved aside first, so that no reader ever finds a half-removed layer under the name.
        if let Some(aside) = self.move_aside(&name, "bad-layer")? {
            crate::layer_images::remove_aside(&aside)?;
        }
        Ok(false)
    }

    fn is_recorded_verified(&self, digest: &LayerDigest) -> Result<bool, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.query_row(
            "SELECT 1 FROM verified_layers WHERE digest = ?1",
            params![digest.to_hex()],
            |_| Ok(()),
        )
        .optional()
        .map(|found| found.is_some())
        .map_err(self.cache.index_err("read a layer record"))
    }

    pub(crate) fn record_verified(&self, digest: &LayerDigest) -> Result<(), StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute(
            "INSERT OR REPLACE INTO verified_layers (digest, at_ms) VALUES (?1, ?2)",
            params![digest.to_hex(), crate::durability::now_ms()],
        )
        .map(drop)
        .map_err(self.cache.index_err("record a verified layer"))
    }

    /// Marks a verified layer as just used for a new entry; `false` when it is not recorded
    /// (any more).
    pub(crate) fn touch_verified(&self, digest: &LayerDigest) -> Result<bool, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute(
            "UPDATE verified_layers SET at_ms = ?2 WHERE digest = ?1",
            params![digest.to_hex(), crate::durability::now_ms()],
        )
        .map(|n| n == 1)
        .map_err(self.cache.index_err("record a verified layer"))
    }
}
