//! Traffic with the shared caches during a run. A remote hit is reported at once (its key and
//! layer digest are all its children need to compute their keys) while its layer downloads in
//! the background, so the layers of a stack arrive in parallel; a task that has to run waits
//! only for the layers under it. A task that ran is published in the background too. The
//! scheduler's thread scope joins all of it before the run is reported finished.
//!
//! A restore may also be started by the prefetch (`prefetch.rs`) before its task starts: it
//! takes the layer's slot like any restore, so a layer is downloaded once, and the entry it
//! offers is the one the task takes when it looks its key up (`take_offer`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;
use std::time::Instant;

use strata_cache::{BackendError, EntryDocument};
use strata_key::{CacheKey, LayerDigest};
use strata_store::NewEntry;

use crate::context::RunContext;
use crate::events::{Event, Reporter};

/// One layer being restored: done once `result` is set.
struct Slot {
    /// The entry whose restore this is: a task that restores the same entry leaves the
    /// download, its events and its failure to the slot's owner.
    key: CacheKey,
    result: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

impl Slot {
    fn new(key: CacheKey) -> Slot {
        Slot {
            key,
            result: Mutex::new(None),
            done: Condvar::new(),
        }
    }

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
    /// Entries the prefetch found in a shared cache in this pass, by key.
    prefetched: Mutex<HashMap<CacheKey, Prefetched>>,
    /// Set when the pass stops starting tasks (it is over, or `--fail-fast` stopped it): the
    /// prefetch starts nothing new.
    prefetch_stopped: AtomicBool,
    /// Set once the run has said that layers cannot be restored as images here.
    images_unavailable_said: AtomicBool,
}

/// An entry the prefetch found, and whether its task has taken it.
enum Prefetched {
    /// Found, its restore started or to be started; no task has looked its key up yet.
    Offered {
        remote: usize,
        entry: Box<EntryDocument>,
    },
    /// A task took it: the restore is that task's now, and its failure the task's.
    Taken,
    /// Its restore failed before a task took it: the task looks its key up as it would have.
    Failed,
}

/// Who started a restore, which decides what its failure means.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Restorer {
    /// The task, once it found the entry: a failure defers what rests on the layer, and the
    /// run goes again to build it (`scheduler.rs`).
    Task,
    /// The prefetch, before the task started: a failure is the task's only once it took the
    /// entry; before that the task looks its key up itself, as without prefetch.
    Prefetch {
        /// The first task found to need the layer: one that runs on it, or a filtered task
        /// whose key reads it (`None`: only hits need it).
        needed_by: Option<String>,
    },
}

/// What the restores that failed in this run leave behind.
#[derive(Default)]
struct FailedRestores {
    /// Their tasks, in the current pass: the run goes again to build them.
    tasks: Vec<String>,
    /// Their entries (key, shared cache), for any reason: the next pass builds their tasks
    /// rather than try them again.
    entries: std::collections::HashSet<(CacheKey, String)>,
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

    /// A pass begins: nothing is offered yet, and the prefetch may start.
    pub(crate) fn begin_prefetch(&self) {
        self.prefetched.lock().expect("prefetch lock").clear();
        self.prefetch_stopped.store(false, Ordering::SeqCst);
    }

    /// The pass starts no task any more: the prefetch starts nothing new either.
    pub(crate) fn stop_prefetch(&self) {
        self.prefetch_stopped.store(true, Ordering::SeqCst);
    }

