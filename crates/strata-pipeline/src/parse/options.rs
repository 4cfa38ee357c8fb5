//! A task's keys beyond its command and its place in the graph: `filter` (its forms and
//! entries), `cache`, `env-config`, and RWX's whole-number keys.

use crate::diagnostic::{Diagnostic, Location};
use crate::filter::{Filter, FilterEntry};
use crate::model::{CachePolicy, EnvConfig, EnvMerge, Note, RefSpan};
use crate::parse::scalars::{as_bool, as_map, as_string, as_text, duration, key_name, unknown_key};
use crate::parse::task::{is_expression, task_refs, valid_env_name};
use crate::yaml::{Node, Value};

const CACHE_KEYS: &[&str] = &["enabled", "ttl"];

/// A whole number of at least `min` (RWX's integer keys: `timeout-minutes`,
/// `terminate-grace-period-seconds`).
pub(crate) fn whole_number(
    node: &Node,
    what: &str,
    min: u64,
    errors: &mut Vec<Diagnostic>,
) -> Option<u64> {
    let text = as_text(node, what, errors)?;
    match text.raw.trim().parse::<u64>() {
        Ok(n) if n >= min => Some(n),
        _ => {
            errors.push(node.error(format!(
                "{what} must be a whole number{}, found `{}`",
                if min > 0 {
                    format!(" of at least {min}")
                } else {
                    String::new()
                },
                text.raw
            )));
            None
        }
    }
}

