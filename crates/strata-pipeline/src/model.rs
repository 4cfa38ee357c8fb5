use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::diagnostic::Location;
use crate::filter::Filter;

/// The name a task has in its pipeline (`key:` in the file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskName(String);

impl TaskName {
    pub fn new(name: impl Into<String>) -> Self {
        TaskName(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the bottom of every task's filesystem stack is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The machine's own root filesystem, read-only under the task's layers.
    Host(HostBase),
    /// A directory holding a root filesystem (relative paths are relative to the pipeline file).
    Rootfs(PathBuf),
    /// An OCI image: `registry/repository[:tag|@digest]`, or `oci:DIR[:TAG]` for an image layout
    /// directory (relative to the pipeline file).
    Image(String),
}

impl Default for Base {
    fn default() -> Base {
        Base::Host(HostBase::default())
    }
}

/// `base: host` and its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostBase {
    /// Host paths whose content joins the base identity (`key-paths`): toolchains installed
    /// outside the package manager (`/usr/local`, `/opt/...`, `~/.rustup`).
    pub key_paths: Vec<PathBuf>,
}

/// A shared cache named in a pipeline or config file: `URL[,ro|,rw]`, or a mapping
/// `{url: URL, trusted-keys: [NAME:BASE64, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCacheDecl {
    pub spec: String,
    pub at: Location,
    /// Public keys one of which must have signed an entry of this cache for it to be used
    /// (none: entries are used signed or not). Parsed by `strata_cache::PublicKey::parse`.
    pub trusted_keys: Vec<TrustedKeyDecl>,
}

/// A trusted public key as written (`NAME:BASE64`), with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKeyDecl {
    pub text: String,
    pub at: Location,
}

/// A string from the file as written, with where it starts: `run`, an env value, a `with`
/// parameter. It may hold `${{ … }}` expressions, resolved when the run starts (or, for
/// `tasks.X.values.Y`, when the task starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub raw: String,
    pub at: Location,
}

impl Text {
    pub fn new(raw: impl Into<String>, at: Location) -> Self {
        Text {
            raw: raw.into(),
            at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Part of the cache key.
    Keyed(Text),
    /// Given to the task but left out of the key (tokens): it enters by name only.
    Excluded(Text),
}

impl EnvValue {
    pub fn text(&self) -> &Text {
        match self {
            EnvValue::Keyed(v) | EnvValue::Excluded(v) => v,
        }
    }

    /// The value as written (before expressions are resolved).
    pub fn value(&self) -> &str {
        &self.text().raw
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

/// Which language rules a file follows. Both dialects share one syntax; they differ in where the
/// workspace enters (README: "Where the workspace enters").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// strata's own files: a task sees the workspace when it has a `filter`, `workspace: true`,
    /// or uses a task that sees it.
    Strata,
    /// RWX run definitions (files under `.rwx/` or `.mint/`): only tasks that reach a `git/clone`
    /// of the workspace through `use` see it.
    Rwx,
}

/// A `git/clone` (or `mint/git-clone`) call of the workspace's own repository: strata serves it
/// from the checkout it captured instead of cloning. It has no layer of its own; the tasks that
/// use it see the workspace at `path`.
#[derive(Debug, Clone)]
pub struct WorkspaceSource {
    /// `with.path`: where the checkout appears under the workspace directory.
    pub path: Option<Text>,
    /// `with.ref`: checked against the checkout's HEAD.
    pub reference: Option<Text>,
    /// `with.repository`: when set, it must name a remote of the checkout (checked at run time).
    pub repository: Option<Text>,
    /// `with.preserve-git-dir`: whether the checkout's `.git` is present (and keyed).
    pub preserve_git_dir: Option<Text>,
    /// `with.meta-ref`: overrides `RWX_GIT_REF`.
    pub meta_ref: Option<Text>,
    /// The call as written: a clone of another repository becomes a call of the `git/clone`
    /// package when a package source holds it.
    pub call: Option<crate::calls::CallSpec>,
}

/// What a task does.
#[derive(Debug, Clone)]
pub enum TaskKind {
    /// Runs its `run` command.
    Command,
    /// Serves the workspace: see [`WorkspaceSource`].
    Source(WorkspaceSource),
    /// A call strata could not resolve when the file was read (no package source holds the
    /// package, a run definition named by a run-time expression): accepted by `check`, refused
    /// by `run` (it is listed in [`Pipeline::unsupported`]).
    Call(crate::calls::CallSpec),
    /// A resolved call of a package or run definition. Its tasks are in the pipeline, named
    /// `caller.inner`; this task runs nothing: it stands for them (`use: [caller]`, see
    /// [`crate::calls::CallOutputs`]).
    Called(crate::calls::CallOutputs),
}

/// A key that `check` accepts but this version cannot honour yet: `run` refuses the file with
/// one message naming them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The key as written (`parallel`, `outputs`, `call: nodejs/install 1.1.0`, ...).
    pub key: String,
    pub task: Option<TaskName>,
    pub at: Location,
}

/// Something in the file that has no effect in strata (a key of RWX's cloud), said once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub at: Location,
    pub message: String,
    /// The file runs, but perhaps not as its author meant (shown as a warning).
    pub warning: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    pub enabled: bool,
    /// Entries older than this are not used.
    pub ttl: Option<Duration>,
    /// `cache: ${{ … }}` or `cache.enabled: ${{ … }}`: whether the cache is used is decided when
    /// the task starts (the expression must give `true` or `false`); `enabled` is then `true`.
    pub enabled_expr: Option<Text>,
    /// `cache.ttl` with an expression, resolved when the task starts.
    pub ttl_expr: Option<Text>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            enabled: true,
            ttl: None,
            enabled_expr: None,
            ttl_expr: None,
        }
    }
}

