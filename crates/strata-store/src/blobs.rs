//! Workspace file blobs (logs are in `logs.rs`).
//!
//! A blob `files/<id>-<mode>` is named by content (its git blob id, as keys name workspace
//! files) and mode, and carries the mtime the file
//! had when it was first copied in. A workspace tree must show each file with its real mtime
//! (cargo and make compare mtimes), and the blob is hard-linked into trees, so a file whose
//! mtime differs from its blob's gets a copy of its own, `files/<id>-<mode>@<secs>.<nanos>`,
//! made once and linked from then on. Setting the mtime of a shared blob instead would change it
//! under every tree linking it. mtimes never enter a key; prune and verify treat a copy as part
//! of its content's blob.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strata_key::{FileId, FileIdHasher};

use crate::error::{StoreError, io};
use crate::local::Content;

/// The name of the content blob a file of `files/` belongs to (itself, or the blob a
/// `name@mtime` copy was made from).
pub(crate) fn content_name(name: &str) -> &str {
    name.split_once('@').map_or(name, |(content, _)| content)
}

/// A file's modification time: seconds and nanoseconds since the epoch.
pub type FileMtime = (i64, u32);

fn set_mtime(path: &Path, (secs, nanos): FileMtime) -> Result<(), StoreError> {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: nanos as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: nanos as _,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &t,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io(path)(e.into()))
}

fn mtime_of(meta: &std::fs::Metadata) -> FileMtime {
    use std::os::unix::fs::MetadataExt;
    (meta.mtime(), meta.mtime_nsec() as u32)
}

impl Content<'_> {
    /// [`Content::workspace_blob`] with the file's real mtime: the content's blob when its
    /// mtime is `mtime` (a blob copied in now takes it), else a copy of it with that mtime.
    pub fn workspace_blob_with_mtime(
        &self,
        src: &Path,
        digest: &FileId,
        mode: u32,
        mtime: FileMtime,
    ) -> Result<PathBuf, StoreError> {
        let blob = self.workspace_blob_stamped(src, digest, mode, Some(mtime))?;
        let meta = std::fs::metadata(&blob).map_err(io(&blob))?;
        if mtime_of(&meta) == mtime {
            return Ok(blob);
        }
        let name = blob
            .file_name()
            .and_then(|n| n.to_str())
            .expect("blob names are ASCII");
        let copy = blob.with_file_name(format!("{name}@{}.{:09}", mtime.0, mtime.1));
        if copy.exists() {
            return Ok(copy);
        }
        // From the blob, not the workspace: the blob's content is known to match its digest.
        let tmp = self.cache.tmp_path("file");
        std::fs::copy(&blob, &tmp).map_err(io(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
        set_mtime(&tmp, mtime)?;
        std::fs::rename(&tmp, &copy).map_err(io(&copy))?;
        Ok(copy)
    }

    /// The blob holding a workspace file with this content and mode, copying it from `src` if
    /// the cache does not have it yet (bracket a batch of these with
    /// [`LocalCache::note_unsynced_files`]). The copy is checked against `digest`, so a file edited
    /// between hashing and copying is reported rather than cached under the wrong name.
    pub fn workspace_blob(
        &self,
        src: &Path,
        digest: &FileId,
        mode: u32,
    ) -> Result<PathBuf, StoreError> {
        self.workspace_blob_stamped(src, digest, mode, None)
    }

    fn workspace_blob_stamped(
        &self,
        src: &Path,
        digest: &FileId,
        mode: u32,
        mtime: Option<FileMtime>,
    ) -> Result<PathBuf, StoreError> {
        let dest = self
            .cache
            .root
            .join("files")
            .join(format!("{}-{:o}", digest.to_hex(), mode));
        if dest.exists() {
            return Ok(dest);
        }
        let tmp = self.cache.tmp_path("file");
        let mut input = std::fs::File::open(src).map_err(io(src))?;
        let size = input.metadata().map_err(io(src))?.len();
        let mut output = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut hasher = FileIdHasher::new(size);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = input.read(&mut buf).map_err(io(src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            output.write_all(&buf[..n]).map_err(io(&tmp))?;
        }
        drop(output);
        // A file that changed size, or whose new content carries a collision attack, is no
        // more the file that was keyed than one whose id differs.
        if hasher.finish(src).ok() != Some(*digest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::WorkspaceChanged {
                path: src.to_path_buf(),
            });
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
        if let Some(mtime) = mtime {
            set_mtime(&tmp, mtime)?;
        }
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
        Ok(dest)
    }
}
