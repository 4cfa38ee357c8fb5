//! A task's `outputs` and `retry` end to end, as root: artifacts copied out of a run that ran
//! and of one that restored (locally and from an S3 server), JUnit from a real pytest run,
//! retries, success exit codes, and what `outputs.filesystem` keeps out of a layer.

mod common;

use common::{CacheDir, Counter, Fixture, RunResult};

fn tests_event<'a>(r: &'a RunResult, task: &str) -> &'a serde_json::Value {
    &r.event("task-test-results", task)
        .unwrap_or_else(|| panic!("no test results for {task}: {:?}", r.events))["results"]
}

#[test]
fn artifacts_are_copied_out_of_a_run_and_of_a_restored_run() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: build
    run: |
      mkdir -p dist/sub
      echo app > dist/app.js
      echo deep > dist/sub/x
      echo v1 > /tmp/version
      mkdir -p \"$RWX_ARTIFACTS/report\"
      echo ok > \"$RWX_ARTIFACTS/report/summary.txt\"
      echo notes > \"$RWX_ARTIFACTS/notes.txt\"
    outputs:
      artifacts:
        - {key: dist, path: dist}
        - {key: version, path: /tmp/version}
",
    );
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let check = |r: &RunResult| {
        assert_eq!(r.code, 0, "{}", r.stderr);
        let read = |p: &str| std::fs::read_to_string(out.path().join(p)).unwrap();
        assert_eq!(read("build/dist/app.js"), "app\n");
        assert_eq!(read("build/dist/sub/x"), "deep\n");
        assert_eq!(read("build/version/version"), "v1\n");
        assert_eq!(read("build/report/summary.txt"), "ok\n");
        assert_eq!(read("build/notes.txt/notes.txt"), "notes\n");
        let saved = r
            .event("artifacts-saved", "build")
            .expect("artifacts-saved");
        assert_eq!(saved["artifacts"].as_array().unwrap().len(), 4);
    };
    let first = f.run(&["--artifacts", dir]);
    check(&first);
    assert_eq!(first.status("build"), "ran");
    std::fs::remove_dir_all(out.path().join("build")).unwrap();
    let second = f.run(&["--artifacts", dir]);
    assert_eq!(second.status("build"), "restored");
    check(&second);
}

#[test]
fn a_missing_artifact_fails_the_task_naming_it() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: build\n    run: 'true'\n    outputs:\n      artifacts:\n        - {key: dist, path: dist}\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let reason = r.event("task-failed", "build").unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("artifact `dist` (`dist`) not found"),
        "{reason}"
    );
}

