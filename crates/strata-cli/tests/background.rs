//! `background-processes`: real services (PostgreSQL from Debian's `postgresql` package) started
//! in the task's sandbox before its command, ready checks, the SIGTERM/SIGKILL stop, and their
//! prefixed output in the task's log. As root, on real namespaces and overlays.

mod common;

use std::time::Duration;

use common::{Fixture, RunResult, processes_with};

/// Debian's PostgreSQL server binaries (`postgresql` in scripts/test).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn assert_postgres() {
    assert!(
        std::path::Path::new(PG_BIN).join("postgres").exists(),
        "this test needs PostgreSQL 15's server in {PG_BIN} (Debian's `postgresql` package)"
    );
    assert!(
        std::path::Path::new("/usr/bin/pg_isready").exists(),
        "this test needs pg_isready (Debian's `postgresql-client`)"
    );
}

/// A task with a PostgreSQL server as a background process: its data directory and socket in
/// the task's private `/tmp` (the sandbox has the host's network: a Unix socket never collides
/// with another task's server). postgres refuses to run as root; `setpriv` drops to the
/// `postgres` user the package created, without PAM.
fn postgres_process(key: &str) -> String {
    format!(
        "      - key: {key}
        run: |
          mkdir -p /tmp/pg && chown postgres /tmp/pg
          setpriv --reuid postgres --regid postgres --init-groups {PG_BIN}/initdb -D /tmp/pg/data -U postgres >/dev/null
          exec setpriv --reuid postgres --regid postgres --init-groups {PG_BIN}/postgres -D /tmp/pg/data -k /tmp -c listen_addresses=''
        ready-check:
          run: pg_isready -h /tmp -U postgres
          timeout-seconds: 60
"
    )
}

fn failed_reason(r: &RunResult, task: &str) -> String {
    let failed = r
        .event("task-failed", task)
        .unwrap_or_else(|| panic!("{task} did not fail: {:#?}\n{}", r.events, r.stderr));
    failed["reason"].as_str().unwrap().to_string()
}

#[test]
fn postgres_serves_the_command_and_is_stopped_with_it() {
    assert_postgres();
    let f = Fixture::new();
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: integration
    run: |
      psql -h /tmp -U postgres -v ON_ERROR_STOP=1 -c 'create table visits (n int)' -c 'insert into visits values (41), (1)'
      echo \"sum=$(psql -h /tmp -U postgres -tA -c 'select sum(n) from visits')\"
    background-processes:
{}",
            postgres_process("postgres")
        ),
    );
    let r = f.run(&[]);
    let output = r.output("integration");
    assert_eq!(r.code, 0, "{output:#?}\n{}", r.stderr);
    assert!(output.contains(&"sum=42".to_string()), "{output:#?}");
    // The server's own lines, prefixed, in the order they came: ready before the command,
    // stopped by SIGTERM (a "smart shutdown") after it.
    let at = |needle: &str| {
        output
            .iter()
            .position(|l| l.starts_with("[postgres] ") && l.contains(needle))
            .unwrap_or_else(|| panic!("no [postgres] line with {needle:?}: {output:#?}"))
    };
    let sum = output.iter().position(|l| l == "sum=42").unwrap();
    assert!(at("ready to accept connections") < sum);
    assert!(at("strata: ready after") < sum);
    assert!(at("received smart shutdown request") > sum);
    assert!(at("database system is shut down") > sum);
    assert!(
        processes_with(&format!("{PG_BIN}/postgres")).is_empty(),
        "the server outlived its task"
    );
}

#[test]
fn processes_start_in_after_order_and_their_output_is_in_strata_logs() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: web
    run: |
      echo command sees $(cat /tmp/served)
    background-processes:
      - key: web-server
        after: backend
        run: |
          test -f /tmp/backend-ready && echo backend was ready before me
          echo frontend > /tmp/served
          exec sleep 1000
        ready-check: test -f /tmp/served
      - key: backend
        run: |
          echo starting backend
          sleep 0.5
          touch /tmp/backend-ready
          exec sleep 1000
        ready-check:
          - test -f /tmp/backend-ready
          - true
