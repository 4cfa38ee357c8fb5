//! The helper process: `strata __strata-sandbox-init SPEC`. It is single-threaded, so it may
//! unshare and fork freely.
//!
//! helper (new session) --unshare(mnt, pid, uts, ipc)--> fork --> child = PID 1 of the new PID
//! namespace: mounts, pivot_root, exec the shell. The helper waits and exits with the child's
//! status. The child dies with the helper (PDEATHSIG), and the kernel kills every process of a
//! PID namespace when its PID 1 dies: killing the helper kills the whole task.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::cgroup::CGROUP_ERROR_FILE;
use crate::setup::{MOUNTPOINTS_FILE, SETUP_ERROR_FILE, confine, setup_root};
use crate::spec::SandboxSpec;
use crate::syscalls::{LinuxSyscalls, Syscalls};

/// The hidden first argument that turns the `strata` binary into the helper.
pub const INIT_ARG: &str = "__strata-sandbox-init";

/// Exit status of the helper when the sandbox could not be set up (details in
/// [`SETUP_ERROR_FILE`]).
pub(crate) const SETUP_FAILED: i32 = 125;

/// Runs the helper; never returns.
pub fn init_main(spec_path: &Path) -> ! {
    let spec: SandboxSpec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!(
                "strata: cannot read sandbox spec {}: {e}",
                spec_path.display()
            );
            std::process::exit(SETUP_FAILED)
        }
    };
    let fail = |message: String| -> ! {
        let _ = std::fs::write(spec.scratch.join(SETUP_ERROR_FILE), &message);
        eprintln!("strata: sandbox setup failed: {message}");
        std::process::exit(SETUP_FAILED)
    };
    // First, before anything forks: every process of the task is then in its cgroup.
    if let Err(message) = crate::cgroup::join(&spec.cgroups) {
        let _ = std::fs::write(spec.scratch.join(CGROUP_ERROR_FILE), &message);
        eprintln!("strata: warning: the task runs outside its cgroup: {message}");
    }
    // The helper survives a SIGTERM sent to the task's process group (a grace period before
    // SIGKILL): a handler, not SIG_IGN, so that the command, after exec, gets the default.
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: installing a handler that does nothing is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    // SAFETY: the helper is single-threaded; unshare has no memory-safety preconditions.
    if unsafe { libc::unshare(flags) } != 0 {
        fail(format!(
            "unshare namespaces: {} (strata's sandbox needs root)",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: single-threaded, so the child may do anything the parent could.
    match unsafe { libc::fork() } {
        -1 => fail(format!("fork: {}", std::io::Error::last_os_error())),
        0 => run_pid1(&spec),
        pid => std::process::exit(wait_for(pid)),
    }
}

fn wait_for(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: plain waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r == -1 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return SETUP_FAILED;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        SETUP_FAILED
    }
}

fn run_pid1(spec: &SandboxSpec) -> ! {
    let fail = |message: String| -> ! {
        let _ = std::fs::write(spec.scratch.join(SETUP_ERROR_FILE), &message);
        eprintln!("strata: sandbox setup failed: {message}");
        std::process::exit(SETUP_FAILED)
    };
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let sys = LinuxSyscalls;
    let (root, created) = setup_root(spec, &sys).unwrap_or_else(|e| fail(e.to_string()));
    if let Err(e) = std::fs::write(spec.scratch.join(MOUNTPOINTS_FILE), created.join("\n")) {
        fail(format!("record mount points: {e}"));
    }
    if let Err(e) = sys.pivot_root(&root) {
        fail(e.to_string());
    }
    if let Err(e) = confine(spec, &sys) {
        fail(e.to_string());
    }
    // As RWX runs commands: bash, stopping at the first failing command, and a pipeline fails
    // when any part of it fails (`make | tee log`). Plain `sh -e` where there is no bash.
    let bash = ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|s| Path::new(s).exists());
    let (shell, flags): (&str, &[&str]) = match bash {
        Some(bash) => (bash, &["-e", "-o", "pipefail"]),
        None => ("/bin/sh", &["-e"]),
    };
    let err = std::process::Command::new(shell)
        .args(flags)
        .arg("-c")
        .arg(&spec.command)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .exec();
    eprintln!("strata: cannot run {shell} in the sandbox: {err}");
    std::process::exit(127)
}
