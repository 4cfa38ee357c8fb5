use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::diagnostic::Location;
use crate::filter::Filter;

/// The name a task has in its pipeline (`key:` in the file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskName(String);

impl TaskName {
    pub fn new(name: impl Into<String>) -> Self {
        TaskName(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the bottom of every task's filesystem stack is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The machine's own root filesystem, read-only under the task's layers.
    Host,
    /// A directory holding a root filesystem (relative paths are relative to the pipeline file).
    Rootfs(PathBuf),
    /// An OCI image: `registry/repository[:tag|@digest]`, or `oci:DIR[:TAG]` for an image layout
    /// directory (relative to the pipeline file).
    Image(String),
}

/// A shared cache named in a pipeline or config file (`URL[,ro|,rw]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCacheDecl {
    pub spec: String,
    pub at: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Part of the cache key.
    Keyed(String),
    /// Given to the task but left out of the key (secrets, tokens).
    Excluded(String),
}

impl EnvValue {
    pub fn value(&self) -> &str {
        match self {
            EnvValue::Keyed(v) | EnvValue::Excluded(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    pub enabled: bool,
    /// Entries older than this are not used.
    pub ttl: Option<Duration>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            enabled: true,
            ttl: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: TaskName,
    /// Where `key:` is, for errors that concern the task as a whole.
    pub at: Location,
    pub run: String,
    /// Tasks whose filesystem and env this task builds on, in order: the last one wins.
    pub uses: Vec<TaskName>,
    /// Tasks that must finish first, without their filesystem or env.
    pub after: Vec<TaskName>,
    /// Which workspace files the task sees (and is keyed on); `None` means all of them.
    pub filter: Option<Filter>,
    pub env: Vec<EnvVar>,
    pub cache: CachePolicy,
    pub timeout: Option<Duration>,
    /// Where each `use`/`after` reference is written, for "no such task" errors.
    pub(crate) ref_spans: Vec<RefSpan>,
}

#[derive(Debug, Clone)]
pub(crate) struct RefSpan {
    pub(crate) name: TaskName,
    pub(crate) at: Location,
    pub(crate) width: usize,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file this pipeline was read from.
    pub path: PathBuf,
    pub base: Base,
    /// Shared caches to use after the local one, in order.
    pub caches: Vec<RemoteCacheDecl>,
    /// Tasks in file order; validation guarantees unique names, known references, no cycles.
    pub tasks: Vec<Task>,
}

impl Pipeline {
    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name.as_str() == name)
    }

    /// Task indices in an order where every task comes after all it depends on (`use` and
    /// `after`), ties kept in file order.
    pub fn topological_order(&self) -> Vec<usize> {
        let index = |n: &TaskName| self.tasks.iter().position(|t| &t.name == n);
        let mut done = vec![false; self.tasks.len()];
        let mut order = Vec::with_capacity(self.tasks.len());
        while order.len() < self.tasks.len() {
            let before = order.len();
            for (i, task) in self.tasks.iter().enumerate() {
                if done[i] {
                    continue;
                }
                let ready = task
                    .uses
                    .iter()
                    .chain(&task.after)
                    .all(|d| index(d).is_none_or(|j| done[j]));
                if ready {
                    done[i] = true;
                    order.push(i);
                }
            }
            if order.len() == before {
                // Unreachable for a validated pipeline; stop rather than loop forever.
                break;
            }
        }
        order
    }

    /// The named tasks and everything they need (`use` and `after`), as a set of indices.
    pub fn closure(&self, targets: &[TaskName]) -> Vec<bool> {
        let mut wanted = vec![false; self.tasks.len()];
        let mut stack: Vec<&TaskName> = targets.iter().collect();
        while let Some(name) = stack.pop() {
            if let Some(i) = self.tasks.iter().position(|t| &t.name == name)
                && !wanted[i]
            {
                wanted[i] = true;
                stack.extend(self.tasks[i].uses.iter().chain(&self.tasks[i].after));
            }
        }
        wanted
    }
}
