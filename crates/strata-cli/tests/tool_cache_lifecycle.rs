//! Tool caches in the cache's lifecycle: `strata cache ls | stats` show them, and the
//! `local.max-size` budget counts their layers and evicts them by last use like entries,
//! never while a running task uses one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::Fixture;
use serde_json::Value;

/// A task with a tool cache that shows what the tool cache held (`/opt/tc/count`), keeps
/// `kb` KiB of random bytes in it, sleeps `sleep` seconds, then leaves `count + 1`; `V` is
/// keyed, so a new `V` is a miss. `fail` makes it fail after all that.
fn pipeline(v: &str, kb: u32, sleep: f32, fail: bool) -> String {
    format!(
        "tasks:
  - key: count
    tool-cache: counter
    env:
      V: \"{v}\"
    run: |
      n=$(cat /opt/tc/count 2>/dev/null || echo 0)
      echo \"previous: $n\"
      mkdir -p /opt/tc
      test -f /opt/tc/data || head -c {kb}K /dev/urandom > /opt/tc/data
      sleep {sleep}
      echo $((n + 1)) > /opt/tc/count
      {}
",
        if fail { "exit 1" } else { "true" }
    )
}

/// A task with no tool cache writing `kb` KiB.
fn other(name: &str, kb: u32) -> String {
    format!("tasks:\n  - key: {name}\n    run: head -c {kb}K /dev/urandom > /{name}.bin\n")
}

struct Setup {
    f: Fixture,
    config: PathBuf,
}

impl Setup {
    fn new(config: &str) -> Setup {
        let f = Fixture::new();
        let config_path = f.ws().join("strata-config.yaml");
        std::fs::write(&config_path, config).unwrap();
        Setup {
            f,
            config: config_path,
        }
    }

