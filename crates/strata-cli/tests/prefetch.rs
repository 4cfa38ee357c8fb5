//! Prefetch against a real S3 server (s3s-fs): the layers a task that runs needs start
//! downloading at the start of the run, before the tasks ahead of it finish.
//!
//! The slow task ahead is a gate: its command blocks on a TCP connection to the test until the
//! test opens it. The test opens it when the events say what it waits for (or after a long
//! watchdog, and then the order asserted is wrong), so the order of the events proves what the
//! run did, with no sleep to hope on.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{CacheDir, Counter, Fixture, RunResult};
use serde_json::Value;
use strata_testkit::Server;

/// A task command that blocks until [`Gate::open`].
struct Gate {
    port: u16,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    fn start() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let state = open.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let state = state.clone();
                std::thread::spawn(move || {
                    let (lock, cv) = &*state;
                    let mut open = lock.lock().unwrap();
                    while !*open {
                        open = cv.wait(open).unwrap();
                    }
                    let _ = stream.write_all(b"go\n");
                });
            }
        });
        Gate { port, open }
    }

    fn open(&self) {
        let (lock, cv) = &*self.open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    fn close(&self) {
        *self.open.0.lock().unwrap() = false;
    }

    fn command(&self) -> String {
        format!(
            "exec 3<>/dev/tcp/127.0.0.1/{}; read -r go <&3; test \"$go\" = go",
            self.port
        )
    }
}

/// `gate` blocks; `toolchain` and `docs` come after it (so the dispatcher starts neither
/// before it ends); `build` runs on `toolchain`, `docs` has nobody running on it.
fn pipeline(gate: &Gate, counter: &Counter) -> String {
    format!(
        r#"tasks:
  - key: gate
    cache: false
    run: {}
  - key: toolchain
    after: [gate]
    run: |
      {}
      mkdir -p /opt/tool
      head -c 2000000 /dev/urandom > /opt/tool/blob
      echo tool-v1 > /opt/tool/version
  - key: docs
    after: [gate]
    run: |
      {}
      mkdir -p /opt/docs && head -c 1000000 /dev/urandom > /opt/docs/blob
  - key: build
    use: [toolchain]
    filter: [src]
    run: |
      {}
      cat /opt/tool/version src/main.c
"#,
        gate.command(),
        counter.ping("toolchain"),
        counter.ping("docs"),
        counter.ping("build"),
    )
}

struct Setup {
    _server: Server,
    url: String,
    bucket: std::path::PathBuf,
    f: Fixture,
    gate: Gate,
    counter: Counter,
}

/// Machine A ran the pipeline and published it to a fresh S3 bucket; then `src/main.c`
/// changed, so that on another machine `build` runs and the rest is in the shared cache.
fn published() -> Setup {
    let server = Server::s3("strata-ci");
    let url = format!("s3://strata-ci/team?endpoint={}", server.endpoint());
    let bucket = server.data_dir().join("strata-ci");
    let f = Fixture::new();
    let gate = Gate::start();
    let counter = Counter::start();
    f.write("strata.yml", &pipeline(&gate, &counter));
    f.write("src/main.c", "int main() { return 0; }\n");
    gate.open();
    let a = run(&f, f.cache.path(), &url, &[], |_| false, &gate);
    assert_eq!(a.code, 0, "{}\n{:?}", a.stderr, a.events);
    assert_eq!(counter.take(), vec!["build", "docs", "toolchain"]);
    for t in ["toolchain", "docs", "build"] {
        assert!(a.event("task-pushed", t).is_some(), "{t}: {:?}", a.events);
    }
    gate.close();
    f.write("src/main.c", "int main() { return 1; }\n");
    Setup {
        _server: server,
        url,
        bucket,
        f,
        gate,
        counter,
    }
}

/// `strata run --json` on the machine whose local cache is `cache`, read as it runs: the gate
/// opens at the first event `opens` accepts (or, failing that, after two minutes).
fn run(
    f: &Fixture,
    cache: &Path,
    remote: &str,
    extra: &[&str],
    opens: impl Fn(&Value) -> bool,
    gate: &Gate,
) -> RunResult {
    let mut args = vec!["run", "--json", "--remote", remote];
    args.extend_from_slice(extra);
    let mut child = f
        .command(&args)
        .env("STRATA_CACHE_DIR", cache)
        .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog: a run that never shows what the test waits for still ends (and fails the
    // assertions on its order).
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let watchdog = {
        let done = done.clone();
        let open = gate.open.clone();
        std::thread::spawn(move || {
            let (lock, cv) = &*done;
            let finished = cv
                .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(120), |d| !*d)
                .unwrap();
            if !*finished.0 {
                *open.0.lock().unwrap() = true;
                open.1.notify_all();
            }
        })
    };
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut events = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let e: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"));
        if opens(&e) {
            gate.open();
        }
        events.push(e);
    }
    let status = child.wait().unwrap();
    *done.0.lock().unwrap() = true;
    done.1.notify_all();
    watchdog.join().unwrap();
    RunResult {
        code: status.code().unwrap_or(-1),
        events,
        stderr: stderr.join().unwrap(),
        wall: Duration::ZERO,
    }
}

