//! `strata shell`: a shell (or a program) in a task's filesystem as its command would see it —
//! its parents' layers, the workspace files it sees, the base, its environment with secrets,
//! `/workspace`, the same confinement — over a throwaway upper dir. With `failed`, the upper dir
//! the task's latest failure left is on top, so what the command left is there to see.
//!
//! Nothing runs but the program, and nothing is recorded: the parents must already have entries
//! (a shared cache's are restored into the local cache first); when one has none the shell is
//! refused, naming it, rather than running part of the pipeline behind the user's back.

use std::path::PathBuf;

use strata_pipeline::{Parallel, Task, TaskKind};
use strata_sandbox::{Attached, Outcome, SandboxSpec};

use crate::context::{EngineError, RunContext};
use crate::events::Reporter;
use crate::execute::{Found, usable_entry};
use crate::inputs::{TaskResult, WORKSPACE_DIR, resolve};
use crate::plan::{PlanStatus, plan_with_results};

/// What `strata shell` runs, and over what.
#[derive(Debug, Clone, Default)]
pub struct ShellOptions {
    /// The program and its arguments; empty: the shell (bash, else `sh`).
    pub argv: Vec<String>,
    /// Put the upper dir of the task's latest failure on top of its stack.
    pub failed: bool,
    /// stdin is a terminal: the program becomes its foreground process group, and gets the
    /// host's `TERM`.
    pub terminal: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(
        "`{task}` runs no command of its own ({what}): there is no filesystem of its own to open"
    )]
    NoCommand { task: String, what: &'static str },
    #[error(
        "`{task}` cannot be opened: `{missing}`, which it needs, has no entry in the cache, and `strata shell` runs nothing; `strata run --target {missing}` builds it"
    )]
    NotBuilt { task: String, missing: String },
    #[error(
        "`{task}` has no kept failure ({path} does not exist): `--failed` shows what the task's latest failed run left"
    )]
    NoFailure { task: String, path: PathBuf },
    #[error("a layer under `{task}` could not be restored from the shared cache: {reason}")]
    Restore { task: String, reason: String },
    #[error("`{task}`: failed to resolve an expression: {error}")]
    Expression { task: String, error: String },
    #[error("failed to prepare the sandbox: {0}")]
    Prepare(String),
    #[error("failed to start the sandbox")]
    Sandbox(#[from] strata_sandbox::SandboxError),
    #[error("sandbox setup failed: {0}")]
    SetupFailed(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Opens the shell in `task_name`'s filesystem and returns the program's exit status (128 + N
/// when a signal N ended it). `ctx` must target the task (its workspace files are captured).
pub fn shell<'a>(
    ctx: &'a RunContext<'a>,
    task_name: &str,
    options: &ShellOptions,
    reporter: &'a dyn Reporter,
) -> Result<i32, ShellError> {
    let pipeline = ctx.pipeline;
    let task = pipeline
        .task(task_name)
        .ok_or_else(|| EngineError::UnknownTask(task_name.to_string()))?;
    let no_command = |what| ShellError::NoCommand {
        task: task_name.to_string(),
        what,
    };
    match &task.kind {
        TaskKind::Source(_) => return Err(no_command("a `git/clone` served from the checkout")),
        TaskKind::Called(_) => return Err(no_command("a call, standing for its tasks")),
        _ => {}
    }
    if let Some(Parallel::Pending(_)) = &task.parallel {
        return Err(no_command(
            "a parallel task expanded at run time; name one of the tasks it generates",
        ));
    }
    let failed_upper = if options.failed {
        let path = ctx.cache.runs().failed_dir(&pipeline.path, task_name);
        if !path.is_dir() {
            return Err(ShellError::NoFailure {
                task: task_name.to_string(),
                path,
            });
        }
        Some(path)
    } else {
        None
    };

    // What each task under it hands on, from the cache (local, or a shared cache's entry).
    let (planned, results) = plan_with_results(ctx, reporter);
    let index = |name: &strata_pipeline::TaskName| {
        pipeline
            .tasks
            .iter()
            .position(|t| &t.name == name)
            .expect("validated")
    };
    let result_of = |name: &strata_pipeline::TaskName| -> Result<&TaskResult, ShellError> {
        match results[index(name)].as_ref() {
            Some(Ok(r)) => Ok(r),
            Some(Err(missing)) => Err(ShellError::NotBuilt {
                task: task_name.to_string(),
                missing: missing.clone(),
            }),
            None => Err(ShellError::NotBuilt {
                task: task_name.to_string(),
                missing: name.to_string(),
            }),
        }
    };
    let parents = task
        .uses
        .iter()
        .map(result_of)
        .collect::<Result<Vec<_>, _>>()?;
    let mut values = crate::expressions::TaskValues::new();
    for dep in &task.value_deps {
        values.insert(dep.to_string(), result_of(dep)?.env.values.clone());
    }
    for producer in task
        .artifact_refs
        .iter()
        .flat_map(crate::artifact_refs::producers)
    {
        let own = result_of(producer)?
            .stack
            .last()
            .filter(|p| p.task == producer.as_str())
            .map(|p| p.layer);
        values.artifact_layers.insert(producer.to_string(), own);
    }
    restore_remote_hits(ctx, task, &planned, reporter)?;

    let resolved = resolve(ctx, task, &parents, &values);
    if let Some(reason) = resolved.deferred {
        return Err(ShellError::Restore {
            task: task_name.to_string(),
            reason,
        });
    }
    if let Some(error) = resolved.error {
        return Err(ShellError::Expression {
            task: task_name.to_string(),
            error,
        });
    }
    let prepare = |what: &str, e: &dyn std::fmt::Display| {
        ShellError::Prepare(format!("failed to prepare {what}: {e}"))
    };
    let scratch = ctx.run_dir.path().join("shell");
    let ws_tree = resolved
        .tree
        .materialize(ctx)
        .map_err(|e| prepare("the workspace", &e))?;
    let mounts = ctx
        .cache
        .layers()
        .prepare(&scratch, &resolved.stack_layers())
        .map_err(|e| prepare("the upper dir", &e))?;
    let outputs_dir = scratch.join("outputs");
    for (dir, _) in SandboxSpec::OUTPUTS {
        let d = outputs_dir.join(dir);
        std::fs::create_dir_all(&d).map_err(|e| prepare(&d.display().to_string(), &e))?;
    }
    // The same stack as the task's own run, the failure's upper dir on top.
    let mut lowerdirs: Vec<PathBuf> = failed_upper.into_iter().collect();
    lowerdirs.extend(
        resolved
            .lowerdirs(ctx, task, ws_tree, &mounts.lowerdirs)
            .map_err(|e| prepare("the lower dirs", &e))?,
    );
    let mut env = resolved.env.clone();
    if options.terminal
        && let Ok(term) = std::env::var("TERM")
    {
        // Not the task's, but what a terminal program needs to draw on this terminal.
        env.retain(|(k, _)| k != "TERM");
        env.push(("TERM".into(), term));
    }
    let spec = SandboxSpec {
        task: task_name.to_string(),
        base: ctx.base_root.clone(),
        lowerdirs,
        upperdir: mounts.upperdir.clone(),
        workdir: mounts.workdir.clone(),
        scratch: scratch.clone(),
        outputs_dir,
        cwd: PathBuf::from(WORKSPACE_DIR),
        command: String::new(),
        env,
        privileged: task.privileged,
        cgroups: Vec::new(),
        // The shell is for looking at files: no database or daemon is started for it.
        background: Vec::new(),
        binds: Vec::new(),
        overlays: Vec::new(),
    };
    let attached = Attached {
        argv: options.argv.clone(),
        terminal: options.terminal,
    };
    let exit = strata_sandbox::run_attached(&ctx.options.exe, &spec, &attached);
    // The upper dir is thrown away: what the shell wrote is never recorded.
    let _ = std::fs::remove_dir_all(&scratch);
    match exit?.outcome {
        Outcome::Exited(code) => Ok(code),
        Outcome::SetupFailed(message) => Err(ShellError::SetupFailed(message)),
        // The shell starts no background process.
        Outcome::BackgroundFailed(message) => Err(ShellError::SetupFailed(message)),
    }
}

/// Restores into the local cache the layers under `task` that only a shared cache holds, and
/// waits for them.
fn restore_remote_hits<'a>(
    ctx: &'a RunContext<'a>,
    task: &Task,
    planned: &[crate::plan::PlannedTask],
    reporter: &'a dyn Reporter,
) -> Result<(), ShellError> {
    let remote: Vec<_> = planned
        .iter()
        .filter(|p| p.task != task.name.as_str())
        .filter(|p| matches!(p.status, PlanStatus::SharedHit { .. }))
        .filter_map(|p| Some((ctx.pipeline.task(&p.task)?, p.key?)))
        .collect();
    if remote.is_empty() {
        return Ok(());
    }
    let mut layers = Vec::new();
    std::thread::scope(|scope| {
        for (t, key) in remote {
            if let Some(Found::Shared { remote, entry }) = usable_entry(ctx, t, &key, reporter) {
                // A lease on the layer being restored, for a concurrent prune.
                let _ = ctx.run_dir.note_layer(&entry.layer);
                layers.push(entry.layer);
                crate::transfer::start_restore(scope, ctx, reporter, remote, entry);
            }
        }
    });
    ctx.transfers
        .wait_for(ctx, &layers)
        .map_err(|reason| ShellError::Restore {
            task: task.name.to_string(),
            reason,
        })
}
