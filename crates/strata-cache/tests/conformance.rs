//! One conformance suite, run against every backend: a directory, S3 (a real `s3s-fs` server) and
//! an OCI registry (a real `docker-registry`), each started by the test on loopback.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use strata_cache::{
    ArchiveRef, BackendError, BlobReader, BlobRef, CacheBackend, DirBackend, ENTRY_SCHEMA,
    EntryDocument, Listed, PutOutcome, ReadOnly, RegistryBackend, S3Backend, SharedCaches,
    SharedPruneOptions, TOOL_CACHE_SCHEMA, ToolCacheDocument, prune_shared,
};
use strata_key::{BaseId, EnvInput, ExportedEnv, KEY_VERSION, KeyInputs, WorkspaceDigest};
use strata_oci::OciDigest;
use strata_testkit::Server;

/// A backend under test, with whatever keeps it alive.
struct Subject {
    backend: Arc<dyn CacheBackend>,
    /// The same kind of backend, pointed where no server is.
    unreachable: Box<dyn CacheBackend>,
    /// Where the backend (or its server) keeps what it stores.
    storage: std::path::PathBuf,
    _server: Option<Server>,
    _dir: Option<tempfile::TempDir>,
}

fn dir_subject() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    Subject {
        backend: Arc::new(DirBackend::new(dir.path())),
        unreachable: Box::new(DirBackend::new(&dir.path().join("not-mounted"))),
        storage: dir.path().to_path_buf(),
        _server: None,
        _dir: Some(dir),
    }
}

fn s3_backend(endpoint: &str) -> S3Backend {
    S3Backend::new(
        endpoint,
        "strata-ci",
        "strata/test",
        "us-east-1",
        true,
        strata_cache::CredentialChain::with_keys(
            strata_testkit::S3_ACCESS_KEY,
            strata_testkit::S3_SECRET_KEY,
        ),
    )
    .unwrap()
}

fn s3_subject() -> Subject {
    let server = Server::s3("strata-ci");
    let closed = format!("http://127.0.0.1:{}", strata_testkit::free_port());
    Subject {
        backend: Arc::new(s3_backend(&server.endpoint())),
        unreachable: Box::new(s3_backend(&closed)),
        // The objects (the server keeps its own metadata beside them).
        storage: server.dir.path().join("strata-ci"),
        _server: Some(server),
        _dir: None,
    }
}

fn registry_subject() -> Subject {
    let server = Server::registry();
    let closed = format!("127.0.0.1:{}", strata_testkit::free_port());
    Subject {
        backend: Arc::new(RegistryBackend::new(&server.host(), "team/cache")),
        unreachable: Box::new(RegistryBackend::new(&closed, "team/cache")),
        storage: server.dir.path().to_path_buf(),
        _server: Some(server),
        _dir: None,
    }
}

fn inputs(command: &str) -> KeyInputs {
    KeyInputs {
        version: KEY_VERSION,
        base: BaseId::from_hash(blake3::hash(b"base")),
        parents: Vec::new(),
        workspace: WorkspaceDigest::from_hash(blake3::hash(b"ws")),
        env: BTreeMap::from([("CI".to_string(), EnvInput::Value("true".into()))]),
        command: command.to_string(),
        executor: "sandbox/1".to_string(),
        artifacts: Vec::new(),
    }
}

/// Stores a layer blob and a log blob and returns an entry naming them.
fn stored_entry(b: &dyn CacheBackend, command: &str, duration_ms: u64) -> EntryDocument {
    let layer = format!("layer of {command} {duration_ms}").into_bytes();
    let log = format!("log of {command}").into_bytes();
    let (ld, gd) = (OciDigest::of(&layer), OciDigest::of(&log));
    b.put_blob(&ld, layer.len() as u64, &mut &layer[..])
        .unwrap();
    b.put_blob(&gd, log.len() as u64, &mut &log[..]).unwrap();
    let inputs = inputs(command);
    EntryDocument {
        schema: ENTRY_SCHEMA,
        key: inputs.key(),
        task: "build".into(),
        layer: strata_key::LayerDigest::from_hash(blake3::hash(&layer)),
        archive: ArchiveRef {
            digest: ld,
            size: layer.len() as u64,
            diff_id: ld,
        },
        env: ExportedEnv::default(),
        inputs,
        workspace_files: Vec::new(),
        exit_code: 0,
        duration_ms,
        log: BlobRef {
            digest: gd,
            size: log.len() as u64,
        },
        created_at_ms: 1,
        writes_workspace: None,
        signatures: Vec::new(),
    }
}

