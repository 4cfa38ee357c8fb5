//! From the YAML tree to the typed model, collecting every problem rather than stopping at the
//! first, so that a user fixes a file in one pass.

use std::path::{Path, PathBuf};

use crate::calls::LoadOptions;
use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::model::{
    Base, Dialect, HostBase, Note, Pipeline, SharedCacheDecl, TrustedKeyDecl, Unsupported,
};
use crate::parse::catalog::{self, KeyStatus};
use crate::parse::scalars::{as_map, as_string, as_string_list, key_name, unknown_key};
use crate::parse::task::{TaskExtras, build_task};
use crate::triggers::{Triggers, parse_triggers};
use crate::validate::validate_graph;
use crate::yaml::{self, Node, Value};

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, Diagnostics> {
    parse_str(path, &read_source(path, "pipeline file")?)
}

/// Reads and validates a pipeline file, resolving its calls of packages from `opts`.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Pipeline, Diagnostics> {
    parse_with(path, &read_source(path, "pipeline file")?, opts)
}

/// A file's text, or a diagnostic naming it (`what`: "pipeline file", "config file").
pub(crate) fn read_source(path: &Path, what: &str) -> Result<String, Diagnostics> {
    // Not read at all when it is too large to be a pipeline file.
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > yaml::MAX_FILE_BYTES as u64
    {
        return Err(Diagnostics::new(
            path,
            "",
            vec![yaml::too_big(meta.len() as usize)],
        ));
    }
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
    parse_with(path, text, &LoadOptions::default())
}

/// [`parse_str`], resolving calls of packages from `opts`.
pub fn parse_with(path: &Path, text: &str, opts: &LoadOptions) -> Result<Pipeline, Diagnostics> {
    let mut p = parse_file(path, text, opts, &[path.to_path_buf()])?;
    crate::calls::strip_package_use(&mut p);
    Ok(p)
}

/// One file of a run (the run's own, or one it calls: `stack` is the chain of calls).
fn parse_file(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
    stack: &[PathBuf],
) -> Result<Pipeline, Diagnostics> {
    let mut errors = Vec::new();
    let mut root = None;
    let mut pipeline = match yaml::parse(text) {
        Ok(r) => {
            let p = build_pipeline(path, &r, &mut errors);
            root = Some(r);
            p
        }
        Err(d) => {
            errors.push(d);
            None
        }
    };
    if let Some(p) = &mut pipeline {
        p.source_text = text.to_string();
        crate::parallel::expand(p, &mut errors);
        crate::parse::expressions::check_pipeline(p, text, &mut errors);
        // Only the run's own file has a base: a called run's is not used.
        let base_config = match (&root, stack.len()) {
            (Some(root), 1) => crate::calls::apply_base(root, p, opts, &mut errors),
            _ => None,
        };
        let read = |called: &Path, stack: &[PathBuf]| {
            parse_file(called, &read_source(called, "called file")?, opts, stack)
        };
        crate::calls::check_outputs(p, &mut errors);
        crate::calls::expand(p, opts, stack, &read, &mut errors);
        if let Some(task) = base_config {
            crate::calls::use_base_config(p, task, opts, stack, &read, &mut errors);
        }
        validate_graph(p, &mut errors);
    }
    match pipeline {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(Diagnostics::new(path, text, errors)),
    }
}

/// RWX's rules apply to files under `.rwx/` or `.mint/` (where RWX looks for them).
pub fn dialect_of(path: &Path) -> Dialect {
    let in_rwx_dir = path
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .any(|c| matches!(c.as_os_str().to_str(), Some(".rwx" | ".mint")));
    if in_rwx_dir {
        Dialect::Rwx
    } else {
        Dialect::Strata
    }
}

