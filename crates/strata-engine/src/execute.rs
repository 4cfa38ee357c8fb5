//! One task: key, lookup, and on a miss run it in the sandbox and commit its upper dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use std::thread::Scope;

use strata_cache::EntryDocument;
use strata_key::{CacheKey, ExportedEnv, LayerDigest, ParentInput};
use strata_pipeline::{Task, TaskKind};
use strata_sandbox::{Outcome, RunningSandbox, SandboxSpec};
use strata_store::{Entry, LogWriter, NewEntry, WrittenLog};

use crate::context::RunContext;
use crate::events::{Event, Reporter, TaskUsage};
use crate::expressions::TaskValues;
use crate::inputs::{CacheDecision, ResolvedInputs, TaskResult, WORKSPACE_DIR, resolve};
use crate::task_outputs::LayerSource;
use crate::transfer::{remote_lookup, start_publish, start_restore};
use strata_store::error_chain as chain;

pub(crate) enum TaskOutcome {
    Restored {
        result: TaskResult,
        key: CacheKey,
        saved: Duration,
    },
    Ran {
        result: TaskResult,
        key: CacheKey,
        duration: Duration,
        used: TaskUsage,
    },
    Failed {
        key: CacheKey,
        duration: Duration,
        used: TaskUsage,
        /// strata could not do its own part (the cache, the sandbox): the run exits 3.
        internal: bool,
    },
    /// A layer under it, promised by a shared cache, could not be restored: the task did not
    /// start, and the run goes again without that entry (`scheduler.rs`).
    Deferred { reason: String },
    /// Its `if:` is false: nothing ran, and its dependents are skipped too.
    ConditionFalse { because: String },
    /// A task that runs nothing and restores nothing: a `git/clone` served from the checkout
    /// or a calling task standing for its call's tasks. It succeeds with `result`.
    Stood {
        result: TaskResult,
        key: CacheKey,
        status: crate::events::TaskStatus,
    },
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A usable cache entry: in the local index, or in a shared cache.
pub(crate) enum Found {
    Local(Entry),
    Shared { remote: usize, entry: EntryDocument },
}

impl Found {
    pub(crate) fn layer(&self) -> LayerDigest {
        match self {
            Found::Local(e) => e.layer,
            Found::Shared { entry, .. } => entry.layer,
        }
    }

    pub(crate) fn env(&self) -> ExportedEnv {
        match self {
            Found::Local(e) => e.env.clone(),
            Found::Shared { entry, .. } => entry.env.clone(),
        }
    }

    fn duration(&self) -> Duration {
        match self {
            Found::Local(e) => e.duration,
            Found::Shared { entry, .. } => Duration::from_millis(entry.duration_ms),
        }
    }

    fn created_at(&self) -> SystemTime {
        match self {
            Found::Local(e) => e.created_at,
            Found::Shared { entry, .. } => {
                SystemTime::UNIX_EPOCH + Duration::from_millis(entry.created_at_ms)
            }
        }
    }

