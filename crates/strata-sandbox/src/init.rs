//! The helper process: `strata __strata-sandbox-init SPEC`. It is single-threaded, so it may
//! unshare and fork freely.
//!
//! helper (new session) --unshare(mnt, pid, uts, ipc)--> fork --> child = PID 1 of the new PID
//! namespace: mounts, pivot_root, exec the shell. The helper waits and exits with the child's
//! status. For `strata shell` ([`Attached`]) PID 1 stays a minimal init instead: it forks the
//! program, reaps, and exits with the program's status. The child dies with the helper
//! (PDEATHSIG), and the kernel kills every process of a PID namespace when its PID 1 dies:
//! killing the helper kills the whole task.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::cgroup::CGROUP_ERROR_FILE;
use crate::setup::{MOUNTPOINTS_FILE, SETUP_ERROR_FILE, confine, setup_root};
use crate::spec::{Attached, HelperSpec, SandboxSpec};
use crate::syscalls::{LinuxSyscalls, Syscalls};

/// The hidden first argument that turns the `strata` binary into the helper.
pub const INIT_ARG: &str = "__strata-sandbox-init";

/// Exit status of the helper when the sandbox could not be set up (details in
/// [`SETUP_ERROR_FILE`]).
pub(crate) const SETUP_FAILED: i32 = 125;

/// Runs the helper; never returns.
pub fn init_main(spec_path: &Path) -> ! {
    let HelperSpec { spec, attached } = match std::fs::read(spec_path)
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
        if attached.is_some() {
            // `strata shell` stays in strata's process group: a Ctrl-C there is the program's
            // to handle, not a reason to tear the sandbox down.
            libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        }
    }
    // While `/proc` still names the helper's children by the PIDs it gets.
    if let Err(message) = crate::idmap::prepare(&spec) {
        fail(message);
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
        0 => run_pid1(&spec, attached.as_ref()),
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
    exit_code(status)
}

/// A wait status as an exit code: the program's, or 128 + the signal that killed it.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        SETUP_FAILED
    }
}

fn run_pid1(spec: &SandboxSpec, attached: Option<&Attached>) -> ! {
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
    if let Some(attached) = attached {
        run_attached(spec, attached);
    }
    // As RWX runs commands: bash, stopping at the first failing command, and a pipeline fails
    // when any part of it fails (`make | tee log`). Plain `sh -e` where there is no bash.
    let (shell, flags): (&str, &[&str]) = match bash() {
        Some(bash) => (bash, &["-e", "-o", "pipefail"]),
        None => ("/bin/sh", &["-e"]),
    };
    if !spec.background.is_empty() {
        crate::background::supervise(spec, shell, flags);
    }
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

/// bash, where the stack has it.
fn bash() -> Option<&'static str> {
    ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|s| Path::new(s).exists())
}

/// PID 1 of `strata shell`: starts the program as its child, reaps whatever else ends, and exits
/// with the program's status (the kernel then kills what is left of the namespace). The program
/// is not PID 1, so the signals a terminal or `kill` sends it arrive: a namespace's init gets
/// only those it has a handler for.
fn run_attached(spec: &SandboxSpec, attached: &Attached) -> ! {
    let (program, args) = match attached.argv.split_first() {
        Some((program, args)) => (program.as_str(), args),
        None => (bash().unwrap_or("/bin/sh"), &[][..]),
    };
    // SAFETY: PID 1 is single-threaded, so the child may do anything the parent could.
    let pid = match unsafe { libc::fork() } {
        -1 => {
            eprintln!("strata: fork: {}", std::io::Error::last_os_error());
            std::process::exit(SETUP_FAILED)
        }
        0 => {
            if attached.terminal {
                take_terminal();
            }
            let err = std::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&spec.cwd)
                .exec();
            eprintln!("strata: cannot run {program} in the sandbox: {err}");
            std::process::exit(if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
        pid => pid,
    };
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on our own children.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WUNTRACED) };
        if r == -1 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            std::process::exit(SETUP_FAILED);
        }
        if r != pid {
            continue; // an orphan of the sandbox, reaped
        }
        if libc::WIFSTOPPED(status) {
            // Ctrl-Z on a program without job control: nothing in the sandbox would ever
            // resume it, and strata cannot be suspended from inside.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            continue;
        }
        std::process::exit(exit_code(status));
    }
}

/// Makes the calling process the leader of a new process group and that group the foreground
/// group of its controlling terminal (stdin), as a shell does for a job: Ctrl-C and Ctrl-Z then
/// reach it, and an interactive bash finds itself in the foreground and turns job control on.
/// strata, its helper and PID 1 stay in strata's group, now in the background.
fn take_terminal() {
    // SAFETY: setpgid, signal, tcsetpgrp and getpgrp are async-signal-safe; SIGTTOU is ignored
    // only around the call that would otherwise stop a background group taking the terminal.
    unsafe {
        libc::setpgid(0, 0);
        let previous = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        libc::signal(libc::SIGTTOU, previous);
    }
}
