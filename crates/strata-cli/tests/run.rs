//! `strata run` end to end, as root, on real overlay mounts and namespaces.

mod common;

use std::time::Duration;

use common::{Counter, Fixture, host_mounts_mentioning, processes_with};

#[test]
fn an_unchanged_pipeline_runs_no_command_the_second_time() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write("src/main.txt", "hello");
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: a\n    run: {}\n  - key: b\n    use: [a]\n    run: {}\n  - key: c\n    use: [a, b]\n    run: {}\n",
            c.ping("a"),
            c.ping("b"),
            c.ping("c")
        ),
    );
    let first = f.run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(c.take(), vec!["a", "b", "c"]);
    for t in ["a", "b", "c"] {
        assert_eq!(first.status(t), "ran");
    }

    let second = f.run(&[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        c.take(),
        Vec::<String>::new(),
        "no command may run on an unchanged pipeline"
    );
    for t in ["a", "b", "c"] {
        assert_eq!(second.status(t), "restored");
    }
    assert!(
        second.wall < Duration::from_millis(1000),
        "second run took {:?}",
        second.wall
    );
}

#[test]
fn a_filtered_file_change_reruns_that_task_and_its_dependents_only() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write("x.txt", "x1");
    f.write("y.txt", "y1");
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: x\n    filter: [x.txt]\n    run: cat x.txt > /x.out; {}\n  - key: y\n    filter: [y.txt]\n    run: test ! -e x.txt; {}\n  - key: z\n    use: [x]\n    filter: []\n    run: cat /x.out; {}\n",
            c.ping("x"),
            c.ping("y"),
            c.ping("z")
        ),
    );
    assert_eq!(f.run(&[]).code, 0);
    assert_eq!(c.take(), vec!["x", "y", "z"]);
    f.write("x.txt", "x2");
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.take(), vec!["x", "z"]);
    assert_eq!(r.status("y"), "restored");
    assert_eq!(r.output("z"), vec!["x2"]);
    // A file outside every filter changes nothing.
    f.write("other.txt", "new");
    let r = f.run(&[]);
    assert_eq!(c.take(), Vec::<String>::new());
    assert_eq!(r.status("x"), "restored");
}

#[test]
fn deletions_and_replaced_directories_in_a_parent_reach_the_child() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        r#"tasks:
  - key: make
    run: |
      mkdir -p /opt/d/sub && echo a > /opt/d/a && echo b > /opt/d/sub/b && echo gone > /opt/file
  - key: change
    use: [make]
    run: |
      rm /opt/file
      rm -rf /opt/d && mkdir /opt/d && echo c > /opt/d/c
      rm /etc/debian_version
  - key: check
    use: [change]
    run: |
      test ! -e /opt/file
      test ! -e /etc/debian_version
      ls /opt/d
"#,
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}\n{:?}", r.stderr, r.events);
    assert_eq!(r.output("check"), vec!["c"]);
    // And the same when everything comes from the cache.
    let r = f.run(&["--no-cache", "--target", "check"]);
    assert_eq!(r.output("check"), vec!["c"]);
}

#[test]
fn exported_env_reaches_the_child_and_is_part_of_its_key() {
    let f = Fixture::new();
    let pipeline = |value: &str| {
        format!(
            "tasks:\n  - key: p\n    run: |\n      echo {value} > $STRATA_ENV/GREETING\n      printf '/opt/tool/bin\\n' > $MINT_ENV/PATH\n  - key: c\n    use: [p]\n    run: echo \"$GREETING $PATH\"\n"
        )
    };
    f.write("strata.yml", &pipeline("hello"));
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.output("c"),
        vec!["hello /opt/tool/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    let key_before = r.summary()["tasks"]["c"]["key"].clone();
    f.write("strata.yml", &pipeline("bonjour"));
    let r = f.run(&[]);
    assert_eq!(r.status("p"), "ran");
    assert_eq!(r.status("c"), "ran");
    assert_ne!(r.summary()["tasks"]["c"]["key"], key_before);
    assert!(r.output("c")[0].starts_with("bonjour "));
}

#[test]
fn a_parent_that_reruns_with_identical_output_leaves_its_child_a_hit() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write("input.txt", "one");
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: parent\n    filter: [input.txt]\n    run: wc -c < input.txt > /dev/null; echo fixed > /out; {}\n  - key: child\n    use: [parent]\n    filter: []\n    run: cat /out; {}\n",
            c.ping("parent"),
            c.ping("child")
        ),
    );
    assert_eq!(f.run(&[]).code, 0);
    assert_eq!(c.take(), vec!["child", "parent"]);
    f.write("input.txt", "two");
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("parent"), "ran");
    assert_eq!(r.status("child"), "restored");
    assert_eq!(c.take(), vec!["parent"]);
}

