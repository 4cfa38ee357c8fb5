//! Every bad-input case the pipeline file can have: each names the line and column.

use std::path::Path;

use strata_pipeline::{Base, EnvValue, parse_str};

fn errors(text: &str) -> String {
    let err = parse_str(Path::new("strata.yml"), text).expect_err("pipeline should be rejected");
    err.to_string()
}

#[test]
fn a_valid_pipeline_parses_in_full() {
    let text = r#"
base: host
tasks:
  - key: deps
    run: echo deps
    filter: [package.json, "!secret.json"]
    cache: {enabled: true, ttl: 7d}
  - key: test
    use: deps
    after: [deps]
    run: |
      echo one
      echo two
    env:
      CI: true
      TOKEN: {value: abc, cache-key: excluded}
    timeout: 10m
"#;
    let p = parse_str(Path::new("strata.yml"), text).unwrap();
    assert_eq!(p.base, Base::default());
    assert_eq!(p.tasks.len(), 2);
    let test = p.task("test").unwrap();
    assert_eq!(test.uses[0].as_str(), "deps");
    assert_eq!(test.run.raw, "echo one\necho two\n");
    assert!(matches!(&test.env[0].value, EnvValue::Keyed(t) if t.raw == "true"));
    assert!(matches!(&test.env[1].value, EnvValue::Excluded(t) if t.raw == "abc"));
    assert_eq!(test.timeout, Some(std::time::Duration::from_secs(600)));
    let deps = p.task("deps").unwrap();
    assert!(deps.filter.as_ref().unwrap().matches("package.json"));
    assert_eq!(
        deps.cache.ttl,
        Some(std::time::Duration::from_secs(7 * 86400))
    );
    assert_eq!(p.topological_order(), vec![0, 1]);
}

#[test]
fn unknown_key_suggests_the_nearest() {
    let e = errors("tasks:\n  - key: a\n    run: x\n    filtr: [a]\n");
    assert!(e.contains("unknown key `filtr` in a task"), "{e}");
    assert!(e.contains("strata.yml:4:5"), "{e}");
    assert!(e.contains("did you mean `filter`?"), "{e}");
}

#[test]
fn unknown_top_level_key() {
    let e = errors("taks:\n  - key: a\n    run: x\n");
    assert!(e.contains("unknown key `taks`"), "{e}");
    assert!(e.contains("strata.yml:1:1"), "{e}");
    assert!(e.contains("did you mean `tasks`?"), "{e}");
}

#[test]
fn duplicate_task_keys() {
    let e = errors("tasks:\n  - key: a\n    run: x\n  - key: a\n    run: y\n");
    assert!(e.contains("duplicate task key `a`"), "{e}");
    assert!(e.contains("strata.yml:4:5"), "{e}");
    assert!(e.contains("already defined at line 2"), "{e}");
}

#[test]
fn a_key_written_twice_in_one_mapping() {
    let e = errors("tasks:\n  - key: a\n    run: x\n    env: {A: 1}\n    run: y\n");
    assert!(e.contains("`run` is written twice"), "{e}");
    assert!(e.contains("strata.yml:5:5"), "{e}");
    assert!(e.contains("first at line 3, column 5"), "{e}");
    // A merge key's entries replace written ones by design: no error.
    let text =
        "aliases:\n  base: &base\n    run: a\ntasks:\n  - <<: *base\n    key: t\n    run: b\n";
    let p = parse_str(Path::new("strata.yml"), text).expect("merged entries may be replaced");
    assert_eq!(p.task("t").unwrap().run.raw, "b");
}

#[test]
fn use_of_missing_task() {
    let e =
        errors("tasks:\n  - key: build\n    run: x\n  - key: t\n    use: [biuld]\n    run: y\n");
    assert!(e.contains("task `t` refers to unknown task `biuld`"), "{e}");
    assert!(e.contains("strata.yml:5:11"), "{e}");
    assert!(e.contains("did you mean `build`?"), "{e}");
}

#[test]
fn after_of_missing_task() {
    let e = errors("tasks:\n  - key: t\n    after: nope\n    run: y\n");
    assert!(e.contains("unknown task `nope`"), "{e}");
    assert!(e.contains("strata.yml:3:12"), "{e}");
}

