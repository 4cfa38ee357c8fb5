//! Task output at volume: strata's memory stays bounded whatever a task prints (a gigabyte, one
//! 200 MB line), the saved log is byte for byte what the task printed, secrets are masked even
//! where they straddle the chunks the output is read in, and a billion-laughs file is refused
//! at once. strata's peak RSS is its `VmHWM`, polled while it runs.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Fixture;
use serde_json::Value;

/// strata's peak memory must stay under this whatever the task prints.
const RSS_LIMIT_KB: i64 = 100 * 1024;
/// The longest line an event carries, plus room for the note saying what was cut.
const LINE_LIMIT: usize = 64 * 1024 + 200;

/// What one strata process did: its exit code, peak RSS, and what the caller's `read` made of
/// its stdout.
struct Measured<T> {
    code: i32,
    /// The end of its stderr.
    stderr: String,
    max_rss_kb: i64,
    read: T,
}

/// strata's own peak RSS (`VmHWM`, which exec resets, so the test process's memory does not
/// count as `wait4`'s `ru_maxrss` would), polled until the process is gone.
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            // A process that exited has no memory left to report (and is a zombie until reaped).
            let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            else {
                break;
            };
            peak = peak.max(kb);
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    })
}

/// Runs `cmd` with stdout piped to `read` (stderr to a file, its end kept), watching its peak
/// RSS.
fn measure<T>(mut cmd: Command, read: impl FnOnce(&mut dyn Read) -> T) -> Measured<T> {
    let stderr = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone().unwrap())
        .spawn()
        .unwrap();
    let peak = watch_peak_rss(child.id());
    let mut stdout = child.stdout.take().unwrap();
    let read = read(&mut stdout);
    // Anything left unread must not block the child.
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let status = child.wait().unwrap();
    // 0 when the process was gone before it was first read (a fast failure).
    let max_rss_kb = peak.join().unwrap();
    let mut text = Vec::new();
    let mut stderr = stderr;
    use std::io::{Seek, SeekFrom};
    let len = stderr.seek(SeekFrom::End(0)).unwrap();
    stderr
        .seek(SeekFrom::Start(len.saturating_sub(2000)))
        .unwrap();
    stderr.read_to_end(&mut text).unwrap();
    Measured {
        code: status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&text).into_owned(),
        max_rss_kb,
        read,
    }
}

/// Output events read as they come, without keeping them all: how many lines, the longest,
/// the first few, and the last event.
#[derive(Default)]
struct EventStream {
    lines: u64,
    longest: usize,
    skipped_bytes: u64,
    first_lines: Vec<String>,
    last: Option<Value>,
}

fn read_events(out: &mut dyn Read) -> EventStream {
    let mut s = EventStream::default();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        // Millions of plain output lines: counted and measured without a full parse (the
        // JSON length is the line's as long as it has nothing to escape).
        if s.first_lines.len() == 5
            && let Some(text) = line.strip_prefix(r#"{"event":"task-output","task":"big","line":""#)
            && !text.contains('\\')
        {
            s.lines += 1;
            s.longest = s.longest.max(text.len() - 2);
            continue;
        }
        let event: Value = serde_json::from_str(&line).unwrap();
        match event["event"].as_str() {
            Some("task-output") => {
                let text = event["line"].as_str().unwrap();
                s.lines += 1;
                s.longest = s.longest.max(text.len());
                if s.first_lines.len() < 5 {
                    s.first_lines.push(text.to_string());
                }
            }
            Some("task-output-skipped") => {
                s.skipped_bytes += event["bytes"].as_u64().unwrap();
            }
            _ => {}
        }
        s.last = Some(event);
    }
    s
}

/// The SHA-256 of what `cmd` prints, by `sha256sum`.
fn sha256_of_output(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut sum = Command::new("sha256sum")
        .stdin(child.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    sum.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(sum.wait().unwrap().success());
    assert!(child.wait().unwrap().success());
    out.split_whitespace().next().unwrap().to_string()
}

const GIGABYTE: &str = "{ yes 'the quick brown fox jumps over the lazy dog, then the lazy dog sleeps on while the fox runs' || true; } | head -c 1G";

fn gigabyte_fixture() -> Fixture {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        &format!("tasks:\n  - key: big\n    run: |\n      {GIGABYTE}\n"),
    );
    f
}

