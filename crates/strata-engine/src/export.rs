//! `strata export`: a task's whole filesystem as an OCI image — the base (a base image's layers,
//! or a `rootfs` directory), the workspace files the task saw, its parents' layers and its own,
//! one OCI layer each, bottom first — with a config carrying the task's environment, `/workspace`
//! as the working directory and an optional command. Written to an image layout directory or
//! pushed to a registry.

use std::path::{Path, PathBuf};

use strata_oci::{
    Compression, Descriptor, ImageConfig, ImageManifest, ImageRef, MEDIA_CONFIG, MEDIA_MANIFEST,
    OciDigest, OciLayout, Platform, Registry, RootFs, RuntimeConfig, write_layer,
};
use strata_pipeline::Base;

use crate::context::{EngineError, RunContext};
use crate::events::{Event, Reporter};
use crate::inputs::{TaskResult, WORKSPACE_DIR, resolve};
use crate::plan::{PlanStatus, plan_with_results};

/// Where the image goes.
pub enum ExportTarget {
    Layout { dir: PathBuf, tag: String },
    Push(ImageRef),
}

pub struct ExportOptions {
    /// The image's default command.
    pub cmd: Option<Vec<String>>,
    /// How layers are compressed: gzip by default (every image tool reads it; umoci and older
    /// Docker versions do not read zstd).
    pub compression: Compression,
}

