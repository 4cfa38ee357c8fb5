use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{StoreError, io};
use crate::index;

/// The layers of a [`LocalCache`] (`layers.rs`, `import.rs`).
#[derive(Clone, Copy)]
pub struct Layers<'a> {
    pub(crate) cache: &'a LocalCache,
}

/// The blobs of a [`LocalCache`] (`blobs.rs`, `logs.rs`).
#[derive(Clone, Copy)]
pub struct Content<'a> {
    pub(crate) cache: &'a LocalCache,
}

/// The index of a [`LocalCache`] (`index.rs`, `records.rs`, `usage.rs`).
#[derive(Clone, Copy)]
pub struct Index<'a> {
    pub(crate) cache: &'a LocalCache,
}

/// The runs, locks and kept failures of a [`LocalCache`] (`runs.rs`).
#[derive(Clone, Copy)]
pub struct Runs<'a> {
    pub(crate) cache: &'a LocalCache,
}

/// The cache directory:
///
/// ```text
/// index.sqlite        entries: cache key -> layer, env, inputs, log, timing, last use, hits
/// hits                hits of warm runs not yet folded into the index (`usage.rs`)
/// layers/<digest>/    committed layers, unpacked, immutable, used directly as overlay lowers
/// layers/<digest>.erofs  restored layers kept as erofs images (`layer_images.rs`), mounted read-only at
/// mounts/<digest>/    once per boot, and used as overlay lowers from there
/// files/<id>-<mode>   workspace file blobs, named by git blob id (hard-linked into workspace trees);
///                     `...@<mtime>`: a copy with another file's mtime (`blobs.rs`)
/// tool-caches/<id>.json  which layer each tool cache holds (`tool_caches.rs`)
/// logs/<digest>       task logs
/// runs/<id>/          scratch of a running strata process (held by a lock, removed when stale)
/// failed/<task>-<tag>/  the upper dir of the last failed run of a task, kept for inspection
/// history/<tag>/     the latest failed log per task and the last runs' records (`history.rs`)
/// locks/<key>         one execution per key (`flock`), removed by prune when unheld
/// statcache/<root>    remembered workspace file digests, per workspace root
/// statcache/<root>.walk  the last walk of a watched workspace and the watcher's token
/// watch/<hash>.sock    where `strata watch` answers for a workspace root (`.sock.cookies/`:
///                     its sync files)
/// tmp/                temp files, renamed into place when complete
/// ```
///
/// Its operations are split the way containerd splits content, snapshots, metadata and leases:
/// [`LocalCache::layers`] (committed layers: the snapshotter), [`LocalCache::content`] (blobs by
/// digest: workspace files, logs, package trees, temp files), [`LocalCache::index`] (the SQLite
/// metadata: entries, bases, archive and image records, broken shared entries, usage) and
/// [`LocalCache::runs`] (what keeps things alive: runs, per-key locks, kept failures). What
/// spans them (opening, durability, prune, verify, disk usage) stays on `LocalCache`.
pub struct LocalCache {
    pub(crate) root: PathBuf,
    pub(crate) db: Mutex<rusqlite::Connection>,
    /// This machine's boot, when known: publishing then defers flushing (`durability.rs`).
    pub(crate) boot: Option<String>,
}

/// `$STRATA_CACHE_DIR`, else `/var/cache/strata` for root, else `$XDG_CACHE_HOME/strata`
/// (`~/.cache/strata`).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/cache/strata");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("strata")
}

pub(crate) const SUBDIRS: &[&str] = &[
    "layers",
    "files",
    "logs",
    "runs",
    "failed",
    "statcache",
    "tmp",
    "locks",
    "mounts",
];

impl LocalCache {
    /// Opens (creating if needed) the cache at `root`, dropping whatever an earlier boot
    /// published but never flushed.
    pub fn open(root: &Path) -> Result<LocalCache, StoreError> {
        Self::open_in_boot(root, crate::durability::boot_id())
    }

