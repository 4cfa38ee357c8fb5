//! One task: from its YAML mapping to a [`Task`], every problem collected.

use crate::diagnostic::{Diagnostic, Location};
use crate::filter::{Filter, FilterEntry};
use crate::model::{
    CachePolicy, Dialect, EnvConfig, EnvMerge, EnvValue, EnvVar, Note, RefSpan, TaskKind, TaskName,
    Text, Unsupported, WorkspaceSource,
};
use crate::parse::catalog::{self, KeyStatus};
use crate::parse::scalars::{
    as_bool, as_map, as_string, as_string_list, as_text, duration, key_name, unknown_key,
};
use crate::yaml::{Node, Value};

const ENV_KEYS: &[&str] = &["value", "cache-key"];
const CACHE_KEYS: &[&str] = &["enabled", "ttl"];
/// Set by strata itself for every task.
pub(crate) const RESERVED_ENV: &[&str] = &[
    "STRATA_ENV",
    "MINT_ENV",
    "RWX_ENV",
    "RWX_VALUES",
    "MINT_VALUES",
    "RWX_CACHE_KEY_EXCLUDED_ENV",
    "RWX_ERRORS",
    "MINT_ERRORS",
];
/// Packages that clone a git repository: a call of the workspace's own repository is served
/// from the captured checkout.
const CLONE_PACKAGES: &[&str] = &["git/clone", "mint/git-clone"];
/// Every parameter of the `git/clone` package (and the older `mint/git-clone`).
const CLONE_PARAMETERS: &[&str] = &[
    "repository",
    "ref",
    "path",
    "preserve-git-dir",
    "meta-ref",
    "github-token",
    "github-access-token",
    "ssh-key",
    "lfs",
    "submodules",
    "fetch-full-depth",
    "tool-cache-key-prefix",
];

/// What parsing a task yields beside the task: keys it cannot honour yet, notes.
pub(crate) struct TaskExtras<'a> {
    pub(crate) unsupported: &'a mut Vec<Unsupported>,
    pub(crate) notes: &'a mut Vec<Note>,
}

