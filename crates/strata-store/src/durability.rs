//! Deferred durability. A layer, log or workspace blob is usable by every process on this machine
//! as soon as it is renamed into place: until the machine goes down, the page cache is the truth.
//! Only a crash can lose what the kernel has not written back yet, so nobody waits for the disk
//! (a `syncfs` after a 700 MB restore costs most of a second here, several on a cloud volume).
//! Instead:
//!
//! - before an object is renamed into place, a row in `unsynced` names it and this boot
//!   (`/proc/sys/kernel/random/boot_id`); for workspace blobs, which come by the thousand, one
//!   row covers every blob written since it (`files/`, with its time);
//! - `settle` (run detached after a run that wrote something) flushes the filesystem, then drops
//!   the rows it covered;
//! - `open` in a later boot finds rows left by an earlier one: those objects may be torn, so they
//!   are moved out of sight, the entries and records naming them are dropped, and they are
//!   deleted. Their tasks run (or are restored) again; nothing torn is ever used.
//!
//! Where the boot cannot be identified, publishing syncs at once, as before.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::params;

use crate::error::{StoreError, io};
use crate::local::LocalCache;

/// The row that covers workspace blobs written since its time.
const FILES: &str = "files/";

/// This boot's identity, when the kernel offers one.
pub(crate) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl LocalCache {
    /// Records that `rel` (`layers/<hex>`, `logs/<hex>`) is about to be published before it is
    /// on disk. Call it after the object's content is written and before the rename.
    pub(crate) fn note_unsynced(&self, rel: &str) -> Result<(), StoreError> {
        let Some(boot) = &self.boot else {
            return Ok(());
        };
        let db = self.db.lock().expect("index lock poisoned");
        db.execute(
            "INSERT INTO unsynced (path, boot, at_ms) VALUES (?1, ?2, ?3)",
            params![rel, boot, now_ms()],
        )
        .map_err(self.index_err("record an unsynced object"))?;
        Ok(())
    }

    /// Records that workspace blobs are being written: call it before writing a batch of them
    /// and again after (so that a `settle` running meanwhile in another process cannot cover
    /// blobs written after its flush began).
    pub fn note_unsynced_files(&self) -> Result<(), StoreError> {
        self.note_unsynced(FILES)
    }

    /// Whether anything published on this machine since the last `settle` may not be on disk.
    pub fn has_unsynced(&self) -> bool {
        let Some(boot) = &self.boot else {
            return false;
        };
        let db = self.db.lock().expect("index lock poisoned");
        db.query_row(
            "SELECT EXISTS (SELECT 1 FROM unsynced WHERE boot = ?1)",
            params![boot],
            |r| r.get(0),
        )
        .unwrap_or(false)
    }

    /// Flushes the cache's filesystem, then forgets the objects that flush covered.
    pub fn settle(&self) -> Result<(), StoreError> {
        if self.boot.is_none() {
            // Nothing is noted without a boot id: flushing is all there is to do.
            return self.sync_now();
        }
        let Some(last) = self.last_unsynced()? else {
            return Ok(());
        };
        self.sync_now()?;
        self.forget_unsynced_through(last)
    }

    /// [`LocalCache::settle`] for the cache at `root`, holding the index open only to read and
    /// to update it, not during the flush (a detached process must not keep a cache that its
    /// owner is deleting). A cache that is gone is left alone.
    pub fn settle_at(root: &Path) -> Result<(), StoreError> {
        let exists = || root.join("index.sqlite").is_file();
        if !exists() {
            return Ok(());
        }
        let cache = LocalCache::open(root)?;
        if cache.boot.is_none() {
            return cache.sync_now();
        }
        let Some(last) = cache.last_unsynced()? else {
            return Ok(());
        };
        drop(cache);
        sync_fs(root)?;
        if exists() {
            LocalCache::open(root)?.forget_unsynced_through(last)?;
        }
        Ok(())
    }

    /// The newest note of this boot: a flush that starts after reading it covers it and every
    /// older one (notes are written after their object's content).
    fn last_unsynced(&self) -> Result<Option<i64>, StoreError> {
        let Some(boot) = &self.boot else {
            return Ok(None);
        };
        let db = self.db.lock().expect("index lock poisoned");
        db.query_row(
            "SELECT MAX(id) FROM unsynced WHERE boot = ?1",
            params![boot],
            |r| r.get(0),
        )
        .map_err(self.index_err("read unsynced objects"))
    }

    fn forget_unsynced_through(&self, last: i64) -> Result<(), StoreError> {
        let Some(boot) = &self.boot else {
            return Ok(());
        };
        let db = self.db.lock().expect("index lock poisoned");
        db.execute(
            "DELETE FROM unsynced WHERE boot = ?1 AND id <= ?2",
            params![boot, last],
        )
        .map_err(self.index_err("forget synced objects"))?;
        Ok(())
    }

    /// Drops what earlier boots published but never flushed: it may be torn.
    pub(crate) fn recover(&self) -> Result<(), StoreError> {
        let Some(boot) = &self.boot else {
            return Ok(());
        };
        let mut db = self.db.lock().expect("index lock poisoned");
        // The common case, nothing to recover, costs a read and no write lock.
        let earlier_boot: bool = db
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM unsynced WHERE boot != ?1)",
                params![boot],
                |r| r.get(0),
            )
            .map_err(self.index_err("read unsynced objects"))?;
        if !earlier_boot {
            return Ok(());
        }
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.index_err("begin a transaction"))?;
        let rows: Vec<(String, i64)> = {
            let mut stmt = tx
                .prepare("SELECT path, at_ms FROM unsynced WHERE boot != ?1")
                .map_err(self.index_err("read unsynced objects"))?;
            stmt.query_map(params![boot], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(self.index_err("read unsynced objects"))?
        };
        if rows.is_empty() {
            return Ok(());
        }
        // Out of sight first (a rename each), so that no process finds them while the index
        // still names them; deleted once the index no longer does.
        let mut doomed = Vec::new();
        let mut files_since = None::<i64>;
        for (rel, at_ms) in &rows {
            if rel == FILES {
                files_since = Some(files_since.map_or(*at_ms, |t| t.min(*at_ms)));
                continue;
            }
            let name = rel.rsplit('/').next().unwrap_or_default();
            // An image (`layers/<hex>.erofs`) is the layer `<hex>` as much as a directory is.
            let hex = name
                .strip_suffix(crate::layer_images::IMAGE_SUFFIX)
                .unwrap_or(name)
                .to_string();
            if rel.starts_with("layers/") {
                tx.execute("DELETE FROM entries WHERE layer = ?1", params![hex])
                    .and_then(|_| tx.execute("DELETE FROM archives WHERE layer = ?1", params![hex]))
                    .and_then(|_| {
                        tx.execute(
                            "DELETE FROM images WHERE instr(layers, ?1) > 0",
                            params![hex],
                        )
                    })
                    .map_err(self.index_err("drop entries of a torn layer"))?;
            } else if rel.starts_with("logs/") {
                tx.execute("DELETE FROM entries WHERE log = ?1", params![hex])
                    .map_err(self.index_err("drop entries of a torn log"))?;
            }
            if let Some(layer) = rel.strip_prefix("layers/") {
                // A torn image is not mounted (this is a new boot), but its mount point may be
                // left: `move_aside` clears both.
                if let Some(aside) = self.layers().move_aside(layer, "torn")? {
                    doomed.push(aside);
                }
                continue;
            }
            let from = self.root.join(rel);
            let to = self.tmp_path("torn");
            match std::fs::rename(&from, &to) {
                Ok(()) => doomed.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&from)(e)),
            }
        }
        if let Some(since) = files_since {
            // Workspace blobs are a copy of workspace files: any of them written since the mark
            // goes (ctime has one-second granularity on some filesystems: one second of slack).
            doomed.extend(self.move_out_files_since(since - 1000)?);
        }
        tx.execute("DELETE FROM unsynced WHERE boot != ?1", params![boot])
            .map_err(self.index_err("forget unsynced objects"))?;
        tx.commit().map_err(self.index_err("drop torn objects"))?;
        drop(db);
        for path in doomed {
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        Ok(())
    }

    fn move_out_files_since(&self, since_ms: i64) -> Result<Vec<PathBuf>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.root.join("files");
        let mut moved = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.ctime() * 1000 + meta.ctime_nsec() / 1_000_000 >= since_ms {
                let to = self.tmp_path("torn");
                if std::fs::rename(&path, &to).is_ok() {
                    moved.push(to);
                }
            }
        }
        Ok(moved)
    }

    pub(crate) fn sync_now(&self) -> Result<(), StoreError> {
        sync_fs(&self.root)
    }
}

fn sync_fs(root: &Path) -> Result<(), StoreError> {
    let dir = std::fs::File::open(root).map_err(io(root))?;
    rustix::fs::syncfs(&dir).map_err(|e| io(root)(e.into()))
}
