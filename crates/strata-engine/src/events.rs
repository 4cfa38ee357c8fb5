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
    TaskCached {
        task: String,
        key: String,
        layer: String,
        /// How long the command took when it ran.
        saved_ms: u64,
    },
    TaskStarted {
        task: String,
        key: String,
    },
    /// One line of the task's output (stdout and stderr merged), without its newline.
    TaskOutput {
        task: String,
        line: String,
    },
    TaskPassed {
        task: String,
        key: String,
        layer: String,
        duration_ms: u64,
        /// Whether an entry was written (false for `cache: false`).
        stored: bool,
    },
    TaskFailed {
        task: String,
        reason: String,
        exit_code: Option<i32>,
        duration_ms: u64,
        log_tail: Vec<String>,
        /// Where the files the task wrote were kept.
        kept_upper: Option<String>,
    },
    TaskSkipped {
        task: String,
        because: String,
    },
    RunFinished(Summary),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    Ran,
    Cached,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    pub status: TaskStatus,
    pub duration_ms: u64,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub duration_ms: u64,
    /// Sum of the recorded durations of restored tasks.
    pub saved_ms: u64,
    pub interrupted: bool,
    pub tasks: BTreeMap<String, TaskSummary>,
}

impl Summary {
    pub fn success(&self) -> bool {
        self.failed == 0 && self.skipped == 0 && !self.interrupted
    }
}

/// Receives events; called from several threads.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}
