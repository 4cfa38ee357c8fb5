//! A task's inputs, from its parents' results and the run context.

use std::borrow::Cow;
use std::collections::BTreeMap;

use strata_key::{
    CacheKey, EnvInput, ExportedEnv, KEY_VERSION, KeyInputs, LayerDigest, ParentInput, Workspace,
    WorkspaceDigest, WorkspaceFile,
};
use strata_pipeline::expr::Scope;
use strata_pipeline::{EnvMerge, EnvValue, Filter, Parallel, Task};
use strata_sandbox::SandboxSpec;

use crate::context::RunContext;
use crate::expressions::{TaskValues, resolve as resolve_text, with_values};
use crate::layer_parts::LayersWithParts;
use crate::sources::VisibleFile;
use crate::workspace_tree::Origin;

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
    /// The workspace files its key covers, at the paths the task sees them.
    pub(crate) files: Vec<WorkspaceFile>,
    /// Every workspace file the task sees (`files` and those a `cache-key: excluded` filter
    /// entry selects), with where each comes from and their digest (which names the tree).
    pub(crate) tree: WorkspaceView,
    /// The layers under the task, bottom first, as they are mounted. The key's `parents` differ
    /// for a filtered task whose used tasks wrote into the workspace (`layer_parts.rs`).
    pub(crate) stack: Vec<ParentInput>,
    /// Whether the tree holds the used tasks' workspace files too, and goes above the mask.
    pub(crate) masked: bool,
    /// Whether the cache is used for this task, and how old an entry may be (`cache`, its
    /// expressions resolved).
    pub(crate) cache: CacheDecision,
    /// An expression of the task that could not be resolved: the task fails with this.
    pub(crate) error: Option<String>,
    /// A layer under the task that a shared cache promised did not arrive: the task cannot
    /// start in this pass of the run.
    pub(crate) deferred: Option<String>,
    /// Its `background-processes` (and Docker daemon) as they run (`services.rs`).
    pub(crate) background: Vec<strata_sandbox::BackgroundProcess>,
    /// The artifacts of other tasks it reads (`artifact_refs.rs`): a lower dir of their own.
    pub(crate) artifacts: Vec<crate::artifact_refs::ReadArtifact>,
    /// Its tool cache, if it has one (its name resolved: `tool_cache.rs`).
    pub(crate) tool_cache: Option<strata_store::ToolCacheId>,
    /// Its `outputs`, the paths of its artifacts and test results resolved as it starts
    /// (they may read `tasks.X.values`).
    pub(crate) outputs: strata_pipeline::TaskOutputs,
}

/// `cache` as it applies to one run of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheDecision {
    pub(crate) enabled: bool,
    pub(crate) ttl: Option<std::time::Duration>,
}

/// The task's `cache` with its expressions resolved in `scope`: `cache: ${{ … }}` must give
/// `true` or `false`, `ttl: ${{ … }}` a duration.
pub(crate) fn cache_decision(
    task: &Task,
    scope: &strata_pipeline::expr::Scope,
) -> Result<CacheDecision, String> {
    let policy = &task.cache;
    let mut out = CacheDecision {
        enabled: policy.enabled,
        ttl: policy.ttl,
    };
    if let Some(text) = &policy.enabled_expr {
        let r = crate::expressions::render(text, scope).map_err(|e| format!("`cache`: {e}"))?;
        out.enabled = match r.text.trim() {
            "true" => true,
            "false" => false,
            other => {
                return Err(format!(
                    "`cache`: `{}` gives `{other}`, not true or false",
                    text.raw
                ));
            }
        };
    }
    if let Some(text) = &policy.ttl_expr {
        let r = crate::expressions::render(text, scope).map_err(|e| format!("`cache.ttl`: {e}"))?;
        out.ttl = Some(
            strata_pipeline::parse_duration(&r.text).map_err(|e| format!("`cache.ttl`: {e}"))?,
        );
    }
    Ok(out)
}

