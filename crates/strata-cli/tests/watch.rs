//! `strata watch` as a user runs it: a process beside the runs, which then take the workspace's
//! files from its answers, with the same keys as a walk gives.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use common::*;

const PIPELINE: &str = "tasks:\n  - key: show\n    workspace: true\n    run: cat src/a.txt\n";

/// A `strata watch` process, killed if a test ends without stopping it.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `strata watch` in the fixture and waits until it says it is watching.
fn start_watch(f: &Fixture) -> Watch {
    let mut child = f
        .command(&["watch"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("watching "), "{line}");
    Watch(child)
}

fn sockets(f: &Fixture) -> Vec<std::path::PathBuf> {
    let Ok(dir) = std::fs::read_dir(f.cache.path().join("watch")) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect()
}

/// The key `strata plan` prints for the only task, and its stderr.
fn plan(f: &Fixture, cache: &std::path::Path) -> (String, String) {
    let out = f
        .command(&["plan"])
        .env("STRATA_CACHE_DIR", cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = stdout
        .lines()
        .find(|l| l.starts_with("show"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    (key, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn runs_take_the_workspace_from_the_watcher_with_the_keys_a_walk_gives() {
    let f = Fixture::new();
    f.write("strata.yml", PIPELINE);
    f.write("src/a.txt", "one\n");
    f.write("src/b.txt", "b\n");
    let other = CacheDir::new("strata-cache-nowatch-");
    let mut watch = start_watch(&f);
    assert_eq!(sockets(&f).len(), 1);

    let first = f.run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.output("show"), vec!["one"]);

    // Unchanged: the watcher answers, nothing is walked, the key is the walk's.
    let (key, stderr) = plan(&f, f.cache.path());
    assert!(
        stderr.contains("workspace files from `strata watch` (0 changed paths"),
        "{stderr}"
    );
    assert_eq!(key, plan(&f, other.path()).0);

    // An edit of the same size: only the watcher's event can tell the run.
    f.write("src/a.txt", "two\n");
    let (edited, stderr) = plan(&f, f.cache.path());
    assert!(stderr.contains("(1 changed paths"), "{stderr}");
    assert_ne!(edited, key);
    assert_eq!(edited, plan(&f, other.path()).0);
    let second = f.run(&[]);
    assert_eq!(second.status("show"), "ran", "{}", second.stderr);
    assert_eq!(second.output("show"), vec!["two"]);

    // A new directory: walked, and still the same key as a walk.
    f.write("src/more/c.txt", "c\n");
    let (walked, stderr) = plan(&f, f.cache.path());
    assert!(!stderr.contains("strata watch"), "{stderr}");
    assert_eq!(walked, plan(&f, other.path()).0);

    // A run in another mount namespace (a container) sees other mounts than the watcher: it
    // walks.
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .arg("plan")
        .env("STRATA_CACHE_DIR", f.cache.path())
        .current_dir(f.ws())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("strata watch"), "{stderr}");

    // Stopped by SIGTERM: it exits cleanly and leaves no socket; runs walk again.
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(watch.0.id() as i32, libc::SIGTERM) }, 0);
    let status = watch.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(sockets(&f).is_empty());
    let (after, stderr) = plan(&f, f.cache.path());
    assert!(!stderr.contains("strata watch"), "{stderr}");
    assert_eq!(after, walked);
}

#[test]
fn a_second_watcher_of_the_same_workspace_and_cache_is_refused() {
    let f = Fixture::new();
    f.write("strata.yml", PIPELINE);
    f.write("src/a.txt", "one\n");
    let mut watch = start_watch(&f);
    let out = f.output(&["watch"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already answering"), "{stderr}");
    // The first one still serves (the first capture walks, the next asks).
    plan(&f, f.cache.path());
    let (_, stderr) = plan(&f, f.cache.path());
    assert!(stderr.contains("strata watch"), "{stderr}");
    watch.0.kill().unwrap();
    watch.0.wait().unwrap();
    // Killed, it leaves its socket behind: runs walk, and a new watcher takes the socket over.
    assert_eq!(sockets(&f).len(), 1);
    let (_, stderr) = plan(&f, f.cache.path());
    assert!(!stderr.contains("strata watch"), "{stderr}");
    let _again = start_watch(&f);
    plan(&f, f.cache.path());
    let (_, stderr) = plan(&f, f.cache.path());
    assert!(stderr.contains("strata watch"), "{stderr}");
}

#[test]
fn with_the_watcher_a_checkout_edited_while_a_task_runs_is_still_never_cached() {
    // After a task shown the checkout itself, the run asks the watcher what changed rather
    // than looking at every file again: an edit during the task must still keep its result
    // out of the cache, and a task nothing changed under must still be cached.
    let f = Fixture::new();
    f.write("src/a.txt", "one");
    f.write("src/b.txt", "b");
    f.write("docs/c.md", "c");
    f.write(
        "strata.yml",
        "tasks:\n  - key: slow\n    filter: [src/**]\n    run: sleep 2 && cat src/*\n",
    );
    checkout(&f);
    let _watch = start_watch(&f);

    // Something the task is not shown changes: its result is cached.
    let run = run_while(&f, "slow", || f.write("docs/c.md", "edited"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.event("task-started", "slow").unwrap()["workspace"],
        "checkout"
    );
    assert_eq!(run.event("task-passed", "slow").unwrap()["stored"], true);

    // A file it is shown changes: used, not cached, and said.
    f.write("src/a.txt", "two");
    let run = run_while(&f, "slow", || f.write("src/a.txt", "three"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.event("task-passed", "slow").unwrap()["stored"], false);
    let warned = run.events.iter().any(|e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("src/a.txt changed") && m.contains("not cached"))
    });
    assert!(warned, "{:?}", run.events);

    // A new name beside the files it is shown: the same.
    f.write("src/a.txt", "four");
    let run = run_while(&f, "slow", || f.write("src/late.txt", "late"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.event("task-passed", "slow").unwrap()["stored"], false);
}

#[test]
fn with_the_watcher_a_git_directory_changed_while_a_task_runs_is_never_cached() {
    // preserve-git-dir: the task is shown `.git/…` through the checkout; the watcher does not
    // watch inside `.git` (but `.git` itself and `info/`).
    let f = Fixture::new();
    f.write("a.txt", "a");
    f.write(
        "strata.yml",
        "tasks:
  - key: code
    call: mint/git-clone 1.6.0
    with:
      repository: https://example.com/team/app
      ref: main
      preserve-git-dir: true
  - key: tags
    use: code
    run: sleep 2 && git tag -l > tags.txt
  - key: show
    use: tags
    cache: false
    run: cat tags.txt
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
    git(f.ws(), &["tag", "v0"]);
    let _watch = start_watch(&f);

    // A tag made while the task runs: the task sees it (`git tag -l` prints it), its key does not.
    let run = run_while(&f, "tags", || {
        git(f.ws(), &["tag", "v1"]);
    });
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.event("task-started", "tags").unwrap()["workspace"],
        "checkout"
    );
    let passed = run.event("task-passed", "tags").unwrap().clone();
    // Poisoned if stored: delete the tag, and the key is the one the task ran under.
    git(f.ws(), &["tag", "-d", "v1"]);
    let again = f.command(&["run", "--json"]).output().unwrap();
    let again = RunResult::of(&again);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(passed["stored"], false, "the result was cached");
    assert_eq!(run.output("show"), ["v0", "v1"]);
    assert_eq!(again.status("tags"), "ran", "{}", again.stderr);
    assert_eq!(again.output("show"), ["v0"]);
}
