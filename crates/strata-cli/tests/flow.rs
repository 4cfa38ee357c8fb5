//! The control flow of a run end to end: `if:` conditions, `after:` status expressions,
//! `parallel:` tasks (written out, and expanded at run time from values), and tasks a task
//! writes into `$RWX_DYNAMIC_TASKS`. As root.

mod common;

use common::{Counter, Fixture};

fn skip_kind(r: &common::RunResult, task: &str) -> String {
    r.summary()["tasks"][task]["skip_reason"]["kind"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

#[test]
fn a_false_if_skips_the_task_and_its_subtree_and_the_run_succeeds() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: build
    run: {}
  - key: deploy
    use: build
    if: ${{{{ init.deploy == 'yes' }}}}
    run: {}
  - key: smoke
    use: deploy
    run: {}
  - key: announce
    after: [smoke]
    run: {}
  - key: lint
    run: {}
",
            c.ping("build"),
            c.ping("deploy"),
            c.ping("smoke"),
            c.ping("announce"),
            c.ping("lint")
        ),
    );
    let r = f.run(&["--init", "deploy=no"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut ran = c.take();
    ran.sort();
    assert_eq!(ran, ["build", "lint"]);
    for t in ["deploy", "smoke", "announce"] {
        assert_eq!(r.status(t), "skipped", "{t}");
    }
    assert_eq!(skip_kind(&r, "deploy"), "condition-false");
    assert_eq!(skip_kind(&r, "smoke"), "dependency-skipped-by-condition");
    assert_eq!(skip_kind(&r, "announce"), "dependency-skipped-by-condition");
    let s = r.summary();
    assert_eq!(s["skipped_by_condition"], 3);
    assert_eq!(s["skipped"], 0);
    let because = r.event("task-skipped", "deploy").unwrap()["because"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(because.contains("init.deploy == 'yes'"), "{because}");

    // True: the subtree runs; `build` is restored.
    let r = f.run(&["--init", "deploy=yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.take(), ["announce", "deploy", "smoke"]);
    assert_eq!(r.status("build"), "cached");
}

#[test]
fn an_if_reads_the_values_of_the_task_it_depends_on() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: detect
    run: echo false > $RWX_VALUES/changed
  - key: publish
    if: ${{ tasks.detect.values.changed == 'true' }}
    run: echo publishing
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("detect"), "ran");
    assert_eq!(skip_kind(&r, "publish"), "condition-false");
    assert!(r.output("publish").is_empty());
}

#[test]
fn a_notifier_after_a_failure_runs_and_the_run_still_fails() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: test
    run: exit 3
  - key: notify-failure
    after: ${{{{ test.failed }}}}
    run: {}
  - key: notify-success
    after: ${{{{ test.succeeded }}}}
    run: {}
  - key: deploy
    use: test
    run: {}
",
            c.ping("notify-failure"),
            c.ping("notify-success"),
            c.ping("deploy")
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "the failed task fails the run: {}", r.stderr);
    assert_eq!(c.take(), ["notify-failure"]);
    assert_eq!(r.status("test"), "failed");
    assert_eq!(r.status("notify-failure"), "ran");
    assert_eq!(skip_kind(&r, "notify-success"), "condition-false");
    assert_eq!(skip_kind(&r, "deploy"), "dependency-failed");
    let because = r.event("task-skipped", "notify-success").unwrap()["because"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(because.contains("test.succeeded"), "{because}");
}

#[test]
fn check_points_at_unknown_tasks_and_statuses_in_after_expressions() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: build
    run: 'true'
  - key: notify
    after: ${{ biuld.failed || build.finished }}
    run: 'true'
",
    );
    let out = f.output(&["check", "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown task `biuld`"), "{stderr}");
    assert!(stderr.contains("strata.yml:5:16"), "{stderr}");
    assert!(stderr.contains("did you mean `build`?"), "{stderr}");
    assert!(
        stderr.contains("`build.finished` is not a task status"),
        "{stderr}"
    );
    assert!(stderr.contains("strata.yml:5:32"), "{stderr}");
}

#[test]
fn a_matrix_runs_every_combination_and_dependents_use_them_all() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: build
    parallel:
      key: build-${{ parallel.os }}-${{ parallel.arch }}
      matrix:
        os: [linux, mac]
        arch: [x86, arm]
    run: |
      echo \"${{ parallel.os }}/${{ parallel.arch }} $RWX_PARALLEL_INDEX of $RWX_PARALLEL_TOTAL\"
      echo ${{ parallel.index }} > out-${{ parallel.os }}-${{ parallel.arch }}
  - key: package
    use: build
    run: cat out-* | sort | tr '\\n' ' '
  - key: report
    after: ${{ build.succeeded }}
    run: echo all built
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("build-linux-x86"), ["linux/x86 0 of 4"]);
    assert_eq!(r.output("build-linux-arm"), ["linux/arm 1 of 4"]);
    assert_eq!(r.output("build-mac-x86"), ["mac/x86 2 of 4"]);
    assert_eq!(r.output("build-mac-arm"), ["mac/arm 3 of 4"]);
    assert_eq!(
        r.output("package"),
        ["0 1 2 3 "],
        "the layers of every generated task"
    );
    assert_eq!(r.output("report"), ["all built"]);
    assert_eq!(r.summary()["ran"], 6);
    let r = f.run(&[]);
    assert_eq!(r.summary()["cached"], 6, "{}", r.stderr);
}

#[test]
fn parallel_total_and_values_name_their_tasks() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: shard
    parallel: 3
    run: echo ${{ parallel.index }}/${{ parallel.total }}
  - key: deploy
    parallel:
      values:
        - {region: eu, size: 2}
        - {region: us, size: 5}
    run: echo ${{ parallel.region }} ${{ parallel.size }}
",
    );
    let r = f.run(&["--target", "deploy"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("deploy-0"), ["eu 2"]);
    assert_eq!(r.output("deploy-1"), ["us 5"]);
    assert_eq!(r.status("shard-0"), "absent", "not a target");
    let r = f.run(&[]);
    assert_eq!(r.output("shard-2"), ["2/3"]);
}

#[test]
fn check_refuses_bad_parallel_tasks_at_their_line() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: a
    parallel:
      key: same
      total: 2
    run: 'true'
  - key: b
    parallel:
      total: 2
      matrix: {x: [1]}
    run: echo ${{ parallel.y }}
",
    );
    let out = f.output(&["check", "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("two generated tasks have the key `same`"),
        "{stderr}"
    );
    assert!(stderr.contains("strata.yml:3:5"), "{stderr}");
    assert!(stderr.contains("give only one of them"), "{stderr}");
    assert!(stderr.contains("strata.yml:8:5"), "{stderr}");
    assert!(stderr.contains("`parallel.y` is not defined"), "{stderr}");
}