#[derive(Debug, Clone)]
pub struct Exported {
    pub manifest: OciDigest,
    pub layers: usize,
    /// Compressed size of all layers.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "`{0}` has no result in the local cache to export; `strata run --target {0}` builds or restores it"
    )]
    NotBuilt(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("failed to archive a layer of the image")]
    Archive(#[from] strata_oci::ArchiveError),
    #[error("failed to write the image layout")]
    Layout(#[from] strata_oci::LayoutError),
    #[error("failed to push the image")]
    Registry(#[from] strata_oci::RegistryError),
    #[error("failed to write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Exports `task_name`, whose result (and that of everything under it) must be in the local
/// cache.
pub fn export(
    ctx: &RunContext<'_>,
    task_name: &str,
    target: &ExportTarget,
    options: &ExportOptions,
    reporter: &dyn Reporter,
) -> Result<Exported, ExportError> {
    let compression = options.compression;
    let cmd = options.cmd.clone();
    let pipeline = ctx.pipeline;
    let task = pipeline
        .task(task_name)
        .ok_or_else(|| EngineError::UnknownTask(task_name.to_string()))?;
    let (planned, results) = plan_with_results(ctx, reporter);
    let index = |name: &str| pipeline.tasks.iter().position(|t| t.name.as_str() == name);
    let built = planned
        .iter()
        .find(|p| p.task == task_name)
        .is_some_and(|p| p.status == PlanStatus::Hit);
    let result: &TaskResult = match index(task_name).and_then(|i| results[i].as_ref()) {
        Some(Ok(r)) if built => r,
        _ => return Err(ExportError::NotBuilt(task_name.to_string())),
    };
    let parents: Vec<&TaskResult> = task
        .uses
        .iter()
        .filter_map(|u| results[index(u.as_str())?].as_ref()?.as_ref().ok())
        .collect();
    let values = crate::inputs::values_for(task, |n| {
        results[index(n.as_str())?].as_ref()?.as_ref().ok()
    })
    .unwrap_or_default();
    let resolved = resolve(ctx, task, &parents, &values);

    // The layers, bottom first.
    let mut dirs: Vec<PathBuf> = match &pipeline.base {
        Base::Host(_) => {
            reporter.event(&Event::Warning {
                message: "`base: host` is the machine's own root filesystem and is not exported; \
                          the image holds the workspace and the tasks' layers only"
                    .into(),
            });
            Vec::new()
        }
        Base::Rootfs(_) => vec![ctx.base_root.clone()],
        Base::Image(_) => ctx.base_layers.iter().rev().cloned().collect(),
    };
    let tree = resolved.tree.materialize(ctx).map_err(EngineError::Store)?;
    let layer_dirs = result
        .stack
        .iter()
        .map(|p| ctx.cache.layers().path(&p.layer));
    if resolved.masked {
        // The used tasks' layers, then their workspace files as the task's filter shows them
        // (above a mask hiding their own), then the task's layer.
        let mut layer_dirs: Vec<PathBuf> = layer_dirs.collect();
        let own = layer_dirs.pop();
        dirs.extend(layer_dirs);
        dirs.push(
            ctx.trees
                .mask(ctx.run_dir.path())
                .map_err(EngineError::Store)?,
        );
        dirs.push(tree);
        dirs.extend(own);
    } else {
        dirs.push(tree);
        dirs.extend(layer_dirs);
    }

    let sink = Sink::open(target)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for dir in &dirs {
        let tmp = ctx.cache.content().temp_file("export");
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let written = write_layer(dir, std::io::BufWriter::new(file), compression, threads);
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        let stored = sink.put_file(&written.digest, written.size, &tmp);
        let _ = std::fs::remove_file(&tmp);
        stored?;
        layers.push(Descriptor::new(
            compression.media_type(),
            written.digest,
            written.size,
        ));
        diff_ids.push(written.diff_id);
    }

    // The environment the task's dependents would see: its own, with its exports applied.
    let mut env: Vec<(String, String)> = resolved
        .env
        .iter()
        .filter(|(k, _)| !["STRATA_ENV", "MINT_ENV", "RWX_ENV"].contains(&k.as_str()))
        .cloned()
        .collect();
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    for (k, v) in &result.env.vars {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env.retain(|(k, _)| k != "PATH");
    env.push(("PATH".into(), result.env.path_value(&path)));
    env.sort();
    let platform = Platform::host();
    let config = ImageConfig {
        architecture: platform.architecture,
        os: platform.os,
        created: None,
        config: RuntimeConfig {
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cmd,
            entrypoint: None,
            working_dir: WORKSPACE_DIR.to_string(),
            user: String::new(),
        },
        rootfs: RootFs::layers(diff_ids),
        history: Vec::new(),
    };
    let config_bytes = serde_json::to_vec(&config).expect("configs serialize");
    let config_digest = OciDigest::of(&config_bytes);
    sink.put_bytes(&config_digest, &config_bytes)?;
    let bytes = layers.iter().map(|l| l.size).sum();
    let count = layers.len();
    let mut manifest = ImageManifest::new(
        Descriptor::new(MEDIA_CONFIG, config_digest, config_bytes.len() as u64),
        layers,
    );
    manifest
        .annotations
        .insert("dev.strata.task".to_string(), task_name.to_string());
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
    let manifest_digest = OciDigest::of(&manifest_bytes);
    sink.put_manifest(&manifest_digest, &manifest_bytes)?;
    Ok(Exported {
        manifest: manifest_digest,
        layers: count,
        bytes,
    })
}

/// Where blobs and the manifest go.
enum Sink<'a> {
    Layout(OciLayout, &'a str),
    Registry(Registry, &'a ImageRef),
}

impl<'a> Sink<'a> {
    fn open(target: &'a ExportTarget) -> Result<Sink<'a>, ExportError> {
        Ok(match target {
            ExportTarget::Layout { dir, tag } => Sink::Layout(OciLayout::create(dir)?, tag),
            ExportTarget::Push(image) => Sink::Registry(Registry::new(&image.registry), image),
        })
    }

    fn put_file(&self, digest: &OciDigest, size: u64, path: &Path) -> Result<(), ExportError> {
        let mut file = std::fs::File::open(path).map_err(io(path))?;
        match self {
            Sink::Layout(layout, _) => layout.put_blob(digest, file)?,
            Sink::Registry(registry, image) => {
                registry.put_blob(&image.repository, digest, size, &mut file)?
            }
        }
        Ok(())
    }

    fn put_bytes(&self, digest: &OciDigest, bytes: &[u8]) -> Result<(), ExportError> {
        match self {
            Sink::Layout(layout, _) => {
                layout.put_blob_bytes(bytes)?;
            }
            Sink::Registry(registry, image) => registry.put_blob(
                &image.repository,
                digest,
                bytes.len() as u64,
                &mut &bytes[..],
            )?,
        }
        Ok(())
    }

    fn put_manifest(&self, digest: &OciDigest, bytes: &[u8]) -> Result<(), ExportError> {
        match self {
            Sink::Layout(layout, tag) => {
                layout.put_blob_bytes(bytes)?;
                let mut desc = Descriptor::new(MEDIA_MANIFEST, *digest, bytes.len() as u64);
                desc.platform = Some(Platform::host());
                layout.tag(desc, tag)?;
            }
            Sink::Registry(registry, image) => {
                registry.put_manifest(
                    &image.repository,
                    &image.reference_str(),
                    MEDIA_MANIFEST,
                    bytes,
                )?;
            }
        }
        Ok(())
    }
}