/// `env-config`: how the variables exported by the tasks a task uses are combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvConfig {
    /// `inherit`: the used tasks whose exports are inherited (`None`: all of them,
    /// RWX's `all-used-tasks`).
    pub inherit: Option<Vec<TaskName>>,
    /// `merge`: variables combined otherwise than "the last used task wins".
    pub merge: Vec<(String, EnvMerge)>,
}

/// How a variable exported by several used tasks is combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvMerge {
    /// `strategy: join, by: SEP`: every used task's value, the last used task's first.
    Join(String),
    /// `strategy: override`: the last used task's value (for `PATH`, no joining).
    Override,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: TaskName,
    /// Where `key:` is, for errors that concern the task as a whole.
    pub at: Location,
    pub kind: TaskKind,
    /// The command (empty for sources and calls).
    pub run: Text,
    /// Tasks whose filesystem and env this task builds on, in order: the last one wins.
    pub uses: Vec<TaskName>,
    /// Tasks that must finish first, without their filesystem or env.
    pub after: Vec<TaskName>,
    /// Tasks whose values (`${{ tasks.X.values.Y }}`) this task reads: they finish first.
    pub value_deps: Vec<TaskName>,
    /// Artifacts of other tasks this task reads (`${{ tasks.X.artifacts.K }}`); each X is in
    /// `value_deps` too, so it finishes first.
    pub artifact_refs: Vec<crate::artifact_refs::ArtifactRef>,
    /// Narrows which workspace files the task sees (and is keyed on); `None`: all it can see.
    /// In strata's own files it also asks for the workspace.
    pub filter: Option<Filter>,
    /// `workspace: true` (strata's own files): the task sees the whole workspace.
    pub workspace: bool,
    pub env: Vec<EnvVar>,
    pub cache: CachePolicy,
    pub timeout: Option<Duration>,
    /// `terminate-grace-period-seconds`: on a timeout or an interruption the task gets SIGTERM
    /// and this long to finish before SIGKILL (`None`: SIGKILL at once).
    pub grace_period: Option<Duration>,
    /// `env-config`.
    pub env_config: EnvConfig,
    // Control flow of the run: `if`, `after` with a status expression, `parallel`.
    /// `if: ${{ … }}`: when false the task and its dependents are skipped, which does not fail
    /// the run.
    pub condition: Option<Text>,
    /// `after: ${{ a.failed || b.succeeded }}`: the task waits for every task named in it, then
    /// starts only if it is true.
    pub after_condition: Option<Text>,
    /// The tasks named in `after_condition`: only the order, none of their results.
    pub status_deps: Vec<TaskName>,
    /// `parallel:`: the spec of a task not yet expanded, or the place of a generated task.
    pub parallel: Option<crate::parallel::Parallel>,
    /// `privileged: true` (strata's own files): the task keeps every capability and sees
    /// `/sys` and `/proc` unguarded (docs/security.md). Keyed.
    pub privileged: bool,
    /// `tool-cache: NAME`: on a miss the task starts from the files its latest successful
    /// execution under this name left (not keyed; `strata-engine`'s `tool_cache.rs`). The name
    /// may be an expression, resolved as the task starts.
    pub tool_cache: Option<Text>,
    /// `outputs`: artifacts, test results, success exit codes, what the layer keeps.
    pub outputs: crate::outputs::TaskOutputs,
    /// `retry`: how many more times a failed task runs.
    pub retry: Option<crate::outputs::Retry>,
    /// `background-processes`: started in the task's sandbox before its command. Keyed.
    pub background: Vec<BackgroundProcess>,
    /// `docker`: a Docker daemon private to the task. Keyed; implies `privileged`.
    pub docker: Docker,
    /// Where each `use`/`after` reference is written, for "no such task" errors.
    pub(crate) ref_spans: Vec<RefSpan>,
    /// For a task of a called package or run definition: the call, whose arguments are its
    /// `params` (or `init`) namespace. `None`: a task of the file itself.
    pub scope: Option<std::sync::Arc<crate::calls::CallScope>>,
}

