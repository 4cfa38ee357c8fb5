//! What the trials run against: the `strata` binary, the real servers on loopback, a directory
//! remote, and a scratch root whose name carries the campaign's marker (so that any process or
//! mount left behind can be traced back to it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::Server;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteKind {
    S3,
    Registry,
    Dir,
}

pub struct World {
    pub strata: PathBuf,
    /// `/var/tmp/strata-chaos-<marker>`: every cache, workspace and directory remote.
    pub root: PathBuf,
    /// Digits found in every task's command line and every path of the campaign.
    pub marker: String,
    pub s3: Server,
    pub registry: Server,
    /// PIDs of every `strata` process the campaign started (their cgroups must go).
    pub spawned: Vec<u32>,
}

impl World {
    pub fn new(strata: PathBuf) -> World {
        let marker = format!("{:08}", std::process::id() as u64 * 7919 % 100_000_000);
        let root = PathBuf::from(format!("/var/tmp/strata-chaos-{marker}"));
        std::fs::create_dir_all(&root).expect("create the campaign's root");
        World {
            strata,
            root,
            marker,
            s3: Server::s3("chaos"),
            registry: Server::registry(),
            spawned: Vec::new(),
        }
    }

    /// A remote of its own for trial `n` (a prefix, a repository, a directory).
    pub fn remote(&self, kind: RemoteKind, n: u64) -> Remote {
        match kind {
            RemoteKind::S3 => Remote {
                kind,
                url: format!("s3://chaos/t{n}?endpoint={}", self.s3.endpoint()),
                files: self.s3.dir.path().join("chaos").join(format!("t{n}")),
            },
            RemoteKind::Registry => Remote {
                kind,
                url: format!("oci://{}/chaos/t{n}", self.registry.host()),
                files: self.registry.dir.path().join("data/docker/registry/v2"),
            },
            RemoteKind::Dir => {
                let files = self.root.join(format!("remote-t{n}"));
                std::fs::create_dir_all(&files).expect("directory remote");
                Remote {
                    kind,
                    url: format!("file://{}", files.display()),
                    files,
                }
            }
        }
    }

    pub fn server(&mut self, kind: RemoteKind) -> Option<&mut Server> {
        match kind {
            RemoteKind::S3 => Some(&mut self.s3),
            RemoteKind::Registry => Some(&mut self.registry),
            RemoteKind::Dir => None,
        }
    }

    /// A workspace holding `strata.yml` with `yaml`.
    pub fn workspace(&self, name: &str, yaml: &[u8]) -> PathBuf {
        let ws = self.root.join(name);
        std::fs::create_dir_all(&ws).expect("workspace");
        std::fs::write(ws.join("strata.yml"), yaml).expect("pipeline file");
        ws
    }

    pub fn command(&self, ws: &Path, cache: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.strata);
        cmd.args(args)
            .current_dir(ws)
            .env("STRATA_CACHE_DIR", cache)
            .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
            .env_remove("STRATA_CACHE")
            .env_remove("STRATA_SIGNING_KEY")
            .env_remove("STRATA_TRUSTED_KEYS")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `strata run --json` (with `--remote URL`, or `--no-remote`), its events read on a
    /// thread and its stderr kept in `<cache>.stderr`.
    pub fn start_run(&mut self, ws: &Path, cache: &Path, remote: Option<&Remote>) -> Running {
        let mut args = vec!["run", "--json"];
        match remote {
            Some(r) => args.extend(["--remote", r.url.as_str()]),
            None => args.push("--no-remote"),
        }
        let stderr_path = cache.with_extension(format!("stderr{}", self.spawned.len()));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = self
            .command(ws, cache, &args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start strata");
        self.spawned.push(child.id());
        let (tx, rx) = channel();
        let stdout = child.stdout.take().expect("stdout");
        let leave = Arc::new(AtomicBool::new(false));
        let leaving = leave.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if leaving.load(Ordering::Relaxed) || tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            rx,
            events: Vec::new(),
            stderr_path,
            closed: false,
            leave,
        }
    }

    /// Runs to the end (at most `limit`).
    pub fn run(
        &mut self,
        ws: &Path,
        cache: &Path,
        remote: Option<&Remote>,
        limit: Duration,
    ) -> Outcome {
        self.start_run(ws, cache, remote).finish(limit)
    }
}

pub struct Remote {
    pub kind: RemoteKind,
    pub url: String,
    /// Where the server keeps this remote's files on disk (for a registry: its whole store).
    pub files: PathBuf,
}

pub struct Running {
    pub child: Child,
    rx: Receiver<String>,
    pub events: Vec<Value>,
    stderr_path: PathBuf,
    /// Its stdout reached end of file.
    closed: bool,
    /// Tells the reader to stop reading and close the pipe.
    leave: Arc<AtomicBool>,
}

/// How a `strata` process ended.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code, or `None` when a signal ended it (`signal` then says which).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub events: Vec<Value>,
    pub stderr: String,
    /// It did not end within its limit and was killed.
    pub hung: bool,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until an event matches `want`; false when the run ended or `limit` passed first.
    pub fn wait_for(&mut self, limit: Duration, want: impl Fn(&Value) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({"event": "not-json", "line": line}));
                    let hit = want(&event);
                    self.events.push(event);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    return false;
                }
            }
        }
    }

    /// Stops reading stdout: the pipe is closed at the next line strata writes.
    pub fn close_stdout(&mut self) {
        self.leave.store(true, Ordering::Relaxed);
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Reads every remaining event and reaps the process, killing it after `limit`.
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let deadline = Instant::now() + limit;
        let mut hung = false;
        loop {
            self.wait_for(Duration::from_millis(200), |_| false);
            if self.closed {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                // What is still in the pipe (a detached child may hold it open: not for long).
                if !self.closed {
                    self.wait_for(Duration::from_secs(2), |_| false);
                }
                break;
            }
            if Instant::now() > deadline && !hung {
                hung = true;
                let _ = self.child.kill();
            }
        }
        let status = self.child.wait().expect("reap strata");
        use std::os::unix::process::ExitStatusExt;
        Outcome {
            code: status.code(),
            signal: status.signal(),
            events: self.events,
            stderr: std::fs::read_to_string(&self.stderr_path).unwrap_or_default(),
            hung,
        }
    }
}

impl Outcome {
    pub fn status(&self, task: &str) -> String {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "run-finished")
            .and_then(|e| e["tasks"][task]["status"].as_str())
            .unwrap_or("absent")
            .to_string()
    }

    /// The output lines of `task`.
    pub fn output(&self, task: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "task-output" && e["task"] == task)
            .map(|e| e["line"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "warning")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// One line for a report: exit, statuses, warnings, the end of stderr.
    pub fn describe(&self) -> String {
        let statuses: Vec<String> = ["gen", "lib", "tool", "app", "odd", "over", "verify", "fill"]
            .iter()
            .map(|t| (t, self.status(t)))
            .filter(|(_, s)| s != "absent")
            .map(|(t, s)| format!("{t}={s}"))
            .collect();
        let tail: String = self
            .stderr
            .lines()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        format!(
            "exit {:?} signal {:?}{} [{}] warnings {:?} stderr: {}",
            self.code,
            self.signal,
            if self.hung { " HUNG" } else { "" },
            statuses.join(" "),
            self.warnings(),
            tail
        )
    }
}
