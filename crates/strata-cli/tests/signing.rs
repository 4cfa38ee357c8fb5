//! Signed entries end to end: `strata cache keygen`, a machine that publishes signed entries to
//! a directory or a real S3 server, and machines that trust its key (and restore), trust another
//! key or read unsigned or tampered entries (and build instead, with one warning).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Counter, Fixture, RunResult, strata};
use strata_testkit::Server;

/// A key pair made by `strata cache keygen NAME`: (secret text, public text).
fn keygen(name: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = strata()
        .args(["cache", "keygen", name, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = std::fs::read_to_string(dir.path().join(format!("{name}.secret"))).unwrap();
    let public = std::fs::read_to_string(dir.path().join(format!("{name}.public"))).unwrap();
    (secret.trim().to_string(), public.trim().to_string())
}

/// Two independent tasks and one above them; each reports to `counter` when it runs.
fn workspace() -> (Fixture, Counter) {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: left\n    run: {}; echo left > /left\n  - key: right\n    run: {}; echo right > /right\n  - key: both\n    use: [left, right]\n    run: {}; cat /left /right > /both\n",
            counter.ping("left"),
            counter.ping("right"),
            counter.ping("both"),
        ),
    );
    (f, counter)
}

/// `strata run --json` on `cache` (a machine's local cache) with `remote` and `env`.
fn run(f: &Fixture, cache: &Path, remote: &str, env: &[(&str, &str)]) -> RunResult {
    run_with(f, cache, &["--remote", remote], env)
}

