//! `strata cache verify`: every layer hashed against its name, every log and workspace blob
//! against its digest, every entry checked for the layer and log it names; with `repair`, what
//! is wrong is removed together with the entries naming it, so the next run builds those tasks.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::params;
use strata_key::{ContentDigest, LayerDigest};

use crate::error::{StoreError, io};
use crate::local::LocalCache;

/// Something `verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A layer whose content does not hash to its name (or whose name is not a digest).
    CorruptLayer {
        path: PathBuf,
        found: Option<LayerDigest>,
    },
    /// A log or workspace blob whose content does not match its name.
    CorruptBlob { path: PathBuf },
    /// An entry naming a layer that is not here.
    MissingLayer {
        task: String,
        key: String,
        layer: LayerDigest,
    },
    /// An entry naming a log that is not here.
    MissingLog {
        task: String,
        key: String,
        log: ContentDigest,
    },
    /// A layer recorded as verified that is not here (the record is stale).
    StaleRecord { layer: LayerDigest },
    /// SQLite's own check of the index found damage: `--repair` cannot mend that.
    DamagedIndex { detail: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CorruptLayer {
                path,
                found: Some(found),
            } => write!(
                f,
                "layer {} does not match its name: its content is {}",
                path.display(),
                found.short()
            ),
            Problem::CorruptLayer { path, found: None } => {
                write!(f, "{} is not a layer", path.display())
            }
            Problem::CorruptBlob { path } => {
                write!(f, "{} does not match its digest", path.display())
            }
            Problem::MissingLayer { task, key, layer } => write!(
                f,
                "entry {} of `{task}` names layer {}, which is missing",
                &key[..12.min(key.len())],
                layer.short()
            ),
            Problem::MissingLog { task, key, log } => write!(
                f,
                "entry {} of `{task}` names log {}, which is missing",
                &key[..12.min(key.len())],
                &log.to_hex()[..12]
            ),
            Problem::DamagedIndex { detail } => write!(
                f,
                "the cache index is damaged ({detail}); move index.sqlite aside and run again to start the index afresh"
            ),
            Problem::StaleRecord { layer } => {
                write!(
                    f,
                    "layer {} is recorded as verified but missing",
                    layer.short()
                )
            }
        }
    }
}

impl Problem {
    /// A short name for `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::CorruptLayer { .. } => "corrupt-layer",
            Problem::CorruptBlob { .. } => "corrupt-blob",
            Problem::MissingLayer { .. } => "missing-layer",
            Problem::MissingLog { .. } => "missing-log",
            Problem::StaleRecord { .. } => "stale-record",
            Problem::DamagedIndex { .. } => "damaged-index",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub layers: u64,
    pub logs: u64,
    pub files: u64,
    pub entries: u64,
    pub problems: Vec<Problem>,
    /// With `repair`: the entries removed (task, key).
    pub removed_entries: Vec<(String, String)>,
}

fn content_digest(path: &Path) -> std::io::Result<ContentDigest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(ContentDigest::from_hash(hasher.finalize()))
}

