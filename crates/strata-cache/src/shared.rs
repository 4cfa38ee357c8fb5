//! The shared caches of a run, in order (after the local cache, which the engine asks first): an
//! entry is looked up in each, and a task that ran is published to every writable one. A shared
//! cache that cannot be reached is reported once and left out for the rest of the run; it never
//! fails one. Fetching a hit into the local cache is the engine's (`strata-engine`'s `fetch.rs`).
//!
//! A shared cache may be given trusted public keys: then only entries signed by one of them are
//! used, and any other entry is a miss, reported once per cache per run. Entries published are
//! signed with the run's signing keys, if it has any.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use strata_key::{CacheKey, LayerDigest};
use strata_oci::{Compression, DigestReader, OciDigest, write_layer};
use strata_store::{ArchiveRecord, LocalCache, NewEntry};

use crate::backend::{Access, BackendError, BlobUpload, CacheBackend, PutOutcome};
use crate::entry::{ArchiveRef, BlobRef, ENTRY_SCHEMA, EntryDocument};
use crate::flights::Flights;
use crate::signing::{PublicKey, SigningKey, Untrusted, verify_entry};
use strata_store::error_chain;

pub struct SharedCache {
    pub backend: Box<dyn CacheBackend>,
    down: AtomicBool,
    /// Keys one of which must have signed an entry for it to be used; empty: entries are used
    /// signed or not.
    trusted: Vec<PublicKey>,
    /// Whether an untrusted entry of this remote was reported this run.
    untrusted_reported: AtomicBool,
}

impl SharedCache {
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Leaves this cache out for the rest of the run (a transport failure).
    pub fn mark_down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    pub(crate) fn trusted_keys(&self) -> &[PublicKey] {
        &self.trusted
    }
}

pub struct SharedCaches {
    caches: Vec<SharedCache>,
    /// Every entry published is signed with each of these.
    signing: Vec<SigningKey>,
    /// Layers whose archive a thread is publishing, and logs being uploaded (`flights.rs`).
    layer_uploads: Flights<LayerDigest>,
    log_uploads: Flights<OciDigest>,
}

/// An entry a remote holds that is ignored because it is not signed by a key the remote is
/// trusted with.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "ignoring the entry of `{task}` (key {}) in cache {location}: {cause}; this cache is trusted only with entries signed by {}, so the task is built instead (other untrusted entries of this cache are ignored without a warning)",
    .key.short(),
    .trusted.join(", ")
)]
pub struct UntrustedEntry {
    pub location: String,
    pub task: String,
    pub key: CacheKey,
    pub cause: Untrusted,
    /// The names of the keys the remote trusts.
    pub trusted: Vec<String>,
}

/// What publishing reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Remotes that now have the entry.
    pub caches: usize,
    /// Layer archive bytes uploaded (0 when every remote had the layer).
    pub bytes: u64,
}

/// What restoring an entry from a remote took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Compressed bytes downloaded (0 when the layer was already here).
    pub bytes: u64,
}

/// Why a remote entry could not be restored. Only [`RestoreError::Corrupt`] and
/// [`RestoreError::Missing`] say something about the entry itself.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// What the remote holds is wrong: a blob that does not match its digest, an archive that is
    /// malformed or unsafe, or one that unpacks to another tree than its entry names.
    #[error("cache {location} holds a corrupt entry: {what}")]
    Corrupt { location: String, what: String },
    /// A blob the entry names is not there (removed by a clean-up).
    #[error("cache {location} has lost blob {digest}")]
    Missing { location: String, digest: OciDigest },
    /// Talking to the remote failed: unreachable, an error answer, a download that broke off.
    #[error(transparent)]
    Transport(BackendError),
    /// This machine's cache could not be written.
    #[error("local cache {cache} failed to {action}: {message}")]
    Local {
        cache: String,
        action: String,
        message: String,
    },
}

impl RestoreError {
    pub fn from_backend(e: BackendError) -> RestoreError {
        match e {
            BackendError::Corrupt { location, digest } => RestoreError::Corrupt {
                location,
                what: format!("blob {digest} does not match its digest"),
            },
            other => RestoreError::Transport(other),
        }
    }

    /// Whether the entry itself is broken, so that it is not asked for again for a while.
    pub fn condemns_entry(&self) -> bool {
        matches!(
            self,
            RestoreError::Corrupt { .. } | RestoreError::Missing { .. }
        )
    }
}

