//! What a task's test result files said, kept with its entry (in its exported outputs), so
//! that a restored task still reports its tests. Parsed by the engine (`test_results.rs`);
//! here only the plain data every consumer shares: the terminal, `--json`, reports.

use serde::{Deserialize, Serialize};

/// The tests of one task: counts over every case, and the cases themselves (failed ones first,
/// at most [`TestResults::MAX_CASES`] kept; the counts stay exact).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResults {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Cases beyond [`TestResults::MAX_CASES`] were counted but not kept.
    #[serde(default)]
    pub truncated: bool,
    pub cases: Vec<TestCase>,
    /// The result files read, as found in the task's filesystem.
    #[serde(default)]
    pub files: Vec<String>,
}

/// One test case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCase {
    /// The suite (JUnit `testsuite` name, nested ones joined with ` / `; the `classname` when
    /// there is no suite name).
    pub suite: String,
    pub name: String,
    pub status: TestStatus,
    /// The failure or error message (its first 4 KiB), or why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestStatus {
    Passed,
    /// A failed assertion or an error (JUnit's `failure` and `error`).
    Failed,
    Skipped,
}

impl TestResults {
    /// Cases kept with an entry: enough for any report, bounded so an entry stays small.
    pub const MAX_CASES: usize = 2000;

    pub fn total(&self) -> u64 {
        self.passed + self.failed + self.skipped
    }

    /// The failed cases, as `suite > name`.
    pub fn failing_names(&self) -> Vec<String> {
        self.cases
            .iter()
            .filter(|c| c.status == TestStatus::Failed)
            .map(|c| {
                if c.suite.is_empty() {
                    c.name.clone()
                } else {
                    format!("{} > {}", c.suite, c.name)
                }
            })
            .collect()
    }

    /// Adds a case, counting it and keeping it while there is room (a failure takes the place
    /// of a kept passing case when full).
    pub fn add(&mut self, case: TestCase) {
        match case.status {
            TestStatus::Passed => self.passed += 1,
            TestStatus::Failed => self.failed += 1,
            TestStatus::Skipped => self.skipped += 1,
        }
        self.keep(case);
    }

    /// Adds the counts and cases of `other` (another file of the same task).
    pub fn absorb(&mut self, other: TestResults) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.truncated |= other.truncated;
        for c in other.cases {
            self.keep(c);
        }
    }

    /// Keeps a counted case while there is room.
    fn keep(&mut self, case: TestCase) {
        if self.cases.len() < Self::MAX_CASES {
            self.cases.push(case);
            return;
        }
        self.truncated = true;
        if case.status == TestStatus::Failed
            && let Some(i) = self
                .cases
                .iter()
                .rposition(|c| c.status != TestStatus::Failed)
        {
            self.cases[i] = case;
        }
    }
}