pub(crate) fn build_task(
    node: &Node,
    dialect: Dialect,
    errors: &mut Vec<Diagnostic>,
    extras: &mut TaskExtras<'_>,
) -> Option<crate::model::Task> {
    let entries = as_map(node, "a task", errors)?;
    let before = errors.len();
    let name = entries.iter().find_map(|(k, v)| {
        matches!(&k.value, Value::Scalar { text, .. } if text == "key").then_some((k, v))
    });
    let name = match name {
        Some((k, v)) => match as_string(v, "`key`", errors) {
            Some(n) if valid_task_name(&n) => Some((TaskName::new(n), k.at)),
            Some(n) => {
                errors.push(v.error(format!("invalid task key `{n}`")).with_help(
                    "use letters, digits, `_` and `-` (RWX's rule: `.` is kept for the tasks of a call)",
                ));
                None
            }
            None => None,
        },
        None => None,
    };
    let mut t = TaskParts::default();
    let mut with = None;
    let mut call = None;
    for (key, value) in entries {
        let Some(k) = key_name(key, errors) else {
            continue;
        };
        let later = |extras: &mut TaskExtras<'_>, what: String| {
            extras.unsupported.push(Unsupported {
                key: what,
                task: name.as_ref().map(|(n, _)| n.clone()),
                at: key.at,
            })
        };
        match k.as_str() {
            "key" => {}
            "run" => t.run = run_text(value, errors),
            "use" => t.uses = task_refs(value, "`use`", errors, &mut t.ref_spans),
            "after" => {
                if is_expression(value) {
                    later(extras, "`after` with a status expression".into());
                } else {
                    t.after = task_refs(value, "`after`", errors, &mut t.ref_spans);
                }
            }
            "filter" => {
                let (filter, refused) = build_filter(value, errors);
                t.filter = filter;
                for (what, at) in refused {
                    extras.unsupported.push(Unsupported {
                        key: what,
                        task: name.as_ref().map(|(n, _)| n.clone()),
                        at,
                    });
                }
            }
            "env" => t.env = build_env(value, errors),
            "cache" => {
                if let Some(c) = build_cache(value, errors) {
                    t.cache = c;
                }
            }
            "timeout" => {
                t.timeout = duration(value, "`timeout`", errors);
                t.timeout_keys.push(key.at);
            }
            "timeout-minutes" => {
                if let Some(m) = whole_number(value, "`timeout-minutes`", 1, errors) {
                    t.timeout = Some(std::time::Duration::from_secs(m * 60));
                }
                t.timeout_keys.push(key.at);
            }
            "terminate-grace-period-seconds" => {
                t.grace_period = whole_number(value, "`terminate-grace-period-seconds`", 0, errors)
                    .map(std::time::Duration::from_secs)
            }
            "env-config" => {
                if let Some(c) = build_env_config(value, errors, &mut t.ref_spans) {
                    t.env_config = c;
                }
            }
            "call" => call = as_text(value, "`call`", errors).map(|c| (c, key.at)),
            "with" => with = Some(value),
            "workspace" if dialect == Dialect::Strata => {
                t.workspace = as_bool(value, "`workspace`", errors).unwrap_or(false)
            }
            other => match catalog::task_key(other) {
                Some(KeyStatus::NoEffect) => extras.notes.push(Note {
                    at: key.at,
                    message: format!(
                        "`{other}` has no effect in strata (it configures RWX's cloud)"
                    ),
                }),
                Some(KeyStatus::Ignored(why)) => extras.notes.push(Note {
                    at: key.at,
                    message: format!("`{other}` is ignored for now: {why}"),
                }),
                Some(KeyStatus::Later) => later(extras, format!("`{other}`")),
                None => {
                    let mut allowed = catalog::task_keys();
                    if dialect == Dialect::Strata {
                        allowed.push("workspace");
                    }
                    errors.push(unknown_key(key, other, "a task", &allowed));
                }
            },
        }
    }
    if let [_, second, ..] = t.timeout_keys.as_slice() {
        errors.push(
            Diagnostic::new(*second, 7, "both `timeout` and `timeout-minutes` are set")
                .with_help("keep one: `timeout: 30m`"),
        );
    }
    if let Some(inherit) = &t.env_config.inherit {
        for n in inherit {
            if !t.uses.contains(n)
                && let Some(span) = t.ref_spans.iter().rev().find(|s| &s.name == n)
            {
                errors.push(
                    Diagnostic::new(
                        span.at,
                        span.width,
                        format!("`env-config.inherit` names `{n}`, which this task does not `use`"),
                    )
                    .with_help("a task inherits env only from the tasks in its `use`"),
                );
            }
        }
    }
    let (name, at) = match name {
        Some(n) => n,
        None => {
            if errors.len() == before {
                errors.push(
                    node.error("task has no `key`")
                        .with_help("every task needs a unique `key: NAME`"),
                );
            }
            return None;
        }
    };
    let kind = match call {
        Some((target, call_at)) => {
            if t.run.is_some() {
                errors.push(
                    Diagnostic::new(
                        call_at,
                        4,
                        format!("task `{name}` has both `call` and `run`"),
                    )
                    .with_help("a task either runs a command or calls a package or run definition"),
                );
            }
            call_kind(&name, target, call_at, with, errors, extras)
        }
        None => {
            if let Some(w) = with {
                errors.push(
                    w.error(format!("task `{name}` has `with` but no `call`"))
                        .with_help("`with` passes parameters to a package named by `call`"),
                );
            }
            if t.run.is_none() && errors.len() == before {
                errors.push(
                    Diagnostic::new(at, 3, format!("task `{name}` has no `run`"))
                        .with_help("add `run: COMMAND`, or `call:` a package"),
                );
            }
            TaskKind::Command
        }
    };
    // A task with an error is still defined: references to it are not "unknown task" too.
    Some(crate::model::Task {
        name,
        at,
        kind,
        run: t.run.unwrap_or_else(|| Text::new("", at)),
        uses: t.uses,
        after: t.after,
        value_deps: Vec::new(),
        filter: t.filter,
        workspace: t.workspace,
        env: t.env,
        cache: t.cache,
        timeout: t.timeout,
        grace_period: t.grace_period,
        env_config: t.env_config,
        ref_spans: t.ref_spans,
    })
}

