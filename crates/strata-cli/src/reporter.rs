//! The two consumers of engine events: a live terminal display and a JSON line stream.
//!
//! Task output can arrive at hundreds of MB/s: both write through a buffer that a timer
//! flushes every [`FLUSH_EVERY`] (every other event flushes at once), and the line of a
//! task's output is written without going through the general rendering. When even that
//! cannot keep up, the engine drops live lines rather than slow the task (`task-output-skipped`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, IsTerminal, Stderr, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_engine::{Event, Reporter, TaskStatus, TaskUsage};
use strata_pipeline::Pipeline;

/// How long buffered task output may wait before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How often the status line is redrawn so that durations move.
const STATUS_EVERY: Duration = Duration::from_millis(250);
const BUFFER_BYTES: usize = 256 * 1024;

/// `--json`: one event per line; the last line is the summary.
pub(crate) struct JsonReporter {
    out: Mutex<BufWriter<Stdout>>,
}

impl JsonReporter {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(JsonReporter {
            out: Mutex::new(BufWriter::with_capacity(BUFFER_BYTES, std::io::stdout())),
        })
    }

    /// Flushes buffered output lines on a timer, until the returned guard is dropped.
    pub(crate) fn start_flusher(self: &Arc<Self>) -> Ticker {
        let me = Arc::clone(self);
        Ticker::start(move || {
            let _ = me.out.lock().expect("stdout lock").flush();
        })
    }
}

impl Reporter for JsonReporter {
    fn event(&self, event: &Event) {
        let mut out = self.out.lock().expect("stdout lock");
        let _ = serde_json::to_writer(&mut *out, event);
        let _ = out.write_all(b"\n");
        if !matches!(event, Event::TaskOutput { .. }) {
            let _ = out.flush();
        }
    }
}

/// Warnings only, on stderr: for commands that are not runs (`plan`, `explain`, `export`).
pub(crate) struct WarningsOnly;

impl Reporter for WarningsOnly {
    fn event(&self, event: &Event) {
        if let Event::Warning { message } = event {
            eprintln!("warning: {message}");
        }
    }
}

