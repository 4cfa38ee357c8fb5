//! The garbage collector of the local cache (`strata cache prune`, and the `local.max-size`
//! budget after a run).
//!
//! What goes:
//! - entries last used before `--older-than`, then, while the cache is over its budget, entries
//!   in least-recently-used order; an entry's layer and log go with it unless another entry
//!   names them; tool caches are evicted alongside, by their last use (a task starting from
//!   one touches its record), their record first, then their layer with the last entry or tool
//!   cache naming it;
//! - layers no entry or pulled image names (orphans of killed runs) and logs no entry names,
//!   once older than the grace period;
//! - workspace file lists no entry names, and the workspace blobs (`files/`) none of the
//!   remaining lists names;
//! - lock files nobody holds, the scratch and temporary files of dead processes, and kept
//!   upper dirs of failed tasks beyond the latest one per task (all of them older than
//!   `--older-than`), and failed logs and run records (`history.rs`) older than `--older-than`.
//!
//! What never goes — the rules that make pruning safe while other strata processes run:
//! - a layer noted in a live run's lease (`runs/<id>/uses`, see [`crate::RunDir::note_layer`]):
//!   a run notes a layer *before* it checks the entry again, and a prune reads the leases
//!   *after* it removed entries, so either the prune sees the note or the run sees the entry
//!   gone (a miss: the task runs);
//! - an entry last used or created after the oldest live run began (less a slack for clocks):
//!   that run may have found it and not yet noted it;
//! - an unnamed layer placed less than the grace period ago, or touched by a commit since this
//!   prune began (a commit that finds its layer here touches the record, `layers.rs`): a run
//!   places a layer before it writes the entry naming it.
//!
//! Removal order: index rows first, then files. An entry is deleted before its layer, so no
//! entry ever names a missing layer (and `lookup` checks the directory anyway); a layer is
//! renamed aside in the same transaction that forgets its records, then deleted, so a crash
//! leaves an orphan under `tmp/` (removed with the scratch of dead processes), never a half
//! layer under its name.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use strata_key::{ContentDigest, LayerDigest};

use crate::durability::now_ms;
use crate::error::{StoreError, io};
use crate::local::LocalCache;

/// Unnamed layers, logs and blobs younger than this are kept by default: a run may be between
/// writing them and the entry that names them (an image pull places many layers first).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Clocks of processes on one machine agree; this covers timestamps rounded to a millisecond
/// and a run that read an entry in the instant it began.
const SLACK_MS: i64 = 2000;

#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Evict least recently used entries until what the cache holds fits (layers, logs,
    /// workspace blobs, kept failed dirs).
    pub max_bytes: Option<u64>,
    /// Evict entries not used for this long.
    pub older_than: Option<Duration>,
    /// Keep unnamed objects younger than this.
    pub grace: Duration,
    /// Tool caches written longer ago are evicted; younger ones keep their layers.
    pub tool_cache_max_age: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_bytes: None,
            older_than: None,
            grace: DEFAULT_GRACE,
            tool_cache_max_age: crate::DEFAULT_TOOL_CACHE_MAX_AGE,
        }
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Entries removed: (task, key).
    pub entries: Vec<(String, String)>,
    pub layers: u64,
    pub logs: u64,
    pub files: u64,
    pub failed: u64,
    pub locks: u64,
    /// Tool cache records evicted: for their age, their last use (`--older-than`) or the
    /// budget.
    pub tool_caches: u64,
    /// Bytes freed by kind.
    pub freed: crate::DiskUsage,
    /// What the budget counts, before and after.
    pub before: u64,
    pub after: u64,
    /// The budget could not be met without removing what live runs need.
    pub over_budget: bool,
}

/// An entry (or a tool cache) as eviction sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// A tool cache's record file name; `None` for an entry.
    pub tool_cache: Option<String>,
    pub key: String,
    pub task: String,
    pub layer: String,
    pub log: String,
    /// Last used, or created (ms since the epoch).
    pub used_ms: i64,
    pub layer_bytes: u64,
    pub log_bytes: u64,
}

/// What eviction must leave alone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Protection {
    /// Layers in live runs' leases.
    pub layers: HashSet<String>,
    /// Entries used at or after this instant (the oldest live run's start, less the slack).
    pub used_since_ms: Option<i64>,
}