fn build_pipeline(path: &Path, root: &Node, errors: &mut Vec<Diagnostic>) -> Option<Pipeline> {
    if let Value::Scalar {
        text,
        quoted: false,
    } = &root.value
        && yaml::is_null(text)
    {
        errors.push(
            Diagnostic::new(root.at, 1, "the pipeline file is empty")
                .with_help("add `tasks:` with a list of tasks, each with a `key` and a `run`"),
        );
        return None;
    }
    let entries = as_map(root, "the pipeline file", errors)?;
    let dialect = dialect_of(path);
    let mut base = Base::Host(HostBase::default());
    let mut base_at = None;
    let mut base_config = None;
    let mut caches = Vec::new();
    let mut tool_cache_vault = None;
    let mut tasks = None;
    let mut triggers = Triggers::default();
    let mut unsupported = Vec::new();
    let mut notes = Vec::new();
    let mut package = None;
    for (key, value) in entries {
        let Some(name) = key_name(key, errors) else {
            continue;
        };
        match name.as_str() {
            "base" => {
                if let Some(b) = build_base(path, value, errors, &mut notes) {
                    base = b;
                    base_at = Some(value.at);
                }
                base_config = config_of(value);
            }
            "tasks" => {
                let Value::Seq(items) = &value.value else {
                    errors.push(
                        value.error(format!("`tasks` must be a list, found {}", value.kind())),
                    );
                    tasks = Some(Vec::new());
                    continue;
                };
                let mut extras = TaskExtras {
                    unsupported: &mut unsupported,
                    notes: &mut notes,
                };
                tasks = Some(
                    items
                        .iter()
                        .filter_map(|item| build_task(item, dialect, errors, &mut extras))
                        .collect(),
                );
            }
            "cache" => caches = remote_caches(value, "`cache`", errors),
            "tool-cache" => tool_cache_vault = tool_cache_settings(value, errors),
            "on" => triggers = parse_triggers(value, errors),
            // Anchors to be used elsewhere in the file: anything goes.
            "aliases" => {}
            k if crate::calls::PACKAGE_KEYS.contains(&k) => {
                crate::calls::declare(k, value, &mut package, errors)
            }
            // RWX's defaults are machine sizes and log retention: nothing changes here.
            "defaults" => {
                for (k, _) in as_map(value, "`defaults`", errors).unwrap_or_default() {
                    if let Some(name) = key_name(k, errors)
                        && !DEFAULTS_KEYS.contains(&name.as_str())
                    {
                        errors.push(unknown_key(k, &name, "`defaults`", DEFAULTS_KEYS));
                    }
                }
                notes.push(Note {
                    warning: false,
                    at: key.at,
                    message: "`defaults` has no effect in strata (machine sizes and log retention of RWX's cloud)".into(),
                });
            }
            other => match catalog::top_level_key(other) {
                Some(KeyStatus::NoEffect) => notes.push(Note {
                    warning: false,
                    at: key.at,
                    message: format!(
                        "`{other}` has no effect in strata (it configures RWX's cloud)"
                    ),
                }),
                Some(KeyStatus::Later) => unsupported.push(Unsupported {
                    key: format!("`{other}`"),
                    task: None,
                    at: key.at,
                }),
                None => errors.push(unknown_key(
                    key,
                    other,
                    "the pipeline file",
                    catalog::TOP_LEVEL_KEYS,
                )),
            },
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
        dialect,
        triggers,
        base,
        base_at,
        base_config,
        caches,
        tasks,
        unsupported,
        notes,
        source_text: String::new(),
        package,
        parallel_groups: Vec::new(),
        tool_cache_vault,
    })
}

