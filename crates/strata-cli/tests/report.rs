//! Output people can live with: `strata logs` of a task's latest run (failed or not), the
//! default pipeline file for every command, `--success-output`/`--failure-output`, the HTML
//! report (checked in headless Chromium) and the GitHub summary. As root.

mod common;

use std::path::Path;
use std::process::Command;

use common::Fixture;

/// deps -> build -> test (fails), lint after deps. `build` prints markup that must stay text,
/// and reads a file whose change makes it miss; `secret` reads a secret.
const PIPELINE: &str = r#"tasks:
  - key: deps
    run: echo installing deps; sleep 0.2
  - key: build
    use: deps
    filter: [src.txt]
    run: |
      cat src.txt
      echo '<script>document.title="PWNED"</script><img src=x onerror="document.title=1">'
  - key: test
    use: build
    run: |
      echo running tests
      printf '%s' '<testsuite name="unit" tests="2" failures="1"><testcase classname="unit" name="adds_numbers"/><testcase classname="unit" name="widget_breaks"><failure message="expected 2">boom</failure></testcase></testsuite>' > $RWX_TEST_RESULTS/junit.xml
      echo "assertion failed: 1 == 2" >&2
      exit 3
  - key: lint
    after: deps
    run: echo lint is clean
  - key: secret
    env:
      PASS: ${{ secrets.TOKEN }}
    run: echo "the pass is $PASS"
"#;