impl Protection {
    fn protects(&self, c: &Candidate) -> bool {
        self.layers.contains(&c.layer) || self.used_since_ms.is_some_and(|t| c.used_ms >= t)
    }
}

/// Which entries to evict (indices into `entries`): every unprotected one used before
/// `older_than_ms`, then unprotected ones least recently used first until `to_free` bytes are
/// freed. A layer or log frees its bytes only with the last entry naming it.
pub(crate) fn select_evictions(
    entries: &[Candidate],
    protection: &Protection,
    older_than_ms: Option<i64>,
    to_free: u64,
) -> Vec<usize> {
    let mut layer_refs: HashMap<&str, usize> = HashMap::new();
    let mut log_refs: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        *layer_refs.entry(&e.layer).or_default() += 1;
        if e.tool_cache.is_none() {
            *log_refs.entry(&e.log).or_default() += 1;
        }
    }
    let mut order: Vec<usize> = (0..entries.len())
        .filter(|&i| !protection.protects(&entries[i]))
        .collect();
    order.sort_by_key(|&i| (entries[i].used_ms, entries[i].key.clone()));
    let mut evicted = Vec::new();
    let mut freed = 0u64;
    for i in order {
        let e = &entries[i];
        let old = older_than_ms.is_some_and(|t| e.used_ms < t);
        if !old && freed >= to_free {
            continue;
        }
        evicted.push(i);
        let refs = layer_refs.get_mut(e.layer.as_str()).expect("counted");
        *refs -= 1;
        if *refs == 0 {
            freed += e.layer_bytes;
        }
        if e.tool_cache.is_some() {
            continue;
        }
        let refs = log_refs.get_mut(e.log.as_str()).expect("counted");
        *refs -= 1;
        if *refs == 0 {
            freed += e.log_bytes;
        }
    }
    evicted
}

/// Which kept failed dirs go: all but the newest per task, and any older than `cutoff_ms`.
/// `dirs` are (name, mtime in ms); names are `<task>-<12 hex of the pipeline>`.
pub(crate) fn select_failed(dirs: &[(String, i64)], cutoff_ms: Option<i64>) -> Vec<usize> {
    let task_of = |name: &str| -> String {
        match name.rsplit_once('-') {
            Some((task, tag)) if tag.len() == 12 && tag.bytes().all(|b| b.is_ascii_hexdigit()) => {
                task.to_string()
            }
            _ => name.to_string(),
        }
    };
    let mut newest: HashMap<String, usize> = HashMap::new();
    for (i, (name, mtime)) in dirs.iter().enumerate() {
        let best = newest.entry(task_of(name)).or_insert(i);
        if (*mtime, &dirs[i].0) > (dirs[*best].1, &dirs[*best].0) {
            *best = i;
        }
    }
    let keep: HashSet<usize> = newest.into_values().collect();
    (0..dirs.len())
        .filter(|i| !keep.contains(i) || cutoff_ms.is_some_and(|c| dirs[*i].1 < c))
        .collect()
}

/// When an unnamed layer may go: it was placed before `placed_before_ms`.
fn removable_age(at_ms: i64, placed_before_ms: i64) -> bool {
    at_ms < placed_before_ms
}

fn ctime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.ctime() * 1000 + meta.ctime_nsec() / 1_000_000
}

fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000
}

