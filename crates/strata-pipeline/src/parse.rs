//! From the YAML tree to the typed model, collecting every problem rather than stopping at the
//! first, so that a user fixes a file in one pass.

use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::duration::parse_duration;
use crate::filter::Filter;
use crate::model::{
    Base, CachePolicy, EnvValue, EnvVar, Pipeline, RefSpan, RemoteCacheDecl, Task, TaskName,
};
use crate::validate::validate_graph;
use crate::yaml::{self, Node, Value, is_null};

const TOP_LEVEL_KEYS: &[&str] = &["base", "cache", "tasks"];
const TASK_KEYS: &[&str] = &[
    "key", "run", "use", "after", "filter", "env", "cache", "timeout",
];
/// Keys of the dialect that this version recognises but cannot honour yet: an error that says
/// so is kinder than "unknown key".
const NOT_YET_SUPPORTED: &[&str] = &["tool-cache", "outputs"];
const ENV_KEYS: &[&str] = &["value", "cache-key"];
const CACHE_KEYS: &[&str] = &["enabled", "ttl"];
/// Set by strata itself for every task.
const RESERVED_ENV: &[&str] = &["STRATA_ENV", "MINT_ENV", "RWX_ENV"];

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, Diagnostics> {
    parse_str(path, &read_source(path, "pipeline file")?)
}

/// A file's text, or a diagnostic naming it (`what`: "pipeline file", "config file").
pub(crate) fn read_source(path: &Path, what: &str) -> Result<String, Diagnostics> {
    std::fs::read_to_string(path).map_err(|e| {
        Diagnostics::new(
            path,
            "",
            vec![Diagnostic::new(
                Location { line: 0, column: 0 },
                1,
                format!("cannot read {what}: {e}"),
            )],
        )
    })
}

/// Parses and validates pipeline text; `path` is used for messages and relative paths.
pub fn parse_str(path: &Path, text: &str) -> Result<Pipeline, Diagnostics> {
    let mut errors = Vec::new();
    let pipeline = match yaml::parse(text) {
        Ok(root) => build_pipeline(path, &root, &mut errors),
        Err(d) => {
            errors.push(d);
            None
        }
    };
    if let Some(p) = &pipeline {
        validate_graph(p, &mut errors);
    }
    match pipeline {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(Diagnostics::new(path, text, errors)),
    }
}

fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .map(|c| {
            // A key cut short (`cache` for `cache-key`) is as likely as a typo.
            let prefix = c.starts_with(word) || word.starts_with(c);
            (
                if prefix {
                    1
                } else {
                    strsim::damerau_levenshtein(word, c)
                },
                c,
            )
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

fn unknown_key(key: &Node, text: &str, within: &str, allowed: &[&str]) -> Diagnostic {
    let d = key.error(format!("unknown key `{text}` in {within}"));
    match suggest(text, allowed) {
        Some(help) => d.with_help(help),
        None => d.with_help(format!("valid keys are: {}", allowed.join(", "))),
    }
}

fn as_map<'a>(
    node: &'a Node,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<&'a [(Node, Node)]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        _ => {
            errors.push(node.error(format!("{what} must be a mapping, found {}", node.kind())));
            None
        }
    }
}

fn as_string(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<String> {
    match &node.value {
        Value::Scalar { text, quoted } if *quoted || !is_null(text) => Some(text.clone()),
        _ => {
            errors.push(node.error(format!("{what} must be a string, found {}", node.kind())));
            None
        }
    }
}

fn as_bool(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<bool> {
    match &node.value {
        Value::Scalar {
            text,
            quoted: false,
        } if text == "true" => Some(true),
        Value::Scalar {
            text,
            quoted: false,
        } if text == "false" => Some(false),
        _ => {
            errors.push(node.error(format!(
                "{what} must be true or false, found {}",
                node.kind()
            )));
            None
        }
    }
}

/// A string or a list of strings (`use: a` and `use: [a, b]` are both accepted), with the node
/// of each item for positions.
fn as_string_list<'a>(
    node: &'a Node,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(&'a Node, String)> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|item| {
                as_string(item, &format!("each item of {what}"), errors).map(|s| (item, s))
            })
            .collect(),
        Value::Scalar { .. } => as_string(node, what, errors)
            .map(|s| vec![(node, s)])
            .unwrap_or_default(),
        Value::Map(_) => {
            errors.push(node.error(format!("{what} must be a list of strings, found a mapping")));
            Vec::new()
        }
    }
}

