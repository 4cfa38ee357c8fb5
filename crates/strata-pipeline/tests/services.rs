//! `background-processes` and `docker` as RWX writes them, and the errors for what it refuses.

use std::path::Path;
use std::time::Duration;

use strata_pipeline::{Docker, parse_str};

fn errors(text: &str) -> String {
    parse_str(Path::new(".rwx/ci.yml"), text)
        .expect_err("the file should be refused")
        .to_string()
}

#[test]
fn every_form_of_a_background_process_is_read_with_rwx_defaults() {
    let text = "tasks:
  - key: tests
    run: make test
    background-processes:
      - key: postgres
        run: postgres -D /tmp/pg
        ready-check: pg_isready
      - key: redis
        run: redis-server
        ready-check:
          run: [redis-cli ping, 'true']
          timeout-seconds: 5
        terminate-grace-period-seconds: 0
        after: postgres
      - key: web.app
        run: [serve a, serve b]
        after: [postgres, redis]
";
    let p = parse_str(Path::new(".rwx/ci.yml"), text).unwrap();
    let t = p.task("tests").unwrap();
    assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
    let [pg, redis, web] = t.background.as_slice() else {
        panic!("{:?}", t.background)
    };
    assert_eq!(pg.key, "postgres");
    let check = pg.ready_check.as_ref().unwrap();
    assert_eq!(check.run.raw, "pg_isready");
    assert_eq!(check.timeout, Duration::from_secs(60));
    assert_eq!(pg.grace_period, Duration::from_secs(10));
    assert!(pg.after.is_empty());
    let check = redis.ready_check.as_ref().unwrap();
    assert_eq!(check.run.raw, "redis-cli ping\ntrue");
    assert_eq!(check.timeout, Duration::from_secs(5));
    assert_eq!(redis.grace_period, Duration::ZERO);
    assert_eq!(redis.after, ["postgres"]);
    assert_eq!(web.run.raw, "serve a\nserve b");
    assert!(web.ready_check.is_none());
    assert_eq!(web.after, ["postgres", "redis"]);
    assert_eq!(t.docker, Docker::Disabled);
}

#[test]
fn docker_takes_true_false_or_preserve_data() {
    let task = |v: &str| {
        let text = format!("tasks:\n  - key: a\n    run: docker ps\n    docker: {v}\n");
        parse_str(Path::new(".rwx/ci.yml"), &text).unwrap().tasks[0].docker
    };
    assert_eq!(task("true"), Docker::Enabled);
    assert_eq!(task("false"), Docker::Disabled);
    assert_eq!(task("preserve-data"), Docker::PreserveData);
    let err = errors("tasks:\n  - key: a\n    run: x\n    docker: yes-please\n");
    assert!(
        err.contains("`docker` must be true, false or preserve-data"),
        "{err}"
    );
    assert!(err.contains("4:13"), "{err}");
}

#[test]
fn mistakes_are_reported_where_they_are() {
    let err = errors(
        "tasks:
  - key: a
    run: x
    background-processes:
      - key: db
        run: serve
        ready-chek: probe
      - key: db
        run: again
      - run: no key
      - key: web
        run: serve
        after: [dbb, web]
        ready-check: {timeout-seconds: 0}
",
    );
    assert!(
        err.contains("unknown key `ready-chek` in a background process"),
        "{err}"
    );
    assert!(err.contains("did you mean `ready-check`?"), "{err}");
    assert!(err.contains("7:9"), "{err}");
    assert!(
        err.contains("background process `db` is defined twice"),
        "{err}"
    );
    assert!(err.contains("8:14"), "{err}");
    assert!(err.contains("background process has no `key`"), "{err}");
    assert!(
        err.contains("`after` names no background process `dbb`"),
        "{err}"
    );
    assert!(
        err.contains("background process `web` cannot start after itself"),
        "{err}"
    );
    assert!(
        err.contains("`timeout-seconds` must be a whole number of at least 1"),
        "{err}"
    );
    assert!(err.contains("`ready-check` has no `run`"), "{err}");
}

#[test]
fn processes_that_wait_for_each_other_are_refused() {
    let err = errors(
        "tasks:
  - key: a
    run: x
    background-processes:
      - {key: one, run: a, after: two}
      - {key: two, run: b, after: one}
",
    );
    assert!(
        err.contains("background processes wait for each other: one -> two -> one"),
        "{err}"
    );
}

#[test]
fn with_docker_the_dockerd_key_is_taken() {
    let err = errors(
        "tasks:
  - key: a
    run: x
    docker: true
    background-processes:
      - {key: dockerd, run: dockerd}
",
    );
    assert!(
        err.contains("background process key `dockerd` is taken by `docker`"),
        "{err}"
    );
    // Without `docker` the name is free.
    parse_str(
        Path::new(".rwx/ci.yml"),
        "tasks:\n  - key: a\n    run: x\n    background-processes:\n      - {key: dockerd, run: dockerd}\n",
    )
    .unwrap();
}

#[test]
fn expressions_in_processes_are_checked() {
    let err = errors(
        "tasks:
  - key: a
    run: x
    background-processes:
      - key: db
        run: serve ${{ init.nope
",
    );
    assert!(err.contains("6:"), "{err}");
}