#[test]
fn the_last_parent_in_use_wins() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: a\n    run: echo a > /same\n  - key: b\n    run: echo b > /same\n  - key: ab\n    use: [a, b]\n    run: cat /same\n  - key: ba\n    use: [b, a]\n    run: cat /same\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("ab"), vec!["b"]);
    assert_eq!(r.output("ba"), vec!["a"]);
}

#[test]
fn a_failing_task_is_not_cached_and_its_dependents_are_skipped() {
    let f = Fixture::new();
    let c = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: bad\n    run: {}; echo partial > /left-behind; echo oops; exit 7\n  - key: after-bad\n    use: [bad]\n    run: {}\n  - key: independent\n    run: sleep 0.3; {}\n",
            c.ping("bad"),
            c.ping("after-bad"),
            c.ping("independent")
        ),
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.status("bad"), "failed");
    assert_eq!(r.status("after-bad"), "skipped");
    assert_eq!(r.status("independent"), "ran");
    assert_eq!(c.take(), vec!["bad", "independent"]);
    let failed = r.event("task-failed", "bad").unwrap();
    assert_eq!(failed["exit_code"], 7);
    assert!(
        failed["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "oops")
    );
    let kept = std::path::PathBuf::from(failed["kept_upper"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(kept.join("left-behind")).unwrap(),
        "partial\n"
    );

    // Not cached: it runs again; the independent task is restored.
    let r = f.run(&[]);
    assert_eq!(r.status("bad"), "failed");
    assert_eq!(r.status("independent"), "restored");
    assert_eq!(c.take(), vec!["bad"]);
}

#[test]
fn fail_fast_starts_nothing_after_a_failure() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: bad\n    run: exit 1\n  - key: later\n    after: [slow]\n    run: true\n  - key: slow\n    run: sleep 0.5\n",
    );
    let r = f.run(&["--fail-fast", "-j", "2"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.status("bad"), "failed");
    assert_eq!(r.status("slow"), "ran");
    assert_eq!(r.status("later"), "skipped");
}

#[test]
fn targets_run_only_what_they_need() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: a\n    run: true\n  - key: b\n    use: [a]\n    run: true\n  - key: unrelated\n    run: true\n",
    );
    let r = f.run(&["--target", "b"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.status("a"), "ran");
    assert_eq!(r.status("b"), "ran");
    assert_eq!(r.status("unrelated"), "absent");
    let bad = f.run(&["--target", "nope"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("no task named `nope`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_timeout_kills_the_whole_task() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: slow\n    timeout: 1s\n    run: (sleep 4321 &) ; sleep 4322\n",
    );
    let watcher = std::thread::spawn(|| {
        // While the task runs, its processes must be visible, or the checks below prove nothing.
        std::thread::sleep(Duration::from_millis(700));
        !processes_with("sleep 4322").is_empty()
    });
    let r = f.run(&[]);
    assert!(
        watcher.join().unwrap(),
        "the task's processes were never seen running"
    );
    assert_eq!(r.code, 1);
    let failed = r.event("task-failed", "slow").unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("timed out"),
        "{failed}"
    );
    assert!(r.wall < Duration::from_secs(5), "took {:?}", r.wall);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        processes_with("sleep 4321").is_empty(),
        "a background process survived"
    );
    assert!(processes_with("sleep 4322").is_empty());
    assert!(host_mounts_mentioning(f.cache.path().to_str().unwrap()).is_empty());
}