/// Failures are reported through `warn`; the caller decides nothing more.
pub type Warn<'a> = &'a (dyn Fn(&BackendError) + Sync);

/// Untrusted entries are reported through this, once per remote per run.
pub type WarnUntrusted<'a> = &'a (dyn Fn(&UntrustedEntry) + Sync);

impl SharedCaches {
    /// Remotes whose entries are used signed or not.
    pub fn new(backends: Vec<Box<dyn CacheBackend>>) -> SharedCaches {
        SharedCaches::with_trusted_keys(backends.into_iter().map(|b| (b, Vec::new())).collect())
    }

    /// Remotes, each with the public keys one of which must have signed an entry for it to be
    /// used (none: any entry is used).
    pub fn with_trusted_keys(
        remotes: Vec<(Box<dyn CacheBackend>, Vec<PublicKey>)>,
    ) -> SharedCaches {
        SharedCaches {
            caches: remotes
                .into_iter()
                .map(|(backend, trusted)| SharedCache {
                    backend,
                    down: AtomicBool::new(false),
                    trusted,
                    untrusted_reported: AtomicBool::new(false),
                })
                .collect(),
            signing: Vec::new(),
            layer_uploads: Flights::new(),
            log_uploads: Flights::new(),
        }
    }

    /// Signs every entry this chain publishes with `keys`.
    pub fn signing_with(mut self, keys: Vec<SigningKey>) -> SharedCaches {
        self.signing = keys;
        self
    }

    /// What the user should know before a run: writable remotes whose trusted keys will refuse
    /// what this run publishes to them.
    pub fn notices(&self) -> Vec<String> {
        let mut notices = Vec::new();
        for remote in &self.caches {
            if remote.trusted.is_empty() || remote.backend.access() != Access::ReadWrite {
                continue;
            }
            let trusted = remote
                .trusted
                .iter()
                .any(|t| self.signing.iter().any(|s| s.public_key() == *t));
            if trusted {
                continue;
            }
            let signed = if self.signing.is_empty() {
                "unsigned ($STRATA_SIGNING_KEY is not set)".to_string()
            } else {
                format!(
                    "signed by {}",
                    names(self.signing.iter().map(|k| k.name())).join(", ")
                )
            };
            notices.push(format!(
                "entries this run publishes to cache {} are {signed}, but that cache is trusted only with entries signed by {}: later runs will ignore them",
                remote.location(),
                names(remote.trusted.iter().map(|k| k.name())).join(", ")
            ));
        }
        notices
    }

    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    pub fn caches(&self) -> &[SharedCache] {
        &self.caches
    }

    pub fn has_writable(&self) -> bool {
        self.caches
            .iter()
            .any(|r| r.backend.access() == Access::ReadWrite)
    }

    /// Reports a failure once and leaves the remote out for the rest of the run: whether it is
    /// unreachable or refuses us (credentials, permissions, a server error), asking again for
    /// every task would only repeat the warning.
    pub(crate) fn failed(&self, remote: &SharedCache, e: BackendError, warn: Warn<'_>) {
        if !remote.down.swap(true, Ordering::SeqCst) {
            warn(&e);
        }
    }

    /// The keys every publication is signed with.
    pub(crate) fn signing(&self) -> &[SigningKey] {
        &self.signing
    }