/// One of a task's `background-processes` (a database for its tests, a server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackgroundProcess {
    /// Unique within the task: the prefix of its output lines, and what `after` names.
    pub key: String,
    /// Where `key` is written.
    pub at: Location,
    pub run: Text,
    /// Without one the process is ready as soon as it has started.
    pub ready_check: Option<ReadyCheck>,
    /// Processes of the same task that must be ready before this one starts.
    pub after: Vec<String>,
    /// After SIGTERM, when the command has ended, before SIGKILL (RWX's default: 10 s).
    pub grace_period: Duration,
}

/// `ready-check`: run until it exits 0, for at most `timeout` (RWX's default: 60 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyCheck {
    pub run: Text,
    pub timeout: Duration,
}

/// `docker:`: whether the task gets a Docker daemon of its own, and whether what it stored
/// (images, volumes, build cache) is kept for the next execution of the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Docker {
    #[default]
    Disabled,
    Enabled,
    PreserveData,
}

#[derive(Debug, Clone)]
pub(crate) struct RefSpan {
    pub(crate) name: TaskName,
    pub(crate) at: Location,
    pub(crate) width: usize,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file this pipeline was read from.
    pub path: PathBuf,
    pub dialect: Dialect,
    /// `on:`: what starts a run and the init values it gives.
    pub triggers: crate::triggers::Triggers,
    pub base: Base,
    /// Where `base` is written, if it is.
    pub base_at: Option<Location>,
    /// RWX's `base.config` (the package that configures the image, words joined by one space)
    /// and where it is written; not for `none`. Applied only from the run's own file.
    pub base_config: Option<(String, Location)>,
    /// Shared caches to use after the local one, in order.
    pub caches: Vec<SharedCacheDecl>,
    /// Tasks in file order; validation guarantees unique names, known references, no cycles.
    pub tasks: Vec<Task>,
    /// Keys this version accepts but cannot run yet.
    pub unsupported: Vec<Unsupported>,
    /// Keys that have no effect in strata.
    pub notes: Vec<Note>,
    /// The file's text, to show notes in context.
    pub source_text: String,
    /// What a package file declares (`parameters`, `outputs`, ...): `None` for a run
    /// definition.
    pub package: Option<crate::calls::PackageDecl>,
    /// Each expanded `parallel:` task and the tasks it generated.
    pub parallel_groups: Vec<crate::parallel::ParallelGroup>,
    /// The top-level `tool-cache: {vault: NAME}`: the namespace of the file's tool caches
    /// (`None`: the default one).
    pub tool_cache_vault: Option<String>,
}

impl Task {
    /// Everything that must finish before this task starts: `use`, then `after`, then the
    /// tasks whose values it reads, then those its `after` expression names.
    pub fn dependencies(&self) -> impl Iterator<Item = &TaskName> {
        self.uses
            .iter()
            .chain(&self.after)
            .chain(&self.value_deps)
            .chain(&self.status_deps)
    }

    /// Every text of the task an expression may be in: `run`, env values, `call`, the
    /// parameters of a workspace clone, its outputs' paths.
    pub fn texts(&self) -> Vec<&Text> {
        let mut texts = vec![&self.run];
        texts.extend(self.outputs.artifacts.iter().map(|a| &a.path));
        texts.extend(self.outputs.test_results.iter().map(|t| &t.path));
        texts.extend(self.env.iter().map(|v| v.value.text()));
        texts.extend(self.cache.enabled_expr.iter());
        texts.extend(self.cache.ttl_expr.iter());
        texts.extend(self.filter.iter().flat_map(|f| f.templates()));
        texts.extend(&self.condition);
        texts.extend(self.retry.iter().flat_map(|r| &r.condition));
        texts.extend(&self.tool_cache);
        for process in &self.background {
            texts.push(&process.run);
            texts.extend(process.ready_check.iter().map(|c| &c.run));
        }
        if let Some(crate::parallel::Parallel::Pending(spec)) = &self.parallel {
            texts.extend(spec.texts());
        }
        match &self.kind {
            TaskKind::Source(s) => texts.extend(
                [
                    &s.path,
                    &s.reference,
                    &s.repository,
                    &s.preserve_git_dir,
                    &s.meta_ref,
                ]
                .into_iter()
                .flatten(),
            ),
            TaskKind::Call(spec) => {
                texts.push(&spec.target);
                texts.extend(spec.with.iter().chain(&spec.init).map(|a| &a.value));
            }
            TaskKind::Called(outputs) => {
                let call = &outputs.call;
                texts.extend(call.params.iter().chain(&call.init).map(|a| &a.value));
            }
            TaskKind::Command => {}
        }
        texts
    }

