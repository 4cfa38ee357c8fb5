use std::collections::BTreeMap;

use serde::Serialize;

/// Everything the user is told about a run, in the order it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    RunStarted {
        pipeline: String,
        tasks: Vec<String>,
        jobs: usize,
    },
    /// Restored from the cache: the command was not run.
    TaskRestored {
        task: String,
        key: String,
        layer: String,
        /// How long the command took when it ran.
        saved_ms: u64,
        /// `local`, or the shared cache the entry came from (its layer then downloads in the
        /// background: see `layer-restored`).
        from: String,
    },
    /// The task waits for another process that runs the same key, to use its result.
    TaskWaiting {
        task: String,
        why: String,
    },
    /// A task that missed starts from the files its tool cache holds (`tool-cache: NAME`): the
    /// layer its latest successful execution under that name committed.
    ToolCacheRestored {
        task: String,
        tool_cache: String,
        layer: String,
        /// Files, directories and links copied into the task's upper dir.
        files: u64,
        bytes: u64,
        duration_ms: u64,
    },
    /// A task's tool cache now holds the layer it committed.
    ToolCacheSaved {
        task: String,
        tool_cache: String,
        layer: String,
    },
    /// A task's tool cache reached the writable shared caches (after its entry).
    ToolCachePushed {
        task: String,
        tool_cache: String,
        caches: usize,
    },
    /// Bytes of a layer downloaded so far.
    RestoreProgress {
        task: String,
        bytes: u64,
        total: u64,
    },
    /// A layer a shared cache holds starts downloading before its task starts: the prefetch
    /// found the task's entry at the start of the run. Its `layer-fetched` follows.
    LayerPrefetching {
        task: String,
        layer: String,
        /// Compressed bytes to download.
        bytes: u64,
        /// The first task found to need this layer: one that runs on it, or a filtered task
        /// whose key reads it; absent when only tasks restored from the cache stand on it
        /// (fetched after the others).
        #[serde(skip_serializing_if = "Option::is_none")]
        needed_by: Option<String>,
    },
    /// Layers restored from shared caches cannot be kept as erofs images on this machine (no
    /// kernel support, or mounting is not permitted): they are restored as directories. Said
    /// once per run, before the first such restore.
    LayerImagesUnavailable {
        reason: String,
    },
    /// A layer from a shared cache is now in the local cache.
    LayerFetched {
        task: String,
        layer: String,
        /// Compressed bytes downloaded (0 when the layer was already here).
        bytes: u64,
        duration_ms: u64,
    },
    /// A task's result reached the writable shared caches.
    TaskPushed {
        task: String,
        /// Layer archive bytes uploaded (0 when the caches had the layer already).
        bytes: u64,
        caches: usize,
        duration_ms: u64,
    },
    /// Something went wrong that does not fail the run (a shared cache is unreachable, ...).
    Warning {
        message: String,
    },
    /// The task's entry was not found or not usable, so it runs: why, as `strata explain`
    /// would say (its inputs against its latest entry's, secrets masked).
    TaskMissed {
        task: String,
        key: String,
        reasons: Vec<String>,
    },
    TaskStarted {
        task: String,
        key: String,
        /// How it was given the workspace files it sees (`checkout_view.rs`): `checkout`, the
        /// checkout itself; `tree: <why>`, a tree of links to the cache's copies; absent when it
        /// sees none.
        #[serde(skip_serializing_if = "Option::is_none")]
        workspace: Option<String>,
    },
    /// One line of the task's output (stdout and stderr merged), without its newline. A line
    /// longer than 64 KiB is cut, with a note saying how many bytes only the log has.
    TaskOutput {
        task: String,
        line: String,
    },
    /// Output not shown live because the display fell behind (a slow terminal, a flood of
    /// lines): the task is never slowed for its display, and its log keeps every byte. The
    /// next `task-output` line starts at the beginning of a line.
    TaskOutputSkipped {
        task: String,
        bytes: u64,
    },
    TaskPassed {
        task: String,
        key: String,
        layer: String,
        duration_ms: u64,
        /// Of which committing the layer and writing the entry (after the command exited).
        commit_ms: u64,
        /// Whether an entry was written (false for `cache: false`).
        stored: bool,
        #[serde(flatten)]
        usage: TaskUsage,
    },
    TaskFailed {
        task: String,
        reason: String,
        exit_code: Option<i32>,
        duration_ms: u64,
        log_tail: Vec<String>,
        /// Where the files the task wrote were kept.
        kept_upper: Option<String>,
        /// What the task wrote into `$RWX_ERRORS`, one entry per file.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<String>,
        #[serde(flatten)]
        usage: TaskUsage,
    },
    /// A failed attempt of a task with `retry`: it runs again (the attempt's upper dir is
    /// dropped, nothing of it is cached).
    TaskRetrying {
        task: String,
        /// The attempt that failed (1 for the first run).
        attempt: u32,
        /// Attempts allowed in all (`retry.count` + 1).
        attempts: u32,
        reason: String,
        exit_code: Option<i32>,
    },
    /// A task that passed after failing: on which attempt.
    TaskPassedOnRetry {
        task: String,
        attempt: u32,
        attempts: u32,
    },
    /// What a task's test result files said (a restored task's come from its entry), sent
    /// before its `task-passed`, `task-cached` or `task-failed`.
    TaskTestResults {
        task: String,
        results: strata_key::TestResults,
    },
    /// `--artifacts DIR`: a task's artifacts copied to `DIR/<task>/<key>/`.
    ArtifactsSaved {
        task: String,
        dir: String,
        artifacts: Vec<String>,
    },
    /// Tasks joined the run: those a `parallel:` task generated once its values were known,
    /// or those a task wrote into `$RWX_DYNAMIC_TASKS` (`file` names which).
    TasksAdded {
        by: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        tasks: Vec<String>,
    },
    TaskSkipped {
        task: String,
        /// Why, for people (the summary's `skip_reason` has it typed).
        because: String,
    },
    RunFinished(Summary),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    Ran,
    Restored,
    Failed,
    Skipped,
    /// A `git/clone` of the workspace, served from the checkout: nothing ran or was restored.
    Workspace,
    /// A calling task, standing for its call's tasks: nothing ran or was restored.
    Call,
}

