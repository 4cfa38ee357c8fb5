//! A task's `background-processes` and `docker`, as RWX's schema writes them.

use std::time::Duration;

use crate::diagnostic::Diagnostic;
use crate::model::{BackgroundProcess, Docker, ReadyCheck, Text};
use crate::parse::options::whole_number;
use crate::parse::scalars::{as_map, as_string, as_string_list, key_name, unknown_key};
use crate::yaml::{Node, Value};

/// The key of the background process that is a `docker: true` task's daemon.
pub const DOCKERD_PROCESS: &str = "dockerd";

const PROCESS_KEYS: &[&str] = &[
    "key",
    "run",
    "ready-check",
    "after",
    "terminate-grace-period-seconds",
];
const READY_CHECK_KEYS: &[&str] = &["run", "timeout-seconds"];
/// RWX's defaults: a ready check may take a minute, a process gets 10 s after SIGTERM.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// `background-processes:` a list of processes; keys unique, `after` naming earlier or later
/// processes of the same task, without cycles.
pub(crate) fn build_background(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
) -> Vec<BackgroundProcess> {
    let Value::Seq(items) = &node.value else {
        errors.push(node.error(format!(
            "`background-processes` must be a list, found {}",
            node.kind()
        )));
        return Vec::new();
    };
    let mut processes: Vec<BackgroundProcess> = Vec::new();
    let mut after_nodes: Vec<Vec<(&Node, String)>> = Vec::new();
    for item in items {
        let Some((process, after)) = build_process(item, errors) else {
            continue;
        };
        if processes.iter().any(|p| p.key == process.key) {
            errors.push(
                Diagnostic::new(
                    process.at,
                    process.key.len(),
                    format!("background process `{}` is defined twice", process.key),
                )
                .with_help("each background process of a task needs its own `key`"),
            );
            continue;
        }
        processes.push(process);
        after_nodes.push(after);
    }
    let keys: Vec<String> = processes.iter().map(|p| p.key.clone()).collect();
    for (process, after) in processes.iter_mut().zip(after_nodes) {
        for (node, name) in after {
            if name == process.key {
                errors.push(node.error(format!(
                    "background process `{name}` cannot start after itself"
                )));
            } else if !keys.contains(&name) {
                let candidates: Vec<&str> = keys.iter().map(String::as_str).collect();
                let d = node.error(format!("`after` names no background process `{name}`"));
                errors.push(match crate::parse::scalars::suggest(&name, &candidates) {
                    Some(help) => d.with_help(help),
                    None => d.with_help(format!(
                        "this task's background processes are: {}",
                        candidates.join(", ")
                    )),
                });
            } else {
                process.after.push(name);
            }
        }
    }
    if let Some(cycle) = after_cycle(&processes) {
        let first = processes.iter().find(|p| p.key == cycle[0]).expect("named");
        errors.push(Diagnostic::new(
            first.at,
            first.key.len(),
            format!(
                "background processes wait for each other: {}",
                cycle.join(" -> ")
            ),
        ));
    }
    processes
}

