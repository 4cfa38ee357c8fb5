//! One function per subcommand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use strata_cache::SharedCaches;
use strata_engine::{Explanation, PlanStatus, RunContext, RunOptions};
use strata_pipeline::{Pipeline, TaskName};
use strata_store::LocalCache;

use crate::output_policy::OutputPolicy;
use crate::record::{Recorder, RunView, Tee};
use crate::reporter::{JsonReporter, TerminalReporter, WarningsOnly};
use crate::{PackageArgs, PipelineArgs};

pub(crate) const EXIT_TASK_FAILED: u8 = 1;
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
pub(crate) const EXIT_INTERNAL: u8 = 3;
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// An error already rendered for the terminal, with the exit code it maps to.
pub(crate) struct CliError {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl CliError {
    pub(crate) fn bad_input(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_BAD_INPUT,
        }
    }
    pub(crate) fn internal(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = format!("error: {e}");
        let mut src = e.source();
        while let Some(cause) = src {
            message.push_str(&format!("\n  caused by: {cause}"));
            src = cause.source();
        }
        let code = match e.downcast_ref::<strata_engine::EngineError>() {
            Some(
                strata_engine::EngineError::UnknownTask(_)
                | strata_engine::EngineError::BaseMissing(_)
                | strata_engine::EngineError::Task { .. }
                | strata_engine::EngineError::Invocation(_),
            ) => EXIT_BAD_INPUT,
            _ => EXIT_INTERNAL,
        };
        CliError { message, code }
    }
}

pub(crate) type CliResult = Result<u8, CliError>;