/// What a task inherits from the tasks it uses (`parents`, in `use` order): all of them, or
/// those `env-config.inherit` names; a later one wins a variable, `PATH`s are joined, and
/// `env-config.merge` joins other variables (the last used task's value first, as for `PATH`)
/// or makes `PATH` a plain override.
pub(crate) fn inherit_env(task: &Task, parents: &[&TaskResult]) -> ExportedEnv {
    let config = &task.env_config;
    // `plan` may know only some parents; then nothing can be chosen by name.
    let chosen: Vec<&ExportedEnv> = if parents.len() == task.uses.len() {
        task.uses
            .iter()
            .zip(parents)
            .filter(|(name, _)| config.inherit.as_ref().is_none_or(|l| l.contains(name)))
            .map(|(_, p)| &p.env)
            .collect()
    } else {
        parents.iter().map(|p| &p.env).collect()
    };
    let mut out = ExportedEnv::merge(chosen.iter().copied());
    for (name, how) in &config.merge {
        match how {
            // The default for any other variable: the last used task's value.
            EnvMerge::Override if name != "PATH" => {}
            EnvMerge::Override => {
                out.path = chosen
                    .iter()
                    .rev()
                    .find(|e| !e.path.is_empty())
                    .map(|e| e.path.clone())
                    .unwrap_or_default();
            }
            // `PATH` is joined anyway: its parts are directories, joined by `:`.
            EnvMerge::Join(_) if name == "PATH" => {}
            EnvMerge::Join(by) => {
                let values: Vec<&str> = chosen
                    .iter()
                    .rev()
                    .filter_map(|e| e.vars.get(name))
                    .map(String::as_str)
                    .collect();
                if !values.is_empty() {
                    out.excluded.remove(name);
                    out.vars.insert(name.clone(), values.join(by));
                }
            }
        }
    }
    out
}

/// The workspace files a task sees: what its tree is made of.
#[derive(Debug, Clone)]
pub(crate) struct WorkspaceView {
    pub(crate) digest: WorkspaceDigest,
    pub(crate) files: Vec<WorkspaceFile>,
    pub(crate) origins: Vec<Origin>,
}

impl WorkspaceView {
    /// The directory of hard links that is the task's `/workspace` lower dir (made once per
    /// digest in a run).
    pub(crate) fn materialize(
        &self,
        ctx: &RunContext<'_>,
    ) -> Result<std::path::PathBuf, strata_store::StoreError> {
        ctx.trees.get(
            ctx.cache,
            ctx.run_dir.path(),
            &ctx.workspace,
            self.digest,
            &self.files,
            &self.origins,
        )
    }
}

impl ResolvedInputs {
    /// The overlay's lower dirs, top first, for a task whose workspace tree is `ws_tree` and
    /// whose parents' layers are `parents` (top first): the tree above the parents — with the
    /// mask that hides their own `workspace/` for a filtered task whose parents wrote there — the
    /// package's files of a package's task, then a base image's layers.
    pub(crate) fn lowerdirs(
        &self,
        ctx: &RunContext<'_>,
        task: &Task,
        ws_tree: std::path::PathBuf,
        parents: &[std::path::PathBuf],
    ) -> Result<Vec<std::path::PathBuf>, String> {
        self.lowerdirs_around(ctx, task, Some(ws_tree), parents)
            .map(|(lowers, _)| lowers)
    }

