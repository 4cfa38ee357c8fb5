//! Every `${{ … }}` in the file, parsed and checked before anything runs: syntax, functions,
//! namespaces and task names, each error at its line and column. A reference to a task's
//! values orders the tasks.

use crate::artifact_refs::ArtifactRef;
use crate::diagnostic::{Diagnostic, Location};
use crate::expr::{Template, check_functions, parse_template};
use crate::model::{Pipeline, RefSpan, Task, TaskName, Text, Unsupported};
use crate::parallel::Parallel;

/// The namespaces an expression may start with.
pub const NAMESPACES: &[&str] = &[
    "init",
    "run",
    "event",
    "github",
    "tasks",
    "secrets",
    "vaults",
    "github-apps",
    "parallel",
    "params",
];
/// What `after: ${{ TASK.STATUS }}` may ask of a task.
pub const TASK_STATUSES: &[&str] = &["succeeded", "failed", "skipped", "aborted"];
/// What `run.*` holds.
pub const RUN_FIELDS: &[&str] = &["dir", "mint-dir", "id", "title", "definition-path"];

/// Where the byte `offset` of a scalar's text starting at `at` is in the source: found by
/// searching the source from the scalar's start for the text around `offset`, so quoted and
/// block scalars are located too. Falls back to the scalar's start.
pub(crate) fn locate(source: &str, at: Location, text: &str, offset: usize) -> Location {
    let start = line_start(source, at.line) + at.column.saturating_sub(1);
    let needle: &str = text
        .get(offset..)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_default();
    if needle.is_empty() || start > source.len() {
        return at;
    }
    let Some(found) = source[start..].find(needle).map(|i| start + i) else {
        return at;
    };
    let line = source[..found].matches('\n').count() + 1;
    let column = found - line_start(source, line) + 1;
    Location { line, column }
}

fn line_start(source: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    source
        .match_indices('\n')
        .nth(line - 2)
        .map_or(source.len(), |(i, _)| i + 1)
}

/// Checks every expression of the pipeline; returns for each task the tasks whose values it
/// reads (added to its dependencies by the caller).
pub(crate) fn check_pipeline(pipeline: &mut Pipeline, source: &str, errors: &mut Vec<Diagnostic>) {
    check_tasks(pipeline, source, &[], errors);
}