    /// Whether this task serves the workspace (a `git/clone` of the checkout).
    pub fn is_source(&self) -> bool {
        matches!(self.kind, TaskKind::Source(_))
    }
}

impl Pipeline {
    /// The file `task` is written in: this one, or the package or run definition it was
    /// called from.
    pub fn file_of(&self, task: &Task) -> PathBuf {
        match task.scope.as_deref().map(|s| &s.called) {
            None => self.path.clone(),
            Some(crate::calls::Called::Package(files)) => files.file(),
            Some(crate::calls::Called::Run { path, .. }) => path.clone(),
        }
    }

    /// The notes, ready to print like diagnostics (`None` when there are none).
    pub fn notes_report(&self) -> Option<crate::diagnostic::Diagnostics> {
        (!self.notes.is_empty()).then(|| {
            crate::diagnostic::Diagnostics::new(
                &self.path,
                &self.source_text,
                self.notes
                    .iter()
                    .map(|n| match n.warning {
                        true => crate::diagnostic::Diagnostic::warning(n.at, 1, n.message.clone()),
                        false => crate::diagnostic::Diagnostic::note(n.at, 1, n.message.clone()),
                    })
                    .collect(),
            )
        })
    }

    /// What `run` cannot do yet, as one message naming every key (`None`: it can run).
    pub fn unsupported_report(&self) -> Option<String> {
        self.report_unsupported(self.unsupported.iter().collect())
    }

    /// [`Pipeline::unsupported_report`] for a run of only `targets` (names of tasks or of
    /// `parallel:` groups; none: every task): what the tasks it needs use, and what belongs to
    /// no task of the file. A task that no target needs is never run, so what it uses does not
    /// keep the others from running.
    pub fn unsupported_report_for(&self, targets: &[TaskName]) -> Option<String> {
        if targets.is_empty() {
            return self.unsupported_report();
        }
        let targets = crate::parallel::replace_groups(targets, &self.parallel_groups);
        let wanted = self.closure(&targets);
        let needed = |u: &&Unsupported| match &u.task {
            Some(task) => match self.tasks.iter().position(|t| &t.name == task) {
                Some(i) => wanted[i],
                // Not a task of the file (inside a call, say): it cannot be told apart.
                None => true,
            },
            None => true,
        };
        self.report_unsupported(self.unsupported.iter().filter(needed).collect())
    }

    fn report_unsupported(&self, unsupported: Vec<&Unsupported>) -> Option<String> {
        if unsupported.is_empty() {
            return None;
        }
        let mut lines = vec![format!(
            "{} uses {} this version of strata accepts but cannot run yet:",
            self.path.display(),
            if unsupported.len() == 1 {
                "a feature"
            } else {
                "features"
            }
        )];
        for u in unsupported {
            let task = u
                .task
                .as_ref()
                .map(|t| format!(" (task `{t}`)"))
                .unwrap_or_default();
            lines.push(format!(
                "  {}:{}:{}: {}{task}",
                self.path.display(),
                u.at.line,
                u.at.column,
                u.key
            ));
        }
        Some(lines.join("\n"))
    }

    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name.as_str() == name)
    }

    /// Task indices in an order where every task comes after all it depends on (`use` and
    /// `after`), ties kept in file order.
    pub fn topological_order(&self) -> Vec<usize> {
        let index = |n: &TaskName| self.tasks.iter().position(|t| &t.name == n);
        let mut done = vec![false; self.tasks.len()];
        let mut order = Vec::with_capacity(self.tasks.len());
        while order.len() < self.tasks.len() {
            let before = order.len();
            for (i, task) in self.tasks.iter().enumerate() {
                if done[i] {
                    continue;
                }
                let ready = task
                    .dependencies()
                    .all(|d| index(d).is_none_or(|j| done[j]));
                if ready {
                    done[i] = true;
                    order.push(i);
                }
            }
            if order.len() == before {
                // Unreachable for a validated pipeline; stop rather than loop forever.
                break;
            }
        }
        order
    }

    /// The named tasks and everything they need (`use` and `after`), as a set of indices.
    pub fn closure(&self, targets: &[TaskName]) -> Vec<bool> {
        let mut wanted = vec![false; self.tasks.len()];
        let mut stack: Vec<&TaskName> = targets.iter().collect();
        while let Some(name) = stack.pop() {
            if let Some(i) = self.tasks.iter().position(|t| &t.name == name)
                && !wanted[i]
            {
                wanted[i] = true;
                stack.extend(self.tasks[i].dependencies());
            }
        }
        wanted
    }
}
