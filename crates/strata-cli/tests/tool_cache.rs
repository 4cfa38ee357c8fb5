//! Tool caches (`tool-cache: NAME`) and real workspace mtimes: a task that misses starts from
//! the files its previous successful execution left, so a build is incremental; the tool cache
//! is not keyed, a hit ignores it, a failure does not write it, two runs at once leave one
//! whole tool cache, and an old one is evicted.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Fixture, RunResult};
use serde_json::Value;

/// A task that shows what its tool cache held (`/opt/tc/count`), then leaves `count + 1` and
/// 50 files holding `$V` for the next execution. `$V` is keyed: changing it makes a miss.
fn counting_pipeline(v: &str, fail: bool) -> String {
    format!(
        "tasks:
  - key: count
    tool-cache: counter
    env:
      V: \"{v}\"
    run: |
      n=$(cat /opt/tc/count 2>/dev/null || echo 0)
      echo \"previous: $n\"
      mkdir -p /opt/tc/files
      echo $((n + 1)) > /opt/tc/count
      for i in $(seq 1 50); do echo \"$V\" > /opt/tc/files/$i; done
      {}
  - key: show
    use: count
    run: cat /opt/tc/count
",
        if fail { "exit 1" } else { "true" }
    )
}

fn previous(r: &RunResult) -> String {
    r.output("count")
        .into_iter()
        .find_map(|l| l.strip_prefix("previous: ").map(str::to_string))
        .unwrap_or_else(|| panic!("no `previous:` line: {:?}\n{}", r.events, r.stderr))
}