fn read_all(b: &dyn CacheBackend, d: &OciDigest) -> Option<Vec<u8>> {
    let mut r = b.get_blob(d).unwrap()?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    Some(out)
}

fn misses_are_values(s: Subject) {
    let b = s.backend.as_ref();
    let key = inputs("never stored").key();
    assert!(b.get_entry(&key).unwrap().is_none());
    let d = OciDigest::of(b"never stored");
    assert!(!b.has_blob(&d).unwrap());
    assert!(b.get_blob(&d).unwrap().is_none());
}

fn blobs_round_trip_and_are_stored_once(s: Subject) {
    let b = s.backend.as_ref();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let d = OciDigest::of(&content);
    b.put_blob(&d, content.len() as u64, &mut &content[..])
        .unwrap();
    assert!(b.has_blob(&d).unwrap());
    assert_eq!(read_all(b, &d).unwrap(), content);
    // A blob strata built and hashed itself goes up the same way, and reads back the same.
    let own: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
    let od = OciDigest::of(&own);
    b.put_own_blob(&od, own.len() as u64, &mut &own[..])
        .unwrap();
    assert_eq!(read_all(b, &od).unwrap(), own);
    // A second upload of a blob the cache has reads nothing from its source.
    let mut untouched = CountingReader(&content[..], 0);
    b.put_blob(&d, content.len() as u64, &mut untouched)
        .unwrap();
    assert_eq!(untouched.1, 0, "an existing blob was uploaded again");
}

struct CountingReader<'a>(&'a [u8], usize);

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1 += n;
        Ok(n)
    }
}

fn content_that_does_not_match_its_digest_is_refused(s: Subject) {
    let b = s.backend.as_ref();
    let claimed = OciDigest::of(b"what was promised");
    let actual = b"what was sent";
    assert!(
        b.put_blob(&claimed, actual.len() as u64, &mut &actual[..])
            .is_err()
    );
    assert!(!b.has_blob(&claimed).unwrap(), "a mismatched blob was kept");
}

fn entries_round_trip_and_the_first_writer_wins(s: Subject) {
    let b = s.backend.as_ref();
    let first = stored_entry(b, "make", 100);
    assert_eq!(b.put_entry(&first).unwrap(), PutOutcome::Stored);
    assert_eq!(b.get_entry(&first.key).unwrap(), Some(first.clone()));
    let second = stored_entry(b, "make", 200);
    assert_eq!(first.key, second.key);
    assert_eq!(b.put_entry(&second).unwrap(), PutOutcome::AlreadyPresent);
    assert_eq!(b.get_entry(&first.key).unwrap(), Some(first));
}

