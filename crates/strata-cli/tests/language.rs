//! The rest of RWX's language end to end: `env-config`, `cache: ${{ … }}`, `<<` merge keys,
//! `$MINT_ENV` written dotenv-style, `terminate-grace-period-seconds`, and filters (entries
//! `cache-key: excluded`, files used tasks wrote into the workspace). As root.

mod common;

use common::{Counter, Fixture, git};

#[test]
fn env_config_chooses_which_used_tasks_env_is_inherited_and_joins() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: a
    run: |
      echo from-a > $STRATA_ENV/ONLY_A
      echo a > $STRATA_ENV/FLAGS
      echo /opt/a/bin > $STRATA_ENV/PATH
  - key: b
    run: |
      echo b > $STRATA_ENV/FLAGS
      echo /opt/b/bin > $STRATA_ENV/PATH
  - key: joined
    use: [a, b]
    env-config:
      merge:
        FLAGS: {strategy: join, by: ','}
        PATH: {strategy: override}
    run: echo \"flags=$FLAGS only=$ONLY_A path=${PATH%%:*}\"
  - key: only-b
    use: [a, b]
    env-config:
      inherit: [b]
    run: echo \"flags=$FLAGS only=${ONLY_A:-unset} path=$PATH\"
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.output("joined"),
        ["flags=b,a only=from-a path=/opt/b/bin"]
    );
    let only_b = r.output("only-b");
    assert_eq!(only_b.len(), 1);
    assert!(
        only_b[0].starts_with("flags=b only=unset path=/opt/b/bin:"),
        "{only_b:?}"
    );
    assert!(!only_b[0].contains("/opt/a/bin"), "{only_b:?}");
}

#[test]
fn cache_expression_is_decided_by_the_run() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "on:
  cli:
    init:
      use-cache: 'true'
tasks:
  - key: a
    cache: ${{{{ init.use-cache }}}}
    run: {}
",
            c.ping("a")
        ),
    );
    assert_eq!(f.run(&[]).code, 0);
    assert_eq!(c.take(), ["a"]);
    let r = f.run(&[]);
    assert_eq!(r.status("a"), "restored");
    assert!(c.take().is_empty());
    // The expression is false: the entry is not used, the command runs.
    let r = f.run(&["--init", "use-cache=false"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.take(), ["a"]);
    // Neither true nor false: the task fails, saying why.
    let r = f.run(&["--init", "use-cache=maybe"]);
    assert_eq!(r.code, 1);
    let failed = r.event("task-failed", "a").expect("a failed");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("not true or false"),
        "{failed}"
    );
}

#[test]
fn merge_keys_and_aliases_shape_tasks() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "aliases:
  common-env: &common-env
    GREETING: hello
    TARGET: world
  quiet: &quiet
    cache: false
tasks:
  - key: a
    <<: *quiet
    env:
      <<: *common-env
      TARGET: strata
    run: echo \"$GREETING $TARGET\"
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("a"), ["hello strata"]);
    // `cache: false` came through the merge: the task runs again.
    let r = f.run(&[]);
    assert_ne!(r.status("a"), "restored");
}

#[test]
fn mint_env_written_as_a_dotenv_file_is_read() {
    let f = Fixture::new();
    f.write(
        ".mint/ci.yml",
        "tasks:
  - key: old
    run: |
      echo \"VERSION=1.2.3\" >> $MINT_ENV
      echo 'export NAME=\"two words\"' >> \"$MINT_ENV\"
  - key: new
    run: echo /opt/new > $MINT_ENV/NEW_DIR
  - key: show
    use: [old, new]
    run: echo \"$VERSION|$NAME|$NEW_DIR\"
",
    );
    let r = f.run(&[".mint/ci.yml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("show"), ["1.2.3|two words|/opt/new"]);
    // Restored from the cache, the exports are the same.
    let r = f.run(&[".mint/ci.yml"]);
    assert_eq!(r.status("old"), "restored");
    assert_eq!(r.output("show"), Vec::<String>::new());
    assert_eq!(r.status("show"), "restored");
}

#[test]
fn terminate_grace_period_sends_sigterm_first() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: graceful
    timeout: 1s
    terminate-grace-period-seconds: 20
    run: |
      trap 'echo cleaning up; exit 0' TERM
      sleep 60 &
      wait
  - key: abrupt
    timeout: 1s
    run: |
      trap 'echo cleaning up; exit 0' TERM
      sleep 60 &
      wait
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.output("graceful"), ["cleaning up"]);
    assert!(
        r.output("abrupt").is_empty(),
        "SIGKILL without a grace period"
    );
    for task in ["graceful", "abrupt"] {
        let failed = r.event("task-failed", task).expect("failed");
        assert!(
            failed["reason"].as_str().unwrap().contains("timed out"),
            "{failed}"
        );
    }
    // The task ended when its trap did, not at the end of the grace period.
    assert!(r.wall.as_secs() < 15, "{:?}", r.wall);
}