",
    );
    let r = f.run(&[]);
    let output = r.output("web");
    assert_eq!(r.code, 0, "{output:#?}\n{}", r.stderr);
    assert!(
        output.contains(&"command sees frontend".to_string()),
        "{output:#?}"
    );
    assert!(
        output.contains(&"[web-server] backend was ready before me".to_string()),
        "{output:#?}"
    );
    let logs = f.output(&["logs", "strata.yml", "web"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("[backend] starting backend\n"), "{logs}");
    assert!(
        logs.contains("[web-server] backend was ready before me\n"),
        "{logs}"
    );
    assert!(logs.contains("command sees frontend\n"), "{logs}");
    assert!(
        processes_with("sleep 1000").is_empty(),
        "a process outlived its task"
    );
}

#[test]
fn a_ready_check_that_never_passes_fails_the_task_naming_the_process() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: tests
    run: echo the command ran
    background-processes:
      - key: never-ready
        run: echo listening nowhere; exec sleep 1001
        ready-check:
          run: exit 1
          timeout-seconds: 2
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let reason = failed_reason(&r, "tests");
    assert!(
        reason.contains("background process `never-ready` was not ready after 2 s"),
        "{reason}"
    );
    let output = r.output("tests");
    assert!(
        !output.contains(&"the command ran".to_string()),
        "{output:#?}"
    );
    assert!(
        output.contains(&"[never-ready] listening nowhere".to_string()),
        "{output:#?}"
    );
    let took = Duration::from_millis(
        r.event("task-failed", "tests").unwrap()["duration_ms"]
            .as_u64()
            .unwrap(),
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(12),
        "{took:?}"
    );
    assert!(
        processes_with("sleep 1001").is_empty(),
        "the process outlived its task"
    );
}

#[test]
fn a_process_that_exits_before_it_is_ready_fails_the_task_at_once() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: tests
    run: echo the command ran
    background-processes:
      - key: crashes
        run: echo cannot bind; exit 3
        ready-check: {run: 'false', timeout-seconds: 60}
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let reason = failed_reason(&r, "tests");
    assert!(
        reason.contains("background process `crashes` exited with status 3 before it was ready"),
        "{reason}"
    );
    assert!(
        r.output("tests")
            .contains(&"[crashes] cannot bind".to_string())
    );
    // The process failed: its lines are what the failure's summary shows.
    let failed = r.event("task-failed", "tests").expect("failed");
    assert!(
        failed["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "[crashes] cannot bind"),
        "{failed}"
    );
    assert!(
        r.wall < Duration::from_secs(30),
        "waited for the ready timeout: {:?}",
        r.wall
    );
}

#[test]
fn processes_get_sigterm_then_sigkill_after_their_grace_period() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: tests
    run: echo command done
    background-processes:
      - key: stubborn
        terminate-grace-period-seconds: 2
        run: |
          trap 'echo got TERM, ignoring it' TERM
          echo up
          touch /tmp/stubborn-trapped
          while true; do sleep 0.1; done
        ready-check: test -e /tmp/stubborn-trapped
      - key: polite
        run: |
          trap 'echo got TERM, leaving; exit 0' TERM
          touch /tmp/polite-trapped
          while true; do sleep 0.1; done
        ready-check: test -e /tmp/polite-trapped
