//! Per-process scratch space. Each run holds an exclusive lock on its directory for as long as
//! it lives; a directory whose lock can be taken belongs to a dead run and is removed.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{FlockOperation, Mode, OFlags, flock, open};

use strata_key::{CacheKey, LayerDigest};

use crate::error::{StoreError, io};
use crate::local::{LocalCache, Runs};

pub struct RunDir {
    path: PathBuf,
    _lock: OwnedFd,
    /// `uses`: the layers this run relies on, one hex digest a line, appended before each is
    /// used, so that a concurrent prune leaves them alone (`prune.rs`).
    uses: Mutex<Option<std::fs::File>>,
    /// Entries restored from this cache, counted when the run ends.
    hits: Mutex<Vec<CacheKey>>,
}

/// The file in a run's directory that names the layers it relies on.
const USES: &str = "uses";

impl RunDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notes that this run relies on `layer` (its lease): a prune that reads the note keeps it.
    pub fn note_layer(&self, layer: &LayerDigest) -> Result<(), StoreError> {
        use std::io::Write;
        let mut uses = self.uses.lock().expect("uses lock poisoned");
        let path = self.path.join(USES);
        if uses.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            *uses = Some(file);
        }
        let file = uses.as_mut().expect("opened above");
        file.write_all(format!("{}\n", layer.to_hex()).as_bytes())
            .map_err(io(&path))
    }

    /// Notes that the entry for `key` was restored from this cache by this run.
    pub fn note_hit(&self, key: CacheKey) {
        self.hits.lock().expect("hits lock poisoned").push(key);
    }

    pub(crate) fn take_hits(&self) -> Vec<CacheKey> {
        std::mem::take(&mut *self.hits.lock().expect("hits lock poisoned"))
    }
}

/// A strata process using the cache right now, as a prune sees it.
#[derive(Debug, Clone)]
pub struct LiveRun {
    pub pid: u32,
    /// When it began (ms since the epoch).
    pub started_ms: i64,
    /// The layers it noted as relied upon.
    pub layers: HashSet<LayerDigest>,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn lock_file(path: &Path) -> Result<OwnedFd, StoreError> {
    open(
        path,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| io(path)(e.into()))
}

/// The right to run the task of one cache key on this machine: while one process holds it,
/// others with the same key wait and then use its result. The kernel releases it when the
/// holder dies.
pub struct KeyLock {
    _lock: OwnedFd,
}

impl LocalCache {
    /// `tmp/` holds `HINT.PID.N` (temporary files and unpacking layers) and `PID-NANOS` (a run
    /// dir being made): whatever a process that no longer exists left there is removed. A name
    /// whose process lives (or cannot be told) is left alone.
    fn remove_stale_tmp(&self) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(pid) = owner_pid(name) else {
                continue;
            };
            if pid == std::process::id() || process_exists(pid) {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Ok(()) => {}
                // Another run cleaned it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(())
    }

    fn remove_stale_runs(&self) -> Result<(), StoreError> {
        let runs = self.root.join("runs");
        for entry in std::fs::read_dir(&runs).map_err(io(&runs))? {
            let dir = entry.map_err(io(&runs))?.path();
            let Ok(lock) = lock_file(&dir.join("lock")) else {
                continue;
            };
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        Ok(())
    }
}

impl Runs<'_> {
    /// Takes the lock of `key`. When another process holds it, `waiting(true)` is called once,
    /// then `waiting(false)` every 50 ms until the lock is free; returns `None` as soon as
    /// `waiting` answers `false` (an interrupted run).
    pub fn lock_key(
        &self,
        key: &strata_key::CacheKey,
        waiting: &mut dyn FnMut(bool) -> bool,
    ) -> Result<Option<KeyLock>, StoreError> {
        let path = self.cache.root.join("locks").join(key.to_hex());
        let lock = lock_file(&path)?;
        let mut first = true;
        loop {
            match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                // A prune removes unheld lock files: a lock taken on a file no longer under its
                // name is worthless, take the one there now.
                Ok(()) if !same_file(&lock, &path) => return self.lock_key(key, waiting),
                Ok(()) => return Ok(Some(KeyLock { _lock: lock })),
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    if !waiting(first) {
                        return Ok(None);
                    }
                    first = false;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(io(&path)(e.into())),
            }
        }
    }

