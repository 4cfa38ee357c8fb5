//! Where the workspace enters, and the task environment: end to end, as root.

mod common;

use std::path::Path;

use common::{Counter, Fixture, git};

/// A git checkout with one commit and an `origin` remote.
fn checkout(f: &Fixture) {
    git(f.ws(), &["init", "-q", "-b", "main"]);
    git(
        f.ws(),
        &[
            "remote",
            "add",
            "origin",
            "https://example.com/team/app.git",
        ],
    );
    commit(f, "first");
}

fn commit(f: &Fixture, message: &str) -> String {
    git(f.ws(), &["add", "-A"]);
    git(f.ws(), &["commit", "-q", "--allow-empty", "-m", message]);
    git(f.ws(), &["rev-parse", "HEAD"])
}

#[test]
fn a_system_task_without_filter_stays_cached_across_source_edits() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write("src/main.c", "int main;");
    f.write("README.md", "hello");
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: system
    run: test ! -e src/main.c && {}
  - key: build
    use: system
    filter: [src]
    run: test -e src/main.c && test ! -e README.md && {}
  - key: test
    use: build
    run: cat README.md && {}
",
            c.ping("system"),
            c.ping("build"),
            c.ping("test")
        ),
    );
    let first = f.run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(c.take(), ["build", "system", "test"]);

    // A source edit: the system task is not even keyed on the workspace.
    f.write("src/main.c", "int main(void) { return 0; }");
    let second = f.run(&[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(c.take(), ["build", "test"]);
    assert_eq!(second.status("system"), "restored");

    // A file only `test` sees (it sees all of the workspace, through `build`).
    f.write("README.md", "hello again");
    let third = f.run(&[]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(c.take(), ["test"]);

    // plan says how many workspace files each task is keyed on.
    let plan = f.output(&["plan"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    let files_of = |task: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(task))
            .unwrap_or_else(|| panic!("{task} in {text}"));
        line.split_whitespace().nth(2).unwrap().to_string()
    };
    assert_eq!(files_of("system"), "0", "{text}");
    assert_eq!(files_of("build"), "1", "{text}");
    // README.md, src/main.c and strata.yml itself.
    assert_eq!(files_of("test"), "3", "{text}");
}

#[test]
fn rwx_files_see_the_workspace_only_through_git_clone() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write("src/lib.rs", "pub fn a() {}");
    f.write("docs/guide.md", "guide");
    f.write(
        ".rwx/ci.yml",
        &format!(
            "on:
  github:
    push: {{}}
base:
  os: ubuntu 24.04
  tag: 1.2
tasks:
  - key: packages
    run: test ! -e src && {}
  - key: code
    call: git/clone 2.0.8
    with:
      repository: git@example.com:team/app.git
      ref: main
      path: app
      github-token: unused
  - key: build
    use: [packages, code]
    filter: [app/src]
    agent:
      memory: 16gb
    run: |
      test -e app/src/lib.rs && test ! -e app/docs && test ! -e app/.git
      echo \"$RWX_GIT_COMMIT_SHA\" > /sha-at-build
      {}
  - key: report
    use: [build, code]
    cache: false
    run: echo \"sha=$RWX_GIT_COMMIT_SHA ref=$RWX_GIT_REF name=$RWX_GIT_REPOSITORY_NAME\"
",
            c.ping("packages"),
            c.ping("build")
        ),
    );
    checkout(&f);
    let head = git(f.ws(), &["rev-parse", "HEAD"]);
    let pipeline = f.ws().join(".rwx/ci.yml");
    let pipeline = pipeline.to_str().unwrap();
    let first = f.run(&[pipeline]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(c.take(), ["build", "packages"]);
    assert_eq!(
        first.output("report"),
        [format!("sha={head} ref=refs/heads/main name=team/app")]
    );
    // The RWX-only keys are noted, not errors.
    assert!(
        first.stderr.is_empty() || !first.stderr.contains("error"),
        "{}",
        first.stderr
    );

    // A commit that touches only files nobody filters in: nothing reruns, and the exports are
    // the new commit's.
    f.write("docs/guide.md", "guide v2");
    let head2 = commit(&f, "docs");
    let second = f.run(&[pipeline]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        c.take(),
        Vec::<String>::new(),
        "a new commit alone reruns nothing"
    );
    assert_eq!(second.status("build"), "restored");
    assert!(second.output("report")[0].starts_with(&format!("sha={head2} ")));
    // The clone is served from the checkout: it is neither run nor restored.
    assert_eq!(second.status("code"), "workspace");
    assert_eq!(second.summary()["restored"], 2, "{:?}", second.summary());
    assert_eq!(second.summary()["ran"], 1, "{:?}", second.summary());

    // A source edit reruns the build only.
    f.write("src/lib.rs", "pub fn b() {}");
    commit(&f, "src");
    let third = f.run(&[pipeline]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(c.take(), ["build"]);
}

#[test]
fn preserve_git_dir_brings_the_checkout_git_directory() {
    let f = Fixture::new();
    f.write("a.txt", "a");
    f.write(
        ".mint/ci.yml",
        "tasks:
  - key: code
    call: mint/git-clone 1.6.0
    with:
      repository: https://example.com/team/app
      ref: main
      preserve-git-dir: true
  - key: log
    use: code
    cache: false
    run: git log -1 --format=%s && test -e a.txt
",
    );
    checkout(&f);
    let pipeline = f.ws().join(".mint/ci.yml");
    let r = f.run(&[pipeline.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("log"), ["first"]);
}

#[test]
fn a_clone_ref_that_is_not_the_checkout_is_an_error_naming_both() {
    let f = Fixture::new();
    f.write(
        ".rwx/ci.yml",
        "tasks:
  - key: code
    call: git/clone 2.0.8
    with: {repository: https://example.com/team/app.git, ref: 0123456789abcdef0123456789abcdef01234567}
  - key: t
    use: code
    run: true
",
    );
    checkout(&f);
    let head = git(f.ws(), &["rev-parse", "HEAD"]);
    let out = f.output(&["run", f.ws().join(".rwx/ci.yml").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("0123456789abcdef0123456789abcdef01234567"),
        "{stderr}"
    );
    assert!(stderr.contains(&head), "{stderr}");
    assert!(stderr.contains("task `code`"), "{stderr}");
    // At the `ref`, in its file (line 4, column 58).
    assert!(stderr.contains(".rwx/ci.yml:4:63: task `code`"), "{stderr}");

    // A clone of another repository is a package call: refused, not silently served.
    f.write(
        ".rwx/ci.yml",
        "tasks:
  - key: code
    call: git/clone 2.0.8
    with: {repository: https://example.com/other/lib.git, ref: main}
",
    );
    let out = f.output(&["run", f.ws().join(".rwx/ci.yml").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a remote of the workspace"), "{stderr}");
    assert!(stderr.contains(".rwx/ci.yml:4:24: task `code`"), "{stderr}");
    // Said first, and so, even when its `ref` reads a value known only at run time, and for
    // Mint's spelling of the call, which the message names.
    f.write(
        ".rwx/ci.yml",
        "tasks:
  - key: v
    run: echo 1.2 > $RWX_VALUES/tag
  - key: code
    call: mint/git-clone 1.6.4
    with:
      repository: https://example.com/other/lib.git
      ref: v${{ tasks.v.values.tag }}
",
    );
    let out = f.output(&["plan", f.ws().join(".rwx/ci.yml").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(".rwx/ci.yml:7:19: task `code`")
            && stderr.contains("holding `mint/git-clone`"),
        "{stderr}"
    );
}

/// A clone of the workspace's own repository whose `ref` reads a task's values (known only
/// once that task ran): served from the checkout as it is, and said so.
#[test]
fn a_clone_ref_known_only_at_run_time_serves_the_checkout_with_a_notice() {
    let f = Fixture::new();
    f.write(
        ".rwx/ci.yml",
        "tasks:
  - key: v
    run: echo main > $RWX_VALUES/branch
  - key: code
    call: git/clone 2.0.8
    with:
      repository: https://example.com/team/app.git
      ref: ${{ tasks.v.values.branch }}
  - key: t
    use: code
    run: test -f .rwx/ci.yml
",
    );
    checkout(&f);
    let r = f.run(&[f.ws().join(".rwx/ci.yml").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("t"), "ran");
    let warned = r.events.iter().any(|e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("is known only when the run is under way"))
    });
    assert!(warned, "{:?}", r.events);
}

#[test]
fn a_failing_pipe_fails_the_task() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: piped
    run: false | tee /log
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status("piped"), "failed");
    // It sees no workspace: the failure says so.
    let failed = r.event("task-failed", "piped").unwrap();
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("sees no workspace files"),
        "{failed}"
    );
}

#[test]
fn values_and_key_excluded_env_reach_dependents() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: stamp
    cache: false
    run: |
      date +%s%N > \"$RWX_CACHE_KEY_EXCLUDED_ENV/BUILD_STAMP\"
      echo 1.2.3 > \"$RWX_VALUES/version\"
      echo 'it failed' > \"$RWX_ERRORS/why\"
  - key: use-it
    use: stamp
    run: test -n \"$BUILD_STAMP\" && {}
  - key: fails
    run: echo 'the widget is broken' > \"$RWX_ERRORS/widget\"; exit 3
",
            c.ping("use-it")
        ),
    );
    let first = f.run(&[]);
    assert_eq!(first.code, 1);
    assert_eq!(c.take(), ["use-it"]);
    let failed = first.event("task-failed", "fails").unwrap();
    assert_eq!(failed["errors"][0], "the widget is broken", "{failed}");
    // `stamp` ran again and exported another stamp: `use-it` is not keyed on it.
    let second = f.run(&[]);
    assert_eq!(second.status("use-it"), "restored");
    assert_eq!(c.take(), Vec::<String>::new());
}

#[test]
fn host_variables_are_passed_with_env_and_keyed() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: t
    run: test \"$GREETING\" = \"$EXPECT\" && test -n \"$TOKEN\" && {}
",
            c.ping("t")
        ),
    );
    let run = |greeting: &str, token: &str| {
        let out = f
            .command(&[
                "run",
                "--json",
                "--env",
                &format!("GREETING={greeting}"),
                "--env",
                &format!("EXPECT={greeting}"),
                "--env-excluded",
                "TOKEN",
            ])
            .env("TOKEN", token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("hi", "one");
    assert_eq!(c.take(), ["t"]);
    run("hi", "two");
    assert_eq!(
        c.take(),
        Vec::<String>::new(),
        "an excluded value is not keyed"
    );
    run("hello", "two");
    assert_eq!(c.take(), ["t"], "a keyed value is");
    // A variable that is not set is a clear error.
    let out = f.output(&["run", "--env", "STRATA_TEST_SURELY_UNSET"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STRATA_TEST_SURELY_UNSET"));
}

#[test]
fn keys_for_later_are_accepted_by_check_and_refused_by_run() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: t
    run: echo hi
    app: {port: 3000}
    tool-cache: npm
",
    );
    let check = f.output(&["check"]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    // `tool-cache` is honoured (tests/tool_cache.rs): nothing is said about it.
    assert!(!stderr.contains("tool-cache"), "{stderr}");
    assert!(stderr.contains("`app`"), "{stderr}");
    let run = f.output(&["run"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("strata.yml:4:5: `app` (task `t`)"),
        "{stderr}"
    );
}

#[test]
fn sudo_works_in_a_task_when_installed() {
    let f = Fixture::new();
    assert!(
        Path::new("/usr/bin/sudo").exists(),
        "this test needs sudo installed (scripts/test installs it)"
    );
    f.write(
        "strata.yml",
        "tasks:
  - key: t
    run: sudo -n true && sudo -n sh -c 'echo ok > /root-owned'
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{:?}", r.events);
}
