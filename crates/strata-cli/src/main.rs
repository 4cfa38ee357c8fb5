//! The `strata` command line: parses arguments, loads the pipeline, opens the cache, hands the
//! work to the engine and renders its events (terminal or `--json`) and errors.
//!
//! Exit codes:
//! - 0: every task passed or was restored
//! - 1: a task failed (or was skipped because one did)
//! - 2: the pipeline file or the command line is invalid (nothing was run or cached)
//! - 3: strata could not do its own part (cache, workspace, sandbox)
//! - 130: interrupted (Ctrl-C or SIGTERM)

mod cache;
mod commands;
mod fanout;
mod github;
mod logs;
mod output_policy;
mod outputs_report;
mod record;
mod report;
mod reporter;
mod shared_prune;
mod signing;
mod tool_cache_listing;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Docker-style layer caching for CI tasks on VMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub(crate) struct PipelineArgs {
    /// The workspace directory (default: the directory holding the pipeline file).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// The cache directory (default: $STRATA_CACHE_DIR, /var/cache/strata as root).
    #[arg(long, env = "STRATA_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// A shared cache to use after the local one (repeatable; replaces $STRATA_CACHE and the
    /// `cache:` lists): s3://BUCKET[/PREFIX], oci://HOST[:PORT]/REPO, file:///DIR, with an
    /// optional `,ro` suffix.
    #[arg(long = "shared-cache", alias = "remote", value_name = "URL")]
    remotes: Vec<String>,
    /// Use the local cache only, whatever else is configured.
    #[arg(long = "no-shared-cache", alias = "no-remote")]
    no_remote: bool,
    /// Give every task this host variable (its value here, or VALUE), keyed by its value
    /// (repeatable; the config file's `env` list adds more).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// The same, keyed by its name only (a token whose value must not change the keys).
    #[arg(long = "env-excluded", value_name = "NAME[=VALUE]")]
    env_excluded: Vec<String>,
    /// An init value (`${{ init.NAME }}`), over what the trigger or `on.cli.init` gives
    /// (repeatable).
    #[arg(long = "init", value_name = "NAME=VALUE")]
    init: Vec<String>,
    /// A file of secrets, `NAME=VALUE` per line, for `${{ secrets.NAME }}` (after
    /// `$STRATA_SECRET_<NAME>`).
    #[arg(long = "secrets", value_name = "FILE")]
    secrets: Option<PathBuf>,
    #[command(flatten)]
    packages: PackageArgs,
}

/// `-f FILE`: the pipeline file, for commands that otherwise find the default one
/// (`strata.yml` or `strata.yaml` in the current directory).
#[derive(clap::Args, Clone, Default)]
pub(crate) struct FileFlag {
    /// The pipeline file (default: strata.yml or strata.yaml in the current directory).
    #[arg(short = 'f', long = "file", id = "file_flag", value_name = "FILE")]
    file: Option<PathBuf>,
}

/// `[FILE] TASK`: one name is the task (the pipeline file is then `-f FILE` or the default);
/// two are the file and the task.
#[derive(clap::Args, Clone)]
pub(crate) struct FileAndTask {
    #[arg(required = true, num_args = 1..=2, value_names = ["FILE", "TASK"])]
    names: Vec<String>,
    #[command(flatten)]
    flag: FileFlag,
}

/// Where `call: NAME VERSION` finds packages.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct PackageArgs {
    /// A package source: a directory of NAME/rwx-package.yml (or NAME/VERSION/rwx-package.yml),
    /// or a git repository URL (optionally URL#REF) cloned into the cache directory
    /// (repeatable; searched before $STRATA_PACKAGES and the config file's `packages:`).
    #[arg(long = "packages", value_name = "DIR|GIT-URL")]
    packages: Vec<String>,
}

