//! The sandbox executor: runs one task's command over its overlay stack, in fresh mount, PID, UTS
//! and IPC namespaces, as root with Docker's default capabilities, in a cgroup of its own where
//! the machine allows (docs/security.md says what a task can and cannot reach).
//!
//! Owns: the helper process (`strata` re-executed with [`INIT_ARG`]) that unshares namespaces,
//! mounts the stack, pivots into it and execs the shell; the mount sequence (behind the
//! [`Syscalls`] trait so it can be checked without root); and the host-side handle that streams
//! output, kills the whole process tree and reports how the command ended; a task's background
//! processes, supervised by its PID 1 (`background.rs`); for `strata shell`,
//! the same sandbox with a program attached to strata's own terminal in its place (`attach.rs`).
//!
//! Every mount lives in the task's private mount namespace, so when its last process dies the
//! kernel drops them all: a killed strata leaves no mounts behind.
//!
//! Must not touch: the cache (it is handed directories) or the pipeline model.

mod attach;
mod background;
mod cgroup;
mod idmap;
mod init;
mod setup;
mod spawn;
mod spec;
mod syscalls;

pub use attach::run_attached;
pub use cgroup::{Usage, cgroup_roots, remove_cgroup_tree};
pub use init::{INIT_ARG, init_main};
pub use setup::{
    DEFAULT_CAPABILITIES, MOUNTPOINTS_FILE, SETUP_ERROR_FILE, confine, hostname_for, setup_root,
};
pub use spawn::{Exit, Killer, Outcome, RunningSandbox, SandboxError, spawn};
pub use spec::{
    Attached, BackgroundProcess, BindMount, IdMappedLower, OverlayMount, ReadyCheck, SandboxSpec,
};
pub use syscalls::{FileKind, LinuxSyscalls, RecordingSyscalls, Syscalls};