    pub(crate) fn up(&self) -> impl Iterator<Item = (usize, &SharedCache)> {
        self.caches
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.down.load(Ordering::SeqCst))
    }

    /// The first remote entry for `key`, and which remote has it.
    /// Remotes for which `skip(location)` is true are not asked (their entry for this key was
    /// found broken before). An entry whose layer archive the remote no longer has (removed by
    /// a clean-up of the bucket or registry) is a miss, unless `have_layer` says the layer is
    /// here already: announcing a hit whose layer cannot arrive would fail the tasks above it.
    /// An entry of a remote with trusted keys that none of them signed is a miss too, reported
    /// through `untrusted` the first time in a run.
    pub fn lookup(
        &self,
        key: &CacheKey,
        skip: &dyn Fn(&str) -> bool,
        have_layer: &dyn Fn(&LayerDigest) -> bool,
        warn: Warn<'_>,
        untrusted: WarnUntrusted<'_>,
    ) -> Option<(usize, EntryDocument)> {
        for (i, remote) in self.up() {
            if skip(&remote.location()) {
                continue;
            }
            let trusted = |entry: Option<EntryDocument>| {
                entry.filter(|e| match self.distrust(remote, e) {
                    None => true,
                    Some(refused) => {
                        if !remote.untrusted_reported.swap(true, Ordering::SeqCst) {
                            untrusted(&refused);
                        }
                        false
                    }
                })
            };
            let found = remote
                .backend
                .get_entry(key)
                .map(trusted)
                .and_then(|entry| match entry {
                    Some(e) if !have_layer(&e.layer) => remote
                        .backend
                        .has_blob(&e.archive.digest)
                        .map(|has| has.then_some(e)),
                    other => Ok(other),
                });
            match found {
                Ok(Some(entry)) => return Some((i, entry)),
                Ok(None) => {}
                Err(e) => self.failed(remote, e, warn),
            }
        }
        None
    }

    /// Why `entry` may not be used from `remote`, if it may not: the remote has trusted keys
    /// and none of them signed it.
    fn distrust(&self, remote: &SharedCache, entry: &EntryDocument) -> Option<UntrustedEntry> {
        if remote.trusted.is_empty() {
            return None;
        }
        let cause = verify_entry(entry, &remote.trusted).err()?;
        Some(UntrustedEntry {
            location: remote.location(),
            // The name comes from the remote: no control characters reach the terminal.
            task: entry.task.escape_debug().to_string(),
            key: entry.key,
            cause,
            trusted: names(remote.trusted.iter().map(|k| k.name())),
        })
    }

    /// Publishes a task result to every writable remote that is up: the layer archive and the
    /// log first (each skipped when the remote has it), the entry last. The archive is built
    /// once, streamed to the remotes that take streams while it is being built (so uploading
    /// overlaps with compressing), and written to a temporary file for the others.
    pub fn publish(&self, local: &LocalCache, p: &NewEntry, warn: Warn<'_>) -> Published {
        let log_path = local.content().log_path(&p.log);
        let mut published = Published::default();
        let targets: Vec<&SharedCache> = self
            .up()
            .map(|(_, r)| r)
            .filter(|r| r.backend.access() == Access::ReadWrite)
            .collect();
        if targets.is_empty() {
            return published;
        }
        // Which remotes still need the layer: all of them, unless an earlier upload or download
        // says which archive this layer is and the remote has it. Another task publishing the
        // same layer is waited for: then its upload is the earlier one.
        let layer_flight = self.layer_uploads.hold(p.layer);
        let known = self.archive_record(local, &p.layer);
        let mut have: Vec<Option<ArchiveRef>> = Vec::new();
        let mut alive: Vec<bool> = Vec::new();
        for remote in &targets {
            let has = match &known {
                Some(a) => remote.backend.has_blob(&a.digest),
                None => Ok(false),
            };
            match has {
                Ok(h) => {
                    have.push(h.then(|| known.expect("checked above")));
                    alive.push(true);
                }
                Err(e) => {
                    self.failed(remote, e, warn);
                    have.push(None);
                    alive.push(false);
                }
            }
        }
        let needing: Vec<usize> = (0..targets.len())
            .filter(|&i| alive[i] && have[i].is_none())
            .collect();
        if !needing.is_empty() {
            match self.upload_archive(local, &p.layer, &targets, &needing) {
                Ok((archive, results)) => {
                    for (i, result) in needing.iter().zip(results) {
                        match result {
                            Ok(()) => {
                                have[*i] = Some(archive);
                                published.bytes += archive.size;
                            }
                            Err(e) => {
                                self.failed(targets[*i], e, warn);
                                alive[*i] = false;
                            }
                        }
                    }
                }
                Err(e) => {
                    warn(&e);
                    return published;
                }
            }
        }
        drop(layer_flight);
        // The log is hashed from its file, then streamed from it to each remote.
        let log = match log_blob(&log_path) {
            Ok(log) => log,
            Err(e) => {
                warn(&BackendError::Failed {
                    location: format!("local cache {}", local.root().display()),
                    action: format!("read the log of `{}`", p.task),
                    message: format!("{}: {e}", log_path.display()),
                });
                return published;
            }
        };
        let _log_flight = self.log_uploads.hold(log.digest);
        let writes_workspace =
            match std::fs::symlink_metadata(local.layers().path(&p.layer).join("workspace")) {
                Ok(_) => Some(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
                Err(_) => None,
            };
        for (i, remote) in targets.iter().enumerate() {
            let Some(archive) = have[i].filter(|_| alive[i]) else {
                continue;
            };
            let mut entry = EntryDocument {
                schema: ENTRY_SCHEMA,
                key: p.key,
                task: p.task.to_string(),
                layer: p.layer,
                archive,
                env: p.env.clone(),
                inputs: p.inputs.clone(),
                workspace_files: p.workspace_files.to_vec(),
                exit_code: p.exit_code,
                duration_ms: p.duration.as_millis() as u64,
                log,
                created_at_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                writes_workspace,
                signatures: Vec::new(),
            };
            entry.signatures = self.signing.iter().map(|k| k.sign(&entry)).collect();
            let result = std::fs::File::open(&log_path)
                .map_err(|e| BackendError::Failed {
                    location: format!("local cache {}", local.root().display()),
                    action: format!("read the log of `{}`", p.task),
                    message: format!("{}: {e}", log_path.display()),
                })
                .and_then(|mut file| remote.backend.put_blob(&log.digest, log.size, &mut file))
                .and_then(|()| remote.backend.put_entry(&entry));
            match result {
                Ok(PutOutcome::Stored) => match self.still_has(remote, &archive.digest, &log) {
                    Ok(true) => published.caches += 1,
                    Ok(false) => {
                        // A concurrent prune deleted a blob this entry names, one that was
                        // there before (its upload skipped): the entry goes again, so that none
                        // names a missing blob (`gc.rs`). A later run publishes it anew.
                        let _ = remote.backend.delete_entry(&p.key);
                        warn(&BackendError::Failed {
                            location: remote.location(),
                            action: format!("publish `{}`", p.task),
                            message: "a concurrent prune deleted a blob it names; the entry was withdrawn".into(),
                        });
                    }
                    Err(e) => self.failed(remote, e, warn),
                },
                Ok(PutOutcome::AlreadyPresent) => published.caches += 1,
                Err(e) => self.failed(remote, e, warn),
            }
        }
        published
    }

    /// Whether the remote still has an entry's blobs, checked after writing the entry.
    fn still_has(
        &self,
        remote: &SharedCache,
        archive: &OciDigest,
        log: &BlobRef,
    ) -> Result<bool, BackendError> {
        Ok(remote.backend.has_blob(archive)? && remote.backend.has_blob(&log.digest)?)
    }

    /// The archive an earlier upload or download recorded for this layer.
    fn archive_record(&self, local: &LocalCache, layer: &LayerDigest) -> Option<ArchiveRef> {
        let rec = local.index().archive_of(layer).ok()??;
        Some(ArchiveRef {
            digest: OciDigest::parse(&rec.digest)?,
            size: rec.size,
            diff_id: OciDigest::parse(&rec.diff_id)?,
        })
    }

    /// Builds the layer's archive once and uploads it to `targets[needing]`: streamed to those
    /// that take streams, from a temporary file to the others. Returns the archive and, per
    /// remote in `needing`, how its upload went.
    fn upload_archive(
        &self,
        local: &LocalCache,
        layer: &LayerDigest,
        targets: &[&SharedCache],
        needing: &[usize],
    ) -> Result<(ArchiveRef, Vec<Result<(), BackendError>>), BackendError> {
        let fail = |e: &dyn std::error::Error| BackendError::Failed {
            location: format!("local cache {}", local.root().display()),
            action: format!("archive layer {}", layer.short()),
            message: error_chain(e),
        };
        let mut results: Vec<Option<Result<(), BackendError>>> =
            needing.iter().map(|_| None).collect();
        let mut streams = Vec::new();
        let mut by_file = Vec::new();
        for (n, &i) in needing.iter().enumerate() {
            match targets[i].backend.begin_upload() {
                Some(Ok(upload)) => streams.push((n, upload)),
                Some(Err(e)) => results[n] = Some(Err(e)),
                None => by_file.push(n),
            }
        }
        let path = (!by_file.is_empty()).then(|| local.content().temp_file("archive"));
        let file = match &path {
            Some(p) => Some(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(p).map_err(|e| fail(&e))?,
            )),
            None => None,
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let mut tee = Tee {
            file,
            streams: streams.iter_mut().map(|(_, u)| u).collect(),
            failed: Vec::new(),
        };
        let written = write_layer(
            &local.layers().path(layer),
            &mut tee,
            Compression::Zstd,
            threads,
        );
        let failed_streams = std::mem::take(&mut tee.failed);
        drop(tee);
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                if let Some(p) = &path {
                    let _ = std::fs::remove_file(p);
                }
                // Every upload failed: the archive stopped because of them, so it is their
                // cause that is told, with the shared cache that gave it.
                if let Some((k, cause)) = failed_streams.first()
                    && path.is_none()
                {
                    return Err(BackendError::Failed {
                        location: targets[needing[streams[*k].0]].location(),
                        action: "stream a layer archive".into(),
                        message: cause.clone(),
                    });
                }
                return Err(fail(&e));
            }
        };
        let _ = local.index().record_archive(
            layer,
            &ArchiveRecord {
                digest: written.digest.to_string(),
                size: written.size,
                diff_id: written.diff_id.to_string(),
            },
        );
        for (k, (n, upload)) in streams.into_iter().enumerate() {
            results[n] = Some(match failed_streams.iter().find(|(j, _)| *j == k) {
                Some((_, e)) => Err(BackendError::Failed {
                    location: targets[needing[n]].location(),
                    action: "stream a layer archive".into(),
                    message: e.clone(),
                }),
                None => upload.finish(&written.digest, written.size),
            });
        }
        if let Some(p) = &path {
            for &n in &by_file {
                let upload = std::fs::File::open(p).map_err(|e| fail(&e)).and_then(|f| {
                    let mut f = std::io::BufReader::with_capacity(1 << 20, f);
                    // Hashed as it was written a moment ago, and the remote lacks it.
                    targets[needing[n]]
                        .backend
                        .put_own_blob(&written.digest, written.size, &mut f)
                });
                results[n] = Some(upload);
            }
            let _ = std::fs::remove_file(p);
        }
        Ok((
            ArchiveRef {
                digest: written.digest,
                size: written.size,
                diff_id: written.diff_id,
            },
            results
                .into_iter()
                .map(|r| r.expect("every remote has a result"))
                .collect(),
        ))
    }
}

