//! Task logs: written to a file as the task prints, hashed on the way, stored by rename under
//! their digest. A log is never held whole in memory: a task may print gigabytes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use strata_key::ContentDigest;

use crate::error::{StoreError, io};
use crate::local::Content;

/// A log being written to a file (in a run's scratch, or the cache's `tmp/`), hashed as it is
/// written so that storing it needs no second read.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    hasher: blake3::Hasher,
    len: u64,
}

/// A log written in full: its file, digest and length. Only a [`LogWriter`] makes one, so the
/// digest is the file's.
#[derive(Debug)]
pub struct WrittenLog {
    path: PathBuf,
    digest: ContentDigest,
    len: u64,
}

impl LogWriter {
    /// Creates (or empties) the file at `path`.
    pub fn create(path: &Path) -> Result<LogWriter, StoreError> {
        let file = File::create(path).map_err(io(path))?;
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            hasher: blake3::Hasher::new(),
            len: 0,
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes).map_err(io(&self.path))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> WrittenLog {
        WrittenLog {
            path: self.path,
            digest: ContentDigest::from_hash(self.hasher.finalize()),
            len: self.len,
        }
    }
}

impl WrittenLog {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn digest(&self) -> ContentDigest {
        self.digest
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Content<'_> {
    /// Stores a written log by moving its file into `logs/` (the file must be on the cache's
    /// filesystem: a run's scratch or `tmp/`), and returns its digest. A log stored already is
    /// kept and the file removed.
    pub fn put_log_file(&self, log: WrittenLog) -> Result<ContentDigest, StoreError> {
        let dest = self.log_path(&log.digest);
        if dest.exists() {
            let _ = std::fs::remove_file(&log.path);
        } else {
            self.cache
                .note_unsynced(&format!("logs/{}", log.digest.to_hex()))?;
            std::fs::rename(&log.path, &dest).map_err(io(&dest))?;
        }
        Ok(log.digest)
    }

    /// A log being written into the cache's `tmp/` (for one that arrives from elsewhere, such
    /// as a shared cache), to be stored with [`Content::put_log_file`].
    pub fn log_writer(&self) -> Result<LogWriter, StoreError> {
        LogWriter::create(&self.cache.tmp_path("log"))
    }

    /// Stores a log held in memory (a small one) and returns its digest.
    pub fn put_log(&self, content: &[u8]) -> Result<ContentDigest, StoreError> {
        let mut writer = self.log_writer()?;
        writer.write_all(content)?;
        self.put_log_file(writer.finish())
    }

    pub fn log_path(&self, digest: &ContentDigest) -> PathBuf {
        self.cache.root.join("logs").join(digest.to_hex())
    }

    /// A stored log, to be read as a stream.
    pub fn open_log(&self, digest: &ContentDigest) -> Result<File, StoreError> {
        let path = self.log_path(digest);
        File::open(&path).map_err(io(&path))
    }

    pub fn read_log(&self, digest: &ContentDigest) -> Result<Vec<u8>, StoreError> {
        let path = self.log_path(digest);
        std::fs::read(&path).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalCache;

    #[test]
    fn a_log_is_stored_by_rename_under_the_digest_of_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let path = dir.path().join("scratch-log");
        let mut w = LogWriter::create(&path).unwrap();
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world\n").unwrap();
        let written = w.finish();
        assert_eq!(written.len(), 12);
        let digest = cache.content().put_log_file(written).unwrap();
        assert_eq!(
            digest,
            ContentDigest::from_hash(blake3::hash(b"hello world\n"))
        );
        assert!(!path.exists(), "moved, not copied");
        assert_eq!(cache.content().read_log(&digest).unwrap(), b"hello world\n");
        // The same log again: the stored one stays, the new file goes.
        let mut w = LogWriter::create(&path).unwrap();
        w.write_all(b"hello world\n").unwrap();
        assert_eq!(cache.content().put_log_file(w.finish()).unwrap(), digest);
        assert!(!path.exists());
        assert_eq!(cache.content().put_log(b"hello world\n").unwrap(), digest);
    }
}
