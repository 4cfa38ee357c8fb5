//! `${{ tasks.X.artifacts.KEY }}` as a task runs: the artifact another task kept in its layer
//! (`task_outputs.rs`, under [`ARTIFACTS_DIR`]) made visible to the reader, and keyed.
//!
//! - The reference evaluates to `/var/lib/strata/task-artifacts/X/KEY` — a directory artifact's
//!   directory — or, for a file artifact, to the file in it (`…/X/KEY/NAME`, the file's own
//!   name).
//! - The reader sees the artifact and nothing else of X's layer: a lower dir built for it, on
//!   top of its stack, whose `var/lib/strata/task-artifacts/X/KEY` holds hard links to the files
//!   of X's committed layer (immutable; overlay copies a file up before it is written, so the
//!   layer is never changed through them).
//! - The reader's key holds each artifact's tree digest ([`ArtifactDigest`]): it re-runs when
//!   the artifact changes, not when X changes something else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_key::{ArtifactDigest, ArtifactInput, LayerDigest};
use strata_pipeline::{ARTIFACT_REFS_DIR, ArtifactRef, Task, TaskName};

use crate::context::RunContext;
use crate::inputs::TaskResult;
use crate::task_outputs::ARTIFACTS_DIR;

/// The committed layer of each task whose artifacts a task reads, by task name (`None`: the
/// task added no layer of its own, so it has no artifacts).
pub(crate) type ArtifactLayers = BTreeMap<String, Option<LayerDigest>>;

/// The layers of the tasks whose artifacts `task` reads, from their results (`result_of`);
/// `None` if one has no result yet.
pub(crate) fn layers_for<'a>(
    task: &Task,
    result_of: impl Fn(&TaskName) -> Option<&'a TaskResult>,
) -> Option<ArtifactLayers> {
    let mut out = ArtifactLayers::new();
    for r in &task.artifact_refs {
        for producer in producers(r) {
            let result = result_of(producer)?;
            let own = result
                .stack
                .last()
                .filter(|p| p.task == producer.as_str())
                .map(|p| p.layer);
            out.insert(producer.to_string(), own);
        }
    }
    Some(out)
}

/// The tasks whose layers hold what `r` reads: the task, or a parallel task's generated tasks.
pub(crate) fn producers(r: &ArtifactRef) -> &[TaskName] {
    if r.members.is_empty() {
        std::slice::from_ref(&r.task)
    } else {
        &r.members
    }
}

/// Why a task's artifact references could not be resolved.
pub(crate) enum ArtifactError {
    /// A layer a shared cache promised has not arrived: the task waits for another pass.
    NotRestored(String),
    /// The task fails with this.
    Failed(String),
}

#[derive(Debug, Clone)]
pub(crate) enum ArtifactSources {
    One(PathBuf),
    Gathered(Vec<(String, PathBuf)>),
}

/// One artifact a task reads, found in its producer's layer.
#[derive(Debug, Clone)]
pub(crate) struct ReadArtifact {
    pub(crate) reference: ArtifactRef,
    /// The artifact's directory in the producer's committed layer; for a parallel task's, each
    /// generated task's with the name of the directory it is gathered into.
    pub(crate) sources: ArtifactSources,
    /// What the expression gives, in the reader's filesystem.
    pub(crate) path: String,
    pub(crate) digest: ArtifactDigest,
}

impl ReadArtifact {
    pub(crate) fn key_input(&self) -> ArtifactInput {
        ArtifactInput {
            task: self.reference.task.to_string(),
            key: self.reference.key.clone(),
            digest: self.digest,
        }
    }
}

