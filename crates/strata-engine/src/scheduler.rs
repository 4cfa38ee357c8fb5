//! Runs a pipeline. The dispatcher (`dispatch.rs`) decides what starts, what is skipped and
//! when the run is over; this keeps the threads that execute tasks, the channel on which they
//! report back, each task's result for the tasks that `use` it, and the reporter.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata_pipeline::{Pipeline, TaskName};

use crate::context::RunContext;
use crate::dispatch::{
    Action, Dependency, DependencyKind, DispatchEvent, Dispatcher, Limits, Outcome, StartRule,
    TaskSpec,
};
use crate::events::{Event, Reporter, SkipReason, Summary, TaskStatus, TaskSummary};
use crate::execute::{TaskOutcome, execute};
use crate::inputs::TaskResult;

/// Runs the pipeline (or its targets and what they need) and returns the summary, which is
/// also the last event reported.
pub fn run(ctx: &RunContext<'_>, reporter: &dyn Reporter) -> Summary {
    let started = Instant::now();
    let pipeline = ctx.pipeline;
    let name = |i: usize| pipeline.tasks[i].name.to_string();
    let mut dispatcher = dispatcher(ctx);
    reporter.event(&Event::RunStarted {
        pipeline: pipeline.path.display().to_string(),
        tasks: dispatcher.order().iter().map(|&i| name(i)).collect(),
        jobs: ctx.options.jobs,
    });
    for message in &ctx.notices {
        reporter.event(&Event::Warning {
            message: message.clone(),
        });
    }

    let mut summary = Summary::default();
    // What each task that succeeded hands the tasks that `use` it.
    let mut results: Vec<Option<TaskResult>> = vec![None; pipeline.tasks.len()];
    let (tx, rx) = mpsc::channel::<(usize, TaskOutcome)>();
    std::thread::scope(|scope| {
        let mut told_interrupted = false;
        loop {
            if !told_interrupted && ctx.interrupted.load(Ordering::SeqCst) {
                told_interrupted = true;
                dispatcher.record(DispatchEvent::Interrupted);
            }
            for action in dispatcher.next_actions() {
                match action {
                    Action::Start(i) => {
                        let task = &pipeline.tasks[i];
                        let parents: Vec<TaskResult> = task
                            .uses
                            .iter()
                            .map(|u| {
                                results[index(pipeline, u)]
                                    .clone()
                                    .expect("a task starts once what it uses has succeeded")
                            })
                            .collect();
                        let values = crate::inputs::values_for(task, |n| {
                            results[index(pipeline, n)].as_ref()
                        })
                        .expect("a task starts once the tasks whose values it reads succeeded");
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let refs: Vec<&TaskResult> = parents.iter().collect();
                            let outcome = execute(ctx, task, &refs, &values, reporter, scope);
                            let _ = tx.send((i, outcome));
                        });
                    }
                    Action::Skip { task, reason } => {
                        let reason = reason.map(name);
                        reporter.event(&Event::TaskSkipped {
                            task: name(task),
                            because: reason.to_string(),
                        });
                        record_skip(&mut summary, name(task), reason);
                    }
                    Action::Done => return,
                }
            }
            // Woken now and then to notice an interruption.
            let Ok((i, outcome)) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            let (outcome, result) = record_outcome(&mut summary, name(i), outcome);
            results[i] = result;
            dispatcher.record(DispatchEvent::TaskFinished { task: i, outcome });
        }
    });
    // The scope has joined every background restore and publication by now.
    summary.restored_bytes = ctx.transfers.restored_bytes.load(Ordering::Relaxed);
    summary.pushed_bytes = ctx.transfers.pushed_bytes.load(Ordering::Relaxed);
    summary.interrupted = ctx.interrupted.load(Ordering::SeqCst);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    // Hits are counted once per run, in one write (`strata cache ls` shows them).
    if let Err(e) = ctx.cache.record_hits(&ctx.run_dir) {
        reporter.event(&Event::Warning {
            message: format!("could not count this run's cache hits: {e}"),
        });
    }
    reporter.event(&Event::RunFinished(summary.clone()));
    summary
}

/// The dispatcher for this run: each task's `use` and `after`, the targets, `-j` and
/// `--fail-fast`.
fn dispatcher(ctx: &RunContext<'_>) -> Dispatcher {
    let pipeline = ctx.pipeline;
    let targets = &ctx.options.targets;
    let depend = |kind| {
        move |name| Dependency {
            task: index(pipeline, name),
            kind,
        }
    };
    let tasks = pipeline
        .tasks
        .iter()
        .map(|t| TaskSpec {
            dependencies: (t.uses.iter().map(depend(DependencyKind::Use)))
                .chain(t.after.iter().map(depend(DependencyKind::After)))
                .chain(t.value_deps.iter().map(depend(DependencyKind::After)))
                .collect(),
            rule: StartRule::AllSucceeded,
        })
        .collect();
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

fn index(pipeline: &Pipeline, name: &TaskName) -> usize {
    pipeline
        .tasks
        .iter()
        .position(|t| &t.name == name)
        .expect("validated reference")
}

/// Counts a finished task; returns how it ended for the dispatcher and, if it succeeded, its
/// result for the tasks that use it.
fn record_outcome(
    summary: &mut Summary,
    task: String,
    outcome: TaskOutcome,
) -> (Outcome, Option<TaskResult>) {
    let (outcome, status, result, duration, key) = match outcome {
        TaskOutcome::Cached { result, key, saved } => {
            summary.cached += 1;
            summary.saved_ms += saved.as_millis() as u64;
            let status = TaskStatus::Cached;
            (Outcome::Cached, status, Some(result), Duration::ZERO, key)
        }
        TaskOutcome::Ran {
            result,
            key,
            duration,
        } => {
            summary.ran += 1;
            (Outcome::Ran, TaskStatus::Ran, Some(result), duration, key)
        }
        TaskOutcome::Failed { key, duration } => {
            summary.failed += 1;
            (Outcome::Failed, TaskStatus::Failed, None, duration, key)
        }
    };
    summary.tasks.insert(
        task,
        TaskSummary {
            status,
            duration_ms: duration.as_millis() as u64,
            key: Some(key.to_hex()),
            skip_reason: None,
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