fn is(e: &Value, kind: &str, task: &str) -> bool {
    e["event"] == kind && e["task"] == task
}

/// Where in the run the first event of `kind` for `task` came (panics when there is none).
fn position(r: &RunResult, kind: &str, task: &str) -> usize {
    r.events
        .iter()
        .position(|e| is(e, kind, task))
        .unwrap_or_else(|| panic!("no {kind} for {task}: {:#?}", r.events))
}

fn count(r: &RunResult, kind: &str, task: &str) -> usize {
    r.events.iter().filter(|e| is(e, kind, task)).count()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_layer_a_task_that_runs_needs_arrives_before_the_slow_task_ahead_ends() {
    let s = published();
    let b = CacheDir::new("strata-cache-b-");
    // The gate opens only once the layers of `toolchain` and then `docs` are in B's local
    // cache: without prefetch, nothing would look either up before the gate ends.
    let fetched = |e: &Value| is(e, "layer-fetched", "docs");
    let report = b.path().join("report.html");
    let args = ["--report", report.to_str().unwrap()];
    let r = run(&s.f, b.path(), &s.url, &args, fetched, &s.gate);
    assert_eq!(r.code, 0, "{}\n{:#?}", r.stderr, r.events);
    // The HTML report says it too.
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(page.contains("for <code>build</code>"), "{page}");
    let prefetching = position(&r, "layer-prefetching", "toolchain");
    assert_eq!(
        r.events[prefetching]["needed_by"], "build",
        "{:#?}",
        r.events
    );
    let fetched = position(&r, "layer-fetched", "toolchain");
    let gate_ended = position(&r, "task-passed", "gate");
    assert!(
        prefetching < fetched && fetched < gate_ended,
        "toolchain's layer did not arrive before the gate ended: {:#?}",
        r.events
    );
    // The task took the entry the prefetch found: restored from the shared cache, after the
    // gate, and its layer downloaded once.
    let restored = r.event("task-restored", "toolchain").unwrap();
    assert_eq!(restored["from"], "s3://strata-ci/team", "{restored}");
    assert!(position(&r, "task-restored", "toolchain") > gate_ended);
    assert_eq!(restored["layer"], r.events[fetched]["layer"]);
    assert_eq!(
        count(&r, "layer-fetched", "toolchain"),
        1,
        "{:#?}",
        r.events
    );
    let bytes = r.events[fetched]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "{bytes}");
    // Only what runs ran, on the toolchain's files.
    assert_eq!(s.counter.take(), vec!["build"]);
    assert_eq!(r.status("toolchain"), "restored");
    assert_eq!(r.status("docs"), "restored");
    assert!(r.output("build").contains(&"tool-v1".to_string()));
    // `docs` (nobody runs on it) is fetched second, once `toolchain`'s layer is in, and
    // before the gate ends too.
    assert!(
        position(&r, "layer-fetched", "docs") < gate_ended,
        "{:#?}",
        r.events
    );
    let docs = position(&r, "layer-prefetching", "docs");
    assert!(
        r.events[docs].get("needed_by").is_none(),
        "{}",
        r.events[docs]
    );
    assert!(docs > fetched, "{:#?}", r.events);
    assert_eq!(count(&r, "layer-fetched", "docs"), 1, "{:#?}", r.events);
    // Every byte counted once.
    let docs_bytes = r.event("layer-fetched", "docs").unwrap()["bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(r.summary()["restored_bytes"], bytes + docs_bytes);
    assert!(files_in(&b.path().join("tmp")).is_empty());
}

#[test]
fn without_prefetch_the_layer_is_fetched_after_the_slow_task_ahead() {
    let s = published();
    // `--prefetch off`: what strata did before — `toolchain` is looked up when it starts.
    let c = CacheDir::new("strata-cache-c-");
    let started = |e: &Value| is(e, "task-started", "gate");
    let r = run(
        &s.f,
        c.path(),
        &s.url,
        &["--prefetch", "off"],
        started,
        &s.gate,
    );
    assert_eq!(r.code, 0, "{}\n{:#?}", r.stderr, r.events);
    assert!(r.events.iter().all(|e| e["event"] != "layer-prefetching"));
    assert!(position(&r, "layer-fetched", "toolchain") > position(&r, "task-passed", "gate"));
    assert_eq!(s.counter.take(), vec!["build"]);

    // `--prefetch needed`: the layer `build` needs, not the one only `docs` stands on. (The
    // run above published `build`: another change makes it run again.)
    s.gate.close();
    s.f.write("src/main.c", "int main() { return 2; }\n");
    let d = CacheDir::new("strata-cache-d-");
    let fetched = |e: &Value| is(e, "layer-fetched", "toolchain");
    let r = run(
        &s.f,
        d.path(),
        &s.url,
        &["--prefetch", "needed"],
        fetched,
        &s.gate,
    );
    assert_eq!(r.code, 0, "{}\n{:#?}", r.stderr, r.events);
    assert!(position(&r, "layer-fetched", "toolchain") < position(&r, "task-passed", "gate"));
    assert_eq!(count(&r, "layer-prefetching", "docs"), 0, "{:#?}", r.events);
    assert!(position(&r, "layer-fetched", "docs") > position(&r, "task-passed", "gate"));
    assert_eq!(s.counter.take(), vec!["build"]);

    // `--no-shared-cache`: nothing to prefetch from; everything runs.
    s.gate.open();
    let e = CacheDir::new("strata-cache-e-");
    let r = run(
        &s.f,
        e.path(),
        &s.url,
        &["--no-shared-cache"],
        |_| false,
        &s.gate,
    );
    assert_eq!(r.code, 0, "{}\n{:#?}", r.stderr, r.events);
    assert!(r.events.iter().all(|e| e["event"] != "layer-prefetching"));
    assert_eq!(s.counter.take(), vec!["build", "docs", "toolchain"]);
}

#[test]
fn a_prefetch_that_fails_leaves_the_task_to_build_as_without_prefetch() {
    let s = published();
    // Flip a byte in the middle of every blob over 1.5 MB: `toolchain`'s layer.
    let mut tampered = 0;
    for blob in walk(&s.bucket) {
        let mut bytes = std::fs::read(&blob).unwrap();
        if bytes.len() > 1_500_000 {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&blob, bytes).unwrap();
            tampered += 1;
        }
    }
    assert_eq!(
        tampered,
        1,
        "expected one big blob in {}",
        s.bucket.display()
    );
    let b = CacheDir::new("strata-cache-b-");
    let warned = |e: &Value| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("failed to prefetch `toolchain`")
    };
    let r = run(&s.f, b.path(), &s.url, &[], warned, &s.gate);
    assert_eq!(r.code, 0, "{}\n{:#?}", r.stderr, r.events);
    // The prefetch failed before `toolchain` started: it looked its key up again, found the
    // entry condemned and built it, in this pass (no second pass, no task deferred).
    assert!(r.events.iter().any(warned), "{:#?}", r.events);
    assert_eq!(r.status("toolchain"), "ran", "{:#?}", r.events);
    assert_eq!(r.status("build"), "ran", "{:#?}", r.events);
    assert_eq!(s.counter.take(), vec!["build", "toolchain"]);
    assert!(
        !r.events.iter().any(|e| e["event"] == "warning"
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("running again")),
        "{:#?}",
        r.events
    );
    // Nothing half-written: no layer of the tampered archive, nothing left in tmp/.
    assert!(files_in(&b.path().join("tmp")).is_empty());
    assert_eq!(
        count(&r, "layer-fetched", "toolchain"),
        0,
        "{:#?}",
        r.events
    );
}

