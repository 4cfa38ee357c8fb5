//! Tool caches (`tool-cache: NAME` on a task): which layer a tool cache's latest successful
//! execution committed, so that the next execution of a task under that name, on a miss, starts
//! from those files (npm's, cargo's `target/`, ccache's) instead of from scratch.
//!
//! A tool cache is only a *record* naming a committed layer, `tool-caches/<id>.json`, replaced
//! whole by a rename: the layer itself is immutable and content-addressed like every other one,
//! so two runs writing one tool cache at once leave one complete record or the other (last
//! writer wins), never a mix. A record older than the maximum age (RWX's 48 hours by default)
//! is neither used nor kept; while it is younger, its layer counts as named for `prune`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use strata_key::LayerDigest;

use crate::durability::now_ms;
use crate::error::{StoreError, io};
use crate::local::LocalCache;

/// RWX evicts a tool cache 48 hours after it was written.
pub const DEFAULT_TOOL_CACHE_MAX_AGE: Duration = Duration::from_secs(48 * 3600);

/// Bumped when the record's members change meaning; a record of another schema is ignored.
const RECORD_SCHEMA: u64 = 1;

/// Which tool cache: its vault (the pipeline's `tool-cache: {vault}`, a namespace) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToolCacheId {
    pub vault: String,
    pub name: String,
}

impl ToolCacheId {
    /// The record's file name (here and in shared caches): a digest, so that any name is a
    /// safe path.
    pub fn file_name(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"strata-tool-cache-v1\0");
        h.update(self.vault.as_bytes());
        h.update(b"\0");
        h.update(self.name.as_bytes());
        format!("{}.json", h.finalize().to_hex())
    }
}

impl std::fmt::Display for ToolCacheId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.vault.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.vault, self.name)
        }
    }
}

/// What a tool cache holds: the layer its latest successful execution committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCacheRecord {
    pub id: ToolCacheId,
    /// The task that wrote it (for `strata cache ls` and explanations).
    pub task: String,
    pub layer: LayerDigest,
    /// When it was written (milliseconds since the epoch): its age decides eviction.
    pub written_ms: i64,
}

impl ToolCacheRecord {
    fn to_json(&self) -> String {
        serde_json::json!({
            "schema": RECORD_SCHEMA,
            "vault": self.id.vault,
            "name": self.id.name,
            "task": self.task,
            "layer": self.layer.to_hex(),
            "written_ms": self.written_ms,
        })
        .to_string()
    }

    fn from_json(bytes: &[u8]) -> Option<ToolCacheRecord> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        if v.get("schema")?.as_u64()? != RECORD_SCHEMA {
            return None;
        }
        Some(ToolCacheRecord {
            id: ToolCacheId {
                vault: v.get("vault")?.as_str()?.to_string(),
                name: v.get("name")?.as_str()?.to_string(),
            },
            task: v.get("task")?.as_str()?.to_string(),
            layer: LayerDigest::parse(v.get("layer")?.as_str()?)?,
            written_ms: v.get("written_ms")?.as_i64()?,
        })
    }

    /// Older than `max_age` at `now_ms`.
    pub fn expired(&self, max_age: Duration, now_ms: i64) -> bool {
        let max = max_age.as_millis().min(i64::MAX as u128) as i64;
        now_ms.saturating_sub(self.written_ms) > max
    }
}

/// A record and its file.
struct RecordFile {
    path: PathBuf,
    record: ToolCacheRecord,
    /// Last used by a task that started from it (the file's mtime), or written.
    used_ms: i64,
}

/// A tool cache as `strata cache ls` and the `local.max-size` budget see it.
#[derive(Debug, Clone)]
pub struct ToolCacheUsage {
    pub record: ToolCacheRecord,
    /// The record's file name under `tool-caches/`.
    pub file_name: String,
    /// Last used by a task that started from it, or written (ms since the epoch).
    pub used_ms: i64,
    /// Its layer's size on disk; `None` when the layer is missing.
    pub layer_bytes: Option<u64>,
    /// Older than the maximum age: no longer used, removed by the next prune.
    pub expired: bool,
}

