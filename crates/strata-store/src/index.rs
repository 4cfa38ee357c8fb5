//! The SQLite index of entries. WAL mode and a busy timeout let several processes share it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use strata_key::{
    BaseId, CacheKey, ContentDigest, ExportedEnv, HostInventory, KeyInputs, LayerDigest,
    RecordedInputs, WorkspaceFile,
};

use crate::error::StoreError;
use crate::local::{Index, LocalCache};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    task TEXT NOT NULL,
    layer TEXT NOT NULL,
    env TEXT NOT NULL,
    inputs TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    log TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_task ON entries (task, pipeline, created_at);
CREATE TABLE IF NOT EXISTS archives (
    layer TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    diff_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS archives_by_digest ON archives (digest);
CREATE TABLE IF NOT EXISTS images (
    manifest TEXT PRIMARY KEY,
    layers TEXT NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_tags (
    reference TEXT PRIMARY KEY,
    manifest TEXT NOT NULL
);
DROP TABLE IF EXISTS unusable_remote;
CREATE TABLE IF NOT EXISTS broken_remote_entries (
    key TEXT NOT NULL,
    location TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (key, location)
);
CREATE TABLE IF NOT EXISTS unsynced (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    boot TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workspaces (
    digest TEXT PRIMARY KEY,
    files TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS verified_layers (
    digest TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS layer_sizes (
    digest TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bases (
    id TEXT PRIMARY KEY,
    inventory TEXT NOT NULL
);
";

pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = |action| {
        let path = path.to_path_buf();
        move |source| StoreError::Index {
            action,
            path,
            source,
        }
    };
    let db = Connection::open(path).map_err(err("open"))?;
    db.busy_timeout(Duration::from_secs(30))
        .map_err(err("configure"))?;
    // Switching a new database to WAL needs an exclusive lock, and SQLite reports "locked" at
    // once, without its busy handler, when another process is doing the same: retry.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let configured = db
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| db.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|()| db.execute_batch(SCHEMA))
            .and_then(|()| migrate(&db));
        match configured {
            Ok(()) => return Ok(db),
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err("configure")(e)),
        }
    }
}

/// Columns added after the first release of a table, with their definitions: an index made by
/// an older strata gains them when it is opened (one `PRAGMA` read when nothing is missing).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // When a run last used the entry (NULL: not since it was created).
    ("entries", "last_used_at", "INTEGER"),
    // How many runs restored the entry from this cache.
    ("entries", "hits", "INTEGER NOT NULL DEFAULT 0"),
    // When the layer entered the cache (0: before this was recorded).
    ("verified_layers", "at_ms", "INTEGER NOT NULL DEFAULT 0"),
];

fn migrate(db: &Connection) -> rusqlite::Result<()> {
    for (table, column, definition) in ADDED_COLUMNS {
        let present: bool = db.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1)"),
            params![column],
            |r| r.get(0),
        )?;
        if present {
            continue;
        }
        match db.execute_batch(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} {definition}"
        )) {
            Ok(()) => {}
            // Another process added it first.
            Err(e) if e.to_string().contains("duplicate column") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A cached task result.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: CacheKey,
    pub pipeline: String,
    pub task: String,
    pub layer: LayerDigest,
    /// The environment the task hands to its dependents.
    pub env: ExportedEnv,
    pub inputs: KeyInputs,
    pub exit_code: i32,
    pub duration: Duration,
    pub log: ContentDigest,
    pub created_at: SystemTime,
}

/// An entry being written: what a successful task (or a fetched shared hit) hands to the index,
/// and what is published to the shared caches (its log by digest, in the local cache).
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub key: CacheKey,
    pub pipeline: String,
    pub task: String,
    pub layer: LayerDigest,
    pub env: ExportedEnv,
    pub inputs: KeyInputs,
    pub workspace_files: Vec<WorkspaceFile>,
    pub exit_code: i32,
    pub duration: Duration,
    pub log: ContentDigest,
}

pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    i32,
    i64,
    String,
    i64,
);

const COLUMNS: &str =
    "key, pipeline, task, layer, env, inputs, exit_code, duration_ms, log, created_at";

impl LocalCache {
    pub(crate) fn index_err(
        &self,
        action: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Index {
            action,
            path: self.root.join("index.sqlite"),
            source,
        }
    }
}

impl Index<'_> {
    fn entry_from_row(&self, row: Row) -> Result<Option<Entry>, StoreError> {
        let (key, pipeline, task, layer, env, inputs, exit_code, duration_ms, log, created_at) =
            row;
        let corrupt = |source| StoreError::CorruptEntry {
            key: key.clone(),
            source,
        };
        let (Some(k), Some(layer), Some(log)) = (
            CacheKey::parse(&key),
            LayerDigest::parse(&layer),
            ContentDigest::parse(&log),
        ) else {
            return Ok(None);
        };
        Ok(Some(Entry {
            key: k,
            pipeline,
            task,
            layer,
            env: serde_json::from_str(&env).map_err(corrupt)?,
            inputs: serde_json::from_str(&inputs).map_err(corrupt)?,
            exit_code,
            duration: Duration::from_millis(duration_ms.max(0) as u64),
            log,
            created_at: UNIX_EPOCH + Duration::from_millis(created_at.max(0) as u64),
        }))
    }

    fn query_one(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Option<Entry>, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        let row: Option<Row> = db
            .query_row(sql, args, |r| {
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
                    r.get(9)?,
                ))
            })
            .optional()
            .map_err(self.cache.index_err("read an entry"))?;
        drop(db);
        match row {
            Some(row) => self.entry_from_row(row),
            None => Ok(None),
        }
    }

    /// The entry for `key`, if there is one whose layer is present.
    pub fn lookup(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        let entry = self.query_one(
            &format!("SELECT {COLUMNS} FROM entries WHERE key = ?1"),
            params![key.to_hex()],
        )?;
        Ok(entry.filter(|e| self.cache.layers().has(&e.layer)))
    }

    /// The newest entry of a task, preferring the same pipeline file.
    pub fn latest_for_task(&self, pipeline: &str, task: &str) -> Result<Option<Entry>, StoreError> {
        self.query_one(
            &format!(
                "SELECT {COLUMNS} FROM entries WHERE task = ?1
                 ORDER BY (pipeline = ?2) DESC, created_at DESC LIMIT 1"
            ),
            params![task, pipeline],
        )
    }

    /// The recorded inputs of an entry, with the workspace files behind its workspace digest.
    /// An entry of another key version names its files in that version's format (version 3:
    /// BLAKE3 ids): they are not read, and the comparison names the version instead.
    pub fn recorded_inputs(&self, entry: &Entry) -> Result<RecordedInputs, StoreError> {
        if entry.inputs.version != strata_key::KEY_VERSION {
            return Ok(RecordedInputs {
                inputs: entry.inputs.clone(),
                workspace_files: Vec::new(),
            });
        }
        let db = self.cache.db.lock().expect("index lock poisoned");
        let files: Option<Result<Vec<WorkspaceFile>, String>> = db
            .query_row(
                "SELECT files FROM workspaces WHERE digest = ?1",
                params![entry.inputs.workspace.to_hex()],
                |r| Ok(crate::workspace_lists::decode(r.get_ref(0)?)),
            )
            .optional()
            .map_err(self.cache.index_err("read recorded workspace files"))?;
        let workspace_files = match files {
            Some(f) => f.map_err(|message| StoreError::CorruptWorkspaceList {
                key: entry.key.to_hex(),
                message,
            })?,
            None => Vec::new(),
        };
        Ok(RecordedInputs {
            inputs: entry.inputs.clone(),
            workspace_files,
        })
    }

    /// Records an entry. The layer and log it names must already be in the cache (and synced);
    /// when two processes record the same key, the first one wins (unless the layer of the one
    /// already there cannot be read here).
    pub fn put(&self, e: &NewEntry) -> Result<(), StoreError> {
        let env = serde_json::to_string(&e.env).expect("env serializes");
        let inputs = serde_json::to_string(&e.inputs).expect("inputs serialize");
        let workspace = e.inputs.workspace.to_hex();
        // Tasks that see the same files share one list: encoded only by the first.
        let listed = {
            let db = self.cache.db.lock().expect("index lock poisoned");
            db.query_row(
                "SELECT 1 FROM workspaces WHERE digest = ?1",
                params![workspace],
                |_| Ok(()),
            )
            .optional()
            .map_err(self.cache.index_err("look up workspace files"))?
            .is_some()
        };
        let files = (!listed).then(|| crate::workspace_lists::encode(&e.workspace_files));
        // The first entry of a key wins, among those that can be used: one whose layer cannot
        // be read here (gone, or an image this kernel does not mount) gives way.
        let unusable = self
            .query_one(
                &format!("SELECT {COLUMNS} FROM entries WHERE key = ?1"),
                params![e.key.to_hex()],
            )?
            .filter(|old| old.layer != e.layer && !self.cache.layers().usable(&old.layer));
        let mut db = self.cache.db.lock().expect("index lock poisoned");
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.cache.index_err("begin a transaction"))?;
        if let Some(old) = unusable {
            tx.execute(
                "DELETE FROM entries WHERE key = ?1 AND layer = ?2",
                params![e.key.to_hex(), old.layer.to_hex()],
            )
            .map_err(self.cache.index_err("replace an unusable entry"))?;
        }
        if let Some(files) = files {
            tx.execute(
                "INSERT OR IGNORE INTO workspaces (digest, files) VALUES (?1, ?2)",
                params![workspace, files],
            )
            .map_err(self.cache.index_err("record workspace files"))?;
        }
        tx.execute(
            &format!("INSERT OR IGNORE INTO entries ({COLUMNS}, last_used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)"),
            params![
                e.key.to_hex(),
                e.pipeline,
                e.task,
                e.layer.to_hex(),
                env,
                inputs,
                e.exit_code,
                e.duration.as_millis() as i64,
                e.log.to_hex(),
                millis(SystemTime::now()),
            ],
        )
        .map_err(self.cache.index_err("record an entry"))?;
        tx.commit().map_err(self.cache.index_err("commit an entry"))
    }

    /// Whether the inventory of a host base is recorded.
    pub fn has_base(&self, id: &BaseId) -> Result<bool, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.query_row(
            "SELECT 1 FROM bases WHERE id = ?1",
            params![id.to_hex()],
            |_| Ok(()),
        )
        .optional()
        .map(|found| found.is_some())
        .map_err(self.cache.index_err("read a base"))
    }

    /// Records what a host base is made of, for `explain` (the first record of an id wins).
    pub fn record_base(&self, id: &BaseId, inventory: &HostInventory) -> Result<(), StoreError> {
        let text = serde_json::to_string(inventory).expect("inventory serializes");
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute(
            "INSERT OR IGNORE INTO bases (id, inventory) VALUES (?1, ?2)",
            params![id.to_hex(), text],
        )
        .map(drop)
        .map_err(self.cache.index_err("record a base"))
    }

    /// The recorded inventory of a host base; `None` when this machine never ran on it (an entry
    /// from a shared cache) or it is unreadable.
    pub fn base_inventory(&self, id: &BaseId) -> Result<Option<HostInventory>, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        let text: Option<String> = db
            .query_row(
                "SELECT inventory FROM bases WHERE id = ?1",
                params![id.to_hex()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.cache.index_err("read a base"))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Forgets an entry (its layer stays until garbage collection).
    pub fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute("DELETE FROM entries WHERE key = ?1", params![key.to_hex()])
            .map_err(self.cache.index_err("remove an entry"))?;
        Ok(())
    }
}
