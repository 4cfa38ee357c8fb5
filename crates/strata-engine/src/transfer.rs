//! Traffic with the shared caches during a run. A remote hit is reported at once (its key and
//! layer digest are all its children need to compute their keys) while its layer downloads in
//! the background, so the layers of a stack arrive in parallel; a task that has to run waits
//! only for the layers under it. A task that ran is published in the background too. The
//! scheduler's thread scope joins all of it before the run is reported finished.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;
use std::time::Instant;

use strata_cache::{BackendError, EntryDocument};
use strata_key::LayerDigest;
use strata_store::NewEntry;

use crate::context::RunContext;
use crate::events::{Event, Reporter};

/// One layer being restored: done once `result` is set.
#[derive(Default)]
struct Slot {
    result: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

impl Slot {
    fn finish(&self, result: Result<(), String>) {
        *self.result.lock().expect("slot lock") = Some(result);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<(), String> {
        let mut r = self.result.lock().expect("slot lock");
        while r.is_none() {
            r = self.done.wait(r).expect("slot lock");
        }
        r.clone().expect("set before notify")
    }
}

/// Restores in flight, and byte counts for the summary.
#[derive(Default)]
pub(crate) struct Transfers {
    slots: Mutex<HashMap<LayerDigest, Arc<Slot>>>,
    pub(crate) restored_bytes: AtomicU64,
    pub(crate) pushed_bytes: AtomicU64,
    failed: Mutex<FailedRestores>,
}

/// What the restores that failed in this run leave behind.
#[derive(Default)]
struct FailedRestores {
    /// Their tasks, in the current pass: the run goes again to build them.
    tasks: Vec<String>,
    /// Their entries (key, shared cache), for any reason: the next pass builds their tasks
    /// rather than try them again.
    entries: std::collections::HashSet<(strata_key::CacheKey, String)>,
    /// The layers they promised: a result resting on one is not carried to the next pass.
    layers: std::collections::HashSet<LayerDigest>,
}

pub(crate) fn warn_with<'a>(reporter: &'a dyn Reporter) -> impl Fn(&BackendError) + Sync + 'a {
    move |e: &BackendError| {
        reporter.event(&Event::Warning {
            message: format!("{e}; carrying on without it"),
        })
    }
}

impl Transfers {
    /// Whether `stack` rests on a layer a shared cache failed to give in this run.
    pub(crate) fn rests_on_failed(&self, stack: &[strata_key::ParentInput]) -> bool {
        let failed = self.failed.lock().expect("restores lock");
        stack.iter().any(|p| failed.layers.contains(&p.layer))
    }

    /// Whether a restore of the current pass has failed.
    pub(crate) fn restore_failed(&self) -> bool {
        !self.failed.lock().expect("restores lock").tasks.is_empty()
    }

    /// The tasks whose restore failed in the pass that just ended, which starts another: the
    /// slots of their layers are forgotten, so that a task that builds one is not told it is
    /// still broken.
    pub(crate) fn take_failed_restores(&self) -> Vec<String> {
        let failed = std::mem::take(&mut self.failed.lock().expect("restores lock").tasks);
        if !failed.is_empty() {
            let mut slots = self.slots.lock().expect("slots lock");
            slots.retain(|_, slot| matches!(*slot.result.lock().expect("slot lock"), Some(Ok(()))));
        }
        failed
    }

    /// Waits until every layer of `stack` is in the local cache.
    pub(crate) fn wait_for(
        &self,
        ctx: &RunContext<'_>,
        stack: &[LayerDigest],
    ) -> Result<(), String> {
        for layer in stack {
            if ctx.cache.layers().has(layer) {
                continue;
            }
            let slot = self.slots.lock().expect("slots lock").get(layer).cloned();
            match slot {
                Some(slot) => slot
                    .wait()
                    .map_err(|e| format!("layer {} could not be restored: {e}", layer.short()))?,
                None => return Err(format!("layer {} is not in the local cache", layer.short())),
            }
        }
        Ok(())
    }
}

