//! One task: key, lookup, and on a miss run it in the sandbox and commit its upper dir.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use std::thread::Scope;

use strata_cache::RemoteEntry;
use strata_key::{CacheKey, ExportedEnv, LayerDigest, ParentInput};
use strata_pipeline::Task;
use strata_sandbox::{Outcome, RunningSandbox, SandboxSpec};
use strata_store::{Entry, NewEntry};

use crate::context::RunContext;
use crate::events::{Event, Reporter};
use crate::inputs::{ResolvedInputs, TaskResult, WORKSPACE_DIR, resolve};
use crate::transfer::{Outgoing, remote_lookup, start_publish, start_restore};

/// Lines of log shown with a failure.
const LOG_TAIL_LINES: usize = 20;

pub(crate) enum TaskOutcome {
    Cached {
        result: TaskResult,
        key: CacheKey,
        saved: Duration,
    },
    Ran {
        result: TaskResult,
        key: CacheKey,
        duration: Duration,
    },
    Failed {
        key: CacheKey,
        duration: Duration,
    },
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A usable cache entry: in the local index, or in a shared cache.
pub(crate) enum Found {
    Local(Entry),
    Remote { remote: usize, entry: RemoteEntry },
}

impl Found {
    pub(crate) fn layer(&self) -> LayerDigest {
        match self {
            Found::Local(e) => e.layer,
            Found::Remote { entry, .. } => entry.layer,
        }
    }

    pub(crate) fn env(&self) -> ExportedEnv {
        match self {
            Found::Local(e) => e.env.clone(),
            Found::Remote { entry, .. } => entry.env.clone(),
        }
    }

    fn duration(&self) -> Duration {
        match self {
            Found::Local(e) => e.duration,
            Found::Remote { entry, .. } => Duration::from_millis(entry.duration_ms),
        }
    }

    fn created_at(&self) -> SystemTime {
        match self {
            Found::Local(e) => e.created_at,
            Found::Remote { entry, .. } => {
                SystemTime::UNIX_EPOCH + Duration::from_millis(entry.created_at_ms)
            }
        }
    }