impl LocalCache {
    /// Collects garbage (see the module's doc for the rules).
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, StoreError> {
        let started = now_ms();
        let mut report = PruneReport::default();
        // Recent hits decide what is least recently used.
        self.index().fold_hits()?;
        self.runs().remove_dead_scratch()?;
        report.tool_caches = self.tool_caches().evict(options.tool_cache_max_age)?;
        let before = self.disk_usage()?;
        report.before = before.reclaimable();

        // This process's own run (a budget kept after a run) is covered by its lease alone.
        let others = self
            .runs()
            .live()?
            .into_iter()
            .filter(|r| r.pid != std::process::id());
        let protection = Protection {
            layers: HashSet::new(),
            used_since_ms: others.map(|r| r.started_ms - SLACK_MS).min(),
        };
        let older_than_ms = options
            .older_than
            .map(|age| started - age.as_millis().min(i64::MAX as u128) as i64);

        // Entries not used for too long.
        let mut forced = HashSet::new();
        if older_than_ms.is_some() {
            let entries = self.candidates(options)?;
            let mut p = protection.clone();
            p.layers = self.leased_layers()?;
            let evict = select_evictions(&entries, &p, older_than_ms, 0);
            forced.extend(self.remove_entries(&entries, &evict, &mut report)?);
        }
        self.sweep(options, started, &forced, &mut report)?;
        self.prune_failed(older_than_ms, &mut report)?;
        report.failed += self.history().prune(older_than_ms)?;

        // The budget.
        if let Some(max) = options.max_bytes {
            let total = self.disk_usage()?.reclaimable();
            if total > max {
                let entries = self.candidates(options)?;
                let mut p = protection.clone();
                p.layers = self.leased_layers()?;
                let evict = select_evictions(&entries, &p, None, total - max);
                let forced = self.remove_entries(&entries, &evict, &mut report)?;
                self.sweep(options, started, &forced, &mut report)?;
            }
        }
        let after = self.disk_usage()?;
        report.after = after.reclaimable();
        report.over_budget = options.max_bytes.is_some_and(|m| report.after > m);
        let freed = |b: u64, a: u64| b.saturating_sub(a);
        report.freed = crate::DiskUsage {
            layers: freed(before.layers, after.layers),
            logs: freed(before.logs, after.logs),
            files: freed(before.files, after.files),
            failed: freed(before.failed, after.failed),
            scratch: freed(before.scratch, after.scratch),
            index: 0,
        };
        Ok(report)
    }

