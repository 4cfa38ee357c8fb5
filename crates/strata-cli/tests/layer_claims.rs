//! A shared entry says whether its layer wrote anything under `/workspace`
//! (`writes_workspace`), so that a filtered task's key can be known before the layers under it
//! are downloaded: on a cold machine, a chain of `use:` + `filter:` tasks is looked up (and its
//! layers fetched) all at once instead of one download after another. Against a real S3 server
//! (s3s-fs); the claim is checked when the layer arrives.

mod common;

use std::path::{Path, PathBuf};

use common::{CacheDir, Fixture, RunResult};
use serde_json::Value;
use strata_testkit::Server;

/// `toolchain` and `deps` write outside the workspace; `gen` writes `gen.txt` into it; `build`
/// (which runs on the second machine: `src` changed) reads all three.
const PIPELINE: &str = r#"tasks:
  - key: toolchain
    run: mkdir -p /opt/tool && echo tool-v1 > /opt/tool/version
  - key: deps
    use: [toolchain]
    filter: [deps.txt]
    run: mkdir -p /opt/deps && cp deps.txt /opt/deps/list
  - key: gen
    use: [deps]
    filter: [deps.txt]
    run: echo generated > gen.txt
  - key: build
    use: [gen]
    filter: [src, gen.txt]
    run: cat /opt/tool/version /opt/deps/list gen.txt src/main.c
"#;

struct Published {
    _server: Server,
    url: String,
    bucket: PathBuf,
    f: Fixture,
}

/// Machine A ran the pipeline and published it; then `src/main.c` changed.
fn published() -> Published {
    let server = Server::s3("strata-ci");
    let url = format!("s3://strata-ci/team?endpoint={}", server.endpoint());
    let bucket = server.data_dir().join("strata-ci");
    let f = Fixture::new();
    f.write("strata.yml", PIPELINE);
    f.write("deps.txt", "left-pad 1.0\n");
    f.write("src/main.c", "int main() { return 0; }\n");
    let a = run(&f, f.cache.path(), &url);
    assert_eq!(a.code, 0, "{}\n{:?}", a.stderr, a.events);
    for t in ["toolchain", "deps", "gen", "build"] {
        assert!(a.event("task-pushed", t).is_some(), "{t}: {:?}", a.events);
    }
    f.write("src/main.c", "int main() { return 1; }\n");
    Published {
        _server: server,
        url,
        bucket,
        f,
    }
}

fn with_s3(mut cmd: std::process::Command, cache: &Path) -> std::process::Command {
    cmd.env("STRATA_CACHE_DIR", cache)
        .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY);
    cmd
}

fn run(f: &Fixture, cache: &Path, remote: &str) -> RunResult {
    f.run_remote(cache, remote, &[])
}

/// `strata plan --json` on the machine whose local cache is `cache`: task -> its row.
fn plan(f: &Fixture, cache: &Path, remote: &str) -> Vec<Value> {
    let out = with_s3(f.command(&["plan", "--json", "--remote", remote]), cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn row<'a>(rows: &'a [Value], task: &str) -> &'a Value {
    rows.iter().find(|r| r["task"] == task).unwrap()
}

/// The entry documents in the bucket, with their files.
fn entries(bucket: &Path) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut dirs = vec![bucket.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(doc) = serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap())
                && doc.get("schema").is_some()
                && doc.get("layer").is_some()
            {
                out.push((path, doc));
            }
        }
    }
    out
}

fn layers_here(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("layers"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().len() == 64)
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn entries_say_whether_their_layer_wrote_into_the_workspace() {
    let p = published();
    let docs = entries(&p.bucket);
    let says = |task: &str| {
        docs.iter()
            .find(|(_, d)| d["task"] == task)
            .unwrap_or_else(|| panic!("no entry of {task} in {docs:?}"))
            .1["writes_workspace"]
            .clone()
    };
    assert_eq!(says("toolchain"), Value::Bool(false));
    assert_eq!(says("deps"), Value::Bool(false));
    assert_eq!(says("gen"), Value::Bool(true));
}

#[test]
fn a_filtered_chain_is_keyed_before_its_layers_are_downloaded() {
    let p = published();
    // A cold machine: nothing local. `deps` and `gen` are filtered tasks on layers that are not
    // here; their keys come from the claims of the entries under them, so the plan knows them
    // without downloading anything. `build` stands on `gen`, which wrote into the workspace:
    // its key needs `gen`'s layer.
    let cold = CacheDir::new("strata-claims-cold");
    let rows = plan(&p.f, cold.path(), &p.url);
    for t in ["toolchain", "deps", "gen"] {
        assert_eq!(row(&rows, t)["status"], "shared-hit", "{t}: {rows:?}");
    }
    assert_eq!(row(&rows, "build")["status"], "after-restore", "{rows:?}");
    assert_eq!(row(&rows, "build")["waits_for"], "gen", "{rows:?}");
    assert_eq!(layers_here(cold.path()), 0, "the plan downloaded nothing");

    // The run restores the chain and runs `build` over all of it.
    let b = run(&p.f, cold.path(), &p.url);
    assert_eq!(b.code, 0, "{}\n{:?}", b.stderr, b.events);
    for t in ["toolchain", "deps", "gen"] {
        assert_eq!(b.status(t), "restored", "{t}: {:?}", b.events);
    }
    assert_eq!(b.status("build"), "ran");
    assert_eq!(
        b.output("build"),
        vec![
            "tool-v1",
            "left-pad 1.0",
            "generated",
            "int main() { return 1; }"
        ]
    );

    // The keys taken from the claims are the keys computed from the layers themselves: a
    // second cold machine that downloads first (the plan of a warm one) agrees.
    let rows_cold = rows;
    let rows_warm = plan(&p.f, cold.path(), &p.url);
    for t in ["deps", "gen"] {
        assert_eq!(row(&rows_warm, t)["status"], "hit", "{t}: {rows_warm:?}");
        assert_eq!(
            row(&rows_warm, t)["key"],
            row(&rows_cold, t)["key"],
            "{t}: the key from the claim differs from the key from the layer"
        );
    }
}

#[test]
fn a_false_claim_fails_the_task_that_needs_the_layer() {
    let p = published();
    // Someone who can write the bucket says `gen` wrote nothing into the workspace.
    let (path, mut doc) = entries(&p.bucket)
        .into_iter()
        .find(|(_, d)| d["task"] == "gen")
        .unwrap();
    doc["writes_workspace"] = Value::Bool(false);
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();

    let cold = CacheDir::new("strata-claims-false");
    let b = run(&p.f, cold.path(), &p.url);
    assert_ne!(b.code, 0, "{:?}", b.events);
    let failed = b
        .event("task-failed", "build")
        .unwrap_or_else(|| panic!("build must fail: {:?}\n{}", b.events, b.stderr));
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("says it wrote nothing under /workspace, but it did"),
        "{reason}"
    );
}
