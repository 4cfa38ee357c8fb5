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
mod outputs_report;
mod remote_prune;
mod reporter;
mod signing;

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
    #[arg(long = "remote", value_name = "URL")]
    remotes: Vec<String>,
    /// Use the local cache only, whatever else is configured.
    #[arg(long)]
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

/// Where `call: NAME VERSION` finds packages.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct PackageArgs {
    /// A package source: a directory of NAME/rwx-package.yml (or NAME/VERSION/rwx-package.yml),
    /// or a git repository URL (optionally URL#REF) cloned into the cache directory
    /// (repeatable; searched before $STRATA_PACKAGES and the config file's `packages:`).
    #[arg(long = "packages", value_name = "DIR|GIT-URL")]
    packages: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline, restoring every task whose inputs are unchanged.
    Run {
        /// The pipeline file (default: strata.yml or strata.yaml in the current directory).
        file: Option<PathBuf>,
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
    },
    /// Validate a pipeline file without running anything.
    Check {
        file: Option<PathBuf>,
        #[command(flatten)]
        packages: PackageArgs,
    },
    /// Show every task with its cache key and whether it would be restored.
    Plan {
        /// The pipeline file (default: strata.yml or strata.yaml in the current directory).
        file: Option<PathBuf>,
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
        /// The pipeline file.
        file: PathBuf,
        /// The task to explain.
        task: String,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Write a task's whole filesystem (base, workspace, parents, task) as an OCI image. The
    /// task is built or restored first, like `strata run --target TASK`.
    #[command(group(clap::ArgGroup::new("dest").required(true).args(["oci", "push"])))]
    Export {
        /// The pipeline file.
        file: PathBuf,
        /// The task to export.
        task: String,
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
    /// Print the saved log of a task's latest cached run.
    Logs {
        /// The pipeline file.
        file: PathBuf,
        /// The task whose log to print.
        task: String,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Open a shell (or run CMD) in a task's filesystem as its command would see it: its
    /// parents' layers from the cache, the workspace files it sees, its environment and
    /// confinement. What it writes is discarded; nothing is run before it or recorded.
    Shell {
        /// The pipeline file.
        file: PathBuf,
        /// The task whose filesystem to open.
        task: String,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Put what the task's latest failed run left (its kept upper dir) on top.
        #[arg(long)]
        failed: bool,
        /// The program to run and its arguments, after `--` (default: bash, else sh).
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<String>,
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
            pipeline,
            targets,
            no_cache,
            fail_fast,
            jobs,
            json,
            require_cached_parents,
            artifacts,
        } => commands::run(
            file,
            &pipeline,
            targets,
            commands::RunFlags {
                no_cache,
                fail_fast,
                jobs,
                json,
                require_cached_parents,
                artifacts,
            },
        ),
        Command::Check { file, packages } => commands::check(file, &packages),
        Command::Cache(command) => cache::cache(command),
        Command::SettleCache { dir } => commands::settle_cache(&dir),
        Command::Plan {
            file,
            pipeline,
            targets,
            json,
            format,
        } => commands::plan(file, &pipeline, targets, json, format.as_deref()),
        Command::Explain {
            file,
            task,
            pipeline,
        } => commands::explain(file, &pipeline, &task),
        Command::Logs {
            file,
            task,
            pipeline,
        } => commands::logs(file, &pipeline, &task),
        Command::Shell {
            file,
            task,
            pipeline,
            failed,
            cmd,
        } => commands::shell(file, &pipeline, &task, failed, cmd),
        Command::Export {
            file,
            task,
            pipeline,
            oci,
            tag,
            push,
            cmd,
            compression,
        } => commands::export(
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
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", e.message);
            ExitCode::from(e.code)
        }
    }
}
