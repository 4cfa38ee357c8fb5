//! Shared caches end to end: two "machines" (two local caches) share one remote — a real S3
//! server, a real registry, or a directory — started by the test.

mod common;

use std::path::Path;

use common::{Counter, Fixture, RunResult};
use strata_testkit::Server;

fn pipeline(counter: &Counter) -> String {
    format!(
        r#"tasks:
  - key: deps
    filter: [deps.txt]
    run: |
      {}
      mkdir -p /opt/deps/bin
      cp deps.txt /opt/deps/
      head -c 3000000 /dev/urandom > /opt/deps/blob
      ln /opt/deps/blob /opt/deps/blob-link
      printf '#!/bin/sh\necho tool ok\n' > /opt/deps/bin/tool && chmod 755 /opt/deps/bin/tool
      echo /opt/deps/bin > $STRATA_ENV/PATH
  - key: build
    use: [deps]
    filter: [src]
    run: |
      {}
      cat src/* > /opt/app
      rm /opt/deps/deps.txt
  - key: lint
    use: [deps]
    filter: [lint.cfg]
    run: {}; tool
  - key: test
    use: [build]
    filter: [src]
    run: |
      {}
      test -f /opt/app && test ! -e /opt/deps/deps.txt
      cmp /opt/deps/blob /opt/deps/blob-link
      tool
"#,
        counter.ping("deps"),
        counter.ping("build"),
        counter.ping("lint"),
        counter.ping("test")
    )
}

/// A workspace with the pipeline above and its three inputs, and the counter its tasks ping.
fn workspace(deps: &str, main_c: &str, lint: &str) -> (Fixture, Counter) {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write("strata.yml", &pipeline(&counter));
    f.write("deps.txt", deps);
    f.write("src/main.c", main_c);
    f.write("lint.cfg", lint);
    (f, counter)
}

/// A workspace whose pipeline ran once and was published to a directory cache.
fn published_to_a_directory() -> (tempfile::TempDir, String, Fixture, Counter) {
    let remote_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote_dir.path().display());
    let (f, counter) = workspace("x\n", "x\n", "x\n");
    assert_eq!(run(&f, f.cache.path(), &url, &[]).code, 0);
    counter.take();
    (remote_dir, url, f, counter)
}

/// A second machine: the same workspace, its own local cache.
struct Machine {
    cache: common::CacheDir,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            cache: common::CacheDir::new("strata-cache-b-"),
        }
    }
}

fn run(f: &Fixture, cache: &Path, remote: &str, extra: &[&str]) -> RunResult {
    f.run_remote(cache, remote, extra)
}

fn from(r: &RunResult, task: &str) -> String {
    r.event("task-restored", task)
        .map(|e| e["from"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("not cached ({})", r.status(task)))
}

fn all_tasks() -> [&'static str; 4] {
    ["deps", "build", "lint", "test"]
}

/// The scenario every backend must pass.
fn two_machines_share(remote: &str, location: &str) {
    let (f, counter) = workspace("left-pad 1.3\n", "int main() { return 0; }\n", "strict\n");
    let machine_a = f.cache.path();
    let machine_b = Machine::new();

    // Machine A runs everything and publishes it.
    let a = run(&f, machine_a, remote, &[]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(counter.take(), vec!["build", "deps", "lint", "test"]);
    for t in all_tasks() {
        let warnings = a.warnings();
        assert!(
            a.event("task-pushed", t).is_some(),
            "{t} was not pushed: {warnings:?}"
        );
    }
    assert!(a.summary()["pushed_bytes"].as_u64().unwrap() > 1_000_000);

    // Machine B, with an empty local cache, restores everything: no command runs.
    let b = run(&f, machine_b.cache.path(), remote, &[]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(
        counter.take(),
        Vec::<String>::new(),
        "a command ran on machine B"
    );
    for t in all_tasks() {
        assert_eq!(from(&b, t), location, "{t}");
    }
    assert!(b.summary()["restored_bytes"].as_u64().unwrap() > 1_000_000);
    // The hits were written back: B's next run is all local.
    let b2 = run(&f, machine_b.cache.path(), remote, &[]);
    for t in all_tasks() {
        assert_eq!(from(&b2, t), "local", "{t}");
    }
    // B holds exactly the layers A built (`lint` and `test` write nothing: one empty layer),
    // as directories or, restored with `--layer-images`, as images.
    let layers = |cache: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(cache.join("layers"))
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".erofs").unwrap_or(&name).to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(layers(machine_b.cache.path()), layers(machine_a));
    assert_eq!(layers(machine_a).len(), 3);

    // A change on machine A: only the tasks it affects run there...
    f.write("src/main.c", "int main() { return 1; }\n");
    let a = run(&f, machine_a, remote, &[]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(counter.take(), vec!["build", "test"]);
    // ...and machine B restores exactly those from the shared cache, the rest locally.
    let b = run(&f, machine_b.cache.path(), remote, &[]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(counter.take(), Vec::<String>::new());
    assert_eq!(from(&b, "deps"), "local");
    assert_eq!(from(&b, "lint"), "local");
    assert_eq!(from(&b, "build"), location);
    assert_eq!(from(&b, "test"), location);

    // A change nobody has built yet: B runs only what it affects, over restored layers.
    f.write("lint.cfg", "lenient\n");
    let b = run(&f, machine_b.cache.path(), remote, &[]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(counter.take(), vec!["lint"]);
}

#[test]
fn two_machines_share_an_s3_bucket() {
    let server = Server::s3("strata-ci");
    let url = format!("s3://strata-ci/team?endpoint={}", server.endpoint());
    two_machines_share(&url, "s3://strata-ci/team");
}

#[test]
fn two_machines_share_a_registry() {
    let server = Server::registry();
    let url = format!("oci://{}/ci/cache", server.host());
    two_machines_share(&url, &url);
}

/// Runs `tasks` tasks that write nothing and print nothing (one layer, one log between them;
/// their commands differ, so their keys do)
/// with `remote`, checks that every one was published without a warning, and returns the bytes
/// of layer archives uploaded.
fn publish_empty_tasks(remote: &str, tasks: usize) -> u64 {
    let f = Fixture::new();
    let mut yml = String::from("tasks:\n");
    for i in 0..tasks {
        yml.push_str(&format!("  - key: check-{i}\n    run: true {i}\n"));
    }
    f.write("strata.yml", &yml);
    let r = run(&f, f.cache.path(), remote, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let warnings = r.warnings();
    assert!(warnings.is_empty(), "{warnings:?}");
    for i in 0..tasks {
        assert!(
            r.event("task-pushed", &format!("check-{i}")).is_some(),
            "check-{i}"
        );
    }
    r.summary()["pushed_bytes"].as_u64().unwrap()
}

/// Tasks of one run that make the same layer and the same log (nothing, the usual case) publish
/// at once: the archive goes up once and every entry lands. A registry used to refuse an entry
/// now and then when two uploads of one blob crossed.
#[test]
fn tasks_making_the_same_layer_at_once_upload_it_once() {
    let server = Server::registry();
    let one = publish_empty_tasks(&format!("oci://{}/ci/one", server.host()), 1);
    assert!(one > 0);
    let six = publish_empty_tasks(&format!("oci://{}/ci/six", server.host()), 6);
    assert_eq!(
        six, one,
        "six tasks making one layer uploaded it more than once"
    );
}

#[test]
fn two_machines_share_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    two_machines_share(&url, &url);
}

#[test]
fn an_unreachable_remote_warns_once_and_the_run_goes_on() {
    let (f, counter) = workspace("x\n", "x\n", "x\n");
    let closed = format!(
        "s3://strata-ci?endpoint=http://127.0.0.1:{}",
        strata_testkit::free_port()
    );
    let r = run(&f, f.cache.path(), &closed, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(counter.take().len(), 4);
    let warnings = r.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("unreachable"), "{warnings:?}");
    // The local cache still works.
    let r = run(&f, f.cache.path(), &closed, &[]);
    assert!(all_tasks().iter().all(|t| from(&r, t) == "local"));
}

#[test]
fn a_read_only_remote_is_never_written() {
    let server = Server::s3("strata-ci");
    let url = format!("s3://strata-ci/ro?endpoint={}", server.endpoint());
    let (f, _counter) = workspace("x\n", "x\n", "x\n");
    let r = run(&f, f.cache.path(), &format!("{url},ro"), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.events.iter().all(|e| e["event"] != "task-pushed"));
    let objects = walk_files(&server.dir.path().join("strata-ci"));
    assert!(
        objects.is_empty(),
        "the read-only cache was written: {objects:?}"
    );
    // A machine with the same cache read-write does publish.
    let other = Machine::new();
    let r = run(&f, other.cache.path(), &url, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!walk_files(&server.dir.path().join("strata-ci")).is_empty());
}

fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn a_tampered_layer_is_refused_and_never_applied() {
    let (remote_dir, url, f, counter) = published_to_a_directory();
    // Flip a byte in the middle of every blob of more than 1 MB (the deps layer).
    for blob in walk_files(&remote_dir.path().join("blobs")) {
        let mut bytes = std::fs::read(&blob).unwrap();
        if bytes.len() > 1_000_000 {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&blob, bytes).unwrap();
        }
    }
    let b = Machine::new();
    let r = run(&f, b.cache.path(), &url, &["--target", "lint"]);
    // A shared cache never fails a run: the task it could not give is built.
    assert_eq!(r.code, 0, "{:?}", r.events);
    assert_eq!(r.status("deps"), "ran", "{:?}", r.events);
    assert_eq!(r.status("lint"), "ran", "{:?}", r.events);
    assert_eq!(counter.take(), vec!["deps", "lint"]);
    let warned = r
        .events
        .iter()
        .any(|e| e["event"] == "warning" && e["message"].as_str().unwrap_or("").contains("deps"));
    assert!(
        warned,
        "no warning about the tampered layer: {:?}",
        r.events
    );
    // Nothing of it reached the local cache.
    let layers: Vec<_> = std::fs::read_dir(b.cache.path().join("layers"))
        .unwrap()
        .flatten()
        .collect();
    let deps_layer = r.event("task-restored", "deps").unwrap()["layer"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        layers
            .iter()
            .all(|l| l.file_name().to_string_lossy() != deps_layer),
        "the tampered layer was published"
    );
    let tmp = std::fs::read_dir(b.cache.path().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "the half-unpacked layer was left behind");

    // What the run built is this machine's now; the broken entry is not asked for again.
    let r = run(&f, b.cache.path(), &url, &["--target", "lint"]);
    assert_eq!(r.code, 0, "{:?}", r.events);
    assert_eq!(r.status("deps"), "restored", "{:?}", r.events);
    assert_eq!(r.event("task-restored", "deps").unwrap()["from"], "local");
    assert!(counter.take().is_empty());
}

#[test]
fn a_registry_that_wants_credentials() {
    let registry = Server::registry_with_auth("ci", "s3cret");
    let url = format!("oci://{}/ci/cache", registry.host());
    let (f, counter) = workspace("x\n", "x\n", "x\n");

    // No credentials: one warning that says what to do; the run itself succeeds.
    let r = run(&f, f.cache.path(), &url, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let warnings: Vec<_> = r
        .events
        .iter()
        .filter(|e| e["event"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = warnings[0];
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("STRATA_REGISTRY_USERNAME"),
        "{warning}"
    );
    counter.take();

    // Credentials from the environment: published.
    let out = f
        .command(&["run", "--json", "--no-cache", "--remote", &url])
        .env("STRATA_REGISTRY_USERNAME", "ci")
        .env("STRATA_REGISTRY_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let published = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(published.contains("\"task-pushed\""));
    counter.take();

    // Credentials from Docker's config file: another machine restores everything.
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "Y2k6czNjcmV0"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let b = Machine::new();
    let out = f
        .command(&["run", "--json", "--remote", &url])
        .env("STRATA_CACHE_DIR", b.cache.path())
        .env("DOCKER_CONFIG", docker.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        counter.take().is_empty(),
        "a command ran on the second machine: {}\npublished by:\n{published}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("\"event\":\"layer-fetched\"").count(),
        4,
        "{stdout}"
    );
}

#[test]
fn an_entry_whose_layer_was_cleaned_up_is_a_miss() {
    let (remote_dir, url, f, counter) = published_to_a_directory();
    // Someone cleans the bucket of big blobs: the deps layer's archive is gone, its entry stays.
    for blob in walk_files(&remote_dir.path().join("blobs")) {
        if std::fs::metadata(&blob).unwrap().len() > 1_000_000 {
            std::fs::remove_file(&blob).unwrap();
        }
    }
    let b = Machine::new();
    let r = run(&f, b.cache.path(), &url, &["--target", "lint"]);
    assert_eq!(r.code, 0, "{:?}", r.events);
    assert_eq!(
        r.status("deps"),
        "ran",
        "a hit was announced whose layer cannot arrive"
    );
    assert!(
        r.events.iter().all(|e| e["event"] != "warning"),
        "{:?}",
        r.events
    );
    assert_eq!(counter.take(), vec!["deps", "lint"]);
}

/// The entry document of `task` in a directory cache, and its path.
fn entry_of(remote: &Path, task: &str) -> (std::path::PathBuf, serde_json::Value) {
    for path in walk_files(&remote.join("entries")) {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if doc["task"] == task {
            return (path.into(), doc);
        }
    }
    panic!("no entry for {task} in {}", remote.display());
}

#[test]
fn a_swapped_archive_is_caught_by_the_layer_digest_and_never_applied() {
    // An entry whose archive was replaced by another valid one — archive digest, size and
    // diff_id updated to match, the layer name kept — passes every blob check. The tree the
    // archive unpacks to must still be the layer the entry names.
    let (remote_dir, url, f, counter) = published_to_a_directory();
    let (deps_path, mut deps) = entry_of(remote_dir.path(), "deps");
    let (_, lint) = entry_of(remote_dir.path(), "lint");
    let claimed = deps["layer"].as_str().unwrap().to_string();
    deps["archive"] = lint["archive"].clone();
    std::fs::write(&deps_path, serde_json::to_vec(&deps).unwrap()).unwrap();

    let b = Machine::new();
    let r = run(&f, b.cache.path(), &url, &["--target", "lint"]);
    assert_eq!(r.code, 0, "{:?}", r.events);
    assert_eq!(r.status("deps"), "ran", "{:?}", r.events);
    let warning = r
        .events
        .iter()
        .filter(|e| e["event"] == "warning")
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains("`deps`"))
        .unwrap_or_else(|| panic!("no warning about deps: {:?}", r.events))
        .to_string();
    assert!(
        warning.contains("corrupt") && warning.contains("not the"),
        "{warning}"
    );
    // deps writes random bytes: what this machine built is another layer, and nothing took
    // the claimed name.
    assert!(
        !b.cache.path().join("layers").join(&claimed).exists(),
        "the swapped archive was published under the claimed layer name"
    );
    assert!(counter.take().contains(&"deps".to_string()));
}

#[test]
fn sockets_and_opaque_dirs_make_the_same_layer_on_both_machines() {
    let remote_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote_dir.path().display());
    let f = Fixture::new();
    f.write(
        "strata.yml",
        r#"tasks:
  - key: base
    run: mkdir -p /opt/tree/old && touch /opt/tree/old/a
  - key: odd
    use: [base]
    run: |
      perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Type=>SOCK_STREAM(), Local=>"/opt/agent.sock", Listen=>1) or die'
      test -S /opt/agent.sock
      rm -rf /opt/tree && mkdir -p /opt/tree && touch /opt/tree/new
  - key: after
    use: [odd]
    run: ls /opt/tree > /opt/listing
"#,
    );
    let a = run(&f, f.cache.path(), &url, &[]);
    assert_eq!(a.code, 0, "{}\n{:?}", a.stderr, a.events);
    let (_, entry) = entry_of(remote_dir.path(), "odd");
    let odd_layer = entry["layer"].as_str().unwrap();
    // The socket is not part of the layer on this machine either.
    let local = f.cache.path().join("layers").join(odd_layer);
    assert!(local.join("opt/tree").is_dir());
    assert!(
        !local.join("opt/agent.sock").exists(),
        "the socket stayed in the local layer"
    );

    // Another machine restores the same tree: it verifies, and nothing is rebuilt.
    let b = Machine::new();
    let r = run(&f, b.cache.path(), &url, &[]);
    assert_eq!(r.code, 0, "{:?}", r.events);
    let warnings = r.warnings();
    assert!(warnings.is_empty(), "{warnings:?}");
    for t in ["base", "odd", "after"] {
        assert_eq!(r.status(t), "restored", "{t}: {:?}", r.events);
    }
    // The layer as a directory, or the mount of its image.
    let restored = ["layers", "mounts"]
        .iter()
        .map(|d| b.cache.path().join(d).join(odd_layer))
        .find(|p| p.is_dir())
        .expect("the layer is restored");
    assert!(restored.join("opt/tree/new").exists());
}

#[test]
fn a_truncated_blob_of_a_task_nothing_waits_for_is_built_in_the_same_run() {
    let (remote_dir, url, f, counter) = published_to_a_directory();
    for blob in walk_files(&remote_dir.path().join("blobs")) {
        let bytes = std::fs::read(&blob).unwrap();
        if bytes.len() > 1_000_000 {
            std::fs::write(&blob, &bytes[..bytes.len() / 3]).unwrap();
        }
    }
    let b = Machine::new();
    // `deps` alone: no task waits for its layer, yet the run must not end without it.
    let r = run(&f, b.cache.path(), &url, &["--target", "deps"]);
    assert_eq!(r.code, 0, "{:?}", r.events);
    assert_eq!(r.status("deps"), "ran", "{:?}", r.events);
    assert_eq!(counter.take(), vec!["deps"]);
    let again = r
        .events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .any(|m| m.contains("running again"));
    assert!(again, "{:?}", r.events);
    let r = run(&f, b.cache.path(), &url, &["--target", "deps"]);
    assert_eq!(r.event("task-restored", "deps").unwrap()["from"], "local");
}

#[test]
fn a_task_with_the_cache_off_is_not_run_again_when_the_run_goes_again() {
    // The first pass runs `notify` (no cache: it has side effects); `deps` cannot be restored, so
    // the run goes again to build it. `notify` must not run a second time.
    let remote_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote_dir.path().display());
    let f = Fixture::new();
    let counter = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: deps\n    run: {}; head -c 3000000 /dev/urandom > /blob\n  - key: notify\n    cache: false\n    run: {}\n  - key: after\n    use: [deps]\n    run: {}; test -s /blob\n",
            counter.ping("deps"),
            counter.ping("notify"),
            counter.ping("after")
        ),
    );
    assert_eq!(run(&f, f.cache.path(), &url, &[]).code, 0);
    counter.take();
    for blob in walk_files(&remote_dir.path().join("blobs")) {
        let bytes = std::fs::read(&blob).unwrap();
        if bytes.len() > 1_000_000 {
            std::fs::write(&blob, &bytes[..bytes.len() / 2]).unwrap();
        }
    }
    let b = Machine::new();
    let r = run(&f, b.cache.path(), &url, &[]);
    assert_eq!(r.code, 0, "{:?}", r.events);
    let mut ran = counter.take();
    ran.sort();
    assert_eq!(ran, vec!["after", "deps", "notify"], "{:?}", r.events);
    assert_eq!(r.status("notify"), "ran");
}

/// The bytes under `dir`, counting every file (a server's stored objects and partial uploads).
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

#[test]
fn a_shared_cache_dying_mid_upload_fails_nothing_and_leaves_no_entry() {
    let mut server = Server::s3("strata-ci");
    let url = format!("s3://strata-ci?endpoint={}", server.endpoint());
    let f = Fixture::new();
    let counter = Counter::start();
    // Incompressible, so the upload takes long enough to be cut in the middle.
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: big\n    run: |\n      {}\n      head -c 200000000 /dev/urandom > /opt/big\n",
            counter.ping("big")
        ),
    );
    let child = f
        .command(&["run", "--json", "--remote", &url])
        .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once part of the archive has arrived, and before all of it has.
    let start = std::time::Instant::now();
    let mut seen = 0;
    while start.elapsed() < std::time::Duration::from_secs(120) {
        seen = bytes_under(server.data_dir());
        if seen > 32_000_000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        (32_000_000..190_000_000).contains(&seen),
        "the server must be killed mid-upload (it held {seen} bytes)"
    );
    server.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.status.code(), Some(0), "{events:?}");
    let warnings: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "warning")
        .filter_map(|e| e["message"].as_str())
        .collect();
    // One warning, naming the shared cache and the cause, not the local cache.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&server.host()), "{warnings:?}");
    assert!(!warnings[0].contains("X-Amz-Signature"), "{warnings:?}");
    assert!(!warnings[0].contains("local cache"), "{warnings:?}");
    assert_eq!(counter.take(), vec!["big"]);
    // The local entry is whole.
    let r = f.run(&[]);
    assert_eq!(r.event("task-restored", "big").unwrap()["from"], "local");
    // The shared cache holds no entry: a fresh machine builds the task, and the run passes.
    server.restart();
    let b = Machine::new();
    let r = run(&f, b.cache.path(), &url, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("big"), "ran", "{:?}", r.events);
    assert_eq!(counter.take(), vec!["big"]);
}