/// `strata run --json` with `args`, on `cache`, with `env` (and no config file).
fn run_with(f: &Fixture, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> RunResult {
    // No config file of the machine's: an empty one.
    let config = f.ws().join("empty-config.yaml");
    std::fs::write(&config, "").unwrap();
    let mut cmd = f.command(&["run", "--json"]);
    cmd.args(args);
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
    result(cmd.output().unwrap())
}

fn result(out: std::process::Output) -> RunResult {
    let stdout = String::from_utf8_lossy(&out.stdout);
    RunResult {
        code: out.status.code().unwrap_or(-1),
        events: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wall: std::time::Duration::ZERO,
    }
}

fn warnings(r: &RunResult) -> Vec<String> {
    r.events
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn entry_documents(entries: &Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(entries)
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect()
}

/// Machine A publishes signed; B trusting A's key restores everything; C trusting another key
/// builds everything, with one warning naming the cause.
/// `entries`: where the remote keeps its entry documents as files, when it does.
fn signed_entries_are_trusted_only_with_their_key(remote: &str, entries: Option<&Path>) {
    let (f, counter) = workspace();
    let (secret, public) = keygen("ci-main");
    let (_, other) = keygen("ci-other");

    let a = run(
        &f,
        f.cache.path(),
        remote,
        &[("STRATA_SIGNING_KEY", &secret)],
    );
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(counter.take(), ["both", "left", "right"]);
    assert!(warnings(&a).is_empty(), "{:?}", warnings(&a));
    let docs = entries.map(entry_documents).unwrap_or_default();
    assert_eq!(docs.len(), if entries.is_some() { 3 } else { 0 });
    for doc in &docs {
        let sigs = doc["signatures"].as_array().expect("a signed entry");
        assert_eq!(sigs.len(), 1, "{doc}");
        assert_eq!(sigs[0]["key"], "ci-main");
    }
    // The secret key appears nowhere in what the run said.
    let data = secret.split_once(':').unwrap().1;
    let said = format!("{:?}{}", a.events, a.stderr);
    assert!(!said.contains(data), "the secret key was printed");

    // B only reads (`,ro`): a writable cache that trusts keys B cannot sign with would be
    // noticed (see below).
    let b = common::CacheDir::new("strata-cache-b-");
    let rb = run(
        &f,
        b.path(),
        &format!("{remote},ro"),
        &[("STRATA_TRUSTED_KEYS", &public)],
    );
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert!(counter.take().is_empty(), "machine B ran a task");
    for task in ["left", "right", "both"] {
        assert_eq!(rb.status(task), "restored", "{task}");
    }
    assert!(warnings(&rb).is_empty(), "{:?}", warnings(&rb));

    let c = common::CacheDir::new("strata-cache-c-");
    let rc = run(&f, c.path(), remote, &[("STRATA_TRUSTED_KEYS", &other)]);
    assert_eq!(rc.code, 0, "{}", rc.stderr);
    assert_eq!(
        counter.take(),
        ["both", "left", "right"],
        "machine C used entries it does not trust"
    );
    let w = warnings(&rc);
    let refused: Vec<_> = w
        .iter()
        .filter(|m| m.contains("ignoring the entry"))
        .collect();
    assert_eq!(refused.len(), 1, "one warning per cache per run: {w:?}");
    assert!(
        refused[0].contains("signed only by `ci-main`, which this cache does not trust"),
        "{}",
        refused[0]
    );
}

#[test]
fn a_directory_cache_serves_signed_entries_only_to_machines_trusting_the_key() {
    let remote = tempfile::tempdir().unwrap();
    signed_entries_are_trusted_only_with_their_key(
        &format!("file://{}", remote.path().display()),
        Some(&remote.path().join("entries")),
    );
}

#[test]
fn an_s3_cache_serves_signed_entries_only_to_machines_trusting_the_key() {
    let server = Server::s3("strata-ci");
    signed_entries_are_trusted_only_with_their_key(
        &format!("s3://strata-ci/main?endpoint={}", server.endpoint()),
        Some(&server.dir.path().join("strata-ci/main/entries")),
    );
}

#[test]
fn a_registry_cache_serves_signed_entries_only_to_machines_trusting_the_key() {
    let server = Server::registry();
    signed_entries_are_trusted_only_with_their_key(
        &format!("oci://{}/team/cache", server.host()),
        None,
    );
}

/// The set-up the README recommends: main writes `main/` signed by its key and trusts only that
/// key; pull requests read `main/` (read-only) and write `pr/` signed by their own key.
#[test]
fn pull_requests_share_a_cache_of_their_own_that_main_never_trusts() {
    let server = Server::s3("strata-ci");
    let (main_url, pr_url) = (
        format!("s3://strata-ci/main?endpoint={}", server.endpoint()),
        format!("s3://strata-ci/pr?endpoint={}", server.endpoint()),
    );
    let main_entries = server.dir.path().join("strata-ci/main/entries");
    let (main_secret, main_public) = keygen("ci-main");
    let (pr_secret, pr_public) = keygen("ci-pr");
    let (f, counter) = workspace();
    let main_job = |f: &Fixture, cache: &Path, caches: &str| {
        run_with(
            f,
            cache,
            &[],
            &[
                ("STRATA_CACHE", caches),
                ("STRATA_TRUSTED_KEYS", &main_public),
                ("STRATA_SIGNING_KEY", &main_secret),
            ],
        )
    };
    let pr_caches = format!("{pr_url} {main_url},ro");
    let pr_trust = format!("{main_public} {pr_public}");
    let pr_job = |f: &Fixture, cache: &Path| {
        run_with(
            f,
            cache,
            &[],
            &[
                ("STRATA_CACHE", &pr_caches),
                ("STRATA_TRUSTED_KEYS", &pr_trust),
                ("STRATA_SIGNING_KEY", &pr_secret),
            ],
        )
    };

    // Main builds everything and publishes it, signed.
    let m = main_job(&f, f.cache.path(), &main_url);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(warnings(&m).is_empty(), "{:?}", warnings(&m));
    assert_eq!(counter.take(), ["both", "left", "right"]);

    // A pull request changes `right`: it restores `left` from main and publishes the rest to
    // `pr/`, never to `main/`.
    f.write(
        "strata.yml",
        &std::fs::read_to_string(f.pipeline())
            .unwrap()
            .replace("echo right > /right", "echo RIGHT > /right"),
    );
    let pr1 = common::CacheDir::new("strata-cache-pr1-");
    let p = pr_job(&f, pr1.path());
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert!(warnings(&p).is_empty(), "{:?}", warnings(&p));
    assert_eq!(counter.take(), ["both", "right"]);
    assert_eq!(
        entry_documents(&main_entries).len(),
        3,
        "a PR wrote to main/"
    );

    // Another pull-request job restores it all, from both caches.
    let pr2 = common::CacheDir::new("strata-cache-pr2-");
    let p = pr_job(&f, pr2.path());
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert!(
        counter.take().is_empty(),
        "a PR job did not reuse the PR cache"
    );

    // Main with the same change, even reading `pr/` too, trusts none of the PR's results: it
    // builds them, with one warning, and publishes its own to `main/`.
    let main2 = common::CacheDir::new("strata-cache-main2-");
    let m = main_job(&f, main2.path(), &format!("{main_url} {pr_url},ro"));
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert_eq!(counter.take(), ["both", "right"]);
    assert_eq!(m.status("left"), "restored");
    let w = warnings(&m);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("signed only by `ci-pr`"), "{}", w[0]);
    assert_eq!(entry_documents(&main_entries).len(), 5);
}

#[test]
fn unsigned_entries_are_ignored_where_keys_are_trusted_and_used_where_none_are() {
    let (f, counter) = workspace();
    let (_, public) = keygen("ci-main");
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let a = run(&f, f.cache.path(), &url, &[]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    counter.take();
    assert!(
        entry_documents(&remote.path().join("entries"))
            .iter()
            .all(|d| d.get("signatures").is_none()),
        "an unsigned writer writes no `signatures`"
    );

    let b = common::CacheDir::new("strata-cache-b-");
    let rb = run(&f, b.path(), &url, &[("STRATA_TRUSTED_KEYS", &public)]);
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(counter.take(), ["both", "left", "right"]);
    let w = warnings(&rb);
    let refused: Vec<_> = w
        .iter()
        .filter(|m| m.contains("ignoring the entry"))
        .collect();
    assert_eq!(refused.len(), 1, "{w:?}");
    assert!(refused[0].contains("it is not signed"), "{}", refused[0]);
    // B publishes too, unsigned, to a cache it trusts only with signed entries: it is told.
    assert!(
        w.iter()
            .any(|m| m.contains("are unsigned ($STRATA_SIGNING_KEY is not set)")),
        "{w:?}"
    );

    // A cache without trusted keys behaves as before: unsigned entries are used.
    let c = common::CacheDir::new("strata-cache-c-");
    let rc = run(&f, c.path(), &url, &[]);
    assert_eq!(rc.code, 0, "{}", rc.stderr);
    assert!(counter.take().is_empty());
    assert!(warnings(&rc).is_empty(), "{:?}", warnings(&rc));
}

#[test]
fn an_entry_whose_archive_was_swapped_under_its_signature_is_refused() {
    let (f, counter) = workspace();
    let (secret, public) = keygen("ci-main");
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let a = run(&f, f.cache.path(), &url, &[("STRATA_SIGNING_KEY", &secret)]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    counter.take();

    // An attacker with write access to the cache makes `left` hand out `right`'s files: a
    // fully self-consistent lie (layer, archive digest, size and diff_id all `right`'s, so
    // every digest checks out), with `left`'s signature kept.
    let entries = remote.path().join("entries");
    let path_of = |task: &str| -> PathBuf {
        std::fs::read_dir(&entries)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let doc: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                doc["task"] == task
            })
            .unwrap()
    };
    let (left_path, right_path) = (path_of("left"), path_of("right"));
    let right: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&right_path).unwrap()).unwrap();
    let mut left: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&left_path).unwrap()).unwrap();
    left["layer"] = right["layer"].clone();
    left["archive"] = right["archive"].clone();
    assert!(left["signatures"].as_array().is_some_and(|s| s.len() == 1));
    std::fs::write(&left_path, serde_json::to_vec(&left).unwrap()).unwrap();

    let b = common::CacheDir::new("strata-cache-b-");
    let rb = run(&f, b.path(), &url, &[("STRATA_TRUSTED_KEYS", &public)]);
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(
        counter.take(),
        ["left"],
        "the swapped entry was used, or an honest one was not"
    );
    // `left` built on B is what A built: `both`, keyed on its parents' content, is restored.
    assert_eq!(rb.status("right"), "restored");
    assert_eq!(rb.status("both"), "restored");
    let w = warnings(&rb);
    let refused: Vec<_> = w
        .iter()
        .filter(|m| m.contains("ignoring the entry"))
        .collect();
    assert_eq!(refused.len(), 1, "{w:?}");
    assert!(
        refused[0].contains("of `left`")
            && refused[0].contains("its signature by `ci-main` does not match its content"),
        "{}",
        refused[0]
    );
    // B holds `left`'s own output, built there.
    let layers = b.path().join("layers");
    let found_left = std::fs::read_dir(&layers).unwrap().any(|l| {
        std::fs::read_to_string(l.unwrap().path().join("left")).is_ok_and(|s| s == "left\n")
    });
    assert!(found_left, "no layer on B holds `left`'s own output");
}

