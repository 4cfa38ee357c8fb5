//! Layers kept as erofs images: a layer restored from a shared cache is one file,
//! `layers/<digest>.erofs`, instead of a directory of many files (writing one file sequentially
//! saves the per-file creates and metadata calls that dominate a cold restore, BENCHMARKS.md).
//! The image is mounted read-only from the file (no loop device), once per boot, at
//! `mounts/<digest>`, in the mount namespace strata runs in, and stays mounted: what reads a
//! layer (overlay lowers, checkout views, export) reads the mount point as it would read a
//! layer directory. After a reboot the mount is gone and the next use mounts it again.
//!
//! Invariants: an image is renamed into `layers/` only complete and verified (its tree digest,
//! from the entries the conversion listed, equals its name); a mount point is used only once
//! `statfs` says it is an erofs mount and `/proc/self/mountinfo` says of this very file;
//! anything that removes an image first takes it out of sight (a rename), then detaches its
//! mount, then deletes it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{FlockOperation, flock};
use strata_key::LayerDigest;

use crate::error::{StoreError, io};
use crate::local::{Layers, LocalCache};

/// How an image's file name ends under `layers/`.
pub(crate) const IMAGE_SUFFIX: &str = ".erofs";

/// `EROFS_SUPER_MAGIC_V1`: what `statfs` reports for an erofs mount.
const EROFS_MAGIC: u64 = 0xE0F5_E1E2;

/// Mount points this process has already matched to their image in `/proc/self/mountinfo`
/// (reading it is the expensive part of the check; `statfs` is repeated on every use).
static CONFIRMED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// The layer a name under `layers/` stands for, and whether it is an image.
pub(crate) fn stored_layer(name: &str) -> Option<(LayerDigest, bool)> {
    match name.strip_suffix(IMAGE_SUFFIX) {
        Some(hex) => LayerDigest::parse(hex).map(|d| (d, true)),
        None => LayerDigest::parse(name).map(|d| (d, false)),
    }
}

impl Layers<'_> {
    /// Where the image of `digest` is kept, if the layer is an image.
    pub fn image_path(&self, digest: &LayerDigest) -> PathBuf {
        self.cache
            .root
            .join("layers")
            .join(format!("{}{IMAGE_SUFFIX}", digest.to_hex()))
    }

    /// Where the image of `digest` is mounted.
    pub fn mount_point(&self, digest: &LayerDigest) -> PathBuf {
        self.cache.root.join("mounts").join(digest.to_hex())
    }

    /// Whether the layer is kept as an image (rather than a directory).
    pub fn is_image(&self, digest: &LayerDigest) -> bool {
        !self.dir_path(digest).is_dir() && self.image_path(digest).is_file()
    }

    /// A new path under `tmp/` to write an image into; hand it to [`Layers::place_image`] when
    /// complete, or remove it.
    pub fn image_file(&self) -> PathBuf {
        self.cache.tmp_path("image")
    }

    /// Publishes a complete image of the layer `digest` (the caller has checked that its
    /// entries hash to `digest`): noted unsynced, renamed into `layers/`, recorded as verified,
    /// and mounted. When the cache already has this layer verified, `file` is removed.
    pub fn place_image(&self, file: &Path, digest: &LayerDigest) -> Result<PathBuf, StoreError> {
        if self.usable(digest) && self.verified(digest)? && self.touch_verified(digest)? {
            std::fs::remove_file(file).map_err(io(file))?;
            return self.open(digest);
        }
        let dest = self.image_path(digest);
        self.cache
            .note_unsynced(&format!("layers/{}{IMAGE_SUFFIX}", digest.to_hex()))?;
        std::fs::rename(file, &dest).map_err(io(&dest))?;
        self.record_verified(digest)?;
        match self.mounted(digest) {
            Ok(at) => Ok(at),
            Err(e) => {
                // An image the kernel refuses is no layer: taken back out, so that the task is
                // restored or built another way rather than found here and unusable.
                let name = format!("{}{IMAGE_SUFFIX}", digest.to_hex());
                if let Some(aside) = self.move_aside(&name, "bad-image")? {
                    remove_aside(&aside)?;
                }
                self.cache.forget_layer(digest)?;
                Err(e)
            }
        }
    }

    /// The mount point of the image of `digest`, mounted now if it is not (first use in this
    /// boot). Serialized between processes by a lock on the image file, so that two processes
    /// never stack two mounts on one mount point.
    pub fn mounted(&self, digest: &LayerDigest) -> Result<PathBuf, StoreError> {
        let image = self.image_path(digest);
        let at = self.mount_point(digest);
        if is_mount_of(&at, &image) {
            return Ok(at);
        }
        let file = std::fs::File::open(&image).map_err(io(&image))?;
        flock(&file, FlockOperation::LockExclusive).map_err(|e| io(&image)(e.into()))?;
        if is_mount_of(&at, &image) {
            return Ok(at);
        }
        std::fs::create_dir_all(&at).map_err(io(&at))?;
        mount_image(&image, &at).map_err(|source| StoreError::ImageMount {
            image: image.clone(),
            at: at.clone(),
            source,
        })?;
        confirm(&at);
        Ok(at)
    }

    /// Takes the layer stored under `layers/<name>` out of sight (a rename into `tmp/`) and
    /// detaches its mount if it is an image; returns where it now is, for
    /// [`remove_aside`], or `None` when it was already gone.
    pub(crate) fn move_aside(&self, name: &str, hint: &str) -> Result<Option<PathBuf>, StoreError> {
        let path = self.cache.root.join("layers").join(name);
        let aside = self.cache.tmp_path(hint);
        match std::fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        }
        if let Some((digest, true)) = stored_layer(name) {
            self.cache.unmount_layer(&digest)?;
        }
        Ok(Some(aside))
    }
}

