//! What the latest runs of a pipeline did, kept after their scratch is gone: the log of each
//! task's latest failed run (an entry only records runs that passed) and the event records of
//! the last [`RUN_RECORDS_KEPT`] runs (`strata report`, `strata logs`).
//!
//! Layout, per pipeline file (`<tag>`: 12 hex of its path's hash, as for `failed/`):
//!
//! ```text
//! history/<tag>/failed-logs/<task>   the log of the task's latest failed run (one per task)
//! history/<tag>/runs/<ms>-<pid>.jsonl  the events of a run, newest [`RUN_RECORDS_KEPT`]
//! ```
//!
//! Both are bounded by the number of tasks and runs; `prune` removes those older than
//! `--older-than`, like the kept upper dirs of failed tasks. Each file is written elsewhere and
//! renamed into place, so a reader never sees half of one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{StoreError, io};
use crate::local::LocalCache;

/// How many run records are kept per pipeline file.
pub const RUN_RECORDS_KEPT: usize = 10;

/// A run record being written (in the cache's `tmp/`), published by [`RunRecordWriter::finish`].
pub struct RunRecordWriter {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
}

impl RunRecordWriter {
    /// Appends one line (a newline is added).
    pub fn write_line(&mut self, line: &str) -> Result<(), StoreError> {
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.write_all(b"\n"))
            .map_err(io(&self.tmp))
    }

    /// Publishes the record and forgets all but the newest [`RUN_RECORDS_KEPT`] of its pipeline.
    pub fn finish(self) -> Result<PathBuf, StoreError> {
        drop(self.file);
        let dir = self.dest.parent().expect("a record has a directory");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest))?;
        let records = records_newest_first(dir)?;
        for old in records.iter().skip(RUN_RECORDS_KEPT) {
            let _ = std::fs::remove_file(old);
        }
        Ok(self.dest)
    }
}

/// A task name as a file name: `/` and `%` escaped (called tasks may hold a `/`).
fn file_name_of(task: &str) -> String {
    task.replace('%', "%25").replace('/', "%2F")
}

fn records_newest_first(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut records: Vec<(u64, u32, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
        else {
            continue;
        };
        let Some((ms, pid)) = stem.split_once('-') else {
            continue;
        };
        if let (Ok(ms), Ok(pid)) = (ms.parse(), pid.parse()) {
            records.push((ms, pid, path));
        }
    }
    records.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
    Ok(records.into_iter().map(|(_, _, p)| p).collect())
}

fn mtime_ms(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(since.as_millis() as i64)
}

/// The history of a [`LocalCache`]: each task's latest failed log and the last runs' event
/// records, per pipeline (`history/<pipeline>/`).
#[derive(Clone, Copy)]
pub struct History<'a> {
    pub(crate) cache: &'a LocalCache,
}

impl LocalCache {
    pub fn history(&self) -> History<'_> {
        History { cache: self }
    }
}

impl History<'_> {
    fn history_dir(&self, pipeline: &Path) -> PathBuf {
        let tag = blake3::hash(pipeline.as_os_str().as_encoded_bytes()).to_hex();
        self.cache.root.join("history").join(&tag[..12])
    }

    /// Where the log of `task`'s latest failed run is kept.
    pub fn failed_log_path(&self, pipeline: &Path, task: &str) -> PathBuf {
        self.history_dir(pipeline)
            .join("failed-logs")
            .join(file_name_of(task))
    }

    /// Keeps the log of a failed run of `task` (moved from `log`, a file on the cache's
    /// filesystem such as the task's scratch), replacing the one of its previous failure.
    pub fn keep_failed_log(
        &self,
        pipeline: &Path,
        task: &str,
        log: &Path,
    ) -> Result<PathBuf, StoreError> {
        let dest = self.failed_log_path(pipeline, task);
        let dir = dest.parent().expect("a failed log has a directory");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::rename(log, &dest).map_err(io(&dest))?;
        Ok(dest)
    }

    /// The kept log of `task`'s latest failed run and when it was kept.
    pub fn failed_log(&self, pipeline: &Path, task: &str) -> Option<(PathBuf, SystemTime)> {
        let path = self.failed_log_path(pipeline, task);
        let at = std::fs::metadata(&path).ok()?.modified().ok()?;
        Some((path, at))
    }

    /// A record of the run that began at `started_ms`, written to `tmp/` until it is finished.
    pub fn run_record_writer(
        &self,
        pipeline: &Path,
        started_ms: u64,
    ) -> Result<RunRecordWriter, StoreError> {
        let tmp = self.cache.tmp_path("run-record");
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let dest = self
            .history_dir(pipeline)
            .join("runs")
            .join(format!("{started_ms}-{}.jsonl", std::process::id()));
        Ok(RunRecordWriter { file, tmp, dest })
    }

    /// The kept run records of `pipeline`, newest first.
    pub fn run_records(&self, pipeline: &Path) -> Result<Vec<PathBuf>, StoreError> {
        records_newest_first(&self.history_dir(pipeline).join("runs"))
    }

    /// Removes failed logs and run records last written before `cutoff_ms`; returns how many.
    pub(crate) fn prune(&self, cutoff_ms: Option<i64>) -> Result<u64, StoreError> {
        let Some(cutoff) = cutoff_ms else {
            return Ok(0);
        };
        let root = self.cache.root.join("history");
        let pipelines = match std::fs::read_dir(&root) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(&root)(e)),
        };
        let mut removed = 0;
        for pipeline in pipelines {
            let dir = pipeline.map_err(io(&root))?.path();
            for kind in ["failed-logs", "runs"] {
                let Ok(files) = std::fs::read_dir(dir.join(kind)) else {
                    continue;
                };
                for file in files.flatten() {
                    let path = file.path();
                    if mtime_ms(&path).is_some_and(|at| at < cutoff)
                        && std::fs::remove_file(&path).is_ok()
                    {
                        removed += 1;
                    }
                }
                // Empty directories go too (a pipeline no longer run).
                let _ = std::fs::remove_dir(dir.join(kind));
            }
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_run_records_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let pipeline = Path::new("/w/strata.yml");
        for ms in 0..(RUN_RECORDS_KEPT as u64 + 3) {
            let mut w = cache
                .history()
                .run_record_writer(pipeline, 1000 + ms)
                .unwrap();
            w.write_line(&format!("{{\"n\":{ms}}}")).unwrap();
            w.finish().unwrap();
        }
        let records = cache.history().run_records(pipeline).unwrap();
        assert_eq!(records.len(), RUN_RECORDS_KEPT);
        let newest = std::fs::read_to_string(&records[0]).unwrap();
        assert_eq!(newest, format!("{{\"n\":{}}}\n", RUN_RECORDS_KEPT + 2));
        assert!(
            cache
                .history()
                .run_records(Path::new("/other.yml"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_failed_log_replaces_the_previous_one_and_prune_removes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let pipeline = Path::new("/w/strata.yml");
        for text in ["first", "second"] {
            let scratch = dir.path().join("tmp/log");
            std::fs::write(&scratch, text).unwrap();
            cache
                .history()
                .keep_failed_log(pipeline, "call/test", &scratch)
                .unwrap();
        }
        let (path, _) = cache.history().failed_log(pipeline, "call/test").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        assert!(path.ends_with("failed-logs/call%2Ftest"));
        assert_eq!(
            cache.history().prune(Some(0)).unwrap(),
            0,
            "nothing that old"
        );
        let future = mtime_ms(&path).unwrap() + 1;
        assert_eq!(cache.history().prune(Some(future)).unwrap(), 1);
        assert!(cache.history().failed_log(pipeline, "call/test").is_none());
    }
}
