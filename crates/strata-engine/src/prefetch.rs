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

/// The verdicts so far, which the threads of later tasks wait on.
struct Board {
    verdicts: Mutex<Vec<Option<Verdict>>>,
    changed: Condvar,
}

impl Board {
    fn set(&self, task: usize, verdict: Verdict) {
        self.verdicts.lock().expect("board lock")[task] = Some(verdict);
        self.changed.notify_all();
    }

    /// The verdicts of `tasks`, once they are all in.
    fn wait(&self, tasks: &[usize]) -> Vec<Verdict> {
        let mut verdicts = self.verdicts.lock().expect("board lock");
        loop {
            if tasks.iter().all(|&t| verdicts[t].is_some()) {
                return tasks
                    .iter()
                    .map(|&t| verdicts[t].clone().expect("checked"))
                    .collect();
            }
            verdicts = self.changed.wait(verdicts).expect("board lock");
        }
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
    let board = Board {
        verdicts: Mutex::new(
            wanted
                .iter()
                .map(|&w| (!w).then_some(Verdict::Unknown))
                .collect(),
        ),
        changed: Condvar::new(),
    };
    let downloads = Downloads {
        scope,
        ctx,
        reporter,
        offers: Mutex::new(HashMap::new()),
        needed: Mutex::new(Vec::new()),
    };
    std::thread::scope(|decisions| {
        for i in (0..pipeline.tasks.len()).filter(|&i| wanted[i]) {
            let (board, downloads) = (&board, &downloads);
            decisions.spawn(move || {
                let verdict = decide(ctx, reporter, board, downloads, i);
                board.set(i, verdict);
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
    let index = |n: &strata_pipeline::TaskName| {
        pipeline
            .tasks
            .iter()
            .position(|t| &t.name == n)
            .expect("validated reference")
    };
    // Its key reads what the tasks it uses and whose values it reads hand on; artifacts and
    // conditions may read any task it depends on.
    let keyed = task.uses.len() + task.value_deps.len();
    let all: Vec<usize> = (task.uses.iter().chain(&task.value_deps))
        .chain(task.after.iter().chain(&task.status_deps))
        .map(index)
        .collect();
    let all_verdicts = board.wait(&all);
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