impl LocalCache {
    /// Drops the records of a layer that is no longer here.
    fn forget_layer(&self, digest: &LayerDigest) -> Result<(), StoreError> {
        let db = self.db.lock().expect("index lock poisoned");
        for table in ["verified_layers", "layer_sizes"] {
            db.execute(
                &format!("DELETE FROM {table} WHERE digest = ?1"),
                rusqlite::params![digest.to_hex()],
            )
            .map_err(self.index_err("forget a layer"))?;
        }
        Ok(())
    }

    /// Detaches the mount of the image of `digest` (if mounted) and removes its mount point.
    /// A task whose overlay stacks the image keeps it: its own mount namespace holds it.
    pub(crate) fn unmount_layer(&self, digest: &LayerDigest) -> Result<(), StoreError> {
        let at = self.layers().mount_point(digest);
        // Detached until nothing is mounted there: a mount point may hold stacked mounts (two
        // processes racing on an old strata, or a mount made by hand).
        for _ in 0..8 {
            if !is_erofs(&at) {
                break;
            }
            unmount(&at).map_err(io(&at))?;
        }
        forget(&at);
        match std::fs::remove_dir(&at) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&at)(e)),
        }
    }
}

/// Removes what [`Layers::move_aside`] moved: a directory tree or an image file.
pub(crate) fn remove_aside(aside: &Path) -> Result<(), StoreError> {
    let removed = if aside.is_dir() {
        std::fs::remove_dir_all(aside)
    } else {
        std::fs::remove_file(aside)
    };
    removed.map_err(io(aside))
}

/// Mounts the erofs image `image` read-only at `at`, from the file itself: the kernel reads
/// the image through the file's page cache (file-backed erofs, Linux 6.12 and later), so no
/// loop device is set up (mount(8) would set one up: 29 ms against 0.9 ms, BENCHMARKS.md).
pub fn mount_image(image: &Path, at: &Path) -> std::io::Result<()> {
    rustix::mount::mount(image, at, "erofs", rustix::mount::MountFlags::RDONLY, None)
        .map_err(std::io::Error::from)
}

/// Detaches the mount at `at` (`MNT_DETACH`: whoever still uses it keeps it until done).
pub fn unmount(at: &Path) -> std::io::Result<()> {
    rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH).map_err(std::io::Error::from)
}

fn is_erofs(at: &Path) -> bool {
    rustix::fs::statfs(at).is_ok_and(|s| s.f_type as u64 == EROFS_MAGIC)
}

/// Whether `at` is an erofs mount of `image`: `statfs` every time (the mount may be gone since,
/// after a reboot or a prune by another process), `mountinfo` once per process.
fn is_mount_of(at: &Path, image: &Path) -> bool {
    if !is_erofs(at) {
        forget(at);
        return false;
    }
    if CONFIRMED
        .lock()
        .expect("mount lock")
        .as_ref()
        .is_some_and(|c| c.contains(at))
    {
        return true;
    }
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let found = top_mount_source(&table, at)
        .is_some_and(|(fs, source)| fs == "erofs" && Path::new(&source) == image);
    if found {
        confirm(at);
    }
    found
}

fn confirm(at: &Path) {
    CONFIRMED
        .lock()
        .expect("mount lock")
        .get_or_insert_with(HashSet::new)
        .insert(at.to_path_buf());
}

fn forget(at: &Path) {
    if let Some(c) = CONFIRMED.lock().expect("mount lock").as_mut() {
        c.remove(at);
    }
}

/// The filesystem type and source of the topmost mount at `at` in a `mountinfo` table.
fn top_mount_source(table: &str, at: &Path) -> Option<(String, String)> {
    let at = at.to_str()?;
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = unescape(fields.get(4)?);
        let dash = fields.iter().position(|f| *f == "-")?;
        let fs = fields.get(dash + 1)?;
        let source = unescape(fields.get(dash + 2)?);
        (point == at).then(|| (fs.to_string(), source))
    })
}

/// `mountinfo` writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topmost_mount_at_a_point_is_the_one_that_counts() {
        let table = "\
36 27 0:40 / /c/mounts/ab ro,relatime - tmpfs tmpfs rw
45 36 0:41 / /c/mounts/ab ro,relatime - erofs /c/layers/ab.erofs ro,user_xattr
46 27 0:42 / /c/mounts/with\\040space ro - erofs /c/layers/x\\040y.erofs ro
";
        assert_eq!(
            top_mount_source(table, Path::new("/c/mounts/ab")),
            Some(("erofs".into(), "/c/layers/ab.erofs".into()))
        );
        assert_eq!(
            top_mount_source(table, Path::new("/c/mounts/with space")),
            Some(("erofs".into(), "/c/layers/x y.erofs".into()))
        );
        assert_eq!(top_mount_source(table, Path::new("/c/mounts/none")), None);
    }

    #[test]
    fn names_under_layers_say_which_layer_and_which_form() {
        let d = LayerDigest::from_hash(blake3::hash(b"x"));
        assert_eq!(stored_layer(&d.to_hex()), Some((d, false)));
        assert_eq!(
            stored_layer(&format!("{}.erofs", d.to_hex())),
            Some((d, true))
        );
        assert_eq!(stored_layer("junk.erofs"), None);
        assert_eq!(stored_layer("junk"), None);
    }
}
