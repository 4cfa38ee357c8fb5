//! Tasks that join a run while it goes: the YAML files a task wrote into `$RWX_DYNAMIC_TASKS`.
//! Each is read and checked like the pipeline's own tasks (a list of tasks, or a mapping with
//! `tasks:`), against the tasks the run already has: they may `use` those, and may not reuse
//! their names.

use std::path::Path;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Base, Dialect, Pipeline, Task, TaskName};
use crate::parallel::ParallelGroup;
use crate::parse::task::{TaskExtras, build_task};
use crate::yaml::{self, Value};

/// The tasks of the dynamic tasks files one task wrote, ready to join the run.
#[derive(Debug)]
pub struct DynamicTasks {
    /// Every file's tasks (a static `parallel:` task already expanded), each after the tasks
    /// of the files it depends on.
    pub tasks: Vec<Task>,
    /// The `parallel:` tasks of the files and the tasks each generated.
    pub parallel_groups: Vec<ParallelGroup>,
}

/// One file a task wrote: a name for messages, and its text.
pub struct DynamicFile<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

/// Reads the files one task wrote. `known` are the run's tasks so far and `groups` its
/// expanded parallel tasks; the tasks of one file may name those of another. Errors point
/// into their file.
pub fn parse_dynamic_tasks(
    files: &[DynamicFile<'_>],
    dialect: Dialect,
    known: &[TaskName],
    groups: &[ParallelGroup],
) -> Result<DynamicTasks, Vec<Diagnostics>> {
    let mut failed = Vec::new();
    let mut parsed: Vec<(usize, Pipeline)> = Vec::new();
    for (f, file) in files.iter().enumerate() {
        match read_file(file, dialect, groups) {
            Ok(p) => parsed.push((f, p)),
            Err(d) => failed.push(d),
        }
    }
    let mut out = DynamicTasks {
        tasks: Vec::new(),
        parallel_groups: Vec::new(),
    };
    for (f, pipeline) in &parsed {
        // The tasks of the other files are known to this one.
        let mut known: Vec<TaskName> = known.to_vec();
        for (g, other) in &parsed {
            if g != f {
                known.extend(other.tasks.iter().map(|t| t.name.clone()));
            }
        }
        let mut pipeline = pipeline.clone();
        let mut errors = Vec::new();
        let known_names: Vec<String> = known.iter().map(|t| t.to_string()).collect();
        let text = files[*f].text;
        crate::parse::expressions::check_tasks(&mut pipeline, text, &known_names, &mut errors);
        crate::validate::validate_tasks(&pipeline, &known, &mut errors);
        // Nothing can be refused before the run any more: what this version cannot run is an
        // error of the file.
        for u in &pipeline.unsupported {
            errors.push(Diagnostic::new(
                u.at,
                1,
                format!("{} cannot run in this version of strata", u.key),
            ));
        }
        if !errors.is_empty() {
            failed.push(Diagnostics::new(files[*f].path, text, errors));
            continue;
        }
        out.parallel_groups
            .extend(pipeline.parallel_groups.split_off(groups.len()));
        out.tasks.extend(pipeline.tasks);
    }
    if !failed.is_empty() {
        return Err(failed);
    }
    // Each task after those it depends on, across files; a cycle is an error.
    let mut ordered: Vec<Task> = Vec::with_capacity(out.tasks.len());
    let mut rest = std::mem::take(&mut out.tasks);
    while !rest.is_empty() {
        let before = rest.len();
        let mut i = 0;
        while i < rest.len() {
            let ready = rest[i].dependencies().all(|d| {
                !rest.iter().any(|t| &t.name == d) || ordered.iter().any(|t| &t.name == d)
            });
            if ready {
                ordered.push(rest.remove(i));
            } else {
                i += 1;
            }
        }
        if rest.len() == before {
            let names: Vec<&str> = rest.iter().map(|t| t.name.as_str()).collect();
            let first = &rest[0];
            let file = files
                .iter()
                .find(|f| f.text.contains(first.name.as_str()))
                .unwrap_or(&files[0]);
            return Err(vec![Diagnostics::new(
                file.path,
                file.text,
                vec![Diagnostic::new(
                    first.at,
                    3,
                    format!(
                        "dynamic tasks depend on each other in a cycle: {}",
                        names.join(", ")
                    ),
                )],
            )]);
        }
    }
    out.tasks = ordered;
    Ok(out)
}

/// One file's tasks, parsed and expanded, not yet checked against the run.
fn read_file(
    file: &DynamicFile<'_>,
    dialect: Dialect,
    groups: &[ParallelGroup],
) -> Result<Pipeline, Diagnostics> {
    let (path, text) = (file.path, file.text);
    let mut errors = Vec::new();
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(d) => return Err(Diagnostics::new(path, text, vec![d])),
    };
    let items = match &root.value {
        Value::Seq(items) => Some(items.as_slice()),
        Value::Map(entries) => {
            let mut found = None;
            for (k, v) in entries {
                match (&k.value, &v.value) {
                    (Value::Scalar { text, .. }, Value::Seq(items)) if text == "tasks" => {
                        found = Some(items.as_slice())
                    }
                    _ => errors.push(k.error(
                        "a dynamic tasks file holds a list of tasks (or `tasks:` with one)",
                    )),
                }
            }
            found
        }
        Value::Scalar { .. } => None,
    };
    let Some(items) = items else {
        errors.push(
            root.error("a dynamic tasks file holds a list of tasks")
                .with_help("for example `- key: test-1\n  run: ./test 1`"),
        );
        return Err(Diagnostics::new(path, text, errors));
    };
    let mut unsupported = Vec::new();
    let mut notes = Vec::new();
    let mut extras = TaskExtras {
        unsupported: &mut unsupported,
        notes: &mut notes,
    };
    let tasks: Vec<Task> = items
        .iter()
        .filter_map(|item| build_task(item, dialect, &mut errors, &mut extras))
        .collect();
    let mut pipeline = Pipeline {
        path: path.to_path_buf(),
        dialect,
        triggers: Default::default(),
        base: Base::default(),
        base_at: None,
        base_config: None,
        caches: Vec::new(),
        tasks,
        unsupported,
        notes: Vec::new(),
        source_text: text.to_string(),
        package: None,
        parallel_groups: groups.to_vec(),
        // The run's own file's vault applies to the tasks it adds.
        tool_cache_vault: None,
    };
    crate::parallel::expand(&mut pipeline, &mut errors);
    if !errors.is_empty() {
        return Err(Diagnostics::new(path, text, errors));
    }
    Ok(pipeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DynamicTasks, String> {
        let file = DynamicFile {
            path: Path::new("gen/tasks.yml"),
            text,
        };
        parse_dynamic_tasks(
            &[file],
            Dialect::Rwx,
            &[TaskName::new("code"), TaskName::new("gen")],
            &[],
        )
        .map_err(|d| d.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn a_list_of_tasks_may_use_the_runs_tasks() {
        let t = parse(
            "- key: t1\n  use: code\n  run: ./t 1\n- key: t2\n  parallel: 2\n  use: [t1]\n  run: ./t ${{ parallel.index }}\n",
        )
        .unwrap();
        let names: Vec<&str> = t.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t1", "t2-0", "t2-1"]);
        assert_eq!(t.parallel_groups.len(), 1);
        let t = parse("tasks:\n  - key: t1\n    run: 'true'\n").unwrap();
        assert_eq!(t.tasks.len(), 1);
    }

    #[test]
    fn errors_point_into_the_file() {
        let e = parse("- key: code\n  run: x\n- key: t\n  use: cdoe\n  run: y\n").unwrap_err();
        assert!(e.contains("`code` is already a task of the run"), "{e}");
        assert!(e.contains("unknown task `cdoe`"), "{e}");
        assert!(e.contains("gen/tasks.yml:4:8"), "{e}");
        let e = parse("key: x\n").unwrap_err();
        assert!(e.contains("list of tasks"), "{e}");
    }

    #[test]
    fn files_may_name_each_others_tasks_and_come_out_in_dependency_order() {
        let a = DynamicFile {
            path: Path::new("a.yml"),
            text: "- key: report\n  after: ${{ t1.failed }}\n  run: x\n",
        };
        let b = DynamicFile {
            path: Path::new("b.yml"),
            text: "- key: t1\n  use: code\n  run: y\n",
        };
        let t = parse_dynamic_tasks(&[a, b], Dialect::Rwx, &[TaskName::new("code")], &[]).unwrap();
        let names: Vec<&str> = t.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t1", "report"]);
        let a = DynamicFile {
            path: Path::new("a.yml"),
            text: "- key: x\n  use: y\n  run: x\n- key: y\n  after: x\n  run: y\n",
        };
        let e = parse_dynamic_tasks(&[a], Dialect::Rwx, &[], &[]).unwrap_err();
        assert!(e[0].to_string().contains("cycle"), "{}", e[0]);
    }
}
