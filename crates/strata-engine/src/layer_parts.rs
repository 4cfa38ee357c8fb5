//! What a used task wrote into the workspace, as a filtered child sees it. A committed layer
//! splits into its *system* part (everything but `workspace/`) and its *workspace* part. A task
//! with a `filter` sees the workspace parts of the layers under it only through its filter: its
//! `/workspace` is the overlay merge of the captured files it sees and of each layer's workspace
//! part, bottom first (whiteouts and opaque directories applied), keeping only the paths its
//! filter selects. Its key takes, for such a layer, the digest of the system part instead of the
//! whole layer, and the merged, filtered `/workspace` as its workspace input: what it sees and
//! nothing else (docs/cache-key.md).
//!
//! The split of a layer is computed once per machine and kept beside the cache
//! (`layer-parts/<layer>.json`), and so is its workspace part narrowed for each filter that
//! reads it (`layer-parts/<layer>.<filter>.json`: what can matter to that filter, usually a
//! small part of a large `node_modules`): layers are immutable, so neither goes stale.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strata_key::{FileId, FileKind, LayerDigest, WorkspaceFile};
use strata_pipeline::{Filter, Visibility};
use strata_store::LocalCache;

use crate::sources::VisibleFile;
use crate::workspace_tree::Origin;

/// The directory of a layer that is the task's `/workspace`.
const WORKSPACE: &str = "workspace";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerParts {
    /// The tree digest of the layer without `workspace/`.
    pub(crate) system: LayerDigest,
    /// Every entry under `workspace/` (paths relative to it, `""` for `workspace` itself), in
    /// walk order: a directory before its contents.
    pub(crate) workspace: Vec<PartEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartEntry {
    pub(crate) path: String,
    pub(crate) mode: u32,
    pub(crate) kind: PartKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PartKind {
    File {
        /// The git blob id, as for a captured workspace file: a file a used task wrote and the
        /// same bytes in the checkout are the same input.
        digest: FileId,
        size: u64,
    },
    Symlink {
        target: String,
    },
    Dir {
        opaque: bool,
    },
    /// An overlay whiteout: the path was deleted.
    Whiteout,
    /// A fifo, socket or device: not part of a workspace view.
    Other,
}

/// The splits of the layers of one run, read from (or written to) the cache's memo.
/// A layer's parts (`None`: it wrote nothing under `/workspace`).
type Parts = Option<Arc<LayerParts>>;

/// Layers (with their directory) and their workspace parts, bottom first.
pub(crate) type LayersWithParts = Vec<(PathBuf, Arc<LayerParts>)>;

#[derive(Default)]
pub(crate) struct LayerPartsCache {
    memo: Mutex<HashMap<LayerDigest, Parts>>,
    /// By layer and filter fingerprint.
    narrowed: Mutex<HashMap<(LayerDigest, String), Parts>>,
    /// Layers not here yet whose shared entry says they wrote nothing under `/workspace`
    /// (`EntryDocument::writes_workspace`): a filtered child's key takes them whole without
    /// waiting for their download. Each claim is checked when its layer is here
    /// ([`LayerPartsCache::check_claim`], on every wait for a layer) and then forgotten.
    claimed_bare: Mutex<HashSet<LayerDigest>>,
}

/// A name for what a filter is (its entries and whether each is keyed).
fn fingerprint(filter: &Filter) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"strata-filter-v1\0");
    for (text, keyed) in filter.entries() {
        h.update(text.as_bytes());
        h.update(if keyed { b"\0k\0" } else { b"\0x\0" });
    }
    h.finalize().to_hex()[..32].to_string()
}