    fn leased_layers(&self) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .runs()
            .live()?
            .into_iter()
            .flat_map(|r| r.layers)
            .map(|l| l.to_hex())
            .collect())
    }

    fn candidates(&self, options: &PruneOptions) -> Result<Vec<Candidate>, StoreError> {
        let rows: Vec<(String, String, String, String, i64)> = {
            let db = self.db.lock().expect("index lock poisoned");
            let mut stmt = db
                .prepare(
                    "SELECT key, task, layer, log, COALESCE(last_used_at, created_at) FROM entries",
                )
                .map_err(self.index_err("list entries"))?;
            stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .map_err(self.index_err("list entries"))?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (key, task, layer, log, used_ms) in rows {
            let layer_bytes = match LayerDigest::parse(&layer) {
                Some(l) => self.layers().bytes(&l)?.unwrap_or(0),
                None => 0,
            };
            let log_bytes = ContentDigest::parse(&log)
                .and_then(|l| std::fs::symlink_metadata(self.content().log_path(&l)).ok())
                .map_or(0, |m| m.blocks() * 512);
            out.push(Candidate {
                tool_cache: None,
                key,
                task,
                layer,
                log,
                used_ms,
                layer_bytes,
                log_bytes,
            });
        }
        // Tool caches compete with entries for the budget, by their last use.
        out.extend(crate::tool_caches::candidates(
            &self.tool_caches(),
            options.tool_cache_max_age,
        )?);
        Ok(out)
    }

    /// Deletes the rows of the chosen entries; returns their layers and logs, which the sweep
    /// then removes without waiting for the grace period.
    fn remove_entries(
        &self,
        entries: &[Candidate],
        chosen: &[usize],
        report: &mut PruneReport,
    ) -> Result<HashSet<String>, StoreError> {
        let mut freed = HashSet::new();
        if chosen.is_empty() {
            return Ok(freed);
        }
        let mut db = self.db.lock().expect("index lock poisoned");
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.index_err("begin a transaction"))?;
        for &i in chosen {
            let e = &entries[i];
            if let Some(file_name) = &e.tool_cache {
                // A record is a file, not a row: removed here, before the sweep that may
                // take its layer.
                if self.tool_caches().remove_if_holds(file_name, &e.layer)? {
                    report.tool_caches += 1;
                    freed.insert(e.layer.clone());
                }
                continue;
            }
            tx.execute("DELETE FROM entries WHERE key = ?1", params![e.key])
                .map_err(self.index_err("remove an entry"))?;
            report.entries.push((e.task.clone(), e.key.clone()));
            freed.insert(e.layer.clone());
            freed.insert(e.log.clone());
        }
        tx.commit().map_err(self.index_err("remove entries"))?;
        Ok(freed)
    }

    /// Removes what nothing names: layers, logs, workspace lists and blobs, lock files.
    /// `forced`: layers and logs of entries this prune removed, taken whatever their age
    /// unless a commit touched them since `started`.
    fn sweep(
        &self,
        options: &PruneOptions,
        started: i64,
        forced: &HashSet<String>,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let grace_ms = options.grace.as_millis().min(i64::MAX as u128) as i64;
        let (mut named_layers, named_logs, workspaces) = self.named()?;
        // A tool cache's layer is named by its record until the record expires.
        named_layers.extend(self.tool_caches().layers(options.tool_cache_max_age)?);
        // Read after the entries were removed: a run that noted a layer before that is seen.
        let leased = self.leased_layers()?;
        let layers = self.root.join("layers");
        for entry in std::fs::read_dir(&layers).map_err(io(&layers))? {
            let path = entry.map_err(io(&layers))?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            // A directory or an image (`<hex>.erofs`), named by its digest either way.
            let Some((digest, _)) = crate::layer_images::stored_layer(&name) else {
                continue;
            };
            let hex = digest.to_hex();
            if named_layers.contains(&hex) || leased.contains(&hex) {
                continue;
            }
            let limit = if forced.contains(&hex) {
                started
            } else {
                now - grace_ms
            };
            if self.remove_layer_if_unnamed(&name, &hex, limit)? {
                report.layers += 1;
            }
        }
        let logs = self.root.join("logs");
        for entry in std::fs::read_dir(&logs).map_err(io(&logs))? {
            let entry = entry.map_err(io(&logs))?;
            let Some(hex) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if named_logs.contains(&hex) {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !forced.contains(&hex) && mtime_ms(&meta) >= now - grace_ms {
                continue;
            }
            // Checked again under the write lock: an entry recorded since names it.
            let mut db = self.db.lock().expect("index lock poisoned");
            let tx = db
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(self.index_err("begin a transaction"))?;
            let named: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM entries WHERE log = ?1)",
                    params![hex],
                    |r| r.get(0),
                )
                .map_err(self.index_err("read entries"))?;
            if !named && std::fs::remove_file(&path).is_ok() {
                report.logs += 1;
            }
            tx.commit().map_err(self.index_err("remove a log"))?;
        }
        self.sweep_workspaces(&workspaces, report)?;
        report.locks += crate::runs::remove_unheld_locks(&self.root.join("locks"))? as u64;
        Ok(())
    }

    /// The layers, logs and workspaces entries name; image layers count as named.
    #[allow(clippy::type_complexity)]
    fn named(&self) -> Result<(HashSet<String>, HashSet<String>, HashSet<String>), StoreError> {
        let db = self.db.lock().expect("index lock poisoned");
        let mut layers = HashSet::new();
        let mut logs = HashSet::new();
        let mut workspaces = HashSet::new();
        let mut stmt = db
            .prepare("SELECT layer, log, inputs FROM entries")
            .map_err(self.index_err("list entries"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.index_err("list entries"))?;
        for row in rows {
            let (layer, log, inputs) = row.map_err(self.index_err("list entries"))?;
            layers.insert(layer);
            logs.insert(log);
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&inputs)
                && let Some(w) = v.get("workspace").and_then(|w| w.as_str())
            {
                workspaces.insert(w.to_string());
            }
        }
        let mut stmt = db
            .prepare("SELECT layers FROM images")
            .map_err(self.index_err("list images"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.index_err("list images"))?;
        for row in rows {
            let list = row.map_err(self.index_err("list images"))?;
            layers.extend(serde_json::from_str::<Vec<String>>(&list).unwrap_or_default());
        }
        Ok((layers, logs, workspaces))
    }

    /// Removes `layers/<name>` (the directory or image of layer `hex`) if, under the index's
    /// write lock, no entry or image names it and it was placed (or last touched by a commit)
    /// before `placed_before_ms`. An image's mount is detached once it is out of sight.
    fn remove_layer_if_unnamed(
        &self,
        name: &str,
        hex: &str,
        placed_before_ms: i64,
    ) -> Result<bool, StoreError> {
        let path = self.root.join("layers").join(name);
        let aside;
        {
            let mut db = self.db.lock().expect("index lock poisoned");
            let tx = db
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(self.index_err("begin a transaction"))?;
            let named: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM entries WHERE layer = ?1)
                         OR EXISTS (SELECT 1 FROM images WHERE instr(layers, ?1) > 0)",
                    params![hex],
                    |r| r.get(0),
                )
                .map_err(self.index_err("read entries"))?;
            if named {
                return Ok(false);
            }
            let at_ms: Option<i64> = tx
                .query_row(
                    "SELECT at_ms FROM verified_layers WHERE digest = ?1",
                    params![hex],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.index_err("read a layer record"))?;
            let at_ms = match at_ms.filter(|&t| t > 0) {
                Some(t) => t,
                // Placed by an older strata, or being placed right now: its ctime says when.
                None => match std::fs::symlink_metadata(&path) {
                    Ok(meta) => ctime_ms(&meta),
                    Err(_) => return Ok(false),
                },
            };
            if !removable_age(at_ms, placed_before_ms) {
                return Ok(false);
            }
            for table in ["verified_layers", "layer_sizes"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE digest = ?1"),
                    params![hex],
                )
                .map_err(self.index_err("forget a layer"))?;
            }
            tx.execute("DELETE FROM archives WHERE layer = ?1", params![hex])
                .map_err(self.index_err("forget a layer"))?;
            aside = match self.layers().move_aside(name, "pruned")? {
                Some(aside) => aside,
                None => return Ok(false),
            };
            tx.commit().map_err(self.index_err("forget a layer"))?;
        }
        crate::layer_images::remove_aside(&aside)?;
        Ok(true)
    }

    /// Forgets the workspace file lists no entry names, then removes the blobs no remaining
    /// list names. A run that finds a blob gone as it links it copies it again
    /// (`workspace_tree.rs` in the engine), and its trees hold links of their own.
    fn sweep_workspaces(
        &self,
        named: &HashSet<String>,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        let mut wanted: HashSet<String> = HashSet::new();
        {
            let mut db = self.db.lock().expect("index lock poisoned");
            let tx = db
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(self.index_err("begin a transaction"))?;
            let digests: Vec<String> = {
                let mut stmt = tx
                    .prepare("SELECT digest FROM workspaces")
                    .map_err(self.index_err("list workspaces"))?;
                stmt.query_map([], |r| r.get(0))
                    .and_then(|rows| rows.collect::<Result<_, _>>())
                    .map_err(self.index_err("list workspaces"))?
            };
            for digest in digests {
                if !named.contains(&digest) {
                    tx.execute("DELETE FROM workspaces WHERE digest = ?1", params![digest])
                        .map_err(self.index_err("forget a workspace"))?;
                    continue;
                }
                // A list that cannot be read stops the sweep: the blobs it names are unknown,
                // and none may go on a guess.
                let files = tx
                    .query_row(
                        "SELECT files FROM workspaces WHERE digest = ?1",
                        params![digest],
                        |r| Ok(crate::workspace_lists::decode(r.get_ref(0)?)),
                    )
                    .map_err(self.index_err("read a workspace list"))?
                    .map_err(|message| StoreError::CorruptWorkspaceList {
                        key: format!("workspace {digest}"),
                        message,
                    })?;
                for f in files {
                    if let strata_key::FileKind::File { digest, .. } = f.kind {
                        wanted.insert(format!("{}-{:o}", digest.to_hex(), f.mode));
                    }
                }
            }
            tx.commit().map_err(self.index_err("forget workspaces"))?;
        }
        let files = self.root.join("files");
        for entry in std::fs::read_dir(&files).map_err(io(&files))? {
            let entry = entry.map_err(io(&files))?;
            let name = entry.file_name();
            // A copy with a file's real mtime (`name@mtime`) goes with its content's blob.
            if name
                .to_str()
                .is_some_and(|n| wanted.contains(crate::blobs::content_name(n)))
            {
                continue;
            }
            if std::fs::remove_file(entry.path()).is_ok() {
                report.files += 1;
            }
        }
        Ok(())
    }

    fn prune_failed(
        &self,
        cutoff_ms: Option<i64>,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        let failed = self.root.join("failed");
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(&failed).map_err(io(&failed))? {
            let entry = entry.map_err(io(&failed))?;
            let (Some(name), Ok(meta)) = (
                entry.file_name().to_str().map(str::to_string),
                entry.metadata(),
            ) else {
                continue;
            };
            dirs.push((name, mtime_ms(&meta)));
        }
        for i in select_failed(&dirs, cutoff_ms) {
            let path = failed.join(&dirs[i].0);
            let aside = self.tmp_path("pruned-failed");
            if std::fs::rename(&path, &aside).is_ok() {
                let _ = std::fs::remove_dir_all(&aside);
                report.failed += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, layer: &str, used_ms: i64, bytes: u64) -> Candidate {
        Candidate {
            tool_cache: None,
            key: key.into(),
            task: key.into(),
            layer: layer.into(),
            log: format!("log-{key}"),
            used_ms,
            layer_bytes: bytes,
            log_bytes: 0,
        }
    }

    fn keys(entries: &[Candidate], chosen: Vec<usize>) -> Vec<String> {
        chosen.into_iter().map(|i| entries[i].key.clone()).collect()
    }

    #[test]
    fn least_recently_used_go_first_until_enough_is_freed() {
        let entries = vec![
            entry("new", "l1", 300, 10),
            entry("old", "l2", 100, 10),
            entry("mid", "l3", 200, 10),
        ];
        let none = Protection::default();
        assert_eq!(
            keys(&entries, select_evictions(&entries, &none, None, 15)),
            ["old", "mid"]
        );
        assert_eq!(
            keys(&entries, select_evictions(&entries, &none, None, 10)),
            ["old"]
        );
        assert!(select_evictions(&entries, &none, None, 0).is_empty());
    }

    #[test]
    fn a_shared_layer_frees_nothing_until_its_last_entry_goes() {
        let entries = vec![
            entry("a", "shared", 100, 50),
            entry("b", "shared", 200, 50),
            entry("c", "own", 300, 10),
        ];
        let chosen = select_evictions(&entries, &Protection::default(), None, 50);
        assert_eq!(keys(&entries, chosen), ["a", "b"]);
    }

    #[test]
    fn leased_layers_and_entries_used_since_a_live_run_began_are_kept() {
        let entries = vec![
            entry("leased", "l1", 100, 10),
            entry("recent", "l2", 500, 10),
            entry("free", "l3", 200, 10),
        ];
        let protection = Protection {
            layers: HashSet::from(["l1".to_string()]),
            used_since_ms: Some(400),
        };
        let chosen = select_evictions(&entries, &protection, Some(1000), u64::MAX);
        assert_eq!(keys(&entries, chosen), ["free"]);
    }

    #[test]
    fn older_than_takes_every_old_entry_and_nothing_newer() {
        let entries = vec![
            entry("a", "l1", 100, 1),
            entry("b", "l2", 200, 1),
            entry("c", "l3", 300, 1),
        ];
        let chosen = select_evictions(&entries, &Protection::default(), Some(250), 0);
        assert_eq!(keys(&entries, chosen), ["a", "b"]);
    }

    #[test]
    fn a_tool_cache_competes_with_entries_and_its_layer_frees_with_the_last_referrer() {
        let tool_cache = |layer: &str, used_ms| Candidate {
            tool_cache: Some("tc.json".into()),
            log: String::new(),
            ..entry("tc", layer, used_ms, 50)
        };
        // The tool cache holds the layer of the oldest entry: both must go to free it.
        let entries = vec![
            entry("old", "l1", 100, 50),
            tool_cache("l1", 150),
            entry("new", "l2", 300, 50),
        ];
        let chosen = select_evictions(&entries, &Protection::default(), None, 50);
        assert_eq!(keys(&entries, chosen), ["old", "tc"]);
        // Used recently, the tool cache stays and the newer entry goes instead.
        let entries = vec![entry("old", "l1", 100, 50), tool_cache("l9", 400)];
        let chosen = select_evictions(&entries, &Protection::default(), None, 50);
        assert_eq!(keys(&entries, chosen), ["old"]);
        // In a live run's lease (a task is starting from it): never.
        let protection = Protection {
            layers: HashSet::from(["l9".to_string()]),
            used_since_ms: None,
        };
        let chosen = select_evictions(&entries, &protection, None, u64::MAX);
        assert_eq!(keys(&entries, chosen), ["old"]);
    }

    #[test]
    fn failed_dirs_beyond_the_latest_per_task_go() {
        let dirs = vec![
            ("build-aaaaaaaaaaaa".to_string(), 100),
            ("build-bbbbbbbbbbbb".to_string(), 300),
            ("test-aaaaaaaaaaaa".to_string(), 200),
        ];
        assert_eq!(select_failed(&dirs, None), vec![0]);
        assert_eq!(select_failed(&dirs, Some(250)), vec![0, 2]);
    }

    #[test]
    fn an_unnamed_layer_within_the_grace_period_stays() {
        assert!(removable_age(100, 200));
        assert!(!removable_age(200, 200));
    }
}