/// The tool caches of a [`LocalCache`]: one record per tool cache, naming the committed layer
/// it holds (`tool-caches/<id>`).
#[derive(Clone, Copy)]
pub struct ToolCaches<'a> {
    pub(crate) cache: &'a LocalCache,
}

impl LocalCache {
    pub fn tool_caches(&self) -> ToolCaches<'_> {
        ToolCaches { cache: self }
    }
}

impl ToolCaches<'_> {
    fn dir(&self) -> PathBuf {
        self.cache.root.join("tool-caches")
    }

    /// The tool cache's record, if there is one younger than `max_age` whose layer is here.
    pub fn get(
        &self,
        id: &ToolCacheId,
        max_age: Duration,
    ) -> Result<Option<ToolCacheRecord>, StoreError> {
        let path = self.dir().join(id.file_name());
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        // A record this version cannot read is no tool cache: the task starts from scratch.
        Ok(ToolCacheRecord::from_json(&bytes).filter(|r| {
            r.id == *id && !r.expired(max_age, now_ms()) && self.cache.layers().has(&r.layer)
        }))
    }

    /// Makes `layer` (committed) the tool cache's content: the record is written to a temp
    /// file and renamed over the old one, so a reader sees one whole record or the other.
    pub fn set(
        &self,
        id: &ToolCacheId,
        task: &str,
        layer: &LayerDigest,
    ) -> Result<ToolCacheRecord, StoreError> {
        let record = ToolCacheRecord {
            id: id.clone(),
            task: task.to_string(),
            layer: *layer,
            written_ms: now_ms(),
        };
        // Written is its last use too: the file's time (its last use) is the record's, not
        // that of the write a moment later.
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.written_ms as u64);
        self.write_used_at(&record, Some(at))?;
        Ok(record)
    }

    /// Writes `record` as it is (a tool cache restored from a shared cache keeps the age it
    /// has there); its last use is now.
    pub fn write(&self, record: &ToolCacheRecord) -> Result<(), StoreError> {
        self.write_used_at(record, None)
    }

    fn write_used_at(
        &self,
        record: &ToolCacheRecord,
        used_at: Option<std::time::SystemTime>,
    ) -> Result<(), StoreError> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let id = &record.id;
        let tmp = self.cache.tmp_path("tool-cache");
        std::fs::write(&tmp, record.to_json()).map_err(io(&tmp))?;
        if let Some(at) = used_at {
            std::fs::File::options()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.set_modified(at))
                .map_err(io(&tmp))?;
        }
        let dest = dir.join(id.file_name());
        std::fs::rename(&tmp, &dest).map_err(io(&dest))
    }

    /// Every readable tool cache record, expired or not.
    pub fn list(&self) -> Result<Vec<ToolCacheRecord>, StoreError> {
        Ok(self.files()?.into_iter().map(|f| f.record).collect())
    }

    /// Every readable record with its file, sorted by name then vault.
    fn files(&self) -> Result<Vec<RecordFile>, StoreError> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            let (Ok(bytes), Ok(meta)) = (std::fs::read(&path), std::fs::metadata(&path)) else {
                continue;
            };
            if let Some(record) = ToolCacheRecord::from_json(&bytes) {
                let touched_ms = meta.modified().map_or(0, |t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64)
                });
                out.push(RecordFile {
                    path,
                    used_ms: record.written_ms.max(touched_ms),
                    record,
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.record.id.name, &a.record.id.vault).cmp(&(&b.record.id.name, &b.record.id.vault))
        });
        Ok(out)
    }

    /// Every readable tool cache with its last use and layer size (`cache ls`, the budget).
    pub fn usage(&self, max_age: Duration) -> Result<Vec<ToolCacheUsage>, StoreError> {
        let now = now_ms();
        let mut out = Vec::new();
        for f in self.files()? {
            out.push(ToolCacheUsage {
                layer_bytes: self.cache.layers().bytes(&f.record.layer)?,
                expired: f.record.expired(max_age, now),
                used_ms: f.used_ms,
                file_name: f
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                record: f.record,
            });
        }
        Ok(out)
    }

    /// A task starts from `record`: notes the use (the record's mtime, its last use for the
    /// budget) if the tool cache still holds that layer. `false`: a prune removed it meanwhile,
    /// and its layer may be going (the caller noted the layer in its lease *before* asking, so
    /// a `true` means the prune, which reads leases after removing records, keeps the layer).
    pub fn note_use(&self, record: &ToolCacheRecord) -> Result<bool, StoreError> {
        let path = self.dir().join(record.id.file_name());
        let held = std::fs::read(&path)
            .ok()
            .and_then(|b| ToolCacheRecord::from_json(&b))
            .is_some_and(|r| r.layer == record.layer);
        if held {
            // Best effort: a missed touch only makes the tool cache look older to the budget.
            if let Ok(file) = std::fs::File::options().write(true).open(&path) {
                let _ = file.set_modified(std::time::SystemTime::now());
            }
        }
        Ok(held)
    }

    /// Removes the record `file_name` if it still names `layer` (a run may have replaced it
    /// since the budget chose it). Returns whether it went.
    pub(crate) fn remove_if_holds(&self, file_name: &str, layer: &str) -> Result<bool, StoreError> {
        let path = self.dir().join(file_name);
        let holds = std::fs::read(&path)
            .ok()
            .and_then(|b| ToolCacheRecord::from_json(&b))
            .is_some_and(|r| r.layer.to_hex() == layer);
        if !holds {
            return Ok(false);
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Removes the records older than `max_age` (and unreadable ones): their layers are then
    /// named by nothing and go with the rest of the garbage. Returns how many went.
    pub fn evict(&self, max_age: Duration) -> Result<u64, StoreError> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(&dir)(e)),
        };
        let now = now_ms();
        let mut evicted = 0;
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let keep = ToolCacheRecord::from_json(&bytes).is_some_and(|r| !r.expired(max_age, now));
            if !keep && std::fs::remove_file(&path).is_ok() {
                evicted += 1;
            }
        }
        Ok(evicted)
    }

    /// The layers the tool caches younger than `max_age` hold: named, for `prune`.
    pub(crate) fn layers(&self, max_age: Duration) -> Result<HashSet<String>, StoreError> {
        let now = now_ms();
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| !r.expired(max_age, now))
            .map(|r| r.layer.to_hex())
            .collect())
    }
}