#[test]
fn cycles_name_every_task() {
    let e = errors(
        "tasks:\n  - key: a\n    use: [c]\n    run: x\n  - key: b\n    use: [a]\n    run: x\n  - key: c\n    after: [b]\n    run: x\n",
    );
    assert!(e.contains("cycle: a -> c -> b -> a"), "{e}");
    assert!(e.contains("strata.yml:2:5"), "{e}");
}

#[test]
fn invalid_glob() {
    let e = errors("tasks:\n  - key: a\n    run: x\n    filter: [ok, \"src/[a\"]\n");
    assert!(e.contains("invalid filter pattern `src/[a`"), "{e}");
    assert!(e.contains("strata.yml:4:18"), "{e}");
}

#[test]
fn wrong_types() {
    let e = errors("tasks:\n  - key: a\n    run: {x: y}\n    cache: maybe\n    env: [A]\n");
    assert!(e.contains("`run` must be a string, found a mapping"), "{e}");
    assert!(
        e.contains("`cache` must be true or false, found a string"),
        "{e}"
    );
    assert!(e.contains("`env` must be a mapping, found a list"), "{e}");
    assert!(e.contains("strata.yml:3:10"), "{e}");
    assert!(e.contains("strata.yml:4:12"), "{e}");
}

#[test]
fn bad_timeout() {
    let e = errors("tasks:\n  - key: a\n    run: x\n    timeout: 10 fortnights\n");
    assert!(e.contains("`timeout`: invalid duration"), "{e}");
    assert!(e.contains("strata.yml:4:14"), "{e}");
}

#[test]
fn invalid_yaml() {
    let e = errors("tasks:\n  - key: a\n    run: \"x\n");
    assert!(e.contains("invalid YAML"), "{e}");
    assert!(e.contains("strata.yml:"), "{e}");
}

#[test]
fn missing_run_and_key() {
    let e = errors("tasks:\n  - key: a\n  - run: x\n");
    assert!(e.contains("task `a` has no `run`"), "{e}");
    assert!(e.contains("task has no `key`"), "{e}");
}

#[test]
fn reserved_env_and_bad_env_option() {
    let e = errors(
        "tasks:\n  - key: a\n    run: x\n    env:\n      STRATA_ENV: x\n      B: {value: y, cache-kye: no}\n",
    );
    assert!(e.contains("`STRATA_ENV` is set by strata"), "{e}");
    assert!(e.contains("unknown key `cache-kye` in env var `B`"), "{e}");
    assert!(e.contains("did you mean `cache-key`?"), "{e}");
}

#[test]
fn render_shows_source_line_and_caret() {
    let e = errors("tasks:\n  - key: a\n    run: x\n    filtr: [a]\n");
    assert!(e.contains("4 |     filtr: [a]\n  |     ^^^^^"), "{e}");
}

#[test]
fn shared_caches_and_image_bases_parse() {
    let p = parse_str(
        Path::new("strata.yml"),
        "base: {image: \"localhost:5000/debian:12\"}\ncache:\n  - s3://ci/strata\n  - oci://localhost:5000/cache,ro\ntasks:\n  - key: a\n    run: x\n",
    )
    .unwrap();
    assert_eq!(p.base, Base::Image("localhost:5000/debian:12".into()));
    let specs: Vec<&str> = p.caches.iter().map(|c| c.spec.as_str()).collect();
    assert_eq!(specs, ["s3://ci/strata", "oci://localhost:5000/cache,ro"]);
    // A single URL is a list of one.
    let p = parse_str(
        Path::new("strata.yml"),
        "cache: /mnt/shared\ntasks:\n  - key: a\n    run: x\n",
    )
    .unwrap();
    assert_eq!(p.caches.len(), 1);
}

