//! A shared cache in a plain directory (a network filesystem, a mounted volume, a CI cache dir):
//!
//! ```text
//! entries/<cache key>.json
//! blobs/sha256/<hex>
//! tmp/
//! ```
//!
//! Everything is written to `tmp/` and then linked or renamed into place, so a reader never sees a
//! partial file; entries are published with `link(2)`, which fails if the name exists: the first
//! writer wins.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use strata_key::CacheKey;
use strata_oci::{DigestReader, OciDigest};

use crate::backend::{
    BackendError, BlobReader, BlobUpload, CacheBackend, Listed, PutOutcome, Swept,
};
use crate::entry::EntryDocument;

pub struct DirBackend {
    root: PathBuf,
}

impl DirBackend {
    pub fn new(root: &Path) -> DirBackend {
        DirBackend {
            root: root.to_path_buf(),
        }
    }

    fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.root
            .join("entries")
            .join(format!("{}.json", key.to_hex()))
    }

    fn blob_path(&self, digest: &OciDigest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn fail(&self, action: &str, path: &Path, e: std::io::Error) -> BackendError {
        if e.kind() == std::io::ErrorKind::NotFound && !self.root.is_dir() {
            return BackendError::Unreachable {
                location: self.location(),
                message: format!("{} does not exist", self.root.display()),
            };
        }
        BackendError::Failed {
            location: self.location(),
            action: action.to_string(),
            message: format!("{}: {e}", path.display()),
        }
    }

    fn tmp(&self) -> Result<PathBuf, BackendError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = self.root.join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| self.fail("create a temp dir", &dir, e))?;
        Ok(dir.join(format!(
            "{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    /// The files of `dir` (a subdirectory of the cache) with their metadata; none when it does
    /// not exist yet.
    fn list_dir(&self, dir: &Path) -> Result<Vec<(String, std::fs::Metadata)>, BackendError> {
        if !self.root.is_dir() {
            return Err(self.fail("list", dir, std::io::ErrorKind::NotFound.into()));
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.fail("list", dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.fail("list", dir, e))?;
            let (Some(name), Ok(meta)) = (
                entry.file_name().to_str().map(str::to_string),
                entry.metadata(),
            ) else {
                continue;
            };
            out.push((name, meta));
        }
        Ok(out)
    }

    fn remove(&self, action: &str, path: &Path) -> Result<(), BackendError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.fail(action, path, e)),
        }
    }

    fn ensure_parent(&self, path: &Path) -> Result<(), BackendError> {
        let parent = path.parent().expect("cache paths have parents");
        std::fs::create_dir_all(parent).map_err(|e| self.fail("create a directory", parent, e))
    }
}

impl CacheBackend for DirBackend {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn get_entry(&self, key: &CacheKey) -> Result<Option<EntryDocument>, BackendError> {
        let path = self.entry_path(key);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(EntryDocument::from_json(&bytes, key)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.root.is_dir() => Ok(None),
            Err(e) => Err(self.fail("read an entry", &path, e)),
        }
    }

