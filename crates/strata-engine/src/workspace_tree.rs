//! The filtered workspace as a directory tree that can be an overlay lower dir: built once per
//! distinct selection per run, from hard links to the cache's workspace blobs (so the tree is a
//! snapshot: later edits to the workspace do not leak into a running task) and, for a task whose
//! filter also narrows what its used tasks wrote into the workspace, to those layers' files.
//! Captured files keep the mtime the checkout gave them (`strata-store`'s `blobs.rs`).
//! Such a task's tree goes above a *mask*: a lower dir whose `workspace/` is opaque, hiding the
//! layers' own `workspace/` parts below it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_key::{FileKind, Workspace, WorkspaceDigest, WorkspaceFile};

use crate::checkout_view::CheckoutView;
use crate::context::RunContext;
use crate::inputs::WorkspaceView;
use strata_store::{LocalCache, StoreError};

#[derive(Default)]
pub(crate) struct WorkspaceTrees {
    built: Mutex<HashMap<WorkspaceDigest, PathBuf>>,
    mask: Mutex<Option<PathBuf>>,
    /// Views of the checkout itself (`checkout_view.rs`), `None` where one is not exact.
    views: Mutex<HashMap<WorkspaceDigest, Result<Arc<CheckoutView>, String>>>,
}

/// Where a file of a workspace tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The captured workspace, at this path.
    Captured(Arc<str>),
    /// A file of a committed layer (immutable): linked as it is.
    Layer(PathBuf),
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
        workspace: &Workspace,
        digest: WorkspaceDigest,
        files: &[WorkspaceFile],
        origins: &[Origin],
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
            match (&f.kind, origin) {
                (FileKind::File { digest, .. }, Origin::Captured(origin)) => {
                    // The file's mtime in the checkout, so that cargo or make see an unchanged
                    // file as unchanged and an edited one as newer than their outputs.
                    let mtime = workspace.mtime(origin);
                    let origin = workspace.root.join(&**origin);
                    let blob_of = || match mtime {
                        Some(mtime) => cache
                            .content()
                            .workspace_blob_with_mtime(&origin, digest, f.mode, mtime),
                        None => cache.content().workspace_blob(&origin, digest, f.mode),
                    };
                    let blob = blob_of()?;
                    match std::fs::hard_link(&blob, &dest) {
                        Ok(()) => {}
                        // A prune removed the blob in between: it is copied again.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            let blob = blob_of()?;
                            std::fs::hard_link(&blob, &dest).map_err(io(&dest))?;
                        }
                        Err(e) => return Err(io(&dest)(e)),
                    }
                }
                (FileKind::File { .. }, Origin::Layer(file)) => {
                    if std::fs::hard_link(file, &dest).is_err() {
                        // Another filesystem: a copy (layers are immutable, so it is exact).
                        std::fs::copy(file, &dest).map_err(io(&dest))?;
                    }
                }
                (FileKind::Symlink { target }, _) => {
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

    /// The checkout itself as `view`'s files (made once per digest in a run), or why that
    /// would not be exact and a tree is needed.
    pub(crate) fn checkout_view(
        &self,
        ctx: &RunContext<'_>,
        view: &WorkspaceView,
    ) -> Result<Arc<CheckoutView>, String> {
        let mut views = self.views.lock().expect("view lock poisoned");
        views
            .entry(view.digest)
            .or_insert_with(|| {
                let dir = ctx
                    .run_dir
                    .path()
                    .join("ws-view")
                    .join(view.digest.to_hex());
                CheckoutView::build(
                    &ctx.workspace,
                    &view.files,
                    &view.origins,
                    ctx.cache.root(),
                    &dir,
                )
                .map(Arc::new)
                .map_err(|e| e.0)
            })
            .clone()
    }

    /// The run's mask: a directory whose `workspace/` is an opaque directory, so that, as a lower
    /// dir, it hides the `workspace/` of every lower dir below it.
    pub(crate) fn mask(&self, run_dir: &Path) -> Result<PathBuf, StoreError> {
        let mut mask = self.mask.lock().expect("mask lock poisoned");
        if let Some(p) = mask.as_ref() {
            return Ok(p.clone());
        }
        let root = run_dir.join("ws-mask");
        let ws = root.join("workspace");
        std::fs::create_dir_all(&ws).map_err(io(&ws))?;
        rustix::fs::lsetxattr(
            &ws,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| io(&ws)(e.into()))?;
        *mask = Some(root.clone());
        Ok(root)
    }
}
