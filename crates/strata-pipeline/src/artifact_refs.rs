//! `${{ tasks.X.artifacts.KEY }}`: a task reading an artifact of another task. The reader waits
//! for X (X joins its `value_deps`) without using X's layer; what the reference evaluates to,
//! how the artifact becomes visible and how it is keyed is the engine's
//! (`strata-engine`'s `artifact_refs.rs`). Here: which references a task makes, and the checks
//! that can be made when the file is loaded.

use crate::diagnostic::{Diagnostic, Location};
use crate::model::{Pipeline, TaskName};

/// Where every artifact another task reads is, in the reader's filesystem:
/// `<ARTIFACT_REFS_DIR>/<task>/<key>` (a directory; a file artifact is the one file in it).
pub const ARTIFACT_REFS_DIR: &str = "/var/lib/strata/task-artifacts";

/// One `${{ tasks.TASK.artifacts.KEY }}` of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    /// The task that produces the artifact (its name in the run, a call's prefix included).
    pub task: TaskName,
    /// The task's name as the reader's file writes it: the path of the expression.
    pub written: String,
    pub key: String,
    /// Where the reference is written, and its length.
    pub at: Location,
    pub width: usize,
    /// For a parallel task (`task` is then its name, not a task of the run): the tasks it
    /// generated, whose artifacts are gathered, one directory each. Empty otherwise.
    pub members: Vec<TaskName>,
}

impl ArtifactRef {
    /// `build.bundle`, as messages and `strata explain` name it.
    pub fn label(&self) -> String {
        format!("{}.{}", self.written, self.key)
    }
}

/// The reference `tasks.<written>.artifacts.<rest>` of `reader`, written at `at`: `Err` says
/// what is wrong with it. (That `written` is a task was checked by the caller.)
pub(crate) fn reference(
    reader: &crate::model::Task,
    written: &str,
    rest: &[String],
    (at, width): (Location, usize),
) -> Result<ArtifactRef, String> {
    let key = match rest {
        [key] => key,
        [] => {
            return Err(format!(
                "`tasks.{written}.artifacts` needs an artifact key: `tasks.{written}.artifacts.KEY`"
            ));
        }
        [key, more, ..] => {
            return Err(format!(
                "`tasks.{written}.artifacts.{key}.{more}`: an artifact is a path, it has no fields"
            ));
        }
    };
    // A called file's tasks are renamed (`caller.` prefixed) when spliced into the run.
    let task = TaskName::new(written.to_string());
    if task == reader.name {
        return Err(format!(
            "task `{written}` reads its own artifact `{key}`; artifacts come from tasks it depends on"
        ));
    }
    Ok(ArtifactRef {
        task,
        written: written.to_string(),
        key: key.clone(),
        at,
        width,
        members: Vec::new(),
    })
}

/// Each artifact reference names an artifact its task declares in `outputs.artifacts`, unless
/// the task may write artifacts of its own choosing into `$RWX_ARTIFACTS` (then the run checks
/// it), or is not a command of this file (a call's stand-in, a task joining later).
pub(crate) fn check_declared(pipeline: &Pipeline, errors: &mut Vec<Diagnostic>) {
    for reader in &pipeline.tasks {
        for r in &reader.artifact_refs {
            // A parallel task's generated tasks share its `outputs`.
            let producer_name = r.members.first().unwrap_or(&r.task);
            let Some(producer) = pipeline.tasks.iter().find(|t| &t.name == producer_name) else {
                continue;
            };
            if !matches!(producer.kind, crate::model::TaskKind::Command)
                || producer.run.raw.contains("RWX_ARTIFACTS")
                || producer.outputs.artifacts.iter().any(|a| a.key == r.key)
            {
                continue;
            }
            let declared: Vec<&str> = producer
                .outputs
                .artifacts
                .iter()
                .map(|a| a.key.as_str())
                .collect();
            let mut e = Diagnostic::new(
                r.at,
                r.width,
                format!("task `{}` declares no artifact `{}`", r.written, r.key),
            );
            e = match crate::parse::scalars::suggest(&r.key, &declared) {
                Some(h) => e.with_help(h),
                None if declared.is_empty() => e.with_help(format!(
                    "declare it in `{}`'s `outputs.artifacts` (`key` and `path`)",
                    r.written
                )),
                None => e.with_help(format!("its artifacts are: {}", declared.join(", "))),
            };
            errors.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(text: &str) -> crate::model::Pipeline {
        crate::parse::parse_str(Path::new("strata.yml"), text).unwrap()
    }

    #[test]
    fn a_reference_orders_the_reader_after_the_producer() {
        let p = parse(
            "tasks:\n  - key: build\n    run: mkdir d\n    outputs:\n      artifacts: [{key: d, path: d}]\n  - key: ship\n    run: ls ${{ tasks.build.artifacts.d }} ${{ tasks.build.artifacts.d }}/x\n",
        );
        let ship = &p.tasks[1];
        assert_eq!(ship.value_deps.len(), 1);
        assert_eq!(ship.value_deps[0].as_str(), "build");
        assert_eq!(ship.artifact_refs.len(), 1, "one reference per artifact");
        assert_eq!(ship.artifact_refs[0].label(), "build.d");
        assert_eq!(ship.artifact_refs[0].at.line, 7);
        assert!(p.unsupported.is_empty());
    }

    #[test]
    fn an_undeclared_artifact_is_accepted_when_the_task_may_write_it() {
        let p = parse(
            "tasks:\n  - key: build\n    run: echo x > $RWX_ARTIFACTS/d\n  - key: ship\n    run: cat ${{ tasks.build.artifacts.d }}\n",
        );
        assert_eq!(p.tasks[1].artifact_refs.len(), 1);
    }

    #[test]
    fn a_parallel_task_expanded_at_load_gathers_its_generated_tasks() {
        let p = parse(
            "tasks:\n  - key: p\n    parallel: 2\n    run: mkdir d\n    outputs:\n      artifacts: [{key: d, path: d}]\n  - key: r\n    run: ls ${{ tasks.p.artifacts.d }}\n",
        );
        assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
        let r = p.tasks.iter().find(|t| t.name.as_str() == "r").unwrap();
        assert_eq!(r.artifact_refs[0].members.len(), 2);
        assert_eq!(r.value_deps.len(), 2);
    }

    #[test]
    fn the_artifacts_of_a_parallel_task_expanded_at_run_time_are_refused_by_run_only() {
        let p = parse(
            "tasks:\n  - key: n\n    run: x\n  - key: p\n    parallel: ${{ tasks.n.values.count }}\n    run: mkdir d\n    outputs:\n      artifacts: [{key: d, path: d}]\n  - key: r\n    run: ls ${{ tasks.p.artifacts.d }}\n",
        );
        assert_eq!(p.unsupported.len(), 1);
        assert!(p.unsupported[0].key.contains("parallel task"));
    }
}
