//! Runs a pipeline: tasks start as soon as what they need is done, up to `jobs` at a time.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::context::RunContext;
use crate::events::{Event, Reporter, SkipReason, Summary, TaskStatus, TaskSummary};
use crate::execute::{TaskOutcome, execute};
use crate::inputs::TaskResult;

enum State {
    Pending,
    Running,
    Done(TaskResult),
    Failed,
    Skipped,
}

/// Runs the pipeline (or its targets and what they need) and returns the summary, which is
/// also the last event reported.
pub fn run(ctx: &RunContext<'_>, reporter: &dyn Reporter) -> Summary {
    let started = Instant::now();
    let pipeline = ctx.pipeline;
    let wanted = if ctx.options.targets.is_empty() {
        vec![true; pipeline.tasks.len()]
    } else {
        pipeline.closure(&ctx.options.targets)
    };
    let order: Vec<usize> = pipeline
        .topological_order()
        .into_iter()
        .filter(|&i| wanted[i])
        .collect();
    let index = |name: &strata_pipeline::TaskName| {
        pipeline
            .tasks
            .iter()
            .position(|t| &t.name == name)
            .expect("validated reference")
    };
    reporter.event(&Event::RunStarted {
        pipeline: pipeline.path.display().to_string(),
        tasks: order
            .iter()
            .map(|&i| pipeline.tasks[i].name.to_string())
            .collect(),
        jobs: ctx.options.jobs,
    });
    for message in &ctx.notices {
        reporter.event(&Event::Warning {
            message: message.clone(),
        });
    }

    let mut states: Vec<State> = pipeline.tasks.iter().map(|_| State::Pending).collect();
    let mut summary = Summary {
        ran: 0,
        cached: 0,
        failed: 0,
        skipped: 0,
        skipped_by_condition: 0,
        duration_ms: 0,
        saved_ms: 0,
        restored_bytes: 0,
        pushed_bytes: 0,
        interrupted: false,
        tasks: BTreeMap::new(),
    };
    let (tx, rx) = mpsc::channel::<(usize, TaskOutcome)>();
    let mut running = 0usize;

    std::thread::scope(|scope| {
        loop {
            let interrupted = ctx.interrupted.load(Ordering::SeqCst);
            let stop_reason = if interrupted {
                Some(SkipReason::Interrupted)
            } else if ctx.options.fail_fast && summary.failed > 0 {
                Some(SkipReason::FailFast)
            } else {
                None
            };
            for &i in &order {
                if !matches!(states[i], State::Pending) {
                    continue;
                }
                let task = &pipeline.tasks[i];
                let deps: Vec<usize> = task.uses.iter().chain(&task.after).map(index).collect();
                let blocked = deps
                    .iter()
                    .find(|&&d| matches!(states[d], State::Failed | State::Skipped));
                let reason = match (blocked, &stop_reason) {
                    (Some(&d), _) => {
                        let dependency = pipeline.tasks[d].name.to_string();
                        Some(match states[d] {
                            State::Failed => SkipReason::DependencyFailed { dependency },
                            _ => SkipReason::DependencySkipped { dependency },
                        })
                    }
                    (None, Some(reason)) => Some(reason.clone()),
                    (None, None) => None,
                };
                if let Some(reason) = reason {
                    states[i] = State::Skipped;
                    summary.skipped += 1;
                    reporter.event(&Event::TaskSkipped {
                        task: task.name.to_string(),
                        because: reason.to_string(),
                    });
                    summary.tasks.insert(
                        task.name.to_string(),
                        TaskSummary {
                            status: TaskStatus::Skipped,
                            duration_ms: 0,
                            key: None,
                            skip_reason: Some(reason),
                        },
                    );
                    continue;
                }
                let ready = deps.iter().all(|&d| matches!(states[d], State::Done(_)));
                if ready && running < ctx.options.jobs.max(1) {
                    let parents: Vec<TaskResult> = task
                        .uses
                        .iter()
                        .map(|u| match &states[index(u)] {
                            State::Done(r) => r.clone(),
                            _ => unreachable!("checked ready"),
                        })
                        .collect();
                    states[i] = State::Running;
                    running += 1;
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let refs: Vec<&TaskResult> = parents.iter().collect();
                        let outcome = execute(ctx, task, &refs, reporter, scope);
                        let _ = tx.send((i, outcome));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let (i, outcome) = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(_) => continue,
            };
            running -= 1;
            let name = pipeline.tasks[i].name.to_string();
            let (state, status, duration, key) = match outcome {
                TaskOutcome::Cached { result, key, saved } => {
                    summary.cached += 1;
                    summary.saved_ms += saved.as_millis() as u64;
                    (State::Done(result), TaskStatus::Cached, Duration::ZERO, key)
                }
                TaskOutcome::Ran {
                    result,
                    key,
                    duration,
                } => {
                    summary.ran += 1;
                    (State::Done(result), TaskStatus::Ran, duration, key)
                }
                TaskOutcome::Failed { key, duration } => {
                    summary.failed += 1;
                    (State::Failed, TaskStatus::Failed, duration, key)
                }
            };
            states[i] = state;
            summary.tasks.insert(
                name,
                TaskSummary {
                    status,
                    duration_ms: duration.as_millis() as u64,
                    key: Some(key.to_hex()),
                    skip_reason: None,
                },
            );
        }
    });
    // The scope has joined every background restore and publication by now.
    summary.restored_bytes = ctx.transfers.restored_bytes.load(Ordering::Relaxed);
    summary.pushed_bytes = ctx.transfers.pushed_bytes.load(Ordering::Relaxed);
    summary.interrupted = ctx.interrupted.load(Ordering::SeqCst);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    reporter.event(&Event::RunFinished(summary.clone()));
    summary
}
