//! Calls end to end: packages from a package directory (parameters, version fallback,
//! `$RWX_PACKAGE_PATH`, the package's digest in its keys, `use: [caller]`), embedded run
//! definitions with `init` and `target`, local packages, and the errors of a bad call. As root.

mod common;

use common::{Counter, Fixture, git};

/// `acme/greet`: `who` required, `how` defaulting to `hello`; a helper script among its
/// files; `outputs.values-from: [say]`. Version 1.2.0 in the RWX layout
/// (`NAME/rwx-package.yml`) and 2.0.0 beside it (`NAME/2.0.0/rwx-package.yml`).
fn write_greet(f: &Fixture, c: &Counter) {
    let package = |version: &str| {
        format!(
            "name: acme/greet
version: {version}
description: says hello
parameters:
  who:
    description: whom to greet
    required: true
  how:
    default: hello
outputs:
  values-from: [say]
tasks:
  - key: prep
    run: echo prepared > /prep.txt && {}
  - key: say
    use: prep
    run: |
      \"$RWX_PACKAGE_PATH/bin/greet\" \"${{{{ params.how }}}}\" \"${{{{ params.who }}}}\" > /greeting.txt
      echo \"${{{{ params.who }}}}\" > \"$RWX_VALUES/who\"
      echo /opt/greet > \"$RWX_ENV/GREET_HOME\"
      {}
",
            c.ping("prep"),
            c.ping("say")
        )
    };
    f.write("pkgs/acme/greet/rwx-package.yml", &package("1.2.0"));
    f.write("pkgs/acme/greet/bin/greet", "#!/bin/sh\necho \"$1, $2!\"\n");
    f.write("pkgs/acme/greet/2.0.0/rwx-package.yml", &package("2.0.0"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        f.ws().join("pkgs/acme/greet/bin/greet"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

fn packages(f: &Fixture) -> String {
    f.ws().join("pkgs").display().to_string()
}

#[test]
fn a_package_with_required_and_default_parameters_and_a_version_fallback() {
    let f = Fixture::new();
    let c = Counter::start();
    write_greet(&f, &c);
    f.write(
        "strata.yml",
        "tasks:
  - key: name
    run: echo world > \"$RWX_VALUES/name\"
  - key: greet
    call: acme/greet 1.0.0
    with:
      who: ${{ tasks.name.values.name }}
  - key: show
    use: [greet]
    run: |
      cat /greeting.txt /prep.txt
      echo \"home=$GREET_HOME who=${{ tasks.greet.values.who }} path=${RWX_PACKAGE_PATH:-unset}\"
",
    );
    // 1.0.0 is not there: 1.2.0 (same major) is used, with a warning; 2.0.0 is not.
    let out = f.output(&["check", "--packages", &packages(&f), "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("no package source holds `acme/greet 1.0.0`")
            && stderr.contains("using 1.2.0")
            && stderr.contains("strata.yml:5:11"),
        "{stderr}"
    );
    let r = f.run(&["--packages", &packages(&f)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("greet.prep"), "ran");
    assert_eq!(r.status("greet.say"), "ran");
    // The required parameter from the caller's values, the default for the other; the
    // layers of the package's tasks, its env and the values it names.
    assert_eq!(
        r.output("show"),
        [
            "hello, world!",
            "prepared",
            "home=/opt/greet who=world path=unset"
        ]
    );
    assert_eq!(c.take(), ["prep", "say"]);
    let r = f.run(&["--packages", &packages(&f)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("greet.say"), "restored");
    assert_eq!(c.take(), Vec::<String>::new());
}

#[test]
fn the_package_digest_is_in_its_tasks_keys() {
    let f = Fixture::new();
    let c = Counter::start();
    write_greet(&f, &c);
    f.write(
        "strata.yml",
        "tasks:
  - key: greet
    call: acme/greet 1.2.0
    with:
      who: you
      how: hi
  - key: other
    run: echo other
",
    );
    let args = ["--packages", &packages(&f)];
    let r = f.run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.take(), ["prep", "say"]);
    assert!(
        !r.stderr.contains("same major"),
        "the exact version is used: {}",
        r.stderr
    );
    // A file of the package changes, not its definition: its tasks run again.
    f.write("pkgs/acme/greet/bin/greet", "#!/bin/sh\necho \"$1 $2.\"\n");
    let r = f.run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.take(), ["prep", "say"]);
    assert_eq!(r.status("other"), "restored");
    let r = f.run(&args);
    assert_eq!(r.status("greet.prep"), "restored");
    assert_eq!(c.take(), Vec::<String>::new());
}

#[test]
fn bad_calls_are_errors_at_their_line() {
    let f = Fixture::new();
    let c = Counter::start();
    write_greet(&f, &c);
    f.write(
        "strata.yml",
        "tasks:
  - key: greet
    call: acme/greet 1.2.0
    with:
      how: hi
      whom: you
  - key: later
    call: acme/greet 3.1.0
    with:
      who: x
",
    );
    let out = f.output(&["check", "--packages", &packages(&f), "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the package `acme/greet 1.2.0` has no parameter `whom`")
            && stderr.contains("strata.yml:6:7"),
        "unknown parameter at its line: {stderr}"
    );
    assert!(
        stderr.contains("needs parameter `who`") && stderr.contains("strata.yml:4:5"),
        "missing required parameter at the `with:` line: {stderr}"
    );
    assert!(
        stderr.contains("no version of `acme/greet` matches 3.1.0")
            && stderr.contains("1.2.0, 2.0.0"),
        "what was found: {stderr}"
    );
    assert_eq!(c.take(), Vec::<String>::new());
    // A package file is a run definition `check` reads on its own.
    let out = f.output(&["check", "pkgs/acme/greet/rwx-package.yml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a package source the call is accepted by check and refused by run.
    let out = f.output(&["run", "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no package source"), "{stderr}");
}

#[test]
fn an_embedded_run_gets_its_init_and_only_its_targets() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "sub.yml",
        &format!(
            "base:
  os: ubuntu 24.04
  tag: 1.1
on:
  github:
    push: {{}}
tasks:
  - key: a
    run: test ! -e /ver-file && echo \"a ${{{{ init.version }}}} ${{{{ init.flavour }}}}\" > /a.txt && echo x > \"$RWX_VALUES/x\" && {}
  - key: b
    use: a
    run: echo \"b=$(cat /a.txt) ${{{{ tasks.a.values.x }}}}\" > /b.txt && {}
  - key: c
    run: {}
",
            c.ping("a"),
            c.ping("b"),
            c.ping("c")
        ),
    );
    f.write(
        "strata.yml",
        "on:
  cli:
    init:
      flavour: vanilla
tasks:
  - key: ver
    run: echo 7 > \"$RWX_VALUES/v\" && echo > /ver-file
  - key: sub
    use: [ver]
    call: ${{ run.dir }}/sub.yml
    init:
      version: ${{ tasks.ver.values.v }}
    inherit-init: true
    target: b
  - key: after
    use: [sub]
    run: cat /b.txt; test ! -e /ver-file
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("after"), ["b=a 7 vanilla x"]);
    assert_eq!(r.status("sub.c"), "absent", "not a target");
    assert_eq!(c.take(), ["a", "b"]);
    // An init value the caller computes enters the called tasks' keys.
    let r = f.run(&["--init", "flavour=mint"]);
    assert_eq!(r.output("after"), ["b=a 7 mint x"]);
    assert_eq!(c.take(), ["a", "b"]);
    // A value the called run reads and the call does not give is empty, with a warning at
    // the call's `init:`.
    f.write(
        "strata.yml",
        "tasks:\n  - key: sub\n    call: sub.yml\n    init:\n      version: \"1\"\n    target: a\n",
    );
    let out = f.output(&["check", "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("reads `init.flavour`") && stderr.contains("strata.yml:4:5"),
        "{stderr}"
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("sub.a"), "ran");
}

#[test]
fn a_local_package_gets_its_callers_use_where_it_says_package_use() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "packages/setup.yml",
        &format!(
            "package: true
tasks:
  - key: system
    run: echo system > /system.txt && {}
  - key: tools
    use: [package.use, system]
    run: cat /base.txt /system.txt > /tools.txt && {}
",
            c.ping("system"),
            c.ping("tools")
        ),
    );
    f.write(
        "strata.yml",
        "tasks:
  - key: base
    run: echo base > /base.txt
  - key: setup
    use: base
    call: packages/setup.yml
  - key: after
    use: [setup.tools]
    run: cat /tools.txt
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("after"), ["base", "system"]);
    assert_eq!(c.take(), ["system", "tools"]);
    // `system` does not say `package.use`: a change of `base` does not reach it.
    f.write(
        "strata.yml",
        "tasks:
  - key: base
    run: echo base2 > /base.txt
  - key: setup
    use: base
    call: packages/setup.yml
  - key: after
    use: [setup.tools]
    run: cat /tools.txt
",
    );
    let r = f.run(&[]);
    assert_eq!(r.output("after"), ["base2", "system"]);
    assert_eq!(r.status("setup.system"), "restored");
    assert_eq!(c.take(), ["tools"]);
}

#[test]
fn hooks_a_package_writes_run_around_the_tasks_that_use_it() {
    let f = Fixture::new();
    f.write(
        "pkgs/acme/login/rwx-package.yml",
        "name: acme/login
version: 1.0.0
tasks:
  - key: hooks
    run: |
      printf '#!/bin/sh\\necho \"before as $WHO\"\\n' > \"$RWX_HOOKS_BEFORE_TASK/login.sh\"
      printf '#!/bin/sh\\necho after\\n' > \"$RWX_HOOKS_AFTER_TASK/logout.sh\"
      chmod +x \"$RWX_HOOKS_BEFORE_TASK/login.sh\" \"$RWX_HOOKS_AFTER_TASK/logout.sh\"
",
    );
    f.write(
        "strata.yml",
        "tasks:
  - key: login
    call: acme/login 1.0.0
  - key: work
    use: [login]
    env: {WHO: me}
    run: echo work
  - key: fails
    use: [login]
    run: echo failing; false; echo not reached
",
    );
    let args = ["--packages", &packages(&f)];
    let r = f.run(&args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.output("work"), ["before as me", "work", "after"]);
    // The after-task hooks run whatever the command's status, which is the task's.
    assert_eq!(r.output("fails"), ["before as ", "failing", "after"]);
    assert_eq!(r.status("fails"), "failed");
    assert_eq!(r.output("login.hooks"), Vec::<String>::new());
    // Restored from the cache, the hooks are still in the layer.
    f.write(
        "strata.yml",
        "tasks:
  - key: login
    call: acme/login 1.0.0
  - key: work
    use: [login]
    env: {WHO: me}
    run: echo work again
",
    );
    let r = f.run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("login.hooks"), "restored");
    assert_eq!(r.output("work"), ["before as me", "work again", "after"]);
}

#[test]
fn a_clone_of_another_repository_calls_the_git_clone_package() {
    let f = Fixture::new();
    // A stand-in for RWX's `git/clone`, written for this test.
    f.write(
        "pkgs/git/clone/rwx-package.yml",
        "name: git/clone
version: 1.6.0
parameters:
  repository: {required: true}
  ref: {required: true}
  path: {default: ./}
tasks:
  - key: clone
    run: mkdir -p \"${{ params.path }}\" && echo \"${{ params.repository }}@${{ params.ref }}\" > \"${{ params.path }}/CLONED\"
",
    );
    f.write(".rwx/src.txt", "mine\n");
    f.write(
        ".rwx/ci.yml",
        "tasks:
  - key: code
    call: git/clone 1.6.7
    with:
      repository: https://example.com/me/ws.git
      ref: main
  - key: lib
    call: git/clone 1.6.7
    with:
      repository: https://example.com/other/lib.git
      ref: v1
      path: lib
  - key: both
    use: [code, lib]
    run: cat .rwx/src.txt lib/CLONED
",
    );
    git(f.ws(), &["init", "-q", "-b", "main"]);
    git(
        f.ws(),
        &["remote", "add", "origin", "git@example.com:me/ws.git"],
    );
    git(f.ws(), &["add", "."]);
    git(f.ws(), &["commit", "-q", "-m", "init"]);
    let r = f.run(&["--packages", &packages(&f), ".rwx/ci.yml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The workspace's own repository is served from the checkout; the other is cloned by the
    // package (here: the stand-in).
    assert_eq!(r.status("code.clone"), "absent");
    assert_eq!(r.status("lib.clone"), "ran");
    assert_eq!(
        r.output("both"),
        ["mine", "https://example.com/other/lib.git@v1"]
    );
    // Without a source holding `git/clone` it is an error at the `repository` line.
    let out = f.output(&["check", ".rwx/ci.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no package source: nothing to decide: {stderr}"
    );
    std::fs::remove_dir_all(f.ws().join("pkgs/git")).unwrap();
    f.write(
        "pkgs/acme/x/rwx-package.yml",
        "name: acme/x\nversion: 1.0.0\ntasks:\n  - key: a\n    run: echo\n",
    );
    let out = f.output(&["run", "--packages", &packages(&f), ".rwx/ci.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is not a remote of the workspace")
            && stderr.contains("holding `git/clone`"),
        "{stderr}"
    );
    // At the `repository:` value, in its file.
    let at = stderr
        .split("ci.yml:")
        .nth(1)
        .and_then(|rest| rest.split(": task").next())
        .unwrap_or_default();
    assert!(
        at.split(':').count() == 2 && at.split(':').all(|n| n.parse::<u32>().is_ok()),
        "no line and column: {stderr}"
    );
}

#[test]
fn package_sources_from_the_environment_the_config_file_and_git() {
    let f = Fixture::new();
    let c = Counter::start();
    write_greet(&f, &c);
    f.write(
        "strata.yml",
        "tasks:\n  - key: greet\n    call: acme/greet 1.2.0\n    with: {who: x}\n",
    );
    let check = |envs: &[(&str, String)], extra: &[&str]| {
        let mut args = vec!["check"];
        args.extend_from_slice(extra);
        args.push("strata.yml");
        let mut cmd = f.command(&args);
        cmd.env_remove("STRATA_PACKAGES")
            .env("STRATA_CONFIG", f.ws().join("none.yaml"));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    f.write("none.yaml", "");
    let (code, stderr) = check(&[], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("no package source"), "{stderr}");
    let (code, stderr) = check(&[("STRATA_PACKAGES", packages(&f))], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("no package source"), "{stderr}");
    // The config file's `packages:`, relative to the file.
    f.write("conf/config.yaml", "packages:\n  - ../pkgs\n");
    let (code, stderr) = check(
        &[(
            "STRATA_CONFIG",
            f.ws().join("conf/config.yaml").display().to_string(),
        )],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("no package source"), "{stderr}");
    // A git repository, cloned into the cache directory.
    let repo = f.ws().join("repo");
    std::fs::create_dir_all(repo.join("acme")).unwrap();
    let copy = std::process::Command::new("cp")
        .args(["-r"])
        .arg(f.ws().join("pkgs/acme/greet"))
        .arg(repo.join("acme/greet"))
        .status()
        .unwrap();
    assert!(copy.success());
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "packages"]);
    let url = format!("file://{}", repo.display());
    let r = f.run(&["--packages", &url]);
    assert_eq!(r.code, 0, "{} {:?}", r.stderr, r.events);
    assert_eq!(r.status("greet.say"), "ran");
    assert!(
        std::fs::read_dir(f.cache.path().join("package-sources"))
            .unwrap()
            .next()
            .is_some(),
        "the clone is in the cache directory"
    );
}

#[test]
fn a_call_that_cannot_run_keeps_only_the_tasks_that_need_it_from_running() {
    let f = Fixture::new();
    f.write("none.yaml", "");
    f.write(
        "strata.yml",
        "tasks:
  - key: lint
    run: echo lint ok
  - key: gh
    call: acme/greet 1.2.0
  - key: publish
    use: gh
    run: echo publishing
",
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.push("strata.yml");
        let out = f
            .command(&args)
            .env_remove("STRATA_PACKAGES")
            .env("STRATA_CONFIG", f.ws().join("none.yaml"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // `lint` needs nothing the file cannot run: it runs.
    let (code, stdout, stderr) = run(&["--target", "lint"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("lint ok") || stderr.contains("lint ok"),
        "{stdout}{stderr}"
    );
    assert!(!stderr.contains("cannot run yet"), "{stderr}");
    // `publish` needs `gh`, whose call has no package source: refused, with the task named,
    // and nothing run.
    let (code, stdout, stderr) = run(&["--target", "publish"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no package source") && stderr.contains("(task `gh`)"),
        "{stderr}"
    );
    assert!(!stdout.contains("publishing") && stderr.contains("nothing was run"));
    // The whole file needs it too.
    let (code, _, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no package source"), "{stderr}");
}

#[test]
fn each_leg_of_a_parallel_call_gives_its_own_init_and_with() {
    let f = Fixture::new();
    let c = Counter::start();
    write_greet(&f, &c);
    f.write(
        "leg.yml",
        "tasks:
  - key: show
    run: echo \"version ${{ init.version }}\"
",
    );
    f.write(
        "strata.yml",
        "tasks:
  - key: legs
    parallel:
      matrix:
        version: [\"1\", \"2\"]
    call: ${{ run.dir }}/leg.yml
    init:
      version: ${{ parallel.version }}
  - key: greet
    parallel:
      values: [{name: ann}, {name: bob}]
    call: acme/greet 1.2.0
    with:
      who: ${{ parallel.name }}-${{ parallel.index }}
  - key: show-0
    use: greet-0
    run: cat /greeting.txt
  - key: show-1
    use: greet-1
    run: cat /greeting.txt
",
    );
    let r = f.run(&["--packages", &packages(&f)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("legs-0.show"), ["version 1"]);
    assert_eq!(r.output("legs-1.show"), ["version 2"]);
    assert_eq!(r.output("show-0"), ["hello, ann-0!"]);
    assert_eq!(r.output("show-1"), ["hello, bob-1!"]);
    // Each leg is keyed on its own arguments: a second run restores both.
    let r = f.run(&["--packages", &packages(&f)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for task in ["legs-0.show", "legs-1.show", "greet-0.say", "greet-1.say"] {
        assert_eq!(r.status(task), "restored", "{task}");
    }
    drop(c);
}

#[test]
fn a_mint_leaf_is_a_package_whose_tasks_read_mint_leaf_path() {
    let f = Fixture::new();
    let c = Counter::start();
    write_greet(&f, &c);
    f.write(
        "leaves/mint/hello/mint-leaf.yml",
        "name: mint/hello
version: 1.0.3
parameters:
  name:
    required: true
tasks:
  - key: greet
    run: |
      \"$MINT_LEAF_PATH/bin/hello\" \"${{ params.name }}\"
      test \"$MINT_LEAF_PATH\" = \"$RWX_PACKAGE_PATH\"
",
    );
    f.write(
        "leaves/mint/hello/bin/hello",
        "#!/bin/sh\necho \"hello, $1 (a leaf)\"\n",
    );
    std::fs::set_permissions(
        f.ws().join("leaves/mint/hello/bin/hello"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    f.write(
        "strata.yml",
        "tasks:
  - key: hi
    call: mint/hello 1.0.0
    with:
      name: world
",
    );
    let leaves = f.ws().join("leaves").display().to_string();
    let r = f.run(&["--packages", &leaves, "--packages", &packages(&f)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("hi.greet"), ["hello, world (a leaf)"]);
    // Restored the second time.
    let r = f.run(&["--packages", &leaves, "--packages", &packages(&f)]);
    assert_eq!(r.status("hi.greet"), "restored");
    drop(c);
}
