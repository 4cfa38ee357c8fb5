//! Conditions of a task: `after: ${{ a.failed || b.succeeded }}`, judged by the dispatcher from
//! how the named tasks ended, and `if: ${{ … }}`, judged when the task starts (it may read the
//! values of the tasks it waited for).

use std::collections::BTreeMap;

use strata_pipeline::expr::{Scope, Template, Value, parse_template};
use strata_pipeline::{ParallelGroup, Task, TaskName, Text};

use crate::dispatch::{Conclusion, Dependency, DependencyKind};
use crate::events::SkipReason;

/// The statuses `after` expressions read, for a conclusion.
fn statuses(conclusion: Conclusion) -> [(&'static str, bool); 4] {
    let aborted = matches!(
        conclusion,
        Conclusion::Skipped(SkipReason::Interrupted | SkipReason::FailFast)
    );
    [
        ("succeeded", conclusion.succeeded()),
        ("failed", conclusion == Conclusion::Failed),
        (
            "skipped",
            matches!(conclusion, Conclusion::Skipped(_)) && !aborted,
        ),
        ("aborted", aborted),
    ]
}

/// A parallel task's status from its generated tasks': it succeeded when all did, failed when
/// one did, was aborted when one was (and none failed), and was skipped when all were.
fn group_status(members: &[Conclusion]) -> BTreeMap<String, Value> {
    let has = |name: &str, c: &Conclusion| statuses(*c).iter().any(|&(n, v)| n == name && v);
    let failed = members.iter().any(|c| has("failed", c));
    let aborted = !failed && members.iter().any(|c| has("aborted", c));
    [
        ("succeeded", members.iter().all(|c| has("succeeded", c))),
        ("failed", failed),
        ("skipped", members.iter().all(|c| has("skipped", c))),
        ("aborted", aborted),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Value::Bool(v)))
    .collect()
}

/// The rule of a task with an `after` expression: given how each dependency ended, whether
/// the expression is true. `names` names its dependencies by index; `joins` are those that
/// are `parallel:` tasks expanded at run time, which conclude from their generated tasks (one
/// that failed skips them, and that reads as `failed` here). An expression that cannot be
/// evaluated is false (it was checked when the file was read, so this is not expected).
pub(crate) fn after_rule(
    text: &Text,
    groups: &[ParallelGroup],
    names: BTreeMap<usize, TaskName>,
    joins: Vec<usize>,
) -> Option<impl Fn(&[(Dependency, Conclusion)]) -> bool + 'static + use<>> {
    let template: Template = parse_template(&text.raw).ok()?;
    let groups: Vec<ParallelGroup> = groups.to_vec();
    Some(move |deps: &[(Dependency, Conclusion)]| {
        let by_name: BTreeMap<TaskName, Conclusion> = deps
            .iter()
            .filter(|(d, _)| d.kind == DependencyKind::Status)
            .filter_map(|&(d, c)| {
                let c = match c {
                    Conclusion::Skipped(SkipReason::DependencyFailed { .. })
                        if joins.contains(&d.task) =>
                    {
                        Conclusion::Failed
                    }
                    c => c,
                };
                Some((names.get(&d.task)?.clone(), c))
            })
            .collect();
        let mut scope = Scope::new();
        for (name, c) in &by_name {
            let obj: BTreeMap<String, Value> = statuses(*c)
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::Bool(v)))
                .collect();
            scope.insert(&[name.as_str()], Value::Object(obj));
        }
        for g in &groups {
            let members: Vec<Conclusion> = g
                .members
                .iter()
                .filter_map(|m| by_name.get(m).copied())
                .collect();
            if members.len() == g.members.len() {
                scope.insert(&[g.name.as_str()], Value::Object(group_status(&members)));
            }
        }
        template.evaluate(&scope).is_ok_and(|v| v.truthy())
    })
}

/// Whether a task's `if:` lets it run, with the scope it runs with. `Err`: the expression
/// could not be evaluated (the task fails with this message).
pub(crate) fn if_allows(task: &Task, scope: &Scope) -> Result<bool, String> {
    let Some(text) = &task.condition else {
        return Ok(true);
    };
    let template = parse_template(&text.raw).map_err(|e| format!("`if`: {}", e.message))?;
    template
        .evaluate(scope)
        .map(|v| v.truthy())
        .map_err(|e| format!("`if`: {}", e.message))
}

/// Why a task whose `if:` was false is skipped, for the user.
pub(crate) fn if_false_reason(task: &Task) -> String {
    match &task.condition {
        Some(text) => format!("its condition `if: {}` is false", text.raw.trim()),
        None => "its condition is false".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_pipeline::Location;

    fn rule(
        expr: &str,
        groups: &[ParallelGroup],
        names: &'static [&'static str],
    ) -> impl Fn(&[(Dependency, Conclusion)]) -> bool {
        let names = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i, TaskName::new(*n)))
            .collect();
        after_rule(&Text::new(expr, Location::default()), groups, names, vec![]).unwrap()
    }

    fn status(task: usize, c: Conclusion) -> (Dependency, Conclusion) {
        (
            Dependency {
                task,
                kind: DependencyKind::Status,
            },
            c,
        )
    }

    #[test]
    fn after_expressions_read_each_tasks_status() {
        let r = rule("${{ a.failed || b.succeeded }}", &[], &["a", "b"]);
        assert!(r(&[
            status(0, Conclusion::Failed),
            status(1, Conclusion::Failed)
        ]));
        assert!(r(&[
            status(0, Conclusion::Ran),
            status(1, Conclusion::Cached)
        ]));
        assert!(!r(&[
            status(0, Conclusion::Ran),
            status(1, Conclusion::Failed)
        ]));
        let r = rule("${{ a.skipped && !a.aborted }}", &[], &["a"]);
        assert!(r(&[status(
            0,
            Conclusion::Skipped(SkipReason::ConditionFalse)
        )]));
        assert!(!r(&[status(
            0,
            Conclusion::Skipped(SkipReason::Interrupted)
        )]));
        let r = rule("${{ a.aborted }}", &[], &["a"]);
        assert!(r(&[status(0, Conclusion::Skipped(SkipReason::FailFast))]));
    }

    #[test]
    fn a_parallel_task_fails_when_one_of_its_tasks_failed() {
        let groups = [ParallelGroup {
            name: TaskName::new("t"),
            members: vec![TaskName::new("t-0"), TaskName::new("t-1")],
        }];
        let failed = rule("${{ t.failed }}", &groups, &["t-0", "t-1"]);
        let succeeded = rule("${{ t.succeeded }}", &groups, &["t-0", "t-1"]);
        let one_failed = [status(0, Conclusion::Ran), status(1, Conclusion::Failed)];
        let all_ran = [status(0, Conclusion::Ran), status(1, Conclusion::Cached)];
        assert!(failed(&one_failed) && !succeeded(&one_failed));
        assert!(!failed(&all_ran) && succeeded(&all_ran));
    }

    #[test]
    fn a_parallel_task_expanded_at_run_time_reads_failed_when_a_member_failed() {
        let names = [(0, TaskName::new("t"))].into_iter().collect();
        let text = Text::new("${{ t.failed }}", Location::default());
        let r = after_rule(&text, &[], names, vec![0]).unwrap();
        let skipped = Conclusion::Skipped(SkipReason::DependencyFailed { dependency: 3 });
        assert!(r(&[status(0, skipped)]));
        assert!(!r(&[status(0, Conclusion::Ran)]));
    }
}