/// The live tool caches as the collector's eviction candidates (`prune.rs`).
pub(crate) fn candidates(
    tool_caches: &ToolCaches<'_>,
    max_age: Duration,
) -> Result<Vec<crate::prune::Candidate>, StoreError> {
    Ok(tool_caches
        .usage(max_age)?
        .into_iter()
        .filter(|u| !u.expired)
        .map(|u| crate::prune::Candidate {
            tool_cache: Some(u.file_name),
            key: u.record.id.to_string(),
            task: u.record.task,
            layer: u.record.layer.to_hex(),
            log: String::new(),
            used_ms: u.used_ms,
            layer_bytes: u.layer_bytes.unwrap_or(0),
            log_bytes: 0,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(written_ms: i64) -> ToolCacheRecord {
        ToolCacheRecord {
            id: ToolCacheId {
                vault: "main".into(),
                name: "cargo".into(),
            },
            task: "build".into(),
            layer: LayerDigest::parse(&"ab".repeat(32)).expect("a digest"),
            written_ms,
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let r = record(1234);
        assert_eq!(ToolCacheRecord::from_json(r.to_json().as_bytes()), Some(r));
        assert_eq!(ToolCacheRecord::from_json(b"{\"schema\": 2}"), None);
        assert_eq!(ToolCacheRecord::from_json(b"not json"), None);
    }

    #[test]
    fn a_record_expires_after_its_maximum_age() {
        let hour = 3_600_000;
        let r = record(0);
        assert!(!r.expired(DEFAULT_TOOL_CACHE_MAX_AGE, 47 * hour));
        assert!(r.expired(DEFAULT_TOOL_CACHE_MAX_AGE, 49 * hour));
        assert!(r.expired(Duration::from_secs(1), 2000));
    }

    #[test]
    fn ids_differ_by_vault_and_name() {
        let a = ToolCacheId {
            vault: "a".into(),
            name: "b".into(),
        };
        let b = ToolCacheId {
            vault: "ab".into(),
            name: String::new(),
        };
        assert_ne!(a.file_name(), b.file_name());
    }
}