#[test]
fn artifacts_and_test_results_travel_with_an_entry_through_s3() {
    let server = strata_testkit::Server::s3("strata-ci");
    let url = format!("s3://strata-ci/outputs?endpoint={}", server.endpoint());
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: test
    run: |
      mkdir -p out
      echo bin > out/tool
      cat > junit.xml <<'XML'
      <testsuites><testsuite name='unit'><testcase classname='calc' name='adds'/><testcase classname='calc' name='flaky_one'><skipped/></testcase></testsuite></testsuites>
      XML
    outputs:
      artifacts: [{key: tool, path: out}]
      test-results: [{path: junit.xml}]
",
    );
    let run = |cache: &std::path::Path, dir: &str| {
        let out = f
            .command(&["run", "--json", "--remote", &url, "--artifacts", dir])
            .env("STRATA_CACHE_DIR", cache)
            .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
            .output()
            .unwrap();
        RunResult::of(&out)
    };
    let (a, b) = (
        CacheDir::new("strata-cache-a-"),
        CacheDir::new("strata-cache-b-"),
    );
    let (out_a, out_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run(a.path(), out_a.path().to_str().unwrap());
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.status("test"), "ran");
    // Another machine: a fresh local cache, the entry from S3.
    let second = run(b.path(), out_b.path().to_str().unwrap());
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.status("test"), "restored");
    assert_ne!(
        second.event("task-restored", "test").unwrap()["from"],
        "local"
    );
    assert_eq!(
        std::fs::read_to_string(out_b.path().join("test/tool/tool")).unwrap(),
        "bin\n"
    );
    let results = tests_event(&second, "test");
    assert_eq!(
        (results["passed"].as_u64(), results["skipped"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn pytest_junit_is_parsed_and_failing_tests_are_named_in_the_summary() {
    let f = Fixture::new();
    assert!(
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import pytest"])
            .status()
            .unwrap()
            .success(),
        "these tests need pytest (Debian's python3-pytest): scripts/test installs it"
    );
    f.write(
        "tests/test_calc.py",
        "import pytest\n\ndef test_add():\n    assert 1 + 1 == 2\n\ndef test_sub():\n    assert 2 - 1 == 0, 'subtraction is broken'\n\n@pytest.mark.skip(reason='later')\ndef test_mul():\n    pass\n",
    );
    f.write(
        "strata.yml",
        "tasks:
  - key: test
    workspace: true
    run: /usr/bin/python3 -m pytest -p no:cacheprovider --junitxml=reports/junit.xml tests
    outputs:
      test-results:
        - path: 'reports/*.xml'
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let results = tests_event(&r, "test");
    assert_eq!(results["passed"], 1);
    assert_eq!(results["failed"], 1);
    assert_eq!(results["skipped"], 1);
    let failing = &results["cases"][0];
    assert_eq!(failing["name"], "test_sub");
    assert_eq!(failing["status"], "failed");
    assert!(
        failing["message"]
            .as_str()
            .unwrap()
            .contains("subtraction is broken"),
        "{failing}"
    );
    // The terminal summary names the failing test.
    let out = f.output(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tests: 1 passed, 1 failed, 1 skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("failing tests of test:"), "{stderr}");
    assert!(stderr.contains("✗ tests.test_calc > test_sub"), "{stderr}");
}

#[test]
fn a_cached_task_still_reports_its_tests() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: test
    run: |
      echo \"<testsuite name='s'><testcase name='a'/><testcase name='b'><failure message='known'/></testcase></testsuite>\" > \"$RWX_TEST_RESULTS/r.xml\"
",
    );
    let first = f.run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Failing tests do not fail a task whose command passed: its exit status decides.
    assert_eq!(tests_event(&first, "test")["failed"], 1);
    let second = f.run(&[]);
    assert_eq!(second.status("test"), "restored");
    let results = tests_event(&second, "test");
    assert_eq!(results["failed"], 1);
    assert_eq!(results["files"][0], "$RWX_TEST_RESULTS/r.xml");
}

#[test]
fn malformed_test_results_are_a_warning() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: t\n    run: echo '<testsuite><oops' > bad.xml\n    outputs:\n      test-results: [{path: bad.xml}]\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let warned = r.events.iter().any(|e| {
        e["event"] == "warning" && e["message"].as_str().unwrap_or("").contains("bad.xml")
    });
    assert!(warned, "{:?}", r.events);
}

#[test]
fn a_task_that_fails_once_passes_on_its_retry_and_is_cached() {
    let f = Fixture::new();
    let c = Counter::start();
    // The first attempt asks, through RWX's retry actions, for an env var the second sees.
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: flaky
    retry: {{count: 2, action: again}}
    run: |
      {}
      if [ -z \"$SECOND_TRY\" ]; then
        mkdir -p \"$RWX_RETRY_ACTIONS/again/env\"
        echo yes > \"$RWX_RETRY_ACTIONS/again/env/SECOND_TRY\"
        exit 7
      fi
      echo ok > /result
  - key: after
    use: flaky
    run: cat /result
",
            c.ping("attempt")
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.take(), vec!["attempt", "attempt"]);
    let retrying = r.event("task-retrying", "flaky").unwrap();
    assert_eq!(retrying["attempt"], 1);
    assert_eq!(retrying["attempts"], 3);
    assert_eq!(retrying["exit_code"], 7);
    let passed = r.event("task-passed-on-retry", "flaky").unwrap();
    assert_eq!(passed["attempt"], 2);
    assert_eq!(r.status("after"), "ran");
    // The passing attempt is cached under the task's key.
    let again = f.run(&[]);
    assert_eq!(again.status("flaky"), "restored");
    assert!(c.take().is_empty());
    let out = f.output(&["run", "--no-cache"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("flaky passed on attempt 2/3"), "{stderr}");
}

#[test]
fn retries_stop_at_the_count_and_nothing_is_cached() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: broken\n    retry: 1\n    run: {}; exit 3\n",
            c.ping("try")
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(c.take(), vec!["try", "try"]);
    assert_eq!(r.status("broken"), "failed");
    let r = f.run(&[]);
    assert_eq!(r.status("broken"), "failed");
    assert_eq!(c.take(), vec!["try", "try"]);
}

#[test]
fn success_exit_codes_pass_and_the_code_is_kept() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: lint
    run: echo linted > /out; exit 3
    outputs:
      execution-status:
        success-exit-codes: [3]
  - key: next
    use: lint
    run: cat /out
  - key: other
    run: exit 4
    outputs:
      execution-status:
        success-exit-codes: [3]
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status("lint"), "ran");
    assert_eq!(r.status("next"), "ran");
    assert_eq!(r.status("other"), "failed");
    let r = f.run(&["-t", "next"]);
    assert_eq!(r.status("lint"), "restored");
    // The exit code is kept in the entry, and published with it.
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let r = f.run(&["--no-cache", "--remote", &url, "-t", "lint"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let key = r.event("task-passed", "lint").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut found = None;
    for _ in 0..50 {
        if let Ok(text) = std::fs::read_to_string(remote.path().join(format!("entries/{key}.json")))
        {
            found = Some(text);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let entry: serde_json::Value = serde_json::from_str(&found.expect("entry published")).unwrap();
    assert_eq!(entry["exit_code"], 3);
}

#[test]
fn filesystem_false_hands_on_env_but_no_files() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: probe
    run: |
      echo secret > /probe-file
      echo 42 > \"$RWX_ENV/ANSWER\"
    outputs:
      filesystem: false
  - key: check
    use: probe
    run: |
      test ! -e /probe-file
      test \"$ANSWER\" = 42
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("check"), "ran");
}

#[test]
fn a_filtered_cache_directory_does_not_rerun_dependents() {
    let f = Fixture::new();
    let c = Counter::start();
    // An npm-like install: its cache directory changes on every run (timestamps), the
    // installed files do not.
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: install
    cache: false
    run: |
      mkdir -p /root/.fake-npm/_cacache /opt/app/node_modules/left-pad
      date +%s%N > /root/.fake-npm/_cacache/index-$RANDOM
      echo 'module.exports = 1' > /opt/app/node_modules/left-pad/index.js
    outputs:
      filesystem:
        filter:
          system: ['!/root/.fake-npm']
  - key: build
    use: install
    run: |
      {}
      test -f /opt/app/node_modules/left-pad/index.js
      test ! -e /root/.fake-npm
",
            c.ping("build")
        ),
    );
    let first = f.run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(c.take(), vec!["build"]);
    let second = f.run(&[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.status("install"), "ran");
    assert_eq!(
        second.status("build"),
        "restored",
        "the filtered directory re-ran the dependent"
    );
    assert!(c.take().is_empty());
}

#[test]
fn error_files_are_in_the_events_and_the_summary_of_a_failed_task() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: setup\n    run: |\n      echo 'Unsupported operating system `plan9`' > \"$(mktemp \"$RWX_ERRORS/error-XXXX\")\"\n      exit 1\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let failed = r.event("task-failed", "setup").unwrap();
    assert_eq!(failed["errors"][0], "Unsupported operating system `plan9`");
    let out = f.output(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stderr.rsplit_once("failed:").map_or("", |(_, s)| s);
    assert!(
        summary.contains("errors of setup:\n  Unsupported operating system `plan9`"),
        "{stderr}"
    );
}

#[test]
fn an_artifact_symlink_is_copied_as_a_symlink_never_followed_on_the_host() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: t\n    run: ln -s /etc \"$RWX_ARTIFACTS/hostetc\"\n",
    );
    let out = tempfile::tempdir().unwrap();
    let r = f.run(&["--artifacts", out.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let copied = out.path().join("t/hostetc/hostetc");
    let meta = copied.symlink_metadata().unwrap();
    assert!(meta.file_type().is_symlink(), "{copied:?}");
    assert!(!out.path().join("t/hostetc/passwd").exists());
}