    /// `local`, or the location of the shared cache.
    pub(crate) fn source(&self, ctx: &RunContext<'_>) -> String {
        match self {
            Found::Local(_) => "local".to_string(),
            Found::Shared { remote, .. } => ctx.shared.caches()[*remote].location(),
        }
    }
}

/// The cached entry for this task, if it may be used: the local cache first, then the shared
/// caches in order. Its `cache` expressions are resolved with the run's scope.
pub(crate) fn usable_entry(
    ctx: &RunContext<'_>,
    task: &Task,
    key: &CacheKey,
    reporter: &dyn Reporter,
) -> Option<Found> {
    let decision = crate::inputs::cache_decision(task, &ctx.invocation.scope).ok()?;
    lookup(ctx, decision, key, reporter)
}

/// The cached entry for `key`, if `decision` lets the cache be used: the one the prefetch
/// found at the start of the run (`prefetch.rs`), whose restore is under way, or a lookup now.
fn lookup(
    ctx: &RunContext<'_>,
    decision: CacheDecision,
    key: &CacheKey,
    reporter: &dyn Reporter,
) -> Option<Found> {
    if decision.enabled && !ctx.options.no_cache {
        let usable = |entry: &EntryDocument| {
            let created = SystemTime::UNIX_EPOCH + Duration::from_millis(entry.created_at_ms);
            within_ttl(decision.ttl, created)
        };
        if let Some((remote, entry)) = ctx.transfers.take_offer(key, usable) {
            return Some(Found::Shared { remote, entry });
        }
    }
    find_entry(ctx, decision, key, reporter)
}

/// The local cache's entry for `key`, when its layer can be read here (leased by this run).
fn local_hit(
    ctx: &RunContext<'_>,
    key: &CacheKey,
    reporter: &dyn Reporter,
) -> Option<strata_store::Entry> {
    let entry = ctx
        .cache
        .index()
        .lookup_for_run(&ctx.run_dir, key)
        .ok()
        .flatten()?;
    readable_here(ctx, &entry, reporter).then_some(entry)
}

/// Whether the layer of a local entry can be read here. A layer kept as an erofs image that
/// this kernel does not mount (a cache moved to another machine) cannot: the entry is passed
/// over, with a warning, and the task is restored from a shared cache or built, as a directory.
fn readable_here(
    ctx: &RunContext<'_>,
    entry: &strata_store::Entry,
    reporter: &dyn Reporter,
) -> bool {
    // A directory opens as itself: only an image can fail here.
    match ctx.cache.layers().open(&entry.layer) {
        Ok(_) => true,
        Err(e) => {
            reporter.event(&Event::Warning {
                message: format!(
                    "the cached layer of `{}` is an erofs image this machine cannot mount ({}): it is restored or built again",
                    entry.task,
                    strata_store::error_chain(&e)
                ),
            });
            false
        }
    }
}

/// The cached entry for `key`, if `decision` lets the cache be used: the local cache first,
/// then the shared caches in order.
pub(crate) fn find_entry(
    ctx: &RunContext<'_>,
    decision: CacheDecision,
    key: &CacheKey,
    reporter: &dyn Reporter,
) -> Option<Found> {
    if !decision.enabled || ctx.options.no_cache {
        return None;
    }
    let fresh = |found: Found| fresh_enough(decision.ttl, &found).then_some(found);
    if let Some(entry) = local_hit(ctx, key, reporter)
        && let Some(found) = fresh(Found::Local(entry))
    {
        return Some(found);
    }
    let (remote, entry) = remote_lookup(ctx, key, reporter)?;
    fresh(Found::Shared { remote, entry })
}

/// Whether an entry is within the task's `cache.ttl`.
fn fresh_enough(ttl: Option<Duration>, found: &Found) -> bool {
    within_ttl(ttl, found.created_at())
}

fn within_ttl(ttl: Option<Duration>, created: SystemTime) -> bool {
    let Some(ttl) = ttl else {
        return true;
    };
    let age = SystemTime::now()
        .duration_since(created)
        .unwrap_or_default();
    age <= ttl
}

/// What a task that produced `entry_layer` and exported `own` hands on.
pub(crate) fn result_of(
    task: &Task,
    resolved: &ResolvedInputs,
    entry_layer: strata_key::LayerDigest,
    own: &ExportedEnv,
) -> TaskResult {
    let mut stack = resolved.stack.clone();
    stack.push(ParentInput {
        task: task.name.to_string(),
        layer: entry_layer,
    });
    TaskResult {
        stack,
        env: ExportedEnv::inherit(&resolved.inherited, own),
    }
}

pub(crate) fn execute<'scope, 'env>(
    ctx: &'env RunContext<'env>,
    task: &Task,
    parents: &[&TaskResult],
    values: &TaskValues,
    reporter: &'env dyn Reporter,
    scope: &'scope Scope<'scope, 'env>,
) -> TaskOutcome {
    if task.condition.is_some() {
        let (scope, _) = crate::inputs::task_scopes(ctx, task, values);
        match crate::conditions::if_allows(task, &scope) {
            Ok(true) => {}
            Ok(false) => {
                return TaskOutcome::ConditionFalse {
                    because: crate::conditions::if_false_reason(task),
                };
            }
            Err(error) => {
                let resolved = resolve(ctx, task, parents, values);
                reporter.event(&Event::failed_early(
                    task.name.to_string(),
                    format!("failed to evaluate its condition: {error}"),
                ));
                return TaskOutcome::Failed {
                    key: resolved.key,
                    duration: Duration::ZERO,
                    used: TaskUsage::default(),
                    internal: false,
                };
            }
        }
    }
    if matches!(&task.kind, TaskKind::Source(_) | TaskKind::Called(_)) {
        return stand_in(ctx, task, parents, values, reporter);
    }
    let resolved = resolve(ctx, task, parents, values);
    let key = resolved.key;
    if let Some(reason) = &resolved.deferred {
        return TaskOutcome::Deferred {
            reason: reason.clone(),
        };
    }
    if let Some(error) = &resolved.error {
        reporter.event(&Event::failed_early(
            task.name.to_string(),
            format!("failed to resolve an expression: {error}"),
        ));
        return TaskOutcome::Failed {
            key,
            duration: Duration::ZERO,
            used: TaskUsage::default(),
            internal: false,
        };
    }
    let mut found = lookup(ctx, resolved.cache, &key, reporter);
    // One execution per key on this machine: a concurrent run with the same key runs it, and
    // this one waits and then uses its result.
    // Dropped in reverse: the key's lock is let go before this run's note, so that a task
    // of this run that waits for the note never finds the lock still held.
    let mut _key_note = None;
    let mut _key_lock = None;
    if found.is_none() && resolved.cache.enabled && !ctx.options.no_cache {
        // First among this run's tasks (one with the same key runs it, this one takes its
        // result), then among processes, at the key's lock.
        let interrupted = || {
            reporter.event(&Event::failed_early(
                task.name.to_string(),
                "interrupted while waiting for another run of this task",
            ));
            TaskOutcome::Failed {
                key,
                duration: Duration::ZERO,
                used: TaskUsage::default(),
                internal: false,
            }
        };
        let Some(note) = KeyNote::take(ctx, key, task.name.as_str(), reporter) else {
            return interrupted();
        };
        _key_note = Some(note);
        let mut waiting = |first: bool| {
            if first {
                reporter.event(&Event::TaskWaiting {
                    task: task.name.to_string(),
                    why: "another strata process is running this task with the same key".into(),
                });
            }
            !ctx.interrupted.load(Ordering::SeqCst)
        };
        match ctx.cache.runs().lock_key(&key, &mut waiting) {
            Ok(Some(lock)) => {
                _key_lock = Some(lock);
                found = local_hit(ctx, &key, reporter)
                    .map(Found::Local)
                    .filter(|f| fresh_enough(resolved.cache.ttl, f));
            }
            Ok(None) => return interrupted(),
            // The lock only saves work: without it the task runs, as it always could.
            Err(e) => reporter.event(&Event::Warning {
                message: format!("could not take the lock of `{}`'s key: {e}", task.name),
            }),
        }
    }
    if let Some(found) = found {
        let saved = found.duration();
        // A restored task reports the tests it ran, as they were recorded.
        if let Some(results) = found.env().test_results {
            reporter.event(&Event::TaskTestResults {
                task: task.name.to_string(),
                results,
            });
        }
        if ctx.options.artifacts_dir.is_some() {
            ctx.artifacts.note(task, LayerSource::Layer(found.layer()));
        }
        reporter.event(&Event::TaskRestored {
            task: task.name.to_string(),
            key: key.to_hex(),
            layer: found.layer().to_hex(),
            saved_ms: ms(saved),
            from: found.source(ctx),
        });
        let result = result_of(task, &resolved, found.layer(), &found.env());
        match found {
            Found::Local(_) => ctx.run_dir.note_hit(key),
            Found::Shared { remote, entry } => {
                // A lease on the layer being restored, for a concurrent prune.
                let _ = ctx.run_dir.note_layer(&entry.layer);
                start_restore(scope, ctx, reporter, remote, entry);
            }
        }
        return TaskOutcome::Restored { result, key, saved };
    }
    // Why it missed is said before anything else of the task, but worked out (a comparison
    // with the recorded inputs of its latest entry: 50–100 ms over a 100k-file workspace) while
    // its layers arrive and its checkout view is built.
    let resolved = &resolved;
    std::thread::scope(|s| {
        let mut pending = Some(s.spawn(|| crate::miss::reasons(ctx, task, resolved)));
        let mut announce = || {
            if let Some(p) = pending.take() {
                reporter.event(&Event::TaskMissed {
                    task: task.name.to_string(),
                    key: key.to_hex(),
                    reasons: p
                        .join()
                        .unwrap_or_else(|_| vec!["its reasons could not be worked out".into()]),
                });
            }
        };
        run_missed(ctx, task, resolved, values, reporter, scope, &mut announce)
    })
}

/// The rest of [`execute`] for a task that missed: `announce` says so (once) before anything
/// else about the task is said.
fn run_missed<'scope, 'env>(
    ctx: &'env RunContext<'env>,
    task: &Task,
    resolved: &ResolvedInputs,
    values: &TaskValues,
    reporter: &'env dyn Reporter,
    scope: &'scope Scope<'scope, 'env>,
    announce: &mut dyn FnMut(),
) -> TaskOutcome {
    let key = resolved.key;
    if ctx.options.require_cached_parents
        && resolved.cache.enabled
        && !ctx.options.no_cache
        && !is_target(ctx, task)
    {
        announce();
        reporter.event(&Event::failed_early(
            task.name.to_string(),
            format!(
                "`{}` is in no cache, and --require-cached-parents forbids building it here: run the job that builds it first (its key is {})",
                task.name,
                key.short()
            ),
        ));
        return TaskOutcome::Failed {
            key,
            duration: Duration::ZERO,
            used: TaskUsage::default(),
            internal: false,
        };
    }
    let start = Instant::now();
    let mut used = TaskUsage::default();
    // `retry`: a failed attempt runs again, under the same key; only a passing one is cached.
    let attempts = task.retry.as_ref().map_or(1, |r| r.count.saturating_add(1));
    let mut attempt = 1;
    let mut retry_env = Vec::new();
    let ran = loop {
        let outcome = run_in_sandbox(
            ctx,
            task,
            resolved,
            reporter,
            Attempt {
                start: Instant::now(),
                extra_env: &retry_env,
                announce: &mut *announce,
            },
            scope,
            &mut used,
        );
        match outcome {
            Err(failure)
                if failure.kind == FailureKind::Task
                    && attempt < attempts
                    && !ctx.interrupted.load(Ordering::SeqCst)
                    && retry_allowed(ctx, task, values, reporter) =>
            {
                reporter.event(&Event::TaskRetrying {
                    task: task.name.to_string(),
                    attempt,
                    attempts,
                    reason: failure.reason,
                    exit_code: failure.exit_code,
                });
                retry_env = task
                    .retry
                    .as_ref()
                    .and_then(|r| r.action.as_deref())
                    .map(|action| {
                        let outputs = ctx
                            .run_dir
                            .path()
                            .join("tasks")
                            .join(task.name.as_str())
                            .join("outputs");
                        crate::task_outputs::retry_action_env(&outputs, action)
                    })
                    .unwrap_or_default();
                attempt += 1;
            }
            other => break other,
        }
    };
    // An attempt that failed before it started has not said it missed yet.
    announce();
    if attempt > 1 && ran.is_ok() {
        reporter.event(&Event::TaskPassedOnRetry {
            task: task.name.to_string(),
            attempt,
            attempts,
        });
    }
    match ran {
        Ok(result) => {
            if let Some(layer) = result.stack.last() {
                // In this run's lease, for a budget kept after it (`keep_budget` in the CLI).
                let _ = ctx.run_dir.note_layer(&layer.layer);
            }
            TaskOutcome::Ran {
                result,
                key,
                duration: start.elapsed(),
                used,
            }
        }
        Err(failure) if failure.kind == FailureKind::Deferred => TaskOutcome::Deferred {
            reason: failure.reason,
        },
        Err(mut failure) => {
            if failure.kind == FailureKind::Strata
                && failure.reason.contains("disk image is malformed")
            {
                failure.reason.push_str(&format!(
                    "; the cache index is damaged: move {} aside and run again",
                    ctx.cache.root().join("index.sqlite").display()
                ));
            }
            reporter.event(&Event::TaskFailed {
                task: task.name.to_string(),
                reason: failure.reason,
                exit_code: failure.exit_code,
                duration_ms: ms(start.elapsed()),
                log_tail: failure.log_tail,
                kept_upper: failure.kept_upper.map(|p| p.display().to_string()),
                errors: failure.errors,
                usage: used,
            });
            TaskOutcome::Failed {
                key,
                duration: start.elapsed(),
                used,
                internal: failure.kind == FailureKind::Strata,
            }
        }
    }
}

/// Whether `retry.if` lets a failed task run again (no `if`: it does). An expression that
/// cannot be evaluated stops the retries, said as a warning.
fn retry_allowed(
    ctx: &RunContext<'_>,
    task: &Task,
    values: &TaskValues,
    reporter: &dyn Reporter,
) -> bool {
    let Some(text) = task.retry.as_ref().and_then(|r| r.condition.as_ref()) else {
        return true;
    };
    let (scope, _) = crate::inputs::task_scopes(ctx, task, values);
    let verdict = strata_pipeline::expr::parse_template(&text.raw)
        .map_err(|e| e.message)
        .and_then(|t| t.evaluate(&scope).map_err(|e| e.message));
    match verdict {
        Ok(v) => v.truthy(),
        Err(e) => {
            reporter.event(&Event::Warning {
                message: format!(
                    "`{}`: `retry.if` could not be evaluated, not retrying: {e}",
                    task.name
                ),
            });
            false
        }
    }
}

/// One attempt of a task: when it started (its `timeout` counts from there) and what a
/// `retry.action` of the failed attempt before it adds to its env.
struct Attempt<'a> {
    start: Instant,
    extra_env: &'a [(String, String)],
    /// Says that the task missed (once per task), just before the first thing it does that
    /// the user sees.
    announce: &'a mut dyn FnMut(),
}

