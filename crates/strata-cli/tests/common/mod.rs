//! Shared test harness: a workspace and a cache of its own per test, the real `strata` binary,
//! and a TCP counter that proves from outside the sandbox which commands really ran.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// These tests mount overlays and create namespaces: they must run as root, and say so loudly
/// rather than pass without testing anything.
pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc_geteuid() };
    assert_eq!(
        uid, 0,
        "this test needs root (it mounts overlays and creates namespaces); run it as root"
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub struct Fixture {
    pub workspace: tempfile::TempDir,
    pub cache: CacheDir,
}

/// A temporary local cache. strata flushes what a run published from a detached process
/// (`settle-cache`); the directory is removed once no such process uses it any more, and once
/// the layer images strata mounted under it are detached.
pub struct CacheDir(tempfile::TempDir);

impl CacheDir {
    pub fn new(prefix: &str) -> CacheDir {
        CacheDir(
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/var/tmp")
                .unwrap(),
        )
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let needle = format!("settle-cache {}", self.path().display());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !processes_with(&needle).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Layer images stay mounted under the cache (`mounts/`): detached before the directory
        // goes, so that no test leaves a mount behind.
        strata_testkit::unmount_all_under(self.path());
    }
}

pub struct RunResult {
    pub code: i32,
    pub events: Vec<Value>,
    pub stderr: String,
    pub wall: Duration,
}

impl RunResult {
    /// What a finished `strata run --json` printed and exited with (`wall` left at zero).
    pub fn of(out: &Output) -> RunResult {
        RunResult {
            code: out.status.code().unwrap_or(-1),
            events: String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))
                })
                .collect(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            wall: Duration::ZERO,
        }
    }

    pub fn summary(&self) -> &Value {
        let last = self.events.last().expect("at least one event");
        assert_eq!(
            last["event"], "run-finished",
            "last event is the summary: {last}"
        );
        last
    }

    pub fn status(&self, task: &str) -> String {
        self.summary()["tasks"][task]["status"]
            .as_str()
            .unwrap_or("absent")
            .to_string()
    }

    /// Output lines of a task, in order.
    pub fn output(&self, task: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "task-output" && e["task"] == task)
            .map(|e| e["line"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The messages of the run's warnings.
    pub fn warnings(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "warning")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn event(&self, kind: &str, task: &str) -> Option<&Value> {
        self.events
            .iter()
            .find(|e| e["event"] == kind && e["task"] == task)
    }
}

pub fn strata() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    // On GitHub Actions a run appends to the job's summary and prints annotations: the suite's
    // runs must not (the tests that check it set these themselves).
    cmd.env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY");
    cmd
}

impl Fixture {
    pub fn new() -> Fixture {
        assert_root();
        Fixture {
            workspace: tempfile::Builder::new()
                .prefix("strata-ws-")
                .tempdir_in("/var/tmp")
                .unwrap(),
            cache: CacheDir::new("strata-cache-"),
        }
    }

    pub fn ws(&self) -> &Path {
        self.workspace.path()
    }

    pub fn pipeline(&self) -> PathBuf {
        self.ws().join("strata.yml")
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.ws().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = strata();
        cmd.args(args)
            .env("STRATA_CACHE_DIR", self.cache.path())
            .current_dir(self.ws());
        cmd
    }

    /// `strata run --json --remote REMOTE EXTRA…` in this workspace with `cache` as the local
    /// cache, and the credentials of the test S3 server.
    pub fn run_remote(&self, cache: &Path, remote: &str, extra: &[&str]) -> RunResult {
        let mut args = vec!["run", "--json", "--remote", remote];
        args.extend_from_slice(extra);
        let out = self
            .command(&args)
            .env("STRATA_CACHE_DIR", cache)
            .env("AWS_ACCESS_KEY_ID", strata_testkit::S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", strata_testkit::S3_SECRET_KEY)
            .output()
            .unwrap();
        RunResult::of(&out)
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `strata run --json` with extra arguments.
    pub fn run(&self, extra: &[&str]) -> RunResult {
        let mut args = vec!["run", "--json"];
        args.extend_from_slice(extra);
        let start = Instant::now();
        let out = self.output(&args);
        let wall = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let events = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        RunResult {
            code: out.status.code().unwrap_or(-1),
            events,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            wall,
        }
    }
}

/// Counts commands that really ran: a task does `ping NAME` (see [`Counter::ping`]), which
/// connects to this listener on loopback, outside the sandbox.
pub struct Counter {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Counter {
    pub fn start() -> Counter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut text = String::new();
                let _ = stream.read_to_string(&mut text);
                sink.lock().unwrap().push(text.trim().to_string());
            }
        });
        Counter { port, seen }
    }

    /// A shell command that reports `name` to the counter.
    pub fn ping(&self, name: &str) -> String {
        format!("echo {name} > /dev/tcp/127.0.0.1/{}", self.port)
    }

    /// The same for a shell without `/dev/tcp` (busybox `sh` in a base image), with `nc`.
    pub fn ping_nc(&self, name: &str) -> String {
        format!("echo {name} | nc 127.0.0.1 {}", self.port)
    }

    /// Names reported so far (sorted), and forgets them.
    pub fn take(&self) -> Vec<String> {
        // Connections are accepted asynchronously: give the last ones a moment.
        std::thread::sleep(Duration::from_millis(100));
        let mut v = std::mem::take(&mut *self.seen.lock().unwrap());
        v.sort();
        v
    }
}

/// Overlay mounts visible from the host whose options mention `needle`.
pub fn host_mounts_mentioning(needle: &str) -> Vec<String> {
    let file = std::fs::File::open("/proc/self/mountinfo").unwrap();
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains(needle))
        .collect()
}

/// Processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                // Arguments are NUL-separated.
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Runs git in `dir` (as a test user) and returns its output; a failure fails the test.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("git must be installed for these tests");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `strata run --json` and calls `meanwhile` once the task has started.
pub fn run_while(f: &Fixture, task: &str, meanwhile: impl FnOnce()) -> RunResult {
    let mut child = f
        .command(&["run", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let mut meanwhile = Some(meanwhile);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "task-started"
            && event["task"] == task
            && let Some(m) = meanwhile.take()
        {
            m();
        }
        lines.push(line);
    }
    let out = child.wait_with_output().unwrap();
    let mut stdout = lines.join("\n").into_bytes();
    stdout.push(b'\n');
    RunResult::of(&std::process::Output {
        status: out.status,
        stdout,
        stderr: out.stderr,
    })
}

/// Makes the fixture's workspace a git checkout of everything in it, in one commit on `main`.
pub fn checkout(f: &Fixture) {
    git(f.ws(), &["init", "-q", "-b", "main"]);
    git(f.ws(), &["add", "-A"]);
    git(f.ws(), &["commit", "-q", "-m", "first"]);
}
