//! Per-process scratch space. Each run holds an exclusive lock on its directory for as long as
//! it lives; a directory whose lock can be taken belongs to a dead run and is removed.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags, flock, open};

use crate::error::{StoreError, io};
use crate::local::LocalCache;

pub struct RunDir {
    path: PathBuf,
    _lock: OwnedFd,
}

impl RunDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
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
    /// Takes the lock of `key`. When another process holds it, `waiting(true)` is called once,
    /// then `waiting(false)` every 50 ms until the lock is free; returns `None` as soon as
    /// `waiting` answers `false` (an interrupted run).
    pub fn lock_key(
        &self,
        key: &strata_key::CacheKey,
        waiting: &mut dyn FnMut(bool) -> bool,
    ) -> Result<Option<KeyLock>, StoreError> {
        let path = self.root.join("locks").join(key.to_hex());
        let lock = lock_file(&path)?;
        let mut first = true;
        loop {
            match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
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

    /// Removes the scratch of dead runs, then creates this run's.
    pub fn begin_run(&self) -> Result<RunDir, StoreError> {
        self.remove_stale_runs()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{}-{nanos}", std::process::id());
        // Locked before it appears under runs/, so no other process can take it for stale.
        let tmp = self.root.join("tmp").join(&name);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let lock = lock_file(&tmp.join("lock"))?;
        flock(&lock, FlockOperation::LockExclusive).map_err(|e| io(&tmp)(e.into()))?;
        let path = self.root.join("runs").join(name);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(RunDir { path, _lock: lock })
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

    /// Where the upper dir of a failed task is kept (one per pipeline file and task).
    pub fn failed_dir(&self, pipeline: &Path, task: &str) -> PathBuf {
        let tag = blake3::hash(pipeline.as_os_str().as_encoded_bytes()).to_hex();
        self.root
            .join("failed")
            .join(format!("{task}-{}", &tag[..12]))
    }
}
