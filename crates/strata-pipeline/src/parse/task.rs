//! One task: from its YAML mapping to a [`Task`], every problem collected.

use crate::diagnostic::{Diagnostic, Location};
use crate::filter::Filter;
use crate::model::{
    CachePolicy, Dialect, EnvValue, EnvVar, Note, RefSpan, TaskKind, TaskName, Text, Unsupported,
    WorkspaceSource,
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
            "filter" => match &value.value {
                Value::Map(_) => later(extras, "`filter` as a mapping".into()),
                _ => {
                    let patterns = as_string_list(value, "`filter`", errors);
                    let texts: Vec<&str> = patterns.iter().map(|(_, s)| s.as_str()).collect();
                    match Filter::new(&texts) {
                        Ok(f) => t.filter = Some(f),
                        Err((i, message)) => errors.push(patterns[i].0.error(message)),
                    }
                }
            },
            "env" => t.env = build_env(value, errors),
            "cache" => {
                if is_expression(value) {
                    later(extras, "`cache` as an expression".into());
                } else if let Some(c) = build_cache(value, errors) {
                    t.cache = c;
                }
            }
            "timeout" => t.timeout = duration(value, "`timeout`", errors),
            "timeout-minutes" => {
                if let Some(text) = as_text(value, "`timeout-minutes`", errors) {
                    match text.raw.trim().parse::<u64>() {
                        Ok(m) => t.timeout = Some(std::time::Duration::from_secs(m * 60)),
                        Err(_) => errors.push(value.error(format!(
                            "`timeout-minutes` must be a whole number of minutes, found `{}`",
                            text.raw
                        ))),
                    }
                }
            }
            "call" => call = as_text(value, "`call`", errors).map(|c| (c, key.at)),
            "with" => with = Some(value),
            "workspace" if dialect == Dialect::Strata => {
                t.workspace = as_bool(value, "`workspace`", errors).unwrap_or(false)
            }
            "privileged" if dialect == Dialect::Strata => {
                t.privileged = as_bool(value, "`privileged`", errors).unwrap_or(false)
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
                        allowed.extend(["workspace", "privileged"]);
                    }
                    errors.push(unknown_key(key, other, "a task", &allowed));
                }
            },
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
        privileged: t.privileged,
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
    privileged: bool,
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

fn build_cache(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<CachePolicy> {
    match &node.value {
        Value::Map(fields) => {
            let mut policy = CachePolicy::default();
            for (key, v) in fields {
                let Some(k) = key_name(key, errors) else {
                    continue;
                };
                match k.as_str() {
                    "enabled" => policy.enabled = as_bool(v, "`cache.enabled`", errors)?,
                    "ttl" => policy.ttl = Some(duration(v, "`cache.ttl`", errors)?),
                    other => errors.push(unknown_key(key, other, "`cache`", CACHE_KEYS)),
                }
            }
            Some(policy)
        }
        _ => as_bool(node, "`cache`", errors).map(|enabled| CachePolicy { enabled, ttl: None }),
    }
}