/// What a run shows besides its live display.
#[derive(clap::Args, Clone)]
pub(crate) struct RunOutputArgs {
    /// When passing tasks' output is shown on the terminal (nextest's model; `immediate`
    /// with `--failure-output immediate` streams it live).
    #[arg(long, value_enum, default_value = "immediate", value_name = "WHEN")]
    success_output: output_policy::ShowOutput,
    /// When failing tasks' output is shown on the terminal.
    #[arg(long, value_enum, default_value = "immediate", value_name = "WHEN")]
    failure_output: output_policy::ShowOutput,
    /// Write a self-contained HTML report of the run to this file.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Append a Markdown summary to $GITHUB_STEP_SUMMARY and print an `::error` annotation per
    /// failed task (on by default when $GITHUB_ACTIONS is `true`).
    #[arg(long, overrides_with = "no_github_summary")]
    github_summary: bool,
    /// Not even on GitHub Actions.
    #[arg(long)]
    no_github_summary: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline, restoring every task whose inputs are unchanged.
    Run {
        /// The pipeline file (default: strata.yml or strata.yaml in the current directory).
        file: Option<PathBuf>,
        #[command(flatten)]
        flag: FileFlag,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Run only this task and what it needs (repeatable).
        #[arg(long = "target", short = 't', value_name = "TASK")]
        targets: Vec<String>,
        /// Do not restore from the cache (results are still stored).
        #[arg(long)]
        no_cache: bool,
        /// Start no new task once one has failed.
        #[arg(long)]
        fail_fast: bool,
        /// How many tasks run at once (default: the number of CPUs).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Fail instead of building a task that is not a target and is in no cache (a parent
        /// whose job has not published it yet); tasks with the cache off still run.
        #[arg(long)]
        require_cached_parents: bool,
        /// Print one JSON event per line instead of the terminal display.
        #[arg(long)]
        json: bool,
        /// Copy every task's artifacts (`outputs.artifacts`, `$RWX_ARTIFACTS`) to
        /// DIR/<task>/<key>/, restored tasks' too.
        #[arg(long, value_name = "DIR")]
        artifacts: Option<PathBuf>,
        /// What to download from the shared caches as the run starts, before the tasks ahead
        /// finish: `all` (the layers of tasks that run first, then those only restored tasks
        /// need), `needed` (only the first), `off` (each task looks up when it starts).
        #[arg(long, value_enum, value_name = "WHAT", default_value = "all")]
        prefetch: commands::Prefetch,
        /// Keep layers restored from a shared cache as erofs images (one file each, mounted
        /// read-only) instead of directories: `auto` (where the kernel can mount them, quietly
        /// directories elsewhere), `on` (the same, with a note where it cannot), `off`.
        #[arg(
            long,
            value_enum,
            value_name = "AUTO_ON_OFF",
            env = "STRATA_LAYER_IMAGES",
            default_value = "auto"
        )]
        layer_images: commands::OnOff,
        #[command(flatten)]
        output: RunOutputArgs,
    },
    /// Validate a pipeline file without running anything.
    Check {
        file: Option<PathBuf>,
        #[command(flatten)]
        flag: FileFlag,
        #[command(flatten)]
        packages: PackageArgs,
    },
    /// Write the HTML report of the pipeline's latest run (as `strata run --report`).
    Report {
        /// Where to write it.
        #[arg(default_value = "strata-report.html")]
        out: PathBuf,
        #[command(flatten)]
        flag: FileFlag,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Show every task with its cache key and whether it would be restored.
    Plan {
        /// The pipeline file (default: strata.yml or strata.yaml in the current directory).
        file: Option<PathBuf>,
        #[command(flatten)]
        flag: FileFlag,
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long = "target", short = 't', value_name = "TASK")]
        targets: Vec<String>,
        /// The same as `--format json`.
        #[arg(long)]
        json: bool,
        /// `text` (the default), `json` (the tasks, keys and graph, for other schedulers), or
        /// `github-actions` (a workflow with one job per task; reads no cache).
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
    },
    /// Explain why a task would run: which inputs changed since its latest cache entry.
    Explain {
        /// `[FILE] TASK`: the task to explain.
        #[command(flatten)]
        names: FileAndTask,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Write a task's whole filesystem (base, workspace, parents, task) as an OCI image. The
    /// task is built or restored first, like `strata run --target TASK`.
    #[command(group(clap::ArgGroup::new("dest").required(true).args(["oci", "push"])))]
    Export {
        /// `[FILE] TASK`: the task to export.
        #[command(flatten)]
        names: FileAndTask,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Write an OCI image layout to this directory (created if needed).
        #[arg(long, value_name = "DIR")]
        oci: Option<PathBuf>,
        /// The tag to give the image in the layout.
        #[arg(long, default_value = "latest", requires = "oci")]
        tag: String,
        /// Push to a registry (`host[:port]/repository[:tag]`).
        #[arg(long, value_name = "REF")]
        push: Option<String>,
        /// The image's default command (`--cmd sh --cmd -c --cmd 'echo hi'`).
        #[arg(long = "cmd", value_name = "ARG")]
        cmd: Vec<String>,
        /// Layer compression: gzip (read by every image tool) or zstd (smaller, faster; needs
        /// Docker 23+, podman or containerd 1.5+).
        #[arg(long, value_name = "gzip|zstd", default_value = "gzip")]
        compression: String,
    },
    /// Print the log of a task's latest run, failed or not (a line on stderr says which run).
    Logs {
        /// `[FILE] TASK`: the task whose log to print.
        #[command(flatten)]
        names: FileAndTask,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Open a shell (or run CMD) in a task's filesystem as its command would see it: its
    /// parents' layers from the cache, the workspace files it sees, its environment and
    /// confinement. What it writes is discarded; nothing is run before it or recorded.
    Shell {
        /// `[FILE] TASK`: the task whose filesystem to open.
        #[command(flatten)]
        names: FileAndTask,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Put what the task's latest failed run left (its kept upper dir) on top.
        #[arg(long)]
        failed: bool,
        /// The program to run and its arguments, after `--` (default: bash, else sh).
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Watch the workspace and tell runs what changed, so a warm run's key skips the walk over
    /// every file (opt-in; runs until Ctrl-C). Writes through a shared memory mapping or a hard
    /// link from outside the workspace are not seen: stop it where tools change files so.
    Watch {
        /// The pipeline file (default: strata.yml or strata.yaml in the current directory).
        file: Option<PathBuf>,
        #[command(flatten)]
        flag: FileFlag,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// The cache's lifecycle: list, totals, verify, prune.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Flush the cache's filesystem and forget what the flush covered (started detached after a
    /// run that published something).
    #[command(hide = true)]
    SettleCache { dir: PathBuf },
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(strata_sandbox::INIT_ARG)) {
        let spec = args.next().map(PathBuf::from).unwrap_or_default();
        strata_sandbox::init_main(&spec);
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // Like other Unix tools, a command whose reader went away (`strata plan | head -1`)
        // ends quietly instead of panicking on the write. A run keeps going without its reader:
        // its reporters ignore failed writes, and its tasks must finish or be cleaned up.
        // SAFETY: setting a signal's disposition to its default before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Run {
            file,
            flag,
            pipeline,
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
        } => commands::pipeline_file(file, flag).and_then(|file| {
            commands::run(
                file,
                &pipeline,
                commands::RunArgs {
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
                },
            )
        }),
        Command::Check {
            file,
            flag,
            packages,
        } => commands::pipeline_file(file, flag).and_then(|file| commands::check(file, &packages)),
        Command::Report {
            out,
            flag,
            pipeline,
        } => commands::report(flag.file, &pipeline, &out),
        Command::Cache(command) => cache::cache(command),
        Command::Watch {
            file,
            flag,
            pipeline,
        } => commands::pipeline_file(file, flag).and_then(|file| commands::watch(file, &pipeline)),
        Command::SettleCache { dir } => commands::settle_cache(&dir),
        Command::Plan {
            file,
            flag,
            pipeline,
            targets,
            json,
            format,
        } => commands::pipeline_file(file, flag)
            .and_then(|file| commands::plan(file, &pipeline, targets, json, format.as_deref())),
        Command::Explain { names, pipeline } => commands::file_and_task(names)
            .and_then(|(file, task)| commands::explain(file, &pipeline, &task)),
        Command::Logs { names, pipeline } => commands::file_and_task(names)
            .and_then(|(file, task)| commands::logs(file, &pipeline, &task)),
        Command::Shell {
            names,
            pipeline,
            failed,
            cmd,
        } => commands::file_and_task(names)
            .and_then(|(file, task)| commands::shell(file, &pipeline, &task, failed, cmd)),
        Command::Export {
            names,
            pipeline,
            oci,
            tag,
            push,
            cmd,
            compression,
        } => commands::file_and_task(names).and_then(|(file, task)| {
            commands::export(
                file,
                &pipeline,
                &task,
                commands::ExportArgs {
                    oci,
                    tag,
                    push,
                    cmd,
                    compression,
                },
            )
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", e.message);
            ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
