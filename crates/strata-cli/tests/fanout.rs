//! Fan-out: `strata plan --format github-actions` writes a workflow whose jobs follow the
//! pipeline's graph, and running those jobs one after another, each on a machine of its own that
//! shares only a remote cache, builds every task once.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{CacheDir, Counter, Fixture, RunResult};
use yaml_rust2::{Yaml, YamlLoader};

fn pipeline(counter: &Counter) -> String {
    format!(
        r#"tasks:
  - key: deps
    run: |
      {}
      echo deps > /opt/deps
  - key: build
    use: [deps]
    run: |
      {}
      cat /opt/deps > /opt/app && echo app >> /opt/app
  - key: lint
    use: [deps]
    run: |
      {}
      test -f /opt/deps
  - key: stamp
    cache: false
    use: [build]
    run: |
      {}
      date +%s%N > /opt/stamp
  - key: package
    use: [stamp]
    run: |
      {}
      test -f /opt/stamp && test -f /opt/app
  - key: test
    use: [build]
    after: [lint]
    run: |
      {}
      grep -q app /opt/app
"#,
        counter.ping("deps"),
        counter.ping("build"),
        counter.ping("lint"),
        counter.ping("stamp"),
        counter.ping("package"),
        counter.ping("test"),
    )
}

/// The jobs of the generated workflow: id -> (needs, the `strata run` arguments of its step).
fn workflow(f: &Fixture) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let out = f.output(&["plan", "strata.yml", "--format", "github-actions"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let jobs = docs[0]["jobs"].as_hash().expect("a jobs map");
    let mut found = BTreeMap::new();
    for (id, job) in jobs {
        let id = id.as_str().unwrap().to_string();
        let needs = match &job["needs"] {
            Yaml::Array(a) => a.iter().map(|n| n.as_str().unwrap().to_string()).collect(),
            Yaml::BadValue => Vec::new(),
            other => panic!("needs of {id}: {other:?}"),
        };
        let steps = job["steps"].as_vec().expect("steps");
        let run = steps
            .iter()
            .filter_map(|s| s["run"].as_str())
            .find(|r| r.contains("strata run "))
            .expect("a step that runs strata");
        let args: Vec<String> = run
            .split_whitespace()
            .skip_while(|w| *w != "run")
            .skip(1)
            .map(str::to_string)
            .collect();
        found.insert(id, (needs, args));
    }
    found
}

fn targets(args: &[String]) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == "--target")
        .map(|w| w[1].clone())
        .collect()
}

#[test]
fn the_generated_workflow_follows_the_graph() {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write("strata.yml", &pipeline(&counter));
    let jobs = workflow(&f);
    // Every task in exactly one job.
    let mut job_of = BTreeMap::new();
    for (id, (_, args)) in &jobs {
        for t in targets(args) {
            assert!(job_of.insert(t.clone(), id.clone()).is_none(), "{t} twice");
        }
        assert!(
            args.contains(&"--require-cached-parents".to_string()),
            "{args:?}"
        );
    }
    let all: BTreeSet<&str> = ["deps", "build", "lint", "stamp", "package", "test"].into();
    assert_eq!(
        job_of.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        all
    );
    // The uncached task travels with its dependent; nothing else is grouped.
    assert_eq!(job_of["stamp"], job_of["package"]);
    assert_eq!(jobs.len(), 5, "{jobs:?}");
    // `needs` match the graph: every dependency is in the same job or a needed one, and nothing
    // else is needed.
    let deps: BTreeMap<&str, Vec<&str>> = [
        ("deps", vec![]),
        ("build", vec!["deps"]),
        ("lint", vec!["deps"]),
        ("stamp", vec!["build"]),
        ("package", vec!["stamp"]),
        ("test", vec!["build", "lint"]),
    ]
    .into();
    for (id, (needs, args)) in &jobs {
        let expected: BTreeSet<&str> = targets(args)
            .iter()
            .flat_map(|t| deps[t.as_str()].iter())
            .map(|d| job_of[*d].as_str())
            .filter(|j| j != id)
            .collect();
        let needs: BTreeSet<&str> = needs.iter().map(String::as_str).collect();
        assert_eq!(needs, expected, "needs of {id}");
    }
    // `plan --json` carries the same graph.
    let out = f.output(&["plan", "strata.yml", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let test = rows.iter().find(|r| r["task"] == "test").unwrap();
    assert_eq!(test["needs"], serde_json::json!(["build", "lint"]));
    assert_eq!(test["job"]["id"], "test");
}

fn run_job(f: &Fixture, cache: &std::path::Path, remote: &str, args: &[String]) -> RunResult {
    let mut full = vec![
        "run".to_string(),
        "--json".to_string(),
        "--remote".into(),
        remote.into(),
    ];
    full.extend(args.iter().cloned());
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let out = f
        .command(&full)
        .env("STRATA_CACHE_DIR", cache)
        .output()
        .unwrap();
    RunResult::of(&out)
}

#[test]
fn jobs_on_separate_machines_build_each_task_once_through_a_shared_cache() {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write("strata.yml", &pipeline(&counter));
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let jobs = workflow(&f);
    // In an order `needs` allows, each job on a machine (a local cache) of its own.
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ran = Vec::new();
    while done.len() < jobs.len() {
        let (id, (_, args)) = jobs
            .iter()
            .find(|(id, (needs, _))| !done.contains(*id) && needs.iter().all(|n| done.contains(n)))
            .expect("the needs form a DAG");
        let machine = CacheDir::new("strata-cache-job-");
        let r = run_job(&f, machine.path(), &url, args);
        assert_eq!(r.code, 0, "job {id}: {:?}\n{}", r.events, r.stderr);
        ran.extend(counter.take());
        done.insert(id.clone());
    }
    ran.sort();
    // Every task built exactly once across the fleet.
    assert_eq!(
        ran,
        vec!["build", "deps", "lint", "package", "stamp", "test"]
    );
}

#[test]
fn a_parent_in_no_cache_fails_the_job_instead_of_being_built() {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write("strata.yml", &pipeline(&counter));
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let machine = CacheDir::new("strata-cache-job-");
    let args: Vec<String> = ["--target", "build", "--require-cached-parents"]
        .map(String::from)
        .to_vec();
    let r = run_job(&f, machine.path(), &url, &args);
    assert_eq!(r.code, 1, "{:?}", r.events);
    let failed = r.event("task-failed", "deps").expect("deps fails");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("--require-cached-parents"),
        "{failed}"
    );
    assert!(counter.take().is_empty(), "nothing is built");
    // Without the flag, the parent is built here as usual.
    let r = run_job(&f, machine.path(), &url, &args[..2]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(counter.take(), vec!["build", "deps"]);
}
