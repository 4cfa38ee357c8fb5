//! The filtered workspace as a directory tree that can be an overlay lower dir: built once per
//! distinct selection per run, from hard links to the cache's workspace blobs (so the tree is a
//! snapshot: later edits to the workspace do not leak into a running task).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_key::{FileKind, WorkspaceDigest, WorkspaceFile};
use strata_store::{LocalCache, StoreError};

#[derive(Default)]
pub(crate) struct WorkspaceTrees {
    built: Mutex<HashMap<WorkspaceDigest, PathBuf>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl WorkspaceTrees {
    /// A directory whose `workspace/` holds exactly `files` (`origins`: where each is in the
    /// captured workspace).
    pub(crate) fn get(
        &self,
        cache: &LocalCache,
        run_dir: &Path,
        workspace_root: &Path,
        digest: WorkspaceDigest,
        files: &[WorkspaceFile],
        origins: &[std::sync::Arc<str>],
    ) -> Result<PathBuf, StoreError> {
        let mut built = self.built.lock().expect("tree lock poisoned");
        if let Some(p) = built.get(&digest) {
            return Ok(p.clone());
        }
        let root = run_dir.join("ws").join(digest.to_hex());
        let ws = root.join("workspace");
        std::fs::create_dir_all(&ws).map_err(io(&ws))?;
        let blobs = files
            .iter()
            .any(|f| matches!(f.kind, FileKind::File { .. }));
        if blobs {
            cache.note_unsynced_files()?;
        }
        for (f, origin) in files.iter().zip(origins) {
            let dest = ws.join(&*f.path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            match &f.kind {
                FileKind::File { digest, .. } => {
                    let origin = workspace_root.join(&**origin);
                    let blob = cache.workspace_blob(&origin, digest, f.mode)?;
                    match std::fs::hard_link(&blob, &dest) {
                        Ok(()) => {}
                        // A prune removed the blob in between: it is copied again.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            let blob = cache.workspace_blob(&origin, digest, f.mode)?;
                            std::fs::hard_link(&blob, &dest).map_err(io(&dest))?;
                        }
                        Err(e) => return Err(io(&dest)(e)),
                    }
                }
                FileKind::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &dest).map_err(io(&dest))?;
                }
            }
        }
        if blobs {
            cache.note_unsynced_files()?;
        }
        built.insert(digest, root.clone());
        Ok(root)
    }
}
