//! Prefetch: at the start of a pass, every wanted task whose key can be known from what the
//! caches hold is looked up at once — without waiting for `after:` ordering, `-j` slots or the
//! tasks ahead of it — and the layers that tasks which must run will need start downloading
//! before those tasks' turn comes.
//!
//! A task's key is known when the tasks it `use`s (and whose values it reads) are hits: a hit
//! hands on its entry's layer digest and env, as it does when the dispatcher restores it
//! (`plan.rs` computes the same ahead of a run). Each task is decided on its own thread as
//! soon as what it depends on is decided; none waits for another's download, except a task
//! with a `filter`, whose key reads the layers under it (`layer_parts.rs`): those are fetched
//! first.
//!
//! What is downloaded, in order:
//! 1. the layers under a task that must run (a miss, `cache: false`, or a key that depends on
//!    one): they stand between the run and that task's command, so they start the moment the
//!    task is known to run;
//! 2. once those have arrived, the layers only hits need (write-back into the local cache of a
//!    chain of hits nobody runs on), unless `--prefetch needed`: the run joins every restore
//!    before it ends, so these are fetched while the run is still busy rather than after.
//!
//! Correctness rests on `transfer.rs`: a prefetched restore takes the layer's slot like any
//! restore (a layer is downloaded once; a task never sees a partial layer, since `fetch.rs`
//! unpacks into `tmp/` and renames), and the entry it found is offered to the task, which takes
//! it when it looks its key up — the same entry it would have found. A prefetch that fails
//! before its task took the entry leaves the task to look its key up itself, as without
//! prefetch.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::thread::Scope;

use strata_cache::EntryDocument;
use strata_key::LayerDigest;
use strata_pipeline::{Parallel, TaskKind};

use crate::context::RunContext;
use crate::events::Reporter;
use crate::execute::{Found, find_entry, result_of};
use crate::inputs::{TaskResult, resolve};
use crate::transfer::{Restorer, restore};

/// What the prefetch downloads ahead of the tasks (`strata run --prefetch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefetchPolicy {
    /// The layers tasks that must run need, then those only hits need.
    #[default]
    All,
    /// Only the layers tasks that must run need; a hit's own layer downloads when it starts.
    Needed,
    /// Nothing: each task is looked up when it starts.
    Off,
}

/// What the prefetch concluded about one task.
#[derive(Debug, Clone)]
enum Verdict {
    /// A hit (or a task that stands in, such as a `git/clone` of the workspace): what it hands
    /// the tasks that use it.
    Hands(Box<TaskResult>),
    /// It runs: a miss, `cache: false`, or a key that depends on a task that runs.
    Runs,
    /// It will not run, or the prefetch cannot say: its condition is false, an expression
    /// fails, a layer under it did not arrive, or the prefetch stopped.
    Unknown,
}

/// How many tasks are decided at once: lookups wait on the network and keys on layers, but a
/// pipeline of a thousand tasks must not start a thousand threads.
const DECIDERS: usize = 16;

/// The verdicts so far, and which tasks are ready to be decided (everything they depend on is).
struct Board {
    state: Mutex<BoardState>,
    changed: Condvar,
}

struct BoardState {
    verdicts: Vec<Option<Verdict>>,
    /// Per task, how many of the tasks it depends on are not decided yet.
    waiting_on: Vec<usize>,
    /// Per task, the tasks that depend on it.
    dependents: Vec<Vec<usize>>,
    ready: Vec<usize>,
    /// Tasks not decided yet (taken or not).
    left: usize,
}