fn concurrent_publishers_leave_one_complete_entry(s: Subject) {
    let entries: Vec<EntryDocument> = (0..6)
        .map(|i| stored_entry(s.backend.as_ref(), "race", i))
        .collect();
    let key = entries[0].key;
    let outcomes: Vec<PutOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = entries
            .iter()
            .map(|e| {
                let b = Arc::clone(&s.backend);
                scope.spawn(move || b.put_entry(e).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(outcomes.contains(&PutOutcome::Stored), "{outcomes:?}");
    let got = s.backend.get_entry(&key).unwrap().expect("an entry");
    assert!(
        entries.contains(&got),
        "the stored entry is none of those written"
    );
    // Whatever won names blobs that are all there.
    assert!(s.backend.has_blob(&got.archive.digest).unwrap());
    assert!(s.backend.has_blob(&got.log.digest).unwrap());
}

fn read_only_never_writes(s: Subject) {
    let ro = ReadOnly(Box::new(SharedBackend(Arc::clone(&s.backend))));
    let content = b"read-only content";
    let d = OciDigest::of(content);
    assert!(matches!(
        ro.put_blob(&d, content.len() as u64, &mut &content[..]),
        Err(BackendError::ReadOnly { .. })
    ));
    assert!(matches!(
        ro.put_own_blob(&d, content.len() as u64, &mut &content[..]),
        Err(BackendError::ReadOnly { .. })
    ));
    assert!(!s.backend.has_blob(&d).unwrap());
    let entry = stored_entry(s.backend.as_ref(), "ro", 1);
    assert!(matches!(
        ro.put_entry(&entry),
        Err(BackendError::ReadOnly { .. })
    ));
    assert!(s.backend.get_entry(&entry.key).unwrap().is_none());
    // Reads pass through.
    assert!(ro.has_blob(&entry.archive.digest).unwrap());
}

struct SharedBackend(Arc<dyn CacheBackend>);

impl CacheBackend for SharedBackend {
    fn location(&self) -> String {
        self.0.location()
    }
    fn get_entry(&self, key: &strata_key::CacheKey) -> Result<Option<EntryDocument>, BackendError> {
        self.0.get_entry(key)
    }
    fn put_entry(&self, entry: &EntryDocument) -> Result<PutOutcome, BackendError> {
        self.0.put_entry(entry)
    }
    fn has_blob(&self, digest: &OciDigest) -> Result<bool, BackendError> {
        self.0.has_blob(digest)
    }
    fn get_blob(
        &self,
        digest: &OciDigest,
    ) -> Result<Option<strata_cache::BlobReader>, BackendError> {
        self.0.get_blob(digest)
    }
    fn put_blob(&self, d: &OciDigest, size: u64, c: &mut dyn Read) -> Result<(), BackendError> {
        self.0.put_blob(d, size, c)
    }
    fn get_tool_cache(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.0.get_tool_cache(name)
    }
}

/// A blob uploaded while it is produced is invisible until finished, complete afterwards, and
/// gone without a trace when abandoned.
fn streamed_uploads_appear_only_when_finished(s: Subject, streams: bool) {
    let b = s.backend.as_ref();
    let Some(upload) = b.begin_upload() else {
        assert!(!streams, "{} should take streamed uploads", b.location());
        return;
    };
    assert!(
        streams,
        "{} takes streams now: update the suite",
        b.location()
    );
    let mut upload = upload.unwrap();
    // Several chunks (of S3's 8 MiB, of the registry's), and a short last one.
    let content: Vec<u8> = (0..(19u32 << 20)).map(|i| (i % 251) as u8).collect();
    let d = OciDigest::of(&content);
    for chunk in content.chunks(3 << 20) {
        upload.write_all(chunk).unwrap();
    }
    assert!(!b.has_blob(&d).unwrap(), "visible before it was finished");
    upload.finish(&d, content.len() as u64).unwrap();
    assert!(b.has_blob(&d).unwrap());
    assert_eq!(read_all(b, &d).unwrap(), content);
    // A blob smaller than one chunk.
    let small: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    let d = OciDigest::of(&small);
    let mut upload = b.begin_upload().unwrap().unwrap();
    upload.write_all(&small).unwrap();
    assert!(!b.has_blob(&d).unwrap(), "visible before it was finished");
    upload.finish(&d, small.len() as u64).unwrap();
    assert_eq!(read_all(b, &d).unwrap(), small);
    // Abandoned after several chunks went up: nothing appears, nothing is left behind.
    let before = stored_files(&s.storage);
    let mut upload = b.begin_upload().unwrap().unwrap();
    upload.write_all(&content[..(17 << 20)]).unwrap();
    drop(upload);
    assert!(!b.has_blob(&OciDigest::of(&content[..(17 << 20)])).unwrap());
    let after = stored_files(&s.storage);
    // docker-registry's DELETE of an upload session rewrites one hash-state file (bookkeeping,
    // not content) into the session directory it has just removed.
    let left: Vec<_> = after
        .iter()
        .filter(|(p, _)| !before.contains_key(*p) && !p.to_string_lossy().contains("/hashstates/"))
        .collect();
    assert!(left.is_empty(), "an abandoned upload left files: {left:?}");
}

/// Every file under `dir`, with its size.
fn stored_files(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, u64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(stored_files(&entry.path()));
        } else {
            out.insert(entry.path(), meta.len());
        }
    }
    out
}

fn unreachable_is_not_a_miss(s: Subject) {
    let key = inputs("anything").key();
    let err = s.unreachable.get_entry(&key).unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let err = s.unreachable.has_blob(&OciDigest::of(b"x")).unwrap_err();
    assert!(err.is_unreachable(), "{err}");
}

fn entries_and_blobs_are_listed_and_deleted(s: Subject) {
    let b = s.backend.as_ref();
    let mut entry = stored_entry(b, "listed", 1);
    // A registry's tags have no time: an entry's is the one it records.
    entry.created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    b.put_entry(&entry).unwrap();
    let listed = b.list_entries().unwrap();
    assert_eq!(
        listed.iter().map(|l| l.name).collect::<Vec<_>>(),
        [entry.key]
    );
    let age = std::time::SystemTime::now()
        .duration_since(listed[0].modified)
        .unwrap_or_default();
    assert!(age < std::time::Duration::from_secs(3600), "{listed:?}");
    let doc = b.entry_document(&entry.key).unwrap().unwrap();
    assert_eq!(
        EntryDocument::from_json(&doc, &entry.key),
        Some(entry.clone())
    );
    // A registry lists none: its blobs are its own garbage collector's.
    if let Some(blobs) = b.list_blobs().unwrap() {
        let names: Vec<OciDigest> = blobs.iter().map(|l| l.name).collect();
        assert!(names.contains(&entry.archive.digest) && names.contains(&entry.log.digest));
        // A streamed blob is listed once, with its whole size, and deleted whole.
        let content: Vec<u8> = (0..20_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let digest = OciDigest::of(&content);
        let mut upload = b.begin_upload().unwrap().unwrap();
        upload.write_all(&content).unwrap();
        upload.finish(&digest, content.len() as u64).unwrap();
        let blobs = b.list_blobs().unwrap().unwrap();
        let streamed: Vec<&Listed<OciDigest>> = blobs.iter().filter(|l| l.name == digest).collect();
        assert_eq!(streamed.len(), 1, "{blobs:?}");
        assert_eq!(streamed[0].size, content.len() as u64);
        let before = stored_files(&s.storage).len();
        b.delete_blob(&digest).unwrap();
        assert!(!b.has_blob(&digest).unwrap());
        assert!(stored_files(&s.storage).len() < before);
        b.delete_blob(&digest).unwrap();
    }
    b.delete_entry(&entry.key).unwrap();
    assert!(b.get_entry(&entry.key).unwrap().is_none());
    assert!(b.list_entries().unwrap().is_empty());
    // Deleting what is gone is fine.
    b.delete_entry(&entry.key).unwrap();
    let ro = ReadOnly(Box::new(DirBackend::new(&s.storage)));
    assert!(matches!(
        ro.delete_entry(&entry.key),
        Err(BackendError::ReadOnly { .. })
    ));
}

macro_rules! conformance {
    ($module:ident, $subject:expr, streams: $streams:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn misses_are_values() {
                super::misses_are_values($subject);
            }
            #[test]
            fn blobs_round_trip_and_are_stored_once() {
                super::blobs_round_trip_and_are_stored_once($subject);
            }
            #[test]
            fn content_that_does_not_match_its_digest_is_refused() {
                super::content_that_does_not_match_its_digest_is_refused($subject);
            }
            #[test]
            fn entries_round_trip_and_the_first_writer_wins() {
                super::entries_round_trip_and_the_first_writer_wins($subject);
            }
            #[test]
            fn concurrent_publishers_leave_one_complete_entry() {
                super::concurrent_publishers_leave_one_complete_entry($subject);
            }
            #[test]
            fn read_only_never_writes() {
                super::read_only_never_writes($subject);
            }
            #[test]
            fn streamed_uploads_appear_only_when_finished() {
                super::streamed_uploads_appear_only_when_finished($subject, $streams);
            }
            #[test]
            fn unreachable_is_not_a_miss() {
                super::unreachable_is_not_a_miss($subject);
            }
            #[test]
            fn entries_and_blobs_are_listed_and_deleted() {
                super::entries_and_blobs_are_listed_and_deleted($subject);
            }
        }
    };
}

conformance!(dir, dir_subject(), streams: true);
conformance!(s3, s3_subject(), streams: true);
conformance!(registry, registry_subject(), streams: true);

#[test]
fn an_entry_whose_inputs_do_not_hash_to_its_key_is_ignored() {
    let s = dir_subject();
    let mut entry = stored_entry(s.backend.as_ref(), "honest", 1);
    entry.inputs.command = "tampered".into();
    s.backend.put_entry(&entry).unwrap();
    assert!(s.backend.get_entry(&entry.key).unwrap().is_none());
}

// Pruning racing a publisher, made deterministic: a backend that runs a hook at the worst
// moment of the other side.

type Hook = Box<dyn Fn(&dyn CacheBackend) + Send + Sync>;

/// Delegates to `inner`, running `before_put_entry` before an entry is written and
/// `before_delete_blob` before a blob is deleted.
struct Racing {
    inner: Arc<dyn CacheBackend>,
    before_put_entry: Hook,
    before_delete_blob: Hook,
}

impl CacheBackend for Racing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get_entry(&self, key: &strata_key::CacheKey) -> Result<Option<EntryDocument>, BackendError> {
        self.inner.get_entry(key)
    }
    fn put_entry(&self, entry: &EntryDocument) -> Result<PutOutcome, BackendError> {
        (self.before_put_entry)(self.inner.as_ref());
        self.inner.put_entry(entry)
    }
    fn has_blob(&self, digest: &OciDigest) -> Result<bool, BackendError> {
        self.inner.has_blob(digest)
    }
    fn get_blob(&self, digest: &OciDigest) -> Result<Option<BlobReader>, BackendError> {
        self.inner.get_blob(digest)
    }
    fn put_blob(&self, d: &OciDigest, size: u64, r: &mut dyn Read) -> Result<(), BackendError> {
        self.inner.put_blob(d, size, r)
    }
    fn list_entries(&self) -> Result<Vec<Listed<strata_key::CacheKey>>, BackendError> {
        self.inner.list_entries()
    }
    fn entry_document(&self, key: &strata_key::CacheKey) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.entry_document(key)
    }
    fn delete_entry(&self, key: &strata_key::CacheKey) -> Result<(), BackendError> {
        self.inner.delete_entry(key)
    }
    fn list_blobs(&self) -> Result<Option<Vec<Listed<OciDigest>>>, BackendError> {
        self.inner.list_blobs()
    }
    fn delete_blob(&self, digest: &OciDigest) -> Result<(), BackendError> {
        (self.before_delete_blob)(self.inner.as_ref());
        self.inner.delete_blob(digest)
    }
    fn get_tool_cache(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get_tool_cache(name)
    }
    /// A document is written as an entry is: after the `before_put_entry` hook.
    fn put_tool_cache(&self, name: &str, document: &[u8]) -> Result<(), BackendError> {
        (self.before_put_entry)(self.inner.as_ref());
        self.inner.put_tool_cache(name, document)
    }
    fn list_tool_caches(&self) -> Result<Vec<Listed<String>>, BackendError> {
        self.inner.list_tool_caches()
    }
    fn delete_tool_cache(&self, name: &str) -> Result<(), BackendError> {
        self.inner.delete_tool_cache(name)
    }
}