/// The pipeline file named positionally or with `-f` (not both); `None` for the default one.
pub(crate) fn pipeline_file(
    positional: Option<PathBuf>,
    flag: crate::FileFlag,
) -> Result<Option<PathBuf>, CliError> {
    match (positional, flag.file) {
        (Some(a), Some(b)) => Err(CliError::bad_input(format!(
            "error: two pipeline files given ({} and -f {}); give one",
            a.display(),
            b.display()
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// `[FILE] TASK`: with one name it is the task, whatever files exist (no guessing); with two,
/// the first is the pipeline file.
pub(crate) fn file_and_task(
    names: crate::FileAndTask,
) -> Result<(Option<PathBuf>, String), CliError> {
    let crate::FileAndTask { mut names, flag } = names;
    let task = names.pop().expect("clap requires a task");
    let positional = names.pop().map(PathBuf::from);
    Ok((pipeline_file(positional, flag)?, task))
}

/// The pipeline file: the one given, else `strata.yml` or `strata.yaml` in the current
/// directory. Every command that reads a pipeline finds it here.
fn find_pipeline(file: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(f) = file {
        return Ok(f);
    }
    ["strata.yml", "strata.yaml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CliError::bad_input(
                "error: no pipeline file given and no strata.yml in the current directory",
            )
        })
}

fn load(
    file: Option<PathBuf>,
    packages: &PackageArgs,
    cache_dir: Option<&Path>,
    workspace: Option<&Path>,
) -> Result<Pipeline, CliError> {
    let path = find_pipeline(file)?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    let opts = load_options(packages, cache_dir, workspace.unwrap_or(dir))?;
    let pipeline = strata_pipeline::load_with(&path, &opts)
        .map_err(|d| CliError::bad_input(d.to_string().trim_end().to_string()))?;
    check_references(&pipeline)?;
    Ok(pipeline)
}

/// The base image reference and the shared caches a file names, read by the same parsers a run
/// uses (offline: nothing is contacted), so that `check` refuses what `run` would.
fn check_references(pipeline: &Pipeline) -> Result<(), CliError> {
    use strata_pipeline::{Diagnostic, Diagnostics, Location};
    let mut errors = Vec::new();
    if let strata_pipeline::Base::Image(reference) = &pipeline.base
        && !reference.contains("${{")
    {
        let dir = pipeline.path.parent().unwrap_or(std::path::Path::new("."));
        if let Err(e) = strata_engine::ImageSource::parse(reference, dir) {
            let at = pipeline.base_at.unwrap_or(Location { line: 1, column: 1 });
            errors.push(
                Diagnostic::new(at, 1, format!("`base.image`: {e}"))
                    .with_help("write `registry/repository[:tag][@sha256:...]` or `oci:DIR[:TAG]`"),
            );
        }
    }
    for decl in &pipeline.caches {
        let parsed = strata_cache::parse_spec(&decl.spec)
            .and_then(|spec| strata_cache::open_backend(&spec).map(drop));
        if let Err(e) = parsed {
            errors.push(Diagnostic::new(
                decl.at,
                decl.spec.len().max(1),
                format!("shared cache: {e}"),
            ));
        }
        for key in &decl.trusted_keys {
            if let Err(e) = strata_cache::PublicKey::parse(&key.text) {
                errors.push(Diagnostic::new(
                    key.at,
                    key.text.len().max(1),
                    format!("trusted key: {e}"),
                ));
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let d = Diagnostics::new(&pipeline.path, &pipeline.source_text, errors);
    Err(CliError::bad_input(d.to_string().trim_end().to_string()))
}

/// Package sources (`--packages`, then `$STRATA_PACKAGES`, then the config file's
/// `packages:`; git repositories cloned into the cache directory) and the config file's
/// `base-images`.
fn load_options(
    args: &PackageArgs,
    cache_dir: Option<&Path>,
    workspace: &Path,
) -> Result<strata_pipeline::LoadOptions, CliError> {
    let mut specs: Vec<String> = args.packages.clone();
    if let Ok(list) = std::env::var("STRATA_PACKAGES") {
        specs.extend(
            list.split(|c: char| c == ':' && !list.contains("://") || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    let mut base_images = Vec::new();
    if let Some(path) = config_file() {
        let config = strata_pipeline::load_config(&path)
            .map_err(|d| CliError::bad_input(d.to_string().trim_end().to_string()))?;
        specs.extend(config.packages);
        base_images = config.base_images;
    }
    let mut dirs = Vec::new();
    let mut notices = Vec::new();
    for spec in specs {
        let dir = if strata_pipeline::is_git_url(&spec) {
            let cache = cache_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(strata_store::default_cache_dir);
            strata_engine::git_package_source(&spec, &cache, &mut notices)
                .map_err(|e| CliError::bad_input(format!("error: {e}")))?
        } else {
            let dir = PathBuf::from(&spec);
            if !dir.is_dir() {
                return Err(CliError::bad_input(format!(
                    "error: package source {spec} is not a directory"
                )));
            }
            dir
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for n in notices {
        eprintln!("warning: {n}");
    }
    let packages = strata_pipeline::PackageSources::new(dirs);
    // Only when a clone of another repository could be a call of `git/clone` does it matter
    // which repository the workspace is.
    let workspace_remotes = if packages.holds("git/clone") || packages.holds("mint/git-clone") {
        strata_engine::Checkout::inspect(workspace).map(|c| c.remotes)
    } else {
        None
    };
    Ok(strata_pipeline::LoadOptions {
        packages,
        base_images,
        workspace_remotes,
    })
}

fn require_root() -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CliError {
            message: "error: strata's sandbox needs root (rootless mode is not supported yet)"
                .into(),
            code: EXIT_INTERNAL,
        });
    }
    Ok(())
}

struct Session {
    pipeline: Pipeline,
    cache: LocalCache,
    shared: SharedCaches,
}

/// Loads the pipeline, checks that the `tasks` named on the command line exist, and only then
/// opens the cache: a mistake touches nothing.
fn open(
    file: Option<PathBuf>,
    args: &PipelineArgs,
    tasks: &[String],
    groups: bool,
) -> Result<Session, CliError> {
    let dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(strata_store::default_cache_dir);
    let pipeline = load(file, &args.packages, Some(&dir), args.workspace.as_deref())?;
    for task in tasks {
        // As a target, a `parallel:` task's name stands for the tasks it generated.
        let is_group = groups
            && pipeline
                .parallel_groups
                .iter()
                .any(|g| g.name.as_str() == task);
        if pipeline.task(task).is_none() && !is_group {
            return Err(CliError::bad_input(format!(
                "error: no task named `{task}` in {}",
                pipeline.path.display()
            )));
        }
    }
    let remotes = remote_caches(&pipeline, args)?;
    let cache = LocalCache::open(&dir).map_err(|e| {
        let mut err = CliError::internal(&e);
        let corrupt = err.message.contains("malformed") || err.message.contains("not a database");
        if corrupt {
            // The index only names what is on disk: without it the cache starts afresh, and
            // `strata cache prune` reclaims the layers nothing names any more.
            err.message.push_str(&format!(
                "\nhelp: the cache index is damaged; move {} aside (or remove it) and run again",
                dir.join("index.sqlite").display()
            ));
        }
        err
    })?;
    Ok(Session {
        pipeline,
        cache,
        shared: remotes,
    })
}

/// The config file: `$STRATA_CONFIG`, else the first of `$XDG_CONFIG_HOME/strata/config.yaml`
/// (`~/.config/...`) and `/etc/strata/config.yaml` that exists.
/// The config file's `local.tool-cache-max-age` (a config file with an error is reported
/// where its shared caches are read).
pub(crate) fn tool_cache_max_age() -> Option<std::time::Duration> {
    let path = config_file()?;
    strata_pipeline::load_config(&path)
        .ok()?
        .local
        .tool_cache_max_age
}

pub(crate) fn config_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("strata/config.yaml"));
    user.into_iter()
        .chain([PathBuf::from("/etc/strata/config.yaml")])
        .find(|p| p.is_file())
}

/// The shared caches after the local one. The first of these that says anything decides:
/// `--no-remote`; `--remote URL`...; `$STRATA_CACHE` (`none` for no remote); otherwise the
/// pipeline's `cache:` list followed by the config file's.
///
/// However a cache was chosen, it trusts the keys of `$STRATA_TRUSTED_KEYS` and the
/// `trusted-keys` that the pipeline's and the config file's lists give the same URL; a cache
/// that trusts no key uses entries signed or not. What is published is signed with the keys of
/// `$STRATA_SIGNING_KEY`.
fn remote_caches(pipeline: &Pipeline, args: &PipelineArgs) -> Result<SharedCaches, CliError> {
    if args.no_remote {
        return Ok(SharedCaches::new(Vec::new()));
    }
    // Every declaration, with the file it is in (`None`: the pipeline, checked when loaded).
    let mut decls: Vec<_> = pipeline.caches.iter().map(|d| (d.clone(), None)).collect();
    if let Some(path) = config_file() {
        let config = strata_pipeline::load_config(&path)
            .map_err(|d| CliError::bad_input(d.to_string().trim_end().to_string()))?;
        decls.extend(config.caches.into_iter().map(|d| (d, Some(path.clone()))));
    }
    let located =
        |e: &dyn std::fmt::Display, config: &Option<PathBuf>, at: strata_pipeline::Location| {
            match config {
                Some(path) => CliError::bad_input(format!(
                    "error: {e}\n --> {}:{}:{}",
                    path.display(),
                    at.line,
                    at.column
                )),
                None => CliError::bad_input(format!("error: {e}")),
            }
        };
    let mut declared: Vec<(strata_cache::SharedCacheSpec, Vec<strata_cache::PublicKey>)> =
        Vec::new();
    for (d, config) in &decls {
        let spec = strata_cache::parse_spec(&d.spec).map_err(|e| located(&e, config, d.at))?;
        let keys = d
            .trusted_keys
            .iter()
            .map(|k| {
                strata_cache::PublicKey::parse(&k.text)
                    .map_err(|e| located(&format!("trusted key: {e}"), config, k.at))
            })
            .collect::<Result<Vec<_>, _>>()?;
        declared.push((spec, keys));
    }
    let specs = if !args.remotes.is_empty() {
        args.remotes
            .iter()
            .map(|r| strata_cache::parse_spec(r))
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::bad_input(format!("error: --shared-cache: {e}")))?
    } else if let Ok(list) = std::env::var("STRATA_CACHE") {
        if matches!(list.trim(), "" | "none" | "off") {
            Vec::new()
        } else {
            strata_cache::parse_specs(&list)
                .map_err(|e| CliError::bad_input(format!("error: $STRATA_CACHE: {e}")))?
        }
    } else {
        let mut specs: Vec<strata_cache::SharedCacheSpec> = Vec::new();
        for (spec, _) in &declared {
            if !specs.iter().any(|s| s.url == spec.url) {
                specs.push(spec.clone());
            }
        }
        specs
    };
    if specs.is_empty() {
        return Ok(SharedCaches::new(Vec::new()));
    }
    let for_all = crate::signing::trusted_keys_for_all()?;
    let mut remotes = Vec::new();
    for spec in &specs {
        let backend = strata_cache::open_backend(spec)
            .map_err(|e| CliError::bad_input(format!("error: {e}")))?;
        let mut trusted = for_all.clone();
        for (_, keys) in declared.iter().filter(|(d, _)| d.url == spec.url) {
            for key in keys {
                if !trusted.contains(key) {
                    trusted.push(key.clone());
                }
            }
        }
        remotes.push((backend, trusted));
    }
    Ok(SharedCaches::with_trusted_keys(remotes).signing_with(crate::signing::signing_keys()?))
}

/// The workspace: `--workspace`, else for an RWX file (under `.rwx/` or `.mint/`) the git
/// checkout holding it (or the directory holding `.rwx/`), else the pipeline file's directory.
fn workspace_dir(pipeline: &Pipeline, args: &PipelineArgs) -> PathBuf {
    if let Some(w) = &args.workspace {
        return w.clone();
    }
    let dir = pipeline.path.parent().unwrap_or(Path::new("."));
    if pipeline.dialect == strata_pipeline::Dialect::Rwx {
        if let Some(top) = strata_engine::git_toplevel(dir) {
            return top;
        }
        let mut d = dir;
        while let Some(parent) = d.parent() {
            if matches!(
                d.file_name().and_then(|n| n.to_str()),
                Some(".rwx" | ".mint")
            ) {
                return parent.to_path_buf();
            }
            d = parent;
        }
    }
    dir.to_path_buf()
}

/// Host variables for every task: the config file's `env`, then `--env` and `--env-excluded`.
fn passed_env(args: &PipelineArgs) -> Result<Vec<strata_engine::PassedEnv>, CliError> {
    let mut wanted: Vec<strata_pipeline::ConfigEnv> = Vec::new();
    if let Some(path) = config_file() {
        let config = strata_pipeline::load_config(&path)
            .map_err(|d| CliError::bad_input(d.to_string().trim_end().to_string()))?;
        wanted.extend(config.env);
    }
    wanted.extend(args.env.iter().map(|e| strata_pipeline::plain_env(e)));
    wanted.extend(
        args.env_excluded
            .iter()
            .map(|e| strata_pipeline::ConfigEnv {
                excluded: true,
                ..strata_pipeline::plain_env(e)
            }),
    );
    let mut out: Vec<strata_engine::PassedEnv> = Vec::new();
    for e in wanted {
        let valid = e
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && e.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(CliError::bad_input(format!(
                "error: --env {}: not a variable name",
                e.name
            )));
        }
        let value = match e.value {
            Some(v) => v,
            None => std::env::var(&e.name).map_err(|_| {
                CliError::bad_input(format!(
                    "error: --env {0}: `{0}` is not set in strata's environment (give a value with --env {0}=VALUE)",
                    e.name
                ))
            })?,
        };
        out.retain(|p| p.name != e.name);
        out.push(strata_engine::PassedEnv {
            name: e.name,
            value,
            keyed: !e.excluded,
        });
    }
    Ok(out)
}

fn options(
    pipeline: &Pipeline,
    args: &PipelineArgs,
    targets: Vec<String>,
) -> Result<RunOptions, CliError> {
    let workspace = workspace_dir(pipeline, args);
    let workspace = std::fs::canonicalize(&workspace).map_err(|e| {
        CliError::bad_input(format!("error: workspace {}: {e}", workspace.display()))
    })?;
    Ok(RunOptions {
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        targets: targets.into_iter().map(TaskName::new).collect(),
        no_cache: false,
        fail_fast: false,
        require_cached_parents: false,
        prefetch: strata_engine::PrefetchPolicy::default(),
        layer_images: strata_engine::LayerImages::default(),
        workspace,
        exe: std::env::current_exe().map_err(|e| CliError::internal(&e))?,
        artifacts_dir: None,
        pass_env: passed_env(args)?,
        invocation: strata_engine::InvocationOptions {
            init: args
                .init
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| {
                            CliError::bad_input(format!("error: --init {kv}: expected NAME=VALUE"))
                        })
                })
                .collect::<Result<_, _>>()?,
            secrets_file: args.secrets.clone(),
            keys_only: false,
        },
        tool_cache_max_age: tool_cache_max_age(),
    })
}

/// Notes about the file (keys with no effect in strata), on stderr.
fn print_notes(pipeline: &Pipeline) {
    if let Some(notes) = pipeline.notes_report() {
        eprintln!("{}", notes.to_string().trim_end());
    }
}

/// What `strata run` was asked besides the pipeline.
pub(crate) struct RunArgs {
    pub(crate) targets: Vec<String>,
    pub(crate) no_cache: bool,
    pub(crate) fail_fast: bool,
    pub(crate) jobs: Option<usize>,
    pub(crate) json: bool,
    pub(crate) output: crate::RunOutputArgs,
    /// Fail instead of building a non-target task that is in no cache.
    pub(crate) require_cached_parents: bool,
    /// `--artifacts DIR`.
    pub(crate) artifacts: Option<PathBuf>,
    pub(crate) prefetch: Prefetch,
    pub(crate) layer_images: OnOff,
}

/// A switch given on the command line (`--layer-images on`); `auto` does what is possible here
/// and says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OnOff {
    Auto,
    On,
    Off,
}

