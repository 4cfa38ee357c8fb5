//! Tool caches (`tool-cache: NAME`): a task that misses starts from the files its latest
//! successful execution under that name committed, so that `npm ci`, `cargo build` or ccache
//! work incrementally. Not keyed: the key is computed before, and without, the tool cache.
//!
//! Seeding copies the tool cache's layer into the fresh upper dir before the sandbox mounts it,
//! so the task's layer is its whole resulting filesystem, as always (never a diff over the tool
//! cache): a hit elsewhere, without the tool cache, restores the same tree. Copies, not hard
//! links, since a task may write a file in its upper dir in place, which would change the
//! committed layer under every reader. What is not copied, so that the task sees its inputs of
//! today:
//!
//! - whiteouts and opaque markers: what the previous execution deleted from the layers under it
//!   is back if those layers have it now;
//! - files of the workspace that the task sees (`/workspace/...` paths of its view), and
//!   anything of the tool cache where the view has a directory: the checkout wins.
//!
//! After a successful execution the record names the new layer (`strata-store`'s
//! `tool_caches.rs`, a rename: last writer wins); a failed one leaves the tool cache as it was.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use strata_key::{CacheKey, LayerDigest};
use strata_pipeline::expr::Scope;
use strata_pipeline::{Task, Text};
use strata_store::{DEFAULT_TOOL_CACHE_MAX_AGE, ToolCacheId, ToolCacheRecord};

use crate::context::RunContext;
use crate::events::{Event, Reporter};
use crate::inputs::ResolvedInputs;

/// The vault of a file without `tool-cache: {vault}`.
const DEFAULT_VAULT: &str = "default";

/// The task's tool cache, if it names one — or if a calling task above it does (RWX's
/// `call: golang/mod-download` with `tool-cache:`): each of the call's tasks then has a tool
/// cache of its own, `NAME/INNER` (its name under the caller), so that they never overwrite
/// one another. A name written as an expression is resolved in `scope` (the task's, as it
/// starts): an error, or a name that cannot be one, is the task's failure.
pub(crate) fn id_of(
    ctx: &RunContext<'_>,
    task: &Task,
    scope: &Scope,
    key_scope: &Scope,
) -> Result<Option<ToolCacheId>, String> {
    let name_of = |text: &Text| -> Result<String, String> {
        if !text.raw.contains("${{") {
            return Ok(text.raw.clone());
        }
        let name = crate::expressions::resolve(text, scope, key_scope)
            .map_err(|e| format!("`tool-cache`: {e}"))?
            .text;
        strata_pipeline::check_tool_cache_name(&name)
            .map_err(|why| format!("`tool-cache` gives `{name}`, which cannot name one: {why}"))?;
        Ok(name)
    };
    let name = match &task.tool_cache {
        Some(name) => name_of(name)?,
        None => {
            let mut call = task.scope.as_deref();
            let mut found = None;
            while let Some(s) = call {
                if let Some(name) = ctx
                    .pipeline
                    .task(s.caller.as_str())
                    .and_then(|caller| caller.tool_cache.as_ref())
                {
                    let inner = task
                        .name
                        .as_str()
                        .strip_prefix(&s.prefix())
                        .unwrap_or(task.name.as_str());
                    found = Some(format!("{}/{inner}", name_of(name)?));
                    break;
                }
                call = s.parent.as_deref();
            }
            match found {
                Some(name) => name,
                None => return Ok(None),
            }
        }
    };
    Ok(Some(ToolCacheId {
        vault: ctx
            .pipeline
            .tool_cache_vault
            .clone()
            .unwrap_or_else(|| DEFAULT_VAULT.to_string()),
        name,
    }))
}

pub(crate) fn max_age(ctx: &RunContext<'_>) -> Duration {
    ctx.options
        .tool_cache_max_age
        .unwrap_or(DEFAULT_TOOL_CACHE_MAX_AGE)
}