fn duration(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<std::time::Duration> {
    let text = as_string(node, what, errors)?;
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(
                node.error(format!("{what}: {e}"))
                    .with_help("for example `90s`, `10m`, `1h30m` or `7d`"),
            );
            None
        }
    }
}

fn build_pipeline(path: &Path, root: &Node, errors: &mut Vec<Diagnostic>) -> Option<Pipeline> {
    let entries = as_map(root, "the pipeline file", errors)?;
    let mut base = Base::Host;
    let mut caches = Vec::new();
    let mut tasks = None;
    for (key, value) in entries {
        let Some(name) = as_string(key, "a key", errors) else {
            continue;
        };
        match name.as_str() {
            "base" => {
                if let Some(b) = build_base(path, value, errors) {
                    base = b;
                }
            }
            "tasks" => tasks = Some(build_tasks(value, errors)),
            "cache" => caches = remote_caches(value, "`cache`", errors),
            other => errors.push(unknown_key(key, other, "the pipeline file", TOP_LEVEL_KEYS)),
        }
    }
    let Some(tasks) = tasks else {
        errors.push(
            Diagnostic::new(root.at, 1, "the pipeline file has no `tasks`")
                .with_help("add `tasks:` with a list of tasks, each with a `key` and a `run`"),
        );
        return None;
    };
    Some(Pipeline {
        path: path.to_path_buf(),
        base,
        caches,
        tasks,
    })
}

fn build_base(path: &Path, node: &Node, errors: &mut Vec<Diagnostic>) -> Option<Base> {
    match &node.value {
        Value::Scalar { text, .. } if text == "host" => Some(Base::Host),
        Value::Map(entries) if entries.len() == 1 => {
            let (key, value) = &entries[0];
            let name = as_string(key, "a key", errors)?;
            match name.as_str() {
                "rootfs" => {
                    let dir = PathBuf::from(as_string(value, "`base.rootfs`", errors)?);
                    let dir = if dir.is_relative() {
                        path.parent().unwrap_or(Path::new(".")).join(dir)
                    } else {
                        dir
                    };
                    Some(Base::Rootfs(dir))
                }
                "image" => {
                    let image = as_string(value, "`base.image`", errors)?;
                    if image.trim().is_empty() {
                        errors.push(value.error("`base.image` is empty").with_help(
                            "name an image (`registry/repository:tag`) or a layout (`oci:DIR[:TAG]`)",
                        ));
                        return None;
                    }
                    Some(Base::Image(image))
                }
                other => {
                    errors.push(unknown_key(key, other, "`base`", &["rootfs", "image"]));
                    None
                }
            }
        }
        _ => {
            errors.push(
                node.error("`base` must be `host` or a mapping with one key, `rootfs` or `image`")
                    .with_help(
                        "for example `base: host`, `base: {rootfs: ./rootfs}` or `base: {image: localhost:5000/debian:12}`",
                    ),
            );
            None
        }
    }
}

fn build_tasks(node: &Node, errors: &mut Vec<Diagnostic>) -> Vec<Task> {
    let Value::Seq(items) = &node.value else {
        errors.push(node.error(format!("`tasks` must be a list, found {}", node.kind())));
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| build_task(item, errors))
        .collect()
}