/// Starts restoring a remote entry: its layer (unless already here), log and local entry.
pub(crate) fn start_restore<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env RunContext<'env>,
    reporter: &'env dyn Reporter,
    remote: usize,
    entry: EntryDocument,
) {
    let slot = Arc::new(Slot::default());
    let earlier = {
        let mut slots = ctx.transfers.slots.lock().expect("slots lock");
        match slots.get(&entry.layer) {
            Some(existing) => Some(Arc::clone(existing)),
            None => {
                slots.insert(entry.layer, Arc::clone(&slot));
                None
            }
        }
    };
    scope.spawn(move || {
        // Another task restores the same layer: let it finish, then only write the entry.
        if let Some(earlier) = &earlier {
            let _ = earlier.wait();
        }
        let start = Instant::now();
        let progress = |bytes: u64| {
            reporter.event(&Event::RestoreProgress {
                task: entry.task.clone(),
                bytes,
                total: entry.archive.size,
            })
        };
        let result = crate::fetch::fetch(
            ctx.shared,
            ctx.cache,
            remote,
            &entry,
            &ctx.pipeline_id(),
            &progress,
        );
        let outcome = match result {
            Ok(restored) => {
                ctx.transfers
                    .restored_bytes
                    .fetch_add(restored.bytes, Ordering::Relaxed);
                reporter.event(&Event::LayerFetched {
                    task: entry.task.clone(),
                    layer: entry.layer.to_hex(),
                    bytes: restored.bytes,
                    duration_ms: start.elapsed().as_millis() as u64,
                });
                Ok(())
            }
            Err(e) => {
                // A broken entry (a blob missing or corrupt) is not asked for again for a while;
                // a server that failed to answer may be back next time.
                let location = ctx.shared.caches()[remote].location();
                let remembered = e.condemns_entry()
                    && ctx
                        .cache
                        .index()
                        .mark_unusable(&entry.key, &location)
                        .is_ok();
                let next = if remembered {
                    "; it is built instead, and the entry is not used again for a day"
                } else {
                    "; it is built instead"
                };
                reporter.event(&Event::Warning {
                    message: format!(
                        "failed to restore `{}` from the shared cache: {e}{next}",
                        entry.task
                    ),
                });
                let mut failed = ctx.transfers.failed.lock().expect("restores lock");
                failed.tasks.push(entry.task.clone());
                failed.entries.insert((entry.key, location.clone()));
                failed.layers.insert(entry.layer);
                drop(failed);
                Err(format!("{e}{next}"))
            }
        };
        if earlier.is_none() {
            slot.finish(outcome);
        }
    });
}

/// Publishes an entry to the writable shared caches in the background, then the tool cache the
/// task wrote, if any.
pub(crate) fn start_publish<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env RunContext<'env>,
    reporter: &'env dyn Reporter,
    entry: NewEntry,
    tool_cache: Option<strata_store::ToolCacheRecord>,
) {
    scope.spawn(move || {
        let start = Instant::now();
        let warn = warn_with(reporter);
        let published = ctx.shared.publish(ctx.cache, &entry, &warn);
        ctx.transfers
            .pushed_bytes
            .fetch_add(published.bytes, Ordering::Relaxed);
        if published.caches > 0 {
            reporter.event(&Event::TaskPushed {
                task: entry.task.clone(),
                bytes: published.bytes,
                caches: published.caches,
                duration_ms: start.elapsed().as_millis() as u64,
            });
        }
        if let Some(record) = &tool_cache {
            crate::tool_cache::publish(ctx, &entry.task, entry.key, record, reporter, &warn);
        }
    });
}

/// Looks a key up in the remotes, warning about (and then skipping) unreachable ones, and once
/// per remote about entries ignored because they are not signed by a key it is trusted with.
pub(crate) fn remote_lookup(
    ctx: &RunContext<'_>,
    key: &strata_key::CacheKey,
    reporter: &dyn Reporter,
) -> Option<(usize, EntryDocument)> {
    if ctx.shared.is_empty() {
        return None;
    }
    let warn = warn_with(reporter);
    ctx.shared.lookup(
        key,
        // An index that cannot say is not a reason to skip the shared cache.
        &|location| {
            ctx.transfers
                .failed
                .lock()
                .expect("restores lock")
                .entries
                .contains(&(*key, location.to_string()))
                || ctx
                    .cache
                    .index()
                    .is_unusable(key, location)
                    .unwrap_or(false)
        },
        &|layer| ctx.cache.layers().has(layer),
        &warn,
        &|refused: &strata_cache::UntrustedEntry| {
            reporter.event(&Event::Warning {
                message: refused.to_string(),
            })
        },
    )
}