/// The top-level `tool-cache: {vault: NAME}` (RWX's only setting): the vault names the
/// namespace the file's tool caches live in.
fn tool_cache_settings(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<String> {
    let mut vault = None;
    for (key, value) in as_map(node, "`tool-cache`", errors)? {
        let Some(name) = key_name(key, errors) else {
            continue;
        };
        match name.as_str() {
            "vault" => {
                vault = crate::parse::scalars::as_string(value, "`tool-cache.vault`", errors)
                    .filter(|v| {
                        let ok = !v.trim().is_empty() && !v.contains("${{");
                        if !ok {
                            errors.push(value.error("`tool-cache.vault` must be a vault's name"));
                        }
                        ok
                    })
            }
            other => errors.push(unknown_key(key, other, "`tool-cache`", &["vault"])),
        }
    }
    vault
}

/// `base: {host: {key-paths: [...]}}`: host paths whose content joins the base identity.
fn build_host_base(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<HostBase> {
    let mut host = HostBase::default();
    for (key, value) in as_map(node, "`base.host`", errors)? {
        let Some(name) = key_name(key, errors) else {
            continue;
        };
        if name != "key-paths" {
            errors.push(unknown_key(key, &name, "`base.host`", &["key-paths"]));
            continue;
        }
        for (item, path) in as_string_list(value, "`base.host.key-paths`", errors) {
            let path = match path.strip_prefix("~/") {
                Some(rest) => match std::env::var_os("HOME") {
                    Some(home) => PathBuf::from(home).join(rest),
                    None => {
                        errors.push(item.error(format!("`{path}`: $HOME is not set")));
                        continue;
                    }
                },
                None => PathBuf::from(&path),
            };
            if !path.is_absolute() {
                errors.push(
                    item.error(format!("key path `{}` is not absolute", path.display()))
                        .with_help("name a host path such as `/usr/local` or `~/.rustup`"),
                );
                continue;
            }
            if !host.key_paths.contains(&path) {
                host.key_paths.push(path);
            }
        }
    }
    Some(host)
}

/// What RWX's `defaults` may hold.
const DEFAULTS_KEYS: &[&str] = &["agent", "runner", "outputs"];

/// RWX's base layer keys: which OS image of RWX's cloud to run on.
const RWX_BASE_KEYS: &[&str] = &["os", "tag", "arch", "config"];

/// `base.config` as written, unless `none`.
fn config_of(base: &Node) -> Option<(String, Location)> {
    let Value::Map(entries) = &base.value else {
        return None;
    };
    entries
        .iter()
        .find_map(|(k, v)| match (&k.value, &v.value) {
            (Value::Scalar { text: key, .. }, Value::Scalar { text, .. })
                if key == "config" && text.trim() != "none" =>
            {
                Some((text.split_whitespace().collect::<Vec<_>>().join(" "), v.at))
            }
            _ => None,
        })
}

fn build_base(
    path: &Path,
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    notes: &mut Vec<Note>,
) -> Option<Base> {
    let relative = |dir: PathBuf| {
        if dir.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(dir)
        } else {
            dir
        }
    };
    match &node.value {
        Value::Scalar { text, .. } if text == "host" => Some(Base::Host(HostBase::default())),
        Value::Map(entries) => {
            let mut base = None;
            let mut rwx_only = Vec::new();
            for (key, value) in entries {
                let Some(name) = as_string(key, "a key", errors) else {
                    continue;
                };
                match name.as_str() {
                    "rootfs" => {
                        let dir = PathBuf::from(as_string(value, "`base.rootfs`", errors)?);
                        base = Some(Base::Rootfs(relative(dir)));
                    }
                    "image" => {
                        let image = as_string(value, "`base.image`", errors)?;
                        if image.trim().is_empty() {
                            errors.push(value.error("`base.image` is empty").with_help(
                                "name an image (`registry/repository:tag`) or a layout (`oci:DIR[:TAG]`)",
                            ));
                            return None;
                        }
                        base = Some(Base::Image(image));
                    }
                    "host" => base = Some(Base::Host(build_host_base(value, errors)?)),
                    // `config: none` skips RWX's own setup over the image: what strata does.
                    "config" if matches!(&value.value, Value::Scalar { text, .. } if text.trim() == "none") =>
                        {}
                    k if RWX_BASE_KEYS.contains(&k) => rwx_only.push((k.to_string(), key.at)),
                    other => {
                        let mut allowed = vec!["host", "rootfs", "image"];
                        allowed.extend(RWX_BASE_KEYS);
                        errors.push(unknown_key(key, other, "`base`", &allowed));
                    }
                }
            }
            if let Some((_, at)) = rwx_only.first() {
                let keys: Vec<String> = rwx_only.iter().map(|(k, _)| format!("`{k}`")).collect();
                notes.push(Note {
                    warning: false,
                    at: *at,
                    message: format!(
                        "`base` {} name{} an image of RWX's cloud and ha{} no effect: {}",
                        keys.join(", "),
                        if keys.len() == 1 { "s" } else { "" },
                        if keys.len() == 1 { "s" } else { "ve" },
                        if matches!(base, Some(Base::Image(_))) {
                            "the image named by `base.image` is used"
                        } else {
                            "tasks run on this machine's own filesystem (`base: host`)"
                        }
                    ),
                });
            }
            if base.is_none() && rwx_only.is_empty() && errors.is_empty() {
                errors.push(node.error("`base` names no base").with_help(
                    "for example `base: host`, `base: {rootfs: ./rootfs}` or `base: {image: localhost:5000/debian:12}`",
                ));
            }
            Some(base.unwrap_or_default())
        }
        _ => {
            errors.push(
                node.error("`base` must be `host` or a mapping (`rootfs`, `image`, or RWX's `os` and `tag`)")
                    .with_help(
                        "for example `base: host`, `base: {rootfs: ./rootfs}` or `base: {image: localhost:5000/debian:12}`",
                    ),
            );
            None
        }
    }
}

/// Shared caches (`cache:` in a pipeline or config file): a URL, or a list whose items are URLs
/// or mappings `{url: URL, trusted-keys: [NAME:BASE64, ...]}`. Only the shape is read here: the
/// URLs and keys themselves are parsed by the one parser that uses them
/// (`strata_cache::parse_spec`, `strata_cache::PublicKey::parse`), which `strata check` runs too.
pub(crate) fn remote_caches(
    node: &Node,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Vec<SharedCacheDecl> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .flat_map(|item| match &item.value {
                // Nested lists, from YAML aliases, are flattened.
                Value::Seq(_) => remote_caches(item, what, errors),
                Value::Map(fields) => remote_cache_mapping(item, fields, what, errors)
                    .into_iter()
                    .collect(),
                _ => as_string(item, &format!("each item of {what}"), errors)
                    .map(|spec| plain_cache(spec, item))
                    .into_iter()
                    .collect(),
            })
            .collect(),
        Value::Map(fields) => remote_cache_mapping(node, fields, what, errors)
            .into_iter()
            .collect(),
        _ => as_string_list(node, what, errors)
            .into_iter()
            .map(|(item, spec)| plain_cache(spec, item))
            .collect(),
    }
}