impl LocalCache {
    /// Checks the whole cache; with `repair`, removes what is wrong and the entries naming it.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        // The index itself first: SQLite's quick check reads every page.
        let check: Result<Vec<String>, rusqlite::Error> = {
            let db = self.db.lock().expect("index lock poisoned");
            db.prepare("PRAGMA quick_check").and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
        };
        let damage = match check {
            Ok(lines) if lines == ["ok"] => None,
            Ok(lines) => Some(lines.join("; ")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(detail) = damage {
            report.problems.push(Problem::DamagedIndex { detail });
            return Ok(report);
        }
        // Layers: hashed against their names.
        let mut bad_layers: Vec<PathBuf> = Vec::new();
        let mut good_layers: HashSet<LayerDigest> = HashSet::new();
        let layers = self.root.join("layers");
        for entry in std::fs::read_dir(&layers).map_err(io(&layers))? {
            let path = entry.map_err(io(&layers))?.path();
            report.layers += 1;
            let stored = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(crate::layer_images::stored_layer);
            let named = stored.map(|(digest, _)| digest);
            let found = match stored {
                // An image is hashed through its mount; one that does not mount is not a layer.
                Some((digest, true)) if path.is_file() => match self.layers().mounted(&digest) {
                    Ok(at) => Some(strata_key::tree_digest(&at)?),
                    Err(_) => None,
                },
                _ if path.is_dir() => Some(strata_key::tree_digest(&path)?),
                _ => None,
            };
            match (named, found) {
                (Some(n), Some(f)) if n == f => {
                    good_layers.insert(n);
                }
                (_, found) => {
                    report.problems.push(Problem::CorruptLayer {
                        path: path.clone(),
                        found,
                    });
                    bad_layers.push(path);
                }
            }
        }
        // Logs and workspace blobs: content against name.
        let mut bad_blobs = Vec::new();
        let mut good_logs: HashSet<ContentDigest> = HashSet::new();
        let logs = self.root.join("logs");
        for entry in std::fs::read_dir(&logs).map_err(io(&logs))? {
            let path = entry.map_err(io(&logs))?.path();
            report.logs += 1;
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(ContentDigest::parse);
            let found = content_digest(&path).map_err(io(&path))?;
            if named == Some(found) {
                good_logs.insert(found);
            } else {
                report
                    .problems
                    .push(Problem::CorruptBlob { path: path.clone() });
                bad_blobs.push(path);
            }
        }
        let files = self.root.join("files");
        for entry in std::fs::read_dir(&files).map_err(io(&files))? {
            let path = entry.map_err(io(&files))?.path();
            // A blob named by a BLAKE3 digest (64 hex digits) was written by a recipe before
            // workspace files were named by git blob ids: no entry of this version names it,
            // and prune removes it. It is not damage.
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| crate::blobs::content_name(n).split_once('-'))
                .is_some_and(|(hex, _)| hex.len() == 64)
            {
                continue;
            }
            report.files += 1;
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| crate::blobs::content_name(n).split_once('-'))
                .and_then(|(hex, mode)| {
                    Some((
                        strata_key::FileId::parse(hex)?,
                        u32::from_str_radix(mode, 8).ok()?,
                    ))
                });
            let ok = meta.is_file()
                && named.is_some_and(|(digest, mode)| {
                    meta.permissions().mode() & 0o7777 == mode
                        && strata_key::file_id(&path).is_ok_and(|d| d == digest)
                });
            if !ok {
                report
                    .problems
                    .push(Problem::CorruptBlob { path: path.clone() });
                bad_blobs.push(path);
            }
        }
        // Entries: what they name must be here and sound.
        let rows: Vec<(String, String, String, String)> = {
            let db = self.db.lock().expect("index lock poisoned");
            let mut stmt = db
                .prepare("SELECT key, task, layer, log FROM entries")
                .map_err(self.index_err("list entries"))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(self.index_err("list entries"))?
        };
        let mut doomed_entries = Vec::new();
        for (key, task, layer, log) in rows {
            report.entries += 1;
            let layer_ok = LayerDigest::parse(&layer).filter(|l| good_layers.contains(l));
            let log_ok = ContentDigest::parse(&log).filter(|l| good_logs.contains(l));
            if layer_ok.is_none() {
                if let Some(layer) = LayerDigest::parse(&layer)
                    && !self.layers().has(&layer)
                {
                    report.problems.push(Problem::MissingLayer {
                        task: task.clone(),
                        key: key.clone(),
                        layer,
                    });
                }
                doomed_entries.push((task, key));
            } else if log_ok.is_none() {
                if let Some(log) = ContentDigest::parse(&log)
                    && !self.content().log_path(&log).exists()
                {
                    report.problems.push(Problem::MissingLog {
                        task: task.clone(),
                        key: key.clone(),
                        log,
                    });
                }
                doomed_entries.push((task, key));
            }
        }
        // Records of verified layers must name layers that are here.
        let recorded: Vec<String> = {
            let db = self.db.lock().expect("index lock poisoned");
            let mut stmt = db
                .prepare("SELECT digest FROM verified_layers")
                .map_err(self.index_err("read layer records"))?;
            stmt.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(self.index_err("read layer records"))?
        };
        let mut stale = Vec::new();
        for digest in &recorded {
            if let Some(layer) = LayerDigest::parse(digest)
                && !good_layers.contains(&layer)
                && !self.layers().has(&layer)
            {
                report.problems.push(Problem::StaleRecord { layer });
            }
            if LayerDigest::parse(digest).is_none_or(|l| !good_layers.contains(&l)) {
                stale.push(digest.clone());
            }
        }
        if !repair {
            return Ok(report);
        }
        // Entries first, then what they named: no entry ever names a missing layer.
        {
            let mut db = self.db.lock().expect("index lock poisoned");
            let tx = db
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(self.index_err("begin a transaction"))?;
            for (_, key) in &doomed_entries {
                tx.execute("DELETE FROM entries WHERE key = ?1", params![key])
                    .map_err(self.index_err("remove an entry"))?;
            }
            for digest in &stale {
                for table in ["verified_layers", "layer_sizes"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE digest = ?1"),
                        params![digest],
                    )
                    .map_err(self.index_err("forget a layer"))?;
                }
                tx.execute("DELETE FROM archives WHERE layer = ?1", params![digest])
                    .map_err(self.index_err("forget a layer"))?;
            }
            for path in &bad_layers {
                let file_name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let name = &file_name
                    .strip_suffix(crate::layer_images::IMAGE_SUFFIX)
                    .unwrap_or(file_name);
                for table in ["verified_layers", "layer_sizes"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE digest = ?1"),
                        params![name],
                    )
                    .map_err(self.index_err("forget a layer"))?;
                }
                tx.execute("DELETE FROM archives WHERE layer = ?1", params![name])
                    .map_err(self.index_err("forget a layer"))?;
            }
            let recorded: HashSet<&String> = recorded.iter().collect();
            for layer in &good_layers {
                if !recorded.contains(&layer.to_hex()) {
                    tx.execute(
                        "INSERT OR IGNORE INTO verified_layers (digest, at_ms) VALUES (?1, ?2)",
                        params![layer.to_hex(), crate::durability::now_ms()],
                    )
                    .map_err(self.index_err("record a verified layer"))?;
                }
            }
            tx.commit().map_err(self.index_err("repair the index"))?;
        }
        for path in &bad_layers {
            // Out of sight in one rename, an image's mount detached, then deleted.
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if let Some(aside) = self.layers().move_aside(name, "corrupt")? {
                crate::layer_images::remove_aside(&aside)?;
            }
        }
        for path in &bad_blobs {
            // Out of sight in one rename, then deleted.
            let aside = self.tmp_path("corrupt");
            match std::fs::rename(path, &aside) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(path)(e)),
            }
            let removed = if aside.is_dir() {
                std::fs::remove_dir_all(&aside)
            } else {
                std::fs::remove_file(&aside)
            };
            removed.map_err(io(&aside))?;
        }
        report.removed_entries = doomed_entries;
        Ok(report)
    }
}
