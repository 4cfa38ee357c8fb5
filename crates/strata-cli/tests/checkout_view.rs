//! A task's `/workspace` served from the checkout itself (`checkout_view.rs`): what it shows,
//! that it matches the tree it replaces, and that a checkout edited under a running task never
//! becomes a cache entry. End to end, as root.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{Fixture, RunResult, checkout, git, run_while};
use serde_json::Value;

fn started<'a>(run: &'a RunResult, task: &str) -> &'a Value {
    run.event("task-started", task)
        .unwrap_or_else(|| panic!("no task-started for {task}: {:?}", run.events))
}

/// The same run on an empty cache of its own, the workspace given as a tree of the cache's
/// copies (the way it was before the checkout view); it must pass.
fn run_as_tree(f: &Fixture) -> RunResult {
    let other = common::CacheDir::new("strata-cache-tree-");
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_CACHE_DIR", other.path())
        .env("STRATA_WORKSPACE_TREE", "1")
        .output()
        .unwrap();
    let tree = RunResult::of(&out);
    assert_eq!(tree.code, 0, "{}", tree.stderr);
    tree
}

fn layer(run: &RunResult, task: &str) -> String {
    run.event("task-passed", task).expect("task-passed")["layer"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_task_sees_exactly_its_files_of_the_checkout_itself_and_writes_only_its_layer() {
    let f = Fixture::new();
    f.write(".gitignore", "target/\n");
    f.write("src/a.txt", "alpha");
    f.write("src/deep/b.txt", "beta");
    f.write("docs/readme.md", "docs");
    f.write("target/junk", "ignored");
    std::fs::create_dir_all(f.ws().join("empty")).unwrap();
    f.write(
        "strata.yml",
        "tasks:
  - key: whole
    workspace: true
    run: |
      find . | sort
      stat -c %i src/a.txt
      echo new > src/new.txt
      echo changed > src/a.txt
  - key: narrow
    filter: [src/**]
    run: |
      find . | sort
      mkdir dist && cat src/a.txt src/deep/b.txt > dist/out
",
    );
    checkout(&f);
    let inode = std::fs::metadata(f.ws().join("src/a.txt")).unwrap().ino();

    let run = f.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for task in ["whole", "narrow"] {
        assert_eq!(started(&run, task)["workspace"], "checkout", "{task}");
    }
    // Neither `.git`, nor ignored files, nor empty directories, nor what the filter leaves out.
    assert_eq!(
        run.output("whole"),
        [
            ".",
            "./.gitignore",
            "./docs",
            "./docs/readme.md",
            "./src",
            "./src/a.txt",
            "./src/deep",
            "./src/deep/b.txt",
            "./strata.yml",
            &inode.to_string(),
        ]
    );
    assert_eq!(
        run.output("narrow"),
        [
            ".",
            "./src",
            "./src/a.txt",
            "./src/deep",
            "./src/deep/b.txt"
        ]
    );
    // The checkout itself is untouched; the writes are the tasks' layers.
    assert_eq!(
        std::fs::read_to_string(f.ws().join("src/a.txt")).unwrap(),
        "alpha"
    );
    assert!(!f.ws().join("src/new.txt").exists());
    assert!(!f.ws().join("dist").exists());
    let layers = f.cache.path().join("layers");
    let whole = layers.join(layer(&run, "whole"));
    assert_eq!(
        std::fs::read_to_string(whole.join("workspace/src/a.txt")).unwrap(),
        "changed\n"
    );
    assert!(whole.join("workspace/src/new.txt").is_file());
    assert!(!whole.join("workspace/docs").exists());
    let narrow = layers.join(layer(&run, "narrow"));
    assert_eq!(
        std::fs::read_to_string(narrow.join("workspace/dist/out")).unwrap(),
        "alphabeta"
    );
    assert!(!narrow.join("workspace/src").exists());

    // The same layers as a tree of the cache's copies gives (the way it was before).
    let tree = run_as_tree(&f);
    assert!(
        started(&tree, "whole")["workspace"]
            .as_str()
            .unwrap()
            .starts_with("tree:")
    );
    assert_ne!(tree.output("whole").last().unwrap(), &inode.to_string());
    for task in ["whole", "narrow"] {
        assert_eq!(layer(&tree, task), layer(&run, task), "{task}");
    }
}

#[test]
fn what_a_used_task_wrote_into_the_workspace_shows_above_the_checkout() {
    let f = Fixture::new();
    f.write("package.json", "{}\n");
    f.write("stale.txt", "to be removed by install");
    f.write(
        "strata.yml",
        "tasks:
  - key: install
    workspace: true
    run: mkdir -p node_modules/left && echo pad > node_modules/left/index.js && rm stale.txt
  - key: build
    use: [install]
    workspace: true
    run: |
      cat node_modules/left/index.js package.json
      test ! -e stale.txt && echo stale-gone
      echo built > out.txt
",
    );
    checkout(&f);
    let run = f.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(started(&run, "build")["workspace"], "checkout");
    assert_eq!(run.output("build"), ["pad", "{}", "stale-gone"]);
    // A filtered task over a used task's workspace files needs their merged tree.
    f.write(
        "strata.yml",
        "tasks:
  - key: install
    workspace: true
    run: mkdir -p node_modules/left && echo pad > node_modules/left/index.js
  - key: build
    use: [install]
    filter: [package.json, node_modules/**]
    run: cat node_modules/left/index.js package.json
",
    );
    let run = f.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let how = started(&run, "build")["workspace"].as_str().unwrap();
    assert!(how.starts_with("tree:"), "{how}");
    assert_eq!(run.output("build"), ["pad", "{}"]);
}

#[test]
fn a_checkout_edited_while_a_task_runs_is_used_but_never_cached() {
    let f = Fixture::new();
    f.write("src/a.txt", "one");
    f.write(
        "strata.yml",
        "tasks:
  - key: slow
    filter: [src/**]
    run: sleep 2 && cat src/*
",
    );
    checkout(&f);
    // An edit of a file the task sees.
    let run = run_while(&f, "slow", || f.write("src/a.txt", "two"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(started(&run, "slow")["workspace"], "checkout");
    let passed = run.event("task-passed", "slow").unwrap();
    assert_eq!(passed["stored"], false, "{passed}");
    let warning = run
        .events
        .iter()
        .find(|e| e["event"] == "warning")
        .expect("a warning");
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains("src/a.txt changed") && message.contains("not cached"),
        "{message}"
    );
    // Nothing was stored, so the next run builds again, keyed on what it sees now.
    let again = f.run(&[]);
    assert_eq!(again.status("slow"), "ran");
    assert_eq!(again.output("slow"), ["two"]);
    assert_eq!(again.event("task-passed", "slow").unwrap()["stored"], true);

    // A new file in a directory the task sees.
    f.write("src/a.txt", "three");
    let run = run_while(&f, "slow", || f.write("src/late.txt", "late"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.event("task-passed", "slow").unwrap()["stored"], false);
    assert!(
        run.events.iter().any(|e| e["event"] == "warning"
            && e["message"]
                .as_str()
                .unwrap()
                .contains("src/late.txt appeared")),
        "{:?}",
        run.events
    );
    // A file in a directory the task does not see changes nothing.
    std::fs::remove_file(f.ws().join("src/late.txt")).unwrap();
    f.write("other/x", "x");
    let run = run_while(&f, "slow", || f.write("other/x", "y"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.event("task-passed", "slow").unwrap()["stored"], true);
}

#[test]
fn a_checkout_cloned_by_another_user_is_shown_as_root_s() {
    let f = Fixture::new();
    f.write("src/a.txt", "alpha");
    f.write(
        "strata.yml",
        "tasks:
  - key: look
    filter: [src/**]
    run: |
      stat -c '%u %g' . src src/a.txt
      cat src/a.txt
      echo more >> src/a.txt
",
    );
    checkout(&f);
    let chown = |owner: &str, path: &std::path::Path| {
        let status = std::process::Command::new("chown")
            .args(["-R", owner])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    };
    // As actions/checkout leaves it: everything the CI's user's.
    chown("1234:1234", f.ws());
    let run = f.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(started(&run, "look")["workspace"], "checkout");
    // Through an idmapped mount: root's, as a layer's files are, whoever cloned.
    assert_eq!(run.output("look"), ["0 0", "0 0", "0 0", "alpha"]);
    let dir = f.cache.path().join("layers").join(layer(&run, "look"));
    let copied = std::fs::metadata(dir.join("workspace/src/a.txt")).unwrap();
    assert_eq!((copied.uid(), copied.gid()), (0, 0));
    assert_eq!(
        std::fs::read_to_string(dir.join("workspace/src/a.txt")).unwrap(),
        "alphamore\n"
    );
    // The checkout itself is untouched, and still its user's.
    let original = std::fs::metadata(f.ws().join("src/a.txt")).unwrap();
    assert_eq!((original.uid(), original.gid()), (1234, 1234));
    assert_eq!(
        std::fs::read_to_string(f.ws().join("src/a.txt")).unwrap(),
        "alpha"
    );
    // The same layer as a tree of root's copies gives.
    let tree = run_as_tree(&f);
    assert_eq!(tree.output("look"), ["0 0", "0 0", "0 0", "alpha"]);
    assert_eq!(layer(&tree, "look"), layer(&run, "look"));

    // Files of two owners cannot both be shown as root's: a tree.
    f.write("src/a.txt", "beta");
    chown("999:999", &f.ws().join("src/a.txt"));
    let run = f.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let how = started(&run, "look")["workspace"].as_str().unwrap();
    assert!(
        how.starts_with("tree:") && how.contains("owned by 999:999"),
        "{how}"
    );
    assert_eq!(run.output("look"), ["0 0", "0 0", "0 0", "beta"]);
}

#[test]
fn a_clone_with_a_path_shows_the_checkout_at_that_path() {
    let f = Fixture::new();
    f.write("src/lib.rs", "pub fn a() {}");
    f.write("docs/guide.md", "guide");
    f.write(
        ".rwx/ci.yml",
        "tasks:
  - key: code
    call: git/clone 2.0.8
    with:
      repository: https://example.com/team/app.git
      ref: main
      path: app
  - key: build
    use: [code]
    run: |
      find /workspace | sort
      echo out > app/out.txt
",
    );
    checkout(&f);
    git(
        f.ws(),
        &[
            "remote",
            "add",
            "origin",
            "https://example.com/team/app.git",
        ],
    );
    let pipeline = f.ws().join(".rwx/ci.yml");
    let run = f.run(&[pipeline.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(started(&run, "build")["workspace"], "checkout");
    assert_eq!(
        run.output("build"),
        [
            "/workspace",
            "/workspace/app",
            "/workspace/app/.rwx",
            "/workspace/app/.rwx/ci.yml",
            "/workspace/app/docs",
            "/workspace/app/docs/guide.md",
            "/workspace/app/src",
            "/workspace/app/src/lib.rs",
        ]
    );
    let layer = f.cache.path().join("layers").join(layer(&run, "build"));
    assert!(layer.join("workspace/app/out.txt").is_file());
    assert!(!f.ws().join("out.txt").exists());
}