/// `strata run --prefetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Prefetch {
    All,
    Needed,
    Off,
}

impl From<Prefetch> for strata_engine::PrefetchPolicy {
    fn from(p: Prefetch) -> Self {
        match p {
            Prefetch::All => strata_engine::PrefetchPolicy::All,
            Prefetch::Needed => strata_engine::PrefetchPolicy::Needed,
            Prefetch::Off => strata_engine::PrefetchPolicy::Off,
        }
    }
}

pub(crate) fn run(file: Option<PathBuf>, args: &PipelineArgs, run: RunArgs) -> CliResult {
    let RunArgs {
        targets,
        no_cache,
        fail_fast,
        jobs,
        json,
        output,
        require_cached_parents,
        artifacts,
        prefetch,
        layer_images,
    } = run;
    let session = open(file, args, &targets, true)?;
    let wanted: Vec<TaskName> = targets.iter().cloned().map(TaskName::new).collect();
    if let Some(message) = session.pipeline.unsupported_report_for(&wanted) {
        return Err(CliError::bad_input(format!(
            "error: {message}\n(`strata check` accepts them; nothing was run)"
        )));
    }
    if !json {
        print_notes(&session.pipeline);
    }
    require_root()?;
    let mut opts = options(&session.pipeline, args, targets)?;
    opts.no_cache = no_cache;
    opts.fail_fast = fail_fast;
    opts.require_cached_parents = require_cached_parents;
    opts.prefetch = prefetch.into();
    opts.layer_images = match layer_images {
        OnOff::Auto => strata_engine::LayerImages::Auto,
        OnOff::On => strata_engine::LayerImages::On,
        OnOff::Off => strata_engine::LayerImages::Off,
    };
    opts.artifacts_dir = artifacts;
    if let Some(j) = jobs {
        opts.jobs = j.max(1);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled exits at once.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, interrupted.clone());
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    let ctx = RunContext::new(
        &session.pipeline,
        &session.cache,
        &session.shared,
        opts,
        interrupted,
    )
    .map_err(|e| CliError::internal(&e))?;
    if let Some(why) = &ctx.invocation.skip {
        // The trigger says this event runs nothing: that is a success.
        eprintln!("nothing to run: {why}");
        return Ok(0);
    }
    // Every run is recorded, for `strata report` and `strata logs` later.
    let recorder = match Recorder::start(
        &session.cache,
        &session.pipeline,
        &ctx.invocation.secret_values,
    ) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("warning: this run will not be recorded: {e}");
            None
        }
    };
    let summary = if json {
        let reporter = JsonReporter::new();
        let _flusher = reporter.start_flusher();
        let mut tee: Vec<&dyn strata_engine::Reporter> = vec![&*reporter];
        tee.extend(recorder.as_ref().map(|r| r as &dyn strata_engine::Reporter));
        strata_engine::run(&ctx, &Tee(tee))
    } else {
        let reporter = TerminalReporter::new(&session.pipeline);
        let _ticker = reporter.start_ticker();
        let policy = OutputPolicy::new(
            Arc::clone(&reporter),
            output.success_output,
            output.failure_output,
        );
        let mut tee: Vec<&dyn strata_engine::Reporter> = match &policy {
            Some(p) => vec![p],
            None => vec![&*reporter],
        };
        tee.extend(recorder.as_ref().map(|r| r as &dyn strata_engine::Reporter));
        strata_engine::run(&ctx, &Tee(tee))
    };
    let failed: Vec<String> = summary
        .tasks
        .iter()
        .filter(|(_, t)| t.status == strata_engine::TaskStatus::Failed)
        .map(|(n, _)| n.clone())
        .collect();
    let record = recorder.and_then(|r| r.finish(&session.cache, &session.pipeline.path, &failed));
    let github = !output.no_github_summary
        && (output.github_summary || std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"));
    if output.report.is_some() || github {
        match record.as_deref().map(RunView::read) {
            Some(Ok(view)) => {
                if let Some(path) = &output.report {
                    let inputs = crate::report::gather(&session.cache, &view);
                    match crate::report::write(path, &crate::report::render(&view, &inputs)) {
                        Ok(()) if !json => eprintln!("report: {}", path.display()),
                        Ok(()) => {}
                        Err(e) => eprintln!("warning: {e}"),
                    }
                }
                if github && let Err(e) = crate::github::publish(&view, json) {
                    eprintln!("warning: GitHub summary: {e}");
                }
            }
            Some(Err(e)) => eprintln!("warning: the run's record could not be read: {e}"),
            None => eprintln!("warning: no report: the run could not be recorded"),
        }
    }
    // While this run's lease is held: what it used is kept.
    if summary.ran > 0 || summary.restored > 0 {
        keep_budget(&session.cache, &summary, json);
    }
    drop(ctx);
    settle_in_background(&session.cache);
    Ok(if summary.interrupted {
        EXIT_INTERRUPTED
    } else if summary.internal_failures > 0 {
        // strata could not do its own part for some task: not the pipeline's failure.
        EXIT_INTERNAL
    } else if summary.success() {
        0
    } else {
        EXIT_TASK_FAILED
    })
}