    fn put_entry(&self, entry: &EntryDocument) -> Result<PutOutcome, BackendError> {
        let dest = self.entry_path(&entry.key);
        if dest.exists() {
            return Ok(PutOutcome::AlreadyPresent);
        }
        self.ensure_parent(&dest)?;
        let tmp = self.tmp()?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&entry.to_json())?;
            f.sync_all()
        };
        write().map_err(|e| self.fail("write an entry", &tmp, e))?;
        let linked = std::fs::hard_link(&tmp, &dest);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(PutOutcome::Stored),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(PutOutcome::AlreadyPresent)
            }
            Err(e) => Err(self.fail("publish an entry", &dest, e)),
        }
    }

    fn begin_upload(&self) -> Option<Result<Box<dyn BlobUpload + '_>, BackendError>> {
        let start = || -> Result<Box<dyn BlobUpload + '_>, BackendError> {
            let tmp = self.tmp()?;
            let file =
                std::fs::File::create(&tmp).map_err(|e| self.fail("start an upload", &tmp, e))?;
            Ok(Box::new(DirUpload {
                backend: self,
                tmp,
                file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            }))
        };
        Some(start())
    }

    fn has_blob(&self, digest: &OciDigest) -> Result<bool, BackendError> {
        if !self.root.is_dir() {
            return Err(self.fail(
                "look up a blob",
                &self.root,
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        Ok(self.blob_path(digest).is_file())
    }

    fn get_blob(&self, digest: &OciDigest) -> Result<Option<BlobReader>, BackendError> {
        let path = self.blob_path(digest);
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.root.is_dir() => Ok(None),
            Err(e) => Err(self.fail("read a blob", &path, e)),
        }
    }

    fn put_blob(
        &self,
        digest: &OciDigest,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackendError> {
        let dest = self.blob_path(digest);
        if dest.is_file() {
            return Ok(());
        }
        self.ensure_parent(&dest)?;
        let tmp = self.tmp()?;
        let mut reader = DigestReader::new(content.take(size));
        let mut copy = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::copy(&mut reader, &mut f)?;
            f.sync_all()
        };
        if let Err(e) = copy() {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.fail("write a blob", &tmp, e));
        }
        let (actual, len) = reader.finish();
        if actual != *digest || len != size {
            let _ = std::fs::remove_file(&tmp);
            return Err(BackendError::Corrupt {
                location: self.location(),
                digest: *digest,
            });
        }
        std::fs::rename(&tmp, &dest).map_err(|e| self.fail("publish a blob", &dest, e))
    }

    fn list_entries(&self) -> Result<Vec<Listed<CacheKey>>, BackendError> {
        let dir = self.root.join("entries");
        Ok(self
            .list_dir(&dir)?
            .into_iter()
            .filter_map(|(name, meta)| {
                Some(Listed {
                    name: CacheKey::parse(name.strip_suffix(".json")?)?,
                    size: meta.len(),
                    modified: meta.modified().ok()?,
                })
            })
            .collect())
    }

    fn get_tool_cache(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let path = self.root.join("tool-caches").join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.root.is_dir() => Ok(None),
            Err(e) => Err(self.fail("read a tool cache", &path, e)),
        }
    }

    fn put_tool_cache(&self, name: &str, document: &[u8]) -> Result<(), BackendError> {
        let dest = self.root.join("tool-caches").join(name);
        self.ensure_parent(&dest)?;
        let tmp = self.tmp()?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(document)?;
            f.sync_all()
        };
        write().map_err(|e| self.fail("write a tool cache", &tmp, e))?;
        // A rename, not a link: the last writer wins.
        std::fs::rename(&tmp, &dest).map_err(|e| self.fail("publish a tool cache", &dest, e))
    }

    fn list_tool_caches(&self) -> Result<Vec<Listed<String>>, BackendError> {
        let dir = self.root.join("tool-caches");
        Ok(self
            .list_dir(&dir)?
            .into_iter()
            .filter(|(name, _)| name.ends_with(".json"))
            .filter_map(|(name, meta)| {
                Some(Listed {
                    size: meta.len(),
                    modified: meta.modified().ok()?,
                    name,
                })
            })
            .collect())
    }

    fn delete_tool_cache(&self, name: &str) -> Result<(), BackendError> {
        self.remove(
            "delete a tool cache",
            &self.root.join("tool-caches").join(name),
        )
    }

    fn entry_document(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, BackendError> {
        let path = self.entry_path(key);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail("read an entry", &path, e)),
        }
    }

    fn delete_entry(&self, key: &CacheKey) -> Result<(), BackendError> {
        self.remove("delete an entry", &self.entry_path(key))
    }

    fn list_blobs(&self) -> Result<Option<Vec<Listed<OciDigest>>>, BackendError> {
        let dir = self.root.join("blobs/sha256");
        Ok(Some(
            self.list_dir(&dir)?
                .into_iter()
                .filter_map(|(name, meta)| {
                    Some(Listed {
                        name: OciDigest::parse(&format!("sha256:{name}"))?,
                        size: meta.len(),
                        modified: meta.modified().ok()?,
                    })
                })
                .collect(),
        ))
    }

    fn delete_blob(&self, digest: &OciDigest) -> Result<(), BackendError> {
        self.remove("delete a blob", &self.blob_path(digest))
    }

    /// `tmp/` holds uploads being written (their time moves as they grow) and entries about
    /// to be linked: what has not changed since `before` was abandoned.
    fn clean_uploads(&self, before: std::time::SystemTime) -> Result<Swept, BackendError> {
        let dir = self.root.join("tmp");
        let mut swept = Swept::default();
        for (name, meta) in self.list_dir(&dir)? {
            if meta.is_file() && meta.modified().is_ok_and(|m| m < before) {
                self.remove("remove an abandoned upload", &dir.join(name))?;
                swept.objects += 1;
                swept.bytes += meta.len();
            }
        }
        Ok(swept)
    }
}

/// A blob written to `tmp/` as it is produced, renamed to its digest at the end.
struct DirUpload<'a> {
    backend: &'a DirBackend,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl BlobUpload for DirUpload<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(bytes)
            .map_err(|e| self.backend.fail("write a blob", &self.tmp, e))
    }

    fn finish(mut self: Box<Self>, digest: &OciDigest, _size: u64) -> Result<(), BackendError> {
        let file = self.file.take().expect("open until finished");
        let done = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all());
        done.map_err(|e| self.backend.fail("write a blob", &self.tmp, e))?;
        let dest = self.backend.blob_path(digest);
        self.backend.ensure_parent(&dest)?;
        std::fs::rename(&self.tmp, &dest).map_err(|e| self.backend.fail("publish a blob", &dest, e))
    }
}

impl Drop for DirUpload<'_> {
    fn drop(&mut self) {
        // Renamed away when finished; otherwise abandoned.
        let _ = std::fs::remove_file(&self.tmp);
    }
}
