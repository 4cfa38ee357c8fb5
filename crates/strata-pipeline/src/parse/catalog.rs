//! Every key of RWX's run-definition language, and what strata does with each: honours it,
//! accepts it with no effect (RWX's cloud), or
//! accepts it in `check` and refuses it in `run` until a later version implements it.

/// What strata does with a key it does not implement itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyStatus {
    /// Configures RWX's cloud (machines, UI, cancellation): nothing to do on this machine.
    NoEffect,
    /// Changes what a run does: `run` refuses the file until strata implements it.
    Later,
}

/// Task keys strata honours, for "did you mean" hints (with the others below).
const HONOURED_TASK_KEYS: &[&str] = &[
    "key",
    "run",
    "use",
    "after",
    "filter",
    "env",
    "cache",
    "timeout",
    "timeout-minutes",
    "terminate-grace-period-seconds",
    "env-config",
    "call",
    "with",
    "init",
    "target",
    "inherit-init",
    "if",
    "parallel",
    "tool-cache",
    "outputs",
    "retry",
    "background-processes",
    "docker",
];

const TASK_KEY_STATUS: &[(&str, KeyStatus)] = &[
    ("agent", KeyStatus::NoEffect),
    ("runner", KeyStatus::NoEffect),
    ("health-timeout", KeyStatus::NoEffect),
    ("auto-cancel", KeyStatus::NoEffect),
    ("bootstrapping", KeyStatus::NoEffect),
    ("app", KeyStatus::Later),
];

/// Every task key of the language, honoured or not.
pub(crate) fn task_keys() -> Vec<&'static str> {
    HONOURED_TASK_KEYS
        .iter()
        .copied()
        .chain(TASK_KEY_STATUS.iter().map(|(k, _)| *k))
        .collect()
}

pub(crate) fn task_key(key: &str) -> Option<KeyStatus> {
    TASK_KEY_STATUS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, s)| *s)
}

/// Top-level keys: strata's own (`cache`) and RWX's.
pub(crate) const TOP_LEVEL_KEYS: &[&str] = &[
    "tasks",
    "base",
    "cache",
    "on",
    "concurrency-pools",
    "tool-cache",
    "defaults",
    "aliases",
    "package",
    "parameters",
    "name",
    "version",
    "description",
    "source_code_url",
    "issue_tracker_url",
    "outputs",
];

pub(crate) fn top_level_key(key: &str) -> Option<KeyStatus> {
    match key {
        "concurrency-pools" | "defaults" => Some(KeyStatus::NoEffect),
        _ => None,
    }
}