/// One line of what the gigabyte task prints, over and over (`yes`), cut at 1 GiB.
const PATTERN: &[u8] =
    b"the quick brown fox jumps over the lazy dog, then the lazy dog sleeps on while the fox runs\n";

/// Compares the saved log with what the task printed, streamed, byte for byte.
fn assert_log_is_what_the_task_printed(f: &Fixture) {
    let mut logs = f
        .command(&["logs", "strata.yml", "big"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = logs.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut at: u64 = 0;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let offset = (at % PATTERN.len() as u64) as usize;
            let k = (PATTERN.len() - offset).min(chunk.len());
            assert_eq!(
                &chunk[..k],
                &PATTERN[offset..offset + k],
                "the log differs at byte {at}"
            );
            chunk = &chunk[k..];
            at += k as u64;
        }
    }
    assert!(logs.wait().unwrap().success());
    assert_eq!(at, 1 << 30, "the log's length");
}

#[test]
fn a_gigabyte_of_output_with_json_keeps_strata_small_and_the_log_whole() {
    let f = gigabyte_fixture();
    let m = measure(f.command(&["run", "--json"]), read_events);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(m.max_rss_kb > 0, "strata's memory was never read");
    assert!(
        m.max_rss_kb < RSS_LIMIT_KB,
        "strata's peak RSS was {} MB",
        m.max_rss_kb / 1024
    );
    let events = m.read;
    assert_eq!(events.last.as_ref().unwrap()["event"], "run-finished");
    assert_eq!(events.last.as_ref().unwrap()["ran"], 1);
    // Every byte is either shown or reported as skipped (the display may fall behind).
    assert!(events.lines > 0);
    assert!(events.longest <= LINE_LIMIT, "{}", events.longest);
    assert!(
        events.lines * 96 + events.skipped_bytes >= 1 << 30,
        "{} lines shown, {} bytes skipped",
        events.lines,
        events.skipped_bytes
    );
    assert_log_is_what_the_task_printed(&f);
}

#[test]
fn a_gigabyte_of_output_on_the_display_keeps_strata_small_and_the_log_whole() {
    let f = gigabyte_fixture();
    // The terminal display goes to stderr; stdout carries nothing.
    let m = measure(f.command(&["run"]), |out| {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(m.read.is_empty());
    assert!(m.max_rss_kb > 0, "strata's memory was never read");
    assert!(
        m.max_rss_kb < RSS_LIMIT_KB,
        "strata's peak RSS was {} MB",
        m.max_rss_kb / 1024
    );
    assert_log_is_what_the_task_printed(&f);
}

#[test]
fn a_200_mb_line_is_cut_in_events_and_kept_whole_in_the_log() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: line\n    run: |\n      head -c 200M /dev/zero | tr '\\0' x\n      echo\n      echo after\n",
    );
    let m = measure(f.command(&["run", "--json"]), read_events);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(m.max_rss_kb > 0, "strata's memory was never read");
    assert!(
        m.max_rss_kb < RSS_LIMIT_KB,
        "strata's peak RSS was {} MB",
        m.max_rss_kb / 1024
    );
    let events = m.read;
    assert!(events.longest <= LINE_LIMIT, "{}", events.longest);
    let first = &events.first_lines[0];
    assert!(first.starts_with(&"x".repeat(64 * 1024)));
    let rest = 200 * 1024 * 1024 - 64 * 1024;
    if events.skipped_bytes == 0 {
        assert_eq!(events.lines, 2, "{:?}", events.first_lines);
        assert!(
            first.ends_with(&format!(
                "[line cut at 64 KiB: {rest} more bytes are in the task's log]"
            )),
            "{}",
            &first[64 * 1024..]
        );
        assert_eq!(events.first_lines[1], "after");
    } else {
        // The display fell behind (a busy machine): the line is still shown, cut, with a note.
        assert!(first.ends_with("the rest of this line is in the task's log]"));
    }
    // The log has the whole line.
    let mut logs = f
        .command(&["logs", "strata.yml", "line"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(logs.stdout.take().unwrap());
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).unwrap();
    assert_eq!(line.len(), 200 * 1024 * 1024 + 1);
    assert!(line[..line.len() - 1].iter().all(|&b| b == b'x'));
    let mut tail = String::new();
    reader.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "after\n");
    assert!(logs.wait().unwrap().success());
}

