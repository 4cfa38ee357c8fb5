//! The engine: schedules a pipeline's tasks, decides for each whether it hits the cache, runs
//! the misses in the sandbox and commits what they produce.
//!
//! Owns: the per-task flow (inputs -> key -> lookup -> restore or run -> commit), the parallel
//! scheduler (`-j`, `--target`, `--fail-fast`, timeouts, interruption) and the state machine
//! that makes its decisions (the dispatcher), `plan`, `explain` and `shell`,
//! calls at run time (each called task's `params`/`init` scope, a package's files in its stack,
//! hooks), a task's background processes and Docker daemon as the sandbox is given them, and
//! the typed [`Event`]s through which every fact reaches the user. The terminal display and
//! `--json` are two consumers of the same events; the engine never prints.
//!
//! Must not touch: YAML (it gets a validated `Pipeline`), mount syscalls (the sandbox crate), the
//! cache's on-disk layout (the store crate).

mod artifact_refs;
mod base_image;
mod checkout;
mod checkout_view;
mod conditions;
mod context;
mod dispatch;
mod dotenv;
mod events;
mod execute;
mod export;
mod expressions;
mod fetch;
mod hooks;
mod image_config;
mod inputs;
mod invocation;
mod layer_images;
mod layer_parts;
mod miss;
mod output;
mod packages;
mod plan;
mod prefetch;
mod scheduler;
mod services;
mod shell;
mod sources;
mod task_outputs;
mod tasks;
mod test_results;
mod tool_cache;
mod transfer;
mod workspace_tree;

pub use base_image::{ImageError, ImageSource, PulledImage, pull_image};
pub use checkout::{Checkout, git_toplevel};
pub use context::{EngineError, PassedEnv, RunContext, RunOptions};
pub use events::{Event, Reporter, SkipReason, Summary, TaskStatus, TaskSummary, TaskUsage};
pub use export::{ExportError, ExportOptions, ExportTarget, Exported, export};
pub use invocation::{Invocation, InvocationOptions, invoke};
pub use layer_images::LayerImages;
pub use packages::git_package_source;
pub use plan::{Explanation, PlanStatus, PlannedTask, explain, plan};
pub use prefetch::PrefetchPolicy;
pub use scheduler::run;
pub use shell::{ShellError, ShellOptions, shell};
/// What a task's test result files said: in [`Event::TaskTestResults`] and kept with its entry.
pub use strata_key::{TestCase, TestResults, TestStatus};