    /// The same, the workspace tree left out when `ws_tree` is `None`, and how many of the
    /// lower dirs lie above the tree's place.
    pub(crate) fn lowerdirs_around(
        &self,
        ctx: &RunContext<'_>,
        task: &Task,
        ws_tree: Option<std::path::PathBuf>,
        parents: &[std::path::PathBuf],
    ) -> Result<(Vec<std::path::PathBuf>, usize), String> {
        let package = match task.scope.as_ref().and_then(|s| s.package()) {
            Some(p) => Some(crate::packages::package_lower(ctx, p)?),
            None => None,
        };
        let mut lowerdirs = Vec::with_capacity(parents.len() + ctx.base_layers.len() + 4);
        // Artifacts read from other tasks, above all: their paths are strata's own.
        if !self.artifacts.is_empty() {
            lowerdirs.push(crate::artifact_refs::view(
                ctx.run_dir.path(),
                &self.artifacts,
            )?);
        }
        if self.masked {
            let mask = ctx.trees.mask(ctx.run_dir.path()).map_err(|e| {
                format!(
                    "failed to prepare the workspace: {}",
                    strata_store::error_chain(&e)
                )
            })?;
            let above = lowerdirs.len();
            lowerdirs.extend(ws_tree);
            lowerdirs.push(mask);
            lowerdirs.extend(parents.iter().cloned());
            lowerdirs.extend(package);
            lowerdirs.extend(ctx.base_layers.iter().cloned());
            Ok((lowerdirs, above))
        } else {
            lowerdirs.extend(parents.iter().cloned());
            lowerdirs.extend(package);
            let above = lowerdirs.len();
            lowerdirs.extend(ws_tree);
            lowerdirs.extend(ctx.base_layers.iter().cloned());
            Ok((lowerdirs, above))
        }
    }

    pub(crate) fn stack_layers(&self) -> Vec<LayerDigest> {
        self.stack.iter().map(|p| p.layer).collect()
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
    out.artifact_layers = crate::artifact_refs::layers_for(task, &result_of)?;
    Some(out)
}

/// Why the layers under a filtered task could not be read.
enum LayersError {
    /// A layer a shared cache promised did not arrive.
    NotRestored(String),
    Other(String),
}

/// For a task with a filter over layers that wrote into `/workspace`: those layers' parts
/// (bottom first) and the stack as keyed (such a layer by its system part). `None`: nothing to
/// narrow, the task is keyed and mounted as usual.
fn filtered_layers(
    ctx: &RunContext<'_>,
    filter: Option<&Filter>,
    stack: &[ParentInput],
) -> Result<Option<(LayersWithParts, Vec<ParentInput>)>, LayersError> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    if stack.is_empty() {
        return Ok(None);
    }
    // The layers must be here to be read (those restored from a shared cache may be on their
    // way), except those whose entry says they wrote nothing under /workspace: a child's key
    // takes them whole, so that their downloads need not wait for one another.
    let bare: Vec<bool> = stack
        .iter()
        .map(|p| ctx.layer_parts.bare_before_arrival(ctx.cache, &p.layer))
        .collect();
    let layers: Vec<LayerDigest> = (stack.iter().zip(&bare))
        .filter(|(_, bare)| !**bare)
        .map(|(p, _)| p.layer)
        .collect();
    ctx.transfers
        .wait_for(ctx, &layers)
        .map_err(LayersError::NotRestored)?;
    let mut parts = Vec::new();
    let mut keyed = Vec::with_capacity(stack.len());
    for (p, bare) in stack.iter().zip(bare) {
        if bare {
            keyed.push(p.clone());
            continue;
        }
        match ctx
            .layer_parts
            .narrowed(ctx.cache, p.layer, filter)
            .map_err(LayersError::Other)?
        {
            Some(split) => {
                keyed.push(ParentInput {
                    task: p.task.clone(),
                    layer: split.system,
                });
                parts.push((ctx.cache.layers().path(&p.layer), split));
            }
            None => keyed.push(p.clone()),
        }
    }
    Ok((!parts.is_empty()).then_some((parts, keyed)))
}

/// Every variable a task's command sees, and how each enters the key.
enum Keyed {
    Value,
    /// By name only (`cache-key: excluded`, secrets).
    NameOnly,
    /// Not at all (`$RWX_CACHE_KEY_EXCLUDED_ENV` exports, such as a clone's commit sha).
    Not,
}