impl Board {
    /// `deps[i]`: the tasks task `i` depends on; `None` for a task not wanted (decided as
    /// unknown from the start).
    fn new(deps: Vec<Option<Vec<usize>>>) -> Board {
        let n = deps.len();
        let mut state = BoardState {
            verdicts: vec![None; n],
            waiting_on: vec![0; n],
            dependents: vec![Vec::new(); n],
            ready: Vec::new(),
            left: 0,
        };
        for (i, d) in deps.iter().enumerate() {
            if d.is_none() {
                state.verdicts[i] = Some(Verdict::Unknown);
            }
        }
        for (i, d) in deps.into_iter().enumerate() {
            let Some(mut d) = d else { continue };
            d.sort_unstable();
            d.dedup();
            state.left += 1;
            for j in d {
                if state.verdicts[j].is_none() {
                    state.waiting_on[i] += 1;
                    state.dependents[j].push(i);
                }
            }
            if state.waiting_on[i] == 0 {
                state.ready.push(i);
            }
        }
        // Decided in file order where the order is free.
        state.ready.reverse();
        Board {
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    fn set(&self, task: usize, verdict: Verdict) {
        let mut state = self.state.lock().expect("board lock");
        state.verdicts[task] = Some(verdict);
        state.left -= 1;
        for j in std::mem::take(&mut state.dependents[task]) {
            state.waiting_on[j] -= 1;
            if state.waiting_on[j] == 0 {
                state.ready.push(j);
            }
        }
        self.changed.notify_all();
    }

    /// The next task to decide, waiting while every undecided one waits on another; `None`
    /// once none is left to take.
    fn take(&self) -> Option<usize> {
        let mut state = self.state.lock().expect("board lock");
        loop {
            if let Some(i) = state.ready.pop() {
                return Some(i);
            }
            if state.left == 0 {
                return None;
            }
            // Every task left is being decided or waits on one that is: wait for a verdict.
            state = self.changed.wait(state).expect("board lock");
        }
    }

    /// The verdicts of `tasks`, all decided (a task is taken only once they are).
    fn verdicts(&self, tasks: &[usize]) -> Vec<Verdict> {
        let state = self.state.lock().expect("board lock");
        tasks
            .iter()
            .map(|&t| {
                state.verdicts[t]
                    .clone()
                    .expect("decided before its dependents")
            })
            .collect()
    }
}

/// A shared hit's entry, by layer, and whether the prefetch started its restore.
struct Offer {
    remote: usize,
    entry: EntryDocument,
    started: bool,
}

/// The shared hits found so far, and the restores the prefetch started for tasks that run.
struct Downloads<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env RunContext<'env>,
    reporter: &'env dyn Reporter,
    offers: Mutex<HashMap<LayerDigest, Offer>>,
    needed: Mutex<Vec<LayerDigest>>,
}

impl<'scope, 'env> Downloads<'scope, 'env> {
    fn stopped(&self) -> bool {
        self.ctx.transfers.prefetch_stopped()
            || self
                .ctx
                .interrupted
                .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `needed_by` (a task that runs on them or whose key reads them; `None`: write-back) needs
    /// `layers`: starts the restores of those a shared cache offers and nobody restores yet.
    fn start(&self, layers: impl IntoIterator<Item = LayerDigest>, needed_by: Option<&str>) {
        for layer in layers {
            if self.stopped() {
                return;
            }
            let (remote, entry) = {
                let mut offers = self.offers.lock().expect("offers lock");
                let Some(offer) = offers.get_mut(&layer) else {
                    continue;
                };
                if offer.started {
                    continue;
                }
                offer.started = true;
                (offer.remote, offer.entry.clone())
            };
            // Here already (an earlier run's): the task's own restore writes its entry back.
            if self.ctx.cache.layers().has(&layer) {
                continue;
            }
            // A lease on the layer being restored, for a concurrent prune.
            let _ = self.ctx.run_dir.note_layer(&layer);
            let by = Restorer::Prefetch {
                needed_by: needed_by.map(str::to_string),
            };
            if restore(self.scope, self.ctx, self.reporter, remote, entry, by)
                && needed_by.is_some()
            {
                self.needed.lock().expect("needed lock").push(layer);
            }
        }
    }
}

/// Starts the prefetch of this pass on `scope`, unless there is nothing it could fetch.
pub(crate) fn start<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env RunContext<'env>,
    reporter: &'env dyn Reporter,
) {
    ctx.transfers.begin_prefetch();
    if ctx.options.prefetch == PrefetchPolicy::Off || ctx.options.no_cache || ctx.shared.is_empty()
    {
        return;
    }
    scope.spawn(move || prefetch(scope, ctx, reporter));
}

fn prefetch<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env RunContext<'env>,
    reporter: &'env dyn Reporter,
) {
    let pipeline = ctx.pipeline;
    let wanted = if ctx.options.targets.is_empty() {
        vec![true; pipeline.tasks.len()]
    } else {
        pipeline.closure(&ctx.options.targets)
    };
    let index = |n: &strata_pipeline::TaskName| task_index(pipeline, n);
    let board = Board::new(
        pipeline
            .tasks
            .iter()
            .zip(&wanted)
            .map(|(task, &w)| w.then(|| task_dependencies(task).map(index).collect()))
            .collect(),
    );
    let downloads = Downloads {
        scope,
        ctx,
        reporter,
        offers: Mutex::new(HashMap::new()),
        needed: Mutex::new(Vec::new()),
    };
    let deciders = wanted.iter().filter(|&&w| w).count().min(DECIDERS);
    std::thread::scope(|decisions| {
        for _ in 0..deciders {
            let (board, downloads) = (&board, &downloads);
            decisions.spawn(move || {
                while let Some(i) = board.take() {
                    let verdict = decide(ctx, reporter, board, downloads, i);
                    board.set(i, verdict);
                }
            });
        }
    });
    if ctx.options.prefetch != PrefetchPolicy::All || downloads.stopped() {
        return;
    }
    // Write-back comes second: it must not take bandwidth from the layers a command waits for.
    let needed = downloads.needed.lock().expect("needed lock").clone();
    ctx.transfers.settle(&needed);
    let rest: Vec<LayerDigest> = downloads
        .offers
        .lock()
        .expect("offers lock")
        .iter()
        .filter(|(_, o)| !o.started)
        .map(|(layer, _)| *layer)
        .collect();
    downloads.start(rest, None);
}