/// `cache`: `true`/`false`, an expression giving one of them, or `{enabled, ttl}` (RWX asks
/// for `enabled` unless `ttl` is given).
pub(crate) fn build_cache(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<CachePolicy> {
    let enabled = |v: &Node, what: &str, errors: &mut Vec<Diagnostic>, policy: &mut CachePolicy| {
        if is_expression(v) {
            policy.enabled_expr = as_text(v, what, errors);
        } else if let Some(b) = as_bool(v, what, errors) {
            policy.enabled = b;
        }
    };
    let mut policy = CachePolicy::default();
    match &node.value {
        Value::Map(fields) => {
            if fields.is_empty() {
                errors.push(
                    node.error("`cache` needs `enabled`, `ttl` or both")
                        .with_help("for example `cache: {enabled: true, ttl: 7 days}`"),
                );
            }
            for (key, v) in fields {
                let Some(k) = key_name(key, errors) else {
                    continue;
                };
                match k.as_str() {
                    "enabled" => enabled(v, "`cache.enabled`", errors, &mut policy),
                    "ttl" if matches!(&v.value, Value::Scalar { text, .. } if text.contains("${{")) => {
                        policy.ttl_expr = as_text(v, "`cache.ttl`", errors)
                    }
                    "ttl" => policy.ttl = Some(duration(v, "`cache.ttl`", errors)?),
                    other => errors.push(unknown_key(key, other, "`cache`", CACHE_KEYS)),
                }
            }
        }
        _ => enabled(node, "`cache`", errors, &mut policy),
    }
    Some(policy)
}

/// `env-config: {inherit, merge}`.
pub(crate) fn build_env_config(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    spans: &mut Vec<RefSpan>,
) -> Option<EnvConfig> {
    let mut config = EnvConfig::default();
    for (key, value) in as_map(node, "`env-config`", errors)? {
        let Some(k) = key_name(key, errors) else {
            continue;
        };
        match k.as_str() {
            "inherit" => match &value.value {
                Value::Scalar { text, .. } if text == "all-used-tasks" => config.inherit = None,
                Value::Seq(_) => {
                    config.inherit = Some(task_refs(value, "`env-config.inherit`", errors, spans))
                }
                _ => errors.push(value.error(format!(
                    "`env-config.inherit` must be `all-used-tasks` or a list of used tasks, found {}",
                    value.kind()
                ))),
            },
            "merge" => {
                let Some(vars) = as_map(value, "`env-config.merge`", errors) else {
                    continue;
                };
                for (var, how) in vars {
                    let Some(var_name) = as_string(var, "an env var name", errors) else {
                        continue;
                    };
                    if !valid_env_name(&var_name) {
                        errors.push(var.error(format!("invalid env var name `{var_name}`")));
                        continue;
                    }
                    if let Some(m) = build_env_merge(how, &var_name, errors) {
                        config.merge.push((var_name, m));
                    }
                }
            }
            other => errors.push(unknown_key(
                key,
                other,
                "`env-config`",
                &["inherit", "merge"],
            )),
        }
    }
    Some(config)
}

fn build_env_merge(node: &Node, var: &str, errors: &mut Vec<Diagnostic>) -> Option<EnvMerge> {
    let mut strategy = None;
    let mut by = None;
    for (key, value) in as_map(node, &format!("`env-config.merge.{var}`"), errors)? {
        let Some(k) = key_name(key, errors) else {
            continue;
        };
        match k.as_str() {
            "strategy" => strategy = as_string(value, "`strategy`", errors).map(|s| (s, value)),
            "by" => by = as_string(value, "`by`", errors).map(|s| (s, key)),
            other => errors.push(unknown_key(
                key,
                other,
                &format!("`env-config.merge.{var}`"),
                &["strategy", "by"],
            )),
        }
    }
    match (strategy, by) {
        (Some((s, _)), Some((by, _))) if s == "join" => Some(EnvMerge::Join(by)),
        (Some((s, at)), None) if s == "join" => {
            errors.push(at.error(
                "the `join` strategy needs `by`: the text that joins the values (`by: ':'`)",
            ));
            None
        }
        (Some((s, _)), None) if s == "override" => Some(EnvMerge::Override),
        (Some((s, _)), Some((_, at))) if s == "override" => {
            errors.push(at.error("the `override` strategy takes no `by`"));
            None
        }
        (Some((other, at)), _) => {
            errors.push(at.error(format!(
                "unknown merge strategy `{other}`: use `join` or `override`"
            )));
            None
        }
        (None, _) => {
            errors.push(node.error(format!(
                "`env-config.merge.{var}` needs `strategy: join` (with `by`) or `strategy: override`"
            )));
            None
        }
    }
}

/// `filter`: a list of patterns (nested lists flattened, entries `{path, cache-key}`), or a
/// mapping whose `workspace` is such a list. Returns the filter and what strata refuses to run:
/// `system` (in RWX's schema, but RWX's own parser rejects it: a filter narrows the workspace
/// only) and the filters of other tasks' artifacts.
pub(crate) fn build_filter(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    notes: &mut Vec<Note>,
) -> (Option<Filter>, Vec<(String, Location)>) {
    let mut refused = Vec::new();
    let list = match &node.value {
        Value::Map(fields) => {
            let mut list = None;
            for (key, value) in fields {
                let Some(k) = key_name(key, errors) else {
                    continue;
                };
                match k.as_str() {
                    "workspace" => list = Some(value),
                    "system" => refused.push((
                        "`filter.system` (RWX's schema lists it, but RWX's parser rejects it: a task's filter narrows only the workspace)".to_string(),
                        key.at,
                    )),
                    k if k.trim_start().starts_with("${{") => refused.push((
                        format!(
                            "`filter` of `{}` (a filter of another task's artifacts or of the \
                             run's directory; only `workspace` is supported yet)",
                            k.trim()
                        ),
                        key.at,
                    )),
                    other => errors.push(unknown_key(
                        key,
                        other,
                        "`filter`",
                        &["workspace", "system"],
                    )),
                }
            }
            match list {
                Some(l) => l,
                // Only `system` or artifacts, both refused by `run`.
                None => return (None, refused),
            }
        }
        _ => node,
    };
    let mut entries: Vec<(&Node, FilterEntry)> = Vec::new();
    filter_entries(list, errors, &mut entries, notes);
    let plain: Vec<FilterEntry> = entries.iter().map(|(_, e)| e.clone()).collect();
    match Filter::with_entries(&plain) {
        Ok(f) => (Some(f), refused),
        Err((i, message)) => {
            errors.push(entries[i].0.error(message));
            (None, refused)
        }
    }
}

/// A string entry written `/path` (or `!/path`) is relative to the workspace all the same, as
/// RWX reads it (with a deprecation warning); a `{path}` entry so written stays an error.
fn relative_entry(pattern: String, node: &Node, notes: &mut Vec<Note>) -> String {
    let (bang, rest) = match pattern.strip_prefix('!') {
        Some(rest) => ("!", rest),
        None => ("", pattern.as_str()),
    };
    match rest.strip_prefix('/') {
        Some(relative) if !relative.is_empty() => {
            notes.push(Note {
                warning: false,
                at: node.at,
                message: format!(
                    "filter entry `{pattern}`: filter entries are relative to the workspace; read as `{bang}{relative}`"
                ),
            });
            format!("{bang}{relative}")
        }
        _ => pattern,
    }
}

fn filter_entries<'a>(
    node: &'a Node,
    errors: &mut Vec<Diagnostic>,
    out: &mut Vec<(&'a Node, FilterEntry)>,
    notes: &mut Vec<Note>,
) {
    match &node.value {
        Value::Seq(items) => {
            for item in items {
                match &item.value {
                    Value::Seq(_) => filter_entries(item, errors, out, notes),
                    Value::Map(fields) => {
                        let mut path = None;
                        let mut keyed = true;
                        for (key, v) in fields {
                            let Some(k) = key_name(key, errors) else {
                                continue;
                            };
                            match k.as_str() {
                                "path" => path = as_string(v, "`path`", errors).map(|p| (v, p)),
                                "cache-key" => {
                                    match as_string(v, "`cache-key`", errors).as_deref() {
                                        Some("excluded") => keyed = false,
                                        Some("included") => keyed = true,
                                        Some(other) => errors.push(v.error(format!(
                                            "`cache-key` must be `excluded` or `included`, found `{other}`"
                                        ))),
                                        None => {}
                                    }
                                }
                                other => errors.push(unknown_key(
                                    key,
                                    other,
                                    "a `filter` entry",
                                    &["path", "cache-key"],
                                )),
                            }
                        }
                        match path {
                            Some((v, pattern)) => out.push((
                                v,
                                FilterEntry {
                                    pattern,
                                    keyed,
                                    at: v.at,
                                },
                            )),
                            None => errors.push(
                                item.error("a `filter` entry written as a mapping needs `path`")
                                    .with_help(
                                        "for example `{path: VERSION, cache-key: excluded}`",
                                    ),
                            ),
                        }
                    }
                    Value::Scalar { .. } => {
                        if let Some(p) = as_string(item, "each item of `filter`", errors) {
                            out.push((
                                item,
                                FilterEntry {
                                    pattern: relative_entry(p, item, notes),
                                    keyed: true,
                                    at: item.at,
                                },
                            ));
                        }
                    }
                }
            }
        }
        Value::Scalar { .. } => {
            if let Some(p) = as_string(node, "`filter`", errors) {
                out.push((
                    node,
                    FilterEntry {
                        pattern: relative_entry(p, node, notes),
                        keyed: true,
                        at: node.at,
                    },
                ));
            }
        }
        Value::Map(_) => errors
            .push(node.error("`filter.workspace` must be a list of patterns, found a mapping")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::filter::Visibility;
    use crate::model::{EnvMerge, Pipeline, TaskName};

    fn parse(text: &str) -> Pipeline {
        crate::parse_str(Path::new("strata.yml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        crate::parse_str(Path::new("strata.yml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn filter_forms() {
        let p = parse(
            "aliases:
  common: &common [Cargo.toml, Cargo.lock]
tasks:
  - key: a
    filter:
      - *common
      - src
      - {path: VERSION, cache-key: excluded}
    run: x
  - key: b
    filter:
      workspace: [docs]
    run: y
",
        );
        let a = p.tasks[0].filter.as_ref().unwrap();
        assert_eq!(a.visibility("Cargo.lock"), Visibility::Keyed);
        assert_eq!(a.visibility("src/main.rs"), Visibility::Keyed);
        assert_eq!(a.visibility("VERSION"), Visibility::Unkeyed);
        assert_eq!(a.visibility("README"), Visibility::Hidden);
        let b = p.tasks[1].filter.as_ref().unwrap();
        assert!(b.matches("docs/x.md") && !b.matches("src/a"));
        assert!(p.unsupported.is_empty());
    }

    #[test]
    fn filter_system_and_artifacts_are_refused_by_run() {
        let p = parse(
            "tasks:
  - key: a
    filter:
      workspace: [src]
      system: ['!/tmp/**']
    run: x
",
        );
        let report = p.unsupported_report().unwrap();
        assert!(
            report.contains("strata.yml:5:7: `filter.system`"),
            "{report}"
        );
        let e = error("tasks:\n  - key: a\n    filter: {workspaces: [src]}\n    run: x\n");
        assert!(e.contains("did you mean `workspace`"), "{e}");
        let p = parse("tasks:\n  - key: a\n    filter: ['/src', '!/src/gen']\n    run: x\n");
        let f = p.tasks[0].filter.as_ref().unwrap();
        assert!(f.matches("src/a.c") && !f.matches("src/gen/b.c"));
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        let e = error("tasks:\n  - key: a\n    filter: [{path: /src}]\n    run: x\n");
        assert!(e.contains("relative path"), "{e}");
        let e = error("tasks:\n  - key: a\n    filter: [{cache-key: excluded}]\n    run: x\n");
        assert!(e.contains("needs `path`"), "{e}");
        let e =
            error("tasks:\n  - key: a\n    filter: [{path: a, cache-key: maybe}]\n    run: x\n");
        assert!(e.contains("strata.yml:3:35"), "{e}");
    }

    #[test]
    fn cache_forms() {
        let p = parse(
            "tasks:
  - key: a
    cache: ${{ init.cache }}
    run: x
  - key: b
    cache: {ttl: 7 days}
    run: x
  - key: c
    cache: {enabled: false}
    run: x
  - key: d
    cache: {enabled: '${{ init.cache }}', ttl: 1 hr}
    run: x
",
        );
        assert_eq!(
            p.tasks[0].cache.enabled_expr.as_ref().unwrap().raw,
            "${{ init.cache }}"
        );
        assert_eq!(p.tasks[1].cache.ttl, Some(Duration::from_secs(7 * 86400)));
        assert!(p.tasks[1].cache.enabled);
        assert!(!p.tasks[2].cache.enabled);
        assert!(p.tasks[3].cache.enabled_expr.is_some());
        assert_eq!(p.tasks[3].cache.ttl, Some(Duration::from_secs(3600)));
        let e = error("tasks:\n  - key: a\n    cache: {ttl: 3 fortnights}\n    run: x\n");
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn env_config_and_grace_period() {
        let p = parse(
            "tasks:
  - key: a
    run: x
  - key: b
    run: x
  - key: c
    use: [a, b]
    env-config:
      inherit: [b]
      merge:
        FLAGS: {strategy: join, by: ' '}
        PATH: {strategy: override}
    terminate-grace-period-seconds: 5
    timeout-minutes: 2
    run: x
",
        );
        let c = &p.tasks[2];
        assert_eq!(c.env_config.inherit, Some(vec![TaskName::new("b")]));
        assert_eq!(
            c.env_config.merge,
            vec![
                ("FLAGS".to_string(), EnvMerge::Join(" ".into())),
                ("PATH".to_string(), EnvMerge::Override)
            ]
        );
        assert_eq!(c.grace_period, Some(Duration::from_secs(5)));
        assert_eq!(c.timeout, Some(Duration::from_secs(120)));
        let e = error(
            "tasks:\n  - key: a\n    run: x\n  - key: c\n    use: a\n    env-config: {inherit: [z]}\n    run: x\n",
        );
        assert!(e.contains("`env-config.inherit` names `z`"), "{e}");
        let e = error(
            "tasks:\n  - key: a\n    env-config: {merge: {X: {strategy: join}}}\n    run: x\n",
        );
        assert!(e.contains("needs `by`"), "{e}");
        let e = error("tasks:\n  - key: a\n    terminate-grace-period-seconds: -1\n    run: x\n");
        assert!(e.contains("whole number"), "{e}");
        let e = error("tasks:\n  - key: a\n    timeout: 1m\n    timeout-minutes: 2\n    run: x\n");
        assert!(e.contains("both `timeout` and `timeout-minutes`"), "{e}");
    }

    #[test]
    fn defaults_are_checked_and_noted() {
        let p = parse("defaults:\n  runner: {cpus: 8}\ntasks:\n  - key: a\n    run: x\n");
        assert!(p.notes.iter().any(|n| n.message.contains("`defaults`")));
        let e = error("defaults:\n  envv: {A: b}\ntasks:\n  - key: a\n    run: x\n");
        assert!(e.contains("unknown key `envv` in `defaults`"), "{e}");
    }

    #[test]
    fn merge_keys_in_a_task() {
        let p = parse(
            "aliases:
  env: &env {A: one, B: two}
tasks:
  - key: a
    env:
      <<: *env
      B: mine
    run: x
",
        );
        let env: Vec<String> = p.tasks[0]
            .env
            .iter()
            .map(|v| format!("{}={}", v.name, v.value.value()))
            .collect();
        assert_eq!(env, ["A=one", "B=mine"]);
        let e = error(
            "aliases:\n  env: &env {A: [1]}\ntasks:\n  - key: a\n    env: {<<: *env}\n    run: x\n",
        );
        // The error is where the merged value is written.
        assert!(e.contains("strata.yml:2:17"), "{e}");
    }
}