#[test]
fn a_secret_straddling_the_reads_of_the_output_is_masked_in_log_and_events() {
    let f = Fixture::new();
    let secret = "pa55-w0rd-9876";
    // One write cut in the middle of the secret (two reads on strata's side, a pause apart),
    // then 3.9 MB of secrets on one line, across many reads of the pipe.
    f.write(
        "strata.yml",
        "tasks:
  - key: talk
    env:
      TOKEN: ${{ secrets.deploy-token }}
    run: |
      printf 'before %s' \"${TOKEN:0:7}\"
      sleep 0.3
      printf '%s after\\n' \"${TOKEN:7}\"
      yes \"x$TOKEN\" | head -n 262144 | tr -d '\\n' || true
      echo
      echo done
",
    );
    let out = f
        .command(&["run", "--json"])
        .env("STRATA_SECRET_DEPLOY_TOKEN", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(secret), "the secret is in the events");
    assert!(
        !stdout.contains("pa55-w0"),
        "part of the secret is in the events"
    );
    assert!(stdout.contains("before *** after"), "{stdout}");
    assert!(stdout.contains("x***x***x***"));
    let logs = f.output(&["logs", "strata.yml", "talk"]);
    assert!(logs.status.success());
    let log = String::from_utf8(logs.stdout).unwrap();
    assert!(!log.contains(secret), "the secret is in the log");
    assert!(!log.contains("pa55-w0"), "part of the secret is in the log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "before *** after");
    assert_eq!(lines[1], "x***".repeat(262144));
    assert_eq!(lines[2], "done");
}

#[test]
fn a_failure_shows_the_last_lines_of_a_large_output() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: fails\n    run: |\n      seq 1 300000\n      exit 3\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 1);
    let failed = r.event("task-failed", "fails").unwrap();
    let tail: Vec<&str> = failed["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let expected: Vec<String> = (299_981..=300_000).map(|n| n.to_string()).collect();
    assert_eq!(tail, expected);
}

#[test]
fn a_log_published_to_a_shared_cache_is_restored_whole() {
    let f = Fixture::new();
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    f.write(
        "strata.yml",
        "tasks:\n  - key: talk\n    run: seq 1 500000\n",
    );
    let a = f.output(&["run", "--remote", &url]);
    assert!(a.status.success());
    // A second machine: its own, empty local cache.
    let b_cache = common::CacheDir::new("strata-cache-b-");
    let b = f
        .command(&["run", "--json", "--remote", &url])
        .env("STRATA_CACHE_DIR", b_cache.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&b.stdout);
    assert!(stdout.contains("\"status\":\"restored\""), "{stdout}");
    assert!(!stdout.contains("task-output"), "{stdout}");
    let expected = sha256_of_output(Command::new("seq").args(["1", "500000"]));
    let restored = sha256_of_output(
        f.command(&["logs", "strata.yml", "talk"])
            .env("STRATA_CACHE_DIR", b_cache.path()),
    );
    assert_eq!(restored, expected);
}

#[test]
fn a_billion_laughs_file_is_refused_fast_with_its_position() {
    let f = Fixture::new();
    let mut text = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
        let items = vec![format!("*{prev}"); 9].join(", ");
        text.push_str(&format!("{name}: &{name} [{items}]\n"));
    }
    text.push_str("tasks:\n  - key: x\n    run: echo hi\n");
    f.write("strata.yml", &text);
    for cmd in [["check", "strata.yml"], ["run", "strata.yml"]] {
        let start = Instant::now();
        let m = measure(f.command(&cmd), |_| ());
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(m.code, 2, "{cmd:?}");
        assert!(m.max_rss_kb < RSS_LIMIT_KB, "{} MB", m.max_rss_kb / 1024);
    }
    let out = f.output(&["check", "strata.yml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("strata.yml:6:"), "{stderr}");
    assert!(stderr.contains("too large"), "{stderr}");
    // The cache was not even opened.
    assert_eq!(std::fs::read_dir(f.cache.path()).unwrap().count(), 0);
}
