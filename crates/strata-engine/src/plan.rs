//! `strata plan` and `strata explain`: what a run would do, without running anything.

use strata_key::{Difference, RecordedInputs, compare};
use strata_pipeline::Parallel;

use crate::context::{EngineError, RunContext};
use crate::events::Reporter;
use crate::execute::{Found, result_of, usable_entry};
use crate::inputs::{TaskResult, resolve};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanStatus {
    /// Would be restored from the local cache.
    Hit,
    /// Would be restored from this shared cache.
    SharedHit { from: String },
    /// Would run: no usable entry for its key.
    Miss,
    /// `cache: false` or `--no-cache`: always runs.
    Uncached,
    /// Its key depends on what this parent produces, which is unknown until it runs.
    Unknown { parent: String },
    /// Its key reads what this parent wrote into the workspace, and the parent's layer is in a
    /// shared cache, not here: the plan downloads nothing.
    AfterRestore { parent: String },
    /// A `git/clone` of the workspace: served from the checkout, nothing to run or restore.
    Workspace,
    /// A calling task: it stands for its call's tasks, nothing to run or restore.
    Call,
    /// Its `if:` is false: it would be skipped, and its dependents with it.
    SkippedByCondition { because: String },
    /// A `parallel:` task whose count or values are known only once the run gets there: the
    /// tasks it generates are not known yet.
    PendingExpansion,
}

#[derive(Debug, Clone)]
pub struct PlannedTask {
    pub task: String,
    pub key: Option<strata_key::CacheKey>,
    pub status: PlanStatus,
    /// How many workspace files the task sees and is keyed on (0: it sees no workspace).
    pub workspace_files: usize,
}

/// Every wanted task in run order, with its key when it can be known now. Shared caches are
/// asked too; problems with them are reported to `reporter` as warnings.
pub fn plan(ctx: &RunContext<'_>, reporter: &dyn Reporter) -> Vec<PlannedTask> {
    for message in &ctx.notices {
        reporter.event(&crate::events::Event::Warning {
            message: message.clone(),
        });
    }
    plan_with_results(ctx, reporter).0
}

type Restored = Option<Result<TaskResult, String>>;