    /// True the first time only: whether to tell the user that layer images are unavailable.
    pub(crate) fn note_images_unavailable(&self) -> bool {
        !self.images_unavailable_said.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn prefetch_stopped(&self) -> bool {
        self.prefetch_stopped.load(Ordering::SeqCst)
    }

    /// The prefetch found `entry` for `key` in shared cache `remote`.
    pub(crate) fn offer(&self, key: CacheKey, remote: usize, entry: EntryDocument) {
        self.prefetched
            .lock()
            .expect("prefetch lock")
            .entry(key)
            .or_insert(Prefetched::Offered {
                remote,
                entry: Box::new(entry),
            });
    }

    /// The entry the prefetch found for `key`, if `usable` accepts it and its restore has not
    /// failed: the task takes it (and with it its restore, under way or done).
    pub(crate) fn take_offer(
        &self,
        key: &CacheKey,
        usable: impl FnOnce(&EntryDocument) -> bool,
    ) -> Option<(usize, EntryDocument)> {
        let mut prefetched = self.prefetched.lock().expect("prefetch lock");
        let offered = prefetched.get_mut(key)?;
        match offered {
            Prefetched::Offered { entry, .. } if usable(entry) => {
                match std::mem::replace(offered, Prefetched::Taken) {
                    Prefetched::Offered { remote, entry } => Some((remote, *entry)),
                    _ => unreachable!("matched above"),
                }
            }
            _ => None,
        }
    }

    /// A task restores `key` itself and found the prefetch doing it: the restore is its own.
    fn mark_taken(&self, key: &CacheKey) {
        if let Some(p @ Prefetched::Offered { .. }) =
            self.prefetched.lock().expect("prefetch lock").get_mut(key)
        {
            *p = Prefetched::Taken;
        }
    }

    /// The prefetched restore of `key` failed: whether a task had taken it (else it never
    /// will: it looks the key up again). Called under the slots' lock.
    fn prefetch_failed(&self, key: &CacheKey) -> bool {
        let mut prefetched = self.prefetched.lock().expect("prefetch lock");
        match prefetched.get_mut(key) {
            Some(Prefetched::Taken) => true,
            Some(p) => {
                *p = Prefetched::Failed;
                false
            }
            None => false,
        }
    }

    /// Waits for the restores of `layers` that are under way; whatever their outcome.
    pub(crate) fn settle(&self, layers: &[LayerDigest]) {
        for layer in layers {
            let slot = self.slots.lock().expect("slots lock").get(layer).cloned();
            if let Some(slot) = slot {
                let _ = slot.wait();
            }
        }
    }

    /// Waits until every layer of `stack` is in the local cache.
    pub(crate) fn wait_for(
        &self,
        ctx: &RunContext<'_>,
        stack: &[LayerDigest],
    ) -> Result<(), String> {
        for layer in stack {
            if !ctx.cache.layers().has(layer) {
                let slot = self.slots.lock().expect("slots lock").get(layer).cloned();
                match slot {
                    Some(slot) => slot.wait().map_err(|e| {
                        format!("layer {} could not be restored: {e}", layer.short())
                    })?,
                    None => {
                        return Err(format!("layer {} is not in the local cache", layer.short()));
                    }
                }
            }
            ctx.layer_parts.check_claim(ctx.cache, layer)?;
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
    restore(scope, ctx, reporter, remote, entry, Restorer::Task);
}

/// Starts restoring a remote entry for `by`. False when the restore of this very entry is
/// already under way (or done): its owner downloads it once, and reports it.
pub(crate) fn restore<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env RunContext<'env>,
    reporter: &'env dyn Reporter,
    remote: usize,
    entry: EntryDocument,
    by: Restorer,
) -> bool {
    let slot = Arc::new(Slot::new(entry.key));
    let earlier = {
        let mut slots = ctx.transfers.slots.lock().expect("slots lock");
        match slots.get(&entry.layer) {
            // The same entry (a task that found what the prefetch found): one download, one
            // report; the task takes the restore, failure included. Under the slots' lock, so
            // that a prefetch failing now sees it taken.
            Some(existing) if existing.key == entry.key => {
                if by == Restorer::Task {
                    ctx.transfers.mark_taken(&entry.key);
                }
                return false;
            }
            Some(existing) => Some(Arc::clone(existing)),
            None => {
                slots.insert(entry.layer, Arc::clone(&slot));
                None
            }
        }
    };
    if let Restorer::Prefetch { needed_by } = &by {
        // The prefetch never waits behind another restore: the layer is on its way already.
        if earlier.is_some() {
            return false;
        }
        reporter.event(&Event::LayerPrefetching {
            task: entry.task.clone(),
            layer: entry.layer.to_hex(),
            bytes: entry.archive.size,
            needed_by: needed_by.clone(),
        });
    }
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
            crate::layer_images::restore_as_images(ctx, reporter),
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
                let taken = by == Restorer::Task || {
                    let mut slots = ctx.transfers.slots.lock().expect("slots lock");
                    let taken = ctx.transfers.prefetch_failed(&entry.key);
                    // Nobody took the entry: its slot goes, so that the task, which looks its
                    // key up again, restores it itself (or builds it), as without prefetch.
                    if !taken
                        && slots
                            .get(&entry.layer)
                            .is_some_and(|s| Arc::ptr_eq(s, &slot))
                    {
                        slots.remove(&entry.layer);
                    }
                    taken
                };
                Err(restore_failed(ctx, reporter, remote, &entry, &e, taken))
            }
        };
        if earlier.is_none() {
            slot.finish(outcome);
        }
    });
    true
}

