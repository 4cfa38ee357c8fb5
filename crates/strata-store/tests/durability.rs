//! Deferred durability: what a boot published but never flushed is dropped by the next boot, with
//! every entry naming it; what was settled survives.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use strata_key::{BaseId, KEY_VERSION, KeyInputs, LayerDigest, WorkspaceDigest};
use strata_store::{LocalCache, NewEntry};

fn inputs(command: &str) -> KeyInputs {
    KeyInputs {
        version: KEY_VERSION,
        base: BaseId::from_hash(blake3::hash(b"base")),
        parents: Vec::new(),
        workspace: WorkspaceDigest::from_hash(blake3::hash(b"ws")),
        env: BTreeMap::new(),
        command: command.to_string(),
        executor: "sandbox/1".to_string(),
        artifacts: Vec::new(),
    }
}

/// Runs a "task": commits a layer holding `content`, stores its log and records the entry.
fn task(
    cache: &LocalCache,
    scratch: &Path,
    command: &str,
    content: &str,
) -> (KeyInputs, LayerDigest) {
    let upper = scratch.join(command);
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(upper.join("out"), content).unwrap();
    let layer = cache.layers().commit(&upper).unwrap();
    let log = cache
        .content()
        .put_log(format!("log of {command}\n").as_bytes())
        .unwrap();
    cache.sync().unwrap();
    let inputs = inputs(command);
    cache
        .index()
        .put(&NewEntry {
            key: inputs.key(),
            pipeline: "p".into(),
            task: command.into(),
            layer,
            env: Default::default(),
            inputs: inputs.clone(),
            workspace_files: Vec::new(),
            exit_code: 0,
            duration: Duration::from_millis(5),
            log,
        })
        .unwrap();
    (inputs, layer)
}

fn boot(name: &str) -> Option<String> {
    Some(name.to_string())
}

#[test]
fn what_a_crashed_boot_never_flushed_is_dropped_with_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let cache = LocalCache::open_in_boot(dir.path(), boot("one")).unwrap();
    let (settled, settled_layer) = task(&cache, scratch.path(), "settled", "a");
    assert!(cache.has_unsynced());
    cache.settle().unwrap();
    assert!(!cache.has_unsynced());
    let (torn, torn_layer) = task(&cache, scratch.path(), "torn", "b");
    assert!(cache.has_unsynced(), "a new layer is noted as unsynced");
    // Usable at once, in this boot.
    assert!(cache.index().lookup(&torn.key()).unwrap().is_some());
    assert!(cache.layers().has(&torn_layer));
    drop(cache);

    // The same boot (another process): nothing is lost.
    let cache = LocalCache::open_in_boot(dir.path(), boot("one")).unwrap();
    assert!(cache.index().lookup(&torn.key()).unwrap().is_some());
    drop(cache);

    // The machine went down before anything flushed the second layer.
    let cache = LocalCache::open_in_boot(dir.path(), boot("two")).unwrap();
    assert!(
        cache.index().lookup(&torn.key()).unwrap().is_none(),
        "an entry naming a torn layer survived"
    );
    assert!(
        !cache.layers().has(&torn_layer),
        "the torn layer is still there"
    );
    let entry = cache
        .index()
        .lookup(&settled.key())
        .unwrap()
        .expect("the settled entry is kept");
    assert_eq!(entry.layer, settled_layer);
    assert!(cache.layers().has(&settled_layer));
    assert!(!cache.has_unsynced());
    let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(
        leftovers, 0,
        "torn objects were moved aside but not deleted"
    );
}

#[test]
fn a_torn_log_takes_its_entry_along() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let cache = LocalCache::open_in_boot(dir.path(), boot("one")).unwrap();
    // The layer was settled long ago (another task made it); this entry's log was not.
    let (_, layer) = task(&cache, scratch.path(), "first", "same");
    cache.settle().unwrap();
    let (second, second_layer) = task(&cache, scratch.path(), "second", "same");
    assert_eq!(layer, second_layer, "same content, same layer");
    drop(cache);
    let cache = LocalCache::open_in_boot(dir.path(), boot("two")).unwrap();
    assert!(cache.index().lookup(&second.key()).unwrap().is_none());
    assert!(cache.layers().has(&layer), "a settled layer is kept");
}

