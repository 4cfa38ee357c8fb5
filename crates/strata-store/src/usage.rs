//! What the cache holds and how it is used: hits counted per entry (batched, once per run),
//! sizes on disk, and the figures behind `strata cache ls` and `strata cache stats`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{OptionalExtension, params};
use strata_key::{CacheKey, ContentDigest, LayerDigest};

use crate::error::{StoreError, io};
use crate::local::{Index, Layers, LocalCache};
use crate::runs::RunDir;

/// One entry as `strata cache ls` shows it.
#[derive(Debug, Clone)]
pub struct EntryUsage {
    pub key: CacheKey,
    pub pipeline: String,
    pub task: String,
    pub layer: LayerDigest,
    pub log: ContentDigest,
    /// Bytes on disk of its layer (`None`: the layer is missing).
    pub layer_bytes: Option<u64>,
    pub created_at: SystemTime,
    /// When a run last used it (created or restored it).
    pub last_used_at: SystemTime,
    /// How many runs restored it from this cache.
    pub hits: u64,
    /// How long the task took when it ran.
    pub duration: Duration,
}

impl EntryUsage {
    /// The time its hits saved: each restore skipped one run of the task.
    pub fn saved(&self) -> Duration {
        self.duration
            .saturating_mul(self.hits.min(u32::MAX as u64) as u32)
    }
}

/// Bytes on disk, by what they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub layers: u64,
    pub logs: u64,
    /// Workspace file blobs (`files/`).
    pub files: u64,
    /// Upper dirs of failed tasks kept for inspection.
    pub failed: u64,
    /// Scratch of runs and temporary files (`runs/`, `tmp/`).
    pub scratch: u64,
    /// The SQLite index and the stat caches.
    pub index: u64,
}

impl DiskUsage {
    pub fn total(&self) -> u64 {
        self.layers + self.logs + self.files + self.failed + self.scratch + self.index
    }

    /// What a budget (`local.max-size`) counts: everything but the index and the scratch of
    /// live runs, which a prune cannot take.
    pub fn reclaimable(&self) -> u64 {
        self.layers + self.logs + self.files + self.failed
    }
}

/// The totals of `strata cache stats`.
#[derive(Debug, Clone, Default)]
pub struct CacheStats {
    pub entries: u64,
    pub layers: u64,
    pub logs: u64,
    pub files: u64,
    pub disk: DiskUsage,
    pub hits: u64,
    pub saved: Duration,
}

/// Bytes allocated on disk by what a directory holds (not the directory itself).
pub(crate) fn contents_usage(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path(), seen)).sum())
        .unwrap_or(0)
}

/// Bytes allocated on disk under `path` (not following symlinks), each inode once: `seen`
/// carries inodes across calls so that hard links between trees count once.
pub(crate) fn disk_usage(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = 0;
    if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
        total += meta.blocks() * 512;
    }
    if meta.is_dir()
        && let Ok(dir) = std::fs::read_dir(path)
    {
        for entry in dir.flatten() {
            total += disk_usage(&entry.path(), seen);
        }
    }
    total
}

/// Hits not yet in the index: `<key> <ms since the epoch>` a line.
const HITS: &str = "hits";