/// `12.3 MB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// ` (cpu 1.2s, peak 45.1 MB)`, or nothing where the task had no cgroup.
fn usage(u: &TaskUsage) -> String {
    let parts: Vec<String> = [
        u.cpu_ms.map(|ms| format!("cpu {}", seconds(ms))),
        u.peak_memory_bytes.map(|b| format!("peak {}", bytes(b))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

struct Display {
    out: BufWriter<Stderr>,
    /// `name | `, painted, per task: written before each line of its output.
    prefixes: HashMap<String, String>,
    /// When the status line was last drawn.
    status_at: Instant,
    running: BTreeMap<String, Instant>,
    /// Layers downloading: task -> (bytes so far, total).
    restoring: BTreeMap<String, (u64, u64)>,
    finished: usize,
    total: usize,
    status_shown: bool,
    /// Tests and retries, for the summary.
    outputs: crate::outputs_report::OutputsTally,
    /// Lines of a task's Docker daemon left out of the display, per task: said as it ends.
    daemon_lines: HashMap<String, u64>,
}

/// How the lines of a task's Docker daemon (`docker: true`) begin. They are the daemon's own
/// log, not the task's output: the display leaves them out (the task's log and `--json` keep
/// them), or a daemon's hundred lines of start-up and shutdown would bury the command's.
const DAEMON_LINE: &str = "[dockerd] ";

/// Task output prefixed by task, a line per task state change and, on a terminal, a status line
/// with the running tasks and their time so far.
pub(crate) struct TerminalReporter {
    display: Mutex<Display>,
    tty: bool,
    width: usize,
    colors: BTreeMap<String, &'static str>,
}

const PALETTE: &[&str] = &["36", "35", "34", "33", "32", "96", "95", "94"];

pub(crate) fn seconds(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if d.as_secs() >= 60 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl TerminalReporter {
    pub(crate) fn new(pipeline: &Pipeline) -> Arc<Self> {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Arc::new(TerminalReporter {
            display: Mutex::new(Display {
                out: BufWriter::with_capacity(BUFFER_BYTES, std::io::stderr()),
                prefixes: HashMap::new(),
                status_at: Instant::now(),
                running: BTreeMap::new(),
                restoring: BTreeMap::new(),
                finished: 0,
                total: pipeline.tasks.len(),
                status_shown: false,
                outputs: Default::default(),
                daemon_lines: HashMap::new(),
            }),
            tty,
            width: pipeline
                .tasks
                .iter()
                .map(|t| t.name.as_str().len())
                .max()
                .unwrap_or(4),
            colors: pipeline
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.to_string(), PALETTE[i % PALETTE.len()]))
                .collect(),
        })
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.tty {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn status_line(&self, d: &Display) -> String {
        let running: Vec<String> = d
            .running
            .iter()
            .map(|(t, since)| format!("{t} {}", seconds(since.elapsed().as_millis() as u64)))
            .collect();
        let mut line = format!("[{}/{}]", d.finished, d.total);
        if !running.is_empty() {
            line.push_str(&format!(" running: {}", running.join(", ")));
        }
        if !d.restoring.is_empty() {
            let (done, total) = d
                .restoring
                .values()
                .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
            line.push_str(&format!(
                " restoring {} layers: {} of {}",
                d.restoring.len(),
                bytes(done),
                bytes(total)
            ));
        }
        self.paint("2", &line)
    }

    /// Flushes buffered output on a timer and, on a terminal, redraws the status line a few
    /// times a second so that durations move.
    pub(crate) fn start_ticker(self: &Arc<Self>) -> Ticker {
        let me = Arc::clone(self);
        Ticker::start(move || {
            let mut d = me.display.lock().expect("display lock");
            let d = &mut *d;
            let wanted = me.tty && (!d.running.is_empty() || !d.restoring.is_empty());
            if wanted && (!d.status_shown || d.status_at.elapsed() >= STATUS_EVERY) {
                let line = me.status_line(d);
                let _ = write!(d.out, "\r\x1b[2K{line}");
                d.status_shown = true;
                d.status_at = Instant::now();
            }
            let _ = d.out.flush();
        })
    }

    /// A line about a task's output, not from it (`--success-output` and `--failure-output`
    /// say where held output begins, or that some was left out).
    pub(crate) fn note(&self, task: &str, text: &str) {
        let mut d = self.display.lock().expect("display lock");
        let d = &mut *d;
        if d.status_shown {
            let _ = d.out.write_all(b"\r\x1b[2K");
            d.status_shown = false;
        }
        let _ = writeln!(d.out, "{}", self.dim_line(task, text));
    }

    /// A task's name, right-aligned and in its color.
    fn task_name(&self, task: &str) -> String {
        let color = self.colors.get(task).copied().unwrap_or("0");
        self.paint(color, &format!("{task:>w$}", w = self.width))
    }

    /// `name text`, the text dimmed: what strata says about a task's output.
    fn dim_line(&self, task: &str, text: &str) -> String {
        format!("{} {}", self.task_name(task), self.paint("2", text))
    }

    /// A line of a task's output: the common event, written without the general rendering.
    fn output_line(&self, d: &mut Display, task: &str, line: &str) {
        if line.starts_with(DAEMON_LINE) {
            *d.daemon_lines.entry(task.to_string()).or_default() += 1;
            return;
        }
        if d.status_shown {
            let _ = d.out.write_all(b"\r\x1b[2K");
            d.status_shown = false;
        }
        if !d.prefixes.contains_key(task) {
            let prefix = format!("{} | ", self.task_name(task));
            d.prefixes.insert(task.to_string(), prefix);
        }
        let prefix = &d.prefixes[task];
        let _ = d.out.write_all(prefix.as_bytes());
        let _ = d.out.write_all(line.as_bytes());
        let _ = d.out.write_all(b"\n");
    }

    fn render(&self, event: &Event, d: &mut Display) -> Vec<String> {
        let name = |t: &str| self.task_name(t);
        match event {
            Event::RunStarted { tasks, jobs, .. } => {
                d.total = tasks.len();
                vec![self.paint(
                    "1",
                    &format!("strata: {} tasks, {jobs} at a time", tasks.len()),
                )]
            }
            Event::TaskOutput { task, line } => vec![format!("{} | {line}", name(task))],
            Event::TaskOutputSkipped { task, bytes: n } => vec![format!(
                "{} {}",
                name(task),
                self.paint(
                    "2",
                    &format!(
                        "… {} of output not shown here (the display fell behind; the task's log has every line)",
                        bytes(*n)
                    )
                )
            )],
            // Why a task missed is in `--json`, the run record and the report; the terminal
            // shows that it runs.
            Event::TaskMissed { .. } => Vec::new(),
            Event::TaskStarted { task, key, .. } => {
                d.running.insert(task.clone(), Instant::now());
                vec![format!(
                    "{} {} {}",
                    name(task),
                    self.paint("33", "▶ running"),
                    self.paint("2", &format!("(key {})", &key[..12]))
                )]
            }
            Event::TaskRestored {
                task,
                saved_ms,
                from,
                ..
            } => {
                d.finished += 1;
                if from == "workspace" {
                    return vec![format!(
                        "{} {}",
                        name(task),
                        self.paint("32", "✓ workspace checkout")
                    )];
                }
                let whence = if from == "local" {
                    String::new()
                } else {
                    format!("from {from}, ")
                };
                vec![format!(
                    "{} {} {}",
                    name(task),
                    self.paint("32", "✓ restored"),
                    self.paint("2", &format!("({whence}saved {})", seconds(*saved_ms)))
                )]
            }
            Event::RestoreProgress { task, bytes, total } => {
                d.restoring.insert(task.clone(), (*bytes, *total));
                Vec::new()
            }
            Event::ToolCacheRestored {
                task,
                tool_cache,
                files,
                bytes: n,
                duration_ms,
                ..
            } => {
                vec![format!(
                    "{} {} {tool_cache}: {files} files, {} in {}",
                    name(task),
                    self.paint("36", "↺ tool cache"),
                    bytes(*n),
                    seconds(*duration_ms)
                )]
            }
            // Quiet: the task's own line says it passed; `--json` has the record.
            Event::ToolCacheSaved { .. } | Event::ToolCachePushed { .. } => Vec::new(),
            Event::TaskWaiting { task, why } => {
                vec![format!(
                    "{} {} {why}",
                    name(task),
                    self.paint("33", "… waiting:")
                )]
            }
            Event::LayerPrefetching {
                task,
                bytes: n,
                needed_by,
                ..
            } => {
                let why = match needed_by {
                    Some(t) => format!("needed by `{t}`"),
                    None => "for restored tasks only".to_string(),
                };
                vec![format!(
                    "{} {} {} ahead ({why})",
                    name(task),
                    self.paint("36", "⇣ prefetching"),
                    bytes(*n)
                )]
            }
            Event::LayerFetched {
                task,
                bytes: n,
                duration_ms,
                ..
            } => {
                d.restoring.remove(task);
                if *n == 0 {
                    return Vec::new();
                }
                vec![format!(
                    "{} {} {} in {}",
                    name(task),
                    self.paint("36", "↓ fetched"),
                    bytes(*n),
                    seconds(*duration_ms)
                )]
            }
            Event::TaskPushed {
                task,
                bytes: n,
                caches: count,
                duration_ms,
            } => {
                let what = if *n == 0 {
                    "entry (the layer was there already)".to_string()
                } else {
                    bytes(*n)
                };
                let caches = if *count == 1 { "cache" } else { "caches" };
                vec![format!(
                    "{} {} {what} to {count} shared {caches} in {}",
                    name(task),
                    self.paint("36", "↑ pushed"),
                    seconds(*duration_ms)
                )]
            }
            Event::Warning { message } => {
                vec![self.paint("33", &format!("warning: {message}"))]
            }
            Event::LayerImagesUnavailable { reason } => {
                vec![self.paint(
                    "33",
                    &format!("note: restoring layers as directories, not images: {reason}"),
                )]
            }
            Event::TasksAdded { by, file, tasks } => {
                d.total += tasks.len();
                // A parallel task expanded at run time is replaced by its generated tasks.
                if file.is_none() {
                    d.finished += 1;
                }
                let from = file
                    .as_ref()
                    .map(|f| format!(" (from {f})"))
                    .unwrap_or_default();
                vec![format!(
                    "{} {} {}{from}",
                    name(by),
                    self.paint("36", "+ added"),
                    tasks.join(", ")
                )]
            }
            Event::TaskPassed {
                task,
                duration_ms,
                usage: used,
                ..
            } => {
                d.running.remove(task);
                d.finished += 1;
                vec![format!(
                    "{} {} in {}{}",
                    name(task),
                    self.paint("32", "✓ passed"),
                    seconds(*duration_ms),
                    self.paint("2", &usage(used))
                )]
            }
            Event::TaskFailed {
                task,
                reason,
                duration_ms,
                log_tail,
                kept_upper,
                errors,
                usage: used,
                ..
            } => {
                d.running.remove(task);
                d.finished += 1;
                d.outputs.errors(task, errors);
                let mut lines = vec![format!(
                    "{} {} after {}{}: {reason}",
                    name(task),
                    self.paint("31;1", "✗ failed"),
                    seconds(*duration_ms),
                    usage(used)
                )];
                for error in errors {
                    lines.extend(error.lines().enumerate().map(|(i, l)| {
                        let lead = if i == 0 { "error:" } else { "      " };
                        format!("{} {} {l}", name(task), self.paint("31;1", lead))
                    }));
                }
                if !log_tail.is_empty() {
                    lines.push(format!("{} last lines of its log:", name(task)));
                    lines.extend(
                        log_tail
                            .iter()
                            .map(|l| format!("{} {} {l}", name(task), self.paint("31", "│"))),
                    );
                }
                if let Some(dir) = kept_upper {
                    lines.push(format!("{} files it wrote are kept in {dir}", name(task)));
                }
                lines
            }
            Event::TaskRetrying {
                task,
                attempt,
                attempts,
                reason,
                ..
            } => vec![format!(
                "{} {} attempt {attempt}/{attempts} failed: {reason}; running it again",
                name(task),
                self.paint("33", "↻")
            )],
            Event::TaskPassedOnRetry {
                task,
                attempt,
                attempts,
            } => {
                let text = d.outputs.passed_on_retry(task, *attempt, *attempts);
                vec![format!("{} {}", name(task), self.paint("33", &text))]
            }
            Event::TaskTestResults { task, results } => d
                .outputs
                .tests(task, results)
                .into_iter()
                .map(|l| format!("{} {l}", name(task)))
                .collect(),
            Event::ArtifactsSaved {
                task,
                dir,
                artifacts,
            } => vec![format!(
                "{} artifacts {} copied to {dir}",
                name(task),
                artifacts.join(", ")
            )],
            Event::TaskSkipped { task, because } => {
                d.finished += 1;
                vec![format!(
                    "{} {} {because}",
                    name(task),
                    self.paint("2", "- skipped:")
                )]
            }
            Event::RunFinished(s) => {
                let mut lines = vec![String::new()];
                let verdict = if s.interrupted {
                    self.paint("31;1", "interrupted")
                } else if s.success() {
                    self.paint("32;1", "success")
                } else {
                    self.paint("31;1", "failed")
                };
                let by_condition = if s.skipped_by_condition > 0 {
                    format!(" ({} more by a condition)", s.skipped_by_condition)
                } else {
                    String::new()
                };
                lines.push(format!(
                    "{verdict}: {} ran, {} restored, {} failed, {} skipped{by_condition} in {} (restoring saved {})",
                    s.ran, s.restored, s.failed, s.skipped, seconds(s.duration_ms), seconds(s.saved_ms)
                ));
                if s.cpu_ms.is_some() || s.peak_memory_bytes.is_some() {
                    let cpu = s.cpu_ms.map(|ms| format!("{} CPU", seconds(ms)));
                    let peak = s
                        .peak_memory_bytes
                        .map(|b| format!("peak memory {}", bytes(b)));
                    let parts: Vec<String> = [cpu, peak].into_iter().flatten().collect();
                    lines.push(format!("tasks that ran used {}", parts.join(", ")));
                }
                if s.restored_bytes > 0 || s.pushed_bytes > 0 {
                    lines.push(format!(
                        "shared caches: {} downloaded, {} uploaded",
                        bytes(s.restored_bytes),
                        bytes(s.pushed_bytes)
                    ));
                }
                let failed: Vec<&str> = s
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.status == TaskStatus::Failed)
                    .map(|(n, _)| n.as_str())
                    .collect();
                lines.extend(d.outputs.summary());
                if !failed.is_empty() {
                    lines.push(format!("failed tasks: {}", failed.join(", ")));
                }
                lines
            }
        }
    }
}

/// A thread that calls its function every [`FLUSH_EVERY`] until this guard is dropped.
pub(crate) struct Ticker(Arc<AtomicBool>);

impl Ticker {
    fn start(tick: impl Fn() + Send + 'static) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(FLUSH_EVERY);
                if !flag.load(Ordering::Relaxed) {
                    tick();
                }
            }
        });
        Ticker(stop)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Reporter for TerminalReporter {
    fn event(&self, event: &Event) {
        let mut d = self.display.lock().expect("display lock");
        let d = &mut *d;
        if let Event::TaskOutput { task, line } = event {
            self.output_line(d, task, line);
            return;
        }
        let mut lines = self.render(event, d);
        // A failed run's log is kept, and so is a stored entry's; otherwise only `--json`
        // has the lines.
        let ended = match event {
            Event::TaskPassed { task, stored, .. } => Some((task, *stored)),
            Event::TaskFailed { task, .. } => Some((task, true)),
            _ => None,
        };
        if let Some((task, kept)) = ended
            && let Some(n) = d.daemon_lines.remove(task)
        {
            let has = if kept {
                "`strata logs` has them"
            } else {
                "`strata run --json` has them"
            };
            lines.push(self.dim_line(
                task,
                &format!("({n} lines of its Docker daemon's log not shown: {has})"),
            ));
        }
        if self.tty && d.status_shown {
            let _ = write!(d.out, "\r\x1b[2K");
        }
        for line in lines {
            let _ = writeln!(d.out, "{line}");
        }
        let finished = matches!(event, Event::RunFinished(_));
        d.status_shown =
            self.tty && !finished && (!d.running.is_empty() || !d.restoring.is_empty());
        if d.status_shown {
            let line = self.status_line(d);
            let _ = write!(d.out, "{line}");
            d.status_at = Instant::now();
        }
        let _ = d.out.flush();
    }
}
