//! One task: from its YAML mapping to a [`Task`], every problem collected (its options: `options.rs`).

use crate::diagnostic::{Diagnostic, Location};
use crate::filter::Filter;
use crate::model::{
    CachePolicy, Dialect, EnvConfig, EnvValue, EnvVar, Note, RefSpan, TaskKind, TaskName, Text,
    Unsupported, WorkspaceSource,
};
use crate::parse::catalog::{self, KeyStatus};
use crate::parse::options::{build_cache, build_env_config, build_filter, whole_number};
use crate::parse::scalars::{
    as_bool, as_map, as_string, as_string_list, as_text, duration, key_name, unknown_key,
};
use crate::yaml::{Node, Value};

const ENV_KEYS: &[&str] = &["value", "cache-key"];
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
    "RWX_ARTIFACTS",
    "MINT_ARTIFACTS",
    "RWX_TEST_RESULTS",
    "MINT_TEST_RESULTS",
    "RWX_RETRY_ACTIONS",
    "MINT_RETRY_ACTIONS",
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
    let mut call_keys: Vec<(String, &Node, &Node)> = Vec::new();
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
                    t.after_condition = exact_expression(value, "`after`", errors);
                } else {
                    t.after = task_refs(value, "`after`", errors, &mut t.ref_spans);
                }
            }
            "filter" => {
                let (filter, refused) = build_filter(value, errors, extras.notes);
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
                if let Some(c) = build_env_config(value, errors, &mut t.inherit_spans) {
                    t.env_config = c;
                }
            }
            "if" => t.condition = exact_expression(value, "`if`", errors),
            "parallel" => t.parallel = crate::parallel::parse(value, key.at, errors),
            "call" => call = as_text(value, "`call`", errors).map(|c| (c, key.at)),
            "with" | "init" | "target" | "inherit-init" => call_keys.push((k, key, value)),
            "outputs" => {
                t.outputs = crate::parse::outputs::build_outputs(
                    value,
                    errors,
                    &mut crate::parse::outputs::OutputExtras {
                        task: name.as_ref().map(|(n, _)| n.clone()),
                        unsupported: extras.unsupported,
                        notes: extras.notes,
                    },
                )
            }
            "retry" => {
                t.retry = crate::parse::outputs::build_retry(
                    value,
                    errors,
                    &mut crate::parse::outputs::OutputExtras {
                        task: name.as_ref().map(|(n, _)| n.clone()),
                        unsupported: extras.unsupported,
                        notes: extras.notes,
                    },
                )
            }
            "workspace" if dialect == Dialect::Strata => {
                t.workspace = as_bool(value, "`workspace`", errors).unwrap_or(false)
            }
            "tool-cache" => t.tool_cache = tool_cache_name(value, errors),
            "background-processes" => {
                t.background = crate::parse::services::build_background(value, errors)
            }
            "docker" => {
                if let Some(d) = crate::parse::services::build_docker(value, errors) {
                    t.docker = d;
                }
            }
            "privileged" if dialect == Dialect::Strata => {
                t.privileged = as_bool(value, "`privileged`", errors).unwrap_or(false)
            }
            other => match catalog::task_key(other) {
                Some(KeyStatus::NoEffect) => extras.notes.push(Note {
                    warning: false,
                    at: key.at,
                    message: format!(
                        "`{other}` has no effect in strata (it configures RWX's cloud)"
                    ),
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
    crate::parse::services::check_docker_key(&t.background, t.docker, errors);
    if let [_, second, ..] = t.timeout_keys.as_slice() {
        errors.push(
            Diagnostic::new(*second, 7, "both `timeout` and `timeout-minutes` are set")
                .with_help("keep one: `timeout: 30m`"),
        );
    }
    if let Some(inherit) = &t.env_config.inherit {
        for n in inherit {
            if !t.uses.contains(n)
                && let Some(span) = t.inherit_spans.iter().find(|s| &s.name == n)
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
            call_kind(target, call_at, &call_keys, errors)
        }
        None => {
            if let Some((k, key, _)) = call_keys.first() {
                errors.push(
                    key.error(format!("task `{name}` has `{k}` but no `call`"))
                        .with_help(format!(
                            "`{k}` belongs to a call of a package or run definition"
                        )),
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
        artifact_refs: Vec::new(),
        filter: t.filter,
        workspace: t.workspace,
        env: t.env,
        cache: t.cache,
        timeout: t.timeout,
        grace_period: t.grace_period,
        env_config: t.env_config,
        condition: t.condition,
        after_condition: t.after_condition,
        status_deps: Vec::new(),
        parallel: t.parallel.map(crate::parallel::Parallel::Pending),
        privileged: t.privileged,
        tool_cache: t.tool_cache,
        outputs: t.outputs,
        retry: t.retry,
        background: t.background,
        docker: t.docker,
        ref_spans: t.ref_spans,
        scope: None,
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
    /// Where each `env-config.inherit` name is: it must be one of `use`.
    inherit_spans: Vec<RefSpan>,
    condition: Option<Text>,
    after_condition: Option<Text>,
    parallel: Option<crate::parallel::ParallelSpec>,
    privileged: bool,
    tool_cache: Option<Text>,
    outputs: crate::outputs::TaskOutputs,
    retry: Option<crate::outputs::Retry>,
    background: Vec<crate::model::BackgroundProcess>,
    docker: crate::model::Docker,
    ref_spans: Vec<RefSpan>,
}

/// `tool-cache: NAME`: a non-empty name, or an expression that gives one as the task starts
/// (RWX's own `git/clone` package names its tool cache after a value of another task).
fn tool_cache_name(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<Text> {
    let text = as_text(node, "`tool-cache`", errors)?;
    if text.raw.contains("${{") {
        // Checked with the pipeline's other expressions; the name it gives, when it runs.
        return Some(text);
    }
    if let Err(why) = check_tool_cache_name(&text.raw) {
        errors.push(node.error(format!(
            "`tool-cache` must be a name, such as `npm` or `cargo-target`: {why}"
        )));
        return None;
    }
    Some(text)
}

/// Why `name` cannot name a tool cache, if it cannot (it names the cache on disk and in shared
/// caches).
pub fn check_tool_cache_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        Err("it is empty")
    } else if name.chars().any(char::is_control) {
        Err("it has a control character")
    } else {
        Ok(())
    }
}

pub(crate) fn is_expression(node: &Node) -> bool {
    matches!(&node.value, Value::Scalar { text, .. } if text.trim_start().starts_with("${{"))
}

/// `if:` and `after:` conditions: RWX takes exactly one `${{ … }}` (the expression is checked
/// with the pipeline's other expressions).
fn exact_expression(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<Text> {
    let text = as_text(node, what, errors)?;
    let trimmed = text.raw.trim();
    // A syntax error is reported where the expression is checked.
    let single = !trimmed.contains("${{")
        || crate::expr::parse_template(trimmed).is_ok_and(|t| t.is_single_expression())
            && trimmed.starts_with("${{")
            && trimmed.ends_with("}}");
    let not_one =
        !trimmed.contains("${{") || (!single && crate::expr::parse_template(trimmed).is_ok());
    if not_one {
        let example = if what == "`if`" {
            "if: ${{ init.deploy == 'true' }}"
        } else {
            "after: ${{ build.failed }}"
        };
        errors.push(
            node.error(format!("{what} must be one expression like `${{{{ … }}}}`"))
                .with_help(format!("for example `{example}`")),
        );
        return None;
    }
    Some(text)
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

/// `call:` with `with:`, `init:`, `target:`, `inherit-init:`: a clone of the workspace, or a
/// call of a package or run definition (resolved once the whole file is read:
/// `crate::calls::expand`).
fn call_kind(
    target: Text,
    at: Location,
    keys: &[(String, &Node, &Node)],
    errors: &mut Vec<Diagnostic>,
) -> TaskKind {
    let package = target.raw.split_whitespace().next().unwrap_or_default();
    if CLONE_PACKAGES.contains(&package) {
        for (k, key, _) in keys.iter().filter(|(k, _, _)| k != "with") {
            errors.push(key.error(format!(
                "`{k}` is for embedded runs; `{package}` takes `with`"
            )));
        }
        let with = keys
            .iter()
            .find(|(k, _, _)| k == "with")
            .map(|(_, _, v)| *v);
        let mut source = clone_source(package, with, errors);
        // Parsed again without reporting twice: kept in case it names another repository.
        source.call = Some(call_spec(target, at, keys, &mut Vec::new()));
        return TaskKind::Source(source);
    }
    TaskKind::Call(call_spec(target, at, keys, errors))
}

/// A call as written.
fn call_spec(
    target: Text,
    at: Location,
    keys: &[(String, &Node, &Node)],
    errors: &mut Vec<Diagnostic>,
) -> crate::calls::CallSpec {
    let mut spec = crate::calls::CallSpec {
        target,
        at,
        with: Vec::new(),
        with_at: None,
        init: Vec::new(),
        init_at: None,
        inherit_init: false,
        targets: Vec::new(),
    };
    for (k, key, value) in keys {
        match k.as_str() {
            "with" => {
                spec.with = call_args(value, "`with`", errors);
                spec.with_at = Some(key.at);
            }
            "init" => {
                spec.init = call_args(value, "`init`", errors);
                spec.init_at = Some(key.at);
            }
            "inherit-init" => {
                spec.inherit_init = as_bool(value, "`inherit-init`", errors).unwrap_or(false)
            }
            _ => {
                spec.targets = as_string_list(value, "`target`", errors)
                    .into_iter()
                    .map(|(n, s)| (s, n.at))
                    .collect()
            }
        }
    }
    spec
}

/// `with:` or `init:`: names and values (strings, numbers, booleans).
fn call_args(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Vec<crate::calls::CallArg> {
    let mut out: Vec<crate::calls::CallArg> = Vec::new();
    for (k, v) in as_map(node, what, errors).unwrap_or_default() {
        let Some(name) = key_name(k, errors) else {
            continue;
        };
        if out.iter().any(|a| a.name == name) {
            errors.push(k.error(format!("`{name}` is given twice in {what}")));
            continue;
        }
        if let Some(value) = as_text(v, &format!("`{name}`"), errors) {
            out.push(crate::calls::CallArg {
                name,
                value,
                at: k.at,
            });
        }
    }
    out
}

/// A `git/clone` of the workspace's repository, served from the checkout.
fn clone_source(
    package: &str,
    with: Option<&Node>,
    errors: &mut Vec<Diagnostic>,
) -> WorkspaceSource {
    let mut source = WorkspaceSource {
        path: None,
        reference: None,
        repository: None,
        preserve_git_dir: None,
        meta_ref: None,
        call: None,
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
    source
}

/// Task names referenced by `use` or `after`, each with its position for later "no such task"
/// errors.
pub(crate) fn task_refs(
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
pub(crate) fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

pub(crate) fn valid_env_name(name: &str) -> bool {
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