/// Enforces the config file's `local.max-size` after a run that stored something (a run that
/// only restored local entries cannot have grown the cache). The run's own layers are in its
/// lease, so they stay. A failure is a warning: the run's result stands.
fn keep_budget(cache: &LocalCache, summary: &strata_engine::Summary, json: bool) {
    let stored = summary.ran > 0 || summary.restored_bytes > 0 || cache.has_unsynced();
    if !stored {
        return;
    }
    // Expired tool caches stop naming their layers (a few small files: cheap after every run
    // that stored something); the layers go with the next prune.
    let _ = cache
        .tool_caches()
        .evict(tool_cache_max_age().unwrap_or(strata_store::DEFAULT_TOOL_CACHE_MAX_AGE));
    let Some(path) = config_file() else {
        return;
    };
    let Some(max) = strata_pipeline::load_config(&path)
        .ok()
        .and_then(|c| c.local.max_size)
    else {
        return;
    };
    let options = strata_store::PruneOptions {
        max_bytes: Some(max),
        tool_cache_max_age: tool_cache_max_age()
            .unwrap_or(strata_store::DEFAULT_TOOL_CACHE_MAX_AGE),
        ..Default::default()
    };
    match cache.prune(&options) {
        Ok(report) if !json && (!report.entries.is_empty() || report.tool_caches > 0) => {
            eprintln!(
                "cache budget {} ({}): {}",
                crate::reporter::bytes(max),
                path.display(),
                crate::cache::prune_lines(&report, &options).join("; ")
            );
        }
        Ok(_) => {}
        Err(e) => {
            if !json {
                eprintln!(
                    "warning: could not keep the cache within local.max-size: {}",
                    CliError::internal(&e).message
                );
            }
        }
    }
}