    /// `local`, or the location of the shared cache.
    pub(crate) fn source(&self, ctx: &RunContext<'_>) -> String {
        match self {
            Found::Local(_) => "local".to_string(),
            Found::Remote { remote, .. } => ctx.remotes.remotes()[*remote].location(),
        }
    }
}

/// The cached entry for this task, if it may be used: the local cache first, then the shared
/// caches in order.
pub(crate) fn usable_entry(
    ctx: &RunContext<'_>,
    task: &Task,
    key: &CacheKey,
    reporter: &dyn Reporter,
) -> Option<Found> {
    if !task.cache.enabled || ctx.options.no_cache {
        return None;
    }
    let fresh = |found: Found| {
        let Some(ttl) = task.cache.ttl else {
            return Some(found);
        };
        let age = SystemTime::now()
            .duration_since(found.created_at())
            .unwrap_or_default();
        (age <= ttl).then_some(found)
    };
    if let Some(entry) = ctx.cache.lookup(key).ok().flatten()
        && let Some(found) = fresh(Found::Local(entry))
    {
        return Some(found);
    }
    let (remote, entry) = remote_lookup(ctx, key, reporter)?;
    fresh(Found::Remote { remote, entry })
}

pub(crate) fn result_of(
    task: &Task,
    resolved: &ResolvedInputs,
    entry_layer: strata_key::LayerDigest,
    env: strata_key::ExportedEnv,
) -> TaskResult {
    let mut stack = resolved.inputs.parents.clone();
    stack.push(ParentInput {
        task: task.name.to_string(),
        layer: entry_layer,
    });
    TaskResult { stack, env }
}

pub(crate) fn execute<'scope, 'env>(
    ctx: &'env RunContext<'env>,
    task: &Task,
    parents: &[&TaskResult],
    reporter: &'env dyn Reporter,
    scope: &'scope Scope<'scope, 'env>,
) -> TaskOutcome {
    let resolved = resolve(ctx, task, parents);
    let key = resolved.key;
    if let Some(found) = usable_entry(ctx, task, &key, reporter) {
        let saved = found.duration();
        reporter.event(&Event::TaskCached {
            task: task.name.to_string(),
            key: key.to_hex(),
            layer: found.layer().to_hex(),
            saved_ms: ms(saved),
            from: found.source(ctx),
        });
        let result = result_of(task, &resolved, found.layer(), found.env());
        if let Found::Remote { remote, entry } = found {
            start_restore(scope, ctx, reporter, remote, entry);
        }
        return TaskOutcome::Cached { result, key, saved };
    }
    let start = Instant::now();
    match run_in_sandbox(ctx, task, &resolved, reporter, start, scope) {
        Ok(result) => TaskOutcome::Ran {
            result,
            key,
            duration: start.elapsed(),
        },
        Err(failure) => {
            reporter.event(&Event::TaskFailed {
                task: task.name.to_string(),
                reason: failure.reason,
                exit_code: failure.exit_code,
                duration_ms: ms(start.elapsed()),
                log_tail: failure.log_tail,
                kept_upper: failure.kept_upper.map(|p| p.display().to_string()),
            });
            TaskOutcome::Failed {
                key,
                duration: start.elapsed(),
            }
        }
    }
}

struct Failure {
    reason: String,
    exit_code: Option<i32>,
    log_tail: Vec<String>,
    kept_upper: Option<PathBuf>,
}

impl Failure {
    /// strata itself could not do its part (the command may not have run).
    fn infra(reason: impl std::fmt::Display) -> Failure {
        Failure {
            reason: reason.to_string(),
            exit_code: None,
            log_tail: Vec::new(),
            kept_upper: None,
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn run_in_sandbox<'scope, 'env>(
    ctx: &'env RunContext<'env>,
    task: &Task,
    resolved: &ResolvedInputs,
    reporter: &'env dyn Reporter,
    start: Instant,
    scope: &'scope Scope<'scope, 'env>,
) -> Result<TaskResult, Failure> {
    let name = task.name.to_string();
    // Layers restored from a shared cache may still be on their way.
    ctx.transfers
        .wait_for(ctx, &resolved.stack_layers())
        .map_err(Failure::infra)?;
    let scratch = ctx.run_dir.path().join("tasks").join(&name);
    let files: Vec<_> = resolved.files.iter().collect();
    let ws_tree = ctx
        .trees
        .get(
            ctx.cache,
            ctx.run_dir.path(),
            &ctx.workspace.root,
            resolved.workspace,
            &files,
        )
        .map_err(|e| Failure::infra(format!("failed to prepare the workspace: {}", chain(&e))))?;
    let mounts = ctx
        .cache
        .prepare(&scratch, &resolved.stack_layers())
        .map_err(|e| Failure::infra(chain(&e)))?;
    let env_dir = scratch.join("env");
    let _ = std::fs::remove_dir_all(&env_dir);
    std::fs::create_dir_all(&env_dir)
        .map_err(|e| Failure::infra(format!("failed to create {}: {e}", env_dir.display())))?;
    let mut lowerdirs = mounts.lowerdirs.clone();
    lowerdirs.push(ws_tree);
    lowerdirs.extend(ctx.base_layers.iter().cloned());
    let spec = SandboxSpec {
        task: name.clone(),
        base: ctx.base_root.clone(),
        lowerdirs,
        upperdir: mounts.upperdir.clone(),
        workdir: mounts.workdir.clone(),
        scratch: scratch.clone(),
        env_dir: env_dir.clone(),
        cwd: PathBuf::from(WORKSPACE_DIR),
        command: task.run.clone(),
        env: resolved.env.clone(),
    };
    reporter.event(&Event::TaskStarted {
        task: name.clone(),
        key: resolved.key.to_hex(),
    });
    let mut sandbox =
        strata_sandbox::spawn(&ctx.options.exe, &spec).map_err(|e| Failure::infra(chain(&e)))?;
    let output = sandbox.take_output().expect("output taken once");
    let killer = sandbox.killer();
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = done_tx.send(sandbox.wait());
    });
    let mut stopped_because = None;
    let (outcome, log) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut log = Vec::new();
            let mut reader = std::io::BufReader::new(output);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                log.extend_from_slice(&line);
                let text = String::from_utf8_lossy(&line);
                reporter.event(&Event::TaskOutput {
                    task: name.clone(),
                    line: text.trim_end_matches(['\n', '\r']).to_string(),
                });
                line.clear();
            }
            log
        });
        let outcome = loop {
            match done_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => break r,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Ok(Outcome::SetupFailed("sandbox helper vanished".into()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stopped_because.is_none() {
                if ctx.interrupted.load(Ordering::SeqCst) {
                    stopped_because = Some("interrupted".to_string());
                    killer.kill();
                } else if let Some(limit) = task.timeout
                    && start.elapsed() > limit
                {
                    stopped_because = Some(format!("timed out after {}", humanize(limit)));
                    killer.kill();
                }
            }
        };
        // Every process of the task is gone once the helper has exited, so the output ends.
        (outcome, reader.join().expect("log reader panicked"))
    });
    let _ = waiter.join();
    let outcome = outcome.map_err(|e| Failure::infra(chain(&e)))?;
    let tail = || log_tail(&log);
    let fail = |reason: String, exit_code: Option<i32>| -> Failure {
        let kept = keep_upper(ctx, task, &mounts.upperdir);
        Failure {
            reason,
            exit_code,
            log_tail: tail(),
            kept_upper: kept,
        }
    };
    match (outcome, stopped_because) {
        (_, Some(reason)) => return Err(fail(reason, None)),
        (Outcome::SetupFailed(message), None) => {
            return Err(fail(format!("sandbox setup failed: {message}"), None));
        }
        (Outcome::Exited(code), None) if code != 0 => {
            return Err(fail(
                format!("command exited with status {code}"),
                Some(code),
            ));
        }
        (Outcome::Exited(_), None) => {}
    }
    commit(
        ctx,
        task,
        resolved,
        &Finished {
            scratch: &scratch,
            upper: &mounts.upperdir,
            env_dir: &env_dir,
            log,
            start,
        },
        reporter,
        scope,
    )
}