/// A `hits` file this large is folded by the run that appends to it.
const FOLD_HITS_AT: u64 = 256 << 10;

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl LocalCache {
    /// Bytes on disk by kind. Walks the whole cache: for `stats` and budgets, not for every
    /// run.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let mut usage = DiskUsage::default();
        let layers = self.root.join("layers");
        for entry in std::fs::read_dir(&layers).map_err(io(&layers))? {
            let entry = entry.map_err(io(&layers))?;
            match entry.file_name().to_str().and_then(LayerDigest::parse) {
                Some(digest) => usage.layers += self.layers().bytes(&digest)?.unwrap_or(0),
                None => usage.layers += disk_usage(&entry.path(), &mut HashSet::new()),
            }
        }
        let mut seen = HashSet::new();
        usage.logs = contents_usage(&self.root.join("logs"), &mut seen);
        usage.files = contents_usage(&self.root.join("files"), &mut seen);
        usage.failed = contents_usage(&self.root.join("failed"), &mut seen);
        usage.scratch = contents_usage(&self.root.join("tmp"), &mut seen)
            + contents_usage(&self.root.join("runs"), &mut seen);
        usage.index = ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"]
            .iter()
            .map(|f| disk_usage(&self.root.join(f), &mut seen))
            .sum::<u64>()
            + contents_usage(&self.root.join("statcache"), &mut seen)
            + contents_usage(&self.root.join("locks"), &mut seen);
        Ok(usage)
    }

    /// The totals of `strata cache stats`.
    pub fn stats(&self) -> Result<CacheStats, StoreError> {
        self.index().fold_hits()?;
        let (entries, hits, saved_ms): (i64, i64, i64) = {
            let db = self.db.lock().expect("index lock poisoned");
            db.query_row(
                "SELECT COUNT(*), COALESCE(SUM(hits), 0), COALESCE(SUM(hits * duration_ms), 0)
                 FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(self.index_err("count entries"))?
        };
        let count = |sub: &str| -> Result<u64, StoreError> {
            let dir = self.root.join(sub);
            Ok(std::fs::read_dir(&dir).map_err(io(&dir))?.count() as u64)
        };
        Ok(CacheStats {
            entries: entries.max(0) as u64,
            layers: count("layers")?,
            logs: count("logs")?,
            files: count("files")?,
            disk: self.disk_usage()?,
            hits: hits.max(0) as u64,
            saved: Duration::from_millis(saved_ms.max(0) as u64),
        })
    }
}