#[derive(Default)]
struct TaskParts {
    run: Option<Text>,
    uses: Vec<TaskName>,
    after: Vec<TaskName>,
    filter: Option<Filter>,
    workspace: bool,
    env: Vec<EnvVar>,
    cache: CachePolicy,
    timeout: Option<std::time::Duration>,
    /// Where `timeout` and `timeout-minutes` are (RWX refuses both at once).
    timeout_keys: Vec<Location>,
    grace_period: Option<std::time::Duration>,
    env_config: EnvConfig,
    ref_spans: Vec<RefSpan>,
}

fn is_expression(node: &Node) -> bool {
    matches!(&node.value, Value::Scalar { text, .. } if text.trim_start().starts_with("${{"))
}

/// `run:` as one string, or RWX's list of commands run one after the other.
fn run_text(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<Text> {
    match &node.value {
        Value::Seq(items) => {
            let lines: Vec<String> = items
                .iter()
                .filter_map(|i| as_string(i, "each command of `run`", errors))
                .collect();
            Some(Text::new(lines.join("\n"), node.at))
        }
        _ => as_string(node, "`run`", errors).map(|s| Text::new(s, node.at)),
    }
}

/// `call:` + `with:`: a clone of the workspace, or a package strata cannot run yet.
fn call_kind(
    name: &TaskName,
    target: Text,
    at: Location,
    with: Option<&Node>,
    errors: &mut Vec<Diagnostic>,
    extras: &mut TaskExtras<'_>,
) -> TaskKind {
    let package = target.raw.split_whitespace().next().unwrap_or_default();
    if !CLONE_PACKAGES.contains(&package) {
        extras.unsupported.push(Unsupported {
            key: format!("`call: {}`", target.raw.trim()),
            task: Some(name.clone()),
            at,
        });
        if let Some(w) = with {
            as_map(w, "`with`", errors);
        }
        return TaskKind::Call { target };
    }
    let mut source = WorkspaceSource {
        path: None,
        reference: None,
        repository: None,
        preserve_git_dir: None,
        meta_ref: None,
    };
    if let Some(w) = with
        && let Some(params) = as_map(w, "`with`", errors)
    {
        for (k, v) in params {
            let Some(param) = key_name(k, errors) else {
                continue;
            };
            let value = as_text(v, &format!("`with.{param}`"), errors);
            match param.as_str() {
                "path" => source.path = value,
                "ref" => source.reference = value,
                "repository" => source.repository = value,
                "preserve-git-dir" => source.preserve_git_dir = value,
                "meta-ref" => source.meta_ref = value,
                p if CLONE_PARAMETERS.contains(&p) => {}
                other => {
                    let mut d = k.error(format!("`{package}` has no parameter `{other}`"));
                    d = match crate::parse::scalars::suggest(other, CLONE_PARAMETERS) {
                        Some(h) => d.with_help(h),
                        None => d.with_help(format!(
                            "its parameters are: {}",
                            CLONE_PARAMETERS.join(", ")
                        )),
                    };
                    errors.push(d);
                }
            }
        }
    }
    TaskKind::Source(source)
}

/// Task names referenced by `use` or `after`, each with its position for later "no such task"
/// errors.
fn task_refs(
    node: &Node,
    what: &str,
    errors: &mut Vec<Diagnostic>,
    spans: &mut Vec<RefSpan>,
) -> Vec<TaskName> {
    as_string_list(node, what, errors)
        .into_iter()
        .map(|(item, s)| {
            let name = TaskName::new(s);
            spans.push(RefSpan {
                name: name.clone(),
                at: item.at,
                width: item.width(),
            });
            name
        })
        .collect()
}

/// RWX's rule: letters, digits, `_` and `-`.
fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn build_env(node: &Node, errors: &mut Vec<Diagnostic>) -> Vec<EnvVar> {
    let Some(entries) = as_map(node, "`env`", errors) else {
        return Vec::new();
    };
    let mut vars: Vec<EnvVar> = Vec::new();
    for (key, value) in entries {
        let Some(name) = as_string(key, "an env var name", errors) else {
            continue;
        };
        if !valid_env_name(&name) {
            errors.push(key.error(format!("invalid env var name `{name}`")));
            continue;
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            errors.push(key.error(format!(
                "`{name}` is set by strata and cannot be overridden"
            )));
            continue;
        }
        if vars.iter().any(|v| v.name == name) {
            errors.push(key.error(format!("env var `{name}` is set twice")));
            continue;
        }
        let value = match &value.value {
            Value::Scalar { .. } => as_text(value, "an env value", errors).map(EnvValue::Keyed),
            Value::Map(fields) => env_value_with_options(fields, &name, value.at, errors),
            Value::Seq(_) => {
                errors.push(value.error(format!(
                    "env var `{name}` must be a string or a mapping with `value`, found a list"
                )));
                None
            }
        };
        if let Some(value) = value {
            vars.push(EnvVar { name, value });
        }
    }
    vars
}

fn env_value_with_options(
    fields: &[(Node, Node)],
    name: &str,
    at: Location,
    errors: &mut Vec<Diagnostic>,
) -> Option<EnvValue> {
    let mut value = None;
    let mut excluded = false;
    for (key, v) in fields {
        let Some(k) = key_name(key, errors) else {
            continue;
        };
        match k.as_str() {
            "value" => value = as_text(v, &format!("`{name}.value`"), errors),
            // `cache` is RWX's older, undocumented spelling.
            "cache-key" | "cache" => match as_string(v, "`cache-key`", errors).as_deref() {
                Some("excluded") => excluded = true,
                Some("included") => excluded = false,
                Some(other) => errors.push(v.error(format!(
                    "`cache-key` must be `excluded` or `included`, found `{other}`"
                ))),
                None => {}
            },
            other => errors.push(unknown_key(
                key,
                other,
                &format!("env var `{name}`"),
                ENV_KEYS,
            )),
        }
    }
    // RWX allows a mapping without `value` (an empty value).
    let value = value.unwrap_or_else(|| Text::new("", at));
    Some(if excluded {
        EnvValue::Excluded(value)
    } else {
        EnvValue::Keyed(value)
    })
}

/// A whole number of at least `min` (RWX's integer keys: `timeout-minutes`,
/// `terminate-grace-period-seconds`).
fn whole_number(node: &Node, what: &str, min: u64, errors: &mut Vec<Diagnostic>) -> Option<u64> {
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
fn build_cache(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<CachePolicy> {
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
fn build_env_config(
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
fn build_filter(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
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
                        "`filter` of another task's artifacts (artifacts are not supported yet)"
                            .to_string(),
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
    filter_entries(list, errors, &mut entries);
    let plain: Vec<FilterEntry> = entries.iter().map(|(_, e)| e.clone()).collect();
    match Filter::with_entries(&plain) {
        Ok(f) => (Some(f), refused),
        Err((i, message)) => {
            errors.push(entries[i].0.error(message));
            (None, refused)
        }
    }
}

fn filter_entries<'a>(
    node: &'a Node,
    errors: &mut Vec<Diagnostic>,
    out: &mut Vec<(&'a Node, FilterEntry)>,
) {
    match &node.value {
        Value::Seq(items) => {
            for item in items {
                match &item.value {
                    Value::Seq(_) => filter_entries(item, errors, out),
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
                                    pattern: p,
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
                        pattern: p,
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