#[test]
fn workspace_blobs_written_after_the_last_flush_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let old = src.path().join("old");
    std::fs::write(&old, "old").unwrap();
    let cache = LocalCache::open_in_boot(dir.path(), boot("one")).unwrap();
    let digest = |p: &Path| strata_key::file_id(p).unwrap();
    cache.note_unsynced_files().unwrap();
    let old_blob = cache
        .content()
        .workspace_blob(&old, &digest(&old), 0o644)
        .unwrap();
    cache.note_unsynced_files().unwrap();
    cache.settle().unwrap();
    // ctime has one-second granularity on some filesystems.
    std::thread::sleep(Duration::from_millis(2100));
    let new = src.path().join("new");
    std::fs::write(&new, "new").unwrap();
    cache.note_unsynced_files().unwrap();
    let new_blob = cache
        .content()
        .workspace_blob(&new, &digest(&new), 0o644)
        .unwrap();
    cache.note_unsynced_files().unwrap();
    drop(cache);
    let cache = LocalCache::open_in_boot(dir.path(), boot("two")).unwrap();
    assert!(old_blob.exists(), "a flushed blob was dropped");
    assert!(!new_blob.exists(), "an unflushed blob survived the crash");
    // It comes back from the workspace when needed.
    assert_eq!(
        cache
            .content()
            .workspace_blob(&new, &digest(&new), 0o644)
            .unwrap(),
        new_blob
    );
}

#[test]
fn without_a_known_boot_publishing_flushes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let cache = LocalCache::open_in_boot(dir.path(), None).unwrap();
    let (inputs, _) = task(&cache, scratch.path(), "t", "x");
    assert!(!cache.has_unsynced());
    drop(cache);
    let cache = LocalCache::open_in_boot(dir.path(), boot("any")).unwrap();
    assert!(cache.index().lookup(&inputs.key()).unwrap().is_some());
}

#[test]
fn settling_a_cache_by_its_path_forgets_what_it_flushed_and_leaves_a_missing_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let cache = LocalCache::open(dir.path()).unwrap();
    task(&cache, scratch.path(), "t", "x");
    assert!(cache.has_unsynced(), "this machine's boot id is readable");
    drop(cache);
    LocalCache::settle_at(dir.path()).unwrap();
    assert!(!LocalCache::open(dir.path()).unwrap().has_unsynced());
    let gone = dir.path().join("deleted-cache");
    LocalCache::settle_at(&gone).unwrap();
    assert!(!gone.exists(), "settling recreated a deleted cache");
}

#[test]
fn a_layer_is_trusted_by_its_verification_not_by_its_name() {
    // Something put a directory under the name of a layer it does not hold (a restore by an
    // older version, a hand edit): the task that really produces that layer replaces it.
    let root = tempfile::tempdir().unwrap();
    let cache = LocalCache::open(root.path()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let honest = scratch.path().join("honest");
    std::fs::create_dir_all(&honest).unwrap();
    std::fs::write(honest.join("out"), "the real output").unwrap();
    let digest = strata_key::tree_digest(&honest).unwrap();
    let squatter = cache.layers().path(&digest);
    std::fs::create_dir_all(&squatter).unwrap();
    std::fs::write(squatter.join("out"), "poison").unwrap();

    assert!(
        !cache.layers().verified(&digest).unwrap(),
        "the squatter was trusted"
    );
    assert!(!squatter.exists(), "the squatter was not removed");
    std::fs::create_dir_all(&squatter).unwrap();
    std::fs::write(squatter.join("out"), "poison").unwrap();
    assert_eq!(cache.layers().commit(&honest).unwrap(), digest);
    assert_eq!(
        std::fs::read_to_string(squatter.join("out")).unwrap(),
        "the real output"
    );
    // Verified once: later checks are a lookup, not a hash.
    assert!(cache.layers().verified(&digest).unwrap());

    // An import that does not unpack to the layer it claims is refused and removed.
    let import = cache.layers().import_dir().unwrap();
    std::fs::write(import.join("out"), "something else").unwrap();
    let err = cache
        .layers()
        .publish(&import, Some(&digest), &Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("does not match its name"), "{err}");
    assert!(!import.exists());
}