    /// Removes the scratch of dead runs and the temporary files of dead processes (a restore
    /// killed half-way), then creates this run's.
    pub fn begin(&self) -> Result<RunDir, StoreError> {
        self.cache.remove_stale_runs()?;
        self.cache.remove_stale_tmp()?;
        if self.disk_is_low() {
            self.drop_failed_uppers()?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{}-{nanos}", std::process::id());
        // Locked before it appears under runs/, so no other process can take it for stale.
        let tmp = self.cache.root.join("tmp").join(&name);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let lock = lock_file(&tmp.join("lock"))?;
        flock(&lock, FlockOperation::LockExclusive).map_err(|e| io(&tmp)(e.into()))?;
        let path = self.cache.root.join("runs").join(name);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(RunDir {
            path,
            _lock: lock,
            uses: Mutex::new(None),
            hits: Mutex::new(Vec::new()),
        })
    }

    /// The runs using the cache now (this process's own included): those whose directory's
    /// lock is held.
    pub fn live(&self) -> Result<Vec<LiveRun>, StoreError> {
        let runs = self.cache.root.join("runs");
        let mut live = Vec::new();
        for entry in std::fs::read_dir(&runs).map_err(io(&runs))? {
            let dir = entry.map_err(io(&runs))?.path();
            let Some((pid, nanos)) = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split_once('-'))
                .and_then(|(p, n)| Some((p.parse::<u32>().ok()?, n.parse::<i128>().ok()?)))
            else {
                continue;
            };
            let Ok(lock) = lock_file(&dir.join("lock")) else {
                continue;
            };
            match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                // Dead: its directory is removed by the next run that starts.
                Ok(()) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => return Err(io(&dir)(e.into())),
            }
            let layers = std::fs::read_to_string(dir.join(USES))
                .unwrap_or_default()
                .lines()
                .filter_map(LayerDigest::parse)
                .collect();
            live.push(LiveRun {
                pid,
                started_ms: (nanos / 1_000_000) as i64,
                layers,
            });
        }
        Ok(live)
    }

    /// Removes what dead processes left: their runs' scratch and their temporary files.
    pub fn remove_dead_scratch(&self) -> Result<(), StoreError> {
        self.cache.remove_stale_runs()?;
        self.cache.remove_stale_tmp()
    }

    /// Whether the cache's filesystem is nearly full: less than 10% of it available, or 1 GiB
    /// on a filesystem of more than 10 GiB.
    /// Then the upper dirs of failed tasks are not kept: a debugging aid must never be what
    /// makes the next run fail.
    pub fn disk_is_low(&self) -> bool {
        match rustix::fs::statvfs(&self.cache.root) {
            Ok(st) => {
                let available = st.f_bavail.saturating_mul(st.f_frsize);
                let total = st.f_blocks.saturating_mul(st.f_frsize);
                available < (total / 10).min(1 << 30)
            }
            Err(_) => false,
        }
    }

    /// Removes every kept upper dir of failed tasks (when the disk is low).
    pub fn drop_failed_uppers(&self) -> Result<(), StoreError> {
        let failed = self.cache.root.join("failed");
        for entry in std::fs::read_dir(&failed).map_err(io(&failed))? {
            let path = entry.map_err(io(&failed))?.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(())
    }

    /// Where the upper dir of a failed task is kept (one per pipeline file and task).
    pub fn failed_dir(&self, pipeline: &Path, task: &str) -> PathBuf {
        let tag = blake3::hash(pipeline.as_os_str().as_encoded_bytes()).to_hex();
        self.cache
            .root
            .join("failed")
            .join(format!("{task}-{}", &tag[..12]))
    }
}

/// Whether `fd` is the file named `path` now.
pub(crate) fn same_file(fd: &OwnedFd, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (rustix::fs::fstat(fd), std::fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.st_ino == named.ino() && held.st_dev == named.dev(),
        _ => false,
    }
}

/// Removes the lock files of `locks/` that nobody holds. A file is removed while this process
/// holds its lock, and takers check that the file they locked is still the one named (see
/// [`Runs::lock_key`]).
pub(crate) fn remove_unheld_locks(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Ok(lock) = open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) else {
            continue;
        };
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok()
            && same_file(&lock, &path)
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The process that made a `tmp/` entry, from its name.
fn owner_pid(name: &str) -> Option<u32> {
    let mut parts = name.rsplitn(3, '.');
    let (_n, pid) = (parts.next()?, parts.next());
    match (pid, parts.next()) {
        (Some(pid), Some(_hint)) => pid.parse().ok(),
        _ => name.split_once('-')?.0.parse().ok(),
    }
}

fn process_exists(pid: u32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return true;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_tmp_names() {
        assert_eq!(owner_pid("import.4242.7"), Some(4242));
        assert_eq!(owner_pid("bad-layer.17.0"), Some(17));
        assert_eq!(owner_pid("4242-1700000000"), Some(4242));
        assert_eq!(owner_pid("lost+found"), None);
    }

    #[test]
    fn a_dead_process_temp_files_are_removed_a_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        // A child that has exited: its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(tmp.join(format!("import.{dead}.0/usr"))).unwrap();
        std::fs::write(tmp.join(format!("archive.{dead}.1")), "x").unwrap();
        let mine = tmp.join(format!("log.{}.9", std::process::id()));
        std::fs::write(&mine, "x").unwrap();
        let _run = cache.runs().begin().unwrap();
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, vec![mine]);
    }
}
