//! `strata watch`: a process that watches a workspace with inotify and answers, over a Unix
//! socket, which paths changed since a moment it named before. With it, a warm capture takes
//! its files from the previous walk plus the changed paths (`strata_key::Workspace::
//! capture_watched`) instead of an `lstat` of every file.
//!
//! Owns: the watcher (its inotify watches, its record of changed paths, its socket) and the
//! client's question. Must not touch: the key itself, the cache's contents, the pipeline.
//!
//! The answer is exact up to the moment it is given: before answering, the watcher creates a
//! cookie file in a directory it watches with the same inotify instance and takes in events
//! until the cookie's own arrives. Every change a system call finished before the question was
//! asked is queued ahead of the cookie (watchman's scheme).
//!
//! It watches every directory of the workspace but the excluded ones (the cache) and the
//! insides of `.git` directories (only `.git` itself and its `info/` are watched: they decide
//! what is ignored). A change it cannot follow (a queue overflow, too many changed paths) makes
//! it answer "unknown" to every token from before, so the next capture walks.

mod daemon;
mod protocol;

pub use daemon::{WatchError, Watcher};
pub use protocol::ask;

/// Where a workspace's watcher keeps its cookies, beside its socket.
pub(crate) fn cookie_dir(socket: &std::path::Path) -> std::path::PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".cookies");
    name.into()
}
