//! Runs a pipeline. The dispatcher (`dispatch.rs`) decides what starts, what is skipped and
//! when the run is over; this keeps the threads that execute tasks, the channel on which they
//! report back, each task's result for the tasks that `use` it, and the reporter.
//!
//! The run's tasks are a table that grows (`tasks.rs`): a `parallel:` task whose values are
//! known only at run time is expanded when the dispatcher starts it, and the tasks a task
//! wrote into `$RWX_DYNAMIC_TASKS` join once it succeeded (or was restored).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata_key::ExportedEnv;
use strata_pipeline::{Parallel, Task};

use crate::context::RunContext;
use crate::dispatch::{
    Action, Dependency, DependencyKind, DispatchEvent, Dispatcher, Limits, Outcome, StartRule,
    TaskSpec,
};
use crate::events::{Event, Reporter, SkipReason, Summary, TaskStatus, TaskSummary, TaskUsage};
use crate::execute::{TaskOutcome, execute};
use crate::inputs::{TaskResult, flatten_stack};
use crate::tasks::TaskTable;

/// Runs the pipeline (or its targets and what they need) and returns the summary, which is
/// also the last event reported.
///
/// A shared cache never fails a task: when a layer it promised does not arrive (missing,
/// corrupt, truncated, or the server went away), the tasks that needed it do not start, and
/// once the pass is over the run goes again — the broken entry is now remembered or its cache
/// left out, so the task is built, and what the first pass did is found in the local cache.
pub fn run(ctx: &RunContext<'_>, reporter: &dyn Reporter) -> Summary {
    let started = Instant::now();
    let pipeline = ctx.pipeline;
    // The first pass's table and dispatcher: they say the order the run announces.
    let table = TaskTable::new(pipeline);
    let first = dispatcher(ctx, &table);
    reporter.event(&Event::RunStarted {
        pipeline: pipeline.path.display().to_string(),
        tasks: first
            .order()
            .iter()
            .map(|&i| table.name(i).to_string())
            .collect(),
        jobs: ctx.options.jobs,
    });
    let mut first = Some((table, first));
    for message in &ctx.notices {
        reporter.event(&Event::Warning {
            message: message.clone(),
        });
    }
    // Each pass takes something away (an entry remembered as broken, a cache left out), so
    // this ends; the bound is a guard.
    const PASSES: usize = 4;
    let mut earlier: Option<Summary> = None;
    let mut summary = Summary::default();
    // Tasks that ran with the cache off in an earlier pass: they have no entry to be found
    // again, and running one twice would repeat its side effects (a deploy).
    let mut carried: HashMap<String, TaskResult> = HashMap::new();
    for pass in 1..=PASSES {
        let quiet = PassReporter {
            inner: reporter,
            ctx,
        };
        let (table, dispatcher) = first.take().unwrap_or_else(|| {
            let table = TaskTable::new(pipeline);
            let dispatcher = dispatcher(ctx, &table);
            (table, dispatcher)
        });
        summary = run_pass(
            ctx,
            table,
            dispatcher,
            if pass < PASSES { &quiet } else { reporter },
            &mut carried,
        );
        let failed = ctx.transfers.take_failed_restores();
        if let Some(before) = earlier.take() {
            summary = carry_over(before, summary);
        }
        if (failed.is_empty() && summary.deferred.is_empty())
            || ctx.interrupted.load(Ordering::SeqCst)
            || pass == PASSES
        {
            break;
        }
        let names: Vec<String> = failed.iter().map(|t| format!("`{t}`")).collect();
        reporter.event(&Event::Warning {
            message: format!(
                "the shared cache did not give {} as promised; running again to build {}",
                names.join(", "),
                if names.len() == 1 { "it" } else { "them" }
            ),
        });
        earlier = Some(summary.clone());
    }
    // Still waiting after the last pass (this machine could not keep a restored layer): failed,
    // and strata's fault.
    for (task, reason) in std::mem::take(&mut summary.deferred) {
        reporter.event(&Event::failed_early(task.clone(), reason.clone()));
        summary.failed += 1;
        summary.internal_failures += 1;
        summary.tasks.insert(
            task,
            TaskSummary {
                status: TaskStatus::Failed,
                duration_ms: 0,
                key: None,
                skip_reason: None,
                usage: Default::default(),
            },
        );
    }
    // The scope has joined every background restore and publication by now.
    summary.restored_bytes = ctx.transfers.restored_bytes.load(Ordering::Relaxed);
    summary.pushed_bytes = ctx.transfers.pushed_bytes.load(Ordering::Relaxed);
    summary.interrupted = ctx.interrupted.load(Ordering::SeqCst);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    // Restored layers have arrived by now: every task's artifacts can be copied.
    if let Some(dir) = &ctx.options.artifacts_dir {
        let (copied, warnings) = ctx.artifacts.deliver(ctx.cache, dir);
        for (task, artifacts) in copied {
            reporter.event(&Event::ArtifactsSaved {
                dir: dir.join(&task).display().to_string(),
                task,
                artifacts,
            });
        }
        for message in warnings {
            reporter.event(&Event::Warning { message });
        }
    }
    // Hits are counted once per run, in one write (`strata cache ls` shows them).
    if let Err(e) = ctx.cache.index().record_hits(&ctx.run_dir) {
        reporter.event(&Event::Warning {
            message: format!("could not count this run's cache hits: {e}"),
        });
    }
    reporter.event(&Event::RunFinished(summary.clone()));
    summary
}

