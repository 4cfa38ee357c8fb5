//! Checks that need the whole task list: unique keys, references to existing tasks, no cycles.

use std::collections::HashMap;

use crate::diagnostic::Diagnostic;
use crate::model::{Pipeline, TaskName};

pub(crate) fn validate_graph(pipeline: &Pipeline, errors: &mut Vec<Diagnostic>) {
    validate_tasks(pipeline, &[], errors);
}

/// [`validate_graph`] for tasks that join a run whose tasks are `known` (dynamic tasks): they
/// may depend on those, and may not reuse their names.
pub(crate) fn validate_tasks(
    pipeline: &Pipeline,
    known: &[TaskName],
    errors: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&TaskName, usize> = HashMap::new();
    for task in &pipeline.tasks {
        if known.contains(&task.name) {
            errors.push(Diagnostic::new(
                task.at,
                3,
                format!("task key `{}` is already a task of the run", task.name),
            ));
        }
    }
    for (i, task) in pipeline.tasks.iter().enumerate() {
        if let Some(&first) = seen.get(&task.name) {
            let first = &pipeline.tasks[first];
            errors.push(
                Diagnostic::new(task.at, 3, format!("duplicate task key `{}`", task.name))
                    .with_help(format!(
                        "`{}` is already defined at line {}",
                        task.name, first.at.line
                    )),
            );
        } else {
            seen.insert(&task.name, i);
        }
    }
    let names: Vec<&str> = pipeline
        .tasks
        .iter()
        .map(|t| t.name.as_str())
        .chain(known.iter().map(TaskName::as_str))
        .collect();
    let mut missing = false;
    for task in &pipeline.tasks {
        for r in &task.ref_spans {
            if r.name == task.name {
                errors.push(Diagnostic::new(
                    r.at,
                    r.width,
                    format!("task `{}` depends on itself", task.name),
                ));
                missing = true;
            } else if !seen.contains_key(&r.name)
                && !known.contains(&r.name)
                && !is_package_use(pipeline, &r.name)
            {
                let mut d = Diagnostic::new(
                    r.at,
                    r.width,
                    format!("task `{}` refers to unknown task `{}`", task.name, r.name),
                );
                if let Some(best) = names
                    .iter()
                    .filter(|n| strsim::damerau_levenshtein(n, r.name.as_str()) <= 2)
                    .min_by_key(|n| strsim::damerau_levenshtein(n, r.name.as_str()))
                {
                    d = d.with_help(format!("did you mean `{best}`?"));
                }
                errors.push(d);
                missing = true;
            }
        }
    }
    if !missing && let Some(cycle) = find_cycle(pipeline) {
        let first = &pipeline.tasks[cycle[0]];
        let path: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&cycle[0]))
            .map(|&i| pipeline.tasks[i].name.as_str())
            .collect();
        // A cycle through an artifact reference is shown where the reference is written.
        let in_cycle = |n: &TaskName| cycle.iter().any(|&i| &pipeline.tasks[i].name == n);
        let (at, width) = cycle
            .iter()
            .find_map(|&i| {
                let r = pipeline.tasks[i]
                    .artifact_refs
                    .iter()
                    .find(|r| in_cycle(&r.task))?;
                Some((r.at, r.width))
            })
            .unwrap_or((first.at, 3));
        errors.push(Diagnostic::new(
            at,
            width,
            format!(
                "tasks depend on each other in a cycle: {}",
                path.join(" -> ")
            ),
        ));
    }
}

/// `package.use` in a package file: whatever its caller uses.
fn is_package_use(pipeline: &Pipeline, name: &TaskName) -> bool {
    pipeline.package.is_some() && name.as_str() == crate::calls::PACKAGE_USE
}

/// One cycle among `use`/`after` edges, as task indices in dependency order, if there is one.
fn find_cycle(pipeline: &Pipeline) -> Option<Vec<usize>> {
    let index: HashMap<&TaskName, usize> = pipeline
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (&t.name, i))
        .collect();
    let deps: Vec<Vec<usize>> = pipeline
        .tasks
        .iter()
        .map(|t| {
            t.dependencies()
                .filter_map(|n| index.get(n).copied())
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = finished.
    let mut state = vec![0u8; deps.len()];
    let mut path = Vec::new();
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for &j in &deps[i] {
            if state[j] == 1 {
                let start = path.iter().position(|&p| p == j).unwrap_or(0);
                return Some(path[start..].to_vec());
            }
            if state[j] == 0
                && let Some(c) = visit(j, deps, state, path)
            {
                return Some(c);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    (0..deps.len()).find_map(|i| {
        if state[i] == 0 {
            visit(i, &deps, &mut state, &mut path)
        } else {
            None
        }
    })
}
