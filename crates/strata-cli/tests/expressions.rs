//! `${{ … }}` end to end: init values, triggers chosen from the CI environment, values between
//! tasks (also through a shared cache), secrets that never leak. As root.

mod common;

use common::{CacheDir, Counter, Fixture};

#[test]
fn init_values_reach_run_and_env_and_enter_the_key() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "on:
  cli:
    init:
      target-env: staging
tasks:
  - key: deploy
    env:
      WHERE: ${{{{ init.target-env }}}}
    run: |
      echo \"to ${{{{ init.target-env }}}} ($WHERE) ${{{{ init.target-env == 'prod' ? 'careful' : 'relax' }}}}\" && {}
",
            c.ping("deploy")
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("deploy"), ["to staging (staging) relax"]);
    assert_eq!(c.take(), ["deploy"]);
    let r = f.run(&["--init", "target-env=prod"]);
    assert_eq!(r.output("deploy"), ["to prod (prod) careful"]);
    assert_eq!(c.take(), ["deploy"], "a resolved value enters the key");
    let r = f.run(&[]);
    assert_eq!(r.status("deploy"), "restored");
}

#[test]
fn a_missing_init_value_is_an_error_before_anything_runs() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: a\n    run: echo ${{ init.version }}\n",
    );
    let out = f.output(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`init.version`"), "{stderr}");
    assert!(stderr.contains("--init"), "{stderr}");
    // Where it is read: file, line and column of the value.
    assert!(stderr.contains("strata.yml:3:10)"), "{stderr}");
}

#[test]
fn check_points_at_bad_expressions() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: build
    run: echo hi
  - key: a
    run: echo ${{ tasks.biuld.values.x }} ${{ inti.x }}
    env:
      X: ${{ strts-with(init.a, 'v') }}
",
    );
    let out = f.output(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("there is no task `biuld`"), "{stderr}");
    assert!(stderr.contains("did you mean `build`?"), "{stderr}");
    assert!(stderr.contains("strata.yml:5:19"), "{stderr}");
    assert!(stderr.contains("unknown name `inti`"), "{stderr}");
    assert!(stderr.contains("did you mean `init`?"), "{stderr}");
    assert!(stderr.contains("strata.yml:7:14"), "{stderr}");
    assert!(stderr.contains("3 errors in"), "{stderr}");
}

#[test]
fn github_actions_selects_the_push_trigger_and_computes_init() {
    let f = Fixture::new();
    let event = f.ws().join("event.json");
    std::fs::write(&event, r#"{"head_commit": {"message": "fix the thing"}}"#).unwrap();
    f.write(
        "strata.yml",
        "on:
  github:
    push:
      - if: ${{ event.git.branch == 'main' }}
        init:
          sha: ${{ event.git.sha }}
          message: ${{ event.github.push.head_commit.message }}
        target: [announce]
    pull_request:
      init: {sha: nope, message: nope}
tasks:
  - key: announce
    cache: false
    run: |
      echo \"${{ init.sha }}: ${{ init.message }}\"
  - key: other
    run: echo not targeted
",
    );
    let sha = "c".repeat(40);
    let run = |branch: &str| {
        let out = f
            .command(&["run", "--json"])
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_EVENT_NAME", "push")
            .env("GITHUB_EVENT_PATH", &event)
            .env("GITHUB_SHA", &sha)
            .env("GITHUB_REF", format!("refs/heads/{branch}"))
            .env("GITHUB_REF_NAME", branch)
            .env("GITHUB_REF_TYPE", "branch")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run("main");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("{sha}: fix the thing")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("not targeted"),
        "the trigger's target is honoured"
    );
    // On another branch the trigger's `if` is false: nothing runs, and that is a success.
    let (code, stdout, stderr) = run("topic");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("nothing to run"), "{stderr}");
}

#[test]
fn values_pass_between_tasks_and_survive_a_shared_cache() {
    let remote = CacheDir::new("strata-remote-");
    let url = format!("file://{}", remote.path().display());
    let pipeline = "tasks:
  - key: version
    run: echo 4.5.6 > \"$RWX_VALUES/number\"
  - key: release
    cache: false
    run: echo \"release ${{ tasks.version.values.number }}\"
";
    let a = Fixture::new();
    a.write("strata.yml", pipeline);
    let r = a.run(&["--remote", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("release"), ["release 4.5.6"]);
    // Another machine: an empty local cache, the same shared cache.
    let b = Fixture::new();
    b.write("strata.yml", pipeline);
    let r = b.run(&["--remote", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("version"), "restored");
    assert_eq!(r.output("release"), ["release 4.5.6"]);
}

#[test]
fn a_secret_never_appears_in_output_log_entry_key_or_events() {
    let f = Fixture::new();
    let secret = "pa55-w0rd-9876";
    f.write(
        "strata.yml",
        "tasks:
  - key: use-secret
    env:
      TOKEN: ${{ secrets.deploy-token }}
    run: |
      echo \"token is $TOKEN\"
      echo \"inline ${{ secrets.deploy-token }}\"
      test ${#TOKEN} -eq 14
",
    );
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_SECRET_DEPLOY_TOKEN", secret)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("token is ***"), "{stdout}");
    assert!(stdout.contains("inline ***"), "{stdout}");
    assert!(!stdout.contains(secret), "the secret is in the events");
    // The saved log, and everything in the cache directory (index, entries, logs).
    let logs = f.output(&["logs", "strata.yml", "use-secret"]);
    let log = String::from_utf8_lossy(&logs.stdout);
    assert!(log.contains("token is ***"), "{log}");
    let grep = std::process::Command::new("grep")
        .args(["-r", "-a", "-l", secret])
        .arg(f.cache.path())
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "the secret is stored in the cache: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    // Another value of the secret: the same key (secrets enter keys by name only).
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_SECRET_DEPLOY_TOKEN", "another-value-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#""status":"restored""#), "{stdout}");
    // Without it: a clear error, nothing run.
    let out = f.output(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STRATA_SECRET_DEPLOY_TOKEN"));
    // `plan` and `explain` work out keys only, which take the secret by name: they need no
    // value, and find the entry the runs made.
    let out = f.output(&["plan", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#""status": "hit""#), "{stdout}");
    let out = f.output(&["explain", "strata.yml", "use-secret"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("would be restored"), "{stdout}");
}

#[test]
fn plan_without_a_secret_takes_it_as_set_in_conditions() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: build
    run: echo build
  - key: deploy
    use: build
    if: ${{ secrets.DEPLOY_TOKEN != '' }}
    run: echo deploying
",
    );
    // As a run given the secret would: `deploy` is not skipped by its condition.
    let out = f.output(&["plan", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let deploy = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "deploy")
        .expect("deploy planned");
    assert_eq!(deploy["status"], "after-parent", "{deploy}");
}
