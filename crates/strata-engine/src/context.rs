use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use strata_key::{BaseId, Workspace};
use strata_pipeline::{Base, Pipeline, TaskName};
use strata_store::{LocalCache, RunDir, StoreError};

use crate::workspace_tree::WorkspaceTrees;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to capture the workspace")]
    Workspace(#[from] strata_key::WorkspaceError),
    #[error("failed to identify the base filesystem")]
    Base(#[source] strata_key::TreeError),
    #[error("base rootfs {0} is not a directory")]
    BaseMissing(PathBuf),
    #[error("no task named `{0}` in the pipeline")]
    UnknownTask(String),
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub jobs: usize,
    /// Run only these tasks and what they need (all tasks when empty).
    pub targets: Vec<TaskName>,
    pub no_cache: bool,
    pub fail_fast: bool,
    /// The workspace directory (by default the pipeline file's directory).
    pub workspace: PathBuf,
    /// The `strata` binary, re-executed as the sandbox helper.
    pub exe: PathBuf,
}

/// What every task of one run shares: the pipeline, the cache, the captured workspace and the
/// base identity.
pub struct RunContext<'a> {
    pub pipeline: &'a Pipeline,
    pub cache: &'a LocalCache,
    pub options: RunOptions,
    pub workspace: Workspace,
    pub base_id: BaseId,
    pub base_root: PathBuf,
    pub run_dir: RunDir,
    pub(crate) trees: WorkspaceTrees,
    pub interrupted: Arc<AtomicBool>,
}

impl<'a> RunContext<'a> {
    /// Captures the workspace and identifies the base.
    pub fn new(
        pipeline: &'a Pipeline,
        cache: &'a LocalCache,
        options: RunOptions,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self, EngineError> {
        for t in &options.targets {
            if pipeline.task(t.as_str()).is_none() {
                return Err(EngineError::UnknownTask(t.to_string()));
            }
        }
        let base_root = match &pipeline.base {
            Base::Host => PathBuf::from("/"),
            Base::Rootfs(dir) if dir.is_dir() => dir.clone(),
            Base::Rootfs(dir) => return Err(EngineError::BaseMissing(dir.clone())),
        };
        let base_id = strata_key::base_identity(&pipeline.base).map_err(EngineError::Base)?;
        let workspace = Workspace::capture(&options.workspace, &[cache.root().to_path_buf()])?;
        let run_dir = cache.begin_run()?;
        Ok(RunContext {
            pipeline,
            cache,
            options,
            workspace,
            base_id,
            base_root,
            trees: WorkspaceTrees::default(),
            run_dir,
            interrupted,
        })
    }

    pub(crate) fn pipeline_id(&self) -> String {
        self.pipeline.path.display().to_string()
    }
}
