//! A task's inputs, from its parents' results and the run context.

use std::collections::BTreeMap;

use strata_key::{
    CacheKey, EnvInput, ExportedEnv, KEY_VERSION, KeyInputs, LayerDigest, ParentInput, Workspace,
    WorkspaceDigest, WorkspaceFile,
};
use strata_pipeline::{EnvValue, Task};
use strata_sandbox::SandboxSpec;

use crate::context::RunContext;

/// The working directory of every task.
pub(crate) const WORKSPACE_DIR: &str = "/workspace";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How the sandbox runs a command; part of every key (see docs/cache-key.md).
const EXECUTOR: &str = "sandbox/1 cwd=/workspace shell=bash-e|sh-e";

/// What a finished (or restored) task hands to the tasks that `use` it.
#[derive(Debug, Clone)]
pub(crate) struct TaskResult {
    /// Its whole stack, bottom first, its own layer last.
    pub(crate) stack: Vec<ParentInput>,
    pub(crate) env: ExportedEnv,
}

pub(crate) struct ResolvedInputs {
    pub(crate) inputs: KeyInputs,
    pub(crate) key: CacheKey,
    pub(crate) inherited: ExportedEnv,
    /// The complete environment the command runs with.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) files: Vec<WorkspaceFile>,
    pub(crate) workspace: WorkspaceDigest,
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

pub(crate) fn resolve(
    ctx: &RunContext<'_>,
    task: &Task,
    parents: &[&TaskResult],
) -> ResolvedInputs {
    let stack = flatten_stack(parents);
    let inherited = ExportedEnv::merge(parents.iter().map(|p| &p.env));

    let mut env: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for (k, v) in [
        ("HOME", "/root"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("LANG", "C.UTF-8"),
    ] {
        env.insert(k.into(), (v.into(), true));
    }
    // A base image's own environment comes next (its PATH is the default PATH).
    let mut default_path = DEFAULT_PATH.to_string();
    for (k, v) in &ctx.base_env {
        if k == "PATH" {
            default_path = v.clone();
        } else {
            env.insert(k.clone(), (v.clone(), true));
        }
    }
    for (k, v) in &inherited.vars {
        env.insert(k.clone(), (v.clone(), true));
    }
    env.insert("PATH".into(), (inherited.path_value(&default_path), true));
    for var in &task.env {
        let keyed = matches!(var.value, EnvValue::Keyed(_));
        env.insert(var.name.clone(), (var.value.value().to_string(), keyed));
    }
    let keyed_env = env
        .iter()
        .map(|(k, (v, keyed))| {
            let input = if *keyed {
                EnvInput::Value(v.clone())
            } else {
                EnvInput::Excluded
            };
            (k.clone(), input)
        })
        .collect();
    let mut full_env: Vec<(String, String)> = env.into_iter().map(|(k, (v, _))| (k, v)).collect();
    for name in ["STRATA_ENV", "MINT_ENV", "RWX_ENV"] {
        full_env.push((name.into(), SandboxSpec::ENV_DIR.into()));
    }

    let files: Vec<WorkspaceFile> = ctx
        .workspace
        .select(task.filter.as_ref())
        .cloned()
        .collect();
    let workspace = Workspace::digest(files.iter());
    let inputs = KeyInputs {
        version: KEY_VERSION,
        base: ctx.base_id,
        parents: stack,
        workspace,
        env: keyed_env,
        command: task.run.clone(),
        executor: EXECUTOR.into(),
    };
    ResolvedInputs {
        key: inputs.key(),
        inputs,
        inherited,
        env: full_env,
        files,
        workspace,
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