",
    );
    // Each is ready once its trap is set: under load, a SIGTERM could otherwise come first.
    let r = f.run(&[]);
    let output = r.output("tests");
    assert_eq!(r.code, 0, "{output:#?}\n{}", r.stderr);
    let line = |l: &str| {
        output
            .iter()
            .position(|o| o == l)
            .unwrap_or_else(|| panic!("no line {l:?}: {output:#?}"))
    };
    let done = line("command done");
    assert!(line("[stubborn] got TERM, ignoring it") > done);
    assert!(line("[polite] got TERM, leaving") > done);
    assert!(line("[stubborn] strata: still running 2 s after SIGTERM, killed") > done);
    let took = Duration::from_millis(r.event("task-passed", "tests").map_or_else(
        || panic!("no task-passed: {:#?}", r.events),
        |e| e["duration_ms"].as_u64().unwrap(),
    ));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn background_processes_are_keyed() {
    let f = Fixture::new();
    let pipeline = |ready: &str| {
        format!(
            "tasks:\n  - key: t\n    run: echo hi\n    background-processes:\n      - key: svc\n        run: exec sleep 1002\n        ready-check: {ready}\n"
        )
    };
    f.write("strata.yml", &pipeline("'true'"));
    let first = f.run(&[]);
    assert_eq!(first.status("t"), "ran", "{}", first.stderr);
    assert_eq!(f.run(&[]).status("t"), "restored");
    f.write("strata.yml", &pipeline("'test -d /tmp'"));
    assert_eq!(f.run(&[]).status("t"), "ran");
    // A task without background processes has the key it always had.
    f.write("strata.yml", "tasks:\n  - key: t\n    run: echo hi\n");
    let plain = f.run(&[]);
    assert_eq!(plain.status("t"), "ran");
    let key = |r: &RunResult| r.event("task-started", "t").unwrap()["key"].clone();
    assert_ne!(key(&plain), key(&first));
}

#[test]
fn a_task_timeout_stops_its_processes_too() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: slow
    timeout: 2s
    run: sleep 100
    background-processes:
      - key: svc
        run: exec sleep 1003
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(failed_reason(&r, "slow").contains("timed out"));
    assert!(
        processes_with("sleep 1003").is_empty(),
        "the process outlived its task"
    );
}

#[test]
fn secrets_in_processes_and_their_output_are_masked_and_keyed_by_name() {
    let f = Fixture::new();
    let secret = "s3cr3t-bg-4242";
    f.write(
        "strata.yml",
        "tasks:
  - key: uses-secret
    run: echo command done
    background-processes:
      - key: svc
        run: echo \"password is ${{ secrets.db-password }}\"; exec sleep 1004
        ready-check: test -n \"${{ secrets.db-password }}\"
",
    );
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_SECRET_DB_PASSWORD", secret)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[svc] password is ***"), "{stdout}");
    assert!(!stdout.contains(secret), "the secret is in the events");
    let logs = f.output(&["logs", "strata.yml", "uses-secret"]);
    let log = String::from_utf8_lossy(&logs.stdout);
    assert!(log.contains("[svc] password is ***"), "{log}");
    assert!(!log.contains(secret));
    // Nothing in the cache directory holds it (the key records it by name).
    let grep = std::process::Command::new("grep")
        .args(["-r", "-l", secret])
        .arg(f.cache.path())
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );
}

#[test]
fn a_failure_shows_the_command_s_last_lines_not_a_process_s() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: web
    run: |
      echo building
      echo the real error >&2
      exit 3
    background-processes:
      - key: chatty
        run: |
          trap 'for i in $(seq 30); do echo shutting down $i; done; exit 0' TERM
          for i in $(seq 30); do echo starting $i; done
          touch /tmp/up
          while true; do sleep 0.05; done
        ready-check: test -f /tmp/up
",
    );
    let r = f.run(&[]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    let failed = r.event("task-failed", "web").expect("failed");
    let tail: Vec<&str> = failed["log_tail"]
        .as_array()
        .expect("a tail")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(tail, ["building", "the real error"], "{failed}");
    // The process's lines are all in the log.
    let logs = f.output(&["logs", "strata.yml", "web"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("[chatty] starting 30\n"), "{logs}");
    assert!(logs.contains("[chatty] shutting down 30\n"), "{logs}");
    assert!(
        processes_with("while true; do sleep 0.05").is_empty(),
        "a process outlived its task"
    );
}
