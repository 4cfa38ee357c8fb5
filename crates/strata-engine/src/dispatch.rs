//! Every decision of a run, as a state machine over what happens to its tasks: which task
//! starts, which is skipped and why, when `--fail-fast` or an interruption stops new starts, and
//! when the run is over. No threads, no I/O: the scheduler records events (a task finished, the
//! run was interrupted) and does what [`Dispatcher::next_actions`] answers (nextest's
//! dispatcher owns the state the user sees in the same way).
//!
//! Tasks are named by their index: the pipeline's first, then those added while the run goes
//! (the tasks a `parallel:` task generates once its values are known, and the tasks a task
//! wrote into `$RWX_DYNAMIC_TASKS`), each after the ones it may depend on.

use crate::events::SkipReason;

/// How a task depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DependencyKind {
    /// `use`: the task builds on the dependency's result, so the dependency must have succeeded.
    Use,
    /// `after` (and the tasks whose values it reads): only the order, but the dependency must
    /// have succeeded.
    After,
    /// Named in an `after: ${{ … }}` status expression: only the order; how it ended is for
    /// the task's [`StartRule::Custom`] condition to judge.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dependency {
    pub(crate) task: usize,
    pub(crate) kind: DependencyKind,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conclusion {
    Ran,
    /// Restored from a cache.
    Cached,
    Failed,
    Skipped(SkipReason<usize>),
}

impl Conclusion {
    pub(crate) fn succeeded(self) -> bool {
        matches!(self, Conclusion::Ran | Conclusion::Cached)
    }
}

/// Decides, once every dependency has concluded, whether the task starts (`true`) or is
/// skipped because its condition is false. Given each dependency with its conclusion, in the
/// order the task lists them.
pub(crate) type Condition = Box<dyn Fn(&[(Dependency, Conclusion)]) -> bool>;

/// When a task may start.
pub(crate) enum StartRule {
    /// Once every dependency, `use` or `after`, has succeeded; the task is skipped as soon as
    /// one has not.
    AllSucceeded,
    /// Once every dependency has concluded, the condition decides; a false one skips the task
    /// without failing the run (`after: ${{ build.failed }}`). Its `use` and `after`
    /// dependencies must still have succeeded; only its `Status` ones may have ended any way.
    Custom(Condition),
}

impl std::fmt::Debug for StartRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartRule::AllSucceeded => f.write_str("AllSucceeded"),
            StartRule::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// What the dispatcher knows of a task.
#[derive(Debug)]
pub(crate) struct TaskSpec {
    /// `use` and `after`, in the order the task lists them: the first that did not succeed
    /// names the skip.
    pub(crate) dependencies: Vec<Dependency>,
    pub(crate) rule: StartRule,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Tasks running at once (`-j`; 0 counts as 1).
    pub(crate) jobs: usize,
    /// Start nothing new once a task has failed.
    pub(crate) fail_fast: bool,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DispatchEvent {
    /// A started task is over.
    TaskFinished { task: usize, outcome: Outcome },
    /// A started `parallel:` task generated the tasks `members` (added with
    /// [`Dispatcher::add_tasks`]): it now waits for them, as if it `use`d them, and starts
    /// again once they have concluded, to hand their results on as one.
    Expanded {
        task: usize,
        members: std::ops::Range<usize>,
    },
    /// Start nothing new; running tasks stop on their own and still report `TaskFinished`.
    Interrupted,
}

/// How a started task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ran,
    Cached,
    Failed,
    /// Its `if:` was false once it could be evaluated (it may read values of the tasks it
    /// waited for): it is skipped, and so are its dependents, without failing the run.
    ConditionFalse,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Execute the task: everything it needs has succeeded and a job is free.
    Start(usize),
    /// The task will not run.
    Skip {
        task: usize,
        reason: SkipReason<usize>,
    },
    /// Every wanted task has concluded: nothing runs and nothing will start.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not a target and not needed by one.
    Unwanted,
    Pending,
    Running,
    Concluded(Conclusion),
}

/// Whether a pending task could start, going by its dependencies alone.
enum Readiness {
    Ready,
    Waiting,
    Blocked(SkipReason<usize>),
}

#[derive(Debug)]
pub(crate) struct Dispatcher {
    tasks: Vec<TaskSpec>,
    states: Vec<State>,
    /// The wanted tasks, each after its dependencies: the order in which they are considered.
    order: Vec<usize>,
    limits: Limits,
    running: usize,
    pending: usize,
    /// Why nothing new starts any more (`FailFast` or `Interrupted`).
    stopped: Option<SkipReason<usize>>,
}

impl Dispatcher {
    /// `wanted[i]`: task `i` is a target (every task when there are none). What the targets
    /// depend on is wanted too.
    ///
    /// Panics if a dependency is out of range or the dependencies form a cycle: a validated
    /// pipeline has neither.
    pub(crate) fn new(tasks: Vec<TaskSpec>, mut wanted: Vec<bool>, limits: Limits) -> Dispatcher {
        assert_eq!(tasks.len(), wanted.len(), "one `wanted` per task");
        let mut stack: Vec<usize> = (0..tasks.len()).filter(|&i| wanted[i]).collect();
        while let Some(i) = stack.pop() {
            for d in &tasks[i].dependencies {
                if !wanted[d.task] {
                    wanted[d.task] = true;
                    stack.push(d.task);
                }
            }
        }
        let order: Vec<usize> = topological_order(&tasks)
            .into_iter()
            .filter(|&i| wanted[i])
            .collect();
        let states = wanted
            .iter()
            .map(|&w| if w { State::Pending } else { State::Unwanted })
            .collect();
        Dispatcher {
            pending: order.len(),
            tasks,
            states,
            order,
            limits,
            running: 0,
            stopped: None,
        }
    }

