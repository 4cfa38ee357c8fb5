use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use strata_cache::CacheChain;
use strata_key::{BaseId, Workspace};
use strata_pipeline::{Base, Pipeline, TaskName};
use strata_store::{LocalCache, RunDir, StoreError};

use crate::transfer::Transfers;
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
    #[error("failed to prepare the base image")]
    Image(#[from] strata_cache::ImageError),
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
    /// Shared caches after the local one (possibly none).
    pub remotes: &'a CacheChain,
    pub options: RunOptions,
    pub workspace: Workspace,
    pub base_id: BaseId,
    pub base_root: PathBuf,
    /// The layers of a base image, top first, between the task's stack and `base_root`.
    pub base_layers: Vec<PathBuf>,
    /// Environment a base image sets (its config's `Env`), under the task's own.
    pub base_env: Vec<(String, String)>,
    pub run_dir: RunDir,
    pub(crate) trees: WorkspaceTrees,
    pub(crate) transfers: Transfers,
    /// Things to tell the user once the run starts (a base image used offline, ...).
    pub(crate) notices: Vec<String>,
    pub interrupted: Arc<AtomicBool>,
}

impl<'a> RunContext<'a> {
    /// Captures the workspace and identifies the base.
    pub fn new(
        pipeline: &'a Pipeline,
        cache: &'a LocalCache,
        remotes: &'a CacheChain,
        options: RunOptions,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self, EngineError> {
        for t in &options.targets {
            if pipeline.task(t.as_str()).is_none() {
                return Err(EngineError::UnknownTask(t.to_string()));
            }
        }
        let mut base_layers = Vec::new();
        let mut base_env = Vec::new();
        let mut notices = Vec::new();
        let (base_root, base_id) = match &pipeline.base {
            Base::Host => (
                PathBuf::from("/"),
                strata_key::base_identity(&pipeline.base).map_err(EngineError::Base)?,
            ),
            Base::Rootfs(dir) if dir.is_dir() => (
                dir.clone(),
                strata_key::base_identity(&pipeline.base).map_err(EngineError::Base)?,
            ),
            Base::Rootfs(dir) => return Err(EngineError::BaseMissing(dir.clone())),
            Base::Image(reference) => {
                let dir = pipeline.path.parent().unwrap_or(std::path::Path::new("."));
                let source = strata_cache::ImageSource::parse(reference, dir)?;
                let image = strata_cache::pull_image(cache, &source)?;
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
                    .map(|l| cache.layer_path(l))
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
        let known = strata_key::StatCache::from_bytes(&cache.load_stat_cache(&options.workspace));
        let (workspace, stats) =
            Workspace::capture_with(&options.workspace, &[cache.root().to_path_buf()], &known)?;
        // Only a cache: failing to keep it costs the next run some reading, nothing else.
        if let Some(stats) = stats {
            let _ = cache.save_stat_cache(&options.workspace, &stats.to_bytes());
        }
        let run_dir = cache.begin_run()?;
        Ok(RunContext {
            pipeline,
            cache,
            remotes,
            options,
            workspace,
            base_id,
            base_root,
            base_layers,
            base_env,
            trees: WorkspaceTrees::default(),
            transfers: Transfers::default(),
            notices,
            run_dir,
            interrupted,
        })
    }

    pub(crate) fn pipeline_id(&self) -> String {
        self.pipeline.path.display().to_string()
    }
}
