//! The cache's lifecycle: `strata cache ls | stats | verify | prune`, the `local.max-size`
//! budget, and pruning shared caches (S3, a directory, a registry), also while a publisher
//! writes to them.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Counter, Fixture};
use serde_json::Value;

/// `strata cache ARGS --json` on the fixture's cache: exit code and parsed output.
fn cache_json(f: &Fixture, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["cache"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = f.output(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "strata {all:?}: bad JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

/// The entries `cache ls` lists, by task.
fn entries(f: &Fixture) -> Vec<(String, Value)> {
    let (code, value) = cache_json(f, &["ls"]);
    assert_eq!(code, 0);
    value["entries"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| (e["task"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn tasks_in_cache(f: &Fixture) -> Vec<String> {
    let mut tasks: Vec<String> = entries(f).into_iter().map(|(t, _)| t).collect();
    tasks.sort();
    tasks
}

fn run_ok(f: &Fixture, extra: &[&str]) -> common::RunResult {
    let r = f.run(extra);
    assert_eq!(r.code, 0, "{}\n{:?}", r.stderr, r.events.last());
    r
}

/// Three independent tasks writing `kb` KiB each (incompressible, so sizes are predictable),
/// each pinging the counter when it really runs.
fn three_tasks(f: &Fixture, counter: &Counter, kb: u32) {
    let mut yaml = String::from("tasks:\n");
    for name in ["a", "b", "c"] {
        yaml.push_str(&format!(
            "  - key: {name}\n    run: {}; head -c {}K /dev/urandom > /{name}.bin\n",
            counter.ping(name),
            kb
        ));
    }
    f.write("strata.yml", &yaml);
}

#[test]
fn ls_and_stats_count_hits_sizes_and_time_saved() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: slow\n    run: sleep 0.3; head -c 100K /dev/urandom > /out.bin\n  - key: quick\n    use: [slow]\n    run: echo hi > /hi\n",
    );
    run_ok(&f, &[]);
    let fresh = entries(&f);
    assert_eq!(fresh.len(), 2);
    for (task, e) in &fresh {
        assert_eq!(e["hits"], 0, "{task}: {e}");
        assert_eq!(e["saved_ms"], 0, "{task}: {e}");
    }
    std::thread::sleep(Duration::from_millis(20));
    run_ok(&f, &[]);
    let r = run_ok(&f, &[]);
    assert_eq!(r.status("slow"), "restored");
    let listed = entries(&f);
    let slow = &listed.iter().find(|(t, _)| t == "slow").unwrap().1;
    assert_eq!(slow["hits"], 2, "{slow}");
    let duration = slow["duration_ms"].as_u64().unwrap();
    assert!(duration >= 300, "{slow}");
    assert_eq!(slow["saved_ms"].as_u64().unwrap(), 2 * duration);
    assert!(
        slow["last_used_at_ms"].as_u64() > slow["created_at_ms"].as_u64(),
        "{slow}"
    );
    // 100 KiB of random bytes: the layer holds at least that.
    assert!(
        slow["layer_bytes"].as_u64().unwrap() >= 100 * 1024,
        "{slow}"
    );
    let (code, stats) = cache_json(&f, &["stats"]);
    assert_eq!(code, 0);
    assert_eq!(stats["entries"], 2);
    assert_eq!(stats["layers"], 2);
    assert_eq!(stats["hits"], 4);
    assert!(stats["saved_ms"].as_u64().unwrap() >= 600, "{stats}");
    assert!(
        stats["bytes"]["layers"].as_u64().unwrap() >= 100 * 1024,
        "{stats}"
    );
    // The table, for people.
    let out = f.output(&["cache", "ls"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("TASK"), "{table}");
    assert!(table.contains("slow") && table.contains("kB"), "{table}");
}

#[test]
fn an_index_from_before_usage_tracking_is_migrated() {
    let f = Fixture::new();
    f.write("strata.yml", "tasks:\n  - key: a\n    run: echo a > /a\n");
    run_ok(&f, &[]);
    // Take the index back to the schema of the previous release.
    let db = f.cache.path().join("index.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "ALTER TABLE entries DROP COLUMN last_used_at;
         ALTER TABLE entries DROP COLUMN hits;
         ALTER TABLE verified_layers DROP COLUMN at_ms;",
    )
    .unwrap();
    drop(conn);
    let r = run_ok(&f, &[]);
    assert_eq!(r.status("a"), "restored");
    let listed = entries(&f);
    assert_eq!(listed[0].1["hits"], 1, "{:?}", listed);
}

#[test]
fn verify_finds_a_flipped_byte_and_repair_makes_the_next_run_rebuild() {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: make\n    run: {}; echo precious > /out.txt\n",
            counter.ping("make")
        ),
    );
    let r = run_ok(&f, &[]);
    assert_eq!(counter.take(), ["make"]);
    assert_eq!(r.status("make"), "ran");
    let layer = entries(&f)[0].1["layer"].as_str().unwrap().to_string();
    let (code, clean) = cache_json(&f, &["verify"]);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(clean["problems"].as_array().unwrap().len(), 0);

    let file = f.cache.path().join("layers").join(&layer).join("out.txt");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&file, bytes).unwrap();
    let (code, found) = cache_json(&f, &["verify"]);
    assert_eq!(code, 1, "{found}");
    let problems = found["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{found}");
    assert_eq!(problems[0]["kind"], "corrupt-layer");
    // Without --repair nothing changed: the entry is still there.
    assert_eq!(tasks_in_cache(&f), ["make"]);

    let (code, repaired) = cache_json(&f, &["verify", "--repair"]);
    assert_eq!(code, 0, "{repaired}");
    assert_eq!(repaired["removed_entries"][0]["task"], "make", "{repaired}");
    assert!(!f.cache.path().join("layers").join(&layer).exists());
    assert!(tasks_in_cache(&f).is_empty());

    let r = run_ok(&f, &[]);
    assert_eq!(r.status("make"), "ran");
    assert_eq!(counter.take(), ["make"]);
    let (code, after) = cache_json(&f, &["verify"]);
    assert_eq!(code, 0, "{after}");
    let good = std::fs::read_to_string(f.cache.path().join("layers").join(&layer).join("out.txt"));
    assert_eq!(good.unwrap(), "precious\n");
}

#[test]
fn prune_max_size_evicts_the_least_recently_used_and_keeps_what_the_latest_run_used() {
    let f = Fixture::new();
    let counter = Counter::start();
    three_tasks(&f, &counter, 300);
    run_ok(&f, &[]);
    assert_eq!(counter.take(), ["a", "b", "c"]);
    std::thread::sleep(Duration::from_millis(20));
    // `b` is used last, then `a`; `c` is the least recently used.
    run_ok(&f, &["--target", "a"]);
    std::thread::sleep(Duration::from_millis(20));
    run_ok(&f, &["--target", "b"]);
    // Room for two layers of 300 KiB and their logs, not three.
    let (code, report) = cache_json(&f, &["prune", "--max-size", "750KB"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["removed_entries"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(report["removed_entries"][0]["task"], "c");
    assert!(
        report["after_bytes"].as_u64().unwrap() <= 750_000,
        "{report}"
    );
    assert_eq!(tasks_in_cache(&f), ["a", "b"]);
    // Tighter: `a` goes next, `b` (used by the latest run) stays.
    let (code, report) = cache_json(&f, &["prune", "--max-size", "400KB"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(tasks_in_cache(&f), ["b"]);
    let r = run_ok(&f, &[]);
    assert_eq!(r.status("b"), "restored");
    assert_eq!(counter.take(), ["a", "c"]);
}

#[test]
fn prune_older_than_removes_entries_not_used_since() {
    let f = Fixture::new();
    let counter = Counter::start();
    three_tasks(&f, &counter, 4);
    run_ok(&f, &[]);
    std::thread::sleep(Duration::from_millis(2200));
    run_ok(&f, &["--target", "a"]);
    let (code, report) = cache_json(&f, &["prune", "--older-than", "2s"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(tasks_in_cache(&f), ["a"]);
    assert_eq!(report["layers"], 2, "{report}");
    counter.take();
    run_ok(&f, &[]);
    assert_eq!(counter.take(), ["b", "c"]);
    // Bad ages and sizes are usage errors, with nothing touched.
    for args in [
        ["prune", "--older-than", "soon"],
        ["prune", "--max-size", "lots"],
        ["prune", "--older-than", "99999999999999999999d"],
    ] {
        let out = f.output(&["cache", args[0], args[1], args[2]]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[1]), "{err}");
    }
    assert_eq!(tasks_in_cache(&f), ["a", "b", "c"]);
}

#[test]
fn a_budget_in_the_config_file_is_kept_after_each_run() {
    let f = Fixture::new();
    let counter = Counter::start();
    three_tasks(&f, &counter, 300);
    let config = f.ws().join("strata-config.yaml");
    std::fs::write(&config, "local:\n  max-size: 500KB\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--json"];
        args.extend_from_slice(extra);
        let out = f
            .command(&args)
            .env("STRATA_CONFIG", &config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["--target", "a"]);
    assert_eq!(tasks_in_cache(&f), ["a"]);
    run(&["--target", "b"]);
    assert_eq!(
        tasks_in_cache(&f),
        ["b"],
        "the budget was not kept after the run"
    );
    // One run needing more than the budget keeps all it used: it is over, and says so only
    // by what `stats` shows.
    run(&[]);
    assert_eq!(tasks_in_cache(&f), ["a", "b", "c"]);
    // A bad budget is an error at its line and column, before anything runs.
    std::fs::write(&config, "local:\n  max-size: huge\n").unwrap();
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max-size") && err.contains(":2:"), "{err}");
}

#[test]
fn prune_reclaims_orphans_stale_locks_and_extra_failed_dirs_after_the_grace_period() {
    let f = Fixture::new();
    f.write("strata.yml", "tasks:\n  - key: a\n    run: echo a > /a\n");
    run_ok(&f, &[]);
    let cache = f.cache.path();
    // An orphan layer (a run killed between commit and entry), an orphan log, a stale lock,
    // two kept failed dirs of one task.
    let orphan = cache.join("layers").join("ab".repeat(32));
    std::fs::create_dir_all(orphan.join("usr")).unwrap();
    std::fs::write(orphan.join("usr/junk"), vec![7u8; 50_000]).unwrap();
    let orphan_log = cache.join("logs").join("cd".repeat(32));
    std::fs::write(&orphan_log, "old log").unwrap();
    let lock = cache.join("locks").join("ef".repeat(32));
    std::fs::write(&lock, "").unwrap();
    let older = cache.join("failed/build-aaaaaaaaaaaa");
    std::fs::create_dir_all(&older).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let newer = cache.join("failed/build-bbbbbbbbbbbb");
    std::fs::create_dir_all(&newer).unwrap();
    // Within the grace period, what nothing names yet stays (a run may be about to name it).
    let (_, report) = cache_json(&f, &["prune"]);
    assert_eq!(report["layers"], 0, "{report}");
    assert!(orphan.exists() && orphan_log.exists());
    assert!(
        !older.exists() && newer.exists(),
        "the latest failed dir per task stays"
    );
    assert!(!lock.exists(), "an unheld lock file is removed");
    let (_, report) = cache_json(&f, &["prune", "--grace", "0s"]);
    assert_eq!(report["layers"], 1, "{report}");
    assert_eq!(report["logs"], 1, "{report}");
    assert!(!orphan.exists() && !orphan_log.exists());
    assert_eq!(tasks_in_cache(&f), ["a"]);
    let r = run_ok(&f, &[]);
    assert_eq!(r.status("a"), "restored");
}

#[test]
fn prune_during_a_run_keeps_what_the_run_uses() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: base\n    run: head -c 200K /dev/urandom > /base.bin\n  - key: slow\n    use: [base]\n    run: sleep 2; cat /base.bin | wc -c > /size\n",
    );
    run_ok(&f, &["--target", "base"]);
    let child = f
        .command(&["run", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run has restored `base` and started `slow`.
    let started = std::time::Instant::now();
    loop {
        let runs = std::fs::read_dir(f.cache.path().join("runs")).unwrap();
        if runs
            .flatten()
            .any(|r| std::fs::read_to_string(r.path().join("uses")).is_ok_and(|u| !u.is_empty()))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run never noted a layer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, report) = cache_json(&f, &["prune", "--max-size", "0", "--grace", "0s"]);
    assert_eq!(code, 0, "{report}");
    assert!(report["over_budget"].as_bool().unwrap(), "{report}");
    assert_eq!(tasks_in_cache(&f), ["base"], "{report}");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tasks_in_cache(&f), ["base", "slow"]);
    // Once no run needs them, they go.
    let (_, report) = cache_json(&f, &["prune", "--max-size", "0"]);
    assert_eq!(
        report["removed_entries"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert!(tasks_in_cache(&f).is_empty());
}

#[test]
fn cache_commands_refuse_a_directory_that_is_not_a_cache() {
    let f = Fixture::new();
    let empty = tempfile::tempdir().unwrap();
    let out = f
        .command(&["cache", "ls"])
        .env("STRATA_CACHE_DIR", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a strata cache"));
    assert!(
        !empty.path().join("index.sqlite").exists(),
        "nothing was created"
    );
}

// Shared caches.

fn with_s3_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
}

fn remote_run(f: &Fixture, url: &str) -> common::RunResult {
    let out = with_s3_env(&mut f.command(&["run", "--json", "--remote", url]))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    common::RunResult {
        code: out.status.code().unwrap_or(-1),
        events: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wall: Duration::ZERO,
    }
}

fn shared_prune(f: &Fixture, url: &str, extra: &[&str]) -> Value {
    let mut args = vec!["cache", "prune", "--json", "--remote", url];
    args.extend_from_slice(extra);
    let out = with_s3_env(&mut f.command(&args)).output().unwrap();
    assert!(
        out.status.success(),
        "prune {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    rows[0].clone()
}

/// What a shared cache holds, read with strata's own backend: entry keys (sorted), and the
/// entries that name a blob the cache does not have.
fn remote_state(url: &str) -> (Vec<String>, Vec<String>) {
    strata_testkit::use_s3_credentials();
    let backend = strata_cache::open_backend(&strata_cache::parse_spec(url).unwrap()).unwrap();
    let mut keys = Vec::new();
    let mut broken = Vec::new();
    for e in backend.list_entries().unwrap() {
        let Some(doc) = backend.entry_document(&e.name).unwrap() else {
            continue;
        };
        let entry: Value = serde_json::from_slice(&doc).unwrap();
        for digest in [&entry["archive"]["digest"], &entry["log"]["digest"]] {
            let digest = strata_oci::OciDigest::parse(digest.as_str().unwrap()).unwrap();
            if !backend.has_blob(&digest).unwrap() {
                broken.push(format!("{} names missing {digest}", entry["task"]));
            }
        }
        keys.push(e.name.to_hex());
    }
    keys.sort();
    (keys, broken)
}

fn blob_count(url: &str) -> usize {
    strata_testkit::use_s3_credentials();
    let backend = strata_cache::open_backend(&strata_cache::parse_spec(url).unwrap()).unwrap();
    backend.list_blobs().unwrap().map_or(0, |b| b.len())
}

/// Two tasks published, then (after `--older-than`) one of them changed and published again:
/// the prune takes the old entries and, but for a registry, their blobs; a fresh machine
/// restores what is left and runs the rest.
fn old_entries_and_their_blobs_go(url: &str, sweeps_blobs: bool) {
    let f = Fixture::new();
    let counter = Counter::start();
    let write = |version: &str| {
        f.write(
            "strata.yml",
            &format!(
                "tasks:\n  - key: keep\n    run: {}; head -c 9M /dev/urandom > /big.bin\n  - key: change\n    run: {}; echo {version} > /v\n",
                counter.ping("keep"),
                counter.ping("change"),
            ),
        )
    };
    write("v1");
    let r = remote_run(&f, url);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (published, broken) = remote_state(url);
    assert_eq!(published.len(), 2);
    assert!(broken.is_empty(), "{broken:?}");
    let blobs_before = blob_count(url);
    std::thread::sleep(Duration::from_millis(2500));
    write("v2");
    let r = remote_run(&f, url);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("keep"), "restored");
    counter.take();
    let (all, _) = remote_state(url);
    assert_eq!(all.len(), 3);
    // Nothing is old enough yet: nothing goes.
    let report = shared_prune(&f, url, &["--older-than", "1h", "--grace", "0s"]);
    assert_eq!(report["removed_entries"], 0, "{report}");
    assert_eq!(report["blobs"], 0, "{report}");
    let report = shared_prune(&f, url, &["--older-than", "2s", "--grace", "0s"]);
    assert_eq!(report["removed_entries"], 2, "{report}");
    let (left, broken) = remote_state(url);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!published.contains(&left[0]), "the new entry stays");
    assert!(broken.is_empty(), "{broken:?}");
    if sweeps_blobs {
        // The 9 MB archive of `keep` and the old archive of `change` (the logs are empty, and
        // the one log blob stays named by the new entry).
        assert!(report["blobs"].as_u64().unwrap() >= 2, "{report}");
        assert!(
            report["blob_bytes"].as_u64().unwrap() >= 9 << 20,
            "{report}"
        );
        assert!(blob_count(url) < blobs_before, "{report}");
    } else {
        assert_eq!(report["server_collects_blobs"], true, "{report}");
    }
    // A new machine: `change` restored, `keep` built.
    let other = Fixture::new();
    other.write(
        "strata.yml",
        &std::fs::read_to_string(f.pipeline()).unwrap(),
    );
    let r = remote_run(&other, url);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("change"), "restored");
    assert_eq!(r.status("keep"), "ran");
}

#[test]
fn shared_prune_of_a_directory_removes_old_entries_blobs_and_abandoned_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    old_entries_and_their_blobs_go(&url, true);
    // An upload a killed publisher left in tmp/: removed after the grace period.
    let f = Fixture::new();
    let stale = dir.path().join("tmp/4242.0");
    std::fs::write(&stale, vec![1u8; 4096]).unwrap();
    let report = shared_prune(&f, &url, &[]);
    assert_eq!(
        report["abandoned_upload_objects"], 0,
        "young: kept {report}"
    );
    let old = ago(7200);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let report = shared_prune(&f, &url, &[]);
    assert_eq!(report["abandoned_upload_objects"], 1, "{report}");
    assert!(!stale.exists());
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn ago(secs: u64) -> std::time::SystemTime {
    std::time::SystemTime::now() - Duration::from_secs(secs)
}

#[test]
fn shared_prune_of_s3_removes_old_entries_streamed_blobs_and_orphan_chunks() {
    let server = strata_testkit::Server::s3("strata-ci");
    let url = format!("s3://strata-ci/team?endpoint={}", server.endpoint());
    old_entries_and_their_blobs_go(&url, true);
    // Chunks of an upload that never published its list (a killed publisher).
    let bucket = server.dir.path().join("strata-ci/team/chunks/dead-upload");
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::write(bucket.join("1"), vec![0u8; 1000]).unwrap();
    let f = Fixture::new();
    let report = shared_prune(&f, &url, &[]);
    assert_eq!(
        report["abandoned_upload_objects"], 0,
        "young: kept {report}"
    );
    let report = shared_prune(&f, &url, &["--grace", "0s"]);
    assert_eq!(report["abandoned_upload_objects"], 1, "{report}");
    assert!(!bucket.join("1").exists());
    // The 9 MB archive went up as chunks, twice (the second machine published `keep` again):
    // the chunks of the deleted one went with its list.
    let chunks = walk_files(&server.dir.path().join("strata-ci/team/chunks"));
    let uploads: std::collections::BTreeSet<_> = chunks.iter().filter_map(|c| c.parent()).collect();
    assert_eq!(uploads.len(), 1, "{chunks:?}");
    let (_, broken) = remote_state(&url);
    assert!(broken.is_empty(), "{broken:?}");
}

#[test]
fn shared_prune_of_a_registry_deletes_old_entry_manifests() {
    let server = strata_testkit::Server::registry();
    let url = format!("oci://{}/strata-cache", server.host());
    old_entries_and_their_blobs_go(&url, false);
    // Sizes are the registry's business: pruning to one is refused, and nothing goes.
    let before = remote_state(&url).0;
    let f = Fixture::new();
    let out = f
        .command(&["cache", "prune", "--remote", &url, "--max-size", "1KB"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--older-than"), "{err}");
    assert_eq!(remote_state(&url).0, before);
}

/// A publisher keeps publishing new entries while prunes run: with the default grace period
/// nothing it publishes is lost; with none at all (blobs deleted the moment nothing names
/// them), entries may be withdrawn, but none is ever left naming a missing blob.
fn prune_racing_publishers(url: &str) {
    let f = Fixture::new();
    let rounds = 4;
    let publish = |round: usize, f: &Fixture| {
        f.write(
            "strata.yml",
            &format!(
                "tasks:\n  - key: a\n    run: echo {round} > /a; head -c 200K /dev/urandom > /r\n  - key: b\n    use: [a]\n    run: echo {round} > /b\n"
            ),
        );
        let r = remote_run(f, url);
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    let race = |grace: &'static str| {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut args = vec!["cache", "prune", "--remote", url, "--grace", grace];
                    if grace == "0s" {
                        args.extend(["--older-than", "1h"]);
                    }
                    let out = with_s3_env(&mut f.command(&args)).output().unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
            for round in 0..rounds {
                let machine = Fixture::new();
                publish(round, &machine);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    };
    race("1h");
    let (keys, broken) = remote_state(url);
    assert!(broken.is_empty(), "{broken:?}");
    assert_eq!(keys.len(), 2 * rounds, "an entry was lost: {keys:?}");
    race("0s");
    let (_, broken) = remote_state(url);
    assert!(broken.is_empty(), "entries name missing blobs: {broken:?}");
}

#[test]
fn prune_racing_a_publish_loses_nothing_on_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    prune_racing_publishers(&format!("file://{}", dir.path().display()));
}

#[test]
fn prune_racing_a_publish_loses_nothing_on_s3() {
    let server = strata_testkit::Server::s3("strata-ci");
    prune_racing_publishers(&format!(
        "s3://strata-ci/race?endpoint={}",
        server.endpoint()
    ));
}

#[test]
fn shared_prune_refuses_bad_urls_and_read_only_caches() {
    let f = Fixture::new();
    for url in ["ftp://x", "/srv/cache,ro", "oci://nohost"] {
        let out = f.output(&["cache", "prune", "--remote", url]);
        assert_eq!(out.status.code(), Some(2), "{url}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error"),
            "{url}"
        );
    }
}