fn options(grace_secs: u64) -> SharedPruneOptions {
    SharedPruneOptions {
        older_than: None,
        max_bytes: None,
        grace: std::time::Duration::from_secs(grace_secs),
        tool_cache_max_age: std::time::Duration::from_secs(48 * 3600),
    }
}

/// Every entry's blobs are there.
fn consistent(b: &dyn CacheBackend) -> Vec<String> {
    let mut broken = Vec::new();
    for e in b.list_entries().unwrap() {
        let Some(entry) = b.get_entry(&e.name).unwrap() else {
            continue;
        };
        for d in [entry.archive.digest, entry.log.digest] {
            if !b.has_blob(&d).unwrap() {
                broken.push(format!("{} names missing {d}", entry.key.short()));
            }
        }
    }
    broken
}

/// A publisher uploads its blobs, then (while a prune runs) writes its entry: the grace period
/// keeps the blobs; without one they would go.
fn fresh_blobs_outlive_a_prune_within_the_grace_period(s: Subject) {
    let b = s.backend.as_ref();
    let entry = stored_entry(b, "fresh", 1);
    let report = prune_shared(b, &options(3600)).unwrap();
    assert_eq!(report.blobs, 0);
    b.put_entry(&entry).unwrap();
    assert!(consistent(b).is_empty());
    // The same without a grace period: the blobs go, which is what the period is for.
    let other = stored_entry(b, "fresh too", 1);
    let report = prune_shared(b, &options(0)).unwrap();
    assert_eq!(report.blobs, 2, "{report:?}");
    assert!(!b.has_blob(&other.archive.digest).unwrap());
}

