//! A task's inputs, from its parents' results and the run context.

use std::borrow::Cow;
use std::collections::BTreeMap;

use strata_key::{
    CacheKey, EnvInput, ExportedEnv, KEY_VERSION, KeyInputs, LayerDigest, ParentInput, Workspace,
    WorkspaceDigest, WorkspaceFile,
};
use strata_pipeline::{EnvValue, Task};
use strata_sandbox::SandboxSpec;

use crate::context::RunContext;
use crate::expressions::{TaskValues, resolve as resolve_text, with_values};
use crate::sources::VisibleFile;

/// The working directory of every task.
pub(crate) const WORKSPACE_DIR: &str = "/workspace";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How the sandbox runs a command; part of every key (see docs/cache-key.md).
const EXECUTOR: &str = "sandbox/3 cwd=/workspace shell=bash-e-pipefail|sh-e";

/// What a finished (or restored) task hands to the tasks that `use` it.
#[derive(Debug, Clone)]
pub(crate) struct TaskResult {
    /// Its whole stack, bottom first, its own layer last (a source adds none).
    pub(crate) stack: Vec<ParentInput>,
    /// What it inherited with its own exports on top.
    pub(crate) env: ExportedEnv,
}

pub(crate) struct ResolvedInputs {
    pub(crate) inputs: KeyInputs,
    pub(crate) key: CacheKey,
    pub(crate) inherited: ExportedEnv,
    /// The command as it runs (expressions resolved).
    pub(crate) command: String,
    /// The complete environment the command runs with.
    pub(crate) env: Vec<(String, String)>,
    /// The workspace files the task sees, at the paths it sees them (what its key covers).
    pub(crate) files: Vec<WorkspaceFile>,
    /// Where each of `files` is in the captured workspace.
    pub(crate) origins: Vec<std::sync::Arc<str>>,
    pub(crate) workspace: WorkspaceDigest,
    /// An expression of the task that could not be resolved: the task fails with this.
    pub(crate) error: Option<String>,
}

impl ResolvedInputs {
    pub(crate) fn stack_layers(&self) -> Vec<LayerDigest> {
        self.inputs.parents.iter().map(|p| p.layer).collect()
    }
}

/// The stack under a task: its parents' stacks in `use` order, each layer kept at its first
/// appearance (so a parent's view of its own ancestors is preserved).
pub(crate) fn flatten_stack(parents: &[&TaskResult]) -> Vec<ParentInput> {
    let mut stack: Vec<ParentInput> = Vec::new();
    for p in parents {
        for layer in &p.stack {
            if !stack.iter().any(|s| s.layer == layer.layer) {
                stack.push(layer.clone());
            }
        }
    }
    stack
}

/// The values of the tasks `task` reads, from their results (`result_of(name)`).
pub(crate) fn values_for<'a>(
    task: &Task,
    result_of: impl Fn(&strata_pipeline::TaskName) -> Option<&'a TaskResult>,
) -> Option<TaskValues> {
    let mut out = TaskValues::new();
    for dep in &task.value_deps {
        out.insert(dep.to_string(), result_of(dep)?.env.values.clone());
    }
    Some(out)
}

/// Every variable a task's command sees, and how each enters the key.
enum Keyed {
    Value,
    /// By name only (`cache-key: excluded`, secrets).
    NameOnly,
    /// Not at all (`$RWX_CACHE_KEY_EXCLUDED_ENV` exports, such as a clone's commit sha).
    Not,
}