/// The position of the task named `name` (a reference the pipeline's validation checked).
fn task_index(pipeline: &strata_pipeline::Pipeline, name: &strata_pipeline::TaskName) -> usize {
    pipeline
        .tasks
        .iter()
        .position(|t| &t.name == name)
        .expect("validated reference")
}

/// What a task's verdict depends on: the tasks whose results its key reads first (`use`,
/// values), then those its artifacts and conditions may read.
fn task_dependencies(
    task: &strata_pipeline::Task,
) -> impl Iterator<Item = &strata_pipeline::TaskName> {
    (task.uses.iter().chain(&task.value_deps)).chain(task.after.iter().chain(&task.status_deps))
}

/// Decides task `i` once what it depends on is decided, starting the restores of the layers
/// it needs if it runs.
fn decide(
    ctx: &RunContext<'_>,
    reporter: &dyn Reporter,
    board: &Board,
    downloads: &Downloads<'_, '_>,
    i: usize,
) -> Verdict {
    let pipeline = ctx.pipeline;
    let task = &pipeline.tasks[i];
    let index = |n: &strata_pipeline::TaskName| task_index(pipeline, n);
    // Its key reads what the tasks it uses and whose values it reads hand on; artifacts and
    // conditions may read any task it depends on.
    let keyed = task.uses.len() + task.value_deps.len();
    let all: Vec<usize> = task_dependencies(task).map(index).collect();
    let all_verdicts = board.verdicts(&all);
    let verdicts = &all_verdicts[..keyed];
    if downloads.stopped() {
        return Verdict::Unknown;
    }
    let hands = |n: &strata_pipeline::TaskName| {
        let j = all.iter().position(|&j| j == index(n))?;
        match &all_verdicts[j] {
            Verdict::Hands(r) => Some(&**r),
            _ => None,
        }
    };
    // What its known parents stand on: needed if it runs.
    let known_stacks = || {
        task.uses
            .iter()
            .filter_map(hands)
            .flat_map(|r| r.stack.iter().map(|p| p.layer))
            .collect::<Vec<_>>()
    };
    let name = task.name.as_str();
    if verdicts.iter().any(|v| matches!(v, Verdict::Unknown)) {
        return Verdict::Unknown;
    }
    if verdicts.iter().any(|v| matches!(v, Verdict::Runs))
        || matches!(task.parallel, Some(Parallel::Pending(_)))
    {
        // Its key waits for a task that runs (or for its expansion): it most likely runs too.
        downloads.start(known_stacks(), Some(name));
        return Verdict::Runs;
    }
    let Some(values) = crate::inputs::values_for(task, hands) else {
        downloads.start(known_stacks(), Some(name));
        return Verdict::Runs;
    };
    if task.condition.is_some() {
        let (scope, _) = crate::inputs::task_scopes(ctx, task, &values);
        if !matches!(crate::conditions::if_allows(task, &scope), Ok(true)) {
            return Verdict::Unknown;
        }
    }
    let parents: Vec<&TaskResult> = task.uses.iter().filter_map(hands).collect();
    // A filtered task's key reads the layers under it: they come first.
    if task.filter.is_some() {
        downloads.start(known_stacks(), Some(name));
    }
    let resolved = resolve(ctx, task, &parents, &values);
    if resolved.error.is_some() || resolved.deferred.is_some() {
        return Verdict::Unknown;
    }
    match &task.kind {
        TaskKind::Source(_) => {
            return Verdict::Hands(Box::new(crate::execute::source_result(
                ctx, task, &resolved,
            )));
        }
        TaskKind::Called(_) => {
            return Verdict::Hands(Box::new(crate::packages::called_result(
                task, &parents, &values,
            )));
        }
        _ => {}
    }
    let stack = || resolved.stack.iter().map(|p| p.layer).collect::<Vec<_>>();
    match find_entry(ctx, resolved.cache, &resolved.key, reporter) {
        Some(Found::Local(entry)) => Verdict::Hands(Box::new(result_of(
            task,
            &resolved,
            entry.layer,
            &entry.env,
        ))),
        Some(Found::Shared { remote, entry }) => {
            let result = result_of(task, &resolved, entry.layer, &entry.env);
            ctx.transfers.offer(resolved.key, remote, entry.clone());
            downloads
                .offers
                .lock()
                .expect("offers lock")
                .entry(entry.layer)
                .or_insert(Offer {
                    remote,
                    entry,
                    started: false,
                });
            Verdict::Hands(Box::new(result))
        }
        None => {
            downloads.start(stack(), Some(name));
            Verdict::Runs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of deciders over a DAG: every task is taken once, only after everything it
    /// depends on is decided, and the pool ends when all are.
    #[test]
    fn the_board_hands_out_each_task_once_after_its_dependencies() {
        // 0 <- 1 <- 3, 0 <- 2 <- 3, 4 alone, 5 not wanted, 6 <- 5 (an unwanted dependency is
        // decided from the start).
        let deps = vec![
            Some(vec![]),
            Some(vec![0]),
            Some(vec![0, 0]),
            Some(vec![1, 2]),
            Some(vec![]),
            None,
            Some(vec![5]),
        ];
        let board = Board::new(deps.clone());
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    while let Some(i) = board.take() {
                        for &d in deps[i].as_ref().unwrap() {
                            assert!(
                                board.state.lock().unwrap().verdicts[d].is_some(),
                                "{i} taken before {d} was decided"
                            );
                        }
                        order.lock().unwrap().push(i);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        board.set(i, Verdict::Runs);
                    }
                });
            }
        });
        let mut order = order.into_inner().unwrap();
        order.sort_unstable();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 6]);
        assert!(board.take().is_none());
    }
}