impl Index<'_> {
    /// Looks up `key` for use by the run `run`. The layer is noted in the run's lease before
    /// the entry is read again, so that a concurrent prune either reads the note and keeps the
    /// layer, or has already removed the entry (and this is a miss: the task runs).
    pub fn lookup_for_run(
        &self,
        run: &RunDir,
        key: &CacheKey,
    ) -> Result<Option<crate::Entry>, StoreError> {
        let Some(entry) = self.lookup(key)? else {
            return Ok(None);
        };
        run.note_layer(&entry.layer)?;
        let db = self.cache.db.lock().expect("index lock poisoned");
        let still: bool = db
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE key = ?1 AND layer = ?2)",
                params![key.to_hex(), entry.layer.to_hex()],
                |r| r.get(0),
            )
            .map_err(self.cache.index_err("read an entry"))?;
        drop(db);
        // The layer was there at the first read, and a prune removes an entry's row before its
        // layer: with the row still there, the layer is (and now stays, by the note).
        Ok(still.then_some(entry))
    }

    /// Records the hits a run noted, as one append to the cache's `hits` file: a warm run must
    /// not write the index (its last connection would then checkpoint the WAL, with fsyncs, a
    /// millisecond on a run of a few). The file is folded into the index by whatever reads hits
    /// (`ls`, `stats`, `prune`), and by the run that finds it large.
    pub fn record_hits(&self, run: &RunDir) -> Result<(), StoreError> {
        use std::io::Write;
        let hits = run.take_hits();
        if hits.is_empty() {
            return Ok(());
        }
        let now = crate::durability::now_ms();
        let mut lines = String::with_capacity(hits.len() * 80);
        for key in &hits {
            lines.push_str(&format!("{} {now}\n", key.to_hex()));
        }
        let path = self.cache.root.join(HITS);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        // One write: appends of several processes do not interleave.
        file.write_all(lines.as_bytes()).map_err(io(&path))?;
        let size = file.metadata().map_err(io(&path))?.len();
        drop(file);
        if size > FOLD_HITS_AT {
            self.fold_hits()?;
        }
        Ok(())
    }

    /// Moves the hits recorded in the `hits` file into the index (one transaction).
    pub fn fold_hits(&self) -> Result<(), StoreError> {
        let path = self.cache.root.join(HITS);
        let taken = self.cache.tmp_path("hits");
        match std::fs::rename(&path, &taken) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&path)(e)),
        }
        let text = std::fs::read_to_string(&taken).map_err(io(&taken))?;
        let mut db = self.cache.db.lock().expect("index lock poisoned");
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.cache.index_err("begin a transaction"))?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE entries SET hits = hits + 1,
                         last_used_at = MAX(COALESCE(last_used_at, created_at), ?2)
                     WHERE key = ?1",
                )
                .map_err(self.cache.index_err("count hits"))?;
            for line in text.lines() {
                let Some((key, at)) = line.split_once(' ') else {
                    continue;
                };
                let (Some(key), Ok(at)) = (CacheKey::parse(key), at.parse::<i64>()) else {
                    continue;
                };
                update
                    .execute(params![key.to_hex(), at])
                    .map_err(self.cache.index_err("count hits"))?;
            }
        }
        tx.commit().map_err(self.cache.index_err("count hits"))?;
        drop(db);
        std::fs::remove_file(&taken).map_err(io(&taken))
    }

    /// Every entry with its use, most recently used first.
    pub fn entry_usage(&self) -> Result<Vec<EntryUsage>, StoreError> {
        self.fold_hits()?;
        type Row = (
            String,
            String,
            String,
            String,
            String,
            i64,
            Option<i64>,
            i64,
            i64,
        );
        let rows: Vec<Row> = {
            let db = self.cache.db.lock().expect("index lock poisoned");
            let mut stmt = db
                .prepare(
                    "SELECT key, pipeline, task, layer, log, created_at, last_used_at, hits,
                            duration_ms
                     FROM entries ORDER BY COALESCE(last_used_at, created_at) DESC, task",
                )
                .map_err(self.cache.index_err("list entries"))?;
            stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .map_err(self.cache.index_err("list entries"))?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (key, pipeline, task, layer, log, created, used, hits, duration) in rows {
            let (Some(key), Some(layer), Some(log)) = (
                CacheKey::parse(&key),
                LayerDigest::parse(&layer),
                ContentDigest::parse(&log),
            ) else {
                continue;
            };
            out.push(EntryUsage {
                key,
                pipeline,
                task,
                layer_bytes: self.cache.layers().bytes(&layer)?,
                layer,
                log,
                created_at: from_ms(created),
                last_used_at: from_ms(used.unwrap_or(created)),
                hits: hits.max(0) as u64,
                duration: Duration::from_millis(duration.max(0) as u64),
            });
        }
        Ok(out)
    }
}

impl Layers<'_> {
    /// Bytes on disk of a layer, measured once and remembered (layers are immutable); `None`
    /// when it is not here.
    pub fn bytes(&self, layer: &LayerDigest) -> Result<Option<u64>, StoreError> {
        let path = self.dir_path(layer);
        if !path.is_dir() {
            // An image's size is its file's (what it holds on disk).
            return Ok(std::fs::metadata(self.image_path(layer))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()));
        }
        let known: Option<i64> = {
            let db = self.cache.db.lock().expect("index lock poisoned");
            db.query_row(
                "SELECT bytes FROM layer_sizes WHERE digest = ?1",
                params![layer.to_hex()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.cache.index_err("read a layer size"))?
        };
        if let Some(bytes) = known {
            return Ok(Some(bytes.max(0) as u64));
        }
        let bytes = disk_usage(&path, &mut HashSet::new());
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute(
            "INSERT OR REPLACE INTO layer_sizes (digest, bytes) VALUES (?1, ?2)",
            params![layer.to_hex(), bytes as i64],
        )
        .map_err(self.cache.index_err("record a layer size"))?;
        Ok(Some(bytes))
    }
}
