//! Fetching a shared hit: its layer archive downloaded, verified and unpacked into the local
//! cache (streamed: no temporary archive), checked to be the tree its entry names, then its log
//! and its entry written back, so that the next run finds it here. The shared caches themselves
//! (`strata-cache`) only find entries and hand out blobs; what enters the local cache is decided
//! here, between the two stores.

use std::io::Read;
use std::time::Duration;

use strata_cache::{
    BackendError, BlobRef, CacheBackend, EntryDocument, RestoreError, Restored, SharedCaches,
};
use strata_oci::{Compression, DigestReader, Expected, apply_layer};
use strata_store::{ArchiveRecord, LocalCache, NewEntry, WrittenLog, error_chain};

/// Makes a remote entry a local one: downloads, verifies and unpacks its layer (streamed: no
/// temporary archive), checks that it unpacked to the tree its entry names, fetches its
/// log, and writes the entry into the local index. `as_image`: the layer is converted into an
/// erofs image as it downloads, instead of unpacked into a directory (`layer_images.rs`).
/// `progress` is called with the bytes downloaded so far. A transport failure also leaves the
/// remote out for the rest of the run.
pub(crate) fn fetch(
    shared: &SharedCaches,
    local: &LocalCache,
    remote: usize,
    entry: &EntryDocument,
    pipeline: &str,
    as_image: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Restored, RestoreError> {
    let result = fetch_from(shared, local, remote, entry, pipeline, as_image, progress);
    if let Err(RestoreError::Transport(_)) = &result {
        shared.caches()[remote].mark_down();
    }
    result
}

fn fetch_from(
    shared: &SharedCaches,
    local: &LocalCache,
    remote: usize,
    entry: &EntryDocument,
    pipeline: &str,
    as_image: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Restored, RestoreError> {
    let backend = &shared.caches()[remote].backend;
    let location = backend.location();
    let local_err = |action: &str, e: &dyn std::error::Error| RestoreError::Local {
        cache: local.root().display().to_string(),
        action: action.to_string(),
        message: error_chain(e),
    };
    let corrupt = |what: String| RestoreError::Corrupt {
        location: location.clone(),
        what,
    };
    let mut bytes = 0;
    // A layer already here is used only if it is verified (a name alone is never trusted).
    let present = local
        .layers()
        .verified(&entry.layer)
        .map_err(|e| local_err("check a layer", &e))?;
    if !present {
        let blob = backend
            .get_blob(&entry.archive.digest)
            .map_err(RestoreError::from_backend)?
            .ok_or_else(|| RestoreError::Missing {
                location: location.clone(),
                digest: entry.archive.digest,
            })?;
        let counted = Progress::new(blob, progress);
        let stream_failed = counted.failed.clone();
        // What a failed unpack or conversion means: the stream, the blob, or the local disk.
        let apply_failed = |e: strata_oci::ApplyError| {
            let failed = stream_failed.lock().expect("stream lock").take();
            match (e, failed) {
                // The download broke off: nothing says the blob is bad.
                (_, Some(cause)) => RestoreError::Transport(BackendError::Unreachable {
                    location: location.clone(),
                    message: format!(
                        "the download of {} broke off: {cause}",
                        entry.archive.digest
                    ),
                }),
                (e @ strata_oci::ApplyError::Io { .. }, None) => {
                    local_err(&format!("unpack layer {}", entry.layer.short()), &e)
                }
                (strata_oci::ApplyError::DigestMismatch { .. }, None) => corrupt(format!(
                    "blob {} does not match its digest",
                    entry.archive.digest
                )),
                // The whole blob arrived and is not a valid or safe archive.
                (other, None) => corrupt(format!(
                    "layer archive {}: {}",
                    entry.archive.digest,
                    error_chain(&other)
                )),
            }
        };
        let mismatch = |found: strata_key::LayerDigest| {
            corrupt(format!(
                "its archive unpacks to layer {}, not the {} its entry names",
                found.short(),
                entry.layer.short()
            ))
        };
        if as_image {
            use crate::layer_images::{ImageRestoreError, restore_image};
            bytes = restore_image(local, counted, entry).map_err(|e| match e {
                ImageRestoreError::Convert(e) => apply_failed(e),
                ImageRestoreError::Mismatch(found) => mismatch(found),
                ImageRestoreError::Local(e) => local_err("place a layer image", &e),
            })?;
            return write_back(local, backend.as_ref(), entry, pipeline, bytes);
        }
        let dir = local
            .layers()
            .import_dir()
            .map_err(|e| local_err("make an import directory", &e))?;
        // The blob's digest is checked, and the entry is what names it: its diff_id is kept
        // as recorded (for images built from it), not recomputed.
        let expected = Expected {
            digest: Some(entry.archive.digest),
            diff_id: None,
        };
        let applied = apply_layer(counted, Compression::Zstd, &dir, expected);
        let applied = match applied {
            Ok(a) => a,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(apply_failed(e));
            }
        };
        bytes = applied.size;
        // The archive matched its digest, but the entry names the tree it must unpack to:
        // an archive swapped in (digests updated, layer name kept) is caught here.
        match local
            .layers()
            .publish(&dir, Some(&entry.layer), &applied.contents)
        {
            Ok(_) => {}
            Err(strata_store::StoreError::LayerMismatch { found, .. }) => {
                return Err(mismatch(found));
            }
            Err(e) => return Err(local_err("publish a layer", &e)),
        }
    }
    write_back(local, backend.as_ref(), entry, pipeline, bytes)
}

/// Once the layer is here: its archive record, its log and its entry.
fn write_back(
    local: &LocalCache,
    backend: &dyn CacheBackend,
    entry: &EntryDocument,
    pipeline: &str,
    bytes: u64,
) -> Result<Restored, RestoreError> {
    let local_err = |action: &str, e: &dyn std::error::Error| RestoreError::Local {
        cache: local.root().display().to_string(),
        action: action.to_string(),
        message: error_chain(e),
    };
    let _ = local.index().record_archive(
        &entry.layer,
        &ArchiveRecord {
            digest: entry.archive.digest.to_string(),
            size: entry.archive.size,
            diff_id: entry.archive.diff_id.to_string(),
        },
    );
    let log = fetch_log(local, backend, &entry.log)?;
    let store = || -> Result<(), strata_store::StoreError> {
        let log = local.content().put_log_file(log)?;
        local.sync()?;
        local.index().put(&NewEntry {
            key: entry.key,
            pipeline: pipeline.to_string(),
            task: entry.task.clone(),
            layer: entry.layer,
            env: entry.env.clone(),
            inputs: entry.inputs.clone(),
            workspace_files: entry.workspace_files.clone(),
            exit_code: entry.exit_code,
            duration: Duration::from_millis(entry.duration_ms),
            log,
        })
    };
    store().map_err(|e| local_err("write back an entry", &e))?;
    Ok(Restored { bytes })
}

/// Downloads a log into the local cache's `tmp/`, streamed (a log may be gigabytes) and
/// checked against its digest and size before it is stored.
fn fetch_log(
    local: &LocalCache,
    backend: &dyn CacheBackend,
    blob: &BlobRef,
) -> Result<WrittenLog, RestoreError> {
    let reader = backend
        .get_blob(&blob.digest)
        .map_err(RestoreError::from_backend)?
        .ok_or_else(|| RestoreError::Missing {
            location: backend.location(),
            digest: blob.digest,
        })?;
    let local_err = |e: &dyn std::error::Error| RestoreError::Local {
        cache: local.root().display().to_string(),
        action: "write a log".to_string(),
        message: error_chain(e),
    };
    let mut writer = local.content().log_writer().map_err(|e| local_err(&e))?;
    let mut reader = DigestReader::new(reader.take(blob.size + 1));
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(RestoreError::Transport(BackendError::Unreachable {
                    location: backend.location(),
                    message: e.to_string(),
                }));
            }
        };
        writer.write_all(&buf[..n]).map_err(|e| local_err(&e))?;
    }
    let written = writer.finish();
    let (digest, size) = reader.finish();
    if digest != blob.digest || size != blob.size {
        let _ = std::fs::remove_file(written.path());
        return Err(RestoreError::Corrupt {
            location: backend.location(),
            what: format!("blob {} does not match its digest", blob.digest),
        });
    }
    Ok(written)
}

/// A reader that reports how many bytes went through it, at most every 200 ms.
struct Progress<'a, R> {
    inner: R,
    bytes: u64,
    last: std::time::Instant,
    report: &'a (dyn Fn(u64) + Sync),
    /// Why reading the download failed, if it did: the stream, not its content, is to blame.
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl<'a, R> Progress<'a, R> {
    fn new(inner: R, report: &'a (dyn Fn(u64) + Sync)) -> Self {
        Progress {
            inner,
            bytes: 0,
            last: std::time::Instant::now(),
            report,
            failed: Default::default(),
        }
    }
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            *self.failed.lock().expect("stream lock") = Some(e.to_string());
        })?;
        self.bytes += n as u64;
        if n == 0 || self.last.elapsed() > Duration::from_millis(200) {
            self.last = std::time::Instant::now();
            (self.report)(self.bytes);
        }
        Ok(n)
    }
}