/// A task that runs nothing and restores nothing — a `git/clone` of the workspace, whose
/// dependents see the checkout (`sources.rs`) and get what the real package exports, or a
/// calling task, which hands on what its call's tasks produced.
fn stand_in(
    ctx: &RunContext<'_>,
    task: &Task,
    parents: &[&TaskResult],
    values: &TaskValues,
    reporter: &dyn Reporter,
) -> TaskOutcome {
    let resolved = resolve(ctx, task, parents, values);
    let (result, status, from) = match &task.kind {
        TaskKind::Source(_) => (
            source_result(ctx, task, &resolved),
            crate::events::TaskStatus::Workspace,
            "workspace",
        ),
        _ => (
            crate::packages::called_result(task, parents, values),
            crate::events::TaskStatus::Call,
            "call",
        ),
    };
    reporter.event(&Event::TaskRestored {
        task: task.name.to_string(),
        key: resolved.key.to_hex(),
        layer: String::new(),
        saved_ms: 0,
        from: from.into(),
    });
    TaskOutcome::Stood {
        result,
        key: resolved.key,
        status,
    }
}

/// What a `git/clone` of the workspace hands on: its parents' stack and env (it adds no layer),
/// and what the package exports.
pub(crate) fn source_result(
    ctx: &RunContext<'_>,
    task: &Task,
    resolved: &ResolvedInputs,
) -> TaskResult {
    TaskResult {
        stack: resolved.stack.clone(),
        env: ExportedEnv::inherit(&resolved.inherited, &clone_exports(ctx, task)),
    }
}

