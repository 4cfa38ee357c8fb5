//! The host side: start the helper, hand out its output, kill it, read how it ended.

use std::io::PipeReader;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use crate::background::{BACKGROUND_ERROR_FILE, BACKGROUND_FAILED};
use crate::cgroup::{self, CGROUP_ERROR_FILE, TaskCgroup, Usage};
use crate::init::{INIT_ARG, SETUP_FAILED};
use crate::setup::{MOUNTPOINTS_FILE, SETUP_ERROR_FILE};
use crate::spec::SandboxSpec;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("failed to write the sandbox spec {path}")]
    WriteSpec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start the sandbox helper {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to wait for the sandbox helper")]
    Wait(#[source] std::io::Error),
}

/// How the task's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited (128 + N when killed by signal N).
    Exited(i32),
    /// The sandbox could not be built; the command never ran.
    SetupFailed(String),
    /// A background process exited or was not ready in time; the command never ran. The
    /// task's failure, not strata's.
    BackgroundFailed(String),
}

/// How the task ended and what it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub outcome: Outcome,
    /// Measured by the task's cgroup; empty without one.
    pub usage: Usage,
}

/// Kills the whole task: every process of its cgroup at once, and the helper (whose death
/// takes the task's PID namespace with it). Safe to use after the helper has been reaped: it
/// holds a pidfd, not a pid that could be reused.
#[derive(Clone)]
pub struct Killer {
    pidfd: Arc<Option<OwnedFd>>,
    pid: u32,
    cgroup: Option<Arc<PathBuf>>,
}

