//! `--success-output` and `--failure-output` (nextest's model): when the output of passing and
//! of failing tasks is shown on the terminal. With both `immediate` (the default) output
//! streams live as tasks print it; any other choice holds each task's output until the task
//! ends, then shows it at once (`immediate`), after the run (`final`), both, or not at all.
//! `--json` and the logs always get every line.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use strata_engine::{Event, Reporter};

use crate::reporter::TerminalReporter;

/// When a task's output is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ShowOutput {
    /// When the task ends (live, when both settings are `immediate`).
    Immediate,
    /// After the run, before its summary.
    Final,
    /// Both when the task ends and after the run.
    ImmediateFinal,
    /// Not at all (`strata logs TASK` has it).
    Never,
}

impl ShowOutput {
    fn immediate(self) -> bool {
        matches!(self, ShowOutput::Immediate | ShowOutput::ImmediateFinal)
    }
    fn at_the_end(self) -> bool {
        matches!(self, ShowOutput::Final | ShowOutput::ImmediateFinal)
    }
}

/// What a held task's output may take: beyond it, its oldest lines go (the log keeps them).
const HELD_BYTES_PER_TASK: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Held {
    lines: VecDeque<String>,
    bytes: usize,
    /// Lines dropped from the front, and bytes the display never got (`task-output-skipped`).
    dropped_lines: u64,
    skipped_bytes: u64,
}

impl Held {
    fn push(&mut self, line: &str) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line.to_string());
        while self.bytes > HELD_BYTES_PER_TASK {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.len() + 1;
            self.dropped_lines += 1;
        }
    }
}

/// Holds task output and releases it to the terminal reporter as the settings say.
pub(crate) struct OutputPolicy {
    inner: Arc<TerminalReporter>,
    success: ShowOutput,
    failure: ShowOutput,
    held: Mutex<HashMap<String, Held>>,
    /// Output shown after the run, in the order the tasks ended: (task, passed, output).
    at_the_end: Mutex<Vec<(String, bool, Held)>>,
}

impl OutputPolicy {
    /// `None` when both are `immediate`: output streams live, as without the options.
    pub(crate) fn new(
        inner: Arc<TerminalReporter>,
        success: ShowOutput,
        failure: ShowOutput,
    ) -> Option<OutputPolicy> {
        if success == ShowOutput::Immediate && failure == ShowOutput::Immediate {
            return None;
        }
        Some(OutputPolicy {
            inner,
            success,
            failure,
            held: Mutex::new(HashMap::new()),
            at_the_end: Mutex::new(Vec::new()),
        })
    }

    fn release(&self, task: &str, held: &Held) {
        let left_out = match (held.dropped_lines, held.skipped_bytes) {
            (0, 0) => None,
            (0, b) => Some(crate::reporter::bytes(b)),
            (n, 0) => Some(format!("{n} lines")),
            (n, b) => Some(format!("{n} lines and {}", crate::reporter::bytes(b))),
        };
        if let Some(what) = left_out {
            self.inner.note(
                task,
                &format!("… {what} of output not shown here (`strata logs {task}` has every line)"),
            );
        }
        for line in &held.lines {
            self.inner.event(&Event::TaskOutput {
                task: task.to_string(),
                line: line.clone(),
            });
        }
    }

    /// Releases or keeps the output of a task that ended; whether it was shown just now.
    fn ended(&self, task: &str, passed: bool) -> bool {
        let held = self
            .held
            .lock()
            .expect("held lock")
            .remove(task)
            .unwrap_or_default();
        let setting = if passed { self.success } else { self.failure };
        if held.lines.is_empty() && held.skipped_bytes == 0 {
            return false;
        }
        if setting.immediate() {
            self.release(task, &held);
        }
        if setting.at_the_end() {
            self.at_the_end
                .lock()
                .expect("end lock")
                .push((task.to_string(), passed, held));
        }
        setting.immediate()
    }
}

impl Reporter for OutputPolicy {
    fn event(&self, event: &Event) {
        match event {
            Event::TaskOutput { task, line } => {
                self.held
                    .lock()
                    .expect("held lock")
                    .entry(task.clone())
                    .or_default()
                    .push(line);
                return;
            }
            Event::TaskOutputSkipped { task, bytes } => {
                self.held
                    .lock()
                    .expect("held lock")
                    .entry(task.clone())
                    .or_default()
                    .skipped_bytes += bytes;
                return;
            }
            Event::TaskPassed { task, .. } => {
                self.ended(task, true);
            }
            Event::TaskFailed { task, .. } => {
                let shown_in_full = self.ended(task, false);
                if shown_in_full {
                    // Its whole output was just shown: the failure line need not repeat the
                    // last lines of its log.
                    let mut shown = event.clone();
                    if let Event::TaskFailed { log_tail, .. } = &mut shown {
                        log_tail.clear();
                    }
                    self.inner.event(&shown);
                    return;
                }
            }
            Event::RunFinished(_) => {
                let finals = std::mem::take(&mut *self.at_the_end.lock().expect("end lock"));
                for (task, passed, held) in finals {
                    let what = if passed { "passed" } else { "failed" };
                    self.inner
                        .note(&task, &format!("── output of `{task}` ({what}) ──"));
                    self.release(&task, &held);
                }
            }
            _ => {}
        }
        self.inner.event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_output_keeps_its_newest_lines_within_the_bound() {
        let mut held = Held::default();
        let line = "x".repeat(1023);
        for _ in 0..(HELD_BYTES_PER_TASK / 1024 + 10) {
            held.push(&line);
        }
        assert!(held.bytes <= HELD_BYTES_PER_TASK);
        assert_eq!(held.dropped_lines, 10);
    }
}