/// [`check_pipeline`] for tasks that may also name `known` tasks (those of the run when
/// dynamic tasks join it).
pub(crate) fn check_tasks(
    pipeline: &mut Pipeline,
    source: &str,
    known: &[String],
    errors: &mut Vec<Diagnostic>,
) {
    let names: Vec<String> = pipeline
        .tasks
        .iter()
        .map(|t| t.name.to_string())
        .chain(known.iter().cloned())
        .collect();
    let groups = pipeline.parallel_groups.clone();
    // Parallel tasks, expanded or to be expanded at run time: no values of their own.
    let parallel_tasks: Vec<String> = groups
        .iter()
        .map(|g| g.name.to_string())
        .chain(
            pipeline
                .tasks
                .iter()
                .filter(|t| matches!(t.parallel, Some(Parallel::Pending(_))))
                .map(|t| t.name.to_string()),
        )
        .collect();
    let mut unsupported = Vec::new();
    let mut value_deps: Vec<Vec<TaskName>> = Vec::new();
    let mut artifact_refs: Vec<Vec<ArtifactRef>> = Vec::new();
    let mut status_deps: Vec<(Vec<TaskName>, Vec<RefSpan>)> = Vec::new();
    for task in &pipeline.tasks {
        status_deps.push(check_after_condition(task, source, &groups, errors));
        let parallel_names: Option<Option<Vec<String>>> = match &task.parallel {
            None => None,
            Some(Parallel::Pending(spec)) => Some(spec.value_names()),
            Some(Parallel::Instance(i)) => Some(Some(i.values.keys().cloned().collect())),
        };
        let mut deps = Vec::new();
        let mut artifacts = Vec::new();
        for text in task.texts() {
            let Some(template) = parse_checked(text, source, errors) else {
                continue;
            };
            for r in template.references() {
                let at = locate(source, text.at, &text.raw, r.offset);
                let d = |message: String| Diagnostic::new(at, r.len, message);
                match r.path.first().map(String::as_str) {
                    Some("tasks") => match (r.path.get(1), r.path.get(2).map(String::as_str)) {
                        (Some(t), Some("values")) if parallel_tasks.contains(t) => {
                            errors.push(d(format!(
                                "`tasks.{t}`: `{t}` is a parallel task; read the values of one of the tasks it generates"
                            )));
                        }
                        // A parallel task expanded when the file was read: the artifact of
                        // every task it generated, gathered.
                        (Some(t), Some("artifacts"))
                            if groups.iter().any(|g| g.name.as_str() == t) =>
                        {
                            let group = groups
                                .iter()
                                .find(|g| g.name.as_str() == t)
                                .expect("just found");
                            match crate::artifact_refs::reference(
                                task,
                                t,
                                &r.path[3..],
                                (at, r.len),
                            ) {
                                Ok(mut a) => {
                                    a.members = group.members.clone();
                                    for m in &a.members {
                                        if !deps.contains(m) {
                                            deps.push(m.clone());
                                        }
                                    }
                                    if !artifacts.iter().any(|b: &ArtifactRef| {
                                        b.task == a.task && b.key == a.key
                                    }) {
                                        artifacts.push(a);
                                    }
                                }
                                Err(message) => errors.push(d(message)),
                            }
                        }
                        // One expanded at run time: its generated tasks are not known yet.
                        (Some(t), Some("artifacts")) if parallel_tasks.contains(t) => {
                            unsupported.push(Unsupported {
                                key: format!(
                                    "`tasks.{t}.artifacts`: the artifacts of a parallel task expanded at run time"
                                ),
                                task: Some(task.name.clone()),
                                at,
                            })
                        }
                        (Some(t), _)
                            if !names.contains(t)
                                && !groups.iter().any(|g| g.name.as_str() == t) =>
                        {
                            let mut e = d(format!("`tasks.{t}`: there is no task `{t}`"));
                            if let Some(h) = crate::parse::scalars::suggest(
                                t,
                                &names.iter().map(String::as_str).collect::<Vec<_>>(),
                            ) {
                                e = e.with_help(h);
                            }
                            errors.push(e);
                        }
                        (Some(t), Some("values")) => {
                            if t == task.name.as_str() {
                                errors.push(d(format!(
                                    "task `{t}` reads its own values; values come from tasks it depends on"
                                )));
                            } else if !deps.iter().any(|n: &TaskName| n.as_str() == t) {
                                deps.push(TaskName::new(t.clone()));
                            }
                        }
                        (Some(t), Some("artifacts")) => {
                            match crate::artifact_refs::reference(task, t, &r.path[3..], (at, r.len)) {
                                Ok(a) => {
                                    if !deps.contains(&a.task) {
                                        deps.push(a.task.clone());
                                    }
                                    // Once per artifact, where it is first read.
                                    if !artifacts.iter().any(|b: &ArtifactRef| {
                                        b.task == a.task && b.key == a.key
                                    }) {
                                        artifacts.push(a);
                                    }
                                }
                                Err(message) => errors.push(d(message)),
                            }
                        }
                        (Some(t), other) => unsupported.push(Unsupported {
                            key: format!(
                                "`tasks.{t}.{}` (only `tasks.{t}.values.NAME` and `tasks.{t}.artifacts.KEY` for now)",
                                other.unwrap_or("…")
                            ),
                            task: Some(task.name.clone()),
                            at,
                        }),
                        (None, _) => {
                            errors.push(d("`tasks` needs a task: `tasks.NAME.values.VALUE`".into()))
                        }
                    },
                    Some("params") => {
                        if let Some(e) = check_param(pipeline.package.as_ref(), r.path.get(1), d) {
                            errors.push(e);
                        }
                    }
                    Some("parallel") => match (&parallel_names, r.path.get(1)) {
                        (None, _) => errors.push(
                            d(format!(
                                "task `{}` reads `parallel`, but it has no `parallel:`",
                                task.name
                            ))
                            .with_help(
                                "`parallel.*` is what each task a `parallel:` task generates reads",
                            ),
                        ),
                        (Some(Some(known)), Some(field))
                            if field != "index" && field != "total" && !known.contains(field) =>
                        {
                            let mut candidates: Vec<&str> =
                                known.iter().map(String::as_str).collect();
                            candidates.extend(["index", "total"]);
                            let mut e = d(format!("`parallel.{field}` is not defined"));
                            e = match crate::parse::scalars::suggest(field, &candidates) {
                                Some(h) => e.with_help(h),
                                None => e.with_help(format!(
                                    "this task's parallel values are: {}",
                                    candidates.join(", ")
                                )),
                            };
                            errors.push(e);
                        }
                        _ => {}
                    },
                    Some("run") => {
                        if let Some(field) = r.path.get(1)
                            && !RUN_FIELDS.contains(&field.as_str())
                        {
                            let mut e = d(format!("`run.{field}` is not defined"));
                            if let Some(h) = crate::parse::scalars::suggest(field, RUN_FIELDS) {
                                e = e.with_help(h);
                            }
                            errors.push(e);
                        }
                    }
                    Some(ns) if NAMESPACES.contains(&ns) => {}
                    Some(ns) => errors.push(unknown_namespace(d, ns)),
                    None => {}
                }
            }
        }
        value_deps.push(deps);
        artifact_refs.push(artifacts);
    }
    for trigger in &pipeline.triggers.triggers {
        for text in trigger
            .init
            .iter()
            .map(|(_, t)| t)
            .chain(trigger.condition.iter())
        {
            check_text(
                text,
                source,
                errors,
                &[
                    "event",
                    "github",
                    "init",
                    "run",
                    "secrets",
                    "vaults",
                    "github-apps",
                ],
            );
        }
    }
    for (_, text) in &pipeline.triggers.cli_init {
        check_text(
            text,
            source,
            errors,
            &["event", "github", "run", "secrets", "vaults", "github-apps"],
        );
    }
    for (((task, deps), (status, spans)), artifacts) in pipeline
        .tasks
        .iter_mut()
        .zip(value_deps)
        .zip(status_deps)
        .zip(artifact_refs)
    {
        task.value_deps = deps;
        task.artifact_refs = artifacts;
        task.status_deps = status;
        task.ref_spans.extend(spans);
    }
    pipeline.unsupported.extend(unsupported);
    crate::artifact_refs::check_declared(pipeline, errors);
}

