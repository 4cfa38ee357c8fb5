//! The tasks of one run: the pipeline's, then those that join while it goes (the tasks a
//! `parallel:` task generates once its values are known, the tasks a task wrote into
//! `$RWX_DYNAMIC_TASKS`). Indices are the dispatcher's: the pipeline's tasks keep theirs, added
//! ones follow in the order they joined.

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::Arc;

use strata_pipeline::expr::parse_template;
use strata_pipeline::{Parallel, ParallelGroup, Pipeline, Task, TaskName};

use crate::context::RunContext;
use crate::expressions::TaskValues;

/// A task of the run: borrowed from the pipeline, or shared with the thread that runs it.
#[derive(Clone)]
pub(crate) enum RunTask<'p> {
    Pipeline(&'p Task),
    Added(Arc<Task>),
}

impl Deref for RunTask<'_> {
    type Target = Task;

    fn deref(&self) -> &Task {
        match self {
            RunTask::Pipeline(t) => t,
            RunTask::Added(t) => t,
        }
    }
}

pub(crate) struct TaskTable<'p> {
    pipeline: &'p Pipeline,
    added: Vec<Arc<Task>>,
    index: HashMap<TaskName, usize>,
    /// Parallel tasks expanded when a dynamic tasks file was read (the pipeline's are in it).
    added_groups: Vec<ParallelGroup>,
    /// Parallel tasks expanded at run time, and the tasks each generated.
    members: HashMap<usize, Range<usize>>,
}

impl<'p> TaskTable<'p> {
    pub(crate) fn new(pipeline: &'p Pipeline) -> TaskTable<'p> {
        TaskTable {
            pipeline,
            added: Vec::new(),
            index: pipeline
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            added_groups: Vec::new(),
            members: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.pipeline.tasks.len() + self.added.len()
    }

    pub(crate) fn task(&self, i: usize) -> RunTask<'p> {
        match self.pipeline.tasks.get(i) {
            Some(t) => RunTask::Pipeline(t),
            None => RunTask::Added(self.added[i - self.pipeline.tasks.len()].clone()),
        }
    }

    pub(crate) fn name(&self, i: usize) -> &TaskName {
        match self.pipeline.tasks.get(i) {
            Some(t) => &t.name,
            None => &self.added[i - self.pipeline.tasks.len()].name,
        }
    }

    pub(crate) fn index(&self, name: &TaskName) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The index of a task of the pipeline itself.
    pub(crate) fn pipeline_index(&self, name: &TaskName) -> Option<usize> {
        self.index(name).filter(|&i| i < self.pipeline.tasks.len())
    }

    pub(crate) fn names(&self) -> Vec<TaskName> {
        (0..self.len()).map(|i| self.name(i).clone()).collect()
    }

    /// Every parallel task expanded when its file was read, with its generated tasks.
    pub(crate) fn groups(&self) -> Vec<ParallelGroup> {
        let mut groups = self.pipeline.parallel_groups.clone();
        groups.extend(self.added_groups.iter().cloned());
        groups
    }

    pub(crate) fn add_groups(&mut self, groups: Vec<ParallelGroup>) {
        self.added_groups.extend(groups);
    }

    /// Adds tasks (names checked unique by the caller) and records what workspace each sees:
    /// that of the pipeline's task `like` (a parallel task, for the tasks it generated), and
    /// what the tasks it uses see. `join`: the parallel task they were generated from.
    pub(crate) fn add(
        &mut self,
        ctx: &RunContext<'_>,
        tasks: Vec<Task>,
        like: Option<usize>,
        join: Option<usize>,
    ) -> Range<usize> {
        let start = self.len();
        for task in tasks {
            ctx.sources.add(&task, like, |n| self.pipeline_index(n));
            self.index.insert(task.name.clone(), self.len());
            self.added.push(Arc::new(task));
        }
        let range = start..self.len();
        if let Some(j) = join {
            self.members.insert(j, range.clone());
        }
        range
    }

    /// Whether task `i` is a parallel task expanded at run time, waiting for (or done with)
    /// its generated tasks.
    pub(crate) fn is_joined(&self, i: usize) -> bool {
        self.members.contains_key(&i)
    }

    pub(crate) fn members(&self, i: usize) -> Vec<usize> {
        self.members
            .get(&i)
            .cloned()
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The tasks a `parallel:` task generates, its count and values evaluated now (with the
/// values of the tasks it reads).
pub(crate) fn expand_parallel(
    ctx: &RunContext<'_>,
    task: &Task,
    values: &TaskValues,
) -> Result<Vec<Task>, String> {
    let Some(Parallel::Pending(spec)) = &task.parallel else {
        return Ok(Vec::new());
    };
    let (scope, _) = crate::inputs::task_scopes(ctx, task, values);
    let evaluate = |text: &strata_pipeline::Text| {
        let template = parse_template(&text.raw).map_err(|e| e.message)?;
        let value = template.evaluate(&scope).map_err(|e| e.message)?;
        if value.secret {
            return Err("a parallel count or value may not come from a secret".into());
        }
        Ok(value.value)
    };
    let combos = spec.combinations(&evaluate)?;
    spec.generate(task, combos, &scope)
}