/// What seeding copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seeded {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// Copies the task's tool cache, if it has one, into `upper` (a fresh upper dir). A tool cache
/// that cannot be read is no tool cache: the task starts from scratch, with a warning.
pub(crate) fn seed(
    ctx: &RunContext<'_>,
    task: &Task,
    resolved: &ResolvedInputs,
    upper: &Path,
    reporter: &dyn Reporter,
) {
    let Some(id) = resolved.tool_cache.clone() else {
        return;
    };
    // `--no-cache` is a clean run, as `docker build --no-cache`, and so is a run of a cron
    // trigger with `reset-tool-cache: true`: the tool cache is written afterwards but not used.
    if ctx.options.no_cache || ctx.invocation.reset_tool_cache {
        return;
    }
    let record = match ctx.cache.tool_caches().get(&id, max_age(ctx)) {
        Ok(Some(r)) => r,
        Ok(None) => match from_shared_caches(ctx, task, &id, reporter) {
            Some(r) => r,
            None => return,
        },
        Err(e) => {
            reporter.event(&Event::Warning {
                message: format!(
                    "`{}` starts without its tool cache `{id}`: {}",
                    task.name,
                    strata_store::error_chain(&e)
                ),
            });
            return;
        }
    };
    // A lease on the layer being copied, for a concurrent prune; then the use is noted (the
    // budget evicts tool caches by last use), which also checks that no prune removed the
    // tool cache before the lease was there (`ToolCaches::note_use`).
    let _ = ctx.run_dir.note_layer(&record.layer);
    if !matches!(ctx.cache.tool_caches().note_use(&record), Ok(true)) {
        reporter.event(&Event::Warning {
            message: format!(
                "`{}` starts without its tool cache `{id}`: it was evicted as the task started",
                task.name
            ),
        });
        return;
    }
    let started = Instant::now();
    let checkout = CheckoutPaths::of(resolved);
    let layer = ctx.cache.layers().path(&record.layer);
    let mut seeded = Seeded::default();
    if let Err(e) = copy_tree(&layer, upper, "", &checkout, &mut seeded) {
        // Half a tool cache is still a valid start (the task rebuilds what is missing), but
        // say so.
        reporter.event(&Event::Warning {
            message: format!(
                "`{}` starts from part of its tool cache `{id}`: {e}",
                task.name
            ),
        });
    }
    reporter.event(&Event::ToolCacheRestored {
        task: task.name.to_string(),
        tool_cache: id.to_string(),
        layer: record.layer.to_hex(),
        files: seeded.files,
        bytes: seeded.bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    });
}

/// A machine without the tool cache (or with an expired one) takes it from the first shared
/// cache that has one young enough, signed by a trusted key where that cache has any: its
/// entry is restored (layer downloaded and verified as for any hit), then recorded locally
/// with the age it has there.
fn from_shared_caches(
    ctx: &RunContext<'_>,
    task: &Task,
    id: &ToolCacheId,
    reporter: &dyn Reporter,
) -> Option<ToolCacheRecord> {
    if ctx.shared.is_empty() {
        return None;
    }
    let warn = crate::transfer::warn_with(reporter);
    let oldest = now_ms() - max_age(ctx).as_millis().min(i64::MAX as u128) as i64;
    let lookup = ctx.shared.lookup_tool_cache(id, oldest, &warn);
    for (location, why) in lookup.untrusted {
        reporter.event(&Event::Warning {
            message: format!(
                "ignoring the tool cache `{id}` in cache {location}: {why}; `{}` starts without it",
                task.name
            ),
        });
    }
    let (remote, doc) = lookup.found?;
    if !ctx.cache.layers().has(&doc.entry.layer) {
        let _ = ctx.run_dir.note_layer(&doc.entry.layer);
        if let Err(e) = crate::fetch::fetch(
            ctx.shared,
            ctx.cache,
            remote,
            &doc.entry,
            &ctx.pipeline_id(),
            crate::layer_images::restore_as_images(ctx, reporter),
            &|_| {},
        ) {
            reporter.event(&Event::Warning {
                message: format!(
                    "`{}` starts without its tool cache `{id}`: {}",
                    task.name,
                    strata_store::error_chain(&e)
                ),
            });
            return None;
        }
    }
    let record = ToolCacheRecord {
        id: id.clone(),
        task: doc.entry.task.clone(),
        layer: doc.entry.layer,
        written_ms: doc.written_ms,
    };
    // Only saves a download next time: without it the tool cache is still used now.
    let _ = ctx.cache.tool_caches().write(&record);
    Some(record)
}

