//! `background-processes`: when a task has any, PID 1 of its sandbox does not exec the command
//! but supervises. It starts each process (as soon as those in its `after` are ready), runs its
//! ready check again and again until it exits 0, starts the command once every process is
//! ready, and when the command has ended stops every process: SIGTERM to its process group,
//! SIGKILL when its grace period is over. It then exits with the command's status.
//!
//! Everything runs in the sandbox the command runs in: the same root, overlay, namespaces,
//! environment and working directory, so what a process writes is part of the task's layer as
//! the command's writes are. Each process has a process group of its own, so a signal reaches
//! everything it started (`pg_ctl`, a shell script's children); the command stays in the
//! helper's group, which strata signals on a timeout.
//!
//! A process's output (stdout and stderr, one pipe) is read by PID 1 and written, one whole
//! line per write and each prefixed with `[KEY] `, to the task's own output pipe: the host reads
//! it with the command's, through the same masking, log and live view. A line longer than
//! [`MAX_LINE`] is cut. Ready checks' output is discarded: they fail by design until the
//! process is up, and the process's own output says why it is not.
//!
//! A process that exits before it is ready fails the task at once, naming it; one that exits
//! while the command runs is reported in the log, and the command's status decides (a test
//! suite that needed it fails on its own, one that did not is not failed for it).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::{BackgroundProcess, SandboxSpec};

/// Written at the top of the outputs directory when a background process failed before the
/// command could start; the helper then exits with [`BACKGROUND_FAILED`].
pub(crate) const BACKGROUND_ERROR_FILE: &str = ".background-failure";
/// Exit status of the helper when a background process failed (the reason in
/// [`BACKGROUND_ERROR_FILE`]); the command never ran.
pub(crate) const BACKGROUND_FAILED: i32 = 124;
/// Pause between two attempts of a ready check.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often the loop wakes when nothing is written (to look at timers and children).
const TICK: Duration = Duration::from_millis(50);
/// Longest output line kept whole; the rest of a longer line follows on lines of its own.
const MAX_LINE: usize = 64 * 1024;
/// How long the output of stopped processes is still read (children that escaped their group
/// may hold the pipe open; PID 1's exit kills them).
const DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum State {
    /// Waiting for the processes of its `after` to be ready.
    Waiting,
    /// Started; its ready check has not passed yet.
    Starting {
        deadline: Instant,
        check: Check,
    },
    Ready,
    /// Its leader exited (its group may live on).
    Exited,
}

#[derive(Debug)]
enum Check {
    /// The next attempt starts at this instant.
    Idle(Instant),
    /// An attempt is running (its own process group).
    Running(i32),
}

struct Service<'a> {
    def: &'a BackgroundProcess,
    state: State,
    /// The process's pid, which is also its process group.
    pid: Option<i32>,
    output: Option<std::io::PipeReader>,
    partial: Vec<u8>,
    /// When it was started.
    started: Instant,
    /// When the group is SIGKILLed if it is still alive after SIGTERM.
    kill_at: Option<Instant>,
}

/// PID 1 of a task with background processes; never returns.
pub(crate) fn supervise(spec: &SandboxSpec, shell: &str, flags: &[&str]) -> ! {
    let mut services: Vec<Service<'_>> = spec
        .background
        .iter()
        .map(|def| Service {
            def,
            state: State::Waiting,
            pid: None,
            output: None,
            partial: Vec::new(),
            started: Instant::now(),
            kill_at: None,
        })
        .collect();
    let mut stdout = std::io::stdout().lock();
    if let Err(reason) = start_all(spec, &mut services, shell, flags, &mut stdout) {
        let _ = writeln!(stdout, "strata: {reason}");
        let _ = std::fs::write(
            Path::new(SandboxSpec::OUTPUTS_DIR).join(BACKGROUND_ERROR_FILE),
            &reason,
        );
        stop_all(&mut services, &mut stdout);
        std::process::exit(BACKGROUND_FAILED);
    }
    let command = Command::new(shell)
        .args(flags)
        .arg("-c")
        .arg(&spec.command)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .spawn();
    let status = match command {
        Ok(child) => {
            let pid = child.id() as i32;
            // Reaped below with every other child of PID 1, never through `child`.
            std::mem::forget(child);
            wait_for_command(pid, &mut services, &mut stdout)
        }
        Err(e) => {
            let _ = writeln!(stdout, "strata: cannot run {shell} in the sandbox: {e}");
            127
        }
    };
    stop_all(&mut services, &mut stdout);
    let _ = stdout.flush();
    std::process::exit(status)
}

