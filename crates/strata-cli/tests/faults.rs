//! Kills, interrupts and bad input: nothing half-done may be visible afterwards.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Fixture, host_mounts_mentioning, processes_with};

/// Starts `strata run --json` and returns once the task `task` has started.
fn start_and_wait_for(f: &Fixture, task: &str) -> std::process::Child {
    let mut child = f
        .command(&["run", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "task `{task}` never started");
        let line = lines
            .next()
            .expect("strata ended before the task started")
            .unwrap();
        if line.contains("\"task-started\"") && line.contains(&format!("\"task\":\"{task}\"")) {
            break;
        }
    }
    // Keep draining so strata never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    // Let the command get going inside the sandbox.
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn plan_status(f: &Fixture, task: &str) -> String {
    let out = f.output(&["plan", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == task)
        .map(|r| r["status"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn sigkill_mid_task_leaves_no_mounts_no_processes_and_no_entry() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: quick\n    run: echo done > /quick\n  - key: slow\n    run: echo partial > /partial; sleep 5551\n",
    );
    let mut child = start_and_wait_for(&f, "slow");
    assert!(
        !processes_with("sleep 5551").is_empty(),
        "the task should be running"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        processes_with("sleep 5551").is_empty(),
        "the task outlived strata"
    );
    let cache = f.cache.path().to_str().unwrap().to_string();
    assert!(
        host_mounts_mentioning(&cache).is_empty(),
        "mounts left behind"
    );
    assert_eq!(
        plan_status(&f, "slow"),
        "miss",
        "a killed task must not be cached"
    );

    // The next run cleans the dead run's scratch and uses nothing from it.
    f.write(
        "strata.yml",
        "tasks:\n  - key: quick\n    run: echo done > /quick\n  - key: slow\n    run: test ! -e /partial && echo clean\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("slow"), vec!["clean"]);
    let runs: Vec<_> = std::fs::read_dir(f.cache.path().join("runs"))
        .unwrap()
        .collect();
    assert!(runs.is_empty(), "stale run dirs remain: {runs:?}");
}

#[test]
fn sigint_stops_the_run_and_kills_the_tasks() {
    let f = Fixture::new();
    f.write("strata.yml", "tasks:\n  - key: slow\n    run: sleep 5552\n  - key: next\n    use: [slow]\n    run: true\n");
    let mut child = start_and_wait_for(&f, "slow");
    // SAFETY: kill(2) on our own child.
    unsafe { kill(child.id() as i32, 2) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(200));
    assert!(processes_with("sleep 5552").is_empty());
    assert!(host_mounts_mentioning(f.cache.path().to_str().unwrap()).is_empty());
    assert_eq!(plan_status(&f, "slow"), "miss");
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Every bad-input case: exit code 2, a message naming file, line and column, and no cache
/// directory created or touched.
#[test]
fn bad_pipelines_are_rejected_with_positions_and_touch_nothing() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "tasks:\n  - key: a\n    run: x\n    filtr: [a]\n",
            "did you mean `filter`?",
            "strata.yml:4:5",
        ),
        (
            "tasks:\n  - key: a\n    run: x\n  - key: a\n    run: y\n",
            "duplicate task key `a`",
            "strata.yml:4:5",
        ),
        (
            "tasks:\n  - key: a\n    use: [b]\n    run: x\n",
            "unknown task `b`",
            "strata.yml:3:11",
        ),
        (
            "tasks:\n  - key: a\n    after: [zz]\n    run: x\n",
            "unknown task `zz`",
            "strata.yml:3:13",
        ),
        (
            "tasks:\n  - key: a\n    use: [b]\n    run: x\n  - key: b\n    use: [a]\n    run: x\n",
            "cycle: a -> b -> a",
            "strata.yml:2:5",
        ),
        (
            "tasks:\n  - key: a\n    run: x\n    filter: [\"[\"]\n",
            "invalid filter pattern",
            "strata.yml:4:14",
        ),
        (
            "tasks:\n  - key: a\n    run: x\n    timeout: [1]\n",
            "`timeout` must be a string",
            "strata.yml:4:14",
        ),
        (
            "tasks:\n  - key: a\n    run: 'x\n",
            "invalid YAML",
            "strata.yml:",
        ),
        (
            "base:\n  image: Registry.example/Bad Name\ntasks:\n  - key: a\n    run: x\n",
            "invalid image reference",
            "strata.yml:2:",
        ),
        (
            "cache:\n  - ftp://example/cache\ntasks:\n  - key: a\n    run: x\n",
            "shared cache: invalid cache `ftp://example/cache`",
            "strata.yml:2:5",
        ),
        (
            "cache:\n  - s3://bucket,readonly\ntasks:\n  - key: a\n    run: x\n",
            "unknown access `readonly`",
            "strata.yml:2:5",
        ),
    ];
    for (yaml, message, position) in cases {
        let f = Fixture::new();
        f.write("strata.yml", yaml);
        let cache = f.cache.path().join("never-created");
        for args in [
            vec!["check", "strata.yml"],
            vec!["run", "strata.yml"],
            vec!["plan", "strata.yml"],
        ] {
            let out = f
                .command(&args)
                .env("STRATA_CACHE_DIR", &cache)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} on {yaml:?}: {stderr}");
            assert!(
                stderr.contains(message),
                "{args:?}: expected {message:?} in:\n{stderr}"
            );
            assert!(
                stderr.contains(position),
                "{args:?}: expected {position:?} in:\n{stderr}"
            );
            assert!(!cache.exists(), "bad input must not touch the cache");
        }
    }
}

#[test]
fn an_unknown_target_is_refused_before_the_cache_is_opened() {
    let f = Fixture::new();
    f.write("strata.yml", "tasks:\n  - key: a\n    run: x\n");
    let cache = f.cache.path().join("never-created");
    for args in [
        vec!["run", "strata.yml", "--target", "nosuch"],
        vec!["plan", "strata.yml", "--target", "nosuch"],
        vec!["explain", "strata.yml", "nosuch"],
        vec!["logs", "strata.yml", "nosuch"],
    ] {
        let out = f
            .command(&args)
            .env("STRATA_CACHE_DIR", &cache)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("no task named `nosuch`"), "{stderr}");
        assert!(!cache.exists(), "{args:?} opened the cache");
    }
}

