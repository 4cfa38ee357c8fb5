//! The host side of `strata shell`: the helper started with strata's own stdin, stdout and
//! stderr (nothing piped, nothing logged), waited for, and the terminal handed back.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

use crate::cgroup::{CGROUP_ERROR_FILE, TaskCgroup};
use crate::init::{INIT_ARG, SETUP_FAILED};
use crate::setup::{MOUNTPOINTS_FILE, SETUP_ERROR_FILE};
use crate::spawn::{Exit, Outcome, SandboxError};
use crate::spec::{Attached, HelperSpec, SandboxSpec};

/// Runs `attached` in the sandbox `spec` describes (its `command` is not run) and waits for it.
///
/// The helper stays in strata's session and process group: a Ctrl-C there reaches the program
/// (the helper survives it), and with `attached.terminal` the program makes itself the
/// terminal's foreground group, which strata takes back once it has ended. The caller decides
/// what strata itself does with SIGINT meanwhile.
pub fn run_attached(
    exe: &Path,
    spec: &SandboxSpec,
    attached: &Attached,
) -> Result<Exit, SandboxError> {
    let cgroup = TaskCgroup::create(&spec.task).ok();
    let mut spec = spec.clone();
    spec.cgroups = cgroup.as_ref().map(TaskCgroup::dirs).unwrap_or_default();
    let status = start_and_wait(exe, spec.clone(), attached);
    if attached.terminal {
        take_back_terminal();
    }
    let usage = cgroup.map(TaskCgroup::finish).unwrap_or_default();
    let code = status?;
    let usage = if spec.scratch.join(CGROUP_ERROR_FILE).exists() {
        Default::default()
    } else {
        usage
    };
    let outcome = match std::fs::read_to_string(spec.scratch.join(SETUP_ERROR_FILE)) {
        Ok(message) if code == SETUP_FAILED => Outcome::SetupFailed(message),
        _ => Outcome::Exited(code),
    };
    Ok(Exit { outcome, usage })
}

fn start_and_wait(exe: &Path, spec: SandboxSpec, attached: &Attached) -> Result<i32, SandboxError> {
    let spec_path = spec.scratch.join("spec.json");
    let write_err = |source| SandboxError::WriteSpec {
        path: spec_path.clone(),
        source,
    };
    std::fs::create_dir_all(&spec.scratch).map_err(write_err)?;
    for stale in [SETUP_ERROR_FILE, MOUNTPOINTS_FILE, CGROUP_ERROR_FILE] {
        let _ = std::fs::remove_file(spec.scratch.join(stale));
    }
    let helper = HelperSpec {
        spec,
        attached: Some(attached.clone()),
    };
    std::fs::write(
        &spec_path,
        serde_json::to_vec(&helper).expect("spec serializes"),
    )
    .map_err(write_err)?;
    let spawn_err = |source| SandboxError::Spawn {
        exe: exe.to_path_buf(),
        source,
    };
    let mut cmd = Command::new(exe);
    cmd.arg(INIT_ARG).arg(&spec_path).env_clear();
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // Dies with strata, so a killed strata takes the sandbox with it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let status = cmd
        .spawn()
        .map_err(spawn_err)?
        .wait()
        .map_err(SandboxError::Wait)?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Makes strata's process group the foreground group of its terminal again (the program took
/// it), so that strata's last words and the user's shell find the terminal as they left it.
fn take_back_terminal() {
    // SAFETY: signal and tcsetpgrp on our own terminal; SIGTTOU is ignored only around the call
    // that would otherwise stop strata, now a background group.
    unsafe {
        let previous = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        libc::signal(libc::SIGTTOU, previous);
    }
}