fn fixture() -> (Fixture, tempfile::TempDir) {
    let f = Fixture::new();
    f.write("strata.yml", PIPELINE);
    f.write("src.txt", "version 1\n");
    let out = tempfile::Builder::new()
        .prefix("strata-report-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::write(out.path().join("secrets"), "TOKEN=hunter2222\n").unwrap();
    (f, out)
}

/// Runs headless Chromium on `page` with `args` (`--dump-dom`, `--screenshot=...`).
fn chromium(page: &Path, args: &[&str]) -> std::process::Output {
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("this test needs Debian's chromium (scripts/test installs it)");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_html_report_shows_the_run_in_a_browser_and_runs_no_markup_from_tasks() {
    let (f, out) = fixture();
    let secrets = out.path().join("secrets");
    let secrets = secrets.to_str().unwrap();
    let first = out.path().join("first.html");
    let r = f.run(&["--secrets", secrets, "--report", first.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(first.is_file());
    // A changed file: `build` misses and says why; `deps` and `lint` are restored.
    f.write("src.txt", "version 2\n");
    let page = out.path().join("report.html");
    let r = f.run(&["--secrets", secrets, "--report", page.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let missed = r.event("task-missed", "build").expect("build missed");
    assert!(
        missed["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "file src.txt: content changed"),
        "{missed}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("hunter2222"),
        "a secret leaked into the report"
    );
    assert!(
        !html.contains("http://") || html.matches("http://").count() == 1,
        "only the SVG namespace, nothing fetched"
    );

    // The DOM after the page's scripts ran.
    let dom = String::from_utf8(chromium(&page, &["--dump-dom"]).stdout).unwrap();
    assert!(
        dom.contains("data-scripted=\"yes\""),
        "the page's own script ran"
    );
    assert_eq!(
        dom.matches("<script>").count(),
        1,
        "only the page's own script is an element"
    );
    assert!(
        dom.contains("<title>strata run: failed</title>"),
        "the title is the page's"
    );
    assert!(
        !dom.contains("<img src=\"x\""),
        "markup from a task's output became an element"
    );
    assert!(dom.contains("&lt;script&gt;document.title=\"PWNED\"&lt;/script&gt;"));
    for (task, status) in [
        ("deps", "restored"),
        ("build", "ran"),
        ("test", "failed"),
        ("lint", "restored"),
        ("secret", "restored"),
    ] {
        assert!(
            dom.contains(&format!(
                "id=\"task-{task}\" data-task=\"{task}\" data-status=\"{status}\""
            )),
            "task {task} as {status} in the list"
        );
        assert!(
            dom.contains(&format!("<g class=\"node\" data-task=\"{task}\"")),
            "task {task} in the DAG"
        );
        assert!(
            dom.contains(&format!("<div class=\"row\" data-task=\"{task}\"")),
            "task {task} in the timeline"
        );
    }
    // The failed task is open with its log; the changed file is why `build` ran.
    assert!(
        dom.contains("id=\"task-test\" data-task=\"test\" data-status=\"failed\" open=\"\""),
        "{dom}"
    );
    assert!(dom.contains("assertion failed: 1 == 2"));
    assert!(dom.contains("<li>file src.txt: content changed</li>"));
    assert!(dom.contains("data-slot=\"test-results\""));
    // The failing task's test results: counts, and the failing case first with its message.
    assert!(dom.contains("1 passed, 1 failed"), "{dom}");
    let failing = dom
        .find("<tr class=\"test-failed\">")
        .expect("a failing test case row");
    assert!(dom[failing..].contains("widget_breaks"), "{dom}");
    assert!(dom[failing..].contains("expected 2"), "{dom}");
    assert!(dom.contains("the pass is ***"), "the masked log is shown");
    assert!(
        dom.contains("class=\"edge after\""),
        "lint's `after` edge is drawn"
    );

    // A screenshot: a real PNG of the window's size with something drawn on it.
    let shot = out.path().join("report.png");
    chromium(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1400",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 1400));
    assert!(
        png.len() > 20_000,
        "a blank page compresses to a few kB: {}",
        png.len()
    );

    // `strata report` writes the latest run's page again, from its record.
    let again = out.path().join("again.html");
    let o = f.output(&["report", again.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let html = std::fs::read_to_string(&again).unwrap();
    assert!(html.contains("assertion failed: 1 == 2"));
    assert!(html.contains("data-status=\"ran\""));
}

#[test]
fn report_without_a_recorded_run_says_so() {
    let (f, out) = fixture();
    let o = f.output(&["report", out.path().join("r.html").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no recorded run"));
}

#[test]
fn logs_show_the_latest_run_failed_or_not_and_say_which() {
    let (f, _out) = fixture();
    f.write(
        "strata.yml",
        "tasks:\n  - key: flaky\n    filter: [mode]\n    run: echo mode $(cat mode); test \"$(cat mode)\" = good\n",
    );
    f.write("mode", "bad");
    assert_eq!(f.run(&[]).code, 1);
    // The default file; one name is the task.
    let o = f.output(&["logs", "flaky"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mode bad\n");
    let about = String::from_utf8_lossy(&o.stderr);
    assert!(
        about.contains("`flaky` failed in the run of") && about.contains("status 1"),
        "{about}"
    );

    f.write("mode", "good");
    assert_eq!(f.run(&[]).code, 0);
    let o = f.output(&["logs", "-f", "strata.yml", "flaky"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mode good\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("`flaky` passed in the run of"));

    // Restored: the log is the one of the run that built it, and it says so.
    assert_eq!(f.run(&[]).code, 0);
    let o = f.output(&["logs", "strata.yml", "flaky"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mode good\n");
    let about = String::from_utf8_lossy(&o.stderr);
    assert!(
        about.contains("was restored from the cache (local)")
            && about.contains("the run that built it"),
        "{about}"
    );

    // Failing again with the same input as the first time: that failure is the latest.
    f.write("mode", "bad");
    assert_eq!(f.run(&[]).code, 1);
    let o = f.output(&["logs", "flaky"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mode bad\n");

    // Two files named: refused.
    let o = f.output(&["logs", "strata.yml", "flaky", "-f", "strata.yml"]);
    assert_eq!(o.status.code(), Some(2));

    // A task that stores no entry keeps no log of a pass, and says so rather than show an
    // older run's log.
    f.write(
        "strata.yml",
        "tasks:\n  - key: flaky\n    cache: false\n    run: echo uncached\n",
    );
    assert_eq!(f.run(&[]).code, 0);
    let o = f.output(&["logs", "flaky"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("its log was not kept"),
        "{o:?}"
    );
}

#[test]
fn every_command_finds_the_default_pipeline_file_or_the_one_given_with_f() {
    let (f, _out) = fixture();
    f.write("strata.yml", "tasks:\n  - key: a\n    run: echo a\n");
    f.write("other.yml", "tasks:\n  - key: b\n    run: echo b\n");
    for args in [
        vec!["check"],
        vec!["check", "-f", "other.yml"],
        vec!["plan"],
        vec!["plan", "--file", "other.yml"],
        vec!["explain", "a"],
        vec!["explain", "-f", "other.yml", "b"],
        vec!["explain", "other.yml", "b"],
    ] {
        let o = f.output(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {o:?}");
    }
    assert_eq!(f.run(&["-f", "other.yml"]).status("b"), "ran");
    let o = f.output(&["logs", "-f", "other.yml", "b"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "b\n");
    let o = f.output(&["shell", "-f", "other.yml", "b", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    let o = f.output(&["plan", "strata.yml", "-f", "other.yml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn passing_output_can_be_hidden_and_failing_output_shown_at_the_end() {
    let (f, _out) = fixture();
    f.write(
        "strata.yml",
        "tasks:\n  - key: quiet\n    run: echo all good here\n  - key: loud\n    run: echo about to fail; exit 4\n",
    );
    let o = f.output(&[
        "run",
        "--success-output",
        "never",
        "--failure-output",
        "final",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("all good here"), "{err}");
    let shown = err
        .find("── output of `loud` (failed) ──")
        .unwrap_or_else(|| panic!("{err}"));
    let line = err[shown..]
        .find("loud | about to fail")
        .map(|i| i + shown)
        .unwrap_or_else(|| panic!("{err}"));
    let summary = err.find("failed: ").unwrap_or_else(|| panic!("{err}"));
    assert!(shown < line && line < summary, "{err}");

    // Shown when it fails, in full, without repeating its last lines after the failure.
    let o = f.output(&["run", "--success-output", "never"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("all good here"), "{err}");
    assert_eq!(err.matches("about to fail").count(), 1, "{err}");
    let line = err
        .find("loud | about to fail")
        .unwrap_or_else(|| panic!("{err}"));
    let failed = err.find("loud ✗ failed").unwrap_or_else(|| panic!("{err}"));
    assert!(line < failed, "{err}");

    // The default streams every task's output live, as before.
    let o = f.output(&["run", "--no-cache"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("quiet | all good here"), "{err}");
    assert!(!err.contains("── output of"), "{err}");
}

#[test]
fn on_github_actions_a_summary_is_appended_and_failures_become_annotations() {
    let (f, out) = fixture();
    let summary = out.path().join("step-summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let o = f
        .command(&[
            "run",
            "--secrets",
            out.path().join("secrets").to_str().unwrap(),
        ])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_WORKSPACE", f.ws())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("earlier step\n## strata: ❌ failed"), "{md}");
    assert!(md.contains("| `test` | ❌ failed |"), "{md}");
    assert!(md.contains("| `deps` | ✅ passed |"), "{md}");
    assert!(
        md.contains("miss: no cache entry for this task yet"),
        "{md}"
    );
    assert!(md.contains("assertion failed: 1 == 2"), "{md}");
    assert!(!md.contains("hunter2222"), "{md}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    // `test`'s `key:` is on line 10 of the file.
    assert!(
        stdout.contains(
            "::error file=strata.yml,line=10,title=strata%3A task `test` failed::command exited with status 3%0A%0Arunning tests%0Aassertion failed: 1 == 2"
        ),
        "{stdout}"
    );

    // A second run restores: its rows say so, with the time saved.
    let o = f
        .command(&[
            "run",
            "--github-summary",
            "--secrets",
            out.path().join("secrets").to_str().unwrap(),
        ])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env_remove("GITHUB_ACTIONS")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let md = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(md.matches("## strata:").count(), 2, "{md}");
    assert!(
        md.contains("| `deps` | ♻️ restored | — | hit (local) |"),
        "{md}"
    );

    // Off when asked, even on GitHub Actions.
    let o = f
        .command(&[
            "run",
            "--no-github-summary",
            "--secrets",
            out.path().join("secrets").to_str().unwrap(),
        ])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("::error"));
    assert_eq!(
        std::fs::read_to_string(&summary)
            .unwrap()
            .matches("## strata:")
            .count(),
        2
    );
}