/// The entries of a workspace part that can change what `filter` shows: visible files and
/// links, whiteouts, opaque directories and files that may hide something visible under them,
/// and directories at visible paths (they replace a visible file below). [`merged_view`] gives
/// the same view from these as from all entries.
pub(crate) fn narrow(parts: &LayerParts, filter: &Filter) -> LayerParts {
    let workspace = parts
        .workspace
        .iter()
        .filter(|e| match e.kind {
            PartKind::Dir { opaque: false } => filter.matches(&e.path),
            _ => filter.matches(&e.path) || filter.may_select_under(&e.path),
        })
        .cloned()
        .collect();
    LayerParts {
        system: parts.system,
        workspace,
    }
}

impl LayerPartsCache {
    /// A shared cache's entry says `layer` has no `workspace/` directory.
    pub(crate) fn claim_bare(&self, layer: LayerDigest) {
        self.claimed_bare.lock().expect("claims lock").insert(layer);
    }

    /// Whether `layer` may be taken as having no workspace part before it is here: it is not
    /// here, and its entry said so.
    pub(crate) fn bare_before_arrival(&self, cache: &LocalCache, layer: &LayerDigest) -> bool {
        self.claimed_bare
            .lock()
            .expect("claims lock")
            .contains(layer)
            && !cache.layers().has(layer)
    }

    /// Checks what the entry of `layer` (here now) said of its workspace part. A layer that
    /// has one after all fails every task that waits for it: keys computed from the claim are
    /// not the keys of what the tasks would see.
    pub(crate) fn check_claim(
        &self,
        cache: &LocalCache,
        layer: &LayerDigest,
    ) -> Result<(), String> {
        if !self
            .claimed_bare
            .lock()
            .expect("claims lock")
            .contains(layer)
        {
            return Ok(());
        }
        match std::fs::symlink_metadata(cache.layers().path(layer).join(WORKSPACE)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.claimed_bare.lock().expect("claims lock").remove(layer);
                Ok(())
            }
            Ok(_) => Err(format!(
                "the shared cache's entry of layer {} says it wrote nothing under /workspace, but \
                 it did: the keys of the filtered tasks on it were computed from a false claim",
                layer.short()
            )),
            Err(e) => Err(format!("failed to read layer {}: {e}", layer.short())),
        }
    }

    /// The layer's parts narrowed for `filter` (see [`narrow`]), or `None` when it wrote
    /// nothing under `/workspace`.
    pub(crate) fn narrowed(
        &self,
        cache: &LocalCache,
        layer: LayerDigest,
        filter: &Filter,
    ) -> Result<Option<Arc<LayerParts>>, String> {
        let fp = fingerprint(filter);
        let key = (layer, fp);
        if let Some(p) = self.narrowed.lock().expect("memo lock").get(&key) {
            return Ok(p.clone());
        }
        let parts = match wrote_workspace(cache, &layer)? {
            None => None,
            Some(_) => {
                let memo = memo_path(cache, &format!("{}.{}", layer.to_hex(), key.1));
                Some(Arc::new(read_or_make(&memo, || {
                    let whole = self.get(cache, layer)?.ok_or_else(|| {
                        format!("layer {} changed while being read", layer.short())
                    })?;
                    Ok(narrow(&whole, filter))
                })?))
            }
        };
        self.narrowed
            .lock()
            .expect("memo lock")
            .insert(key, parts.clone());
        Ok(parts)
    }

    /// The layer's parts, or `None` when it wrote nothing under `/workspace`.
    pub(crate) fn get(
        &self,
        cache: &LocalCache,
        layer: LayerDigest,
    ) -> Result<Option<Arc<LayerParts>>, String> {
        if let Some(p) = self.memo.lock().expect("memo lock").get(&layer) {
            return Ok(p.clone());
        }
        let parts = match wrote_workspace(cache, &layer)? {
            None => None,
            Some(dir) => Some(Arc::new(read_or_make(
                &memo_path(cache, &layer.to_hex()),
                || split(&dir).map_err(|e| format!("failed to read layer {}: {e}", layer.short())),
            )?)),
        };
        self.memo
            .lock()
            .expect("memo lock")
            .insert(layer, parts.clone());
        Ok(parts)
    }
}