fn build_task(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<Task> {
    let entries = as_map(node, "a task", errors)?;
    let mut name = None;
    let mut run = None;
    let mut uses = Vec::new();
    let mut after = Vec::new();
    let mut filter = None;
    let mut env = Vec::new();
    let mut cache = CachePolicy::default();
    let mut timeout = None;
    let mut ok = true;
    let mut ref_spans = Vec::new();
    let before = errors.len();
    for (key, value) in entries {
        let Some(k) = as_string(key, "a key", errors) else {
            continue;
        };
        match k.as_str() {
            "key" => {
                if let Some(n) = as_string(value, "`key`", errors) {
                    if valid_task_name(&n) {
                        name = Some((TaskName::new(n), value.at));
                    } else {
                        errors.push(value.error(format!("invalid task key `{n}`")).with_help(
                            "use letters, digits, `-`, `_` and `.`, starting with a letter or digit",
                        ));
                    }
                }
            }
            "run" => run = as_string(value, "`run`", errors),
            "use" => uses = task_refs(value, "`use`", errors, &mut ref_spans),
            "after" => after = task_refs(value, "`after`", errors, &mut ref_spans),
            "filter" => {
                let patterns = as_string_list(value, "`filter`", errors);
                let texts: Vec<&str> = patterns.iter().map(|(_, s)| s.as_str()).collect();
                match Filter::new(&texts) {
                    Ok(f) => filter = Some(f),
                    Err((i, message)) => errors.push(patterns[i].0.error(message)),
                }
            }
            "env" => env = build_env(value, errors),
            "cache" => {
                if let Some(c) = build_cache(value, errors) {
                    cache = c;
                }
            }
            "timeout" => timeout = duration(value, "`timeout`", errors),
            other if NOT_YET_SUPPORTED.contains(&other) => {
                errors.push(key.error(format!(
                    "`{other}` is not supported by this version of strata yet"
                )));
            }
            other => errors.push(unknown_key(key, other, "a task", TASK_KEYS)),
        }
    }
    let Some((name, _)) = name else {
        if errors.len() == before {
            errors.push(
                node.error("task has no `key`")
                    .with_help("every task needs a unique `key: NAME`"),
            );
        }
        return None;
    };
    let at = entries
        .iter()
        .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == "key"))
        .map_or(node.at, |(k, _)| k.at);
    if run.is_none() && errors.len() == before {
        errors.push(
            Diagnostic::new(at, 3, format!("task `{name}` has no `run`"))
                .with_help("add `run: COMMAND`"),
        );
        ok = false;
    }
    if errors.len() != before {
        ok = false;
    }
    ok.then(|| Task {
        name,
        at,
        run: run.unwrap_or_default(),
        uses,
        after,
        filter,
        env,
        cache,
        timeout,
        ref_spans,
    })
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

fn valid_task_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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
            Value::Scalar { text, .. } => Some(EnvValue::Keyed(text.clone())),
            Value::Map(fields) => env_value_with_options(fields, &name, errors),
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
    errors: &mut Vec<Diagnostic>,
) -> Option<EnvValue> {
    let mut value = None;
    let mut excluded = false;
    for (key, v) in fields {
        let Some(k) = as_string(key, "a key", errors) else {
            continue;
        };
        match k.as_str() {
            "value" => match &v.value {
                Value::Scalar { text, .. } => value = Some(text.clone()),
                _ => errors.push(v.error(format!(
                    "`{name}.value` must be a string, found {}",
                    v.kind()
                ))),
            },
            "cache-key" => match as_string(v, "`cache-key`", errors).as_deref() {
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
    let value = value?;
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
                let Some(k) = as_string(key, "a key", errors) else {
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

/// Shared caches (`cache:` in a pipeline or config file): a URL or a list of URLs, each
/// `s3://...`, `oci://...`, `file://...` or an absolute path, optionally with `,ro` or `,rw`.
pub(crate) fn remote_caches(
    node: &Node,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Vec<RemoteCacheDecl> {
    let mut out = Vec::new();
    for (item, spec) in as_string_list(node, what, errors) {
        let url = match spec.rsplit_once(',') {
            Some((url, "ro" | "rw")) => url,
            Some((_, access)) => {
                errors.push(
                    item.error(format!("unknown cache access `,{access}`"))
                        .with_help("end the URL with `,ro` for a read-only cache, or `,rw`"),
                );
                continue;
            }
            None => spec.as_str(),
        };
        if !["s3://", "oci://", "file:///", "/"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            errors.push(
                item.error(format!("`{url}` is not a cache URL"))
                    .with_help("use s3://BUCKET[/PREFIX], oci://HOST[:PORT]/REPOSITORY, file:///DIR or an absolute path"),
            );
            continue;
        }
        out.push(RemoteCacheDecl { spec, at: item.at });
    }
    out
}