/// What the `git/clone` package exports (its `$RWX_CACHE_KEY_EXCLUDED_ENV` and values), from
/// the checkout.
fn clone_exports(ctx: &RunContext<'_>, task: &Task) -> ExportedEnv {
    let mut own = ExportedEnv::default();
    let TaskKind::Source(source) = &task.kind else {
        return own;
    };
    let resolved = crate::expressions::resolve_source(source, &ctx.invocation.scope);
    let source = resolved.as_ref().unwrap_or(source);
    let path = source.path.as_ref().map_or("./", |t| t.raw.as_str());
    let dir = path.trim_start_matches("./").trim_end_matches('/');
    own.values.insert(
        "git-dir-path".into(),
        if dir.is_empty() || dir == "." {
            ".git".into()
        } else {
            format!("{dir}/.git")
        },
    );
    let Some(c) = &ctx.checkout else {
        return own;
    };
    let repository = source
        .repository
        .as_ref()
        .map(|t| t.raw.trim().to_string())
        .filter(|r| !r.is_empty())
        .or_else(|| c.remotes.first().cloned())
        .unwrap_or_default();
    let name = crate::checkout::normalize_remote(&repository);
    let name: Vec<&str> = name.rsplit('/').take(2).collect();
    let git_ref = source
        .meta_ref
        .as_ref()
        .map(|t| t.raw.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| c.git_ref());
    let ref_name = git_ref
        .strip_prefix("refs/")
        .and_then(|r| r.split_once('/'))
        .map_or(git_ref.as_str(), |(_, n)| n)
        .to_string();
    let summary = c.message.lines().next().unwrap_or_default();
    let cut = |s: &str| s.chars().take(1024).collect::<String>();
    for (k, v) in [
        ("RWX_GIT_REPOSITORY_URL", repository.clone()),
        (
            "RWX_GIT_REPOSITORY_NAME",
            name.iter().rev().copied().collect::<Vec<_>>().join("/"),
        ),
        ("RWX_GIT_COMMIT_MESSAGE", cut(&c.message)),
        ("RWX_GIT_COMMIT_SUMMARY", cut(summary)),
        ("RWX_GIT_COMMITTER_NAME", c.committer_name.clone()),
        ("RWX_GIT_COMMITTER_EMAIL", c.committer_email.clone()),
        ("RWX_GIT_COMMIT_SHA", c.sha.clone()),
        ("RWX_GIT_REF", git_ref.clone()),
        ("RWX_GIT_REF_NAME", ref_name),
    ] {
        own.excluded.insert(k.into(), v);
    }
    own
}

struct Failure {
    kind: FailureKind,
    reason: String,
    exit_code: Option<i32>,
    log_tail: Vec<String>,
    kept_upper: Option<PathBuf>,
    /// What the task wrote into `$RWX_ERRORS`.
    errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// The task's command failed, or the task did something wrong (a bad export name).
    Task,
    /// strata itself could not do its part (the command may not have run).
    Strata,
    /// A layer under it could not be restored from a shared cache: not a failure of the task.
    Deferred,
}