fn plain_cache(spec: String, node: &Node) -> SharedCacheDecl {
    SharedCacheDecl {
        spec,
        at: node.at,
        trusted_keys: Vec::new(),
    }
}

/// `{url: URL, trusted-keys: [...]}`.
fn remote_cache_mapping(
    node: &Node,
    fields: &[(Node, Node)],
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<SharedCacheDecl> {
    const KEYS: &[&str] = &["url", "trusted-keys"];
    let mut url: Option<(String, &Node)> = None;
    let mut trusted_keys = Vec::new();
    for (key, value) in fields {
        match key_name(key, errors).as_deref() {
            Some("url") => url = as_string(value, "`url`", errors).map(|u| (u, value)),
            Some("trusted-keys") => {
                trusted_keys = as_string_list(value, "`trusted-keys`", errors)
                    .into_iter()
                    .map(|(item, text)| TrustedKeyDecl { text, at: item.at })
                    .collect()
            }
            Some(other) => {
                errors.push(unknown_key(key, other, &format!("an item of {what}"), KEYS))
            }
            None => {}
        }
    }
    let Some((spec, at)) = url else {
        // A mapping's own position is not where it starts on the line: point at its first key.
        let start = fields.first().map_or(node, |(key, _)| key);
        errors.push(
            start
                .error(format!(
                    "an item of {what} written as a mapping needs a `url`"
                ))
                .with_help(
                    "for example `{url: s3://bucket/main, trusted-keys: [\"ci-main:BASE64\"]}`",
                ),
        );
        return None;
    };
    Some(SharedCacheDecl {
        spec,
        at: at.at,
        trusted_keys,
    })
}