/// A pass that may be run again: the skips that follow a layer that did not arrive are not
/// reported (the next pass decides those tasks).
struct PassReporter<'a> {
    inner: &'a dyn Reporter,
    ctx: &'a RunContext<'a>,
}

impl Reporter for PassReporter<'_> {
    fn event(&self, event: &Event) {
        if matches!(event, Event::TaskSkipped { .. }) && self.ctx.transfers.restore_failed() {
            return;
        }
        self.inner.event(event);
    }
}

/// The summary of a pass that went again: a task the earlier pass ran (or that failed there)
/// is reported as that, not as restored from what it left.
fn carry_over(before: Summary, mut after: Summary) -> Summary {
    for (name, t) in &before.tasks {
        let Some(now) = after.tasks.get_mut(name) else {
            // Carried over without running again: as the earlier pass reported it.
            if t.status == TaskStatus::Ran {
                after.ran += 1;
                after.tasks.insert(name.clone(), t.clone());
            }
            continue;
        };
        if t.status == TaskStatus::Ran && now.status == TaskStatus::Restored {
            after.restored -= 1;
            after.ran += 1;
            *now = t.clone();
        }
    }
    after.cpu_ms = match (before.cpu_ms, after.cpu_ms) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    after.peak_memory_bytes = before.peak_memory_bytes.max(after.peak_memory_bytes);
    after
}