    /// The wanted tasks, each after its dependencies (ties in pipeline order).
    pub(crate) fn order(&self) -> &[usize] {
        &self.order
    }

    /// Adds wanted tasks to the run and returns their indices. Each may depend on tasks
    /// already known and on those before it in `tasks`; they are considered after every task
    /// known so far, unless an [`DispatchEvent::Expanded`] places them before their
    /// `parallel:` task.
    ///
    /// Panics if a dependency is not one of those: the caller checked the names.
    pub(crate) fn add_tasks(&mut self, tasks: Vec<TaskSpec>) -> std::ops::Range<usize> {
        let start = self.tasks.len();
        for (n, t) in tasks.into_iter().enumerate() {
            let i = start + n;
            assert!(
                t.dependencies.iter().all(|d| d.task < i),
                "an added task depends only on tasks known before it"
            );
            self.tasks.push(t);
            self.states.push(State::Pending);
            self.order.push(i);
            self.pending += 1;
        }
        start..self.tasks.len()
    }

    /// Takes in what happened; [`Dispatcher::next_actions`] says what follows from it.
    ///
    /// Panics if a task that is not running finishes: the caller lost track.
    pub(crate) fn record(&mut self, event: DispatchEvent) {
        match event {
            DispatchEvent::TaskFinished { task, outcome } => {
                assert_eq!(
                    self.states[task],
                    State::Running,
                    "task {task} finished but was not running"
                );
                self.running -= 1;
                self.states[task] = State::Concluded(match outcome {
                    Outcome::Ran => Conclusion::Ran,
                    Outcome::Cached => Conclusion::Cached,
                    Outcome::Failed => Conclusion::Failed,
                    Outcome::ConditionFalse => Conclusion::Skipped(SkipReason::ConditionFalse),
                });
                if outcome == Outcome::Failed && self.limits.fail_fast && self.stopped.is_none() {
                    self.stopped = Some(SkipReason::FailFast);
                }
            }
            DispatchEvent::Expanded { task, members } => {
                assert_eq!(
                    self.states[task],
                    State::Running,
                    "task {task} expanded but was not running"
                );
                assert!(members.end <= self.tasks.len(), "members are added first");
                self.running -= 1;
                self.pending += 1;
                self.states[task] = State::Pending;
                self.tasks[task]
                    .dependencies
                    .extend(members.clone().map(|m| Dependency {
                        task: m,
                        kind: DependencyKind::Use,
                    }));
                // The members were added last; they go right before the task, so that it and
                // everything after it still come after what they depend on.
                self.order.retain(|i| !members.contains(i));
                let at = self
                    .order
                    .iter()
                    .position(|&i| i == task)
                    .expect("a running task is in the order");
                self.order.splice(at..at, members);
            }
            // What the user did wins over what --fail-fast did.
            DispatchEvent::Interrupted => self.stopped = Some(SkipReason::Interrupted),
        }
    }

    /// What to do now, given everything recorded so far: tasks to skip and to start, in
    /// dependency order, then `Done` once every wanted task has concluded. Asking again
    /// without recording anything in between answers nothing new (or `Done` again).
    pub(crate) fn next_actions(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let jobs = self.limits.jobs.max(1);
        for n in 0..self.order.len() {
            let i = self.order[n];
            if self.states[i] != State::Pending {
                continue;
            }
            let skip = match self.readiness(i) {
                Readiness::Blocked(reason) => Some(reason),
                _ if self.stopped.is_some() => self.stopped,
                Readiness::Waiting => continue,
                Readiness::Ready => match &self.tasks[i].rule {
                    StartRule::AllSucceeded => None,
                    StartRule::Custom(condition) => (!condition(&self.concluded_dependencies(i)))
                        .then_some(SkipReason::ConditionFalse),
                },
            };
            if let Some(reason) = skip {
                self.states[i] = State::Concluded(Conclusion::Skipped(reason));
                self.pending -= 1;
                actions.push(Action::Skip { task: i, reason });
            } else if self.running < jobs {
                self.states[i] = State::Running;
                self.pending -= 1;
                self.running += 1;
                actions.push(Action::Start(i));
            }
        }
        if self.pending == 0 && self.running == 0 {
            actions.push(Action::Done);
        }
        actions
    }

    fn conclusion(&self, task: usize) -> Option<Conclusion> {
        match self.states[task] {
            State::Concluded(c) => Some(c),
            _ => None,
        }
    }

    fn readiness(&self, i: usize) -> Readiness {
        let task = &self.tasks[i];
        let mut concluded = true;
        for d in &task.dependencies {
            let Some(conclusion) = self.conclusion(d.task) else {
                concluded = false;
                continue;
            };
            let must_succeed = d.kind != DependencyKind::Status;
            if must_succeed && !conclusion.succeeded() {
                let dependency = d.task;
                return Readiness::Blocked(match conclusion {
                    Conclusion::Failed => SkipReason::DependencyFailed { dependency },
                    Conclusion::Skipped(why) if why.by_condition() => {
                        SkipReason::DependencySkippedByCondition { dependency }
                    }
                    _ => SkipReason::DependencySkipped { dependency },
                });
            }
        }
        if concluded {
            Readiness::Ready
        } else {
            Readiness::Waiting
        }
    }

    fn concluded_dependencies(&self, i: usize) -> Vec<(Dependency, Conclusion)> {
        self.tasks[i]
            .dependencies
            .iter()
            .map(|&d| (d, self.conclusion(d.task).expect("checked concluded")))
            .collect()
    }
}