/// `params.NAME`: only in a package, and only a parameter it declares.
fn check_param(
    package: Option<&crate::calls::PackageDecl>,
    name: Option<&String>,
    d: impl Fn(String) -> Diagnostic,
) -> Option<Diagnostic> {
    let Some(package) = package else {
        return Some(
            d("`params` is only available in the tasks of a package".into())
                .with_help("a run definition passes values to its tasks with `init`"),
        );
    };
    let name = name?;
    let names: Vec<&str> = package.parameters.iter().map(|p| p.name.as_str()).collect();
    if names.contains(&name.as_str()) {
        return None;
    }
    let e = d(format!("the package declares no parameter `{name}`"));
    Some(match crate::parse::scalars::suggest(name, &names) {
        Some(h) => e.with_help(h),
        None => e.with_help("declare it under `parameters:`"),
    })
}

/// `after: ${{ … }}`: every name is a task (or a parallel task) and asks for one of
/// [`TASK_STATUSES`]. Returns the tasks it names (a parallel task's generated tasks in its
/// place) and where each is written, for the graph checks.
fn check_after_condition(
    task: &Task,
    source: &str,
    groups: &[crate::parallel::ParallelGroup],
    errors: &mut Vec<Diagnostic>,
) -> (Vec<TaskName>, Vec<RefSpan>) {
    let mut deps = Vec::new();
    let mut spans = Vec::new();
    let Some(text) = &task.after_condition else {
        return (deps, spans);
    };
    let Some(template) = parse_checked(text, source, errors) else {
        return (deps, spans);
    };
    for r in template.references() {
        let at = locate(source, text.at, &text.raw, r.offset);
        let Some(name) = r.path.first() else {
            continue;
        };
        let group = groups.iter().find(|g| g.name.as_str() == name);
        let status = r.path.get(1).map(String::as_str);
        match status {
            Some(s) if TASK_STATUSES.contains(&s) && r.path.len() == 2 => {}
            Some(s) => {
                let mut e =
                    Diagnostic::new(at, r.len, format!("`{name}.{s}` is not a task status"));
                e = match crate::parse::scalars::suggest(s, TASK_STATUSES) {
                    Some(h) => e.with_help(h),
                    None => e.with_help(format!(
                        "`after` expressions ask `TASK.STATUS`, the status being one of: {}",
                        TASK_STATUSES.join(", ")
                    )),
                };
                errors.push(e);
                continue;
            }
            None => {
                errors.push(
                    Diagnostic::new(at, r.len, format!("`{name}` needs a status in `after`"))
                        .with_help(format!(
                            "for example `{name}.succeeded`; the statuses are: {}",
                            TASK_STATUSES.join(", ")
                        )),
                );
                continue;
            }
        }
        let members: Vec<TaskName> = match group {
            Some(g) => g.members.clone(),
            None => vec![TaskName::new(name.clone())],
        };
        // Unknown names are reported by the graph checks, at this position.
        spans.push(RefSpan {
            name: members
                .first()
                .cloned()
                .unwrap_or_else(|| TaskName::new(name.clone())),
            at,
            width: name.len(),
        });
        for m in members {
            if !deps.contains(&m) {
                deps.push(m);
            }
        }
    }
    (deps, spans)
}