#[test]
fn a_stack_of_more_than_100_layers_runs() {
    let f = Fixture::new();
    let mut yaml = String::from(
        "tasks:\n  - key: t0\n    run: mkdir -p /opt/layers && echo 0 > /opt/layers/0\n",
    );
    for i in 1..=120 {
        yaml.push_str(&format!(
            "  - key: t{i}\n    use: [t{}]\n    filter: []\n    run: echo {i} > /opt/layers/{i}\n",
            i - 1
        ));
    }
    yaml.push_str("  - key: count\n    use: [t120]\n    run: ls /opt/layers | wc -l\n");
    f.write("strata.yml", &yaml);
    let r = f.run(&["-j", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("count"), vec!["121"]);
}

#[test]
fn a_rootfs_base_is_the_bottom_of_the_stack_and_part_of_the_key() {
    let f = Fixture::new();
    let busybox = std::process::Command::new("sh")
        .args(["-c", "command -v busybox"])
        .output()
        .unwrap();
    assert!(
        busybox.status.success(),
        "this test needs busybox (scripts/test installs busybox-static)"
    );
    let busybox = String::from_utf8_lossy(&busybox.stdout).trim().to_string();
    let rootfs = f.ws().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("marker"), "tiny rootfs\n").unwrap();
    f.write(".gitignore", "rootfs/\n");
    f.write(
        "strata.yml",
        "base: {rootfs: rootfs}\ntasks:\n  - key: look\n    workspace: true\n    run: cat /marker; test ! -e /bin/bash && echo no-bash; ls /workspace\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}\n{:?}", r.stderr, r.events);
    assert_eq!(
        r.output("look"),
        vec!["tiny rootfs", "no-bash", "strata.yml"]
    );
    // Changing the base changes every key.
    std::fs::write(rootfs.join("marker"), "changed\n").unwrap();
    let r = f.run(&[]);
    assert_eq!(r.status("look"), "ran");
    assert_eq!(r.output("look")[0], "changed");

    // A package upgrade in the base: `explain` names the package and both versions.
    let status = |v: &str| {
        format!(
            "Package: tool\nStatus: install ok installed\nArchitecture: all\nVersion: {v}\n\nPackage: gone\nStatus: install ok installed\nVersion: 3\n"
        )
    };
    std::fs::create_dir_all(rootfs.join("var/lib/dpkg")).unwrap();
    std::fs::write(rootfs.join("var/lib/dpkg/status"), status("1.0")).unwrap();
    assert_eq!(f.run(&[]).status("look"), "ran");
    std::fs::write(
        rootfs.join("var/lib/dpkg/status"),
        status("1.1").replace(
            "Package: gone\nStatus: install ok installed\nVersion: 3\n",
            "",
        ),
    )
    .unwrap();
    let out = f.output(&["explain", "strata.yml", "look"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("base: package tool: 1.0 -> 1.1"), "{text}");
    assert!(
        text.contains("base: package gone: removed (was 3)"),
        "{text}"
    );
}

#[test]
fn an_edit_that_keeps_size_and_mtime_is_still_seen() {
    // The stat cache reuses digests of unchanged files; an edit that restores the old mtime
    // (`touch -r`, an editor that preserves it, a checkout) must still be noticed.
    let f = Fixture::new();
    let counter = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: t\n    filter: [input]\n    run: {}; cat input\n",
            counter.ping("t")
        ),
    );
    f.write("input", "aaaa\n");
    // Old enough to be trusted by the next capture.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let set_old = || {
        std::fs::File::options()
            .write(true)
            .open(f.ws().join("input"))
            .unwrap()
            .set_modified(old)
            .unwrap();
    };
    set_old();
    assert_eq!(f.run(&[]).code, 0);
    assert_eq!(f.run(&[]).status("t"), "restored");
    assert_eq!(counter.take(), vec!["t"]);
    std::thread::sleep(Duration::from_millis(20));
    f.write("input", "bbbb\n");
    set_old();
    let r = f.run(&[]);
    assert_eq!(r.status("t"), "ran");
    assert_eq!(r.output("t"), vec!["bbbb"]);
}

#[test]
fn two_tasks_of_one_run_with_the_same_key_run_it_once_and_say_so() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:
  - key: a
    run: sleep 0.5 && echo made > /made.txt
  - key: b
    run: sleep 0.5 && echo made > /made.txt
",
    );
    let r = f.run(&["--jobs", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let statuses = [r.status("a"), r.status("b")];
    assert!(
        statuses.contains(&"ran".to_string()) && statuses.contains(&"restored".to_string()),
        "{statuses:?}"
    );
    let waited = r
        .events
        .iter()
        .find(|e| e["event"] == "task-waiting")
        .expect("one waits for the other");
    let why = waited["why"].as_str().unwrap();
    assert!(
        why.contains("of this run") && !why.contains("another strata process"),
        "{why}"
    );
}