/// Every artifact `task` reads: waits for the producers' layers (those restored from a shared
/// cache may be on their way), then finds and digests each artifact.
pub(crate) fn read(
    ctx: &RunContext<'_>,
    task: &Task,
    layers: &ArtifactLayers,
) -> Result<Vec<ReadArtifact>, ArtifactError> {
    if task.artifact_refs.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<ReadArtifact> = Vec::with_capacity(task.artifact_refs.len());
    for r in &task.artifact_refs {
        // A task spliced from several calls could name one artifact twice.
        if out
            .iter()
            .any(|a| a.reference.task == r.task && a.reference.key == r.key)
        {
            continue;
        }
        let dir = format!("{ARTIFACT_REFS_DIR}/{}/{}", r.task, r.key);
        let artifact = if r.members.is_empty() {
            let (source, digest) = find(ctx, r, &r.task, layers)?;
            let path = match file_artifact(&source, &declared_name(ctx, r)) {
                Some(name) => format!("{dir}/{name}"),
                None => dir,
            };
            ReadArtifact {
                reference: r.clone(),
                sources: ArtifactSources::One(source),
                path,
                digest: ArtifactDigest::from_bytes(*digest.as_bytes()),
            }
        } else {
            // The directory of a parallel task's artifact holds one directory per generated
            // task, named after it; the digest covers each name and artifact.
            let mut h = blake3::Hasher::new();
            let mut sources = Vec::with_capacity(r.members.len());
            for member in &r.members {
                let (source, digest) = find(ctx, r, member, layers)?;
                for part in [member.as_str(), &digest.to_hex()] {
                    h.update(&(part.len() as u64).to_le_bytes());
                    h.update(part.as_bytes());
                }
                sources.push((member.to_string(), source));
            }
            ReadArtifact {
                reference: r.clone(),
                sources: ArtifactSources::Gathered(sources),
                path: dir,
                digest: ArtifactDigest::from_hash(h.finalize()),
            }
        };
        out.push(artifact);
    }
    Ok(out)
}

/// Artifact `r.key` in the layer of `producer` (waited for), and its tree digest.
fn find(
    ctx: &RunContext<'_>,
    r: &ArtifactRef,
    producer: &TaskName,
    layers: &ArtifactLayers,
) -> Result<(PathBuf, LayerDigest), ArtifactError> {
    let no_artifact = || {
        ArtifactError::Failed(format!(
            "`tasks.{}.artifacts.{}`: task `{producer}` produced no artifact `{}`",
            r.written, r.key, r.key
        ))
    };
    let Some(Some(layer)) = layers.get(producer.as_str()) else {
        return Err(no_artifact());
    };
    ctx.transfers
        .wait_for(ctx, std::slice::from_ref(layer))
        .map_err(ArtifactError::NotRestored)?;
    let source = ctx
        .cache
        .layers()
        .path(layer)
        .join(ARTIFACTS_DIR.trim_start_matches('/'))
        .join(&r.key);
    if !source.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Err(no_artifact());
    }
    let digest = strata_key::tree_digest(&source).map_err(|e| {
        ArtifactError::Failed(format!(
            "failed to read artifact `{}` of `{producer}`: {e}",
            r.key
        ))
    })?;
    Ok((source, digest))
}