#[test]
fn bad_cache_urls_are_located() {
    // The URLs themselves are parsed where they are opened (strata-cache), `check` included.
    // A mapping is a cache with trusted keys: `a` is not one of its keys.
    let e = errors("cache: {a: 1}\ntasks:\n  - key: a\n    run: x\n");
    assert!(e.contains("strata.yml:1:9"), "{e}");
    assert!(e.contains("unknown key `a`"), "{e}");
    let e = errors("base: {image: \"\"}\ntasks:\n  - key: a\n    run: x\n");
    assert!(e.contains("`base.image` is empty"), "{e}");
}

#[test]
fn shared_caches_may_name_their_trusted_keys() {
    let p = parse_str(
        Path::new("strata.yml"),
        "cache:\n  - s3://ci/pr\n  - url: s3://ci/main,ro\n    trusted-keys: [\"ci-main:AAAA\", \"ci-main-2:BBBB\"]\n  - {url: /mnt/c, trusted-keys: solo:CCCC}\ntasks:\n  - key: a\n    run: x\n",
    )
    .unwrap();
    let specs: Vec<&str> = p.caches.iter().map(|c| c.spec.as_str()).collect();
    assert_eq!(specs, ["s3://ci/pr", "s3://ci/main,ro", "/mnt/c"]);
    assert!(p.caches[0].trusted_keys.is_empty());
    let keys: Vec<(&str, usize, usize)> = p.caches[1]
        .trusted_keys
        .iter()
        .map(|k| (k.text.as_str(), k.at.line, k.at.column))
        .collect();
    assert_eq!(keys, [("ci-main:AAAA", 4, 20), ("ci-main-2:BBBB", 4, 36)]);
    assert_eq!((p.caches[1].at.line, p.caches[1].at.column), (3, 10));
    assert_eq!(p.caches[2].trusted_keys[0].text, "solo:CCCC");
    // A lone mapping is a list of one.
    let p = parse_str(
        Path::new("strata.yml"),
        "cache: {url: /mnt/c, trusted-keys: [k:AAAA]}\ntasks:\n  - key: a\n    run: x\n",
    )
    .unwrap();
    assert_eq!(p.caches[0].trusted_keys.len(), 1);
}

#[test]
fn bad_cache_mappings_are_located() {
    let e = errors(
        "cache:\n  - url: /mnt/c\n    trusted-key: [k:AAAA]\ntasks:\n  - key: a\n    run: x\n",
    );
    assert!(e.contains("strata.yml:3:5"), "{e}");
    assert!(e.contains("did you mean `trusted-keys`?"), "{e}");
    let e = errors("cache:\n  - trusted-keys: [k:AAAA]\ntasks:\n  - key: a\n    run: x\n");
    assert!(e.contains("strata.yml:2:5"), "{e}");
    assert!(e.contains("needs a `url`"), "{e}");
    let e = errors(
        "cache:\n  - url: /mnt/c\n    trusted-keys: {k: v}\ntasks:\n  - key: a\n    run: x\n",
    );
    assert!(e.contains("strata.yml:3:19"), "{e}");
}

/// `config: none` skips RWX's own setup over the image, which is what strata does: nothing to
/// say. RWX's `os` has no effect beside an image, and is said; a note written as a warning is
/// shown as one.
#[test]
fn base_config_none_is_silent_and_other_configs_are_noted() {
    let quiet = parse_str(
        Path::new("strata.yml"),
        "base:\n  image: localhost:5000/debian:12\n  config: none\ntasks:\n  - key: a\n    run: true\n",
    )
    .unwrap();
    assert!(quiet.notes.is_empty(), "{:?}", quiet.notes);
    let noted = parse_str(
        Path::new("strata.yml"),
        "base:\n  image: localhost:5000/debian:12\n  os: ubuntu 24.04\ntasks:\n  - key: a\n    run: true\n",
    )
    .unwrap();
    let report = noted.notes_report().expect("a note").to_string();
    assert!(
        report.starts_with("note: `base` `os` names an image of RWX's cloud"),
        "{report}"
    );
    assert!(report.contains("strata.yml:3:3"), "{report}");

    let mut warned = noted.clone();
    warned.notes[0].message = "not what the author meant".into();
    warned.notes[0].warning = true;
    let report = warned.notes_report().expect("a warning").to_string();
    assert!(
        report.starts_with("warning: not what the author meant\n"),
        "{report}"
    );
}
