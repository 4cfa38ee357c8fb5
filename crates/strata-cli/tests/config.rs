//! Which shared caches a run uses: the pipeline's `cache:`, a config file, `$STRATA_CACHE`,
//! `--remote` and `--no-remote`, and the errors each can give.

mod common;

use std::path::Path;

use common::Fixture;

fn entries_in(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("entries")).map_or(0, |d| d.count())
}

const TASK: &str = "tasks:\n  - key: a\n    filter: []\n    run: echo a > /a\n";

#[test]
fn the_pipeline_and_config_file_lists_are_used_in_order() {
    let f = Fixture::new();
    let (p, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    f.write(
        "strata.yml",
        &format!("cache:\n  - file://{}\n{TASK}", p.path().display()),
    );
    f.write(
        "config.yaml",
        &format!("cache: [\"{}\"]\n", c.path().display()),
    );
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_CONFIG", f.ws().join("config.yaml"))
        .env_remove("STRATA_CACHE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        entries_in(p.path()),
        1,
        "the pipeline's cache was not written"
    );
    assert_eq!(
        entries_in(c.path()),
        1,
        "the config file's cache was not written"
    );
}

#[test]
fn strata_cache_replaces_the_lists_and_none_turns_remotes_off() {
    let f = Fixture::new();
    let (p, e) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    f.write(
        "strata.yml",
        &format!("cache: file://{}\n{TASK}", p.path().display()),
    );
    let out = f
        .command(&["run"])
        .env("STRATA_CACHE", format!("file://{}", e.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!((entries_in(p.path()), entries_in(e.path())), (0, 1));

    f.write(
        "strata.yml",
        &format!(
            "cache: file://{}\n{}",
            p.path().display(),
            TASK.replace("echo a", "echo b")
        ),
    );
    let out = f
        .command(&["run"])
        .env("STRATA_CACHE", "none")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(entries_in(p.path()), 0);
    let out = f
        .command(&["run", "--no-remote", "--no-cache"])
        .env_remove("STRATA_CACHE")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(entries_in(p.path()), 0, "--no-remote wrote to a remote");
}

#[test]
fn bad_cache_settings_are_bad_input() {
    let f = Fixture::new();
    f.write("strata.yml", TASK);
    let out = f
        .command(&["run"])
        .env("STRATA_CACHE", "ftp://example/cache")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("$STRATA_CACHE"), "{stderr}");
    assert!(stderr.contains("ftp://example/cache"), "{stderr}");

    f.write("config.yaml", "cache: [/srv/c]\ncaches: []\n");
    let out = f
        .command(&["run"])
        .env_remove("STRATA_CACHE")
        .env("STRATA_CONFIG", f.ws().join("config.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config.yaml:2:1"), "{stderr}");
    assert!(stderr.contains("unknown key `caches`"), "{stderr}");
    assert!(
        !f.cache.path().join("index.sqlite").exists(),
        "the cache was touched"
    );
}