/// One pass over the run's tasks.
fn run_pass(
    ctx: &RunContext<'_>,
    mut table: TaskTable<'_>,
    mut dispatcher: Dispatcher,
    reporter: &dyn Reporter,
    carried: &mut HashMap<String, TaskResult>,
) -> Summary {
    let mut summary = Summary::default();
    // What each task that succeeded hands the tasks that `use` it.
    let mut results: Vec<Option<TaskResult>> = vec![None; table.len()];
    let (tx, rx) = mpsc::channel::<(usize, TaskOutcome)>();
    std::thread::scope(|scope| {
        // Every task's entry looked up now, and the layers tasks that run need on their way.
        crate::prefetch::start(scope, ctx, reporter);
        let mut told_interrupted = false;
        loop {
            if !told_interrupted && ctx.interrupted.load(Ordering::SeqCst) {
                told_interrupted = true;
                dispatcher.record(DispatchEvent::Interrupted);
            }
            // Something was decided here without a thread: ask the dispatcher again at once.
            let mut decided = false;
            for action in dispatcher.next_actions() {
                match action {
                    Action::Start(i) if carried.contains_key(table.name(i).as_str()) => {
                        // Ran in an earlier pass, uncached: its result stands.
                        results[i] = carried.get(table.name(i).as_str()).cloned();
                        dispatcher.record(DispatchEvent::TaskFinished {
                            task: i,
                            outcome: Outcome::Ran,
                        });
                        decided = true;
                    }
                    Action::Start(i) if table.is_joined(i) => {
                        // A parallel task whose generated tasks all succeeded: their results,
                        // as one, for the tasks that use it.
                        results[i] = Some(joined_result(&table, i, &results));
                        dispatcher.record(DispatchEvent::TaskFinished {
                            task: i,
                            outcome: Outcome::Ran,
                        });
                        decided = true;
                    }
                    Action::Start(i) => {
                        let task = table.task(i);
                        let values =
                            crate::inputs::values_for(&task, |n| results[table.index(n)?].as_ref())
                                .expect(
                                    "a task starts once the tasks whose values it reads succeeded",
                                );
                        if let Some(Parallel::Pending(_)) = &task.parallel {
                            expand(
                                ctx,
                                &mut table,
                                &mut dispatcher,
                                i,
                                &values,
                                reporter,
                                &mut summary,
                            );
                            results.resize(table.len(), None);
                            decided = true;
                            continue;
                        }
                        let parents: Vec<TaskResult> = task
                            .uses
                            .iter()
                            .map(|u| {
                                table
                                    .index(u)
                                    .and_then(|j| results[j].clone())
                                    .expect("a task starts once what it uses has succeeded")
                            })
                            .collect();
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let refs: Vec<&TaskResult> = parents.iter().collect();
                            let outcome = execute(ctx, &task, &refs, &values, reporter, scope);
                            let _ = tx.send((i, outcome));
                        });
                    }
                    Action::Skip { task, reason } => {
                        let reason = reason.map(|i| table.name(i).to_string());
                        let because = match reason {
                            // Only an `after` expression is judged by the dispatcher.
                            SkipReason::ConditionFalse => match &table.task(task).after_condition {
                                Some(t) => {
                                    format!("its condition `after: {}` is false", t.raw.trim())
                                }
                                None => reason.to_string(),
                            },
                            _ => reason.to_string(),
                        };
                        let name = table.name(task).to_string();
                        reporter.event(&Event::TaskSkipped {
                            task: name.clone(),
                            because,
                        });
                        record_skip(&mut summary, name, reason);
                    }
                    Action::Done => {
                        ctx.transfers.stop_prefetch();
                        return;
                    }
                }
            }
            if decided {
                continue;
            }
            // Woken now and then to notice an interruption.
            let Ok((i, outcome)) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            // The tasks it wrote into `$RWX_DYNAMIC_TASKS` join now; if they cannot, it fails.
            let outcome = match outcome {
                TaskOutcome::Ran {
                    result,
                    key,
                    duration,
                    used,
                } if !result.env.dynamic_tasks.is_empty() => {
                    if add_dynamic_tasks(ctx, &mut table, &mut dispatcher, i, &result.env, reporter)
                    {
                        TaskOutcome::Ran {
                            result,
                            key,
                            duration,
                            used,
                        }
                    } else {
                        TaskOutcome::Failed {
                            key,
                            duration,
                            used,
                            internal: false,
                        }
                    }
                }
                TaskOutcome::Restored { result, key, saved }
                    if !result.env.dynamic_tasks.is_empty() =>
                {
                    if add_dynamic_tasks(ctx, &mut table, &mut dispatcher, i, &result.env, reporter)
                    {
                        TaskOutcome::Restored { result, key, saved }
                    } else {
                        TaskOutcome::Failed {
                            key,
                            duration: Duration::ZERO,
                            used: Default::default(),
                            internal: false,
                        }
                    }
                }
                other => other,
            };
            let name = table.name(i).to_string();
            let uncached = matches!(outcome, TaskOutcome::Ran { .. })
                && (!table.task(i).cache.enabled || ctx.options.no_cache);
            let (outcome, result) = record_outcome(&mut summary, name, outcome, reporter);
            if uncached
                && let Some(r) = &result
                && !ctx.transfers.rests_on_failed(&r.stack)
            {
                carried.insert(table.name(i).to_string(), r.clone());
            }
            results.resize(table.len(), None);
            results[i] = result;
            if outcome == Outcome::Failed && ctx.options.fail_fast {
                // Nothing new starts: nothing new is fetched for it either.
                ctx.transfers.stop_prefetch();
            }
            dispatcher.record(DispatchEvent::TaskFinished { task: i, outcome });
        }
    });
    summary
}

