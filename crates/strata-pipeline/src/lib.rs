//! The pipeline model: reads a pipeline file (our dialect of RWX Mint's run definitions) into a
//! validated, typed [`Pipeline`].
//!
//! Owns: YAML parsing with source positions, the task model, `filter` globs, durations, RWX's
//! `${{ … }}` expression language ([`expr`]), and every check that can be made before anything
//! runs (unknown keys, types, references, cycles). Every problem is a [`Diagnostic`] that points
//! at a file, line and column.
//!
//! Must not touch: the filesystem beyond reading the pipeline file and the files it calls
//! (packages in the package directories it is given, other run definitions), the cache, or
//! processes.

mod artifact_refs;
pub mod calls;
mod config;
mod diagnostic;
mod duration;
mod dynamic;
pub mod expr;
mod filter;
mod model;
mod outputs;
mod parallel;
mod parse;
mod size;
mod triggers;
mod validate;
mod yaml;

pub use artifact_refs::{ARTIFACT_REFS_DIR, ArtifactRef};
pub use calls::{LoadOptions, PackageSources};
pub use config::{Config, ConfigEnv, LocalConfig, is_git_url, load_config, plain_env};
pub use diagnostic::{Diagnostic, Diagnostics, Level, Location};
pub use duration::parse_duration;
pub use dynamic::{DynamicFile, DynamicTasks, parse_dynamic_tasks};
pub use filter::{Filter, FilterEntry, Visibility};
pub use model::{
    BackgroundProcess, Base, CachePolicy, Dialect, Docker, EnvConfig, EnvMerge, EnvValue, EnvVar,
    HostBase, Note, Pipeline, ReadyCheck, SharedCacheDecl, Task, TaskKind, TaskName, Text,
    TrustedKeyDecl, Unsupported, WorkspaceSource,
};
pub use outputs::{
    ArtifactDecl, FilesystemFilter, FilesystemOutput, Retry, TaskOutputs, TestResultsDecl,
};
pub use parallel::replace_groups as replace_parallel_groups;
pub use parallel::{
    Dimension, Parallel, ParallelGroup, ParallelInstance, ParallelKind, ParallelSpec, ValuesSpec,
};
pub use parse::DOCKERD_PROCESS;
pub use parse::expressions::{NAMESPACES, RUN_FIELDS, TASK_STATUSES};
pub use parse::outputs::valid_artifact_key;
pub use parse::task::check_tool_cache_name;
pub use parse::{dialect_of, load, load_with, parse_str, parse_with};
pub use size::parse_size;
pub use triggers::{Trigger, TriggerEvent, Triggers};