    /// [`LocalCache::open`] as if this machine's boot were `boot` (for tests of crash recovery;
    /// `None`: a machine whose boot cannot be identified, where publishing syncs at once).
    #[doc(hidden)]
    pub fn open_in_boot(root: &Path, boot: Option<String>) -> Result<LocalCache, StoreError> {
        for sub in SUBDIRS {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        let root = std::fs::canonicalize(root).map_err(io(root))?;
        let db = index::open(&root.join("index.sqlite"))?;
        let cache = LocalCache {
            root,
            db: Mutex::new(db),
            boot,
        };
        cache.recover()?;
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Committed layers: prepare mounts over them, commit an upper dir, publish an unpacked one.
    pub fn layers(&self) -> Layers<'_> {
        Layers { cache: self }
    }

    /// Blobs by digest: workspace files, logs, package trees; temp files.
    pub fn content(&self) -> Content<'_> {
        Content { cache: self }
    }

    /// The index: entries and the records beside them.
    pub fn index(&self) -> Index<'_> {
        Index { cache: self }
    }

    /// Runs in progress, per-key locks and kept failures: what keeps data alive.
    pub fn runs(&self) -> Runs<'_> {
        Runs { cache: self }
    }

    pub(crate) fn tmp_path(&self, hint: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{hint}.{}.{n}", std::process::id()))
    }

    /// Call before recording an entry: what it names must survive a crash, or the entry must
    /// not. Where the boot is known that is already arranged (objects were noted as unsynced when
    /// published, `durability.rs`); elsewhere this flushes the filesystem.
    pub fn sync(&self) -> Result<(), StoreError> {
        match self.boot {
            Some(_) => Ok(()),
            None => self.sync_now(),
        }
    }
}

impl Content<'_> {
    /// Where the files of the package with this content digest are kept for the tasks that
    /// read them (`packages/<digest>`, a tree published whole by a rename).
    pub fn package_dir(&self, digest: &str) -> PathBuf {
        self.cache.root.join("packages").join(digest)
    }

    /// A workspace root's name in the cache: the BLAKE3 of its path, in hex.
    fn workspace_name(workspace: &Path) -> blake3::Hash {
        blake3::hash(workspace.as_os_str().as_encoded_bytes())
    }

    fn stat_cache_path(&self, workspace: &Path) -> PathBuf {
        let name = Self::workspace_name(workspace).to_hex();
        self.cache.root.join("statcache").join(name.as_str())
    }

    /// Where `strata watch` answers for a workspace root (a Unix socket; the name is short,
    /// as a socket's path must be).
    pub fn watch_socket(&self, workspace: &Path) -> PathBuf {
        let name = Self::workspace_name(workspace).to_hex();
        self.cache
            .root
            .join("watch")
            .join(format!("{}.sock", &name.as_str()[..16]))
    }

    /// The walk kept for a watched workspace root (empty when there is none).
    pub fn load_walk_cache(&self, workspace: &Path) -> Vec<u8> {
        std::fs::read(self.stat_cache_path(workspace).with_extension("walk")).unwrap_or_default()
    }

    /// Replaces the walk kept for a watched workspace root (atomically, as the stat cache).
    pub fn save_walk_cache(&self, workspace: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dest = self.stat_cache_path(workspace).with_extension("walk");
        self.replace(&dest, "walkcache", bytes)
    }

    /// The stat cache saved for a workspace root (empty when there is none).
    pub fn load_stat_cache(&self, workspace: &Path) -> Vec<u8> {
        std::fs::read(self.stat_cache_path(workspace)).unwrap_or_default()
    }

    /// Replaces the stat cache of a workspace root (atomically; concurrent runs: last one wins,
    /// which is fine for a cache of digests).
    pub fn save_stat_cache(&self, workspace: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.replace(&self.stat_cache_path(workspace), "statcache", bytes)
    }

    /// Writes `bytes` to a temp file and renames it over `dest`.
    fn replace(&self, dest: &Path, tmp_kind: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.cache.tmp_path(tmp_kind);
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, dest).map_err(io(dest))
    }
}

/// Where git package sources are cloned under a cache directory (`package-sources/`): they are
/// fetched before the pipeline is read, so before the cache is opened.
pub fn package_sources_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("package-sources")
}