/// What a parallel task expanded at run time hands on: the stacks of its generated tasks in
/// index order, each layer once, and their env merged.
fn joined_result(table: &TaskTable<'_>, i: usize, results: &[Option<TaskResult>]) -> TaskResult {
    let members: Vec<&TaskResult> = table
        .members(i)
        .iter()
        .filter_map(|&m| results[m].as_ref())
        .collect();
    TaskResult {
        stack: flatten_stack(&members),
        env: ExportedEnv::merge(members.iter().map(|r| &r.env)),
    }
}

/// Expands the parallel task `i` now that what it reads is known: its generated tasks join
/// the run before it, or it fails with the reason.
fn expand(
    ctx: &RunContext<'_>,
    table: &mut TaskTable<'_>,
    dispatcher: &mut Dispatcher,
    i: usize,
    values: &crate::expressions::TaskValues,
    reporter: &dyn Reporter,
    summary: &mut Summary,
) {
    let task = table.task(i);
    let generated = crate::tasks::expand_parallel(ctx, &task, values).and_then(|generated| {
        // Keys must stay unique across the run.
        for g in &generated {
            if table.index(&g.name).is_some() {
                return Err(format!(
                    "generated task key `{}` is already a task of the run",
                    g.name
                ));
            }
        }
        Ok(generated)
    });
    match generated {
        Ok(generated) => {
            let names: Vec<String> = generated.iter().map(|t| t.name.to_string()).collect();
            let like = table.pipeline_index(&task.name);
            let specs = table.add(ctx, generated, like, Some(i));
            let specs = specs.into_iter().map(|j| task_spec(table, j)).collect();
            let members = dispatcher.add_tasks(specs);
            dispatcher.record(DispatchEvent::Expanded { task: i, members });
            reporter.event(&Event::TasksAdded {
                by: task.name.to_string(),
                file: None,
                tasks: names,
            });
        }
        Err(message) => {
            reporter.event(&Event::failed_early(
                task.name.to_string(),
                format!("failed to expand `parallel`: {message}"),
            ));
            summary.failed += 1;
            summary.tasks.insert(
                task.name.to_string(),
                TaskSummary {
                    status: TaskStatus::Failed,
                    duration_ms: 0,
                    key: None,
                    skip_reason: None,
                    usage: Default::default(),
                },
            );
            dispatcher.record(DispatchEvent::TaskFinished {
                task: i,
                outcome: Outcome::Failed,
            });
        }
    }
}