#[test]
fn per_cache_trusted_keys_come_from_the_config_file_next_to_plain_urls() {
    let (f, counter) = workspace();
    let (secret, public) = keygen("ci-main");
    let (signed_dir, plain_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A writes the same results, signed, to both caches (from a fresh local cache each time:
    // a local hit publishes nothing).
    for dir in [&signed_dir, &plain_dir] {
        let url = format!("file://{}", dir.path().display());
        let a_cache = common::CacheDir::new("strata-cache-a-");
        let a = run(&f, a_cache.path(), &url, &[("STRATA_SIGNING_KEY", &secret)]);
        assert_eq!(a.code, 0, "{}", a.stderr);
        assert_eq!(counter.take(), ["both", "left", "right"]);
    }
    // Tamper with one entry of the trusted cache: B must skip it there.
    let entries = signed_dir.path().join("entries");
    let tampered = std::fs::read_dir(&entries)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tampered).unwrap()).unwrap();
    let task = doc["task"].as_str().unwrap().to_string();
    doc["duration_ms"] = serde_json::json!(doc["duration_ms"].as_u64().unwrap() + 1);
    std::fs::write(&tampered, serde_json::to_vec(&doc).unwrap()).unwrap();

    f.write(
        "config.yaml",
        &format!(
            "cache:\n  - url: file://{},ro\n    trusted-keys: [\"{public}\"]\n  - file://{}\n",
            signed_dir.path().display(),
            plain_dir.path().display()
        ),
    );
    let b = common::CacheDir::new("strata-cache-b-");
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_CACHE_DIR", b.path())
        .env("STRATA_CONFIG", f.ws().join("config.yaml"))
        .env_remove("STRATA_CACHE")
        .env_remove("STRATA_TRUSTED_KEYS")
        .output()
        .unwrap();
    let rb = result(out);
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    // Nothing ran: the tampered entry is ignored in the trusted cache, and the plain cache,
    // which trusts no key, has it.
    assert!(counter.take().is_empty());
    let from = rb.event("task-restored", &task).expect("restored")["from"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        from.contains(&plain_dir.path().display().to_string()),
        "{from}"
    );
    let w = warnings(&rb);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("does not match its content"), "{}", w[0]);
}