impl Event {
    /// A task that failed before its command ran (or without one): nothing to show but why.
    pub(crate) fn failed_early(task: impl Into<String>, reason: impl Into<String>) -> Event {
        Event::TaskFailed {
            task: task.into(),
            reason: reason.into(),
            exit_code: None,
            duration_ms: 0,
            log_tail: Vec::new(),
            kept_upper: None,
            errors: Vec::new(),
            usage: TaskUsage::default(),
        }
    }
}

/// Why a task was not started. `T` names a task: its name here, its index in the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SkipReason<T = String> {
    /// A task in its `use` or `after` failed.
    DependencyFailed { dependency: T },
    /// A task in its `use` or `after` was skipped because of a failure or an interruption.
    DependencySkipped { dependency: T },
    /// A task failed and `--fail-fast` is set: nothing new starts.
    FailFast,
    /// The run was interrupted: nothing new starts.
    Interrupted,
    /// The task's condition is false. Not a failure.
    ConditionFalse,
    /// A task in its `use` or `after` was skipped by a condition (its own or one further up).
    /// Not a failure.
    DependencySkippedByCondition { dependency: T },
}

impl<T> SkipReason<T> {
    /// Whether the task was skipped by a condition, as the pipeline asked, rather than because
    /// something went wrong.
    pub fn by_condition(&self) -> bool {
        matches!(
            self,
            SkipReason::ConditionFalse | SkipReason::DependencySkippedByCondition { .. }
        )
    }

    /// The same reason with the dependency, if any, named another way.
    pub(crate) fn map<U>(self, name: impl FnOnce(T) -> U) -> SkipReason<U> {
        match self {
            SkipReason::DependencyFailed { dependency } => SkipReason::DependencyFailed {
                dependency: name(dependency),
            },
            SkipReason::DependencySkipped { dependency } => SkipReason::DependencySkipped {
                dependency: name(dependency),
            },
            SkipReason::DependencySkippedByCondition { dependency } => {
                SkipReason::DependencySkippedByCondition {
                    dependency: name(dependency),
                }
            }
            SkipReason::FailFast => SkipReason::FailFast,
            SkipReason::Interrupted => SkipReason::Interrupted,
            SkipReason::ConditionFalse => SkipReason::ConditionFalse,
        }
    }
}

impl<T: std::fmt::Display> std::fmt::Display for SkipReason<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::DependencyFailed { dependency }
            | SkipReason::DependencySkipped { dependency } => {
                write!(f, "`{dependency}` did not succeed")
            }
            SkipReason::FailFast => f.write_str("an earlier task failed and --fail-fast is set"),
            SkipReason::Interrupted => f.write_str("the run was interrupted"),
            SkipReason::ConditionFalse => f.write_str("its condition is false"),
            SkipReason::DependencySkippedByCondition { dependency } => {
                write!(f, "`{dependency}` was skipped by a condition")
            }
        }
    }
}

/// What a task that ran used, measured by its cgroup (absent where the machine gives tasks
/// none, and for tasks that did not run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TaskUsage {
    /// The most memory the task's processes held at once, page cache included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// CPU time of the task's processes, user and system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
}

impl From<strata_sandbox::Usage> for TaskUsage {
    fn from(u: strata_sandbox::Usage) -> Self {
        TaskUsage {
            peak_memory_bytes: u.peak_memory_bytes,
            cpu_ms: u.cpu_usec.map(|us| us / 1000),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    pub status: TaskStatus,
    pub duration_ms: u64,
    pub key: Option<String>,
    /// Why, for a skipped task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    #[serde(flatten)]
    pub usage: TaskUsage,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub ran: usize,
    pub restored: usize,
    pub failed: usize,
    /// Tasks skipped because of a failure or an interruption (not those in
    /// `skipped_by_condition`).
    pub skipped: usize,
    /// Tasks skipped because a condition was false, theirs or a dependency's: the pipeline
    /// asked for it, so the run still succeeds.
    pub skipped_by_condition: usize,
    pub duration_ms: u64,
    /// Sum of the recorded durations of restored tasks.
    pub saved_ms: u64,
    /// Compressed bytes downloaded from shared caches.
    pub restored_bytes: u64,
    /// Compressed bytes uploaded to shared caches.
    pub pushed_bytes: u64,
    /// CPU time of the tasks that ran, where their cgroups measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// The highest peak memory of a task that ran, where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    pub interrupted: bool,
    /// Failed tasks whose failure was strata's own (the cache, the sandbox), not the
    /// command's: the run exits 3.
    pub internal_failures: usize,
    /// Tasks of a pass that could not start because a layer a shared cache promised did not
    /// arrive, with why: the run went again without that entry. Empty in the final summary.
    #[serde(skip)]
    pub deferred: Vec<(String, String)>,
    pub tasks: BTreeMap<String, TaskSummary>,
}

impl Summary {
    /// Nothing failed, nothing was skipped because of a failure, and the run was not
    /// interrupted. Tasks skipped by a condition do not count against it.
    pub fn success(&self) -> bool {
        self.failed == 0 && self.skipped == 0 && !self.interrupted
    }
}

/// Receives events; called from several threads.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}
