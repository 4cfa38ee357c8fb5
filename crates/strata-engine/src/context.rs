use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use strata_cache::SharedCaches;
use strata_key::{BaseId, Workspace};
use strata_pipeline::{Base, Pipeline, TaskName};
use strata_store::{LocalCache, RunDir, StoreError};

use crate::checkout::Checkout;
use crate::sources::{SourceMount, WorkspacePlan};
use crate::transfer::Transfers;
use crate::workspace_tree::WorkspaceTrees;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to capture the workspace")]
    Workspace(#[from] strata_key::WorkspaceError),
    #[error("failed to read base key path {path}")]
    KeyPath {
        path: PathBuf,
        #[source]
        source: strata_key::WorkspaceError,
    },
    #[error("failed to identify the base filesystem")]
    Base(#[source] strata_key::TreeError),
    #[error("base rootfs {0} is not a directory")]
    BaseMissing(PathBuf),
    #[error("no task named `{0}` in the pipeline")]
    UnknownTask(String),
    #[error("failed to prepare the base image")]
    Image(#[from] crate::ImageError),
    /// A problem with a task found before anything runs, at its place in the task's file (a
    /// `git/clone` of the workspace whose `ref` is not the checkout's, ...).
    #[error("{}:{}:{}: task `{task}`: {message}", file.display(), at.line, at.column)]
    Task {
        task: String,
        file: PathBuf,
        at: strata_pipeline::Location,
        message: String,
    },
    /// A value the run needs that was not given (an init value, a secret), or a trigger that
    /// cannot be evaluated.
    #[error("{0}")]
    Invocation(String),
}

/// A variable of the host's environment passed into every task (`--env`, the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedEnv {
    pub name: String,
    pub value: String,
    /// Whether its value enters the keys (else its name only).
    pub keyed: bool,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub jobs: usize,
    /// Run only these tasks and what they need (all tasks when empty).
    pub targets: Vec<TaskName>,
    pub no_cache: bool,
    pub fail_fast: bool,
    /// A task that is not a target (nor one of a target call's tasks) and is in no cache fails
    /// instead of running: for fan-out, where its own job builds it (`--require-cached-parents`).
    pub require_cached_parents: bool,
    /// The workspace directory (by default the pipeline file's directory).
    pub workspace: PathBuf,
    /// The `strata` binary, re-executed as the sandbox helper.
    pub exe: PathBuf,
    /// Host variables given to every task.
    pub pass_env: Vec<PassedEnv>,
    /// `--init` values and the secrets file.
    pub invocation: crate::invocation::InvocationOptions,
    /// The config file's `local.tool-cache-max-age` (`None`: 48 hours).
    pub tool_cache_max_age: Option<std::time::Duration>,
    /// `--artifacts DIR`: every task's artifacts are copied to `DIR/<task>/<key>/`.
    pub artifacts_dir: Option<PathBuf>,
    /// What is looked up and downloaded at the start of a run, ahead of the tasks
    /// (`--prefetch`).
    pub prefetch: crate::PrefetchPolicy,
    /// Whether layers restored from a shared cache are kept as erofs images
    /// (`--layer-images`, `layer_images.rs`).
    pub layer_images: crate::LayerImages,
}

/// What every task of one run shares: the pipeline, the cache, the captured workspace and the
/// base identity.
pub struct RunContext<'a> {
    pub pipeline: &'a Pipeline,
    pub cache: &'a LocalCache,
    /// Shared caches after the local one (possibly none).
    pub shared: &'a SharedCaches,
    pub options: RunOptions,
    pub workspace: Workspace,
    /// How the workspace's files were found: walked, or from `strata watch`'s answer.
    pub workspace_walk: strata_key::WalkHow,
    /// Where `strata watch` answered the capture: what a task's check of the checkout can ask
    /// it instead of looking at every file again (`checkout_view.rs`).
    pub(crate) workspace_watch: Option<crate::checkout_view::WatchedCapture>,
    pub base_id: BaseId,
    pub base_root: PathBuf,
    /// The layers of a base image, top first, between the task's stack and `base_root`.
    pub base_layers: Vec<PathBuf>,
    /// Environment a base image sets (its config's `Env`), under the task's own.
    pub base_env: Vec<(String, String)>,
    pub run_dir: RunDir,
    /// Which tasks see the workspace, and where.
    pub(crate) sources: WorkspacePlan,
    /// The git checkout the workspace is, if it is one.
    pub checkout: Option<Checkout>,
    /// What expressions read (`init`, `event`, `run`, `secrets`, ...), and the trigger.
    pub invocation: crate::invocation::Invocation,
    pub(crate) trees: WorkspaceTrees,
    /// The workspace parts of used tasks' layers, for filtered tasks.
    pub(crate) layer_parts: crate::layer_parts::LayerPartsCache,
    /// The tasks whose artifacts `--artifacts` copies once the run is over.
    pub(crate) artifacts: crate::task_outputs::ArtifactLedger,
    pub(crate) transfers: Transfers,
    /// The keys this run's tasks have, and which task has each (`execute.rs`): a task of this
    /// run waits for another of this run here, and for another strata process at the key's lock.
    pub(crate) held_keys: crate::execute::HeldKeys,
    /// Things to tell the user once the run starts (a base image used offline, ...).
    pub(crate) notices: Vec<String>,
    pub interrupted: Arc<AtomicBool>,
}