impl Failure {
    fn of(kind: FailureKind, reason: impl std::fmt::Display) -> Failure {
        Failure {
            kind,
            reason: reason.to_string(),
            exit_code: None,
            log_tail: Vec::new(),
            kept_upper: None,
            errors: Vec::new(),
        }
    }

    /// The task did something wrong after its command passed (a bad export name).
    fn task(reason: impl std::fmt::Display) -> Failure {
        Failure::of(FailureKind::Task, reason)
    }

    /// strata itself could not do its part (the command may not have run).
    fn infra(reason: impl std::fmt::Display) -> Failure {
        Failure::of(FailureKind::Strata, reason)
    }

    /// A layer a shared cache promised did not arrive.
    fn deferred(reason: impl std::fmt::Display) -> Failure {
        Failure::of(FailureKind::Deferred, reason)
    }
}

fn run_in_sandbox<'scope, 'env>(
    ctx: &'env RunContext<'env>,
    task: &Task,
    resolved: &ResolvedInputs,
    reporter: &'env dyn Reporter,
    attempt: Attempt<'_>,
    scope: &'scope Scope<'scope, 'env>,
    used: &mut TaskUsage,
) -> Result<TaskResult, Failure> {
    let start = attempt.start;
    let name = task.name.to_string();
    // Layers restored from a shared cache may still be on their way.
    ctx.transfers
        .wait_for(ctx, &resolved.stack_layers())
        .map_err(Failure::deferred)?;
    let scratch = ctx.run_dir.path().join("tasks").join(&name);
    let mounts = ctx
        .cache
        .layers()
        .prepare(&scratch, &resolved.stack_layers())
        .map_err(|e| Failure::infra(chain(&e)))?;
    let outputs_dir = scratch.join("outputs");
    let _ = std::fs::remove_dir_all(&outputs_dir);
    for (dir, _) in SandboxSpec::OUTPUTS {
        let d = outputs_dir.join(dir);
        std::fs::create_dir_all(&d)
            .map_err(|e| Failure::infra(format!("failed to create {}: {e}", d.display())))?;
    }
    let dotenv = outputs_dir.join(crate::dotenv::DOTENV_FILE);
    std::fs::write(&dotenv, "")
        .map_err(|e| Failure::infra(format!("failed to create {}: {e}", dotenv.display())))?;
    let workspace = crate::checkout_view::WorkspaceMount::prepare(
        ctx,
        task,
        resolved,
        &mounts.lowerdirs,
        &mounts.upperdir,
        &scratch,
    )
    .map_err(Failure::infra)?;
    // Held until the task has ended: a `docker: true` daemon's data root is removed then.
    let docker = crate::services::docker_data(ctx, task, &scratch).map_err(Failure::infra)?;
    (attempt.announce)();
    // After the checkout view's directories are made in the upper dir: the tool cache's
    // contents go into them (`copy_tree` keeps a directory that exists).
    crate::tool_cache::seed(ctx, task, resolved, &mounts.upperdir, reporter);
    let spec = SandboxSpec {
        task: name.clone(),
        base: ctx.base_root.clone(),
        lowerdirs: workspace.lowerdirs.clone(),
        upperdir: mounts.upperdir.clone(),
        workdir: mounts.workdir.clone(),
        scratch: scratch.clone(),
        outputs_dir: outputs_dir.clone(),
        cwd: PathBuf::from(WORKSPACE_DIR),
        command: {
            let command = if crate::hooks::present(&mounts.lowerdirs) {
                crate::hooks::wrap(&resolved.command)
            } else {
                resolved.command.clone()
            };
            if crate::task_outputs::collects(&resolved.outputs) {
                crate::task_outputs::wrap(&command, &resolved.outputs)
            } else {
                command
            }
        },
        env: resolved
            .env
            .iter()
            .filter(|(k, _)| !attempt.extra_env.iter().any(|(e, _)| e == k))
            .chain(attempt.extra_env)
            .cloned()
            .chain(docker.as_ref().map(|d| d.env.clone()))
            .collect(),
        // `docker` is the opt-in of an RWX file: a daemon needs every capability.
        privileged: task.privileged || docker.is_some(),
        cgroups: Vec::new(), // the sandbox gives the task its cgroup
        background: resolved.background.clone(),
        binds: docker.iter().map(|d| d.bind.clone()).collect(),
        overlays: workspace.overlays.clone(),
    };
    reporter.event(&Event::TaskStarted {
        task: name.clone(),
        key: resolved.key.to_hex(),
        workspace: workspace.how.clone(),
    });
    // The log goes to a file in the task's scratch as it arrives: a task may print gigabytes.
    // Created before the task starts, so that a failure here leaves nothing running.
    let log_path = scratch.join("log");
    let log_writer = LogWriter::create(&log_path).map_err(|e| Failure::infra(chain(&e)))?;
    let mut sandbox =
        strata_sandbox::spawn(&ctx.options.exe, &spec).map_err(|e| Failure::infra(chain(&e)))?;
    if let Some(message) = sandbox.take_notice() {
        reporter.event(&Event::Warning { message });
    }
    let output = sandbox.take_output().expect("output taken once");
    // A larger pipe means fewer, larger reads and fewer wake-ups of the task and of strata
    // (the kernel caps it at /proc/sys/fs/pipe-max-size; the default 64 KiB is fine too).
    let _ = rustix::pipe::fcntl_setpipe_size(&output, crate::output::PIPE_BYTES);
    let killer = sandbox.killer();
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = done_tx.send(sandbox.wait());
    });
    let mut stopped_because = None;
    let mut kill_at: Option<Instant> = None;
    let (outcome, collected) = std::thread::scope(|s| {
        let secrets = &ctx.invocation.secret_values;
        let name = name.as_str();
        // Secrets never reach the terminal, the events or the saved log.
        let reader =
            s.spawn(move || crate::output::collect(s, output, log_writer, secrets, name, reporter));
        let outcome = loop {
            match done_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => break r,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Ok(strata_sandbox::Exit {
                        outcome: Outcome::SetupFailed("sandbox helper vanished".into()),
                        usage: Default::default(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stopped_because.is_none() {
                let reason = if ctx.interrupted.load(Ordering::SeqCst) {
                    Some("interrupted".to_string())
                } else if let Some(limit) = task.timeout
                    && start.elapsed() > limit
                {
                    Some(format!("timed out after {}", humanize(limit)))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    stopped_because = Some(reason);
                    // `terminate-grace-period-seconds`: SIGTERM first, SIGKILL when it is over.
                    match task.grace_period.filter(|g| !g.is_zero()) {
                        Some(grace) => {
                            killer.terminate();
                            kill_at = Some(Instant::now() + grace);
                        }
                        None => killer.kill(),
                    }
                }
            } else if let Some(at) = kill_at
                && Instant::now() >= at
            {
                killer.kill();
                kill_at = None;
            }
        };
        // Every process of the task is gone once the helper has exited, so the output ends.
        (outcome, reader.join().expect("output reader panicked"))
    });
    let _ = waiter.join();
    drop(docker);
    let checkout_changed = workspace.finish(ctx.workspace_watch.as_ref());
    let exit = outcome.map_err(|e| Failure::infra(chain(&e)))?;
    let (outcome, usage) = (exit.outcome, TaskUsage::from(exit.usage));
    *used = usage;
    // When the command failed, its own lines: a background process's (a Docker daemon's
    // shutdown, say) are in the log, not in the summary. When a process failed (or the task
    // was stopped), everything: the process's lines say why.
    let command_failed = stopped_because.is_none() && matches!(outcome, Outcome::Exited(_));
    let background = if command_failed {
        background_prefixes(resolved)
    } else {
        Vec::new()
    };
    let tail = || collected.tail.lines_skipping(&background);
    // Read whatever the command's status: a failed test run's report says what failed.
    let (test_results, warnings) =
        crate::test_results::read_files(&crate::task_outputs::test_result_files(&outputs_dir));
    for warning in warnings {
        reporter.event(&Event::Warning {
            message: format!("`{name}`: {warning}"),
        });
    }
    if let Some(results) = &test_results {
        reporter.event(&Event::TaskTestResults {
            task: name.clone(),
            results: results.clone(),
        });
    }
    let fail = |kind: FailureKind, reason: String, exit_code: Option<i32>| -> Failure {
        if let Some(dir) = &ctx.options.artifacts_dir {
            match crate::task_outputs::deliver_failed(&outputs_dir, &name, dir) {
                Ok(artifacts) if !artifacts.is_empty() => reporter.event(&Event::ArtifactsSaved {
                    task: name.clone(),
                    dir: dir.join(&name).display().to_string(),
                    artifacts,
                }),
                Ok(_) => {}
                Err(e) => reporter.event(&Event::Warning {
                    message: format!("could not copy the artifacts of `{name}`: {e}"),
                }),
            }
        }
        let kept = keep_upper(ctx, task, &mounts.upperdir);
        // An entry only records runs that passed: the failed run's log is kept for `strata logs`
        // (not when the disk is low: a log may be gigabytes).
        if let Ok(log) = &collected.log
            && !ctx.cache.runs().disk_is_low()
        {
            let _ = ctx.cache.history().keep_failed_log(
                &ctx.pipeline.path,
                task.name.as_str(),
                log.path(),
            );
        }
        let reason = if resolved.tree.files.is_empty() && !sees_workspace(ctx, task) {
            format!("{reason}; {}", no_workspace_hint(ctx))
        } else {
            reason
        };
        Failure {
            kind,
            reason,
            exit_code,
            log_tail: tail(),
            kept_upper: kept,
            errors: read_errors(&outputs_dir.join("errors")),
        }
    };
    let exit_code = match (outcome, stopped_because) {
        (_, Some(reason)) => return Err(fail(FailureKind::Task, reason, None)),
        (Outcome::SetupFailed(message), None) => {
            return Err(fail(
                FailureKind::Strata,
                format!("sandbox setup failed: {message}"),
                None,
            ));
        }
        (Outcome::BackgroundFailed(message), None) => {
            let reason = crate::services::explain_failure(task, message);
            return Err(fail(FailureKind::Task, reason, None));
        }
        // `outputs.execution-status.success-exit-codes`: 0 and these count as success.
        (Outcome::Exited(code), None)
            if code != 0 && !task.outputs.success_exit_codes.contains(&code) =>
        {
            return Err(fail(
                FailureKind::Task,
                format!("command exited with status {code}"),
                Some(code),
            ));
        }
        (Outcome::Exited(code), None) => code,
    };
    let missing = crate::task_outputs::missing_artifacts(&outputs_dir);
    if !missing.is_empty() {
        let named: Vec<String> = missing
            .iter()
            .map(|key| {
                let path = resolved
                    .outputs
                    .artifacts
                    .iter()
                    .find(|a| &a.key == key)
                    .map_or("", |a| a.path.raw.as_str());
                format!("`{key}` (`{path}`)")
            })
            .collect();
        return Err(fail(
            FailureKind::Task,
            format!("artifact {} not found after the command", named.join(", ")),
            Some(exit_code),
        ));
    }
    let log = collected
        .log
        .map_err(|e| Failure::infra(format!("failed to write the task's log: {}", chain(&e))))?;
    commit(
        ctx,
        task,
        resolved,
        Finished {
            scratch: &scratch,
            upper: &mounts.upperdir,
            outputs_dir: &outputs_dir,
            log,
            start,
            usage,
            exit_code,
            test_results,
            checkout_changed,
        },
        reporter,
        scope,
    )
}

/// The keys this run's tasks have, and which task has each.
#[derive(Default)]
pub(crate) struct HeldKeys {
    tasks: std::sync::Mutex<std::collections::HashMap<CacheKey, String>>,
    /// Signalled when a task lets a key go.
    freed: std::sync::Condvar,
}

/// A task's hold on its key within this run, let go when the task is over.
struct KeyNote<'c> {
    ctx: &'c RunContext<'c>,
    key: CacheKey,
}

impl<'c> KeyNote<'c> {
    /// Takes `key` for `task`, waiting while another task of this run has it (said once);
    /// `None` if the run was interrupted meanwhile.
    fn take(
        ctx: &'c RunContext<'c>,
        key: CacheKey,
        task: &str,
        reporter: &dyn Reporter,
    ) -> Option<KeyNote<'c>> {
        let held = &ctx.held_keys;
        let mut tasks = held.tasks.lock().expect("held keys");
        let mut said = false;
        while let Some(other) = tasks.get(&key) {
            if !said {
                reporter.event(&Event::TaskWaiting {
                    task: task.to_string(),
                    why: format!(
                        "`{other}` of this run has the same key and is running: this task \
                         takes its result"
                    ),
                });
                said = true;
            }
            if ctx.interrupted.load(Ordering::SeqCst) {
                return None;
            }
            tasks = held
                .freed
                .wait_timeout(tasks, Duration::from_millis(100))
                .expect("held keys")
                .0;
        }
        tasks.insert(key, task.to_string());
        Some(KeyNote { ctx, key })
    }
}

