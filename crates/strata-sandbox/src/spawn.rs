//! The host side: start the helper, hand out its output, kill it, read how it ended.

use std::io::PipeReader;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

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
}

/// Sends SIGKILL to the helper (and with it the whole task). Safe to use after the helper has
/// been reaped: it holds a pidfd, not a pid that could be reused.
#[derive(Clone)]
pub struct Killer(Arc<Option<OwnedFd>>, u32);

impl Killer {
    /// Asks the task to stop: SIGTERM to every process of its process group (the helper, which
    /// ignores it, and the task's processes, which all stay in the helper's group: the shell
    /// runs without job control). The shell is PID 1 of the task's PID namespace, so it gets the
    /// signal only if it traps it; its children get it as usual. Follow with [`Killer::kill`]
    /// after a grace period.
    pub fn terminate(&self) {
        // The helper is alive while the pidfd says so: only then is its group ours to signal.
        let alive = match self.0.as_ref() {
            Some(fd) => {
                rustix::process::pidfd_send_signal(fd, rustix::process::Signal::CONT).is_ok()
            }
            None => true,
        };
        if alive {
            // SAFETY: kill(2) on the process group our child leads (it called setsid).
            unsafe { libc::kill(-(self.1 as libc::pid_t), libc::SIGTERM) };
        }
    }

    pub fn kill(&self) {
        match self.0.as_ref() {
            Some(fd) => {
                let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
            }
            None => {
                // SAFETY: kill(2) on our own child's pid, before it is reaped.
                unsafe { libc::kill(self.1 as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

pub struct RunningSandbox {
    child: Child,
    output: Option<PipeReader>,
    scratch: PathBuf,
    killer: Killer,
}

/// Starts the helper (`exe`, normally the running `strata` binary) for `spec`. Its stdout and
/// stderr are one pipe, read with [`RunningSandbox::take_output`].
pub fn spawn(exe: &Path, spec: &SandboxSpec) -> Result<RunningSandbox, SandboxError> {
    let spec_path = spec.scratch.join("spec.json");
    let write_err = |source| SandboxError::WriteSpec {
        path: spec_path.clone(),
        source,
    };
    std::fs::create_dir_all(&spec.scratch).map_err(write_err)?;
    for stale in [SETUP_ERROR_FILE, MOUNTPOINTS_FILE] {
        let _ = std::fs::remove_file(spec.scratch.join(stale));
    }
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
    let pidfd = rustix::process::Pid::from_raw(child.id() as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    Ok(RunningSandbox {
        killer: Killer(Arc::new(pidfd), child.id()),
        child,
        output: Some(reader),
        scratch: spec.scratch.clone(),
    })
}

impl RunningSandbox {
    /// The task's combined stdout and stderr; EOF when every process of the task is gone.
    pub fn take_output(&mut self) -> Option<PipeReader> {
        self.output.take()
    }

    pub fn killer(&self) -> Killer {
        self.killer.clone()
    }

    /// Waits for the helper to exit.
    pub fn wait(mut self) -> Result<Outcome, SandboxError> {
        let status = self.child.wait().map_err(SandboxError::Wait)?;
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        if code == SETUP_FAILED
            && let Ok(message) = std::fs::read_to_string(self.scratch.join(SETUP_ERROR_FILE))
        {
            return Ok(Outcome::SetupFailed(message));
        }
        Ok(Outcome::Exited(code))
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