/// What a failed restore leaves behind, and what it says. Not `taken`: a prefetch no task had
/// taken yet, which only warns (and remembers an entry that is broken).
fn restore_failed(
    ctx: &RunContext<'_>,
    reporter: &dyn Reporter,
    remote: usize,
    entry: &EntryDocument,
    e: &strata_cache::RestoreError,
    taken: bool,
) -> String {
    // A broken entry (a blob missing or corrupt) is not asked for again for a while;
    // a server that failed to answer may be back next time.
    let location = ctx.shared.caches()[remote].location();
    let condemned = e.condemns_entry();
    let remembered = condemned
        && ctx
            .cache
            .index()
            .mark_unusable(&entry.key, &location)
            .is_ok();
    if !taken {
        if condemned {
            let mut failed = ctx.transfers.failed.lock().expect("restores lock");
            failed.entries.insert((entry.key, location));
        }
        reporter.event(&Event::Warning {
            message: format!(
                "failed to prefetch `{}` from the shared cache: {e}; it is restored or built when it starts",
                entry.task
            ),
        });
        return format!("{e}; it was not prefetched");
    }
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
    failed.entries.insert((entry.key, location));
    failed.layers.insert(entry.layer);
    format!("{e}{next}")
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
    key: &CacheKey,
    reporter: &dyn Reporter,
) -> Option<(usize, EntryDocument)> {
    if ctx.shared.is_empty() {
        return None;
    }
    let warn = warn_with(reporter);
    let found = ctx.shared.lookup(
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
    );
    if let Some((_, entry)) = &found
        && entry.writes_workspace == Some(false)
    {
        ctx.layer_parts.claim_bare(entry.layer);
    }
    found
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_cache::{ArchiveRef, BlobRef, ENTRY_SCHEMA};
    use strata_key::{BaseId, ExportedEnv, KeyInputs, WorkspaceDigest};
    use strata_oci::OciDigest;

    use super::*;

    fn entry(command: &str) -> EntryDocument {
        let inputs = KeyInputs {
            version: strata_key::KEY_VERSION,
            base: BaseId::from_hash(blake3::hash(b"base")),
            parents: Vec::new(),
            workspace: WorkspaceDigest::from_hash(blake3::hash(b"ws")),
            env: BTreeMap::new(),
            command: command.to_string(),
            executor: "sandbox".to_string(),
            artifacts: Vec::new(),
        };
        EntryDocument {
            schema: ENTRY_SCHEMA,
            key: inputs.key(),
            task: command.into(),
            layer: LayerDigest::from_hash(blake3::hash(command.as_bytes())),
            archive: ArchiveRef {
                digest: OciDigest::of(b"archive"),
                size: 7,
                diff_id: OciDigest::of(b"tar"),
            },
            env: ExportedEnv::default(),
            inputs,
            workspace_files: Vec::new(),
            exit_code: 0,
            duration_ms: 1,
            log: BlobRef {
                digest: OciDigest::of(b"log"),
                size: 3,
            },
            created_at_ms: 1_700_000_000_000,
            writes_workspace: None,
            signatures: Vec::new(),
        }
    }

    #[test]
    fn an_offered_entry_is_taken_once_and_is_then_the_takers_failure() {
        let t = Transfers::default();
        let e = entry("make");
        t.offer(e.key, 1, e.clone());
        let (remote, taken) = t.take_offer(&e.key, |_| true).unwrap();
        assert_eq!((remote, taken.layer), (1, e.layer));
        assert!(t.take_offer(&e.key, |_| true).is_none());
        assert!(
            t.prefetch_failed(&e.key),
            "a failure after taking is the task's"
        );
    }

    #[test]
    fn an_entry_the_task_refuses_stays_offered() {
        let t = Transfers::default();
        let e = entry("make");
        t.offer(e.key, 0, e.clone());
        assert!(t.take_offer(&e.key, |_| false).is_none());
        assert!(t.take_offer(&e.key, |_| true).is_some());
    }

    #[test]
    fn a_prefetch_that_failed_before_it_was_taken_is_not_offered_any_more() {
        let t = Transfers::default();
        let e = entry("make");
        t.offer(e.key, 0, e.clone());
        assert!(!t.prefetch_failed(&e.key), "nobody had taken it");
        assert!(t.take_offer(&e.key, |_| true).is_none());
        // A key nobody offered: nobody took it either.
        assert!(!t.prefetch_failed(&entry("other").key));
    }

    #[test]
    fn a_task_restoring_the_entry_itself_takes_the_prefetch() {
        let t = Transfers::default();
        let e = entry("make");
        t.offer(e.key, 0, e.clone());
        t.mark_taken(&e.key);
        assert!(t.take_offer(&e.key, |_| true).is_none());
        assert!(t.prefetch_failed(&e.key));
    }

    #[test]
    fn a_new_pass_forgets_the_offers_and_may_prefetch_again() {
        let t = Transfers::default();
        let e = entry("make");
        t.offer(e.key, 0, e.clone());
        t.stop_prefetch();
        assert!(t.prefetch_stopped());
        t.begin_prefetch();
        assert!(!t.prefetch_stopped());
        assert!(t.take_offer(&e.key, |_| true).is_none());
    }
}