fn unknown_namespace(d: impl Fn(String) -> Diagnostic, ns: &str) -> Diagnostic {
    let e = d(format!("unknown name `{ns}` in an expression"));
    match crate::parse::scalars::suggest(ns, NAMESPACES) {
        Some(h) => e.with_help(h),
        None => e.with_help(format!(
            "expressions start with one of: {}",
            NAMESPACES.join(", ")
        )),
    }
}

/// A trigger's `init` or `if`: only the namespaces known when a run starts.
fn check_text(text: &Text, source: &str, errors: &mut Vec<Diagnostic>, allowed: &[&str]) {
    let Some(template) = parse_checked(text, source, errors) else {
        return;
    };
    for r in template.references() {
        let at = locate(source, text.at, &text.raw, r.offset);
        if let Some(ns) = r.path.first()
            && !allowed.contains(&ns.as_str())
        {
            let d = |m: String| Diagnostic::new(at, r.len, m);
            errors.push(if NAMESPACES.contains(&ns.as_str()) {
                d(format!("`{ns}` is not available in a trigger")).with_help(format!(
                    "a trigger's values may use: {}",
                    allowed.join(", ")
                ))
            } else {
                unknown_namespace(d, ns)
            });
        }
    }
}

/// Parses a text's expressions, reporting syntax and function errors where they are.
fn parse_checked(text: &Text, source: &str, errors: &mut Vec<Diagnostic>) -> Option<Template> {
    if !text.raw.contains("${{") {
        return None;
    }
    match parse_template(&text.raw) {
        Ok(t) => {
            for e in check_functions(&t) {
                errors.push(Diagnostic::new(
                    locate(source, text.at, &text.raw, e.offset),
                    e.len,
                    e.message,
                ));
            }
            Some(t)
        }
        Err(e) => {
            errors.push(Diagnostic::new(
                locate(source, text.at, &text.raw, e.offset),
                e.len,
                format!("invalid expression: {}", e.message),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_inside_plain_quoted_and_block_scalars() {
        let src = "a: x ${{ y }}\nb: \"q ${{ z }}\"\nc: |\n  one\n  two ${{ w }}\n";
        let l = locate(src, Location { line: 1, column: 4 }, "x ${{ y }}", 2);
        assert_eq!(l, Location { line: 1, column: 6 });
        let l = locate(src, Location { line: 2, column: 4 }, "q ${{ z }}", 2);
        assert_eq!(l, Location { line: 2, column: 7 });
        let l = locate(
            src,
            Location { line: 3, column: 4 },
            "one\ntwo ${{ w }}\n",
            8,
        );
        assert_eq!(l, Location { line: 5, column: 7 });
    }
}
