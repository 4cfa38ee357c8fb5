//! The workspace file list an entry records: read back as written (for `explain` and a miss's
//! reasons), keeping the blobs it names through a prune, and never guessed at when it cannot be
//! read.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_key::{
    BaseId, FileKind, KEY_VERSION, KeyInputs, Workspace, WorkspaceDigest, WorkspaceFile,
};
use strata_store::{LocalCache, NewEntry, PruneOptions};

#[test]
fn a_recorded_list_reads_back_keeps_its_blobs_and_a_damaged_one_stops_the_prune() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let cache = LocalCache::open(dir.path()).unwrap();
    // Two workspace files, one kept as a blob for a task's tree.
    std::fs::write(src.path().join("a.c"), "int a;\n").unwrap();
    std::os::unix::fs::symlink("a.c", src.path().join("link")).unwrap();
    let ws = Workspace::capture(src.path(), &[]).unwrap();
    let files: Vec<WorkspaceFile> = ws.files.clone();
    assert_eq!(files.len(), 2);
    let FileKind::File { digest, .. } = &files[0].kind else {
        panic!("{files:?}")
    };
    let blob = cache
        .content()
        .workspace_blob(&src.path().join("a.c"), digest, files[0].mode)
        .unwrap();

    let upper = src.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    let layer = cache.layers().commit(&upper).unwrap();
    let log = cache.content().put_log(b"log\n").unwrap();
    cache.sync().unwrap();
    let inputs = KeyInputs {
        version: KEY_VERSION,
        base: BaseId::from_hash(blake3::hash(b"base")),
        parents: Vec::new(),
        workspace: WorkspaceDigest::from_hash(blake3::hash(b"ws")),
        env: BTreeMap::new(),
        command: "build".into(),
        executor: "sandbox/1".into(),
        artifacts: Vec::new(),
    };
    let key = inputs.key();
    cache
        .index()
        .put(&NewEntry {
            key,
            pipeline: "p".into(),
            task: "build".into(),
            layer,
            env: Default::default(),
            inputs,
            workspace_files: files.clone(),
            exit_code: 0,
            duration: Duration::from_millis(5),
            log,
        })
        .unwrap();
    let entry = cache.index().lookup(&key).unwrap().unwrap();
    assert_eq!(
        cache
            .index()
            .recorded_inputs(&entry)
            .unwrap()
            .workspace_files,
        files
    );

    // The list names the blob: a prune keeps it.
    cache.prune(&PruneOptions::default()).unwrap();
    assert!(blob.exists(), "a blob the recorded list names was pruned");

    // A list that cannot be read: explain says so, and the prune stops rather than take the
    // blobs it may name.
    drop(cache);
    let conn = rusqlite::Connection::open(dir.path().join("index.sqlite")).unwrap();
    conn.execute("UPDATE workspaces SET files = x'53574c31ffff'", [])
        .unwrap();
    drop(conn);
    let cache = LocalCache::open(dir.path()).unwrap();
    let entry = cache.index().lookup(&key).unwrap().unwrap();
    let err = cache.index().recorded_inputs(&entry).unwrap_err();
    assert!(err.to_string().contains("unreadable"), "{err}");
    let err = cache.prune(&PruneOptions::default()).unwrap_err();
    assert!(err.to_string().contains("unreadable"), "{err}");
    assert!(blob.exists(), "a damaged list let its blob go");
}
