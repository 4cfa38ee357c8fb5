//! The terminal's lines for what tasks' `outputs` and `retry` produce: test results,
//! retries, artifacts copied out, and their part of the run's summary.

use std::collections::BTreeMap;

use strata_key::{TestResults, TestStatus};

/// Failing tests named per task, live and in the summary; more are counted, not listed.
const FAILING_SHOWN: usize = 20;

/// What the summary says about tests and retries, gathered from the events.
#[derive(Default)]
pub(crate) struct OutputsTally {
    tests: BTreeMap<String, TestResults>,
    /// Tasks that passed after failing: (attempt, attempts).
    retried: BTreeMap<String, (u32, u32)>,
    /// What failed tasks wrote into `$RWX_ERRORS`.
    errors: BTreeMap<String, Vec<String>>,
}

impl OutputsTally {
    pub(crate) fn tests(&mut self, task: &str, results: &TestResults) -> Vec<String> {
        self.tests.insert(task.to_string(), results.clone());
        let mut lines = vec![format!("tests: {}", counts(results))];
        lines.extend(failing_lines(results));
        lines
    }

    pub(crate) fn passed_on_retry(&mut self, task: &str, attempt: u32, attempts: u32) -> String {
        self.retried.insert(task.to_string(), (attempt, attempts));
        format!("passed on attempt {attempt}/{attempts}")
    }

    pub(crate) fn errors(&mut self, task: &str, errors: &[String]) {
        if !errors.is_empty() {
            self.errors.insert(task.to_string(), errors.to_vec());
        }
    }

    /// The summary's lines: every task's tests together, the failing ones named, and the
    /// tasks that needed a retry (flaky).
    pub(crate) fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.tests.is_empty() {
            let mut all = TestResults::default();
            for r in self.tests.values() {
                all.passed += r.passed;
                all.failed += r.failed;
                all.skipped += r.skipped;
            }
            lines.push(format!(
                "tests: {} in {} task{}",
                counts(&all),
                self.tests.len(),
                if self.tests.len() == 1 { "" } else { "s" }
            ));
            for (task, r) in &self.tests {
                if r.failed > 0 {
                    lines.push(format!("failing tests of {task}:"));
                    lines.extend(failing_lines(r));
                }
            }
        }
        for (task, errors) in &self.errors {
            lines.push(format!("errors of {task}:"));
            for e in errors {
                lines.extend(e.lines().map(|l| format!("  {l}")));
            }
        }
        for (task, (attempt, attempts)) in &self.retried {
            lines.push(format!("{task} passed on attempt {attempt}/{attempts}"));
        }
        lines
    }
}

fn counts(r: &TestResults) -> String {
    format!(
        "{} passed, {} failed, {} skipped",
        r.passed, r.failed, r.skipped
    )
}

fn failing_lines(r: &TestResults) -> Vec<String> {
    let failing: Vec<_> = r
        .cases
        .iter()
        .filter(|c| c.status == TestStatus::Failed)
        .collect();
    let mut lines: Vec<String> = failing
        .iter()
        .take(FAILING_SHOWN)
        .map(|c| {
            let name = if c.suite.is_empty() {
                c.name.clone()
            } else {
                format!("{} > {}", c.suite, c.name)
            };
            match c.message.as_deref().and_then(|m| m.lines().next()) {
                Some(m) => format!("  ✗ {name}: {m}"),
                None => format!("  ✗ {name}"),
            }
        })
        .collect();
    let more = r.failed.saturating_sub(lines.len() as u64);
    if more > 0 {
        lines.push(format!("  … and {more} more"));
    }
    lines
}