/// The prune's side: an entry written while the prune deletes a blob it names (that blob was
/// there before, unnamed) is removed by the prune's second look.
fn an_entry_written_as_its_blob_is_deleted_is_removed(s: Subject) {
    let entry = stored_entry(s.backend.as_ref(), "reused", 1);
    let written = std::sync::atomic::AtomicBool::new(false);
    let entry_for_hook = entry.clone();
    let racing = Racing {
        inner: Arc::clone(&s.backend),
        before_put_entry: Box::new(|_| {}),
        before_delete_blob: Box::new(move |inner| {
            if !written.swap(true, std::sync::atomic::Ordering::SeqCst) {
                inner.put_entry(&entry_for_hook).unwrap();
            }
        }),
    };
    let report = prune_shared(&racing, &options(0)).unwrap();
    assert_eq!(report.withdrawn, 1, "{report:?}");
    assert!(s.backend.get_entry(&entry.key).unwrap().is_none());
    assert!(consistent(s.backend.as_ref()).is_empty());
}

/// The publisher's side: its archive was there already (upload skipped) and a prune deletes it
/// just before the entry is written; the publisher finds it gone and withdraws its entry.
fn a_publisher_withdraws_an_entry_whose_reused_blob_a_prune_took(s: Subject) {
    let local_dir = tempfile::tempdir().unwrap();
    let local = strata_store::LocalCache::open(local_dir.path()).unwrap();
    let upper = local_dir.path().join("upper");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(upper.join("file"), "content").unwrap();
    let layer = local.layers().commit(&upper).unwrap();
    // The archive of this layer is in the shared cache already, named by nothing.
    let archive = b"an archive uploaded long ago".to_vec();
    let digest = OciDigest::of(&archive);
    s.backend
        .put_blob(&digest, archive.len() as u64, &mut &archive[..])
        .unwrap();
    local
        .index()
        .record_archive(
            &layer,
            &strata_store::ArchiveRecord {
                digest: digest.to_string(),
                size: archive.len() as u64,
                diff_id: digest.to_string(),
            },
        )
        .unwrap();
    let racing = Racing {
        inner: Arc::clone(&s.backend),
        before_put_entry: Box::new(|inner| {
            prune_shared(inner, &options(0)).unwrap();
        }),
        before_delete_blob: Box::new(|_| {}),
    };
    let chain = SharedCaches::new(vec![Box::new(racing)]);
    let inputs = inputs("reusing");
    let warnings = std::sync::Mutex::new(Vec::new());
    let warn = |e: &BackendError| warnings.lock().unwrap().push(e.to_string());
    let log = local.content().put_log(b"log").unwrap();
    let published = chain.publish(
        &local,
        &strata_store::NewEntry {
            key: inputs.key(),
            pipeline: "p".into(),
            task: "reusing".into(),
            layer,
            env: ExportedEnv::default(),
            inputs: inputs.clone(),
            workspace_files: Vec::new(),
            duration: std::time::Duration::from_millis(5),
            log,
            exit_code: 0,
        },
        &warn,
    );
    assert_eq!(published.caches, 0);
    let warnings = warnings.into_inner().unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("withdrawn")),
        "{warnings:?}"
    );
    assert!(s.backend.get_entry(&inputs.key()).unwrap().is_none());
    assert!(consistent(s.backend.as_ref()).is_empty());
}