    fn set_config(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    /// `strata ARGS` with the config: exit code, stdout, stderr.
    fn strata(&self, args: &[&str]) -> (i32, String, String) {
        let out = self
            .f
            .command(args)
            .env("STRATA_CONFIG", &self.config)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `yaml`; the events of the run.
    fn run(&self, yaml: &str, expect: i32) -> Vec<Value> {
        self.f.write("strata.yml", yaml);
        let (code, stdout, stderr) = self.strata(&["run", "--json"]);
        assert_eq!(code, expect, "{stderr}");
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["cache"];
        all.extend_from_slice(args);
        all.push("--json");
        let (code, stdout, stderr) = self.strata(&all);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn tool_caches(&self) -> Vec<Value> {
        self.json(&["ls"])["tool_caches"]
            .as_array()
            .expect("a list")
            .clone()
    }

    fn entry_tasks(&self) -> Vec<String> {
        let mut tasks: Vec<String> = self.json(&["ls"])["entries"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| e["task"].as_str().unwrap().to_string())
            .collect();
        tasks.sort();
        tasks
    }

    fn layer_dir(&self, layer: &str) -> PathBuf {
        self.f.cache.path().join("layers").join(layer)
    }
}

fn saved_layer(events: &[Value]) -> String {
    events
        .iter()
        .find(|e| e["event"] == "tool-cache-saved")
        .unwrap_or_else(|| panic!("no tool-cache-saved in {events:?}"))["layer"]
        .as_str()
        .unwrap()
        .to_string()
}

fn previous(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["event"] == "task-output")
        .find_map(|e| e["line"].as_str()?.strip_prefix("previous: "))
        .unwrap_or_else(|| panic!("no `previous:` line in {events:?}"))
        .to_string()
}

#[test]
fn ls_and_stats_show_tool_caches_and_their_last_use() {
    let s = Setup::new("local:\n  tool-cache-max-age: 7d\n");
    let events = s.run(&pipeline("1", 100, 0.0, false), 0);
    let layer = saved_layer(&events);
    let listed = s.tool_caches();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let tc = &listed[0];
    assert_eq!(tc["name"], "counter", "{tc}");
    assert_eq!(tc["vault"], "default", "{tc}");
    assert_eq!(tc["task"], "count", "{tc}");
    assert_eq!(tc["layer"], layer.as_str(), "{tc}");
    assert_eq!(tc["expired"], false, "{tc}");
    assert!(tc["layer_bytes"].as_u64().unwrap() >= 100 * 1024, "{tc}");
    let written = tc["written_at_ms"].as_i64().unwrap();
    assert_eq!(tc["last_used_at_ms"].as_i64().unwrap(), written, "{tc}");

    // A failed execution starts from the tool cache (a use) and leaves it as it was.
    std::thread::sleep(Duration::from_millis(50));
    let events = s.run(&pipeline("2", 100, 0.0, true), 1);
    assert_eq!(previous(&events), "1");
    let tc = &s.tool_caches()[0];
    assert_eq!(tc["written_at_ms"].as_i64().unwrap(), written, "{tc}");
    assert!(
        tc["last_used_at_ms"].as_i64().unwrap() > written,
        "the use is noted: {tc}"
    );

    let stats = s.json(&["stats"]);
    assert_eq!(stats["tool_caches"]["count"], 1, "{stats}");
    let tc_bytes = stats["tool_caches"]["layer_bytes"].as_u64().unwrap();
    assert!(tc_bytes >= 100 * 1024, "{stats}");
    assert!(
        stats["bytes"]["layers"].as_u64().unwrap() >= tc_bytes,
        "{stats}"
    );

    // The tables, for people.
    let (_, table, _) = s.strata(&["cache", "ls"]);
    assert!(
        table.contains("TOOL CACHE") && table.contains("counter"),
        "{table}"
    );
    assert!(table.contains("default") && table.contains("kB"), "{table}");
    let (_, stats, _) = s.strata(&["cache", "stats"]);
    assert!(stats.contains("tool caches 1"), "{stats}");
}

#[test]
fn the_budget_counts_a_tool_cache_and_evicts_it_by_last_use() {
    let s = Setup::new("local:\n  max-size: 10MB\n");
    // The tool cache's layer is also its task's entry's: both name these 300 KiB.
    let events = s.run(&pipeline("1", 300, 0.0, false), 0);
    let tc_layer = saved_layer(&events);
    std::thread::sleep(Duration::from_millis(50));
    s.run(&other("x", 300), 0);
    assert_eq!(s.entry_tasks(), ["count", "x"]);
    assert_eq!(s.tool_caches().len(), 1);

    // Over 700 kB after the next run (which keeps its own 300 KiB): the least recently used
    // go until the rest fits. `count`'s entry alone frees nothing (the tool cache still names
    // its layer); the tool cache, used before `x`, goes next, and with it the layer.
    s.set_config("local:\n  max-size: 700KB\n");
    s.run(&other("y", 300), 0);
    assert_eq!(
        s.entry_tasks(),
        ["x", "y"],
        "`x`, used after the tool cache, stays"
    );
    assert!(s.tool_caches().is_empty(), "the tool cache was evicted");
    assert!(!s.layer_dir(&tc_layer).exists(), "and its layer with it");
    assert!(
        !s.f.cache
            .path()
            .join("tool-caches")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "no record is left"
    );
    // The next execution starts from scratch.
    s.set_config("local:\n  max-size: 10MB\n");
    let events = s.run(&pipeline("2", 10, 0.0, false), 0);
    assert_eq!(previous(&events), "0");
}

/// Waits until a live run's lease names `layer`.
fn wait_for_lease(cache: &Path, layer: &str) {
    let started = std::time::Instant::now();
    loop {
        let runs = std::fs::read_dir(cache.join("runs")).unwrap();
        if runs.flatten().any(|r| {
            std::fs::read_to_string(r.path().join("uses")).is_ok_and(|u| u.contains(layer))
        }) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run never noted the tool cache's layer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_tool_cache_a_running_task_uses_is_never_removed() {
    let s = Setup::new("local:\n  max-size: 10MB\n");
    let tc_layer = saved_layer(&s.run(&pipeline("1", 200, 0.0, false), 0));
    // A miss that starts from the tool cache and takes a while.
    s.f.write("strata.yml", &pipeline("2", 200, 3.0, false));
    let child =
        s.f.command(&["run", "--json"])
            .env("STRATA_CONFIG", &s.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    wait_for_lease(s.f.cache.path(), &tc_layer);
    let report = s.json(&["prune", "--max-size", "0", "--grace", "0s"]);
    assert_eq!(report["tool_caches"], 0, "{report}");
    assert!(report["over_budget"].as_bool().unwrap(), "{report}");
    let listed = s.tool_caches();
    assert_eq!(listed.len(), 1, "{report}");
    assert_eq!(listed[0]["layer"], tc_layer.as_str());
    assert!(s.layer_dir(&tc_layer).is_dir(), "{report}");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(previous(&events), "1", "it started from the tool cache");
    // Once no run uses it, the tool cache goes with the rest.
    let report = s.json(&["prune", "--max-size", "0", "--grace", "0s"]);
    assert_eq!(report["tool_caches"], 1, "{report}");
    assert!(s.tool_caches().is_empty());
    assert!(!s.layer_dir(&tc_layer).exists());
}

/// `strata ARGS` as a machine whose local cache is `cache`, with the config `config` and S3
/// credentials: exit code, stdout, stderr.
fn on_machine(f: &Fixture, cache: &Path, config: &str, args: &[&str]) -> (i32, String, String) {
    // In the workspace (the fixture removes it), one per machine.
    let config_path = f.ws().join(format!(
        "config-{}.yaml",
        cache.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&config_path, config).unwrap();
    let out = f
        .command(args)
        .env("STRATA_CACHE_DIR", cache)
        .env("STRATA_CONFIG", &config_path)
        .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
        .env_remove("STRATA_CACHE")
        .env_remove("STRATA_SIGNING_KEY")
        .env_remove("STRATA_TRUSTED_KEYS")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh machine runs the tool cache's task (a miss) with `remote`: what it started from.
fn fresh_machine_starts_from(f: &Fixture, remote: &str, v: &str) -> String {
    let cache = common::CacheDir::new("strata-cache-fresh-");
    f.write("strata.yml", &pipeline(v, 50, 0.0, false));
    let (code, stdout, stderr) =
        on_machine(f, cache.path(), "", &["run", "--json", "--remote", remote]);
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    previous(&events)
}

/// `strata cache prune --shared-cache` on a real S3 server and a directory: every entry goes
/// (`--older-than 0s`), a live tool cache stays with its blobs and a fresh machine still starts
/// from it; past the maximum age of the config, it goes.
fn shared_prune_keeps_a_live_tool_cache_and_removes_an_old_one(remote: &str) {
    let f = Fixture::new();
    f.write("strata.yml", &pipeline("1", 50, 0.0, false));
    let (code, stdout, stderr) = on_machine(
        &f,
        f.cache.path(),
        "",
        &["run", "--json", "--remote", remote],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("tool-cache-pushed"), "{stdout}");

    let prune = |config: &str| -> Value {
        let (code, stdout, stderr) = on_machine(
            &f,
            f.cache.path(),
            config,
            &[
                "cache",
                "prune",
                "--shared-cache",
                remote,
                "--older-than",
                "0s",
                "--grace",
                "0s",
                "--json",
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()[0].clone()
    };
    let report = prune("");
    assert_eq!(report["removed_entries"], 1, "{report}");
    assert_eq!(report["removed_tool_caches"], 0, "{report}");
    assert_eq!(report["tool_caches"], 1, "{report}");
    assert_eq!(
        fresh_machine_starts_from(&f, remote, "2"),
        "1",
        "the live tool cache's blobs outlived its entry"
    );
    // That machine published a tool cache of its own; past a 1 s maximum age it goes.
    std::thread::sleep(Duration::from_millis(1500));
    let report = prune("local:\n  tool-cache-max-age: 1s\n");
    assert_eq!(report["removed_tool_caches"], 1, "{report}");
    assert_eq!(report["tool_caches"], 0, "{report}");
    assert_eq!(fresh_machine_starts_from(&f, remote, "3"), "0");
}

#[test]
fn shared_prune_of_s3_keeps_a_live_tool_cache_and_removes_an_old_one() {
    let server = strata_testkit::Server::s3("strata-tcp");
    let remote = format!("s3://strata-tcp/main?endpoint={}", server.endpoint());
    shared_prune_keeps_a_live_tool_cache_and_removes_an_old_one(&remote);
}

#[test]
fn shared_prune_of_a_directory_keeps_a_live_tool_cache_and_removes_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let remote = format!("file://{}", dir.path().display());
    shared_prune_keeps_a_live_tool_cache_and_removes_an_old_one(&remote);
}