/// Best effort: a memo that cannot be written is computed again next time.
/// The layer's directory when it wrote under `/workspace`, `None` when it did not; an error
/// when it is not in the local cache.
fn wrote_workspace(cache: &LocalCache, layer: &LayerDigest) -> Result<Option<PathBuf>, String> {
    let dir = cache.layers().path(layer);
    if std::fs::symlink_metadata(dir.join(WORKSPACE)).is_ok() {
        Ok(Some(dir))
    } else if dir.is_dir() {
        Ok(None)
    } else {
        Err(format!("layer {} is not in the local cache", layer.short()))
    }
}

/// Where the parts memo `name` of a layer is kept on disk.
fn memo_path(cache: &LocalCache, name: &str) -> PathBuf {
    cache
        .root()
        .join("layer-parts")
        .join(format!("{name}.json"))
}

/// The parts kept in `memo`, or made by `make` and kept there.
fn read_or_make(
    memo: &Path,
    make: impl FnOnce() -> Result<LayerParts, String>,
) -> Result<LayerParts, String> {
    let read = std::fs::read(memo)
        .ok()
        .and_then(|b| serde_json::from_slice::<LayerParts>(&b).ok());
    match read {
        Some(p) => Ok(p),
        None => {
            let p = make()?;
            write_memo(memo, &p);
            Ok(p)
        }
    }
}

fn write_memo(path: &Path, parts: &LayerParts) {
    let Some(dir) = path.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("memo"),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let bytes = serde_json::to_vec(parts).expect("parts serialize");
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Splits the layer directory `dir`.
pub(crate) fn split(dir: &Path) -> Result<LayerParts, String> {
    let system = strata_key::tree_digest_without(dir, WORKSPACE).map_err(|e| e.to_string())?;
    let mut workspace = Vec::new();
    walk(&dir.join(WORKSPACE), "", &mut workspace)?;
    Ok(LayerParts { system, workspace })
}

fn walk(path: &Path, rel: &str, out: &mut Vec<PartEntry>) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ft = meta.file_type();
    let mode = meta.mode() & 0o7777;
    let kind = if ft.is_dir() {
        let mut value = [0u8; 4];
        let opaque = matches!(
            rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut value),
            Ok(1) if value[0] == b'y'
        );
        PartKind::Dir { opaque }
    } else if ft.is_file() {
        PartKind::File {
            digest: strata_key::file_id(path).map_err(|e| e.to_string())?,
            size: meta.len(),
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| format!("{}: {e}", path.display()))?;
        PartKind::Symlink {
            target: target.to_string_lossy().into_owned(),
        }
    } else if ft.is_char_device() && meta.rdev() == 0 {
        PartKind::Whiteout
    } else {
        PartKind::Other
    };
    let is_dir = matches!(kind, PartKind::Dir { .. });
    out.push(PartEntry {
        path: rel.to_string(),
        mode,
        kind,
    });
    if is_dir {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        names.sort();
        for name in names {
            let name = name.to_string_lossy();
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            walk(&path.join(&*name), &child, out)?;
        }
    }
    Ok(())
}