/// What a task that exited successfully left behind.
struct Finished<'a> {
    scratch: &'a Path,
    upper: &'a Path,
    env_dir: &'a Path,
    log: Vec<u8>,
    start: Instant,
}

fn commit<'scope, 'env>(
    ctx: &'env RunContext<'env>,
    task: &Task,
    resolved: &ResolvedInputs,
    finished: &Finished<'_>,
    reporter: &'env dyn Reporter,
    scope: &'scope Scope<'scope, 'env>,
) -> Result<TaskResult, Failure> {
    let Finished {
        scratch,
        upper,
        env_dir,
        log,
        start,
    } = finished;
    let (scratch, upper, env_dir, log, start) =
        (*scratch, *upper, *env_dir, log.as_slice(), *start);
    let committing = Instant::now();
    let exports = read_exports(env_dir).map_err(Failure::infra)?;
    let env = resolved.inherited.clone().with_exports(exports);
    // Mount points the sandbox had to create are not the task's doing.
    for mp in RunningSandbox::created_mountpoints(scratch) {
        let _ = std::fs::remove_dir(upper.join(mp));
    }
    let layer = ctx
        .cache
        .commit(upper)
        .map_err(|e| Failure::infra(format!("failed to commit the layer: {}", chain(&e))))?;
    let duration = start.elapsed();
    let stored = task.cache.enabled;
    if stored {
        let store = || -> Result<(), strata_store::StoreError> {
            let log = ctx.cache.put_log(log)?;
            ctx.cache.sync()?;
            ctx.cache.put(&NewEntry {
                key: resolved.key,
                pipeline: &ctx.pipeline_id(),
                task: task.name.as_str(),
                layer,
                env: &env,
                inputs: &resolved.inputs,
                workspace_files: &resolved.files,
                exit_code: 0,
                duration,
                log,
            })
        };
        store().map_err(|e| {
            Failure::infra(format!("failed to record the cache entry: {}", chain(&e)))
        })?;
        if ctx.remotes.has_writable() {
            start_publish(
                scope,
                ctx,
                reporter,
                Outgoing {
                    key: resolved.key,
                    task: task.name.to_string(),
                    layer,
                    env: env.clone(),
                    inputs: resolved.inputs.clone(),
                    files: resolved.files.clone(),
                    duration,
                    log: log.to_vec(),
                },
            );
        }
    }
    reporter.event(&Event::TaskPassed {
        task: task.name.to_string(),
        key: resolved.key.to_hex(),
        layer: layer.to_hex(),
        duration_ms: ms(start.elapsed()),
        commit_ms: ms(committing.elapsed()),
        stored,
    });
    Ok(result_of(task, resolved, layer, env))
}

/// `$STRATA_ENV/NAME` files -> variables (content with one trailing newline trimmed).
fn read_exports(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("failed to read exported env {}: {e}", dir.display()))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("failed to read exported env {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || !entry.path().is_file() {
            return Err(format!(
                "exported env `{name}` is not a valid variable name (a file per variable in $STRATA_ENV)"
            ));
        }
        let value = std::fs::read_to_string(entry.path())
            .map_err(|e| format!("exported env `{name}` is not readable text: {e}"))?;
        let value = value.strip_suffix('\n').unwrap_or(&value).to_string();
        out.insert(name, value);
    }
    Ok(out)
}

fn log_tail(log: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Moves a failed task's upper dir where `strata` keeps it for inspection.
fn keep_upper(ctx: &RunContext<'_>, task: &Task, upper: &Path) -> Option<PathBuf> {
    let dest = ctx.cache.failed_dir(&ctx.pipeline.path, task.name.as_str());
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(dest.parent()?).ok()?;
    std::fs::rename(upper, &dest).ok()?;
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