fn plan_key(f: &Fixture, task: &str) -> String {
    let out = f.output(&["plan", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    find_key(&plan, task).unwrap_or_else(|| panic!("no key for {task} in {plan}"))
}

/// The `key` of the task named `task` anywhere in a `plan --json` document.
fn find_key(v: &Value, task: &str) -> Option<String> {
    match v {
        Value::Object(m) => {
            let named = m.get("task").or_else(|| m.get("name"));
            if named.and_then(Value::as_str) == Some(task)
                && let Some(k) = m.get("key").and_then(Value::as_str)
            {
                return Some(k.to_string());
            }
            m.values().find_map(|x| find_key(x, task))
        }
        Value::Array(a) => a.iter().find_map(|x| find_key(x, task)),
        _ => None,
    }
}

fn tool_cache_records(cache: &Path) -> Vec<Value> {
    let dir = cache.join("tool-caches");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect()
}

#[test]
fn a_miss_starts_from_the_tool_cache_which_is_not_keyed_and_a_hit_ignores_it() {
    let f = Fixture::new();
    f.write("strata.yml", &counting_pipeline("1", false));
    let key_before = plan_key(&f, "count");
    let r1 = f.run(&[]);
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    assert_eq!(previous(&r1), "0", "no tool cache yet");
    assert!(r1.event("tool-cache-restored", "count").is_none());
    let saved = r1.event("tool-cache-saved", "count").expect("saved");
    let passed = r1.event("task-passed", "count").unwrap();
    assert_eq!(
        saved["layer"], passed["layer"],
        "the tool cache is the layer"
    );
    assert_eq!(saved["tool_cache"], "default/counter");
    // The tool cache now holds something: the key is the same.
    assert_eq!(
        plan_key(&f, "count"),
        key_before,
        "the tool cache is not keyed"
    );
    // `explain` names what changed, never the tool cache.
    f.write("strata.yml", &counting_pipeline("2", false));
    let explain = f.output(&["explain", "strata.yml", "count"]);
    let said = String::from_utf8_lossy(&explain.stdout).to_string()
        + &String::from_utf8_lossy(&explain.stderr);
    assert!(explain.status.success(), "{said}");
    assert!(said.contains('V') && !said.contains("tool"), "{said}");

    // A miss (another `V`) starts from what the first execution left.
    f.write("strata.yml", &counting_pipeline("2", false));
    let r2 = f.run(&[]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    assert_eq!(previous(&r2), "1", "started from the tool cache");
    let restored = r2.event("tool-cache-restored", "count").expect("restored");
    assert_eq!(restored["layer"], passed["layer"]);
    assert!(restored["files"].as_u64().unwrap() >= 52, "{restored}");
    // The layer is the whole resulting filesystem: a dependent sees the count the task left.
    assert_eq!(r2.output("show"), ["2"]);

    // A hit restores its own entry whatever the tool cache holds now.
    f.write("strata.yml", &counting_pipeline("1", false));
    let r3 = f.run(&[]);
    assert_eq!(r3.code, 0, "{}", r3.stderr);
    assert_eq!(r3.status("count"), "restored");
    assert!(r3.event("tool-cache-restored", "count").is_none());
    assert_eq!(
        r3.event("task-restored", "count").unwrap()["layer"],
        passed["layer"],
        "the hit's own layer, not the tool cache"
    );

    // `--no-cache` is a clean run: no tool cache used, but the result is saved.
    f.write("strata.yml", &counting_pipeline("3", false));
    let r4 = f.run(&["--no-cache"]);
    assert_eq!(r4.code, 0, "{}", r4.stderr);
    assert_eq!(previous(&r4), "0");
}

#[test]
fn a_failed_execution_leaves_the_tool_cache_as_it_was() {
    let f = Fixture::new();
    f.write("strata.yml", &counting_pipeline("1", false));
    assert_eq!(f.run(&[]).code, 0);
    let before = tool_cache_records(f.cache.path());
    f.write("strata.yml", &counting_pipeline("2", true));
    let failed = f.run(&[]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(previous(&failed), "1");
    assert!(failed.event("tool-cache-saved", "count").is_none());
    assert_eq!(tool_cache_records(f.cache.path()), before);
    f.write("strata.yml", &counting_pipeline("3", false));
    let r = f.run(&[]);
    assert_eq!(previous(&r), "1", "the failure's files were not kept");
}

#[test]
fn two_runs_at_once_leave_one_whole_tool_cache() {
    let f = Fixture::new();
    // Two pipeline files, one workspace and cache: both miss, both run at the same time.
    let dir = f.ws();
    for v in ["a", "b"] {
        std::fs::write(dir.join(format!("{v}.yml")), counting_pipeline(v, false)).unwrap();
    }
    let runs: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|v| {
            f.command(&["run", "--json", &format!("{v}.yml")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut layers = Vec::new();
    for child in runs {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let passed = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["event"] == "task-passed" && e["task"] == "count")
            .expect("count ran");
        layers.push(passed["layer"].as_str().unwrap().to_string());
    }
    let records = tool_cache_records(f.cache.path());
    assert_eq!(records.len(), 1, "{records:?}");
    let layer = records[0]["layer"].as_str().unwrap();
    assert!(
        layers.iter().any(|l| l == layer),
        "{layer} is one of {layers:?}"
    );
    // The next execution sees one run's files, never a mix.
    f.write(
        "strata.yml",
        "tasks:
  - key: check
    tool-cache: counter
    run: cat /opt/tc/files/* | sort -u
",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let seen = r.output("check");
    assert!(seen == ["a"] || seen == ["b"], "mixed tool cache: {seen:?}");
}

#[test]
fn an_old_tool_cache_is_not_used_and_prune_evicts_it() {
    let f = Fixture::new();
    let config = f.ws().join("config.yaml");
    std::fs::write(&config, "local:\n  tool-cache-max-age: 1s\n").unwrap();
    let cfg = config.to_str().unwrap();
    let with_config = |args: &[&str]| {
        let out = f.command(args).env("STRATA_CONFIG", cfg).output().unwrap();
        let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (out, events)
    };
    f.write("strata.yml", &counting_pipeline("1", false));
    let (out, _) = with_config(&["run", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tool_cache_records(f.cache.path()).len(), 1);
    std::thread::sleep(Duration::from_millis(2200));
    f.write("strata.yml", &counting_pipeline("2", false));
    let (out, events) = with_config(&["run", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !events.iter().any(|e| e["event"] == "tool-cache-restored"),
        "an expired tool cache is not used"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "task-output" && e["line"] == "previous: 0")
    );
    std::thread::sleep(Duration::from_millis(2200));
    let (out, _) = with_config(&["cache", "prune", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tool_caches"], 1, "{report}");
    assert!(tool_cache_records(f.cache.path()).is_empty());
}

#[test]
fn workspace_files_show_their_real_mtime_which_is_not_keyed() {
    let f = Fixture::new();
    // Same content, different mtimes: each file shows its own.
    f.write("a.txt", "same\n");
    f.write("b.txt", "same\n");
    let touch = |file: &str, when: &str| {
        let st = std::process::Command::new("touch")
            .args(["-m", "-d", when, file])
            .current_dir(f.ws())
            .status()
            .unwrap();
        assert!(st.success());
    };
    touch("a.txt", "2020-01-02 03:04:05.123456789");
    touch("b.txt", "2021-06-07 08:09:10");
    f.write(
        "strata.yml",
        "tasks:
  - key: stat
    workspace: true
    run: stat -c '%n %.9Y' a.txt b.txt
",
    );
    let expected = |file: &str| {
        let out = std::process::Command::new("stat")
            .args(["-c", "%n %.9Y", file])
            .current_dir(f.ws())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.output("stat"), [expected("a.txt"), expected("b.txt")]);
    // An mtime alone is no change: the task is restored.
    touch("a.txt", "2022-01-01 00:00:00");
    let r = f.run(&[]);
    assert_eq!(r.status("stat"), "restored", "{}", r.stderr);
    // An edit is a change, and the task sees the edit's mtime.
    f.write("a.txt", "edited\n");
    let r = f.run(&[]);
    assert_eq!(r.status("stat"), "ran", "{}", r.stderr);
    assert_eq!(r.output("stat")[0], expected("a.txt"));
    // `cache verify` accepts the blobs with real mtimes.
    let out = f.output(&["cache", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cargo workspace of three crates (`app` uses `liba` and `libb`), no dependencies.
pub fn write_cargo_workspace(f: &Fixture) {
    f.write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"app\", \"liba\", \"libb\"]\nresolver = \"2\"\n",
    );
    f.write(
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nliba = { path = \"../liba\" }\nlibb = { path = \"../libb\" }\n",
    );
    f.write(
        "app/src/main.rs",
        "fn main() {\n    println!(\"{}\", liba::value() + libb::value());\n}\n",
    );
    for lib in ["liba", "libb"] {
        f.write(
            &format!("{lib}/Cargo.toml"),
            &format!("[package]\nname = \"{lib}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        );
        f.write(
            &format!("{lib}/src/lib.rs"),
            "pub fn value() -> u32 {\n    1\n}\n",
        );
    }
}

fn cargo_pipeline(tool_cache: bool) -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{home}/.cargo"));
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{home}/.rustup"));
    // The toolchain that runs these tests (cargo gives its path), whatever its layout.
    let cargo_dir = std::env::var("CARGO")
        .ok()
        .and_then(|c| Path::new(&c).parent().map(|d| d.display().to_string()))
        .unwrap_or_else(|| format!("{cargo_home}/bin"));
    format!(
        "tasks:
  - key: build
    workspace: true
    {}
    env:
      PATH: {cargo_dir}:{cargo_home}/bin:/usr/local/bin:/usr/bin:/bin
      CARGO_HOME: {cargo_home}
      RUSTUP_HOME: {rustup_home}
    run: cargo build --offline && ./target/debug/app
",
        if tool_cache {
            "tool-cache: cargo-target"
        } else {
            ""
        }
    )
}

fn compiled(r: &RunResult) -> Vec<String> {
    let mut crates: Vec<String> = r
        .output("build")
        .iter()
        .filter_map(|l| l.trim().strip_prefix("Compiling "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    crates.sort();
    crates
}

#[test]
fn a_one_line_edit_rebuilds_only_the_crate_that_changed() {
    let f = Fixture::new();
    write_cargo_workspace(&f);
    f.write("strata.yml", &cargo_pipeline(true));
    let r1 = f.run(&[]);
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    assert_eq!(compiled(&r1), ["app", "liba", "libb"]);
    assert_eq!(r1.output("build").last().unwrap(), "2");

    f.write("libb/src/lib.rs", "pub fn value() -> u32 {\n    2\n}\n");
    let r2 = f.run(&[]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    assert!(r2.event("tool-cache-restored", "build").is_some());
    // `libb` changed and `app` links it; `liba` is untouched.
    assert_eq!(compiled(&r2), ["app", "libb"], "{:?}", r2.output("build"));
    assert_eq!(r2.output("build").last().unwrap(), "3");

    // Without a tool cache, every crate is built again.
    f.write("strata.yml", &cargo_pipeline(false));
    f.write("libb/src/lib.rs", "pub fn value() -> u32 {\n    3\n}\n");
    let r3 = f.run(&[]);
    assert_eq!(r3.code, 0, "{}", r3.stderr);
    assert_eq!(compiled(&r3), ["app", "liba", "libb"]);
}

/// A key pair made by `strata cache keygen NAME`: (secret text, public text).
fn keygen(name: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = common::strata()
        .args(["cache", "keygen", name, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |ext: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}.{ext}")))
            .unwrap()
            .trim()
            .to_string()
    };
    (read("secret"), read("public"))
}

/// `strata run --json` as a machine whose local cache is `cache`, with `remote` and `env`.
fn run_on(f: &Fixture, cache: &Path, remote: &str, env: &[(&str, &str)]) -> RunResult {
    let config = f.ws().join("empty-config.yaml");
    std::fs::write(&config, "").unwrap();
    let mut cmd = f.command(&["run", "--json", "--remote", remote]);
    cmd.env("STRATA_CACHE_DIR", cache)
        .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
        .env("STRATA_CONFIG", config)
        .env_remove("STRATA_CACHE")
        .env_remove("STRATA_SIGNING_KEY")
        .env_remove("STRATA_TRUSTED_KEYS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    RunResult {
        code: out.status.code().unwrap_or(-1),
        events: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wall: Duration::ZERO,
    }
}

fn warnings(r: &RunResult) -> Vec<String> {
    r.events
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_tool_cache_travels_through_a_shared_cache_from_trusted_writers_only() {
    let server = strata_testkit::Server::s3("strata-tc");
    let remote = format!("s3://strata-tc/main?endpoint={}", server.endpoint());
    let f = Fixture::new();
    let (secret, public) = keygen("ci-main");
    let (_, other) = keygen("ci-other");

    // Machine A builds and publishes, signing.
    f.write("strata.yml", &counting_pipeline("1", false));
    let a = run_on(
        &f,
        f.cache.path(),
        &remote,
        &[("STRATA_SIGNING_KEY", &secret)],
    );
    assert_eq!(a.code, 0, "{}", a.stderr);
    let pushed = a.event("tool-cache-pushed", "count").expect("published");
    assert_eq!(pushed["caches"], 1);
    let docs = server.dir.path().join("strata-tc/main/tool-caches");
    let doc_path = std::fs::read_dir(&docs)
        .unwrap()
        .next()
        .expect("one tool cache document")
        .unwrap()
        .path();
    let doc: Value = serde_json::from_slice(&std::fs::read(&doc_path).unwrap()).unwrap();
    assert_eq!(doc["name"], "counter");
    assert_eq!(doc["signatures"][0]["key"], "ci-main");

    // Machine B, fresh, trusting A's key: a miss starts from A's files.
    f.write("strata.yml", &counting_pipeline("2", false));
    let b = common::CacheDir::new("strata-cache-b-");
    let rb = run_on(
        &f,
        b.path(),
        &format!("{remote},ro"),
        &[("STRATA_TRUSTED_KEYS", &public)],
    );
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(previous(&rb), "1", "{:?}", warnings(&rb));
    assert!(rb.event("tool-cache-restored", "count").is_some());
    assert_eq!(tool_cache_records(b.path()).len(), 1, "kept locally");

    // Machine C trusts another key: no tool cache, one warning naming why.
    let c = common::CacheDir::new("strata-cache-c-");
    let rc = run_on(
        &f,
        c.path(),
        &format!("{remote},ro"),
        &[("STRATA_TRUSTED_KEYS", &other)],
    );
    assert_eq!(rc.code, 0, "{}", rc.stderr);
    assert_eq!(previous(&rc), "0");
    assert!(
        warnings(&rc)
            .iter()
            .any(|w| w.contains("ignoring the tool cache `default/counter`")
                && w.contains("ci-main")),
        "{:?}",
        warnings(&rc)
    );

    // A document altered after signing (made younger) is refused by a trusting reader.
    let mut altered = doc.clone();
    altered["written_ms"] = Value::from(doc["written_ms"].as_i64().unwrap() + 1);
    std::fs::write(&doc_path, serde_json::to_vec(&altered).unwrap()).unwrap();
    let d = common::CacheDir::new("strata-cache-d-");
    let rd = run_on(
        &f,
        d.path(),
        &format!("{remote},ro"),
        &[("STRATA_TRUSTED_KEYS", &public)],
    );
    assert_eq!(rd.code, 0, "{}", rd.stderr);
    assert_eq!(previous(&rd), "0");
    assert!(
        warnings(&rd).iter().any(|w| w.contains("does not match")),
        "{:?}",
        warnings(&rd)
    );
    // A reader that trusts no key in particular uses it, as it uses unsigned entries.
    let e = common::CacheDir::new("strata-cache-e-");
    let re = run_on(&f, e.path(), &format!("{remote},ro"), &[]);
    assert_eq!(re.code, 0, "{}", re.stderr);
    assert_eq!(previous(&re), "1");
}

/// RWX writes `tool-cache:` on the task that calls a package (`golang/mod-download`): the
/// package's tasks use it, each under its own name.
#[test]
fn a_tool_cache_on_a_calling_task_applies_to_the_package_tasks() {
    let f = Fixture::new();
    f.write(
        "pkgs/acme/deps/rwx-package.yml",
        "name: acme/deps
version: 1.0.0
parameters:
  v:
    required: true
tasks:
  - key: fetch
    run: |
      n=$(cat /opt/tc/count 2>/dev/null || echo 0)
      echo \"previous: $n ${{ params.v }}\"
      mkdir -p /opt/tc && echo $((n + 1)) > /opt/tc/count
",
    );
    let pipeline = |v: &str| {
        format!(
            "tasks:
  - key: deps
    call: acme/deps 1.0.0
    tool-cache: go-mods
    with:
      v: \"{v}\"
"
        )
    };
    let packages = f.ws().join("pkgs").display().to_string();
    f.write("strata.yml", &pipeline("1"));
    let r1 = f.run(&["--packages", &packages]);
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    assert_eq!(r1.output("deps.fetch"), ["previous: 0 1"]);
    assert_eq!(
        r1.event("tool-cache-saved", "deps.fetch").expect("saved")["tool_cache"],
        "default/go-mods/fetch"
    );
    f.write("strata.yml", &pipeline("2"));
    let r2 = f.run(&["--packages", &packages]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    assert_eq!(r2.output("deps.fetch"), ["previous: 1 2"]);
}

/// The example pipeline's `build` keeps its object files in a tool cache: after an edit to
/// one source file, make recompiles only that file.
#[test]
fn the_example_recompiles_only_the_edited_source() {
    let f = Fixture::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wordfreq");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(example.join("."))
        .arg(f.ws())
        .status()
        .unwrap();
    assert!(copy.success());
    let compiled = |r: &RunResult| -> Vec<String> {
        r.output("build")
            .iter()
            .filter(|l| l.contains(" -c -o "))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect()
    };
    let r1 = f.run(&[]);
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    assert_eq!(compiled(&r1), ["src/main.c", "src/count.c"]);
    let count = f.ws().join("src/count.c");
    let mut text = std::fs::read_to_string(&count).unwrap();
    text.push_str("/* an edit */\n");
    std::fs::write(&count, text).unwrap();
    let r2 = f.run(&[]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    assert!(r2.event("tool-cache-restored", "build").is_some());
    assert_eq!(compiled(&r2), ["src/count.c"]);
    // A comment changes no byte of the binary: the tests of that binary are restored.
    assert_eq!(r2.status("test"), "restored");
}

/// RWX's `reset-tool-cache: true` on a cron trigger: a scheduled run starts without tool
/// caches (and writes them afresh); other runs use them.
#[test]
fn a_cron_trigger_with_reset_tool_cache_starts_without_it() {
    let f = Fixture::new();
    let pipeline = |v: &str| {
        counting_pipeline(v, false).replacen(
            "tasks:",
            "on:\n  cron:\n    - key: nightly\n      schedule: \"0 3 * * *\"\n      reset-tool-cache: true\ntasks:",
            1,
        )
    };
    let scheduled = |extra: &[(&str, &str)]| {
        let mut cmd = f.command(&["run", "--json"]);
        cmd.env_remove("GITLAB_CI").env("GITHUB_ACTIONS", "true");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        RunResult {
            code: out.status.code().unwrap_or(-1),
            events: String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            wall: Duration::ZERO,
        }
    };
    f.write("strata.yml", &pipeline("1"));
    let r1 = f.run(&[]);
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    f.write("strata.yml", &pipeline("2"));
    let nightly = scheduled(&[("GITHUB_EVENT_NAME", "schedule")]);
    assert_eq!(nightly.code, 0, "{}", nightly.stderr);
    assert_eq!(previous(&nightly), "0", "the scheduled run starts afresh");
    assert!(nightly.event("tool-cache-saved", "count").is_some());
    f.write("strata.yml", &pipeline("3"));
    let by_hand = f.run(&[]);
    assert_eq!(by_hand.code, 0, "{}", by_hand.stderr);
    assert_eq!(previous(&by_hand), "1", "what the scheduled run left");
}

#[test]
fn a_tool_cache_named_by_an_expression_gets_its_name_as_the_task_starts() {
    let f = Fixture::new();
    let pipeline = |v: &str, name: &str| {
        format!(
            "tasks:
  - key: pick
    run: printf '{name}' > \"$RWX_VALUES/cache-name\"
  - key: count
    use: pick
    tool-cache: deps-${{{{ tasks.pick.values.cache-name }}}}
    env:
      V: \"{v}\"
    run: |
      n=$(cat /opt/tc/count 2>/dev/null || echo 0)
      echo \"previous: $n\"
      mkdir -p /opt/tc && echo $((n + 1)) > /opt/tc/count
"
        )
    };
    f.write("strata.yml", &pipeline("1", "a"));
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(previous(&r), "0");
    let saved = r.event("tool-cache-saved", "count").expect("saved");
    assert_eq!(saved["tool_cache"], "default/deps-a");
    // Another `V`, the same name: the miss starts from it.
    f.write("strata.yml", &pipeline("2", "a"));
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(previous(&r), "1");
    // Another name: another tool cache, empty so far.
    f.write("strata.yml", &pipeline("3", "b"));
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(previous(&r), "0");
    assert_eq!(
        r.event("tool-cache-saved", "count").expect("saved")["tool_cache"],
        "default/deps-b"
    );
    // A name that is no name fails the task, which says why.
    f.write("strata.yml", &pipeline("4", "a").replace("deps-${{", "${{"));
    f.write(
        "strata.yml",
        &std::fs::read_to_string(f.ws().join("strata.yml"))
            .unwrap()
            .replace("printf 'a'", "printf ' '"),
    );
    let r = f.run(&[]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("count"), "failed");
    let failed = r.event("task-failed", "count").expect("failed");
    assert!(
        failed.to_string().contains("`tool-cache` gives ` `"),
        "{failed}"
    );
}