/// The `/workspace` a task with `filter` sees: `captured` (the checkout's files it sees) under
/// the workspace parts of `layers` (bottom first, each with its directory), merged as overlayfs
/// merges them, and only the paths `filter` selects. Sorted by path.
pub(crate) fn merged_view(
    captured: Vec<VisibleFile>,
    layers: &[(PathBuf, Arc<LayerParts>)],
    filter: &Filter,
) -> Vec<VisibleFile> {
    let mut view: BTreeMap<String, VisibleFile> = captured
        .into_iter()
        .map(|v| (v.file.path.to_string(), v))
        .collect();
    let remove_under = |view: &mut BTreeMap<String, VisibleFile>, path: &str| {
        if path.is_empty() {
            view.clear();
            return;
        }
        let prefix = format!("{path}/");
        let doomed: Vec<String> = view
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            view.remove(&k);
        }
    };
    for (dir, parts) in layers {
        // What a layer deletes or makes opaque hides what is below it, not its own entries.
        for e in &parts.workspace {
            match e.kind {
                PartKind::Whiteout => {
                    view.remove(&e.path);
                    remove_under(&mut view, &e.path);
                }
                PartKind::Dir { opaque: true } => remove_under(&mut view, &e.path),
                // A directory replaces a file or link of the same path below it.
                PartKind::Dir { opaque: false } => {
                    view.remove(&e.path);
                }
                _ => {}
            }
        }
        for e in &parts.workspace {
            let kind = match &e.kind {
                PartKind::File { digest, size } => FileKind::File {
                    digest: *digest,
                    size: *size,
                },
                PartKind::Symlink { target } => FileKind::Symlink {
                    target: target.clone(),
                },
                // A fifo or a device is not a workspace file: it hides what was there.
                PartKind::Other => {
                    view.remove(&e.path);
                    continue;
                }
                _ => continue,
            };
            // A file replaces a directory below it (and whatever was in it), and a file below
            // it at one of its ancestors.
            remove_under(&mut view, &e.path);
            let mut ancestor = e.path.as_str();
            while let Some((up, _)) = ancestor.rsplit_once('/') {
                view.remove(up);
                ancestor = up;
            }
            let keyed = match filter.visibility(&e.path) {
                Visibility::Hidden => {
                    view.remove(&e.path);
                    continue;
                }
                Visibility::Keyed => true,
                Visibility::Unkeyed => false,
            };
            view.insert(
                e.path.clone(),
                VisibleFile {
                    file: WorkspaceFile {
                        path: e.path.as_str().into(),
                        mode: e.mode,
                        kind,
                    },
                    origin: Origin::Layer(dir.join(WORKSPACE).join(&e.path)),
                    keyed,
                },
            );
        }
    }
    view.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> PartEntry {
        PartEntry {
            path: path.into(),
            mode: 0o644,
            kind: PartKind::File {
                digest: FileId::of_bytes(content.as_bytes(), Path::new(path)).unwrap(),
                size: content.len() as u64,
            },
        }
    }

    fn entry(path: &str, kind: PartKind) -> PartEntry {
        PartEntry {
            path: path.into(),
            mode: 0o755,
            kind,
        }
    }

    fn captured(path: &str) -> VisibleFile {
        VisibleFile {
            file: WorkspaceFile {
                path: path.into(),
                mode: 0o644,
                kind: FileKind::File {
                    digest: FileId::of_bytes(path.as_bytes(), Path::new(path)).unwrap(),
                    size: 1,
                },
            },
            origin: Origin::Captured(path.into()),
            keyed: true,
        }
    }

    fn layer(entries: Vec<PartEntry>) -> (PathBuf, Arc<LayerParts>) {
        (
            PathBuf::from("/layers/x"),
            Arc::new(LayerParts {
                system: LayerDigest::from_hash(blake3::hash(b"sys")),
                workspace: entries,
            }),
        )
    }

    fn paths(view: &[VisibleFile]) -> Vec<String> {
        view.iter()
            .map(|v| format!("{}{}", v.file.path, if v.keyed { "" } else { " (unkeyed)" }))
            .collect()
    }

    #[test]
    fn layers_merge_as_overlay_does_through_the_filter() {
        let filter = Filter::with_entries(&[
            strata_pipeline::FilterEntry {
                pattern: "src".into(),
                keyed: true,
                at: Default::default(),
            },
            strata_pipeline::FilterEntry {
                pattern: "dist".into(),
                keyed: true,
                at: Default::default(),
            },
            strata_pipeline::FilterEntry {
                pattern: "dist/stamp".into(),
                keyed: false,
                at: Default::default(),
            },
        ])
        .unwrap();
        let lower = layer(vec![
            entry("", PartKind::Dir { opaque: false }),
            entry("dist", PartKind::Dir { opaque: false }),
            file("dist/old.js", "old"),
            file("dist/stamp", "1"),
            file("notes.txt", "outside the filter"),
            entry("src", PartKind::Dir { opaque: false }),
            entry("src/gone.c", PartKind::Whiteout),
        ]);
        let upper = layer(vec![
            entry("", PartKind::Dir { opaque: false }),
            entry("dist", PartKind::Dir { opaque: true }),
            file("dist/new.js", "new"),
            file("dist/stamp", "2"),
        ]);
        let view = merged_view(
            vec![captured("src/gone.c"), captured("src/main.c")],
            &[lower, upper],
            &filter,
        );
        assert_eq!(
            paths(&view),
            ["dist/new.js", "dist/stamp (unkeyed)", "src/main.c"]
        );
        assert!(
            matches!(&view[0].origin, Origin::Layer(p) if p.ends_with("workspace/dist/new.js"))
        );
    }

    #[test]
    fn a_file_replaces_a_directory_and_the_other_way_round() {
        let filter = Filter::new(&["**"]).unwrap();
        let view = merged_view(
            vec![captured("a/x"), captured("b")],
            &[layer(vec![
                file("a", "now a file"),
                entry("b", PartKind::Dir { opaque: false }),
                file("b/y", "y"),
            ])],
            &filter,
        );
        assert_eq!(paths(&view), ["a", "b/y"]);
    }

    #[test]
    fn narrowed_parts_give_the_same_view() {
        let filter = Filter::new(&["src/**/*.c", "dist", "!dist/tmp"]).unwrap();
        let lower = layer(vec![
            entry("", PartKind::Dir { opaque: false }),
            entry("dist", PartKind::Dir { opaque: false }),
            file("dist/a.js", "a"),
            file("dist/tmp", "t"),
            entry("node_modules", PartKind::Dir { opaque: false }),
            file("node_modules/x.js", "x"),
            entry("src", PartKind::Dir { opaque: false }),
            entry("src/gen", PartKind::Dir { opaque: false }),
            file("src/gen/g.c", "g"),
        ]);
        let upper = layer(vec![
            entry("", PartKind::Dir { opaque: false }),
            file("src/gen", "a file where a directory was"),
            entry("node_modules", PartKind::Whiteout),
            file("notes.txt", "n"),
        ]);
        let captured = || vec![captured("src/main.c"), captured("src/gen/old.c")];
        let whole = merged_view(captured(), &[lower.clone(), upper.clone()], &filter);
        let narrowed: Vec<(PathBuf, Arc<LayerParts>)> = [lower, upper]
            .into_iter()
            .map(|(d, p)| (d, Arc::new(narrow(&p, &filter))))
            .collect();
        let small = merged_view(captured(), &narrowed, &filter);
        assert_eq!(paths(&whole), paths(&small));
        assert_eq!(paths(&small), ["dist/a.js", "src/main.c"]);
        assert!(
            narrowed[0]
                .1
                .workspace
                .iter()
                .all(|e| !e.path.starts_with("node_modules/"))
        );
        assert!(narrowed[1].1.workspace.iter().any(|e| e.path == "src/gen"));
        assert!(
            narrowed[1]
                .1
                .workspace
                .iter()
                .all(|e| e.path != "notes.txt")
        );
    }

    #[test]
    fn split_reads_whiteouts_and_opaque_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("workspace");
        std::fs::create_dir_all(ws.join("out")).unwrap();
        std::fs::write(ws.join("out/a"), "a").unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/conf"), "c").unwrap();
        let parts = split(dir.path()).unwrap();
        let kinds: Vec<(&str, bool)> = parts
            .workspace
            .iter()
            .map(|e| (e.path.as_str(), matches!(e.kind, PartKind::File { .. })))
            .collect();
        assert_eq!(kinds, [("", false), ("out", false), ("out/a", true)]);
        // The system part does not change with the workspace part.
        std::fs::write(ws.join("out/a"), "changed").unwrap();
        assert_eq!(split(dir.path()).unwrap().system, parts.system);
    }
}