impl Drop for KeyNote<'_> {
    fn drop(&mut self) {
        let held = &self.ctx.held_keys;
        held.tasks.lock().expect("held keys").remove(&self.key);
        held.freed.notify_all();
    }
}

/// The `[KEY] ` prefixes of the lines the task's background processes write.
fn background_prefixes(resolved: &ResolvedInputs) -> Vec<String> {
    resolved
        .background
        .iter()
        .map(|p| format!("[{}] ", p.key))
        .collect()
}

/// What a task that exited successfully left behind.
struct Finished<'a> {
    scratch: &'a Path,
    upper: &'a Path,
    outputs_dir: &'a Path,
    log: WrittenLog,
    start: Instant,
    usage: TaskUsage,
    /// 0, or one of `outputs.execution-status.success-exit-codes`.
    exit_code: i32,
    test_results: Option<strata_key::TestResults>,
    /// What of the checkout changed while the task was given it (`checkout_view.rs`): then
    /// the task saw other files than its key names, and its result is not stored.
    checkout_changed: Option<String>,
}

fn commit<'scope, 'env>(
    ctx: &'env RunContext<'env>,
    task: &Task,
    resolved: &ResolvedInputs,
    finished: Finished<'_>,
    reporter: &'env dyn Reporter,
    scope: &'scope Scope<'scope, 'env>,
) -> Result<TaskResult, Failure> {
    let Finished {
        scratch,
        upper,
        outputs_dir,
        log,
        start,
        usage,
        exit_code,
        test_results,
        checkout_changed,
    } = finished;
    let committing = Instant::now();
    // The entry keeps the task's own exports; what it inherited is merged in at every run.
    let mut exports = read_exports(&outputs_dir.join("env"), true)?;
    exports.extend(read_dotenv(&outputs_dir.join(crate::dotenv::DOTENV_FILE))?);
    let mut env = ExportedEnv::default().with_exports(exports);
    env.excluded = read_exports(&outputs_dir.join("cache-key-excluded-env"), true)?;
    env.values = read_exports(&outputs_dir.join("values"), false)?;
    env.dynamic_tasks = read_dynamic_tasks(&outputs_dir.join("dynamic-tasks"))?;
    env.test_results = test_results;
    // Mount points the sandbox had to create are not the task's doing.
    remove_created_mountpoints(scratch, upper);
    // `outputs.filesystem` decides what of the task's writes is its layer, before it is
    // hashed; its hooks and artifacts are added after, whatever the filter.
    crate::task_outputs::filter_upper(upper, &task.outputs.filesystem)
        .map_err(|e| Failure::infra(format!("failed to apply `outputs.filesystem`: {e}")))?;
    crate::hooks::keep(outputs_dir, upper)
        .map_err(|e| Failure::infra(format!("failed to keep the task's hooks: {e}")))?;
    crate::task_outputs::keep_artifacts(outputs_dir, upper).map_err(Failure::task)?;
    let layer = ctx
        .cache
        .layers()
        .commit(upper)
        .map_err(|e| Failure::infra(format!("failed to commit the layer: {}", chain(&e))))?;
    let duration = start.elapsed();
    if ctx.options.artifacts_dir.is_some() {
        ctx.artifacts.note(task, LayerSource::Layer(layer));
    }
    for message in crate::image_config::warnings(&task.name.to_string(), &outputs_dir.join("image"))
    {
        reporter.event(&Event::Warning { message });
    }
    if let Some(change) = &checkout_changed {
        reporter.event(&Event::Warning {
            message: format!(
                "`{}`: the checkout changed while it ran ({change}): its result is used by this \
                 run but not cached",
                task.name
            ),
        });
    }
    let stored = resolved.cache.enabled && checkout_changed.is_none();
    if stored {
        let store = || -> Result<NewEntry, strata_store::StoreError> {
            let log = ctx.cache.content().put_log_file(log)?;
            ctx.cache.sync()?;
            let entry = NewEntry {
                key: resolved.key,
                pipeline: ctx.pipeline_id(),
                task: task.name.to_string(),
                layer,
                env: env.clone(),
                inputs: resolved.inputs.clone(),
                workspace_files: resolved.files.clone(),
                exit_code,
                duration,
                log,
            };
            ctx.cache.index().put(&entry)?;
            Ok(entry)
        };
        let entry = store().map_err(|e| {
            Failure::infra(format!("failed to record the cache entry: {}", chain(&e)))
        })?;
        let tool_cache = crate::tool_cache::save(ctx, task, resolved, &layer, reporter);
        if ctx.shared.has_writable() {
            start_publish(scope, ctx, reporter, entry, tool_cache);
        }
    }
    if !stored {
        crate::tool_cache::save(ctx, task, resolved, &layer, reporter);
    }
    reporter.event(&Event::TaskPassed {
        task: task.name.to_string(),
        key: resolved.key.to_hex(),
        layer: layer.to_hex(),
        duration_ms: ms(start.elapsed()),
        commit_ms: ms(committing.elapsed()),
        stored,
        usage,
    });
    Ok(result_of(task, resolved, layer, &env))
}