/// The name a file artifact's file has in the artifact's directory: the last component of the
/// producer's declared `path` (as the producer resolved it, when written with an expression),
/// or the key for one written into `$RWX_ARTIFACTS`.
fn declared_name(ctx: &RunContext<'_>, r: &ArtifactRef) -> String {
    let declared = ctx
        .pipeline
        .tasks
        .iter()
        .find(|t| t.name == r.task)
        .and_then(|t| t.outputs.artifacts.iter().find(|a| a.key == r.key))
        .map(|a| {
            ctx.artifacts
                .resolved_path(r.task.as_str(), &r.key)
                .unwrap_or_else(|| a.path.raw.clone())
        });
    declared
        .and_then(|path| {
            Path::new(path.trim_end_matches('/'))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| r.key.clone())
}

/// `Some(name)` when the artifact's directory holds exactly one entry, `name`, and it is not a
/// directory: the artifact was a file (the collection puts a file artifact's file in a
/// directory of its own). A directory artifact whose only content is a file of the directory's
/// own name reads as a file; nothing else is ambiguous.
fn file_artifact(dir: &Path, name: &str) -> Option<String> {
    let mut entries = std::fs::read_dir(dir).ok()?;
    let only = entries.next()?.ok()?;
    if entries.next().is_some() || only.file_name().to_string_lossy() != name {
        return None;
    }
    let kind = only.file_type().ok()?;
    (!kind.is_dir()).then(|| name.to_string())
}

/// The lower dir that shows `artifacts` at their paths and nothing else: built once per set of
/// artifacts in a run (named by their digests), of hard links into the producers' layers.
/// Built under a temporary name and renamed, so a concurrent reader of the same artifacts
/// never sees it half made.
pub(crate) fn view(run_dir: &Path, artifacts: &[ReadArtifact]) -> Result<PathBuf, String> {
    let mut h = blake3::Hasher::new();
    for a in artifacts {
        for part in [
            a.reference.task.as_str(),
            &a.reference.key,
            &a.digest.to_hex(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    let views = run_dir.join("artifact-views");
    let root = views.join(h.finalize().to_hex().as_str());
    if root.exists() {
        return Ok(root);
    }
    let fail = |what: &Path, e: std::io::Error| {
        format!("failed to show artifacts at {}: {e}", what.display())
    };
    std::fs::create_dir_all(&views).map_err(|e| fail(&views, e))?;
    static BUILDING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let built = views.join(format!(
        ".building-{}-{}",
        std::process::id(),
        BUILDING.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    for a in artifacts {
        let dest = built
            .join(ARTIFACT_REFS_DIR.trim_start_matches('/'))
            .join(a.reference.task.as_str())
            .join(&a.reference.key);
        let linked = match &a.sources {
            ArtifactSources::One(source) => link_tree(source, &dest),
            ArtifactSources::Gathered(sources) => sources
                .iter()
                .try_for_each(|(name, source)| link_tree(source, &dest.join(name))),
        };
        if let Err((p, e)) = linked {
            let _ = std::fs::remove_dir_all(&built);
            return Err(fail(&p, e));
        }
    }
    if let Err(e) = std::fs::rename(&built, &root) {
        let _ = std::fs::remove_dir_all(&built);
        // Another task reading the same artifacts made it first.
        if !root.exists() {
            return Err(fail(&root, e));
        }
    }
    Ok(root)
}

/// `dest` (which must not exist yet) as a tree of the directories of `source` (same modes)
/// whose other entries are hard links to those of `source` (a copy across filesystems: a
/// committed layer is immutable, so the copy is exact).
fn link_tree(source: &Path, dest: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    use std::os::unix::fs::PermissionsExt;
    let meta = source.symlink_metadata().map_err(|e| (source.into(), e))?;
    std::fs::create_dir_all(dest).map_err(|e| (dest.into(), e))?;
    let entries = std::fs::read_dir(source).map_err(|e| (source.into(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (source.into(), e))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        if entry.file_type().map_err(|e| (from.clone(), e))?.is_dir() {
            link_tree(&from, &to)?;
        } else {
            match std::fs::hard_link(&from, &to) {
                Ok(()) => {}
                // Only across filesystems: any other failure (`to` existing above all) must not
                // reach `copy`, which would truncate `to` — a link into the layer.
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    std::fs::copy(&from, &to).map_err(|e| (to.clone(), e))?;
                }
                Err(e) => return Err((to, e)),
            }
        }
    }
    std::fs::set_permissions(
        dest,
        std::fs::Permissions::from_mode(meta.permissions().mode()),
    )
    .map_err(|e| (dest.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_artifact_is_its_only_entry_under_its_declared_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("kd"), "bin").unwrap();
        assert_eq!(file_artifact(d.path(), "kd").as_deref(), Some("kd"));
        assert_eq!(file_artifact(d.path(), "other"), None);
        std::fs::write(d.path().join("second"), "x").unwrap();
        assert_eq!(file_artifact(d.path(), "kd"), None);
        let e = tempfile::tempdir().unwrap();
        std::fs::create_dir(e.path().join("dist")).unwrap();
        assert_eq!(file_artifact(e.path(), "dist"), None);
    }

    #[test]
    fn the_view_links_the_files_and_keeps_modes() {
        use std::os::unix::fs::MetadataExt;
        let layer = tempfile::tempdir().unwrap();
        let src = layer.path().join("bundle");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/a.txt"), "a").unwrap();
        let run = tempfile::tempdir().unwrap();
        let a = ReadArtifact {
            reference: ArtifactRef {
                task: TaskName::new("build".to_string()),
                written: "build".into(),
                key: "bundle".into(),
                at: Default::default(),
                width: 0,
                members: Vec::new(),
            },
            sources: ArtifactSources::One(src.clone()),
            path: String::new(),
            digest: ArtifactDigest::from_hash(blake3::hash(b"x")),
        };
        let root = view(run.path(), std::slice::from_ref(&a)).unwrap();
        let linked = root.join("var/lib/strata/task-artifacts/build/bundle/sub/a.txt");
        assert_eq!(
            linked.metadata().unwrap().ino(),
            src.join("sub/a.txt").metadata().unwrap().ino()
        );
        assert_eq!(view(run.path(), &[a]).unwrap(), root);
    }
}
