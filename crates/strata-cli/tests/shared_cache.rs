//! Several strata processes on one cache directory, and the example pipeline from the README.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{Counter, Fixture, strata};

#[test]
fn concurrent_misses_of_one_key_run_it_once() {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: slow\n    run: {}; sleep 1; echo done > /out\n  - key: after\n    use: [slow]\n    run: cat /out\n",
            counter.ping("slow")
        ),
    );
    let children: Vec<_> = (0..4)
        .map(|_| {
            f.command(&["run", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut waited = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        waited += stdout
            .lines()
            .filter(|l| l.contains("\"task-waiting\""))
            .count();
    }
    assert_eq!(counter.take(), vec!["slow"], "the task ran more than once");
    assert!(waited >= 1, "no run reported waiting for the key");
}

#[test]
fn two_processes_share_one_cache_at_once() {
    let f = Fixture::new();
    let mut yaml = String::from("tasks:\n");
    for i in 0..6 {
        yaml.push_str(&format!(
            "  - key: t{i}\n    run: sleep 0.2; echo {i} > /out{i}\n"
        ));
    }
    yaml.push_str("  - key: all\n    use: [t0, t1, t2, t3, t4, t5]\n    run: cat /out0 /out5\n");
    f.write("strata.yml", &yaml);
    let spawn = || {
        f.command(&["run", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = f.run(&[]);
    assert_eq!(r.code, 0);
    for i in 0..6 {
        assert_eq!(r.status(&format!("t{i}")), "restored");
    }
    assert_eq!(r.status("all"), "restored");
    let layers = std::fs::read_dir(f.cache.path().join("layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 7, "identical results share one layer each");
    let tmp = std::fs::read_dir(f.cache.path().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "no temp files left behind");
}

#[test]
fn the_example_pipeline_builds_tests_and_is_then_fully_restored() {
    common::assert_root();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wordfreq/strata.yml");
    let cache = common::CacheDir::new("strata-cache-");
    let artifacts = tempfile::tempdir().unwrap();
    let run = || {
        let out = strata()
            .args(["run", "--json", "--artifacts"])
            .arg(artifacts.path())
            .arg(&example)
            .env("STRATA_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        (stdout, summary)
    };
    let (first, summary) = run();
    assert_eq!(summary["ran"], 7, "{first}");
    assert!(first.contains("ok   tests/animals.in"), "{first}");
    assert!(first.contains("lint clean"), "{first}");
    let tarball = artifacts.path().join("package/tarball/wordfreq.tar.gz");
    assert!(tarball.is_file(), "{first}");
    assert!(
        first.contains(r#""event":"task-test-results","task":"test""#),
        "{first}"
    );
    // The integration task's PostgreSQL server, a background process.
    assert!(
        first.contains("postgres holds 5 words, wordfreq printed 5"),
        "{first}"
    );
    assert!(first.contains("[postgres] "), "{first}");
    std::fs::remove_file(&tarball).unwrap();
    let (again, summary) = run();
    assert_eq!(summary["ran"], 0);
    assert_eq!(summary["restored"], 7);
    // Restored: the artifact is copied again and the tests are reported again.
    assert!(tarball.is_file(), "{again}");
    let tests = again
        .lines()
        .find(|l| l.contains(r#""event":"task-test-results""#))
        .expect("the restored test task reports its tests");
    let tests: serde_json::Value = serde_json::from_str(tests).unwrap();
    assert_eq!(tests["results"]["passed"], 2, "{tests}");
}