// Tool caches in a prune.

const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tool_cache_id(name: &str) -> strata_store::ToolCacheId {
    strata_store::ToolCacheId {
        vault: "main".into(),
        name: name.into(),
    }
}

/// Writes a tool cache document holding `entry`, written at `written_ms`.
fn put_tool_cache(b: &dyn CacheBackend, name: &str, entry: &EntryDocument, written_ms: i64) {
    let doc = ToolCacheDocument {
        schema: TOOL_CACHE_SCHEMA,
        vault: "main".into(),
        name: name.into(),
        written_ms,
        entry: entry.clone(),
        signatures: Vec::new(),
    };
    b.put_tool_cache(
        &tool_cache_id(name).file_name(),
        &serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
}

fn has_tool_cache(b: &dyn CacheBackend, name: &str) -> bool {
    b.get_tool_cache(&tool_cache_id(name).file_name())
        .unwrap()
        .is_some()
}

/// Every tool cache document's blobs are there.
fn tool_caches_consistent(b: &dyn CacheBackend) -> Vec<String> {
    let mut broken = Vec::new();
    for listed in b.list_tool_caches().unwrap() {
        let bytes = b.get_tool_cache(&listed.name).unwrap().unwrap();
        let doc: ToolCacheDocument = serde_json::from_slice(&bytes).unwrap();
        for d in [doc.entry.archive.digest, doc.entry.log.digest] {
            if !b.has_blob(&d).unwrap() {
                broken.push(format!("{} names missing {d}", doc.name));
            }
        }
    }
    broken
}

/// A document past the maximum age goes (and its blobs, named by nothing else); a live one
/// keeps its blobs although its entry is deleted, and is still restorable from.
fn an_old_tool_cache_goes_and_a_live_one_keeps_its_blobs(s: Subject) {
    let b = s.backend.as_ref();
    let live = stored_entry(b, "live tool cache", 1);
    let old = stored_entry(b, "old tool cache", 1);
    b.put_entry(&live).unwrap();
    put_tool_cache(b, "live", &live, now_ms() - HOUR_MS);
    put_tool_cache(b, "old", &old, now_ms() - 49 * HOUR_MS);
    assert_eq!(b.list_tool_caches().unwrap().len(), 2);
    // Every entry goes (`--older-than 0s`), and every blob nothing names.
    let mut opts = options(0);
    opts.older_than = Some(std::time::Duration::ZERO);
    let report = prune_shared(b, &opts).unwrap();
    assert_eq!(report.entries, 1, "{report:?}");
    assert_eq!(
        (report.tool_caches, report.live_tool_caches),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        report.blobs, 2,
        "the old tool cache's two blobs: {report:?}"
    );
    assert!(!has_tool_cache(b, "old"));
    assert!(!b.has_blob(&old.archive.digest).unwrap());
    assert!(b.get_entry(&live.key).unwrap().is_none());
    assert!(b.has_blob(&live.archive.digest).unwrap());
    assert!(b.has_blob(&live.log.digest).unwrap());
    assert!(tool_caches_consistent(b).is_empty());
    let chain = SharedCaches::new(vec![Box::new(SharedBackend(Arc::clone(&s.backend)))]);
    let lookup = chain.lookup_tool_cache(&tool_cache_id("live"), now_ms() - 48 * HOUR_MS, &|_| {});
    let (_, doc) = lookup.found.expect("the live tool cache is found");
    assert_eq!(
        read_all(b, &doc.entry.archive.digest).unwrap().len() as u64,
        doc.entry.archive.size
    );
    // A shorter maximum age (the config's) takes the live one too.
    let mut opts = options(0);
    opts.tool_cache_max_age = std::time::Duration::from_secs(60);
    let report = prune_shared(b, &opts).unwrap();
    assert_eq!((report.tool_caches, report.blobs), (1, 2), "{report:?}");
    assert!(b.list_tool_caches().unwrap().is_empty());
}

/// A tool cache published while a prune deletes blobs: one for a live entry loses nothing; one
/// naming a blob the prune is deleting is removed by the prune's second look.
fn a_tool_cache_published_during_a_prune_loses_nothing_and_names_no_missing_blob(s: Subject) {
    let kept = stored_entry(s.backend.as_ref(), "kept entry", 1);
    s.backend.put_entry(&kept).unwrap();
    let orphan = stored_entry(s.backend.as_ref(), "orphan blobs", 1);
    let written = std::sync::atomic::AtomicBool::new(false);
    let (kept_for_hook, orphan_for_hook) = (kept.clone(), orphan.clone());
    let racing = Racing {
        inner: Arc::clone(&s.backend),
        before_put_entry: Box::new(|_| {}),
        before_delete_blob: Box::new(move |inner| {
            if !written.swap(true, std::sync::atomic::Ordering::SeqCst) {
                put_tool_cache(inner, "kept", &kept_for_hook, now_ms());
                put_tool_cache(inner, "orphan", &orphan_for_hook, now_ms());
            }
        }),
    };
    let report = prune_shared(&racing, &options(0)).unwrap();
    assert_eq!(report.blobs, 2, "{report:?}");
    assert_eq!(report.withdrawn_tool_caches, 1, "{report:?}");
    assert!(has_tool_cache(s.backend.as_ref(), "kept"));
    assert!(!has_tool_cache(s.backend.as_ref(), "orphan"));
    assert!(s.backend.has_blob(&kept.archive.digest).unwrap());
    assert!(tool_caches_consistent(s.backend.as_ref()).is_empty());
}

/// The publisher's side: the entry it read is deleted and its blobs pruned just before the
/// document is written; the publisher finds a blob gone and withdraws the document.
fn a_publisher_withdraws_a_tool_cache_whose_blob_a_prune_took(s: Subject) {
    let entry = stored_entry(s.backend.as_ref(), "pruned under the publisher", 1);
    s.backend.put_entry(&entry).unwrap();
    let key = entry.key;
    let racing = Racing {
        inner: Arc::clone(&s.backend),
        before_put_entry: Box::new(move |inner| {
            inner.delete_entry(&key).unwrap();
            prune_shared(inner, &options(0)).unwrap();
        }),
        before_delete_blob: Box::new(|_| {}),
    };
    let chain = SharedCaches::new(vec![Box::new(racing)]);
    let warnings = std::sync::Mutex::new(Vec::new());
    let warn = |e: &BackendError| warnings.lock().unwrap().push(e.to_string());
    let published = chain.publish_tool_cache(&tool_cache_id("raced"), &key, now_ms(), &warn);
    assert_eq!(published, 0);
    let warnings = warnings.into_inner().unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("withdrawn")),
        "{warnings:?}"
    );
    assert!(!has_tool_cache(s.backend.as_ref(), "raced"));
    assert!(tool_caches_consistent(s.backend.as_ref()).is_empty());
}