/// Layers and logs this run published are usable at once but not yet on disk: a detached
/// process flushes them, so that neither this run nor the next waits for the disk (see
/// `strata-store`'s `durability.rs` for what a crash before that costs).
fn settle_in_background(cache: &LocalCache) {
    use std::os::unix::process::CommandExt;
    if !cache.has_unsynced() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let _ = std::process::Command::new(exe)
        .arg("settle-cache")
        .arg(cache.root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
}

pub(crate) fn settle_cache(dir: &Path) -> CliResult {
    LocalCache::settle_at(dir).map_err(|e| CliError::internal(&e))?;
    Ok(0)
}

pub(crate) fn check(file: Option<PathBuf>, packages: &PackageArgs) -> CliResult {
    let cache_dir = std::env::var_os("STRATA_CACHE_DIR").map(PathBuf::from);
    let pipeline = load(file, packages, cache_dir.as_deref(), None)?;
    print_notes(&pipeline);
    if let Some(message) = pipeline.unsupported_report() {
        eprintln!("note: {message}\n(`strata run` refuses the file until they are supported)");
    }
    println!(
        "{}: ok ({} tasks)",
        pipeline.path.display(),
        pipeline.tasks.len()
    );
    Ok(0)
}

/// The run context of `plan`, `explain` and `shell`; with `keys_only` (plan, explain), secrets
/// need not be given (see `InvocationOptions::keys_only`).
fn context<'a>(
    session: &'a Session,
    args: &PipelineArgs,
    targets: Vec<String>,
    keys_only: bool,
) -> Result<RunContext<'a>, CliError> {
    let mut opts = options(&session.pipeline, args, targets)?;
    opts.invocation.keys_only = keys_only;
    RunContext::new(
        &session.pipeline,
        &session.cache,
        &session.shared,
        opts,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| CliError::internal(&e))
}