/// Writes an archive to a file and to streamed uploads at once. A stream that fails is dropped
/// (its remote is reported); the others go on.
struct Tee<'a, 'b> {
    file: Option<std::io::BufWriter<std::fs::File>>,
    streams: Vec<&'a mut Box<dyn BlobUpload + 'b>>,
    /// (index in `streams`, error) of streams that failed.
    failed: Vec<(usize, String)>,
}

impl std::io::Write for Tee<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &mut self.file {
            f.write_all(buf)?;
        }
        for (k, s) in self.streams.iter_mut().enumerate() {
            if self.failed.iter().any(|(j, _)| *j == k) {
                continue;
            }
            if let Err(e) = s.write_all(buf) {
                self.failed.push((k, e.to_string()));
            }
        }
        if self.file.is_none()
            && !self.streams.is_empty()
            && self.failed.len() == self.streams.len()
        {
            return Err(std::io::Error::other("every upload failed"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Key names for a message, each quoted once.
fn names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let quoted = format!("`{name}`");
        if !out.contains(&quoted) {
            out.push(quoted);
        }
    }
    out
}

/// The blob a log file is published as: its SHA-256 and size, read from the file.
fn log_blob(path: &Path) -> std::io::Result<BlobRef> {
    let mut reader = DigestReader::new(std::fs::File::open(path)?);
    reader.drain()?;
    let (digest, size) = reader.finish();
    Ok(BlobRef { digest, size })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use strata_key::{BaseId, EnvInput, ExportedEnv, KeyInputs, WorkspaceDigest};

    use super::*;
    use crate::backend::ReadOnly;
    use crate::dir::DirBackend;

    fn entry(command: &str) -> EntryDocument {
        let inputs = KeyInputs {
            version: strata_key::KEY_VERSION,
            base: BaseId::from_hash(blake3::hash(b"base")),
            parents: Vec::new(),
            workspace: WorkspaceDigest::from_hash(blake3::hash(b"ws")),
            env: BTreeMap::from([("CI".to_string(), EnvInput::Value("true".into()))]),
            command: command.to_string(),
            executor: "sandbox/1".to_string(),
            artifacts: Vec::new(),
        };
        EntryDocument {
            schema: ENTRY_SCHEMA,
            key: inputs.key(),
            task: command.to_string(),
            layer: LayerDigest::from_hash(blake3::hash(command.as_bytes())),
            archive: ArchiveRef {
                digest: OciDigest::of(b"archive"),
                size: 7,
                diff_id: OciDigest::of(b"tar"),
            },
            env: ExportedEnv::default(),
            inputs,
            workspace_files: Vec::new(),
            exit_code: 0,
            duration_ms: 5,
            log: BlobRef {
                digest: OciDigest::of(b"log"),
                size: 3,
            },
            created_at_ms: 1,
            writes_workspace: None,
            signatures: Vec::new(),
        }
    }

    fn signed(command: &str, key: &SigningKey) -> EntryDocument {
        let mut e = entry(command);
        e.signatures = vec![key.sign(&e)];
        e
    }

    fn dir_with(entries: &[EntryDocument]) -> (tempfile::TempDir, Box<dyn CacheBackend>) {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirBackend::new(dir.path());
        for e in entries {
            assert_eq!(backend.put_entry(e).unwrap(), crate::PutOutcome::Stored);
        }
        (dir, Box::new(backend))
    }

    #[test]
    fn untrusted_entries_are_misses_reported_once_per_remote() {
        let main = SigningKey::generate("ci-main").unwrap();
        let pr = SigningKey::generate("ci-pr").unwrap();
        // The first remote holds an unsigned entry and one signed by the PR key; the second
        // holds the first task signed by the main key.
        let (_a, first) = dir_with(&[entry("build"), signed("test", &pr)]);
        let (_b, second) = dir_with(&[signed("build", &main)]);
        let chain = SharedCaches::with_trusted_keys(vec![
            (first, vec![main.public_key()]),
            (second, vec![main.public_key()]),
        ]);
        let refused = Mutex::new(Vec::new());
        let lookup = |command: &str| {
            chain.lookup(
                &entry(command).key,
                &|_| false,
                &|_| true,
                &|e| panic!("no remote fails: {e}"),
                &|u| refused.lock().unwrap().push(u.clone()),
            )
        };
        let (remote, found) = lookup("build").expect("the signed entry of the second remote");
        assert_eq!(remote, 1);
        assert_eq!(found, signed("build", &main));
        assert!(
            lookup("test").is_none(),
            "an entry signed by an untrusted key"
        );
        let refused = refused.into_inner().unwrap();
        assert_eq!(
            refused.len(),
            1,
            "one warning per remote per run: {refused:?}"
        );
        assert_eq!(refused[0].cause, Untrusted::Unsigned);
        assert_eq!(refused[0].task, "build");
        let message = refused[0].to_string();
        assert!(message.contains("it is not signed"), "{message}");
        assert!(message.contains("`ci-main`"), "{message}");

        // Without trusted keys, the same remote's entries are used as before.
        let (_c, first) = dir_with(&[entry("build")]);
        let chain = SharedCaches::new(vec![first]);
        let found = chain.lookup(
            &entry("build").key,
            &|_| false,
            &|_| true,
            &|e| panic!("{e}"),
            &|u| panic!("nothing is refused: {u}"),
        );
        assert_eq!(found.map(|(i, _)| i), Some(0));
    }

    #[test]
    fn remotes_that_would_refuse_what_a_run_publishes_are_noticed() {
        let main = SigningKey::generate("ci-main").unwrap();
        let pr = SigningKey::generate("ci-pr").unwrap();
        let chain = |signing: Vec<SigningKey>| {
            let (dir, writable) = dir_with(&[]);
            let (_, read_only) = dir_with(&[]);
            let chain = SharedCaches::with_trusted_keys(vec![
                (writable, vec![main.public_key()]),
                (Box::new(ReadOnly(read_only)), vec![main.public_key()]),
            ])
            .signing_with(signing);
            (dir, chain)
        };
        let (_d, unsigned) = chain(Vec::new());
        let notices = unsigned.notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(notices[0].contains("unsigned"), "{}", notices[0]);
        let (_d, by_pr) = chain(vec![SigningKey::parse(&pr.secret_text()).unwrap()]);
        let notices = by_pr.notices();
        assert!(notices[0].contains("signed by `ci-pr`"), "{notices:?}");
        let (_d, by_main) = chain(vec![SigningKey::parse(&main.secret_text()).unwrap()]);
        assert!(by_main.notices().is_empty());
    }
}