#[test]
fn a_cache_key_excluded_filter_entry_is_visible_but_not_keyed() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write("src/a.c", "int a;\n");
    f.write("VERSION", "1\n");
    f.write("README", "not seen\n");
    f.write(
        "strata.yml",
        &format!(
            "tasks:
  - key: build
    filter:
      - src
      - {{path: VERSION, cache-key: excluded}}
    run: |
      echo \"version $(cat VERSION), $(cat src/a.c), readme: $(test -e README && echo yes || echo no)\"
      {}
",
            c.ping("build")
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("build"), ["version 1, int a;, readme: no"]);
    assert_eq!(c.take(), ["build"]);
    // Another VERSION: not part of the key, the task is restored.
    f.write("VERSION", "2\n");
    let r = f.run(&[]);
    assert_eq!(r.status("build"), "restored");
    assert!(c.take().is_empty());
    // A keyed file changes: the task runs, and sees the current VERSION.
    f.write("src/a.c", "int b;\n");
    let r = f.run(&[]);
    assert_eq!(r.output("build"), ["version 2, int b;, readme: no"]);
    assert_eq!(c.take(), ["build"]);
}

#[test]
fn a_filter_narrows_what_used_tasks_wrote_into_the_workspace() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "on:
  cli:
    init:
      kept: one
      other: x
tasks:
  - key: gen
    run: |
      mkdir -p out/sub
      echo ${{{{ init.kept }}}} > out/sub/kept.txt
      echo ${{{{ init.other }}}} > notes.txt
  - key: narrow
    use: gen
    filter: [out]
    run: |
      echo \"kept=$(cat out/sub/kept.txt) notes=$(test -e notes.txt && echo seen || echo hidden)\"
      {}
  - key: whole
    use: gen
    run: |
      echo \"notes=$(cat notes.txt)\"
      {}
",
            c.ping("narrow"),
            c.ping("whole")
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("narrow"), ["kept=one notes=hidden"]);
    assert_eq!(r.output("whole"), ["notes=x"]);
    assert_eq!(c.take(), ["narrow", "whole"]);
    // `gen` re-runs and changes only a file outside `narrow`'s filter: `narrow` is restored.
    let r = f.run(&["--init", "other=y"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("gen"), "ran", "{:?}", r.summary());
    assert_eq!(r.status("narrow"), "restored");
    assert_eq!(r.output("whole"), ["notes=y"]);
    assert_eq!(c.take(), ["whole"]);
    // A file inside the filter changes: `narrow` runs and sees it.
    let r = f.run(&["--init", "other=y", "--init", "kept=two"]);
    assert_eq!(r.output("narrow"), ["kept=two notes=hidden"]);
    assert_eq!(c.take(), ["narrow", "whole"]);
}

#[test]
fn rwx_filters_with_expressions_narrow_the_clone_and_what_used_tasks_wrote() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    f.write("docs/x.md", "x");
    f.write(
        ".rwx/ci.yml",
        "on:
  cli:
    init:
      dir: src
tasks:
  - key: code
    call: git/clone 2.0.8
    with:
      repository: https://example.com/team/app.git
      ref: main
  - key: deps
    use: code
    run: |
      mkdir -p vendor
      echo v1 > vendor/lib.txt
      echo log > build.log
  - key: test
    use: deps
    filter:
      - ${{ init.dir }}
      - vendor
    run: |
      echo \"$(cat src/a.txt 2>/dev/null || echo nosrc) $(cat vendor/lib.txt) $(test -e docs/x.md && echo docs || echo nodocs) $(test -e build.log && echo log || echo nolog)\"
",
    );
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
    git(f.ws(), &["add", "-A"]);
    git(f.ws(), &["commit", "-q", "-m", "first"]);
    let r = f.run(&[".rwx/ci.yml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("test"), ["a v1 nodocs nolog"]);
    let r = f.run(&[".rwx/ci.yml", "--init", "dir=docs"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("test"), ["nosrc v1 docs nolog"]);
}

#[test]
fn an_exported_filtered_task_shows_the_used_tasks_workspace_files_through_its_filter() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: gen
    run: |
      mkdir -p out && echo kept > out/kept.txt && echo notes > notes.txt
      mkdir -p /opt/gen && echo tool > /opt/gen/tool
  - key: narrow
    use: gen
    filter: [out]
    run: echo built > out/built.txt
",
    );
    let out_dir = f.ws().join("image");
    let out = f.output(&[
        "export",
        "strata.yml",
        "narrow",
        "--oci",
        out_dir.to_str().unwrap(),
        "--tag",
        "v1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = f.ws().join("bundle");
    let unpacked = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", out_dir.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        unpacked.status.success(),
        "{}",
        String::from_utf8_lossy(&unpacked.stderr)
    );
    let root = bundle.join("rootfs");
    assert!(root.join("workspace/out/kept.txt").is_file());
    assert!(root.join("workspace/out/built.txt").is_file());
    assert!(
        root.join("opt/gen/tool").is_file(),
        "the system part is whole"
    );
    assert!(
        !root.join("workspace/notes.txt").exists(),
        "outside the filter, as the task saw it"
    );
}
