use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the helper needs to build a task's root and run its command. Written as JSON into
/// the task's scratch directory and read back by the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Task name, used as the hostname and in messages.
    pub task: String,
    /// The base root filesystem (`/` for `base: host`).
    pub base: PathBuf,
    /// Overlay lower directories above the base, top first.
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
    /// A directory for the helper's own mount points (base view, merged root).
    pub scratch: PathBuf,
    /// Host directory mounted at [`SandboxSpec::ENV_DIR`] for the task's exported env.
    pub env_dir: PathBuf,
    /// The working directory inside the sandbox.
    pub cwd: PathBuf,
    pub command: String,
    /// The task's complete environment: nothing else is inherited.
    pub env: Vec<(String, String)>,
}

impl SandboxSpec {
    /// Where `$STRATA_ENV` points inside the sandbox.
    pub const ENV_DIR: &str = "/run/strata/env";
}
