//! The control flow of a run end to end: `if:` conditions, `after:` status expressions,
//! `parallel:` tasks (written out, and expanded at run time from values), and tasks a task
//! writes into `$RWX_DYNAMIC_TASKS`. As root.

mod common;

use common::{CacheDir, Counter, Fixture};

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
    assert_eq!(r.status("build"), "restored");
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
    assert_eq!(r.summary()["restored"], 6, "{}", r.stderr);
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

#[test]
fn values_written_by_a_task_expand_a_parallel_task_at_run_time() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: plan
    run: |
      echo '[{{\"suite\":\"unit\",\"shards\":\"1\"}},{{\"suite\":\"e2e\",\"shards\":\"2\"}}]' > $RWX_VALUES/suites
      echo 3 > $RWX_VALUES/count
  - key: test
    parallel:
      key: test-${{{{ parallel.suite }}}}
      values: ${{{{ tasks.plan.values.suites }}}}
    run: |
      echo ${{{{ parallel.suite }}}} ${{{{ parallel.shards }}}} $RWX_PARALLEL_INDEX/$RWX_PARALLEL_TOTAL > result-${{{{ parallel.suite }}}}
      {}
  - key: shard
    parallel: ${{{{ tasks.plan.values.count }}}}
    run: echo shard ${{{{ parallel.index }}}} of ${{{{ parallel.total }}}}
  - key: report
    use: test
    run: cat result-*
  - key: after-shards
    after: ${{{{ shard.succeeded }}}}
    run: echo shards done
",
            c.ping("test-${{ parallel.suite }}")
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let added = r
        .events
        .iter()
        .find(|e| e["event"] == "tasks-added" && e["by"] == "test")
        .expect("a tasks-added event for `test`");
    assert_eq!(added["tasks"], serde_json::json!(["test-unit", "test-e2e"]));
    assert_eq!(r.output("report"), ["e2e 2 1/2", "unit 1 0/2"]);
    assert_eq!(r.output("shard-2"), ["shard 2 of 3"]);
    assert_eq!(r.output("after-shards"), ["shards done"]);
    let mut ran = c.take();
    ran.sort();
    assert_eq!(ran, ["test-e2e", "test-unit"]);
    // plan, 2 tests, 3 shards, report, after-shards.
    assert_eq!(r.summary()["ran"], 8, "{}", r.summary());

    // Nothing changed: the expansion is the same and every task is restored.
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.summary()["ran"], 0, "{}", r.summary());
    assert_eq!(r.summary()["restored"], 8);
    assert!(c.take().is_empty());
}

#[test]
fn plan_shows_a_parallel_task_pending_expansion() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: plan
    run: echo '[\"a\",\"b\"]' > $RWX_VALUES/names
  - key: each
    parallel:
      matrix:
        name: ${{ tasks.plan.values.names }}
    run: echo ${{ parallel.name }}
",
    );
    let out = f.output(&["plan", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let each = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "each")
        .unwrap();
    assert_eq!(each["status"], "pending-expansion");
    let out = f.output(&["plan"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pending expansion"));
    // Once run, the matrix dimension came from the values.
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("each-0"), ["a"]);
    assert_eq!(r.output("each-1"), ["b"]);
}

#[test]
fn expressions_in_a_list_written_out_and_in_the_key_are_read_at_run_time() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: versions
    run: echo 22 > $RWX_VALUES/node
  - key: test
    parallel:
      key: test-${{ init.os }}-node-${{ parallel.node }}
      matrix:
        node: [20, \"${{ tasks.versions.values.node }}\"]
        os: [\"${{ init.os }}\"]
    run: echo node ${{ parallel.node }} on ${{ parallel.os }}
",
    );
    let r = f.run(&["--init", "os=linux"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("test-linux-node-20"), ["node 20 on linux"]);
    assert_eq!(r.output("test-linux-node-22"), ["node 22 on linux"]);
}

#[test]
fn a_bad_runtime_expansion_fails_the_parallel_task_with_the_reason() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: plan
    run: echo 'not json' > $RWX_VALUES/list
  - key: each
    parallel:
      values: ${{ tasks.plan.values.list }}
    run: echo never
  - key: after-each
    use: each
    run: echo never
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status("each"), "failed");
    let reason = r.event("task-failed", "each").unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("expected a JSON list"), "{reason}");
    assert_eq!(skip_kind(&r, "after-each"), "dependency-failed");
}

const GENERATOR: &str = "tasks:
  - key: code
    run: mkdir -p src && echo 'int main;' > src/main.c
  - key: generate
    run: |
      for t in one two; do
        cat >> $RWX_DYNAMIC_TASKS/tests.yml <<EOF
      - key: test-$t
        use: code
        run: echo test-$t sees \\$(cat src/main.c)
      EOF
      done
      printf -- '- key: summary\\n  after: \\${{ test-one.succeeded && test-two.succeeded }}\\n  run: echo all tests passed\\n' > $RWX_DYNAMIC_TASKS/summary.yml
";

#[test]
fn tasks_written_into_rwx_dynamic_tasks_join_the_run_and_come_back_from_the_cache() {
    let remote = CacheDir::new("strata-remote-");
    let url = format!("file://{}", remote.path().display());
    let f = Fixture::new();
    f.write("strata.yml", GENERATOR);
    let r = f.run(&["--remote", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("test-one"), ["test-one sees int main;"]);
    assert_eq!(r.output("test-two"), ["test-two sees int main;"]);
    assert_eq!(r.output("summary"), ["all tests passed"]);
    let added = r
        .events
        .iter()
        .find(|e| e["event"] == "tasks-added" && e["by"] == "generate")
        .expect("a tasks-added event");
    assert_eq!(added["file"], "summary.yml, tests.yml");
    assert_eq!(
        added["tasks"],
        serde_json::json!(["test-one", "test-two", "summary"]),
        "in dependency order"
    );

    // The generator is restored: its tasks come back with it, and are restored too.
    let r = f.run(&["--remote", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("generate"), "restored");
    assert_eq!(r.status("test-one"), "restored");
    assert_eq!(r.status("summary"), "restored");
    assert_eq!(r.summary()["ran"], 0);

    // Another machine: the generator comes from the shared cache, with its task files.
    let g = Fixture::new();
    g.write("strata.yml", GENERATOR);
    let r = g.run(&["--remote", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("generate"), "restored");
    assert_eq!(r.status("test-two"), "restored");
    assert_eq!(r.summary()["restored"], 5, "{}", r.summary());
}

#[test]
fn a_bad_dynamic_tasks_file_fails_its_generator_naming_the_file() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: generate
    run: |
      printf -- '- key: t\\n  use: nope\\n  run: echo hi\\n' > $RWX_DYNAMIC_TASKS/bad.yml
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status("generate"), "failed");
    assert_eq!(r.summary()["failed"], 1);
    assert_eq!(r.summary()["ran"], 0);
    let failed = r.event("task-failed", "generate").unwrap();
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("$RWX_DYNAMIC_TASKS"),
        "{failed}"
    );
    let detail = failed["log_tail"].to_string();
    assert!(detail.contains("unknown task `nope`"), "{detail}");
    assert!(
        detail.contains("bad.yml (written by `generate`):2:8"),
        "{detail}"
    );
    assert_eq!(r.status("t"), "absent");
}