#[test]
fn fail_fast_stops_the_prefetch_and_leaves_no_partial_layer() {
    let s = published();
    // `gate` now fails at once: with --fail-fast nothing after it starts.
    let failing = std::fs::read_to_string(s.f.pipeline())
        .unwrap()
        .replace(&s.gate.command(), "exit 7");
    s.f.write("strata.yml", &failing);
    let b = CacheDir::new("strata-cache-b-");
    let r = run(&s.f, b.path(), &s.url, &["--fail-fast"], |_| false, &s.gate);
    assert_eq!(r.code, 1, "{}\n{:#?}", r.stderr, r.events);
    assert_eq!(r.status("gate"), "failed");
    for t in ["toolchain", "docs", "build"] {
        assert_eq!(r.status(t), "skipped", "{t}: {:#?}", r.events);
    }
    assert!(s.counter.take().is_empty());
    // Whatever the prefetch had started was joined before the run ended: each layer it
    // announced arrived whole, and nothing is left in tmp/.
    for e in &r.events {
        if e["event"] == "layer-prefetching" {
            let task = e["task"].as_str().unwrap();
            assert_eq!(count(&r, "layer-fetched", task), 1, "{:#?}", r.events);
        }
    }
    assert!(files_in(&b.path().join("tmp")).is_empty());
    assert_eq!(r.summary()["restored_bytes"], {
        let fetched: u64 = (r.events.iter())
            .filter(|e| e["event"] == "layer-fetched")
            .map(|e| e["bytes"].as_u64().unwrap())
            .sum();
        fetched
    });
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