fn build_process<'a>(
    node: &'a Node,
    errors: &mut Vec<Diagnostic>,
) -> Option<(BackgroundProcess, Vec<(&'a Node, String)>)> {
    let entries = as_map(node, "a background process", errors)?;
    let before = errors.len();
    let mut key = None;
    let mut run = None;
    let mut ready_check = None;
    let mut after = Vec::new();
    let mut grace_period = DEFAULT_GRACE_PERIOD;
    for (k, v) in entries {
        let Some(name) = key_name(k, errors) else {
            continue;
        };
        match name.as_str() {
            "key" => {
                if let Some(s) = as_string(v, "`key`", errors) {
                    if valid_process_key(&s) {
                        key = Some((s, v.at));
                    } else {
                        errors.push(
                            v.error(format!("invalid background process key `{s}`"))
                                .with_help("use letters, digits, `_`, `-` and `.`, not first"),
                        );
                    }
                }
            }
            "run" => run = commands(v, "`run`", errors),
            "ready-check" => ready_check = build_ready_check(v, errors),
            "after" => after = as_string_list(v, "`after`", errors),
            "terminate-grace-period-seconds" => {
                if let Some(n) = whole_number(v, "`terminate-grace-period-seconds`", 0, errors) {
                    grace_period = Duration::from_secs(n);
                }
            }
            other => errors.push(unknown_key(k, other, "a background process", PROCESS_KEYS)),
        }
    }
    let has_run = run.is_some();
    let (Some((key, at)), Some(run)) = (key, run) else {
        if errors.len() == before {
            let missing = if has_run { "`key`" } else { "`run`" };
            errors.push(
                node.error(format!("background process has no {missing}"))
                    .with_help("a background process needs `key: NAME` and `run: COMMAND`"),
            );
        }
        return None;
    };
    Some((
        BackgroundProcess {
            key,
            at,
            run,
            ready_check,
            after: Vec::new(),
            grace_period,
        },
        after,
    ))
}

/// `ready-check`: a command, a list of commands, or `{run, timeout-seconds}`.
fn build_ready_check(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<ReadyCheck> {
    let Value::Map(entries) = &node.value else {
        return commands(node, "`ready-check`", errors).map(|run| ReadyCheck {
            run,
            timeout: DEFAULT_READY_TIMEOUT,
        });
    };
    let mut run = None;
    let mut timeout = DEFAULT_READY_TIMEOUT;
    for (k, v) in entries {
        let Some(name) = key_name(k, errors) else {
            continue;
        };
        match name.as_str() {
            "run" => run = commands(v, "`ready-check.run`", errors),
            "timeout-seconds" => {
                if let Some(n) = whole_number(v, "`timeout-seconds`", 1, errors) {
                    timeout = Duration::from_secs(n);
                }
            }
            other => errors.push(unknown_key(k, other, "`ready-check`", READY_CHECK_KEYS)),
        }
    }
    if run.is_none() {
        errors.push(
            node.error("`ready-check` has no `run`")
                .with_help("for example `ready-check: {run: pg_isready, timeout-seconds: 30}`"),
        );
    }
    run.map(|run| ReadyCheck { run, timeout })
}

/// A command or a list of commands, run one after the other (as `run:` is).
fn commands(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<Text> {
    match &node.value {
        Value::Seq(items) => {
            let lines: Vec<String> = items
                .iter()
                .filter_map(|i| as_string(i, &format!("each command of {what}"), errors))
                .collect();
            Some(Text::new(lines.join("\n"), node.at))
        }
        _ => as_string(node, what, errors).map(|s| Text::new(s, node.at)),
    }
}

/// RWX's pattern: `[a-zA-Z0-9_][a-zA-Z0-9_\-.]*`.
fn valid_process_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A cycle of `after` among the processes, as keys from its first to itself again.
fn after_cycle(processes: &[BackgroundProcess]) -> Option<Vec<String>> {
    fn visit(
        at: &str,
        processes: &[BackgroundProcess],
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.to_string());
            return Some(cycle);
        }
        if done.iter().any(|d| d == at) {
            return None;
        }
        path.push(at.to_string());
        let process = processes.iter().find(|p| p.key == at)?;
        for next in &process.after {
            if let Some(cycle) = visit(next, processes, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(at.to_string());
        None
    }
    let mut done = Vec::new();
    processes
        .iter()
        .find_map(|p| visit(&p.key, processes, &mut Vec::new(), &mut done))
}

/// A task with `docker` runs its daemon as a background process of its own.
pub(crate) fn check_docker_key(
    processes: &[BackgroundProcess],
    docker: Docker,
    errors: &mut Vec<Diagnostic>,
) {
    if docker == Docker::Disabled {
        return;
    }
    if let Some(p) = processes.iter().find(|p| p.key == DOCKERD_PROCESS) {
        errors.push(
            Diagnostic::new(
                p.at,
                p.key.len(),
                format!("background process key `{DOCKERD_PROCESS}` is taken by `docker`"),
            )
            .with_help("strata runs the task's Docker daemon under this key: rename the process"),
        );
    }
}

/// `docker`: `true`, `false` or `preserve-data`.
pub(crate) fn build_docker(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<Docker> {
    match &node.value {
        Value::Scalar { text, quoted } => match (text.as_str(), quoted) {
            ("true", false) => Some(Docker::Enabled),
            ("false", false) => Some(Docker::Disabled),
            ("preserve-data", _) => Some(Docker::PreserveData),
            _ => {
                errors.push(
                    node.error(format!(
                        "`docker` must be true, false or preserve-data, found `{text}`"
                    ))
                    .with_help("`docker: true` gives the task a private Docker daemon"),
                );
                None
            }
        },
        _ => {
            errors.push(node.error(format!(
                "`docker` must be true, false or preserve-data, found {}",
                node.kind()
            )));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(key: &str, after: &[&str]) -> BackgroundProcess {
        BackgroundProcess {
            key: key.into(),
            at: crate::diagnostic::Location { line: 1, column: 1 },
            run: Text::new("x", crate::diagnostic::Location { line: 1, column: 1 }),
            ready_check: None,
            after: after.iter().map(|s| s.to_string()).collect(),
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }

    #[test]
    fn cycles_are_found_and_chains_are_not_cycles() {
        let chain = [
            process("a", &[]),
            process("b", &["a"]),
            process("c", &["b", "a"]),
        ];
        assert_eq!(after_cycle(&chain), None);
        let cycle = [
            process("a", &["c"]),
            process("b", &["a"]),
            process("c", &["b"]),
        ];
        assert_eq!(
            after_cycle(&cycle).unwrap(),
            ["a", "c", "b", "a"].map(String::from)
        );
    }

    #[test]
    fn process_keys_follow_rwx() {
        assert!(valid_process_key("postgres"));
        assert!(valid_process_key("db.primary-1"));
        assert!(valid_process_key("_x"));
        assert!(!valid_process_key("-x"));
        assert!(!valid_process_key(".x"));
        assert!(!valid_process_key("a b"));
        assert!(!valid_process_key(""));
    }
}