/// Starts the processes in `after` order and waits until every one is ready. Err: why the task
/// fails (a process exited, a ready check timed out, a process could not start).
fn start_all(
    spec: &SandboxSpec,
    services: &mut [Service<'_>],
    shell: &str,
    flags: &[&str],
    out: &mut impl Write,
) -> Result<(), String> {
    loop {
        let ready: Vec<String> = services
            .iter()
            .filter(|s| matches!(s.state, State::Ready))
            .map(|s| s.def.key.clone())
            .collect();
        for service in services.iter_mut() {
            if matches!(service.state, State::Waiting)
                && service.def.after.iter().all(|a| ready.contains(a))
            {
                start(spec, service, shell, flags)?;
            }
        }
        if services.iter().all(|s| matches!(s.state, State::Ready)) {
            return Ok(());
        }
        relay_output(services, out, TICK);
        let now = Instant::now();
        while let Some((pid, code)) = reap_one() {
            if let Some(i) = services.iter().position(|s| s.pid == Some(pid)) {
                let before_ready = matches!(services[i].state, State::Starting { .. });
                services[i].state = State::Exited;
                let key = services[i].def.key.clone();
                if before_ready {
                    relay_output(services, out, Duration::ZERO);
                    return Err(format!(
                        "background process `{key}` exited with status {code} before it was ready"
                    ));
                }
                let _ = writeln!(out, "[{key}] strata: exited with status {code}");
                continue;
            }
            for s in services.iter_mut() {
                if let State::Starting { check, .. } = &mut s.state
                    && matches!(check, Check::Running(p) if *p == pid)
                {
                    if code == 0 {
                        let _ = writeln!(
                            out,
                            "[{}] strata: ready after {:.1} s",
                            s.def.key,
                            s.started.elapsed().as_secs_f64()
                        );
                        s.state = State::Ready;
                    } else {
                        *check = Check::Idle(now + CHECK_INTERVAL);
                    }
                }
            }
        }
        for s in services.iter_mut() {
            let State::Starting { deadline, check } = &mut s.state else {
                continue;
            };
            let ready_check = s
                .def
                .ready_check
                .as_ref()
                .expect("only checked processes wait");
            if now >= *deadline {
                if let Check::Running(pid) = check {
                    kill_group(*pid, libc::SIGKILL);
                }
                return Err(format!(
                    "background process `{}` was not ready after {} s (its ready check `{}` never \
                     succeeded)",
                    s.def.key,
                    ready_check.timeout.as_secs(),
                    ready_check.run.lines().next().unwrap_or_default()
                ));
            }
            if let Check::Idle(at) = check
                && now >= *at
            {
                let attempt = Command::new(shell)
                    .args(flags)
                    .arg("-c")
                    .arg(format!("{}\n{}", ready_check.prelude, ready_check.run))
                    .env_clear()
                    .envs(spec.env.iter().map(|(k, v)| (k, v)))
                    .current_dir(&spec.cwd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn()
                    .map_err(|e| format!("cannot run the ready check of `{}`: {e}", s.def.key))?;
                *check = Check::Running(attempt.id() as i32);
                std::mem::forget(attempt);
            }
        }
    }
}

fn start(
    spec: &SandboxSpec,
    service: &mut Service<'_>,
    shell: &str,
    flags: &[&str],
) -> Result<(), String> {
    let key = &service.def.key;
    let cannot = |e: std::io::Error| format!("cannot start background process `{key}`: {e}");
    let (reader, writer) = std::io::pipe().map_err(cannot)?;
    rustix::io::ioctl_fionbio(reader.as_fd(), true).map_err(|e| cannot(e.into()))?;
    // Its own group, so that stopping it reaches whatever it started. bash without `-e`: a
    // service script is not a build step, and RWX runs it as written.
    let child = Command::new(shell)
        .args(flags.iter().filter(|f| **f != "-e"))
        .arg("-c")
        .arg(&service.def.run)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(cannot)?)
        .stderr(writer)
        .process_group(0)
        .spawn()
        .map_err(cannot)?;
    service.pid = Some(child.id() as i32);
    service.started = Instant::now();
    std::mem::forget(child);
    service.output = Some(reader);
    service.state = match &service.def.ready_check {
        Some(check) => State::Starting {
            deadline: Instant::now() + check.timeout,
            check: Check::Idle(Instant::now()),
        },
        None => State::Ready,
    };
    Ok(())
}

/// Waits for the command, relaying the processes' output meanwhile; its exit status.
fn wait_for_command(command: i32, services: &mut [Service<'_>], out: &mut impl Write) -> i32 {
    loop {
        relay_output(services, out, TICK);
        while let Some((pid, code)) = reap_one() {
            if pid == command {
                return code;
            }
            if let Some(s) = services.iter_mut().find(|s| s.pid == Some(pid)) {
                s.state = State::Exited;
                let _ = writeln!(out, "[{}] strata: exited with status {code}", s.def.key);
            }
        }
    }
}

/// SIGTERM to every process's group, SIGKILL to those still alive after their grace period;
/// returns when every group is gone and their output is read.
fn stop_all(services: &mut [Service<'_>], out: &mut impl Write) {
    let now = Instant::now();
    for s in services.iter_mut() {
        if let Some(pid) = s.pid {
            kill_group(pid, libc::SIGTERM);
            // A stopped process would never see the SIGTERM.
            kill_group(pid, libc::SIGCONT);
            s.kill_at = Some(now + s.def.grace_period);
        }
        if let State::Starting {
            check: Check::Running(pid),
            ..
        } = s.state
        {
            kill_group(pid, libc::SIGKILL);
        }
    }
    loop {
        while reap_one().is_some() {}
        let now = Instant::now();
        let mut alive = false;
        for s in services.iter_mut() {
            let Some(pid) = s.pid else { continue };
            if !group_alive(pid) {
                continue;
            }
            alive = true;
            if s.kill_at.is_some_and(|at| now >= at) {
                let _ = writeln!(
                    out,
                    "[{}] strata: still running {} s after SIGTERM, killed",
                    s.def.key,
                    s.def.grace_period.as_secs()
                );
                kill_group(pid, libc::SIGKILL);
                s.kill_at = None;
            }
        }
        if !alive {
            break;
        }
        relay_output(services, out, TICK);
    }
    let until = Instant::now() + DRAIN;
    while services.iter().any(|s| s.output.is_some()) && Instant::now() < until {
        relay_output(services, out, TICK);
    }
    for s in services.iter_mut() {
        if !s.partial.is_empty() {
            let line = std::mem::take(&mut s.partial);
            write_line(out, &s.def.key, &line);
        }
    }
}

/// Waits up to `timeout` for output, then relays every whole line that arrived.
fn relay_output(services: &mut [Service<'_>], out: &mut impl Write, timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = services
        .iter()
        .filter_map(|s| s.output.as_ref())
        .map(|r| libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        std::thread::sleep(timeout);
        return;
    }
    // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
    unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
    let mut buf = [0u8; 64 * 1024];
    for s in services.iter_mut() {
        let Some(reader) = s.output.as_mut() else {
            continue;
        };
        loop {
            match reader.read(&mut buf) {
                Ok(0) => {
                    s.output = None;
                    break;
                }
                Ok(n) => {
                    s.partial.extend_from_slice(&buf[..n]);
                    while let Some(end) = s.partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = s.partial.drain(..=end).collect();
                        write_line(out, &s.def.key, &line[..line.len() - 1]);
                    }
                    while s.partial.len() >= MAX_LINE {
                        let line: Vec<u8> = s.partial.drain(..MAX_LINE).collect();
                        write_line(out, &s.def.key, &line);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock: nothing more for now
            }
        }
    }
}

/// One line, prefixed, in one write: whole lines of a process do not interleave with the
/// command's (a pipe write up to 4 KiB is atomic).
fn write_line(out: &mut impl Write, key: &str, line: &[u8]) {
    let mut bytes = Vec::with_capacity(key.len() + line.len() + 4);
    bytes.push(b'[');
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(b"] ");
    bytes.extend_from_slice(line);
    bytes.push(b'\n');
    let _ = out.write_all(&bytes);
    let _ = out.flush();
}

/// Reaps one ended child of PID 1 (a process, a check, the command or an orphan of the
/// namespace): its pid and exit status (128 + N when killed by signal N).
fn reap_one() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on our own children.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Some((pid, code))
}

fn kill_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process group PID 1 created.
    unsafe { libc::kill(-pgid, signal) };
}

/// Whether any process is left in the group (PID 1 reaps every zombie of the namespace).
fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks.
    unsafe { libc::kill(-pgid, 0) == 0 }
}
