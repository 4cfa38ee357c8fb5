//! `tool-cache: NAME` on a task and the top-level `tool-cache: {vault}`: honoured, with errors
//! at their line and column.

use std::path::Path;

use strata_pipeline::{load_config, parse_str};

#[test]
fn a_task_names_its_tool_cache_and_the_file_its_vault() {
    let text = "tool-cache:\n  vault: main\ntasks:\n  - key: deps\n    tool-cache: npm\n    run: npm ci\n  - key: plain\n    run: make\n";
    for path in ["strata.yml", ".rwx/ci.yml"] {
        let p = parse_str(Path::new(path), text).unwrap();
        assert_eq!(
            p.task("deps")
                .unwrap()
                .tool_cache
                .as_ref()
                .map(|t| t.raw.as_str()),
            Some("npm")
        );
        assert_eq!(p.task("plain").unwrap().tool_cache, None);
        assert_eq!(p.tool_cache_vault.as_deref(), Some("main"));
        assert!(
            p.notes.iter().all(|n| !n.message.contains("tool-cache")),
            "no note: it is honoured"
        );
    }
}

#[test]
fn a_tool_cache_is_a_name_or_an_expression() {
    for (value, at) in [
        ("\"\"", "3:17"),
        ("\"a\\u0007b\"", "3:17"),
        ("[a]", "3:17"),
        ("${{ nosuch.x }}", "3:21"),
    ] {
        let text = format!("tasks:\n  - key: a\n    tool-cache: {value}\n    run: x\n");
        let err = parse_str(Path::new("strata.yml"), &text)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("`tool-cache`") || err.contains("nosuch"),
            "{value}: {err}"
        );
        assert!(err.contains(at), "{value}: {err}");
    }
    // RWX's own `git/clone` package names its tool cache after another task's value.
    let text = "tasks:\n  - key: pick\n    run: x\n  - key: a\n    use: pick\n    tool-cache: deps-${{ tasks.pick.values.name }}\n    run: x\n";
    let p = parse_str(Path::new("strata.yml"), text).expect("an expression is a name");
    let task = p.task("a").unwrap();
    assert_eq!(
        task.tool_cache.as_ref().map(|t| t.raw.as_str()),
        Some("deps-${{ tasks.pick.values.name }}")
    );
}

#[test]
fn the_top_level_tool_cache_takes_only_a_vault() {
    let text = "tool-cache:\n  vault: main\n  ttl: 2d\ntasks:\n  - key: a\n    run: x\n";
    let err = parse_str(Path::new("strata.yml"), text)
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("ttl"), "{err}");
    assert!(err.contains("3:3"), "{err}");
    let text = "tool-cache: main\ntasks:\n  - key: a\n    run: x\n";
    let err = parse_str(Path::new("strata.yml"), text)
        .expect_err("not a mapping")
        .to_string();
    assert!(err.contains("`tool-cache`"), "{err}");
    assert!(err.contains("1:13"), "{err}");
}

#[test]
fn the_config_file_sets_the_tool_cache_maximum_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "local:\n  tool-cache-max-age: 12h\n").unwrap();
    let config = load_config(&path).unwrap();
    assert_eq!(
        config.local.tool_cache_max_age,
        Some(std::time::Duration::from_secs(12 * 3600))
    );
    std::fs::write(&path, "local:\n  tool-cache-max-age: soon\n").unwrap();
    let err = load_config(&path).expect_err("not a duration").to_string();
    assert!(err.contains("tool-cache-max-age"), "{err}");
    assert!(err.contains("2:23"), "{err}");
}
