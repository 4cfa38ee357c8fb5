//! `strata plan`, `strata explain` and `strata logs`.

mod common;

use common::Fixture;

#[test]
fn plan_shows_keys_and_hits() {
    let f = Fixture::new();
    f.write("a.txt", "1");
    f.write(
        "strata.yml",
        "tasks:\n  - key: a\n    filter: [a.txt]\n    run: cat a.txt\n  - key: b\n    use: [a]\n    run: true\n  - key: nocache\n    cache: false\n    run: true\n",
    );
    let out = f.output(&["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("miss: would run"), "{text}");
    assert!(text.contains("key known after `a` runs"), "{text}");
    let r = f.run(&[]);
    assert_eq!(r.code, 0);
    let out = f.output(&["plan", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status: Vec<(&str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["task"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        vec![("a", "hit"), ("b", "hit"), ("nocache", "uncached")]
    );
    assert_eq!(rows[0]["key"], r.summary()["tasks"]["a"]["key"]);
}

#[test]
fn explain_names_the_inputs_that_changed() {
    let f = Fixture::new();
    f.write("src/a.c", "int a;");
    f.write("src/b.c", "int b;");
    let pipeline = |cmd: &str, mode: &str| {
        format!(
            "tasks:\n  - key: base\n    filter: []\n    run: echo 1 > /v\n  - key: build\n    use: [base]\n    filter: [src]\n    env:\n      MODE: {mode}\n      TOKEN: {{value: secret, cache-key: excluded}}\n    run: {cmd}\n"
        )
    };
    f.write("strata.yml", &pipeline("ls src", "debug"));
    assert_eq!(f.run(&[]).code, 0);
    let out = f.output(&["explain", "strata.yml", "build"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("would be restored"));

    f.write("src/a.c", "int a = 1;");
    std::fs::remove_file(f.ws().join("src/b.c")).unwrap();
    f.write("src/c.c", "int c;");
    f.write("strata.yml", &pipeline("ls -l src", "release"));
    let out = f.output(&["explain", "strata.yml", "build"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "file src/a.c: content changed",
        "file src/b.c: removed",
        "file src/c.c: added",
        "env MODE: \"debug\" -> \"release\"",
        "command: \"ls src\" -> \"ls -l src\"",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("secret"),
        "excluded values must never be shown:\n{text}"
    );

    // A parent that must run makes the child's key unknown; its own inputs are still compared.
    f.write(
        "strata.yml",
        &pipeline("ls -l src", "release").replace("echo 1", "echo 2"),
    );
    let out = f.output(&["explain", "strata.yml", "build"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("because `base` must run first"), "{text}");
}

#[test]
fn explain_against_an_entry_of_an_older_key_version_names_the_version() {
    let f = Fixture::new();
    f.write("src/a.c", "int a;");
    f.write(
        "strata.yml",
        "tasks:\n  - key: build\n    filter: [src]\n    run: ls src\n",
    );
    assert_eq!(f.run(&[]).code, 0);
    // Take the entry back to what key version 3 recorded: its workspace files named by 64-digit
    // BLAKE3 ids, which today's 40-digit git ids do not parse.
    let db = f.cache.path().join("index.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE entries SET inputs = replace(inputs, '\"version\":4', '\"version\":3')",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    // Version 3 kept the list as JSON text, as every version before the binary lists did.
    let old = format!(
        r#"[{{"path":"src/a.c","mode":420,"kind":{{"File":{{"digest":"{}","size":6}}}}}}]"#,
        "ab".repeat(32)
    );
    let changed = conn
        .execute("UPDATE workspaces SET files = ?1", [&old])
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    // An older strata's entries never match today's keys: something else must change for
    // `explain` to compare at all.
    f.write(
        "strata.yml",
        "tasks:\n  - key: build\n    filter: [src]\n    run: ls -l src\n",
    );

    let out = f.output(&["explain", "strata.yml", "build"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("key recipe: version 3 -> 4"), "{text}");
    // Files recorded in another id format are not compared: no file is named as changed.
    assert!(!text.contains("file src/a.c"), "{text}");
}

#[test]
fn logs_prints_the_saved_log() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: talk\n    run: echo out; echo err >&2\n",
    );
    assert_eq!(f.run(&[]).code, 0);
    let out = f.output(&["logs", "strata.yml", "talk"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\nerr\n");
}

#[test]
fn the_terminal_display_prefixes_output_and_ends_with_a_summary() {
    let f = Fixture::new();
    f.write("strata.yml", "tasks:\n  - key: hello\n    run: echo hi there\n  - key: bad\n    run: echo nope; exit 2\n");
    let out = f.output(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hello | hi there"), "{err}");
    assert!(err.contains("bad ✗ failed"), "{err}");
    assert!(err.contains("command exited with status 2"), "{err}");
    assert!(
        err.contains("failed: 1 ran, 0 restored, 1 failed, 0 skipped"),
        "{err}"
    );
    assert!(err.contains("failed tasks: bad"), "{err}");
    let again = f.output(&["run", "--target", "hello"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("hello ✓ restored"), "{err}");
    assert!(err.contains("success: 0 ran, 1 restored"), "{err}");
}

#[test]
fn on_a_terminal_a_status_line_shows_running_tasks_and_restored_bytes() {
    // `script` gives strata a pseudo-terminal, as an interactive shell would.
    let f = Fixture::new();
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    f.write(
        "strata.yml",
        "tasks:\n  - key: slow\n    run: head -c 4000000 /dev/urandom > /blob; sleep 1.2\n",
    );
    let on_tty = |cache: &std::path::Path| {
        let cmd = format!(
            "STRATA_CACHE_DIR={} {} run --remote {url} {}",
            cache.display(),
            env!("CARGO_BIN_EXE_strata"),
            f.pipeline().display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_tty(f.cache.path());
    // The status line is redrawn in place (carriage return, erase line) while the task runs.
    assert!(shown.contains("\r\x1b[2K"), "{shown:?}");
    assert!(shown.contains("running: slow"), "{shown:?}");
    assert!(shown.contains("↑ pushed"), "{shown:?}");
    // Another machine restores it: the layer's size is shown as it arrives.
    // A cache of the harness's: it detaches the layer images a restore may have mounted.
    let other = common::CacheDir::new("strata-tty-other");
    let shown = on_tty(other.path());
    assert!(shown.contains("✓ restored"), "{shown:?}");
    assert!(shown.contains("↓ fetched"), "{shown:?}");
    assert!(shown.contains("4.0 MB"), "{shown:?}");
    assert!(shown.contains("downloaded"), "{shown:?}");
}

#[test]
fn host_key_paths_join_the_base_and_explain_names_them() {
    let f = Fixture::new();
    // Outside /tmp, which is a fresh tmpfs inside the task.
    let tool = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(tool.path().join("version"), "1.0").unwrap();
    // A toolchain outside the package manager, named by the pipeline.
    f.write(
        "strata.yml",
        &format!(
            "base:\n  host:\n    key-paths: [{}]\ntasks:\n  - key: build\n    run: cat {}/version > /out\n",
            tool.path().display(),
            tool.path().display()
        ),
    );
    assert_eq!(f.run(&[]).status("build"), "ran");
    assert_eq!(f.run(&[]).status("build"), "restored");

    std::fs::write(tool.path().join("version"), "2.0").unwrap();
    let out = f.output(&["explain", "strata.yml", "build"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "base: key path {}: content changed",
            tool.path().display()
        )),
        "{text}"
    );
    assert_eq!(f.run(&[]).status("build"), "ran");

    // A key path that does not exist is keyed as absent, with a notice.
    f.write(
        "strata.yml",
        "base:\n  host:\n    key-paths: [/nonexistent/strata-tool]\ntasks:\n  - key: build\n    run: echo hi\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.status("build"), "ran");
    let warned = r.events.iter().any(|e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("/nonexistent/strata-tool does not exist"))
    });
    assert!(warned, "{:?}", r.events);
}

#[test]
fn base_key_paths_must_be_absolute() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "base:\n  host:\n    key-paths: [opt/tool]\ntasks:\n  - key: a\n    run: 'true'\n",
    );
    let out = f.output(&["check", "strata.yml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key path `opt/tool` is not absolute"), "{err}");
    assert!(err.contains("strata.yml:3:"), "{err}");
}

#[test]
fn a_reader_that_goes_away_is_not_a_panic() {
    // `strata plan | head -1`: the pipe closes before strata writes.
    let f = Fixture::new();
    f.write("strata.yml", "tasks:\n  - key: a\n    run: 'true'\n");
    for args in [&["plan", "strata.yml"][..], &["check", "strata.yml"][..]] {
        let mut child = f
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

#[test]
fn plan_says_the_file_s_notes_as_run_does_but_not_with_json() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: a\n    agent:\n      memory: 4gb\n    run: echo a\n",
    );
    let out = f.output(&["plan", "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`agent` has no effect in strata") && stderr.contains("strata.yml:3:5"),
        "{stderr}"
    );
    let out = f.output(&["plan", "--json", "strata.yml"]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("no effect"),
        "--json keeps stderr for warnings"
    );
}