/// Every task after its dependencies, ties in pipeline order: the same sweeps as
/// `Pipeline::topological_order`, so tasks are considered (and skips reported) in the order
/// they always were.
fn topological_order(tasks: &[TaskSpec]) -> Vec<usize> {
    let mut placed = vec![false; tasks.len()];
    let mut order = Vec::with_capacity(tasks.len());
    while order.len() < tasks.len() {
        let before = order.len();
        for (i, task) in tasks.iter().enumerate() {
            if !placed[i] && task.dependencies.iter().all(|d| placed[d.task]) {
                placed[i] = true;
                order.push(i);
            }
        }
        assert!(order.len() > before, "the dependencies form a cycle");
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::{Done, Skip, Start};
    use DependencyKind::{After, Status, Use};

    fn task(dependencies: &[(usize, DependencyKind)]) -> TaskSpec {
        TaskSpec {
            dependencies: dependencies
                .iter()
                .map(|&(task, kind)| Dependency { task, kind })
                .collect(),
            rule: StartRule::AllSucceeded,
        }
    }

    fn with_condition(
        dependencies: &[(usize, DependencyKind)],
        condition: impl Fn(&[(Dependency, Conclusion)]) -> bool + 'static,
    ) -> TaskSpec {
        TaskSpec {
            rule: StartRule::Custom(Box::new(condition)),
            ..task(dependencies)
        }
    }

    fn dispatcher(tasks: Vec<TaskSpec>, jobs: usize) -> Dispatcher {
        let wanted = vec![true; tasks.len()];
        Dispatcher::new(
            tasks,
            wanted,
            Limits {
                jobs,
                fail_fast: false,
            },
        )
    }

    fn fail_fast(tasks: Vec<TaskSpec>, jobs: usize) -> Dispatcher {
        let wanted = vec![true; tasks.len()];
        Dispatcher::new(
            tasks,
            wanted,
            Limits {
                jobs,
                fail_fast: true,
            },
        )
    }

    fn finish(d: &mut Dispatcher, task: usize, outcome: Outcome) -> Vec<Action> {
        d.record(DispatchEvent::TaskFinished { task, outcome });
        d.next_actions()
    }

    fn skip(task: usize, reason: SkipReason<usize>) -> Action {
        Skip { task, reason }
    }

    #[test]
    fn a_diamond_runs_each_task_once_its_dependencies_succeeded() {
        //   0
        //  1 2
        //   3
        let mut d = dispatcher(
            vec![
                task(&[]),
                task(&[(0, Use)]),
                task(&[(0, Use)]),
                task(&[(1, Use), (2, Use)]),
            ],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::Ran), [Start(1), Start(2)]);
        assert_eq!(finish(&mut d, 2, Outcome::Cached), []);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Start(3)]);
        assert_eq!(finish(&mut d, 3, Outcome::Ran), [Done]);
    }

    #[test]
    fn one_job_runs_one_task_at_a_time() {
        let mut d = dispatcher(vec![task(&[]), task(&[]), task(&[])], 1);
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::Ran), [Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Start(2)]);
        assert_eq!(finish(&mut d, 2, Outcome::Ran), [Done]);
    }

    #[test]
    fn two_jobs_run_two_tasks_at_a_time() {
        let mut d = dispatcher(vec![task(&[]), task(&[]), task(&[])], 2);
        assert_eq!(d.next_actions(), [Start(0), Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Start(2)]);
        assert_eq!(finish(&mut d, 0, Outcome::Ran), []);
        assert_eq!(finish(&mut d, 2, Outcome::Ran), [Done]);
    }

    #[test]
    fn zero_jobs_counts_as_one() {
        let mut d = dispatcher(vec![task(&[]), task(&[])], 0);
        assert_eq!(d.next_actions(), [Start(0)]);
    }

    #[test]
    fn a_failure_skips_its_dependents_but_not_independent_tasks() {
        let mut d = dispatcher(
            vec![task(&[]), task(&[(0, Use)]), task(&[(1, After)]), task(&[])],
            2,
        );
        assert_eq!(d.next_actions(), [Start(0), Start(3)]);
        assert_eq!(
            finish(&mut d, 0, Outcome::Failed),
            [
                skip(1, SkipReason::DependencyFailed { dependency: 0 }),
                skip(2, SkipReason::DependencySkipped { dependency: 1 }),
            ]
        );
        assert_eq!(finish(&mut d, 3, Outcome::Ran), [Done]);
    }

    #[test]
    fn the_first_listed_dependency_that_did_not_succeed_names_the_skip() {
        let mut d = dispatcher(vec![task(&[]), task(&[]), task(&[(1, Use), (0, After)])], 2);
        assert_eq!(d.next_actions(), [Start(0), Start(1)]);
        assert_eq!(
            finish(&mut d, 0, Outcome::Failed),
            [skip(2, SkipReason::DependencyFailed { dependency: 0 })]
        );
        assert_eq!(finish(&mut d, 1, Outcome::Failed), [Done]);
    }

    #[test]
    fn fail_fast_starts_nothing_new_but_lets_running_tasks_finish() {
        // The CLI test's pipeline: `bad`, `later` after `slow`, `slow`; and one more.
        let mut d = fail_fast(
            vec![task(&[]), task(&[(2, After)]), task(&[]), task(&[])],
            2,
        );
        assert_eq!(d.next_actions(), [Start(0), Start(2)]);
        // Considered in dependency order: 3 before 1, which waits for 2.
        assert_eq!(
            finish(&mut d, 0, Outcome::Failed),
            [skip(3, SkipReason::FailFast), skip(1, SkipReason::FailFast)]
        );
        assert_eq!(finish(&mut d, 2, Outcome::Ran), [Done]);
    }

    #[test]
    fn with_fail_fast_the_failed_tasks_dependents_still_name_it() {
        let mut d = fail_fast(vec![task(&[]), task(&[(0, Use)]), task(&[])], 1);
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(
            finish(&mut d, 0, Outcome::Failed),
            [
                skip(1, SkipReason::DependencyFailed { dependency: 0 }),
                skip(2, SkipReason::FailFast),
                Done,
            ]
        );
    }

    #[test]
    fn an_interruption_skips_everything_not_started_and_waits_for_running_tasks() {
        let mut d = dispatcher(vec![task(&[]), task(&[(0, Use)]), task(&[])], 1);
        assert_eq!(d.next_actions(), [Start(0)]);
        d.record(DispatchEvent::Interrupted);
        assert_eq!(
            d.next_actions(),
            [
                skip(1, SkipReason::Interrupted),
                skip(2, SkipReason::Interrupted),
            ]
        );
        // The running task was stopped: it reports a failure, which changes nothing now.
        assert_eq!(finish(&mut d, 0, Outcome::Failed), [Done]);
    }

    #[test]
    fn an_interruption_before_anything_started_starts_nothing() {
        let mut d = dispatcher(vec![task(&[]), task(&[(0, Use)]), task(&[])], 4);
        d.record(DispatchEvent::Interrupted);
        assert_eq!(
            d.next_actions(),
            [
                skip(0, SkipReason::Interrupted),
                skip(1, SkipReason::DependencySkipped { dependency: 0 }),
                skip(2, SkipReason::Interrupted),
                Done,
            ]
        );
    }

    #[test]
    fn after_only_orders() {
        let mut d = dispatcher(vec![task(&[]), task(&[(0, After)])], 4);
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::Cached), [Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Done]);
    }

    #[test]
    fn tasks_are_considered_in_dependency_order_ties_in_pipeline_order() {
        let d = dispatcher(vec![task(&[(2, Use)]), task(&[]), task(&[])], 4);
        assert_eq!(d.order(), [1, 2, 0]);
    }

    #[test]
    fn only_the_targets_and_what_they_need_are_considered() {
        let tasks = vec![
            task(&[]),
            task(&[(0, Use)]),
            task(&[(1, After)]),
            task(&[]),
            task(&[(3, Use)]),
        ];
        let wanted = vec![false, false, true, false, false];
        let limits = Limits {
            jobs: 4,
            fail_fast: false,
        };
        let mut d = Dispatcher::new(tasks, wanted, limits);
        assert_eq!(d.order(), [0, 1, 2]);
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::Ran), [Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Start(2)]);
        assert_eq!(finish(&mut d, 2, Outcome::Ran), [Done]);
    }

    #[test]
    fn a_false_condition_skips_the_task_and_its_dependents_as_asked() {
        let mut d = dispatcher(
            vec![
                task(&[]),
                with_condition(&[(0, Use)], |_| false),
                task(&[(1, Use)]),
                task(&[(2, After)]),
                task(&[(0, Use)]),
            ],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0)]);
        let actions = finish(&mut d, 0, Outcome::Ran);
        assert_eq!(
            actions,
            [
                skip(1, SkipReason::ConditionFalse),
                skip(
                    2,
                    SkipReason::DependencySkippedByCondition { dependency: 1 }
                ),
                skip(
                    3,
                    SkipReason::DependencySkippedByCondition { dependency: 2 }
                ),
                Start(4),
            ]
        );
        // None of these is a failure: the run still succeeds.
        for action in actions {
            if let Skip { reason, .. } = action {
                assert!(reason.by_condition(), "{reason:?}");
            }
        }
        assert_eq!(finish(&mut d, 4, Outcome::Ran), [Done]);
    }

    #[test]
    fn a_condition_without_dependencies_is_decided_at_once() {
        let mut d = dispatcher(vec![with_condition(&[], |_| false), task(&[])], 4);
        assert_eq!(
            d.next_actions(),
            [skip(0, SkipReason::ConditionFalse), Start(1)]
        );
    }

    fn when_all_failed(deps: &[(Dependency, Conclusion)]) -> bool {
        deps.iter().all(|&(_, c)| c == Conclusion::Failed)
    }

    #[test]
    fn a_custom_rule_can_start_a_task_because_its_dependency_failed() {
        // `notify` after: ${{ build.failed }}
        let mut d = dispatcher(
            vec![task(&[]), with_condition(&[(0, Status)], when_all_failed)],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::Failed), [Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Done]);
    }

    #[test]
    fn a_custom_rule_skips_the_task_when_it_is_false() {
        let mut d = dispatcher(
            vec![task(&[]), with_condition(&[(0, Status)], when_all_failed)],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(
            finish(&mut d, 0, Outcome::Ran),
            [skip(1, SkipReason::ConditionFalse), Done]
        );
    }

    #[test]
    fn a_custom_rule_waits_for_every_dependency_and_sees_how_each_ended() {
        let mut d = dispatcher(
            vec![
                task(&[]),
                task(&[]),
                with_condition(&[(0, Status), (1, Status)], |deps| {
                    deps == [
                        (
                            Dependency {
                                task: 0,
                                kind: Status,
                            },
                            Conclusion::Failed,
                        ),
                        (
                            Dependency {
                                task: 1,
                                kind: Status,
                            },
                            Conclusion::Cached,
                        ),
                    ]
                }),
            ],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0), Start(1)]);
        assert_eq!(finish(&mut d, 0, Outcome::Failed), []);
        assert_eq!(finish(&mut d, 1, Outcome::Cached), [Start(2)]);
    }

    #[test]
    fn a_custom_rule_still_needs_its_use_dependencies_to_succeed() {
        let mut d = dispatcher(vec![task(&[]), with_condition(&[(0, Use)], |_| true)], 4);
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(
            finish(&mut d, 0, Outcome::Failed),
            [
                skip(1, SkipReason::DependencyFailed { dependency: 0 }),
                Done
            ]
        );
    }

    #[test]
    fn a_custom_rule_still_needs_its_plain_after_dependencies_to_succeed() {
        // `after: [setup]` beside a status expression on `build`.
        let mut d = dispatcher(
            vec![
                task(&[]),
                task(&[]),
                with_condition(&[(0, After), (1, Status)], |_| true),
            ],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0), Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Failed), []);
        assert_eq!(
            finish(&mut d, 0, Outcome::Failed),
            [
                skip(2, SkipReason::DependencyFailed { dependency: 0 }),
                Done
            ]
        );
    }

    #[test]
    fn a_notifier_after_a_failure_runs_and_the_failure_still_counts() {
        // build fails; `notify` (after: ${{ build.failed }}) runs; `deploy` (use: build) is
        // skipped because of the failure, not by a condition.
        let mut d = dispatcher(
            vec![
                task(&[]),
                with_condition(&[(0, Status)], when_all_failed),
                task(&[(0, Use)]),
            ],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(
            finish(&mut d, 0, Outcome::Failed),
            [
                Start(1),
                skip(2, SkipReason::DependencyFailed { dependency: 0 })
            ]
        );
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Done]);
    }

    #[test]
    fn a_status_dependency_skipped_by_a_condition_is_seen_as_skipped() {
        let seen = std::rc::Rc::new(std::cell::Cell::new(None));
        let seen_by_rule = seen.clone();
        let mut d = dispatcher(
            vec![
                task(&[]),
                with_condition(&[(0, Status)], move |deps| {
                    seen_by_rule.set(Some(deps[0].1));
                    true
                }),
            ],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::ConditionFalse), [Start(1)]);
        assert_eq!(
            seen.get(),
            Some(Conclusion::Skipped(SkipReason::ConditionFalse))
        );
    }

    #[test]
    fn an_if_found_false_when_the_task_starts_skips_its_dependents_by_condition() {
        let mut d = dispatcher(vec![task(&[]), task(&[(0, Use)]), task(&[(1, After)])], 4);
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(
            finish(&mut d, 0, Outcome::ConditionFalse),
            [
                skip(
                    1,
                    SkipReason::DependencySkippedByCondition { dependency: 0 }
                ),
                skip(
                    2,
                    SkipReason::DependencySkippedByCondition { dependency: 1 }
                ),
                Done
            ]
        );
    }

    #[test]
    fn added_tasks_run_after_what_they_depend_on_and_end_the_run_later() {
        // `gen` writes two dynamic tasks: `x` uses `base`, `y` uses `x`.
        let mut d = dispatcher(vec![task(&[]), task(&[])], 4);
        assert_eq!(d.next_actions(), [Start(0), Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), []);
        let added = d.add_tasks(vec![task(&[(0, Use)]), task(&[(2, Use)])]);
        assert_eq!(added, 2..4);
        assert_eq!(d.next_actions(), [], "x waits for base, which still runs");
        assert_eq!(finish(&mut d, 0, Outcome::Cached), [Start(2)]);
        assert_eq!(finish(&mut d, 2, Outcome::Ran), [Start(3)]);
        assert_eq!(finish(&mut d, 3, Outcome::Failed), [Done]);
    }

    #[test]
    fn an_expanded_task_waits_for_its_members_and_then_starts_again() {
        // 0: values; 1: parallel (reads 0); 2: uses 1.
        let mut d = dispatcher(vec![task(&[]), task(&[(0, After)]), task(&[(1, Use)])], 2);
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::Ran), [Start(1)]);
        let members = d.add_tasks(vec![task(&[]), task(&[]), task(&[])]);
        d.record(DispatchEvent::Expanded { task: 1, members });
        assert_eq!(d.order(), [0, 3, 4, 5, 1, 2]);
        // -j 2: two members at a time.
        assert_eq!(d.next_actions(), [Start(3), Start(4)]);
        assert_eq!(finish(&mut d, 3, Outcome::Ran), [Start(5)]);
        assert_eq!(finish(&mut d, 4, Outcome::Ran), []);
        assert_eq!(finish(&mut d, 5, Outcome::Cached), [Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Start(2)]);
        assert_eq!(finish(&mut d, 2, Outcome::Ran), [Done]);
    }

    #[test]
    fn a_failed_member_skips_the_parallel_task_and_its_dependents() {
        let mut d = dispatcher(vec![task(&[]), task(&[(0, Use)])], 4);
        assert_eq!(d.next_actions(), [Start(0)]);
        let members = d.add_tasks(vec![task(&[]), task(&[])]);
        d.record(DispatchEvent::Expanded { task: 0, members });
        assert_eq!(d.next_actions(), [Start(2), Start(3)]);
        assert_eq!(finish(&mut d, 2, Outcome::Ran), []);
        assert_eq!(
            finish(&mut d, 3, Outcome::Failed),
            [
                skip(0, SkipReason::DependencyFailed { dependency: 3 }),
                skip(1, SkipReason::DependencySkipped { dependency: 0 }),
                Done
            ]
        );
    }

    #[test]
    fn an_expansion_into_nothing_starts_the_task_again_at_once() {
        let mut d = dispatcher(vec![task(&[]), task(&[(0, Use)])], 4);
        assert_eq!(d.next_actions(), [Start(0)]);
        let members = d.add_tasks(Vec::new());
        d.record(DispatchEvent::Expanded { task: 0, members });
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::Ran), [Start(1)]);
    }

    #[test]
    fn asking_again_without_news_starts_nothing_twice() {
        let mut d = dispatcher(vec![task(&[]), task(&[])], 4);
        assert_eq!(d.next_actions(), [Start(0), Start(1)]);
        assert_eq!(d.next_actions(), []);
        assert_eq!(finish(&mut d, 0, Outcome::Ran), []);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Done]);
        assert_eq!(d.next_actions(), [Done]);
    }

    #[test]
    fn an_empty_run_is_done_at_once() {
        assert_eq!(dispatcher(Vec::new(), 4).next_actions(), [Done]);
    }

    #[test]
    #[should_panic(expected = "not running")]
    fn a_task_that_never_started_cannot_finish() {
        let mut d = dispatcher(vec![task(&[]), task(&[(0, Use)])], 4);
        d.next_actions();
        d.record(DispatchEvent::TaskFinished {
            task: 1,
            outcome: Outcome::Ran,
        });
    }

    /// Random pipelines, targets, limits, rules, outcomes and interruptions: every run ends,
    /// and every action the dispatcher takes is one the rules allow.
    mod random_runs {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::Index;

        #[derive(Debug, Clone, Copy)]
        enum Rule {
            AllSucceeded,
            /// `if:` false.
            Never,
            Always,
            /// `after: ${{ x.failed }}`.
            WhenSomeDependencyFailed,
        }

        fn allows(rule: Rule, dependencies: &[(Dependency, Conclusion)]) -> bool {
            match rule {
                Rule::AllSucceeded => dependencies
                    .iter()
                    .all(|(d, c)| d.kind == Status || c.succeeded()),
                Rule::Never => false,
                Rule::Always => true,
                Rule::WhenSomeDependencyFailed => {
                    dependencies.iter().any(|&(_, c)| c == Conclusion::Failed)
                }
            }
        }

        #[derive(Debug, Clone)]
        struct RandomRun {
            dependencies: Vec<Vec<Dependency>>,
            rules: Vec<Rule>,
            /// `ConditionFalse`: an `if:` found false when the task started.
            outcomes: Vec<Outcome>,
            targets: Vec<bool>,
            limits: Limits,
            /// Before which event the run is interrupted.
            interrupt_at: Option<usize>,
            /// Which running task finishes at each event.
            picks: Vec<usize>,
        }

        const MAX_TASKS: usize = 10;

        fn random_run() -> impl Strategy<Value = RandomRun> {
            (1..=MAX_TASKS).prop_flat_map(|n| {
                let rule = prop_oneof![
                    3 => Just(Rule::AllSucceeded),
                    1 => Just(Rule::Never),
                    1 => Just(Rule::Always),
                    1 => Just(Rule::WhenSomeDependencyFailed),
                ];
                let outcome = prop_oneof![
                    Just(Outcome::Ran),
                    Just(Outcome::Cached),
                    Just(Outcome::Failed),
                    Just(Outcome::ConditionFalse)
                ];
                (
                    // Each task's dependencies among the tasks before it...
                    vec(vec((any::<Index>(), 0..3u8), 0..3), n),
                    // ...then the tasks shuffled, so that file order is not dependency order.
                    Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                    vec(rule, n),
                    vec(outcome, n),
                    prop_oneof![Just(vec![true; n]), vec(any::<bool>(), n)],
                    (0..4usize, any::<bool>()),
                    proptest::option::of(0..MAX_TASKS + 2),
                    vec(any::<usize>(), MAX_TASKS + 2),
                )
                    .prop_map(
                        |(picked, label, rules, outcomes, targets, limits, interrupt_at, picks)| {
                            let mut dependencies = vec![Vec::new(); label.len()];
                            for (i, picked) in picked.iter().enumerate().skip(1) {
                                for &(j, kind) in picked {
                                    let kind = [Use, After, Status][kind as usize];
                                    let task = label[j.index(i)];
                                    dependencies[label[i]].push(Dependency { task, kind });
                                }
                            }
                            let (jobs, fail_fast) = limits;
                            RandomRun {
                                dependencies,
                                rules,
                                outcomes,
                                targets,
                                limits: Limits { jobs, fail_fast },
                                interrupt_at,
                                picks,
                            }
                        },
                    )
            })
        }

        fn dispatcher_for(run: &RandomRun) -> Dispatcher {
            let tasks = run
                .dependencies
                .iter()
                .zip(&run.rules)
                .map(|(dependencies, &rule)| TaskSpec {
                    dependencies: dependencies.clone(),
                    rule: match rule {
                        Rule::AllSucceeded => StartRule::AllSucceeded,
                        custom => StartRule::Custom(Box::new(move |d| allows(custom, d))),
                    },
                })
                .collect();
            Dispatcher::new(tasks, run.targets.clone(), run.limits)
        }

        /// The targets and everything they depend on.
        fn closure(run: &RandomRun) -> Vec<bool> {
            let mut wanted = run.targets.clone();
            loop {
                let before = wanted.clone();
                for (i, dependencies) in run.dependencies.iter().enumerate() {
                    if wanted[i] {
                        for d in dependencies {
                            wanted[d.task] = true;
                        }
                    }
                }
                if wanted == before {
                    return wanted;
                }
            }
        }

        /// What the test knows of the run so far.
        struct Seen<'a> {
            run: &'a RandomRun,
            conclusions: Vec<Option<Conclusion>>,
            started: Vec<bool>,
            running: Vec<usize>,
            failed: bool,
            interrupted: bool,
        }

        impl Seen<'_> {
            fn concluded(&self, task: usize) -> Option<Vec<(Dependency, Conclusion)>> {
                self.run.dependencies[task]
                    .iter()
                    .map(|&d| Some((d, self.conclusions[d.task]?)))
                    .collect()
            }

            fn check_start(&self, task: usize) -> Result<(), TestCaseError> {
                prop_assert!(!self.started[task], "task {} started twice", task);
                prop_assert!(
                    self.conclusions[task].is_none(),
                    "{} started after it was skipped",
                    task
                );
                prop_assert!(!self.interrupted, "{} started after an interruption", task);
                prop_assert!(
                    !(self.failed && self.run.limits.fail_fast),
                    "{} started after a failure with --fail-fast",
                    task
                );
                let concluded = self.concluded(task);
                prop_assert!(
                    concluded.is_some(),
                    "{} started before its dependencies ended",
                    task
                );
                let concluded = concluded.unwrap();
                let rule = self.run.rules[task];
                prop_assert!(
                    allows(rule, &concluded),
                    "{} started against its rule",
                    task
                );
                prop_assert!(
                    concluded
                        .iter()
                        .all(|(d, c)| d.kind == Status || c.succeeded()),
                    "{} started though a dependency that had to succeed did not",
                    task
                );
                Ok(())
            }

            fn check_skip(
                &self,
                task: usize,
                reason: SkipReason<usize>,
            ) -> Result<(), TestCaseError> {
                prop_assert!(!self.started[task], "{} skipped after it started", task);
                prop_assert!(self.conclusions[task].is_none(), "{} skipped twice", task);
                // How a dependency that had to succeed ended.
                let conclusion_of = |dependency: usize| {
                    let must_succeed = self.run.dependencies[task]
                        .iter()
                        .any(|d| d.task == dependency && d.kind != Status);
                    must_succeed
                        .then_some(self.conclusions[dependency])
                        .flatten()
                };
                let justified = match reason {
                    SkipReason::DependencyFailed { dependency } => {
                        conclusion_of(dependency) == Some(Conclusion::Failed)
                    }
                    SkipReason::DependencySkipped { dependency } => matches!(
                        conclusion_of(dependency),
                        Some(Conclusion::Skipped(why)) if !why.by_condition()
                    ),
                    SkipReason::DependencySkippedByCondition { dependency } => matches!(
                        conclusion_of(dependency),
                        Some(Conclusion::Skipped(why)) if why.by_condition()
                    ),
                    SkipReason::FailFast => {
                        self.run.limits.fail_fast && self.failed && !self.interrupted
                    }
                    SkipReason::Interrupted => self.interrupted,
                    SkipReason::ConditionFalse => {
                        !matches!(self.run.rules[task], Rule::AllSucceeded)
                            && self
                                .concluded(task)
                                .is_some_and(|c| !allows(self.run.rules[task], &c))
                    }
                };
                prop_assert!(justified, "{} skipped without reason: {:?}", task, reason);
                Ok(())
            }
        }

        fn check(run: &RandomRun) -> Result<(), TestCaseError> {
            let n = run.dependencies.len();
            let wanted = closure(run);
            let mut d = dispatcher_for(run);

            let order = d.order().to_vec();
            let expected: Vec<usize> = (0..n).filter(|&i| wanted[i]).collect();
            let mut sorted = order.clone();
            sorted.sort();
            prop_assert_eq!(sorted, expected);
            for (at, &i) in order.iter().enumerate() {
                for dep in &run.dependencies[i] {
                    prop_assert!(
                        order[..at].contains(&dep.task),
                        "{} ordered before {}",
                        i,
                        dep.task
                    );
                }
            }

            let mut seen = Seen {
                run,
                conclusions: vec![None; n],
                started: vec![false; n],
                running: Vec::new(),
                failed: false,
                interrupted: false,
            };
            // One event per wanted task at most, and one interruption.
            for event in 0..=n + 1 {
                let actions = d.next_actions();
                for (at, &action) in actions.iter().enumerate() {
                    match action {
                        Start(task) => {
                            prop_assert!(wanted[task], "{} is not wanted", task);
                            seen.check_start(task)?;
                            seen.started[task] = true;
                            seen.running.push(task);
                            prop_assert!(
                                seen.running.len() <= run.limits.jobs.max(1),
                                "more tasks run than -j allows"
                            );
                        }
                        Skip { task, reason } => {
                            prop_assert!(wanted[task], "{} is not wanted", task);
                            seen.check_skip(task, reason)?;
                            seen.conclusions[task] = Some(Conclusion::Skipped(reason));
                        }
                        Done => {
                            prop_assert_eq!(at, actions.len() - 1, "actions after Done");
                            prop_assert!(seen.running.is_empty(), "Done while tasks run");
                            let concluded: Vec<bool> =
                                seen.conclusions.iter().map(Option::is_some).collect();
                            prop_assert_eq!(&concluded, &wanted, "the wanted tasks, all concluded");
                            return Ok(());
                        }
                    }
                }
                prop_assert!(
                    !seen.running.is_empty(),
                    "nothing runs, yet the run is not over"
                );
                if run.interrupt_at == Some(event) {
                    d.record(DispatchEvent::Interrupted);
                    seen.interrupted = true;
                    continue;
                }
                let task = seen
                    .running
                    .swap_remove(run.picks[event] % seen.running.len());
                let outcome = run.outcomes[task];
                d.record(DispatchEvent::TaskFinished { task, outcome });
                seen.failed |= outcome == Outcome::Failed;
                seen.conclusions[task] = Some(match outcome {
                    Outcome::Ran => Conclusion::Ran,
                    Outcome::Cached => Conclusion::Cached,
                    Outcome::Failed => Conclusion::Failed,
                    Outcome::ConditionFalse => Conclusion::Skipped(SkipReason::ConditionFalse),
                });
            }
            prop_assert!(false, "the run is not over after every task finished");
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
            #[test]
            fn every_run_ends_and_every_action_is_allowed(run in random_run()) {
                check(&run)?;
            }
        }
    }

    /// Random runs that grow: a finished task may add tasks (dynamic tasks), a started one may
    /// expand into members (a `parallel:` task). Every run still ends, nothing starts before
    /// what it depends on concluded, or after something it must have succeeded did not.
    mod growing_runs {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// One event: how the task ends, how many tasks join, whether they are its members
        /// (an expansion) rather than dynamic tasks, and seeds for their dependencies.
        type Step = (Outcome, u8, bool, Vec<(usize, u8)>);

        #[derive(Debug, Clone)]
        struct Growth {
            steps: Vec<Step>,
            initial: usize,
            jobs: usize,
        }

        fn growth() -> impl Strategy<Value = Growth> {
            let outcome = prop_oneof![
                Just(Outcome::Ran),
                Just(Outcome::Cached),
                Just(Outcome::Failed),
                Just(Outcome::ConditionFalse)
            ];
            (
                vec(
                    (
                        outcome,
                        0..3u8,
                        any::<bool>(),
                        vec((any::<usize>(), 0..3u8), 0..3),
                    ),
                    1..40,
                ),
                1..5usize,
                1..4usize,
            )
                .prop_map(|(steps, initial, jobs)| Growth {
                    steps,
                    initial,
                    jobs,
                })
        }

        fn spec(n: usize, deps: &[(usize, u8)]) -> TaskSpec {
            TaskSpec {
                dependencies: if n == 0 {
                    Vec::new()
                } else {
                    deps.iter()
                        .map(|&(t, k)| Dependency {
                            task: t % n,
                            kind: [Use, After, Status][k as usize],
                        })
                        .collect()
                },
                rule: StartRule::AllSucceeded,
            }
        }

        fn check(g: &Growth) -> Result<(), TestCaseError> {
            let tasks: Vec<TaskSpec> = (0..g.initial).map(|_| task(&[])).collect();
            let mut d = dispatcher(tasks, g.jobs);
            let mut deps: Vec<Vec<Dependency>> = vec![Vec::new(); g.initial];
            let mut conclusions: Vec<Option<Conclusion>> = vec![None; g.initial];
            let mut running: Vec<usize> = Vec::new();
            let mut steps = g.steps.iter().cycle().take(400);
            loop {
                for action in d.next_actions() {
                    match action {
                        Start(t) => {
                            for dep in &deps[t] {
                                let c = conclusions[dep.task];
                                prop_assert!(c.is_some(), "{} started before {}", t, dep.task);
                                prop_assert!(
                                    dep.kind == Status || c.unwrap().succeeded(),
                                    "{} started though {} did not succeed",
                                    t,
                                    dep.task
                                );
                            }
                            prop_assert!(!running.contains(&t));
                            running.push(t);
                        }
                        Skip { task: t, reason } => {
                            prop_assert!(conclusions[t].is_none(), "{} concluded twice", t);
                            conclusions[t] = Some(Conclusion::Skipped(reason));
                        }
                        Done => {
                            prop_assert!(running.is_empty());
                            prop_assert!(conclusions.iter().all(Option::is_some));
                            return Ok(());
                        }
                    }
                }
                prop_assert!(!running.is_empty(), "nothing runs, yet the run is not over");
                let Some((outcome, add, expand, seeds)) = steps.next() else {
                    // Out of steps: finish what runs, adding nothing more.
                    let t = running.remove(0);
                    d.record(DispatchEvent::TaskFinished {
                        task: t,
                        outcome: Outcome::Ran,
                    });
                    conclusions[t] = Some(Conclusion::Ran);
                    continue;
                };
                let t = running.remove(0);
                let n = deps.len();
                let new: Vec<TaskSpec> = (0..*add as usize).map(|k| spec(n + k, seeds)).collect();
                for s in &new {
                    deps.push(s.dependencies.clone());
                    conclusions.push(None);
                }
                let members = d.add_tasks(new);
                if *expand
                    && !members.is_empty()
                    && members.clone().all(|m| {
                        deps[m]
                            .iter()
                            .all(|dep| dep.task != t && conclusions[dep.task].is_some())
                    })
                {
                    // `t` waits for its members, then starts again.
                    deps[t].extend(members.clone().map(|m| Dependency { task: m, kind: Use }));
                    d.record(DispatchEvent::Expanded { task: t, members });
                } else {
                    d.record(DispatchEvent::TaskFinished {
                        task: t,
                        outcome: *outcome,
                    });
                    conclusions[t] = Some(match outcome {
                        Outcome::Ran => Conclusion::Ran,
                        Outcome::Cached => Conclusion::Cached,
                        Outcome::Failed => Conclusion::Failed,
                        Outcome::ConditionFalse => Conclusion::Skipped(SkipReason::ConditionFalse),
                    });
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
            #[test]
            fn a_run_that_grows_still_ends_and_keeps_the_rules(g in growth()) {
                check(&g)?;
            }
        }
    }
}