macro_rules! races {
    ($module:ident, $subject:expr) => {
        mod $module {
            #[test]
            fn fresh_blobs_outlive_a_prune_within_the_grace_period() {
                super::fresh_blobs_outlive_a_prune_within_the_grace_period($subject);
            }
            #[test]
            fn an_entry_written_as_its_blob_is_deleted_is_removed() {
                super::an_entry_written_as_its_blob_is_deleted_is_removed($subject);
            }
            #[test]
            fn a_publisher_withdraws_an_entry_whose_reused_blob_a_prune_took() {
                super::a_publisher_withdraws_an_entry_whose_reused_blob_a_prune_took($subject);
            }
            #[test]
            fn an_old_tool_cache_goes_and_a_live_one_keeps_its_blobs() {
                super::an_old_tool_cache_goes_and_a_live_one_keeps_its_blobs($subject);
            }
            #[test]
            fn a_tool_cache_published_during_a_prune_loses_nothing_and_names_no_missing_blob() {
                super::a_tool_cache_published_during_a_prune_loses_nothing_and_names_no_missing_blob($subject);
            }
            #[test]
            fn a_publisher_withdraws_a_tool_cache_whose_blob_a_prune_took() {
                super::a_publisher_withdraws_a_tool_cache_whose_blob_a_prune_took($subject);
            }
        }
    };
}