/// The scopes a task's expressions are evaluated in, as it runs and as it is keyed: the run's,
/// with the values the task reads, the `params`/`init` of the call it belongs to, and its
/// `parallel.*`. On an error (a call argument that cannot be resolved), the run's.
pub(crate) fn task_scopes<'c>(
    ctx: &'c RunContext<'_>,
    task: &Task,
    values: &TaskValues,
) -> (Cow<'c, Scope>, Cow<'c, Scope>) {
    scopes_of(ctx, task, values).unwrap_or((
        Cow::Borrowed(&ctx.invocation.scope),
        Cow::Borrowed(&ctx.invocation.key_scope),
    ))
}

fn scopes_of<'c>(
    ctx: &'c RunContext<'_>,
    task: &Task,
    values: &TaskValues,
) -> Result<(Cow<'c, Scope>, Cow<'c, Scope>), String> {
    let instance = match &task.parallel {
        Some(Parallel::Instance(i)) => Some(i),
        _ => None,
    };
    // Most tasks read no values, belong to no call and are not parallel: they share the run's
    // scope rather than copy it (it holds the event payload).
    if values.is_empty() && instance.is_none() && task.scope.is_none() {
        return Ok((
            Cow::Borrowed(&ctx.invocation.scope),
            Cow::Borrowed(&ctx.invocation.key_scope),
        ));
    }
    let (mut scope, mut key_scope) = match &task.scope {
        Some(call) => crate::packages::call_scopes(
            &ctx.invocation.scope,
            &ctx.invocation.key_scope,
            call,
            values,
        )?,
        None => (
            with_values(&ctx.invocation.scope, values),
            with_values(&ctx.invocation.key_scope, values),
        ),
    };
    if let Some(i) = instance {
        scope.insert(&["parallel"], i.scope_value());
        key_scope.insert(&["parallel"], i.scope_value());
    }
    Ok((Cow::Owned(scope), Cow::Owned(key_scope)))
}