/// After the task succeeded and committed `layer`: the tool cache now holds it. A failure to
/// record is a warning; the run's result stands.
pub(crate) fn save(
    ctx: &RunContext<'_>,
    task: &Task,
    resolved: &ResolvedInputs,
    layer: &LayerDigest,
    reporter: &dyn Reporter,
) -> Option<ToolCacheRecord> {
    let id = resolved.tool_cache.clone()?;
    // In the run's lease before the record names it, for a concurrent prune.
    let _ = ctx.run_dir.note_layer(layer);
    match ctx.cache.tool_caches().set(&id, task.name.as_str(), layer) {
        Ok(record) => {
            reporter.event(&Event::ToolCacheSaved {
                task: task.name.to_string(),
                tool_cache: id.to_string(),
                layer: layer.to_hex(),
            });
            Some(record)
        }
        Err(e) => {
            reporter.event(&Event::Warning {
                message: format!(
                    "could not save `{}`'s tool cache `{id}`: {}",
                    task.name,
                    strata_store::error_chain(&e)
                ),
            });
            None
        }
    }
}

/// After the task's entry was published: the writable shared caches' tool cache names it.
pub(crate) fn publish(
    ctx: &RunContext<'_>,
    task: &str,
    key: CacheKey,
    record: &ToolCacheRecord,
    reporter: &dyn Reporter,
    warn: &(dyn Fn(&strata_cache::BackendError) + Sync),
) {
    let caches = ctx
        .shared
        .publish_tool_cache(&record.id, &key, record.written_ms, warn);
    if caches > 0 {
        reporter.event(&Event::ToolCachePushed {
            task: task.to_string(),
            tool_cache: record.id.to_string(),
            caches,
        });
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The paths of the task's workspace view, relative to the layer root (`workspace/...`): files,
/// and the directories that hold them.
struct CheckoutPaths {
    files: HashSet<String>,
    dirs: HashSet<String>,
}

impl CheckoutPaths {
    fn of(resolved: &ResolvedInputs) -> CheckoutPaths {
        CheckoutPaths::from_workspace_paths(resolved.tree.files.iter().map(|f| &*f.path))
    }

    /// From the paths of the view's files, relative to the workspace.
    fn from_workspace_paths<'a>(paths: impl Iterator<Item = &'a str>) -> CheckoutPaths {
        let root = crate::inputs::WORKSPACE_DIR.trim_start_matches('/');
        let mut files = HashSet::new();
        let mut dirs = HashSet::from([root.to_string()]);
        for f in paths {
            let path = format!("{root}/{f}");
            let mut dir = path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if !dirs.insert(parent.to_string()) {
                    break;
                }
                dir = parent;
            }
            files.insert(path);
        }
        CheckoutPaths { files, dirs }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("failed to copy {path}")]
pub(crate) struct CopyError {
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

fn copy_tree(
    src: &Path,
    dst: &Path,
    rel: &str,
    checkout: &CheckoutPaths,
    seeded: &mut Seeded,
) -> Result<(), CopyError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CopyError { path, source }
    };
    for entry in std::fs::read_dir(src).map_err(err(src))? {
        let entry = entry.map_err(err(src))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let from = entry.path();
        let to = dst.join(name);
        let meta = std::fs::symlink_metadata(&from).map_err(err(&from))?;
        let kind = meta.file_type();
        // The checkout wins over what the tool cache has at its paths.
        if checkout.files.contains(&rel) || (checkout.dirs.contains(&rel) && !kind.is_dir()) {
            continue;
        }
        if kind.is_dir() {
            match std::fs::create_dir(&to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(&to)(e)),
            }
            copy_tree(&from, &to, &rel, checkout, seeded)?;
            std::fs::set_permissions(&to, meta.permissions()).map_err(err(&to))?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(err(&from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(err(&to))?;
        } else if kind.is_file() {
            // `copy_file_range`: a reflink where the filesystem can (btrfs, XFS).
            std::fs::copy(&from, &to).map_err(err(&to))?;
            seeded.bytes += meta.len();
        } else {
            // Whiteouts (character devices 0:0) and anything else special are not carried
            // over: a deletion by the previous execution does not hide today's lower files.
            let _ = kind.is_char_device();
            continue;
        }
        copy_owner_and_times(&from, &to, &meta).map_err(err(&to))?;
        seeded.files += 1;
    }
    Ok(())
}

/// Owner, extended attributes (file capabilities; never overlay's own) and times, as the
/// tool cache's layer has them: cargo and make compare the mtimes of their outputs.
fn copy_owner_and_times(from: &Path, to: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Gid, Timespec, Timestamps, Uid};
    // Only root may give files away; a rootless run keeps its own files.
    match rustix::fs::chownat(
        CWD,
        to,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(()) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    if !meta.file_type().is_symlink() {
        let mut names = vec![0u8; 4096];
        if let Ok(n) = rustix::fs::llistxattr(from, &mut names) {
            for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
                if name.starts_with(b"trusted.overlay.") {
                    continue;
                }
                let Ok(name) = std::ffi::CString::new(name) else {
                    continue;
                };
                let mut value = vec![0u8; 65536];
                if let Ok(len) = rustix::fs::lgetxattr(from, name.as_c_str(), &mut value) {
                    let _ = rustix::fs::lsetxattr(
                        to,
                        name.as_c_str(),
                        &value[..len],
                        rustix::fs::XattrFlags::empty(),
                    );
                }
            }
        }
        // chown drops set-id bits: the mode again.
        std::fs::set_permissions(to, meta.permissions())?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn seeding_copies_the_tool_cache_except_the_checkout_and_special_files() {
        let layer = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let l = layer.path();
        write(l, "workspace/target/debug/app", "built");
        write(l, "workspace/src/lib.rs", "stale source");
        write(l, "workspace/generated.rs", "generated");
        write(
            l,
            "workspace/Cargo.toml/odd",
            "a directory where the checkout has a file",
        );
        write(l, "opt/tool/bin", "tool");
        std::os::unix::fs::symlink("bin", l.join("opt/tool/link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            l.join("opt/tool/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // An old mtime, which the copy keeps (cargo compares it with the sources').
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(l.join("workspace/target/debug/app"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let checkout =
            CheckoutPaths::from_workspace_paths(["src/lib.rs", "Cargo.toml"].into_iter());
        let mut seeded = Seeded::default();
        copy_tree(l, upper.path(), "", &checkout, &mut seeded).unwrap();
        let u = upper.path();
        let app = u.join("workspace/target/debug/app");
        assert_eq!(std::fs::read_to_string(&app).unwrap(), "built");
        assert_eq!(std::fs::metadata(&app).unwrap().mtime(), 1_000_000_000);
        assert_ne!(
            std::fs::metadata(&app).unwrap().ino(),
            std::fs::metadata(l.join("workspace/target/debug/app"))
                .unwrap()
                .ino(),
            "a copy, never a link into the layer"
        );
        assert_eq!(
            std::fs::read_to_string(u.join("workspace/generated.rs")).unwrap(),
            "generated"
        );
        assert!(
            !u.join("workspace/src/lib.rs").exists(),
            "the checkout wins"
        );
        assert!(
            !u.join("workspace/Cargo.toml").exists(),
            "the checkout's file wins"
        );
        assert_eq!(
            std::fs::read_link(u.join("opt/tool/link")).unwrap(),
            Path::new("bin")
        );
        assert!(
            !u.join("opt/tool/fifo").exists(),
            "special files are not carried"
        );
        assert_eq!(
            seeded.bytes,
            "built".len() as u64 + "generated".len() as u64 + 4
        );
    }
}
