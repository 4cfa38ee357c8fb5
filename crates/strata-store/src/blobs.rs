//! Workspace file blobs (logs are in `logs.rs`).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strata_key::ContentDigest;

use crate::error::{StoreError, io};
use crate::local::Content;

impl Content<'_> {
    /// The blob holding a workspace file with this content and mode, copying it from `src` if
    /// the cache does not have it yet (bracket a batch of these with
    /// [`LocalCache::note_unsynced_files`]). The copy is checked against `digest`, so a file edited
    /// between hashing and copying is reported rather than cached under the wrong name.
    pub fn workspace_blob(
        &self,
        src: &Path,
        digest: &ContentDigest,
        mode: u32,
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
        let mut output = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut hasher = blake3::Hasher::new();
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
        if ContentDigest::from_hash(hasher.finalize()) != *digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::WorkspaceChanged {
                path: src.to_path_buf(),
            });
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
        Ok(dest)
    }
}