#[test]
fn bad_keys_are_refused_with_where_they_came_from_and_never_repeat_a_secret() {
    let (f, counter) = workspace();
    let (secret, public) = keygen("ci-main");
    let data = secret.split_once(':').unwrap().1.to_string();
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());

    // A damaged signing key: exit 2, nothing run, the key not repeated.
    let damaged = format!("{}x", &secret[..secret.len() - 4]);
    let r = run(
        &f,
        f.cache.path(),
        &url,
        &[("STRATA_SIGNING_KEY", &damaged)],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("$STRATA_SIGNING_KEY"), "{}", r.stderr);
    assert!(!r.stderr.contains(&data[..16]), "{}", r.stderr);
    // A public key where the secret one belongs.
    let r = run(&f, f.cache.path(), &url, &[("STRATA_SIGNING_KEY", &public)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("is a public key, not a secret key"),
        "{}",
        r.stderr
    );
    // A trusted key in a bad format.
    let r = run(
        &f,
        f.cache.path(),
        &url,
        &[("STRATA_TRUSTED_KEYS", &format!("{public} ci-x:AAAA"))],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("$STRATA_TRUSTED_KEYS (item 2)"),
        "{}",
        r.stderr
    );
    assert!(counter.take().is_empty(), "a task ran despite bad input");

    // In the config file: file:line:col, and a secret key given as trusted is not repeated.
    f.write(
        "config.yaml",
        &format!("cache:\n  - url: {url}\n    trusted-keys:\n      - {secret}\n"),
    );
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_CONFIG", f.ws().join("config.yaml"))
        .env_remove("STRATA_CACHE")
        .env_remove("STRATA_TRUSTED_KEYS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config.yaml:4:9"), "{stderr}");
    assert!(stderr.contains("is a secret key"), "{stderr}");
    assert!(!stderr.contains(&data[..16]), "{stderr}");

    // In the pipeline: `strata check` refuses it at its line and column.
    f.write(
        "bad.yml",
        &format!("cache:\n  - url: {url}\n    trusted-keys: [\"ci-main:not-base64!\"]\ntasks:\n  - key: a\n    run: x\n"),
    );
    let out = f.output(&["check", "bad.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.yml:3:20"), "{stderr}");
    assert!(stderr.contains("not valid base64"), "{stderr}");
    assert!(counter.take().is_empty());
}

#[test]
fn keygen_writes_a_pair_once_and_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        strata()
            .args(["cache", "keygen", name, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = keygen("ci-main-1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = dir.path().join("ci-main-1.secret");
    let public = std::fs::read_to_string(dir.path().join("ci-main-1.public")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        public,
        "the public key is printed"
    );
    assert!(public.starts_with("ci-main-1:") && public.len() == "ci-main-1:".len() + 44 + 1);
    let secret_text = std::fs::read_to_string(&secret).unwrap();
    assert!(
        secret_text.starts_with("ci-main-1:") && secret_text.len() == "ci-main-1:".len() + 88 + 1
    );
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600,
        "the secret key is readable by its owner only"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret_text.trim()));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret_text.trim()));

    // Never over an existing key.
    let again = keygen("ci-main-1");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), secret_text);

    let bad = keygen("ci main");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("key name `ci main` is not valid"));
}