/// `strata watch`: watches the workspace until interrupted, answering runs on the cache's
/// socket for it.
pub(crate) fn watch(file: Option<PathBuf>, args: &PipelineArgs) -> CliResult {
    let session = open(file, args, &[], false)?;
    let workspace = options(&session.pipeline, args, Vec::new())?.workspace;
    let socket = session.cache.content().watch_socket(&workspace);
    let exclude = [session.cache.root().to_path_buf()];
    let failed = |e: strata_watch::WatchError| CliError {
        message: format!("error: {e}"),
        code: EXIT_INTERNAL,
    };
    let mut watcher =
        strata_watch::Watcher::start(&workspace, &exclude, &socket).map_err(failed)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    eprintln!(
        "watching {} ({} directories); runs with this cache now skip the walk over unchanged files. Ctrl-C stops.",
        workspace.display(),
        watcher.directories()
    );
    watcher.serve(&stop).map_err(failed)?;
    Ok(0)
}

pub(crate) fn plan(
    file: Option<PathBuf>,
    args: &PipelineArgs,
    targets: Vec<String>,
    json: bool,
    format: Option<&str>,
) -> CliResult {
    let json = match format {
        None | Some("text") => json,
        Some("json") => true,
        Some("github-actions") => {
            if !targets.is_empty() {
                return Err(CliError::bad_input(
                    "error: --format github-actions writes a job for every task; leave out --target"
                        .to_string(),
                ));
            }
            let dir = args
                .cache_dir
                .clone()
                .unwrap_or_else(strata_store::default_cache_dir);
            let given = file.clone();
            let pipeline = load(file, &args.packages, Some(&dir), args.workspace.as_deref())?;
            // The file as the workflow's jobs name it: relative to the repository (the
            // checkout's top), as given otherwise.
            let shown =
                strata_engine::git_toplevel(pipeline.path.parent().unwrap_or(Path::new(".")))
                    .and_then(|top| pipeline.path.strip_prefix(top).ok().map(Path::to_path_buf))
                    .or(given)
                    .unwrap_or_else(|| pipeline.path.clone());
            print!(
                "{}",
                crate::fanout::github_actions(&pipeline, &shown.display().to_string())
            );
            return Ok(0);
        }
        Some(other) => {
            return Err(CliError::bad_input(format!(
                "error: unknown plan format `{other}` (text, json or github-actions)"
            )));
        }
    };
    let session = open(file, args, &targets, true)?;
    // The file's notes (keys with no effect, an embedded run's base not used), as `run` and
    // `check` say them; `--json` keeps stderr for warnings only, as `run --json` does.
    if !json {
        print_notes(&session.pipeline);
    }
    let ctx = context(&session, args, targets, true)?;
    if let (false, strata_key::WalkHow::Watched { changed }) = (json, ctx.workspace_walk) {
        eprintln!("note: workspace files from `strata watch` ({changed} changed paths looked at)");
    }
    let planned = strata_engine::plan(&ctx, &WarningsOnly);
    if json {
        let jobs = crate::fanout::jobs(&session.pipeline);
        let job_of = |task: &str| jobs.iter().find(|j| j.tasks.iter().any(|t| t == task));
        let rows: Vec<serde_json::Value> = planned
            .iter()
            .map(|p| {
                let (status, parent) = match &p.status {
                    PlanStatus::Hit => ("hit", None),
                    PlanStatus::SharedHit { from } => ("shared-hit", Some(from.clone())),
                    PlanStatus::Miss => ("miss", None),
                    PlanStatus::Uncached => ("uncached", None),
                    PlanStatus::Unknown { parent } => ("after-parent", Some(parent.clone())),
                    PlanStatus::AfterRestore { parent } => ("after-restore", Some(parent.clone())),
                    PlanStatus::Workspace => ("workspace", None),
                    PlanStatus::Call => ("call", None),
                    PlanStatus::SkippedByCondition { because } => {
                        ("skipped-by-condition", Some(because.clone()))
                    }
                    PlanStatus::PendingExpansion => ("pending-expansion", None),
                };
                serde_json::json!({
                    "task": p.task,
                    "key": p.key.map(|k| k.to_hex()),
                    "status": status,
                    "waits_for": if matches!(p.status, PlanStatus::Unknown { .. } | PlanStatus::AfterRestore { .. }) { parent.clone() } else { None },
                    "because": if matches!(p.status, PlanStatus::SkippedByCondition { .. }) { parent.clone() } else { None },
                    "from": if matches!(p.status, PlanStatus::SharedHit { .. }) { parent } else { None },
                    "uses": session.pipeline.task(&p.task).map(|t| t.uses.iter().map(|u| u.to_string()).collect::<Vec<_>>()),
                    "needs": session.pipeline.task(&p.task).map(|t| t.dependencies().map(|u| u.to_string()).collect::<std::collections::BTreeSet<_>>()),
                    "job": job_of(&p.task).map(|j| serde_json::json!({"id": j.id, "needs": j.needs})),
                    "workspace_files": p.workspace_files,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        return Ok(0);
    }
    let width = planned
        .iter()
        .map(|p| p.task.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:width$}  {:12}  {:>8}  STATUS", "TASK", "KEY", "FILES");
    for p in &planned {
        let key = p.key.map_or("-".to_string(), |k| k.short());
        let status = match &p.status {
            PlanStatus::Hit => "hit: would be restored".to_string(),
            PlanStatus::SharedHit { from } => format!("hit: would be restored from {from}"),
            PlanStatus::Miss => "miss: would run".to_string(),
            PlanStatus::Uncached => "would run (cache disabled)".to_string(),
            PlanStatus::Unknown { parent } => format!("key known after `{parent}` runs"),
            PlanStatus::AfterRestore { parent } => {
                format!(
                    "key known once `{parent}`'s layer is downloaded (it wrote into the workspace)"
                )
            }
            PlanStatus::Workspace => "served from the workspace checkout".to_string(),
            PlanStatus::Call => "a call: stands for its tasks".to_string(),
            PlanStatus::SkippedByCondition { because } => format!("would be skipped: {because}"),
            PlanStatus::PendingExpansion => {
                "pending expansion: its parallel tasks are known once its inputs are".to_string()
            }
        };
        let files = if matches!(
            p.status,
            PlanStatus::Unknown { .. }
                | PlanStatus::AfterRestore { .. }
                | PlanStatus::SkippedByCondition { .. }
                | PlanStatus::PendingExpansion
        ) {
            "-".to_string()
        } else {
            p.workspace_files.to_string()
        };
        println!("{:width$}  {key:12}  {files:>8}  {status}", p.task);
    }
    Ok(0)
}

/// Opens the pipeline and cache for a command about one task, which must exist.
fn open_for_task(
    file: Option<PathBuf>,
    args: &PipelineArgs,
    task: &str,
) -> Result<Session, CliError> {
    open(file, args, &[task.to_string()], false)
}

/// `strata report`: the HTML report of the pipeline's latest recorded run.
pub(crate) fn report(file: Option<PathBuf>, args: &PipelineArgs, out: &Path) -> CliResult {
    let session = open(file, args, &[], false)?;
    let records = session
        .cache
        .history()
        .run_records(&session.pipeline.path)
        .map_err(|e| CliError::internal(&e))?;
    let Some(latest) = records.first() else {
        return Err(CliError::bad_input(format!(
            "error: {} has no recorded run in this cache yet",
            session.pipeline.path.display()
        )));
    };
    let view = RunView::read(latest).map_err(|e| CliError {
        message: format!("error: {e}"),
        code: EXIT_INTERNAL,
    })?;
    let inputs = crate::report::gather(&session.cache, &view);
    crate::report::write(out, &crate::report::render(&view, &inputs)).map_err(|e| CliError {
        message: format!("error: {e}"),
        code: EXIT_INTERNAL,
    })?;
    eprintln!(
        "report of the run of {}: {}",
        crate::logs::utc(view.started_ms),
        out.display()
    );
    Ok(0)
}

pub(crate) fn explain(file: Option<PathBuf>, args: &PipelineArgs, task: &str) -> CliResult {
    let session = open_for_task(file, args, task)?;
    let ctx = context(&session, args, Vec::new(), true)?;
    let explanation =
        strata_engine::explain(&ctx, task, &WarningsOnly).map_err(|e| CliError::internal(&e))?;
    let print_all = |diffs: &[strata_key::Difference]| {
        for d in diffs {
            println!("  - {d}");
        }
    };
    match explanation {
        Explanation::WouldHit { key } => println!(
            "`{task}` would be restored from the cache (key {})",
            key.short()
        ),
        Explanation::NoPreviousEntry => println!("`{task}` would run: it has no cache entry yet"),
        Explanation::ParentMustRun {
            parent,
            differences,
        } => {
            println!(
                "`{task}` would run because `{parent}` must run first (its output is part of the key)"
            );
            if differences.is_empty() {
                println!("its own inputs are unchanged since its latest entry");
            } else {
                println!("its own inputs that changed since its latest entry:");
                print_all(&differences);
            }
        }
        Explanation::AfterRestore { parent } => println!(
            "`{task}`'s key reads what `{parent}` wrote into the workspace, and `{parent}`'s layer is in the shared cache, not here: the key is known once a run downloads it"
        ),
        Explanation::Changed { differences } if differences.is_empty() => {
            println!(
                "`{task}` would run: its inputs match its latest entry, which is no longer usable (expired, or its layer is missing)"
            )
        }
        Explanation::Changed { differences } => {
            println!("`{task}` would run; changed since its latest entry:");
            print_all(&differences);
        }
    }
    Ok(0)
}

pub(crate) fn logs(file: Option<PathBuf>, args: &PipelineArgs, task: &str) -> CliResult {
    let session = open_for_task(file, args, task)?;
    crate::logs::logs(&session.cache, &session.pipeline.path, task)
}

/// `strata shell`: the program's exit status, or strata's own codes when it cannot open the
/// task (2: the task cannot be shown — no command, no entry under it, no kept failure; 3: the
/// sandbox or the cache failed).
pub(crate) fn shell(
    file: Option<PathBuf>,
    args: &PipelineArgs,
    task: &str,
    failed: bool,
    argv: Vec<String>,
) -> CliResult {
    let session = open_for_task(file, args, task)?;
    if let Some(message) = session
        .pipeline
        .unsupported_report_for(&[TaskName::new(task.to_string())])
    {
        return Err(CliError::bad_input(format!(
            "error: {message}\n(`strata check` accepts them; nothing was run)"
        )));
    }
    require_root()?;
    let ctx = context(&session, args, vec![task.to_string()], false)?;
    // SAFETY: isatty has no preconditions.
    let terminal = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    ignore_keyboard_signals();
    let options = strata_engine::ShellOptions {
        argv,
        failed,
        terminal,
    };
    let code = strata_engine::shell(&ctx, task, &options, &WarningsOnly).map_err(|e| {
        use strata_engine::ShellError as E;
        let code = match &e {
            E::NoCommand { .. }
            | E::NotBuilt { .. }
            | E::NoFailure { .. }
            | E::Expression { .. }
            | E::Engine(strata_engine::EngineError::UnknownTask(_)) => EXIT_BAD_INPUT,
            _ => EXIT_INTERNAL,
        };
        CliError {
            code,
            ..CliError::internal(&e)
        }
    })?;
    Ok(u8::try_from(code).unwrap_or(EXIT_INTERNAL))
}

/// While the shell runs, Ctrl-C and Ctrl-\ are its own: strata survives them. A handler that
/// does nothing rather than SIG_IGN, which the helper and the program would inherit.
fn ignore_keyboard_signals() {
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: installing a handler that does nothing is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = nothing as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        for signal in [libc::SIGINT, libc::SIGQUIT] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub(crate) struct ExportArgs {
    pub(crate) oci: Option<PathBuf>,
    pub(crate) tag: String,
    pub(crate) push: Option<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) compression: String,
}

pub(crate) fn export(
    file: Option<PathBuf>,
    args: &PipelineArgs,
    task: &str,
    e: ExportArgs,
) -> CliResult {
    let ExportArgs {
        oci,
        tag,
        push,
        cmd,
        compression,
    } = e;
    let compression = match compression.as_str() {
        "gzip" => strata_oci::Compression::Gzip,
        "zstd" => strata_oci::Compression::Zstd,
        other => {
            return Err(CliError::bad_input(format!(
                "error: unknown --compression `{other}` (gzip or zstd)"
            )));
        }
    };
    let target = match (oci, push) {
        (Some(dir), _) => strata_engine::ExportTarget::Layout { dir, tag },
        (None, Some(reference)) => strata_engine::ExportTarget::Push(
            strata_oci::ImageRef::parse(&reference)
                .map_err(|e| CliError::bad_input(format!("error: {e}")))?,
        ),
        (None, None) => unreachable!("clap requires --oci or --push"),
    };
    let session = open_for_task(file, args, task)?;
    require_root()?;
    let opts = options(&session.pipeline, args, vec![task.to_string()])?;
    let ctx = RunContext::new(
        &session.pipeline,
        &session.cache,
        &session.shared,
        opts,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| CliError::internal(&e))?;
    // Build or restore the task and everything under it first.
    let reporter = TerminalReporter::new(&session.pipeline);
    let summary = {
        let _ticker = reporter.start_ticker();
        strata_engine::run(&ctx, &*reporter)
    };
    settle_in_background(&session.cache);
    if !summary.success() {
        return Ok(EXIT_TASK_FAILED);
    }
    let options = strata_engine::ExportOptions {
        cmd: (!cmd.is_empty()).then_some(cmd),
        compression,
    };
    let exported = strata_engine::export(&ctx, task, &target, &options, &WarningsOnly)
        .map_err(|e| CliError::internal(&e))?;
    let whence = match &target {
        strata_engine::ExportTarget::Layout { dir, tag } => format!("oci:{}:{tag}", dir.display()),
        strata_engine::ExportTarget::Push(r) => r.to_string(),
    };
    eprintln!(
        "exported `{task}` to {whence}: {} layers, {}, manifest {}",
        exported.layers,
        crate::reporter::bytes(exported.bytes),
        exported.manifest
    );
    println!("{}", exported.manifest);
    Ok(0)
}