#[test]
fn check_accepts_a_valid_file() {
    let f = Fixture::new();
    f.write("strata.yml", "tasks:\n  - key: a\n    run: x\n");
    let out = f.output(&["check", "strata.yml"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 tasks)"));
}

/// A run does not wait for the disk: what it published is flushed by a detached process, which
/// then forgets it (so a crash after that drops nothing).
#[test]
fn what_a_run_publishes_is_flushed_after_it_by_a_detached_process() {
    common::assert_root();
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: t\n    run: echo out > /out\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("t"), "ran");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cache = strata_store::LocalCache::open(f.cache.path()).unwrap();
        if !cache.has_unsynced() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the layer and log were never settled"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tmpfs of `mb` megabytes, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mb: u32) -> SmallDisk {
        common::assert_root();
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs failed");
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_failed_task_on_a_full_disk_does_not_wedge_the_next_run() {
    let disk = SmallDisk::new(200);
    let cache = disk.dir.path().join("cache");
    let f = Fixture::new();
    let run = |yaml: &str| {
        f.write("strata.yml", yaml);
        let out = f
            .command(&["run", "--json"])
            .env("STRATA_CACHE_DIR", &cache)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // A small failure keeps its files for inspection.
    let (code, events) = run("tasks:\n  - key: small\n    run: echo hi > /note; false\n");
    assert_eq!(code, Some(1));
    assert!(events.contains("\"kept_upper\":\"/"), "{events}");
    // A failure that filled the disk does not keep them.
    let (code, events) = run(
        "tasks:\n  - key: big\n    run: dd if=/dev/zero of=/fill bs=1M count=185 status=none; false\n",
    );
    assert_eq!(code, Some(1), "{events}");
    assert!(events.contains("\"kept_upper\":null"), "{events}");
    // The next run has room to work.
    let (code, events) = run(
        "tasks:\n  - key: next\n    run: dd if=/dev/zero of=/data bs=1M count=100 status=none\n",
    );
    assert_eq!(code, Some(0), "{events}");
}

#[test]
fn strata_failing_its_own_part_exits_3_not_1() {
    // The task passes, but the disk it filled leaves strata no room to record its result:
    // that is strata's failure, not the pipeline's.
    let disk = SmallDisk::new(64);
    let cache = disk.dir.path().join("cache");
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: a\n    run: dd if=/dev/zero of=/big bs=1M count=500 status=none || true\n",
    );
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_CACHE_DIR", &cache)
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{events}");
    assert!(events.contains("\"internal_failures\":1"), "{events}");
    // Where the full disk bites first (the log, the layer, the index) may vary.
    assert!(
        events.contains("No space left on device") || events.contains("disk is full"),
        "{events}"
    );
}

#[test]
fn a_damaged_index_exits_3_and_says_how_to_start_afresh() {
    let f = Fixture::new();
    f.write("strata.yml", "tasks:\n  - key: a\n    run: 'true'\n");
    assert_eq!(f.run(&[]).code, 0);
    // The detached flush of that run may still hold the index (and checkpoint it): let it end.
    let cache = f.cache.path().display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !common::processes_with(&cache).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let index = f.cache.path().join("index.sqlite");
    for side in ["index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(f.cache.path().join(side));
    }
    let mut bytes = std::fs::read(&index).unwrap();
    for b in bytes.iter_mut().skip(100).take(4000) {
        *b = 0xff;
    }
    std::fs::write(&index, bytes).unwrap();
    let out = f.output(&["run", "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the cache index is damaged"), "{stderr}");
    // Doing what it says works.
    std::fs::remove_file(&index).unwrap();
    assert_eq!(f.run(&[]).code, 0);
}