/// `$STRATA_ENV/NAME` (or `$RWX_VALUES/NAME`) files -> name and value (content with one
/// trailing newline trimmed). A bad name is the task's mistake: it fails, naming the file.
fn read_exports(dir: &Path, env_names: bool) -> Result<BTreeMap<String, String>, Failure> {
    let what = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("outputs");
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Failure::infra(format!("failed to read {what} {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry
            .map_err(|e| Failure::infra(format!("failed to read {what} {}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let valid = if env_names {
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        } else {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        };
        if !valid || !entry.path().is_file() {
            return Err(Failure::task(format!(
                "`{name}` in {what} is not a valid name (one file per {}, named after it)",
                if env_names { "variable" } else { "value" }
            )));
        }
        let value = std::fs::read_to_string(entry.path())
            .map_err(|e| Failure::task(format!("`{name}` in {what} is not readable text: {e}")))?;
        let value = value.strip_suffix('\n').unwrap_or(&value).to_string();
        out.insert(name, value);
    }
    Ok(out)
}

/// What the task appended to `$MINT_ENV` used as a dotenv file (see `dotenv.rs`).
fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Failure::task(format!(
                "$MINT_ENV is not readable text: {e}"
            )));
        }
    };
    crate::dotenv::parse(&text)
        .map_err(|e| Failure::task(format!("$MINT_ENV (a dotenv file): {e}")))
}