impl<'a> RunContext<'a> {
    /// Captures the workspace and identifies the base.
    pub fn new(
        pipeline: &'a Pipeline,
        cache: &'a LocalCache,
        remotes: &'a SharedCaches,
        options: RunOptions,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self, EngineError> {
        let mut options = options;
        // A parallel task's name targets every task it generated.
        options.targets =
            strata_pipeline::replace_parallel_groups(&options.targets, &pipeline.parallel_groups);
        for t in &options.targets {
            if pipeline.task(t.as_str()).is_none() {
                return Err(EngineError::UnknownTask(t.to_string()));
            }
        }
        let checkout = crate::invocation::needs_checkout(pipeline)
            .then(|| Checkout::inspect(&options.workspace))
            .flatten();
        let env = |k: &str| std::env::var(k).ok();
        let invocation =
            crate::invocation::invoke(pipeline, checkout.as_ref(), &options.invocation, &env)
                .map_err(EngineError::Invocation)?;
        let mut base_layers = Vec::new();
        let mut base_env = Vec::new();
        let mut notices = Vec::new();
        let (base_root, base_id) = match &pipeline.base {
            Base::Host(host) => (
                PathBuf::from("/"),
                host_identity(cache, host, &mut notices)?,
            ),
            Base::Rootfs(dir) if dir.is_dir() => {
                let id = strata_key::rootfs_identity(dir).map_err(EngineError::Base)?;
                record_inventory(cache, &id, dir, &[])?;
                (dir.clone(), id)
            }
            Base::Rootfs(dir) => return Err(EngineError::BaseMissing(dir.clone())),
            Base::Image(reference) => {
                let dir = pipeline.path.parent().unwrap_or(std::path::Path::new("."));
                // `image: ruby:${{ init.ruby-version }}`: known once the run's init values are.
                let reference = if reference.contains("${{") {
                    let text = strata_pipeline::Text::new(
                        reference.clone(),
                        pipeline.base_at.unwrap_or_default(),
                    );
                    crate::expressions::render(&text, &invocation.scope)
                        .map_err(|e| {
                            EngineError::Invocation(format!("`base.image` {reference}: {e}"))
                        })?
                        .text
                } else {
                    reference.clone()
                };
                let source = crate::ImageSource::parse(&reference, dir)?;
                let image = crate::pull_image(cache, &source)?;
                if image.offline {
                    notices.push(format!(
                        "the registry of base image {source} is unreachable; using the image it named when last pulled ({})",
                        image.manifest
                    ));
                }
                base_layers = image
                    .layers
                    .iter()
                    .rev()
                    .map(|l| cache.layers().path(l))
                    .collect();
                base_env = image
                    .config
                    .config
                    .env
                    .iter()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                // Everything comes from the image's layers: the bottom is an empty directory.
                let empty = cache.root().join("empty-base");
                std::fs::create_dir_all(&empty).map_err(|source| {
                    EngineError::Store(StoreError::Io {
                        path: empty.clone(),
                        source,
                    })
                })?;
                (
                    empty,
                    strata_key::image_identity(&image.manifest.to_string()),
                )
            }
        };
        if options.targets.is_empty() && !invocation.targets.is_empty() {
            let targets: Vec<TaskName> = invocation
                .targets
                .iter()
                .map(|t| TaskName::new(t.clone()))
                .collect();
            let targets =
                strata_pipeline::replace_parallel_groups(&targets, &pipeline.parallel_groups);
            for t in &targets {
                if pipeline.task(t.as_str()).is_none() {
                    return Err(EngineError::Invocation(format!(
                        "the trigger targets `{t}`, which is not a task"
                    )));
                }
            }
            options.targets = targets;
        }
        let wanted = if options.targets.is_empty() {
            vec![true; pipeline.tasks.len()]
        } else {
            pipeline.closure(&options.targets)
        };
        let missing = crate::invocation::missing_values(pipeline, &wanted, &invocation);
        if invocation.skip.is_none() {
            if !missing.vault.is_empty() {
                return Err(EngineError::Invocation(format!(
                    "secrets not given: {}",
                    missing.vault.join(", ")
                )));
            }
            if !missing.init.is_empty() {
                return Err(EngineError::Invocation(format!(
                    "init values not given: {} (give them with --init NAME=VALUE or `on.cli.init`)",
                    missing.init.join(", ")
                )));
            }
        }
        let sources = plan_sources(
            pipeline,
            &wanted,
            checkout.as_ref(),
            &invocation.scope,
            &mut notices,
        )?;
        let mut workspace_walk = strata_key::WalkHow::Walked;
        let mut workspace_watch = None;
        let workspace = if sources.needs_capture() {
            let known = strata_key::StatCache::from_vec(
                cache.content().load_stat_cache(&options.workspace),
            );
            let wants = |p: &str| sources.wants(p);
            let selection = strata_key::Selection {
                files: Some(&wants),
                git_dir: sources.needs_git_dir(),
                ..strata_key::Selection::default()
            };
            // `strata watch`, when it runs for this workspace, says what changed since the walk
            // kept last time; without it (or when it cannot say) the capture walks.
            let socket = cache.content().watch_socket(&options.workspace);
            let watched = socket
                .exists()
                .then(|| {
                    let previous = strata_key::WalkCache::from_vec(
                        cache.content().load_walk_cache(&options.workspace),
                    );
                    strata_watch::ask(&socket, previous.token()).map(|answer| (answer, previous))
                })
                .flatten();
            let captured = Workspace::capture_watched(
                &options.workspace,
                &[cache.root().to_path_buf()],
                &known,
                &selection,
                watched
                    .as_ref()
                    .map(|(answer, previous)| strata_key::Watch { answer, previous }),
            )?;
            // Only caches: failing to keep them costs the next run some reading, nothing else.
            if let Some(stats) = &captured.stat_cache {
                let _ = cache
                    .content()
                    .save_stat_cache(&options.workspace, &stats.to_bytes());
            }
            if let Some(walk) = &captured.walk_cache {
                let _ = cache
                    .content()
                    .save_walk_cache(&options.workspace, walk.as_bytes());
            }
            workspace_walk = captured.walk;
            // The capture is the workspace as it was at the answer's token or later, in the
            // directory the watcher watches: a change after it, the watcher names since then.
            workspace_watch = watched.and_then(|(answer, _)| {
                (strata_key::root_id(&options.workspace) == Some(answer.root)
                    && strata_key::mount_ns() == Some(answer.mount_ns))
                .then(|| crate::checkout_view::WatchedCapture {
                    socket: socket.clone(),
                    token: answer.now,
                    root: answer.root,
                    mount_ns: answer.mount_ns,
                    linked: captured.linked,
                    failed: Default::default(),
                })
            });
            captured.workspace
        } else {
            // No task sees the workspace: nothing is read.
            Workspace {
                root: options.workspace.clone(),
                files: Vec::new(),
                seen: Vec::new(),
            }
        };
        notices.extend(remotes.notices());
        let run_dir = cache.runs().begin()?;
        Ok(RunContext {
            pipeline,
            cache,
            shared: remotes,
            options,
            workspace,
            workspace_walk,
            workspace_watch,
            base_id,
            base_root,
            base_layers,
            base_env,
            trees: WorkspaceTrees::default(),
            layer_parts: Default::default(),
            transfers: Transfers::default(),
            held_keys: Default::default(),
            artifacts: Default::default(),
            notices,
            run_dir,
            sources,
            checkout,
            invocation,
            interrupted,
        })
    }

    /// The position of `task` in the pipeline.
    pub(crate) fn index_of(&self, task: &strata_pipeline::Task) -> Option<usize> {
        self.pipeline.tasks.iter().position(|t| t.name == task.name)
    }

    pub(crate) fn pipeline_id(&self) -> String {
        self.pipeline.path.display().to_string()
    }
}

/// The identity of `base: host`: its package databases and the content of its key paths (each
/// read through a stat cache, so an unchanged toolchain costs a walk, not a read). The first run
/// on a base records its inventory, so that `explain` can later name the packages that changed.
fn host_identity(
    cache: &LocalCache,
    host: &strata_pipeline::HostBase,
    notices: &mut Vec<String>,
) -> Result<BaseId, EngineError> {
    let mut key_paths = Vec::with_capacity(host.key_paths.len());
    for path in &host.key_paths {
        let known = strata_key::StatCache::from_bytes(&cache.content().load_stat_cache(path));
        let (key_path, stats) =
            strata_key::KeyPath::capture(path, &[cache.root().to_path_buf()], &known).map_err(
                |source| EngineError::KeyPath {
                    path: path.clone(),
                    source,
                },
            )?;
        if let Some(stats) = stats {
            // Only a cache: losing it costs the next run some reading.
            let _ = cache.content().save_stat_cache(path, &stats.to_bytes());
        }
        if key_path.digest.is_none() {
            notices.push(format!(
                "base key path {} does not exist (keyed as absent)",
                path.display()
            ));
        }
        key_paths.push(key_path);
    }
    let id = strata_key::host_identity(&key_paths).map_err(EngineError::Base)?;
    record_inventory(cache, &id, std::path::Path::new("/"), &key_paths)?;
    Ok(id)
}

/// The first run on a base records what it is made of (packages, OS, key paths), so that
/// `explain` can later name what changed.
fn record_inventory(
    cache: &LocalCache,
    id: &BaseId,
    root: &std::path::Path,
    key_paths: &[strata_key::KeyPath],
) -> Result<(), EngineError> {
    if !cache.index().has_base(id)? {
        cache
            .index()
            .record_base(id, &strata_key::HostInventory::read(root, key_paths))?;
    }
    Ok(())
}

/// Checks every wanted `git/clone` of the workspace against the checkout and works out where
/// each places it.
fn plan_sources(
    pipeline: &Pipeline,
    wanted: &[bool],
    checkout: Option<&Checkout>,
    scope: &strata_pipeline::expr::Scope,
    notices: &mut Vec<String>,
) -> Result<WorkspacePlan, EngineError> {
    let mut warned_no_git = false;
    let mount_of = |i: usize| -> Result<SourceMount, (strata_pipeline::Location, String)> {
        let task = &pipeline.tasks[i];
        let strata_pipeline::TaskKind::Source(source) = &task.kind else {
            unreachable!("only sources have mounts")
        };
        if wanted[i] {
            check_repository(source, checkout)?;
        }
        let source = &crate::expressions::resolve_source(source, scope)?;
        if wanted[i] {
            check_source(
                task.name.as_str(),
                source,
                checkout,
                notices,
                &mut warned_no_git,
            )?;
        }
        let path = source.path.as_ref();
        let git_dir = source
            .preserve_git_dir
            .as_ref()
            .is_some_and(|t| t.raw.trim() == "true");
        SourceMount::at(path.map_or("./", |t| t.raw.as_str()), git_dir)
            .map_err(|message| (path.map_or(task.at, |t| t.at), message))
    };
    WorkspacePlan::new(pipeline, wanted, mount_of).map_err(|(i, (at, message))| {
        let task = &pipeline.tasks[i];
        EngineError::Task {
            task: task.name.to_string(),
            file: pipeline.file_of(task),
            at,
            message,
        }
    })
}

/// A clone of another repository than the workspace's: strata serves only that one (a clone of
/// another is a call of the package, when a package source holds it: the file is then read so).
fn check_repository(
    source: &strata_pipeline::WorkspaceSource,
    checkout: Option<&Checkout>,
) -> Result<(), (strata_pipeline::Location, String)> {
    let (Some(checkout), Some(repo)) = (checkout, &source.repository) else {
        return Ok(());
    };
    let url = repo.raw.trim();
    if url.is_empty() || url.contains("${{") || checkout.has_remote(url) {
        return Ok(());
    }
    let package = source
        .call
        .as_ref()
        .and_then(|c| c.target.raw.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "git/clone".to_string());
    Err((
        repo.at,
        format!(
            "`repository: {url}` is not a remote of the workspace ({}); strata serves only the workspace's repository from the checkout; to clone another, give a package source holding `{package}` (--packages)",
            if checkout.remotes.is_empty() {
                "it has none".to_string()
            } else {
                checkout.remotes.join(", ")
            }
        ),
    ))
}

fn check_source(
    task: &str,
    source: &strata_pipeline::WorkspaceSource,
    checkout: Option<&Checkout>,
    notices: &mut Vec<String>,
    warned_no_git: &mut bool,
) -> Result<(), (strata_pipeline::Location, String)> {
    let Some(checkout) = checkout else {
        if !*warned_no_git {
            *warned_no_git = true;
            notices.push(format!(
                "the workspace is not a git checkout: `{task}` serves its files as they are, with no commit to check `ref` against"
            ));
        }
        return Ok(());
    };
    if let Some(reference) = &source.reference {
        let r = reference.raw.trim();
        let is_sha = r.len() >= 7 && r.len() <= 40 && r.bytes().all(|b| b.is_ascii_hexdigit());
        if r.is_empty() {
        } else if r.contains("${{") {
            notices.push(format!(
                "task `{task}`: `ref: {r}` is known only when the run is under way: the workspace is served as it is checked out"
            ));
        } else if is_sha {
            if !checkout.sha.starts_with(&r.to_ascii_lowercase()) {
                return Err((
                    reference.at,
                    format!(
                        "`ref: {r}` is not the commit checked out in the workspace ({}); strata serves the clone from the checkout, so check out {r} first",
                        checkout.sha
                    ),
                ));
            }
        } else {
            let name = r
                .strip_prefix("refs/heads/")
                .or_else(|| r.strip_prefix("refs/tags/"))
                .unwrap_or(r);
            let matches =
                checkout.branch.as_deref() == Some(name) || checkout.tag.as_deref() == Some(name);
            if !matches {
                notices.push(format!(
                    "task `{task}`: `ref: {r}` is not what the workspace has checked out ({}); using the checkout as it is",
                    checkout
                        .branch
                        .as_deref()
                        .map_or_else(|| checkout.sha.clone(), |b| format!("branch {b} at {}", &checkout.sha[..12.min(checkout.sha.len())]))
                ));
            }
        }
    }
    Ok(())
}
