//! Every decision of a run, as a state machine over what happens to its tasks: which task
//! starts, which is skipped and why, when `--fail-fast` or an interruption stops new starts, and
//! when the run is over. No threads, no I/O: the scheduler records events (a task finished, the
//! run was interrupted) and does what [`Dispatcher::next_actions`] answers (nextest's
//! dispatcher owns the state the user sees in the same way).
//!
//! Tasks are named by their index in the pipeline.

use crate::events::SkipReason;

/// How a task depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DependencyKind {
    /// `use`: the task builds on the dependency's result, so the dependency must have succeeded.
    Use,
    /// `after`: only the order; what else it takes is the task's [`StartRule`].
    After,
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
    /// without failing the run (`if:`, `after: ${{ build.failed }}`). A `use` dependency must
    /// still have succeeded, since the task builds on its result.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "conditions (`if:`, `after: ${{ … }}`) come next")
    )]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DispatchEvent {
    /// A started task is over.
    TaskFinished { task: usize, outcome: Outcome },
    /// Start nothing new; running tasks stop on their own and still report `TaskFinished`.
    Interrupted,
}

/// How a started task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ran,
    Cached,
    Failed,
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
                });
                if outcome == Outcome::Failed && self.limits.fail_fast && self.stopped.is_none() {
                    self.stopped = Some(SkipReason::FailFast);
                }
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
            let must_succeed = match task.rule {
                StartRule::AllSucceeded => true,
                StartRule::Custom(_) => d.kind == DependencyKind::Use,
            };
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
    use DependencyKind::{After, Use};

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
            vec![task(&[]), with_condition(&[(0, After)], when_all_failed)],
            4,
        );
        assert_eq!(d.next_actions(), [Start(0)]);
        assert_eq!(finish(&mut d, 0, Outcome::Failed), [Start(1)]);
        assert_eq!(finish(&mut d, 1, Outcome::Ran), [Done]);
    }

    #[test]
    fn a_custom_rule_skips_the_task_when_it_is_false() {
        let mut d = dispatcher(
            vec![task(&[]), with_condition(&[(0, After)], when_all_failed)],
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
                with_condition(&[(0, After), (1, After)], |deps| {
                    deps == [
                        (
                            Dependency {
                                task: 0,
                                kind: After,
                            },
                            Conclusion::Failed,
                        ),
                        (
                            Dependency {
                                task: 1,
                                kind: After,
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
}
