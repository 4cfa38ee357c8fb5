//! `strata shell`: a program or an interactive shell in a task's filesystem, as its command
//! would see it, with nothing recorded.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Counter, Fixture};

/// A parent that installs a "tool" and exports a variable, and a task that sees the workspace,
/// declares env (one variable from a secret) and uses it.
const PIPELINE: &str = r#"tasks:
  - key: tools
    run: |
      mkdir -p /opt/tool
      echo v1 > /opt/tool/version
      echo /opt/tool/bin > "$STRATA_ENV/TOOL_HOME"
  - key: build
    use: [tools]
    filter: [src]
    env:
      MODE: release
      TOKEN: ${{ secrets.TOKEN }}
    run: cat src/main.c
"#;

const SECRET: &str = "s3cr3t-value";

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.write("src/main.c", "int main;\n");
    f.write("strata.yml", PIPELINE);
    f
}

fn shell(f: &Fixture, args: &[&str]) -> Output {
    let mut all = vec!["shell"];
    all.extend_from_slice(args);
    f.command(&all)
        .env("STRATA_SECRET_TOKEN", SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn run(f: &Fixture) -> common::RunResult {
    let start = Instant::now();
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_SECRET_TOKEN", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    common::RunResult {
        code: out.status.code().unwrap_or(-1),
        events: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wall: start.elapsed(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn cmd_sees_the_parents_files_the_workspace_and_the_env() {
    let f = fixture();
    let r = run(&f);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = shell(
        &f,
        &[
            "strata.yml",
            "build",
            "--",
            "sh",
            "-c",
            r#"cat /opt/tool/version; cat src/main.c; echo "$MODE $TOOL_HOME $TOKEN"; pwd; hostname"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("v1\nint main;\nrelease /opt/tool/bin {SECRET}\n/workspace\nbuild\n")
    );
    // The same confinement as the task: Docker's capabilities, so no mounting.
    let out = shell(
        &f,
        &[
            "strata.yml",
            "build",
            "--",
            "mount",
            "-t",
            "tmpfs",
            "x",
            "/mnt",
        ],
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "an unprivileged task cannot mount"
    );
}

#[test]
fn changes_are_discarded_and_nothing_is_recorded() {
    let f = fixture();
    assert_eq!(run(&f).code, 0);
    let layers = entries(&f.cache.path().join("layers"));
    let out = shell(
        &f,
        &[
            "strata.yml",
            "build",
            "--",
            "sh",
            "-c",
            "echo x > /opt/tool/extra && echo y > /workspace/new && rm src/main.c",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = shell(
        &f,
        &[
            "strata.yml",
            "build",
            "--",
            "sh",
            "-c",
            "test ! -e /opt/tool/extra && test ! -e /workspace/new && test -e src/main.c",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "a second shell saw the first one's changes: {}",
        text(&out.stderr)
    );
    assert_eq!(
        entries(&f.cache.path().join("layers")),
        layers,
        "a shell added a layer"
    );
    let r = run(&f);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("tools"), "restored");
    assert_eq!(r.status("build"), "restored");
}

#[test]
fn failed_shows_what_the_failing_command_left() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: base\n    run: echo base > /opt/base\n  - key: flaky\n    use: [base]\n    run: |\n      echo partial > /workspace/out.txt\n      mkdir -p /opt/half\n      echo 'it broke' >&2\n      exit 4\n",
    );
    // No failure kept yet.
    let out = shell(&f, &["--failed", "strata.yml", "flaky", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no kept failure"),
        "{}",
        text(&out.stderr)
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1);
    let out = shell(
        &f,
        &[
            "strata.yml",
            "flaky",
            "--failed",
            "--",
            "sh",
            "-c",
            "cat /workspace/out.txt /opt/base && test -d /opt/half",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "partial\nbase\n");
    // Without --failed: the filesystem the command starts from.
    let out = shell(
        &f,
        &[
            "strata.yml",
            "flaky",
            "--",
            "test",
            "-e",
            "/workspace/out.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    // The kept files are not changed by a shell over them.
    let out = shell(
        &f,
        &[
            "strata.yml",
            "flaky",
            "--failed",
            "--",
            "rm",
            "/workspace/out.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = shell(
        &f,
        &[
            "strata.yml",
            "flaky",
            "--failed",
            "--",
            "cat",
            "/workspace/out.txt",
        ],
    );
    assert_eq!(text(&out.stdout), "partial\n");
}

#[test]
fn exit_status_passes_through() {
    let f = fixture();
    assert_eq!(run(&f).code, 0);
    let code = |args: &[&str]| {
        let mut all = vec!["strata.yml", "build", "--"];
        all.extend_from_slice(args);
        shell(&f, &all).status.code()
    };
    assert_eq!(code(&["sh", "-c", "exit 7"]), Some(7));
    assert_eq!(code(&["false"]), Some(1));
    assert_eq!(code(&["true"]), Some(0));
    assert_eq!(code(&["no-such-program"]), Some(127));
    assert_eq!(code(&["sh", "-c", "kill -TERM $$"]), Some(128 + 15));
    // Without CMD and without a terminal, the shell reads its commands from stdin.
    let mut child = f
        .command(&["shell", "strata.yml", "build"])
        .env("STRATA_SECRET_TOKEN", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo from-stdin $MODE\nexit 3\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "from-stdin release\n");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn unknown_task_is_exit_2_before_the_cache_is_opened() {
    let f = fixture();
    let cache = f.cache.path().join("never-created");
    let out = f
        .command(&["shell", "strata.yml", "nope", "--", "true"])
        .env("STRATA_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no task named `nope`"),
        "{}",
        text(&out.stderr)
    );
    assert!(!cache.exists(), "the cache was opened");
}

#[test]
fn a_parent_without_an_entry_is_refused_and_nothing_runs() {
    let f = Fixture::new();
    let counter = Counter::start();
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: tools\n    run: {}\n  - key: build\n    use: [tools]\n    run: true\n",
            counter.ping("tools")
        ),
    );
    let out = shell(&f, &["strata.yml", "build", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("`tools`") && stderr.contains("strata run --target tools"),
        "{stderr}"
    );
    assert!(counter.take().is_empty(), "strata shell ran a task");
    // A task with no parent needs nothing from the cache.
    let out = shell(
        &f,
        &["strata.yml", "tools", "--", "test", "-d", "/workspace"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        counter.take().is_empty(),
        "strata shell ran the task's command"
    );
}

#[test]
fn parents_only_in_a_shared_cache_are_restored_first() {
    let f = fixture();
    let remote = tempfile::Builder::new()
        .prefix("strata-remote-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let url = format!("file://{}", remote.path().display());
    let out = f
        .command(&["run", "--remote", &url])
        .env("STRATA_SECRET_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Another machine: an empty local cache.
    let local = common::CacheDir::new("strata-cache-");
    let out = f
        .command(&[
            "shell",
            "strata.yml",
            "build",
            "--remote",
            &url,
            "--",
            "cat",
            "/opt/tool/version",
        ])
        .env("STRATA_CACHE_DIR", local.path())
        .env("STRATA_SECRET_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "v1\n");
}

/// A tmux server of the test's own, killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cwd: &Path, cache: &Path) -> Tmux {
        let tmux = Tmux {
            socket: format!("strata-shell-test-{}", std::process::id()),
        };
        let status = tmux
            .cmd()
            .args(["new-session", "-d", "-x", "160", "-y", "40", "-c"])
            .arg(cwd)
            .args(["bash", "--norc", "--noprofile"])
            .status()
            .expect("tmux must be installed for this test");
        assert!(status.success());
        tmux.send(&format!(
            "export STRATA_CACHE_DIR={} STRATA_SECRET_TOKEN={SECRET} PS1='outer$ '",
            cache.display()
        ));
        tmux
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn send(&self, line: &str) {
        self.keys(&["-l", line]);
        self.keys(&["Enter"]);
    }

    fn keys(&self, keys: &[&str]) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", "0"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "0"])
            .output()
            .unwrap();
        text(&out.stdout)
    }

    /// Waits until the screen shows `needle`, and returns the screen.
    fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {needle:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[test]
fn interactive_shell_in_a_terminal_with_job_control() {
    let f = fixture();
    assert_eq!(run(&f).code, 0);
    let tmux = Tmux::start(f.ws(), f.cache.path());
    tmux.send(&format!(
        "{} shell strata.yml build",
        env!("CARGO_BIN_EXE_strata")
    ));
    // The shell's prompt: the task's hostname and working directory.
    tmux.wait_for("@build:/workspace#", Duration::from_secs(30));
    tmux.send("echo \"seen-$(cat /opt/tool/version)-$MODE-$(hostname)\"");
    tmux.wait_for("seen-v1-release-build", Duration::from_secs(10));
    // A controlling terminal: job control is on (`m` in `$-`) and `/dev/tty` opens.
    tmux.send("case $- in *m*) echo job-control-on;; esac; : </dev/tty && echo has-a-ctty");
    tmux.wait_for("job-control-on", Duration::from_secs(10));
    tmux.wait_for("has-a-ctty", Duration::from_secs(10));
    // Ctrl-C interrupts a command in the shell, not strata: the same shell answers after it.
    tmux.send("sleep 60; echo slept-$?");
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    tmux.keys(&["C-c"]);
    tmux.send("echo after-$(hostname)");
    tmux.wait_for("after-build", Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !tmux.screen().contains("slept-0"),
        "the sleep was not interrupted"
    );
    // The shell's exit status is strata's, and the terminal is the outer shell's again.
    tmux.send("exit 5");
    tmux.send("echo strata-exited-$?");
    tmux.wait_for("strata-exited-5", Duration::from_secs(10));
}
