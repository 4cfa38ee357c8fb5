use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {action} in the cache index {path}")]
    Index {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cache index entry {key} is unreadable")]
    CorruptEntry {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the workspace files recorded for cache entry {key} are unreadable: {message}")]
    CorruptWorkspaceList { key: String, message: String },
    #[error("layer content does not match its name: expected {expected}, found {found}")]
    LayerMismatch {
        expected: strata_key::LayerDigest,
        found: strata_key::LayerDigest,
    },
    #[error("failed to hash layer")]
    Tree(#[from] strata_key::TreeError),
    #[error("failed to mount layer image {image} at {at}")]
    ImageMount {
        image: PathBuf,
        at: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("workspace file {path} changed while it was being captured")]
    WorkspaceChanged { path: PathBuf },
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

/// An error and its causes on one line (`failed to commit: failed to access /x: No space left`),
/// for messages that travel in events and warnings.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}