pub(crate) fn resolve(
    ctx: &RunContext<'_>,
    task: &Task,
    parents: &[&TaskResult],
    values: &TaskValues,
) -> ResolvedInputs {
    // Most tasks read no values: they share the run's scope rather than copy it (it holds the
    // event payload).
    let (scope, key_scope) = if values.is_empty() {
        (
            Cow::Borrowed(&ctx.invocation.scope),
            Cow::Borrowed(&ctx.invocation.key_scope),
        )
    } else {
        (
            Cow::Owned(with_values(&ctx.invocation.scope, values)),
            Cow::Owned(with_values(&ctx.invocation.key_scope, values)),
        )
    };
    let mut error = None;
    let stack = flatten_stack(parents);
    let inherited = ExportedEnv::merge(parents.iter().map(|p| &p.env));

    let mut env: BTreeMap<String, (String, Keyed)> = BTreeMap::new();
    for (k, v) in [
        ("HOME", "/root"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("LANG", "C.UTF-8"),
    ] {
        env.insert(k.into(), (v.into(), Keyed::Value));
    }
    // A base image's own environment comes next (its PATH is the default PATH).
    let mut default_path = DEFAULT_PATH.to_string();
    for (k, v) in &ctx.base_env {
        if k == "PATH" {
            default_path = v.clone();
        } else {
            env.insert(k.clone(), (v.clone(), Keyed::Value));
        }
    }
    // Host variables passed in with `--env` (or the config file).
    for pass in &ctx.options.pass_env {
        let keyed = if pass.keyed {
            Keyed::Value
        } else {
            Keyed::NameOnly
        };
        if pass.name == "PATH" {
            default_path = pass.value.clone();
        } else {
            env.insert(pass.name.clone(), (pass.value.clone(), keyed));
        }
    }
    for (k, v) in &inherited.excluded {
        env.insert(k.clone(), (v.clone(), Keyed::Not));
    }
    for (k, v) in &inherited.vars {
        env.insert(k.clone(), (v.clone(), Keyed::Value));
    }
    env.insert(
        "PATH".into(),
        (inherited.path_value(&default_path), Keyed::Value),
    );
    for var in &task.env {
        let value = match resolve_text(var.value.text(), &scope, &key_scope) {
            Ok(v) => v,
            Err(e) => {
                error.get_or_insert(format!("`env.{}`: {e}", var.name));
                continue;
            }
        };
        // A value derived from a secret enters the key by name only.
        let keyed = match var.value {
            EnvValue::Keyed(_) if !value.secret => Keyed::Value,
            _ => Keyed::NameOnly,
        };
        env.insert(var.name.clone(), (value.text, keyed));
    }
    let keyed_env = env
        .iter()
        .filter_map(|(k, (v, keyed))| {
            let input = match keyed {
                Keyed::Value => EnvInput::Value(v.clone()),
                Keyed::NameOnly => EnvInput::Excluded,
                Keyed::Not => return None,
            };
            Some((k.clone(), input))
        })
        .collect();
    let mut full_env: Vec<(String, String)> = env.into_iter().map(|(k, (v, _))| (k, v)).collect();
    for (dir, names) in SandboxSpec::OUTPUTS {
        for name in *names {
            full_env.push((
                (*name).into(),
                format!("{}/{dir}", SandboxSpec::OUTPUTS_DIR),
            ));
        }
    }

    let visible: Vec<VisibleFile> = match ctx.index_of(task) {
        Some(i) => ctx.sources.visible(&ctx.workspace, i, task),
        None => Vec::new(),
    };
    let (files, origins): (Vec<WorkspaceFile>, Vec<std::sync::Arc<str>>) =
        visible.into_iter().map(|v| (v.file, v.origin)).unzip();
    let workspace = Workspace::digest(files.iter());
    let (command, keyed_command) = match resolve_text(&task.run, &scope, &key_scope) {
        Ok(r) => (r.text, r.keyed),
        Err(e) => {
            error.get_or_insert(format!("`run`: {e}"));
            (String::new(), task.run.raw.clone())
        }
    };
    let inputs = KeyInputs {
        version: KEY_VERSION,
        base: ctx.base_id,
        parents: stack,
        workspace,
        env: keyed_env,
        command: keyed_command,
        // A privileged task can do what others cannot: never the same result.
        executor: if task.privileged {
            format!("{EXECUTOR} privileged")
        } else {
            EXECUTOR.into()
        },
    };
    ResolvedInputs {
        key: inputs.key(),
        inputs,
        inherited,
        command,
        env: full_env,
        files,
        origins,
        workspace,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(layers: &[&str]) -> TaskResult {
        TaskResult {
            stack: layers
                .iter()
                .map(|l| ParentInput {
                    task: l.to_string(),
                    layer: LayerDigest::from_hash(blake3::hash(l.as_bytes())),
                })
                .collect(),
            env: ExportedEnv::default(),
        }
    }

    #[test]
    fn shared_ancestors_appear_once_at_their_first_place() {
        let a = result(&["base", "a"]);
        let b = result(&["base", "b"]);
        let names: Vec<String> = flatten_stack(&[&a, &b])
            .into_iter()
            .map(|p| p.task)
            .collect();
        assert_eq!(names, vec!["base", "a", "b"]);
    }
}
