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
    /// Host directory mounted at [`SandboxSpec::OUTPUTS_DIR`]: what the task hands on besides
    /// its files (exported env, values, errors), one subdirectory each.
    pub outputs_dir: PathBuf,
    /// The working directory inside the sandbox.
    pub cwd: PathBuf,
    pub command: String,
    /// The task's complete environment: nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// All capabilities, `/sys` writable, nothing of `/proc` hidden, device nodes usable: the
    /// pipeline's explicit opt-in (docs/security.md).
    #[serde(default)]
    pub privileged: bool,
    /// cgroup directories the helper joins first (a cgroup v2 leaf, and on a hybrid host a
    /// memory v1 leaf); empty where the machine offers none.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// `background-processes`: started in the sandbox before the command, which waits for
    /// their ready checks; stopped when it ends (`background.rs`).
    #[serde(default)]
    pub background: Vec<BackgroundProcess>,
    /// Host directories bound read-write into the task's root after its overlay is mounted,
    /// outside the layer (a private `dockerd`'s data root, which cannot live on an overlay).
    #[serde(default)]
    pub binds: Vec<BindMount>,
    /// Overlays mounted over directories of the task's root once it is mounted, before
    /// anything else: a task's `/workspace` served from the checkout itself, whose upper dir
    /// lies inside the task's own, so that what the task writes there is part of its layer.
    #[serde(default)]
    pub overlays: Vec<OverlayMount>,
}

/// An overlay mounted at `target` (relative to the task's root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayMount {
    pub target: PathBuf,
    /// Top first.
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
    /// Lower dirs shown through an idmapped bind mount, their owner's files as root's.
    #[serde(default)]
    pub idmapped: Vec<IdMappedLower>,
}

/// The lower dir at `lower` (an index into `lowerdirs`), whose files belong to `uid`:`gid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMappedLower {
    pub lower: usize,
    pub uid: u32,
    pub gid: u32,
}

/// One of a task's `background-processes`, its expressions resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackgroundProcess {
    /// Unique within the task; prefixes the process's output lines in the log.
    pub key: String,
    pub run: String,
    pub ready_check: Option<ReadyCheck>,
    /// Keys of the processes that must be ready before this one starts.
    pub after: Vec<String>,
    /// Between SIGTERM to the process's group and SIGKILL when the command has ended.
    pub grace_period: std::time::Duration,
}

/// A command run again and again until it exits 0 (the process is then ready), for at most
/// `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyCheck {
    pub run: String,
    pub timeout: std::time::Duration,
    /// Shell text run before `run` in the same shell (functions it may call), not shown in
    /// messages.
    #[serde(default)]
    pub prelude: String,
}

/// A host directory bound at `target` (absolute, inside the task's root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
}

impl SandboxSpec {
    /// Where the outputs directory is mounted inside the sandbox.
    pub const OUTPUTS_DIR: &str = "/run/strata";
    /// Subdirectories of the outputs directory, and the variables that name them inside the
    /// sandbox (RWX's names and the older `MINT_` ones).
    pub const OUTPUTS: &[(&str, &[&str])] = &[
        ("env", &["STRATA_ENV", "RWX_ENV", "MINT_ENV"]),
        ("values", &["RWX_VALUES", "MINT_VALUES"]),
        (
            "cache-key-excluded-env",
            &["RWX_CACHE_KEY_EXCLUDED_ENV", "MINT_CACHE_KEY_EXCLUDED_ENV"],
        ),
        ("errors", &["RWX_ERRORS", "MINT_ERRORS"]),
        // Scripts that tasks using this one run before and after their command.
        ("hooks-before-task", &["RWX_HOOKS_BEFORE_TASK"]),
        ("hooks-after-task", &["RWX_HOOKS_AFTER_TASK"]),
        // `outputs`: artifacts and test results the task hands over, and what a retry of it
        // is given (`$RWX_RETRY_ACTIONS/<action>/env/`).
        ("artifacts", &["RWX_ARTIFACTS", "MINT_ARTIFACTS"]),
        ("test-results", &["RWX_TEST_RESULTS", "MINT_TEST_RESULTS"]),
        (
            "retry-actions",
            &["RWX_RETRY_ACTIONS", "MINT_RETRY_ACTIONS"],
        ),
        (
            "dynamic-tasks",
            &["RWX_DYNAMIC_TASKS", "MINT_DYNAMIC_TASKS"],
        ),
        // RWX's image configuration (`user`, `workspace`, ...): read after the task, and said
        // not to be honoured (the engine's `image_config.rs`).
        ("image", &["RWX_IMAGE"]),
    ];
}

/// `strata shell`: what the helper runs in place of the task's command, attached to strata's
/// own stdin, stdout and stderr rather than to a pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// The program and its arguments, found in the task's `PATH`; empty: the shell (bash, else
    /// `sh`), which is interactive when its stdin is a terminal and reads commands from stdin
    /// otherwise.
    pub argv: Vec<String>,
    /// stdin is strata's controlling terminal: the program gets a process group of its own
    /// and is made the terminal's foreground group, so that job control and Ctrl-C work inside.
    pub terminal: bool,
}

/// What the helper reads: the task's spec, and for `strata shell` what runs in its place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HelperSpec {
    #[serde(flatten)]
    pub(crate) spec: SandboxSpec,
    #[serde(default)]
    pub(crate) attached: Option<Attached>,
}