/// The plan, and for each task what it would hand its children when restored (`Err(name)`: the
/// task `name` upstream must run first).
pub(crate) fn plan_with_results(
    ctx: &RunContext<'_>,
    reporter: &dyn Reporter,
) -> (Vec<PlannedTask>, Vec<Restored>) {
    let pipeline = ctx.pipeline;
    let wanted = if ctx.options.targets.is_empty() {
        vec![true; pipeline.tasks.len()]
    } else {
        pipeline.closure(&ctx.options.targets)
    };
    let mut results: Vec<Restored> = vec![None; pipeline.tasks.len()];
    let mut out = Vec::new();
    for i in pipeline.topological_order() {
        if !wanted[i] {
            continue;
        }
        let task = &pipeline.tasks[i];
        let index = |n: &strata_pipeline::TaskName| {
            pipeline
                .tasks
                .iter()
                .position(|t| &t.name == n)
                .expect("validated")
        };
        let not_planned = if matches!(task.parallel, Some(Parallel::Pending(_))) {
            Some(PlanStatus::PendingExpansion)
        } else {
            // Known now unless it reads values of a task that must run first.
            let values =
                crate::inputs::values_for(task, |n| results[index(n)].as_ref()?.as_ref().ok());
            let allows = values.map(|values| {
                let (scope, _) = crate::inputs::task_scopes(ctx, task, &values);
                crate::conditions::if_allows(task, &scope)
            });
            match allows {
                Some(Ok(false)) => Some(PlanStatus::SkippedByCondition {
                    because: crate::conditions::if_false_reason(task),
                }),
                // An error fails the task when it runs; the plan shows what it would key.
                _ => None,
            }
        };
        if let Some(status) = not_planned {
            results[i] = Some(Err(task.name.to_string()));
            out.push(PlannedTask {
                task: task.name.to_string(),
                key: None,
                status,
                workspace_files: 0,
            });
            continue;
        }
        // A dependency skipped by its condition skips this one too.
        let skipped_dependency = task
            .uses
            .iter()
            .chain(&task.after)
            .chain(&task.value_deps)
            .find(|n| {
                out.iter().any(|p: &PlannedTask| {
                    p.task == n.as_str()
                        && matches!(p.status, PlanStatus::SkippedByCondition { .. })
                })
            });
        if let Some(dependency) = skipped_dependency {
            results[i] = Some(Err(task.name.to_string()));
            out.push(PlannedTask {
                task: task.name.to_string(),
                key: None,
                status: PlanStatus::SkippedByCondition {
                    because: format!("`{dependency}` would be skipped by a condition"),
                },
                workspace_files: 0,
            });
            continue;
        }
        // A parent or a task whose values it reads must run first: the key is unknown.
        if let Some(parent) = task.uses.iter().chain(&task.value_deps).find_map(|n| {
            let r = results[index(n)].as_ref().expect("dependencies come first");
            r.as_ref().err().cloned()
        }) {
            results[i] = Some(Err(parent.clone()));
            out.push(PlannedTask {
                task: task.name.to_string(),
                key: None,
                status: PlanStatus::Unknown { parent },
                workspace_files: 0,
            });
            continue;
        }
        let parents: Vec<&TaskResult> = task
            .uses
            .iter()
            .filter_map(|u| results[index(u)].as_ref()?.as_ref().ok())
            .collect();
        let values = crate::inputs::values_for(task, |n| results[index(n)].as_ref()?.as_ref().ok())
            .expect("every task whose values it reads has a result");

        let resolved = resolve(ctx, task, &parents, &values);
        if resolved.deferred.is_some() {
            // A layer its key reads is not here (a filtered task on a shared hit whose entry
            // does not say it left the workspace alone).
            let layers = ctx.cache.layers();
            let parent = resolved
                .stack
                .iter()
                .find(|p| {
                    !layers.has(&p.layer)
                        && !ctx.layer_parts.bare_before_arrival(ctx.cache, &p.layer)
                })
                .map_or_else(|| task.name.to_string(), |p| p.task.clone());
            results[i] = Some(Err(parent.clone()));
            out.push(PlannedTask {
                task: task.name.to_string(),
                key: None,
                status: PlanStatus::AfterRestore { parent },
                workspace_files: 0,
            });
            continue;
        }
        if task.is_source() {
            results[i] = Some(Ok(crate::execute::source_result(ctx, task, &resolved)));
            out.push(PlannedTask {
                task: task.name.to_string(),
                key: None,
                status: PlanStatus::Workspace,
                workspace_files: resolved.files.len(),
            });
            continue;
        }
        if let strata_pipeline::TaskKind::Called(_) = &task.kind {
            results[i] = Some(Ok(crate::packages::called_result(task, &parents, &values)));
            out.push(PlannedTask {
                task: task.name.to_string(),
                key: None,
                status: PlanStatus::Call,
                workspace_files: 0,
            });
            continue;
        }
        let (status, result) = if !task.cache.enabled || ctx.options.no_cache {
            (PlanStatus::Uncached, Err(task.name.to_string()))
        } else {
            match usable_entry(ctx, task, &resolved.key, reporter) {
                Some(found) => (
                    match &found {
                        Found::Local(_) => PlanStatus::Hit,
                        Found::Shared { .. } => PlanStatus::SharedHit {
                            from: found.source(ctx),
                        },
                    },
                    Ok(result_of(task, &resolved, found.layer(), &found.env())),
                ),
                None => (PlanStatus::Miss, Err(task.name.to_string())),
            }
        };
        results[i] = Some(result);
        out.push(PlannedTask {
            task: task.name.to_string(),
            key: Some(resolved.key),
            status,
            workspace_files: resolved.files.len(),
        });
    }
    (out, results)
}