races!(dir_races, super::dir_subject());
races!(s3_races, super::s3_subject());

/// A streamed blob read from S3 in chunks: read twice, whole (the reader's chunk buffers are
/// reused), and refused with a clear error when a chunk on the server is longer than its list
/// says.
#[test]
fn s3_chunks_read_back_whole_and_a_chunk_grown_on_the_server_is_refused() {
    let s = s3_subject();
    let b = s.backend.as_ref();
    // Five 8 MiB chunks and a short last one: more chunks than the reader has buffers.
    let content: Vec<u8> = (0..(43u32 << 20)).map(|i| (i % 253) as u8).collect();
    let d = OciDigest::of(&content);
    let mut upload = b.begin_upload().unwrap().unwrap();
    for piece in content.chunks(5 << 20) {
        upload.write_all(piece).unwrap();
    }
    upload.finish(&d, content.len() as u64).unwrap();
    for _ in 0..2 {
        assert!(
            read_all(b, &d).unwrap() == content,
            "the blob read back differs"
        );
    }
    let chunks: Vec<_> = stored_files(&s.storage)
        .into_iter()
        .filter(|(p, size)| p.to_string_lossy().contains("/chunks/") && *size == 8 << 20)
        .collect();
    assert_eq!(chunks.len(), 5, "{chunks:?}");
    let grown = &chunks[2].0;
    let mut bytes = std::fs::read(grown).unwrap();
    bytes.push(0);
    std::fs::write(grown, &bytes).unwrap();
    let mut r = b.get_blob(&d).unwrap().unwrap();
    let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(
        err.to_string().contains(&format!(
            "has more than {} bytes, its list says {}",
            8 << 20,
            8 << 20
        )),
        "{err}"
    );
}