/// The files of `$RWX_DYNAMIC_TASKS`, by name. They are read when the run takes them in, so
/// a bad one fails the run there, naming the file.
fn read_dynamic_tasks(dir: &Path) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_file() {
            return Err(Failure::task(format!(
                "`{name}` in $RWX_DYNAMIC_TASKS is not a file (write one YAML file of tasks per file)"
            )));
        }
        let text = std::fs::read_to_string(entry.path()).map_err(|e| {
            Failure::task(format!(
                "`{name}` in $RWX_DYNAMIC_TASKS is not readable text: {e}"
            ))
        })?;
        out.insert(name, text);
    }
    Ok(out)
}

/// What the task wrote into `$RWX_ERRORS`: each file's text, for the failure summary.
fn read_errors(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether the run was asked for this task: a target, or a task of a target call (its call
/// scopes, innermost first, name their callers).
fn is_target(ctx: &RunContext<'_>, task: &Task) -> bool {
    let targets = &ctx.options.targets;
    let mut scope = task.scope.as_deref();
    let mut found = targets.contains(&task.name);
    while let (false, Some(s)) = (found, scope) {
        found = targets.contains(&s.caller);
        scope = s.parent.as_deref();
    }
    found
}

fn sees_workspace(ctx: &RunContext<'_>, task: &Task) -> bool {
    ctx.index_of(task).map_or_else(
        || ctx.sources.added_sees_workspace(task),
        |i| ctx.sources.sees_workspace(i),
    )
}

/// Said when a task that sees no workspace fails: often the reason it failed.
fn no_workspace_hint(ctx: &RunContext<'_>) -> &'static str {
    match ctx.pipeline.dialect {
        strata_pipeline::Dialect::Rwx => {
            "this task sees no workspace files (in an RWX file only tasks that `use` a `git/clone` task see them)"
        }
        strata_pipeline::Dialect::Strata => {
            "this task sees no workspace files (a task sees them with `filter`, `workspace: true`, or by using a task that sees them)"
        }
    }
}

/// Moves a failed task's upper dir where `strata` keeps it for inspection.
fn keep_upper(ctx: &RunContext<'_>, task: &Task, upper: &Path) -> Option<PathBuf> {
    let dest = ctx
        .cache
        .runs()
        .failed_dir(&ctx.pipeline.path, task.name.as_str());
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(dest.parent()?).ok()?;
    std::fs::rename(upper, &dest).ok()?;
    if ctx.cache.runs().disk_is_low() {
        // Kept, the files would make the next run fail for want of space.
        let _ = std::fs::remove_dir_all(&dest);
        return None;
    }
    Some(dest)
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Removes from the upper dir the mount points the sandbox made there, the last first (a
/// directory is listed before what it holds): a directory only if the task left it empty, a
/// file only if it is still the empty file made (a task cannot replace a mount point).
fn remove_created_mountpoints(scratch: &Path, upper: &Path) {
    for mp in RunningSandbox::created_mountpoints(scratch).iter().rev() {
        let path = upper.join(mp);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let _ = std::fs::remove_dir(&path);
            }
            Ok(meta) if meta.is_file() && meta.len() == 0 => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}