#[derive(Debug)]
pub enum Explanation {
    /// The task would be restored.
    WouldHit { key: strata_key::CacheKey },
    /// The task never completed with caching on; nothing to compare with.
    NoPreviousEntry,
    /// A parent must run first, so the key cannot be known; the other inputs are compared.
    ParentMustRun {
        parent: String,
        differences: Vec<Difference>,
    },
    /// Its key reads what this parent wrote into the workspace, whose layer is in a shared
    /// cache and not here.
    AfterRestore { parent: String },
    /// What changed since the task's latest entry.
    Changed { differences: Vec<Difference> },
}

/// Why `task` would miss: which of its recorded inputs differ from its latest entry.
pub fn explain(
    ctx: &RunContext<'_>,
    task_name: &str,
    reporter: &dyn Reporter,
) -> Result<Explanation, EngineError> {
    let pipeline = ctx.pipeline;
    let task = pipeline
        .task(task_name)
        .ok_or_else(|| EngineError::UnknownTask(task_name.to_string()))?;
    let (planned, results) = plan_with_results(ctx, reporter);
    let p = planned
        .iter()
        .find(|p| p.task == task_name)
        .expect("every task is planned when there are no targets");
    if matches!(p.status, PlanStatus::Hit | PlanStatus::SharedHit { .. }) {
        return Ok(Explanation::WouldHit {
            key: p.key.expect("hits have keys"),
        });
    }
    if let PlanStatus::AfterRestore { parent } = &p.status {
        return Ok(Explanation::AfterRestore {
            parent: parent.clone(),
        });
    }
    let Some(latest) = ctx
        .cache
        .index()
        .latest_for_task(&ctx.pipeline_id(), task_name)?
    else {
        return Ok(Explanation::NoPreviousEntry);
    };
    let old = ctx.cache.index().recorded_inputs(&latest)?;
    let parents: Vec<&TaskResult> = task
        .uses
        .iter()
        .filter_map(|u| {
            let j = pipeline.tasks.iter().position(|t| &t.name == u)?;
            results[j].as_ref()?.as_ref().ok()
        })
        .collect();
    let values = crate::inputs::values_for(task, |n| {
        let j = pipeline.tasks.iter().position(|t| &t.name == n)?;
        results[j].as_ref()?.as_ref().ok()
    })
    .unwrap_or_default();
    let resolved = resolve(ctx, task, &parents, &values);
    let mut new = RecordedInputs {
        inputs: resolved.inputs,
        workspace_files: resolved.files,
    };
    match &p.status {
        PlanStatus::Unknown { parent } => {
            // The parents' layers and exported env are unknown until the parent runs: compare
            // everything else.
            let declared: Vec<&str> = task.env.iter().map(|v| v.name.as_str()).collect();
            let mut old = old;
            new.inputs.parents = old.inputs.parents.clone();
            new.inputs.env.retain(|k, _| declared.contains(&k.as_str()));
            old.inputs.env.retain(|k, _| declared.contains(&k.as_str()));
            Ok(Explanation::ParentMustRun {
                parent: parent.clone(),
                differences: compare(&old, &new),
            })
        }
        _ => {
            let base = base_changes(ctx, &old.inputs.base, &new.inputs.base)?;
            let mut differences = compare(&old, &new);
            if let Some(i) = differences.iter().position(|d| *d == Difference::Base)
                && !base.is_empty()
            {
                differences.splice(i..=i, base);
            }
            Ok(Explanation::Changed { differences })
        }
    }
}

/// What changed in a host base, by package and key path, when this machine recorded both.
pub(crate) fn base_changes(
    ctx: &RunContext<'_>,
    old: &strata_key::BaseId,
    new: &strata_key::BaseId,
) -> Result<Vec<Difference>, EngineError> {
    if old == new {
        return Ok(Vec::new());
    }
    let (Some(before), Some(now)) = (
        ctx.cache.index().base_inventory(old)?,
        ctx.cache.index().base_inventory(new)?,
    ) else {
        return Ok(Vec::new());
    };
    Ok(now
        .changes_since(&before)
        .into_iter()
        .map(Difference::BaseChanged)
        .collect())
}