impl Killer {
    /// Asks the task to stop: SIGTERM to every process of its process group (the helper, which
    /// ignores it, and the task's processes, which all stay in the helper's group: the shell
    /// runs without job control). The shell is PID 1 of the task's PID namespace, so it gets the
    /// signal only if it traps it; its children get it as usual. Follow with [`Killer::kill`]
    /// after a grace period.
    pub fn terminate(&self) {
        // The helper is alive while the pidfd says so: only then is its group ours to signal.
        let alive = match self.pidfd.as_ref() {
            Some(fd) => {
                rustix::process::pidfd_send_signal(fd, rustix::process::Signal::CONT).is_ok()
            }
            None => true,
        };
        if alive {
            // SAFETY: kill(2) on the process group our child leads (it called setsid).
            unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGTERM) };
        }
    }

    pub fn kill(&self) {
        if let Some(leaf) = &self.cgroup {
            cgroup::kill(leaf);
        }
        match self.pidfd.as_ref() {
            Some(fd) => {
                let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
            }
            None => {
                // SAFETY: kill(2) on our own child's pid, before it is reaped.
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

pub struct RunningSandbox {
    child: Child,
    output: Option<PipeReader>,
    scratch: PathBuf,
    outputs_dir: PathBuf,
    /// The task has background processes: PID 1 supervises them.
    supervised: bool,
    killer: Killer,
    cgroup: Option<TaskCgroup>,
    notice: Option<String>,
}

/// Starts the helper (`exe`, normally the running `strata` binary) for `spec`, in a cgroup of
/// its own where the machine allows. Its stdout and stderr are one pipe, read with
/// [`RunningSandbox::take_output`].
pub fn spawn(exe: &Path, spec: &SandboxSpec) -> Result<RunningSandbox, SandboxError> {
    let (task_cgroup, notice) = match TaskCgroup::create(&spec.task) {
        Ok(c) => (Some(c), None),
        Err(reason) => (None, cgroup::take_notice(&reason)),
    };
    let mut spec = spec.clone();
    spec.cgroups = task_cgroup
        .as_ref()
        .map(TaskCgroup::dirs)
        .unwrap_or_default();
    let (child, reader) = match start_helper(exe, &spec) {
        Ok(started) => started,
        Err(e) => {
            if let Some(c) = task_cgroup {
                c.finish();
            }
            return Err(e);
        }
    };
    let pidfd = rustix::process::Pid::from_raw(child.id() as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    Ok(RunningSandbox {
        killer: Killer {
            pidfd: Arc::new(pidfd),
            pid: child.id(),
            cgroup: task_cgroup
                .as_ref()
                .map(|c| Arc::new(c.leaf().to_path_buf())),
        },
        child,
        output: Some(reader),
        scratch: spec.scratch.clone(),
        outputs_dir: spec.outputs_dir.clone(),
        supervised: !spec.background.is_empty(),
        cgroup: task_cgroup,
        notice,
    })
}

fn start_helper(exe: &Path, spec: &SandboxSpec) -> Result<(Child, PipeReader), SandboxError> {
    let spec_path = spec.scratch.join("spec.json");
    let write_err = |source| SandboxError::WriteSpec {
        path: spec_path.clone(),
        source,
    };
    std::fs::create_dir_all(&spec.scratch).map_err(write_err)?;
    for stale in [SETUP_ERROR_FILE, MOUNTPOINTS_FILE, CGROUP_ERROR_FILE] {
        let _ = std::fs::remove_file(spec.scratch.join(stale));
    }
    let _ = std::fs::remove_file(spec.outputs_dir.join(BACKGROUND_ERROR_FILE));
    std::fs::write(
        &spec_path,
        serde_json::to_vec(spec).expect("spec serializes"),
    )
    .map_err(write_err)?;
    let spawn_err = |source| SandboxError::Spawn {
        exe: exe.to_path_buf(),
        source,
    };
    let (reader, writer) = std::io::pipe().map_err(spawn_err)?;
    let mut cmd = Command::new(exe);
    cmd.arg(INIT_ARG)
        .arg(&spec_path)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(spawn_err)?)
        .stderr(writer);
    // SAFETY: setsid and prctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // Its own session: a Ctrl-C at the terminal reaches strata, which decides.
            libc::setsid();
            // Dies with the strata thread that started it, so a killed strata kills its tasks.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(spawn_err)?;
    drop(cmd); // closes our copies of the pipe's write end, so EOF comes when the task ends
    Ok((child, reader))
}

impl RunningSandbox {
    /// The task's combined stdout and stderr; EOF when every process of the task is gone.
    pub fn take_output(&mut self) -> Option<PipeReader> {
        self.output.take()
    }

    pub fn killer(&self) -> Killer {
        self.killer.clone()
    }

    /// Something the run should say once (tasks get no cgroup on this machine, or this one
    /// could not join its cgroup).
    pub fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }

    /// Waits for the helper to exit, then for the task's cgroup to empty; removes the cgroup.
    pub fn wait(mut self) -> Result<Exit, SandboxError> {
        let status = self.child.wait();
        let usage = self
            .cgroup
            .take()
            .map(TaskCgroup::finish)
            .unwrap_or_default();
        let status = status.map_err(SandboxError::Wait)?;
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        // A helper that could not join its cgroup ran the task outside it: its figures would
        // be someone else's.
        let usage = if self.scratch.join(CGROUP_ERROR_FILE).exists() {
            Usage::default()
        } else {
            usage
        };
        // Only a supervising PID 1 writes it; a command exiting 124 (`timeout`'s status) of a
        // task without background processes is the command's own failure.
        let background_error = || {
            std::fs::read_to_string(self.outputs_dir.join(BACKGROUND_ERROR_FILE))
                .ok()
                .filter(|_| code == BACKGROUND_FAILED && self.supervised)
        };
        let outcome = match std::fs::read_to_string(self.scratch.join(SETUP_ERROR_FILE)) {
            Ok(message) if code == SETUP_FAILED => Outcome::SetupFailed(message),
            _ => match background_error() {
                Some(message) => Outcome::BackgroundFailed(message),
                None => Outcome::Exited(code),
            },
        };
        Ok(Exit { outcome, usage })
    }

    /// Mount points the helper created inside the upper dir (relative paths).
    pub fn created_mountpoints(scratch: &Path) -> Vec<String> {
        std::fs::read_to_string(scratch.join(MOUNTPOINTS_FILE))
            .map(|s| {
                s.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}
