//! The pipeline model: reads a pipeline file (our dialect of RWX Mint's run definitions) into a
//! validated, typed [`Pipeline`].
//!
//! Owns: YAML parsing with source positions, the task model, `filter` globs, durations, RWX's
//! `${{ … }}` expression language ([`expr`]), and every check that can be made before anything
//! runs (unknown keys, types, references, cycles). Every problem is a [`Diagnostic`] that points
//! at a file, line and column.
//!
//! Must not touch: the filesystem beyond reading the one pipeline file, the cache, or processes.

mod config;
mod diagnostic;
mod duration;
pub mod expr;
mod filter;
mod model;
mod parse;
mod size;
mod triggers;
mod validate;
mod yaml;

pub use config::{Config, ConfigEnv, LocalConfig, load_config, plain_env};
pub use diagnostic::{Diagnostic, Diagnostics, Level, Location};
pub use duration::parse_duration;
pub use filter::Filter;
pub use model::{
    Base, CachePolicy, Dialect, EnvValue, EnvVar, HostBase, Note, Pipeline, RemoteCacheDecl, Task,
    TaskKind, TaskName, Text, Unsupported, WorkspaceSource,
};
pub use parse::expressions::{NAMESPACES, RUN_FIELDS};
pub use parse::{dialect_of, load, parse_str};
pub use size::parse_size;
pub use triggers::{Trigger, TriggerEvent, Triggers};