pub(crate) fn resolve(
    ctx: &RunContext<'_>,
    task: &Task,
    parents: &[&TaskResult],
    values: &TaskValues,
) -> ResolvedInputs {
    let mut error = None;
    let (scope, key_scope) = match scopes_of(ctx, task, values) {
        Ok(scopes) => scopes,
        Err(e) => {
            error = Some(e);
            (
                Cow::Borrowed(&ctx.invocation.scope),
                Cow::Borrowed(&ctx.invocation.key_scope),
            )
        }
    };
    let mut deferred = None;
    // The artifacts of other tasks it reads: in its scopes, its key and its lower dirs.
    let artifacts = match crate::artifact_refs::read(ctx, task, &values.artifact_layers) {
        Ok(artifacts) => artifacts,
        Err(crate::artifact_refs::ArtifactError::NotRestored(e)) => {
            deferred = Some(e);
            Vec::new()
        }
        Err(crate::artifact_refs::ArtifactError::Failed(e)) => {
            error.get_or_insert(e);
            Vec::new()
        }
    };
    let (scope, key_scope) = if artifacts.is_empty() {
        (scope, key_scope)
    } else {
        let (mut scope, mut key_scope) = (scope, key_scope);
        for a in &artifacts {
            let path = [
                "tasks",
                a.reference.written.as_str(),
                "artifacts",
                a.reference.key.as_str(),
            ];
            let value = strata_pipeline::expr::Value::from(a.path.clone());
            scope.to_mut().insert(&path, value.clone());
            key_scope.to_mut().insert(&path, value);
        }
        (scope, key_scope)
    };
    let stack = flatten_stack(parents);
    let inherited = inherit_env(task, parents);

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
    if let Some(Parallel::Instance(i)) = &task.parallel {
        for (k, v) in i.env() {
            env.insert(k.into(), (v, Keyed::Value));
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
    // A package's files, at a path that names their digest: it enters the key.
    if let Some(package) = task.scope.as_ref().and_then(|s| s.package()) {
        let path = crate::packages::package_path(package);
        // A Mint leaf's scripts know it by its older name (only theirs: other packages' keys
        // stay as they were).
        if package.mint_leaf {
            env.insert("MINT_LEAF_PATH".into(), (path.clone(), Keyed::Value));
        }
        env.insert("RWX_PACKAGES_PATH".into(), (path.clone(), Keyed::Value));
        env.insert("RWX_PACKAGE_PATH".into(), (path, Keyed::Value));
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
    let (outputs, keyed_outputs) = resolve_outputs(&task.outputs, &scope, &key_scope)
        .unwrap_or_else(|e| {
            error.get_or_insert(e);
            (task.outputs.clone(), task.outputs.key_text())
        });
    ctx.artifacts.note_paths(task, &outputs);
    let (command, keyed_command) = match resolve_text(&task.run, &scope, &key_scope) {
        Ok(r) => (r.text, r.keyed),
        Err(e) => {
            error.get_or_insert(format!("`run`: {e}"));
            (String::new(), task.run.raw.clone())
        }
    };
    let services = crate::services::resolve(task, &scope, &key_scope).unwrap_or_else(|e| {
        error.get_or_insert(e);
        crate::services::ResolvedServices {
            processes: Vec::new(),
            keyed: String::new(),
        }
    });
    // Old Mint files append `NAME=value` lines to `$MINT_ENV` as a file.
    let dotenv = crate::dotenv::used_as_file(&command);
    for (dir, names) in SandboxSpec::OUTPUTS {
        for name in *names {
            let place = if dotenv.contains(name) {
                crate::dotenv::DOTENV_FILE
            } else {
                dir
            };
            full_env.push((
                (*name).into(),
                format!("{}/{place}", SandboxSpec::OUTPUTS_DIR),
            ));
        }
    }
    let cache = cache_decision(task, &scope).unwrap_or_else(|e| {
        error.get_or_insert(e);
        CacheDecision {
            enabled: false,
            ttl: None,
        }
    });
    let tool_cache = crate::tool_cache::id_of(ctx, task, &scope, &key_scope).unwrap_or_else(|e| {
        error.get_or_insert(e);
        None
    });

    // A filter's expressions are resolved as the task starts.
    let filter: Option<Cow<'_, Filter>> = match &task.filter {
        Some(f) if f.is_templated() => {
            match f.resolve(|t| crate::expressions::render(t, &scope).map(|r| r.text)) {
                Ok(f) => Some(Cow::Owned(f)),
                Err(e) => {
                    error.get_or_insert(e);
                    Some(Cow::Borrowed(f))
                }
            }
        }
        Some(f) => Some(Cow::Borrowed(f)),
        None => None,
    };
    let visible: Vec<VisibleFile> = match ctx.index_of(task) {
        Some(i) => ctx.sources.visible(&ctx.workspace, i, filter.as_deref()),
        None => ctx
            .sources
            .visible_added(&ctx.workspace, task, filter.as_deref()),
    };
    let (visible, keyed_stack, masked) = match filtered_layers(ctx, filter.as_deref(), &stack) {
        Ok(Some((layers, keyed_stack))) => {
            let filter = filter.as_deref().expect("only a filtered task");
            (
                crate::layer_parts::merged_view(visible, &layers, filter),
                keyed_stack,
                true,
            )
        }
        Ok(None) => (visible, stack.clone(), false),
        Err(LayersError::NotRestored(e)) => {
            deferred.get_or_insert(e);
            (visible, stack.clone(), false)
        }
        Err(LayersError::Other(e)) => {
            error.get_or_insert(e);
            (visible, stack.clone(), false)
        }
    };
    let mut files = Vec::with_capacity(visible.len());
    let mut tree_files = Vec::with_capacity(visible.len());
    let mut origins = Vec::with_capacity(visible.len());
    for v in visible {
        if v.keyed {
            files.push(v.file.clone());
        }
        tree_files.push(v.file);
        origins.push(v.origin);
    }
    let workspace = Workspace::digest(files.iter());
    let tree = WorkspaceView {
        digest: if tree_files.len() == files.len() {
            workspace
        } else {
            Workspace::digest(tree_files.iter())
        },
        files: tree_files,
        origins,
    };
    let inputs = KeyInputs {
        version: KEY_VERSION,
        base: ctx.base_id,
        parents: keyed_stack,
        workspace,
        env: keyed_env,
        command: keyed_command,
        // A privileged task can do what others cannot: never the same result. Background
        // processes and Docker add to it only when the task has them, so that other tasks
        // keep their keys.
        executor: {
            let mut executor = if task.privileged {
                format!("{EXECUTOR} privileged{}", services.keyed)
            } else {
                format!("{EXECUTOR}{}", services.keyed)
            };
            // What the entry holds depends on `outputs` (the layer's filter, its artifacts,
            // which exit codes pass): keyed, and only when set, so other keys stay as they were.
            if !task.outputs.is_default() {
                executor.push_str("\noutputs:\n");
                executor.push_str(&keyed_outputs);
            }
            executor
        },
        artifacts: artifacts.iter().map(|a| a.key_input()).collect(),
    };
    ResolvedInputs {
        key: inputs.key(),
        inputs,
        inherited,
        command,
        env: full_env,
        files,
        tree,
        stack,
        masked,
        cache,
        error,
        deferred,
        background: services.processes,
        artifacts,
        tool_cache,
        outputs,
    }
}

/// `outputs` with the paths of its artifacts and test results resolved as the task runs, and
/// the text it is keyed by (resolved as keys resolve: secrets by name).
fn resolve_outputs(
    outputs: &strata_pipeline::TaskOutputs,
    scope: &Scope,
    key_scope: &Scope,
) -> Result<(strata_pipeline::TaskOutputs, String), String> {
    let (mut run, mut keyed) = (outputs.clone(), outputs.clone());
    for (i, a) in outputs.artifacts.iter().enumerate() {
        let r = resolve_text(&a.path, scope, key_scope)
            .map_err(|e| format!("`outputs.artifacts` `{}`: {e}", a.key))?;
        run.artifacts[i].path.raw = r.text;
        keyed.artifacts[i].path.raw = r.keyed;
    }
    for (i, t) in outputs.test_results.iter().enumerate() {
        let r = resolve_text(&t.path, scope, key_scope)
            .map_err(|e| format!("`outputs.test-results`: {e}"))?;
        run.test_results[i].path.raw = r.text;
        keyed.test_results[i].path.raw = r.keyed;
    }
    Ok((run, keyed.key_text()))
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

    fn exporting(vars: &[(&str, &str)]) -> TaskResult {
        TaskResult {
            stack: Vec::new(),
            env: ExportedEnv::default().with_exports(
                vars.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    fn task(text: &str) -> Task {
        strata_pipeline::parse_str(std::path::Path::new("strata.yml"), text)
            .unwrap()
            .tasks
            .pop()
            .unwrap()
    }

    #[test]
    fn env_config_chooses_and_joins() {
        let a = exporting(&[("FLAGS", "-a"), ("ONLY_A", "1"), ("PATH", "/a")]);
        let b = exporting(&[("FLAGS", "-b"), ("PATH", "/b")]);
        let base = "tasks:\n  - key: a\n    run: x\n  - key: b\n    run: x\n  - key: c\n    use: [a, b]\n    run: x\n";
        let plain = inherit_env(&task(base), &[&a, &b]);
        assert_eq!(plain.vars["FLAGS"], "-b");
        assert_eq!(plain.path, ["/b", "/a"]);
        let joined = inherit_env(
            &task(&format!(
                "{base}    env-config:\n      merge:\n        FLAGS: {{strategy: join, by: ' '}}\n        PATH: {{strategy: override}}\n"
            )),
            &[&a, &b],
        );
        assert_eq!(joined.vars["FLAGS"], "-b -a");
        assert_eq!(joined.path, ["/b"]);
        let only_a = inherit_env(
            &task(&format!("{base}    env-config: {{inherit: [a]}}\n")),
            &[&a, &b],
        );
        assert_eq!(only_a.vars["FLAGS"], "-a");
        assert_eq!(only_a.vars["ONLY_A"], "1");
        assert_eq!(only_a.path, ["/a"]);
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