/// Takes in the tasks task `i` wrote into `$RWX_DYNAMIC_TASKS`. False (and every problem
/// reported) when the files are not valid tasks for this run: then none joins.
fn add_dynamic_tasks(
    ctx: &RunContext<'_>,
    table: &mut TaskTable<'_>,
    dispatcher: &mut Dispatcher,
    i: usize,
    env: &ExportedEnv,
    reporter: &dyn Reporter,
) -> bool {
    let by = table.name(i).to_string();
    let labels: Vec<std::path::PathBuf> = env
        .dynamic_tasks
        .keys()
        .map(|f| format!("$RWX_DYNAMIC_TASKS/{f} (written by `{by}`)").into())
        .collect();
    let files: Vec<strata_pipeline::DynamicFile<'_>> = env
        .dynamic_tasks
        .values()
        .zip(&labels)
        .map(|(text, path)| strata_pipeline::DynamicFile { path, text })
        .collect();
    match strata_pipeline::parse_dynamic_tasks(
        &files,
        ctx.pipeline.dialect,
        &table.names(),
        &table.groups(),
    ) {
        Ok(dynamic) => {
            let names: Vec<String> = dynamic.tasks.iter().map(|t| t.name.to_string()).collect();
            table.add_groups(dynamic.parallel_groups);
            let added = table.add(ctx, dynamic.tasks, None, None);
            let specs = added.into_iter().map(|j| task_spec(table, j)).collect();
            dispatcher.add_tasks(specs);
            let files: Vec<&str> = env.dynamic_tasks.keys().map(String::as_str).collect();
            reporter.event(&Event::TasksAdded {
                by,
                file: Some(files.join(", ")),
                tasks: names,
            });
            true
        }
        Err(diagnostics) => {
            let detail: Vec<String> = diagnostics
                .iter()
                .flat_map(|d| {
                    d.to_string()
                        .lines()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            reporter.event(&Event::TaskFailed {
                task: by,
                reason: "the tasks it wrote into $RWX_DYNAMIC_TASKS are not valid (nothing joined the run)"
                    .into(),
                exit_code: None,
                duration_ms: 0,
                log_tail: detail,
                kept_upper: None,
                errors: Vec::new(),
                usage: Default::default(),
            });
            false
        }
    }
}

/// The dispatcher for this run: each task's `use` and `after`, the targets, `-j` and
/// `--fail-fast`.
fn dispatcher(ctx: &RunContext<'_>, table: &TaskTable<'_>) -> Dispatcher {
    let pipeline = ctx.pipeline;
    let targets = &ctx.options.targets;
    let tasks = (0..table.len()).map(|i| task_spec(table, i)).collect();
    let wanted = pipeline
        .tasks
        .iter()
        .map(|t| targets.is_empty() || targets.contains(&t.name))
        .collect();
    let limits = Limits {
        jobs: ctx.options.jobs,
        fail_fast: ctx.options.fail_fast,
    };
    Dispatcher::new(tasks, wanted, limits)
}

/// What the dispatcher knows of task `i`: its dependencies and its start rule.
fn task_spec(table: &TaskTable<'_>, i: usize) -> TaskSpec {
    let t = table.task(i);
    let depend = |kind| {
        move |name: &strata_pipeline::TaskName| Dependency {
            task: table.index(name).expect("validated reference"),
            kind,
        }
    };
    TaskSpec {
        dependencies: (t.uses.iter().map(depend(DependencyKind::Use)))
            .chain(t.after.iter().map(depend(DependencyKind::After)))
            .chain(t.value_deps.iter().map(depend(DependencyKind::After)))
            .chain(t.status_deps.iter().map(depend(DependencyKind::Status)))
            .collect(),
        rule: start_rule(table, &t),
    }
}

/// `AllSucceeded`, or for a task with an `after` expression the rule that evaluates it.
fn start_rule(table: &TaskTable<'_>, task: &Task) -> StartRule {
    let Some(text) = &task.after_condition else {
        return StartRule::AllSucceeded;
    };
    let names = task
        .status_deps
        .iter()
        .filter_map(|n| Some((table.index(n)?, n.clone())))
        .collect();
    let joins = task
        .status_deps
        .iter()
        .filter_map(|n| table.index(n))
        .filter(|&j| matches!(table.task(j).parallel, Some(Parallel::Pending(_))))
        .collect();
    match crate::conditions::after_rule(text, &table.groups(), names, joins) {
        Some(rule) => StartRule::Custom(Box::new(rule)),
        // Checked when the file was read.
        None => StartRule::AllSucceeded,
    }
}

/// Counts a finished task; returns how it ended for the dispatcher and, if it succeeded, its
/// result for the tasks that use it.
fn record_outcome(
    summary: &mut Summary,
    task: String,
    outcome: TaskOutcome,
    reporter: &dyn Reporter,
) -> (Outcome, Option<TaskResult>) {
    let mut usage = TaskUsage::default();
    let (outcome, status, result, duration, key) = match outcome {
        TaskOutcome::ConditionFalse { because } => {
            reporter.event(&Event::TaskSkipped {
                task: task.clone(),
                because,
            });
            record_skip(summary, task, SkipReason::ConditionFalse);
            return (Outcome::ConditionFalse, None);
        }
        TaskOutcome::Restored { result, key, saved } => {
            summary.restored += 1;
            summary.saved_ms += saved.as_millis() as u64;
            let status = TaskStatus::Restored;
            (Outcome::Cached, status, Some(result), Duration::ZERO, key)
        }
        // Succeeds like a restored task, counted as neither ran nor restored.
        TaskOutcome::Stood {
            result,
            key,
            status,
        } => (Outcome::Cached, status, Some(result), Duration::ZERO, key),
        TaskOutcome::Ran {
            result,
            key,
            duration,
            used,
        } => {
            summary.ran += 1;
            usage = used;
            (Outcome::Ran, TaskStatus::Ran, Some(result), duration, key)
        }
        TaskOutcome::Failed {
            key,
            duration,
            used,
            internal,
        } => {
            summary.failed += 1;
            if internal {
                summary.internal_failures += 1;
            }
            usage = used;
            (Outcome::Failed, TaskStatus::Failed, None, duration, key)
        }
        // Not the task's failure, not counted: the run goes again (see `run`). Its dependents
        // are not started in this pass.
        TaskOutcome::Deferred { reason } => {
            summary.deferred.push((task, reason));
            return (Outcome::Failed, None);
        }
    };
    if let Some(cpu) = usage.cpu_ms {
        summary.cpu_ms = Some(summary.cpu_ms.unwrap_or(0) + cpu);
    }
    summary.peak_memory_bytes = summary.peak_memory_bytes.max(usage.peak_memory_bytes);
    summary.tasks.insert(
        task,
        TaskSummary {
            status,
            duration_ms: duration.as_millis() as u64,
            key: Some(key.to_hex()),
            skip_reason: None,
            usage,
        },
    );
    (outcome, result)
}

fn record_skip(summary: &mut Summary, task: String, reason: SkipReason) {
    if reason.by_condition() {
        summary.skipped_by_condition += 1;
    } else {
        summary.skipped += 1;
    }
    summary.tasks.insert(
        task,
        TaskSummary {
            status: TaskStatus::Skipped,
            duration_ms: 0,
            key: None,
            skip_reason: Some(reason),
            usage: TaskUsage::default(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_skipped_by_a_condition_does_not_fail_the_run() {
        let mut summary = Summary::default();
        record_skip(&mut summary, "a".into(), SkipReason::ConditionFalse);
        let dependency = "a".to_string();
        let reason = SkipReason::DependencySkippedByCondition { dependency };
        record_skip(&mut summary, "b".into(), reason);
        assert_eq!((summary.skipped, summary.skipped_by_condition), (0, 2));
        assert!(summary.success());
        assert_eq!(summary.tasks["b"].status, TaskStatus::Skipped);
    }

    #[test]
    fn a_task_skipped_because_of_a_failure_fails_the_run() {
        let mut summary = Summary::default();
        let dependency = "a".to_string();
        record_skip(
            &mut summary,
            "b".into(),
            SkipReason::DependencyFailed { dependency },
        );
        assert_eq!((summary.skipped, summary.skipped_by_condition), (1, 0));
        assert!(!summary.success());
    }
}
