//! A task's `/workspace` served from the checkout itself, not copied into the cache first.
//!
//! A workspace tree (`workspace_tree.rs`) costs one blob and one link per file the task sees:
//! on the empty cache of a fresh CI machine, seconds for a 100k-file repository, every file
//! copied once more than the clone already wrote it. Instead, when the files a task sees all
//! come from the checkout, its `/workspace` (or `/workspace/<path>` of a clone with a `path`) is
//! a second overlay, mounted over the root overlay's, whose lowers are the used layers' own
//! `workspace/` directories, then a *mask*, then the checkout directory. The mask holds a
//! whiteout for every entry of the checkout the task must not see (`.git`, ignored files, files
//! its filter leaves out, empty directories), found by reading only the directories that hold
//! files it sees; its upper dir is the task's `upper/workspace/<path>`, so what the task
//! writes there is in its layer exactly as before.
//!
//! The tree was a snapshot; the checkout is not. So after the task, every file it was shown is
//! stat'ed again against what the capture found (inode, size, mode, mtime, ctime), and every
//! directory the mask was built from is checked for new entries: if anything changed, the task
//! saw other files than its key names, and its result is used by this run but not cached.
//!
//! When `strata watch` answered the run's capture, that check asks it instead: what changed
//! since the answer the capture was made at. Nothing the task was shown, and no directory the
//! mask was built from, named: nothing changed, and only files with other hard links (a write
//! through another name is no event here) are looked at again. Anything else does the whole
//! check: a path that matters named; a directory named (its files may have been written before
//! its watch was set up); a named file elsewhere with other hard links, or gone (a new name
//! for a shown file, written through, perhaps removed since); a task shown `.git`, inside which
//! the watcher does not look; no answer, another watcher, another directory. A watcher that
//! gave no usable answer is not asked again in the run.
//!
//! Only where it is exact: every visible file comes from the checkout (no used task wrote into
//! the workspace through a filter: that needs the merged tree), files and directories are owned
//! by strata's own user and group (as blobs are: a layer's owners must not depend on who cloned),
//! the cache does not live inside the checkout (overlapping layers), and no used layer hides the
//! checkout (a whiteout, a file or an opaque directory on the way to `/workspace/<path>`).
//! Anything else takes the tree. `STRATA_WORKSPACE_TREE=1` forces the tree.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags};
use strata_key::{Seen, Workspace, WorkspaceFile};
use strata_pipeline::Task;
use strata_sandbox::{IdMappedLower, OverlayMount};

use crate::context::RunContext;
use crate::inputs::ResolvedInputs;
use crate::workspace_tree::Origin;

/// How a task's `/workspace` comes from the checkout (see the module's documentation).
#[derive(Debug)]
pub(crate) struct CheckoutView {
    /// The checkout directory: the captured workspace's root.
    pub(crate) root: PathBuf,
    /// Where the checkout appears below `/workspace`: empty, or a clone's `path` with a
    /// trailing `/`.
    pub(crate) prefix: String,
    /// The lower dir of whiteouts just above the checkout.
    pub(crate) mask: PathBuf,
    /// The owner of the checkout's files when it is not strata's user: they are shown as
    /// strata's through an idmapped mount.
    owner: Option<(u32, u32)>,
    /// Each visible file: its path in the checkout, and how the capture found it.
    files: Vec<(Arc<str>, Seen)>,
    /// Each directory the mask was built from, as it was then.
    dirs: Vec<DirSeen>,
}

/// A directory of the checkout as the mask saw it.
#[derive(Debug)]
struct DirSeen {
    /// Relative to the checkout ("" for its root).
    rel: String,
    stamp: (u64, (i64, u32), (i64, u32)),
}

/// Where `strata watch` answered the run's capture, and what its later answers must match to
/// speak of the same directory.
#[derive(Debug)]
pub(crate) struct WatchedCapture {
    pub(crate) socket: PathBuf,
    /// The answer the capture was made at (or after).
    pub(crate) token: strata_key::WatchToken,
    pub(crate) root: (u64, u64),
    pub(crate) mount_ns: u64,
    /// The captured files with other hard links, in path order.
    pub(crate) linked: Vec<Arc<str>>,
    /// The watcher gave no answer it could vouch with: the tasks after do not ask again (a
    /// stuck one would cost each of them the wait).
    pub(crate) failed: std::sync::atomic::AtomicBool,
}

/// How a task's check of the checkout was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Every file shown and every directory of the mask looked at again.
    Stat,
    /// From the watcher's answer (and the files with other hard links looked at).
    Watcher,
}

/// What keeps a task from being given the checkout; the task gets a tree instead.
#[derive(Debug)]
pub(crate) struct NotExact(pub(crate) String);

impl CheckoutView {
    /// The view of `files` (each from `origins`), with its mask built under `dir`; `Err` when
    /// the checkout cannot be shown exactly (the caller builds a tree).
    pub(crate) fn build(
        workspace: &Workspace,
        files: &[WorkspaceFile],
        origins: &[Origin],
        cache_root: &Path,
        dir: &Path,
    ) -> Result<CheckoutView, NotExact> {
        if std::env::var_os("STRATA_WORKSPACE_TREE").is_some_and(|v| v != "0") {
            return Err(NotExact("STRATA_WORKSPACE_TREE is set".into()));
        }
        let root = workspace.root.clone();
        if overlaps(&root, cache_root) {
            return Err(NotExact("the cache lives inside the checkout".into()));
        }
        let fs = filesystem(&root)?;
        if workspace.seen.len() != workspace.files.len() {
            return Err(NotExact("the capture did not stat its files".into()));
        }
        // One owner for everything shown: strata's own, or another user's (the CI's, who
        // cloned), then shown as strata's through an idmapped mount.
        let owner = match rustix::fs::stat(&root) {
            Ok(st) => (st.st_uid, st.st_gid),
            Err(e) => return Err(NotExact(format!("{}: {e}", root.display()))),
        };
        let mut prefix: Option<String> = None;
        let mut shown = Vec::with_capacity(files.len());
        for (f, origin) in files.iter().zip(origins) {
            let Origin::Captured(origin) = origin else {
                return Err(NotExact("a used task wrote into the workspace".into()));
            };
            let Some(p) = f.path.strip_suffix(&**origin) else {
                return Err(NotExact("files from more than one place".into()));
            };
            match &prefix {
                None => prefix = Some(p.to_string()),
                Some(q) if q == p => {}
                Some(_) => return Err(NotExact("files from more than one place".into())),
            }
            let seen = workspace
                .files
                .binary_search_by(|c| (*c.path).cmp(origin))
                .ok()
                .and_then(|i| workspace.seen.get(i))
                .ok_or_else(|| NotExact(format!("{origin} was not captured")))?;
            if (seen.uid, seen.gid) != owner {
                return Err(NotExact(format!(
                    "{origin} is owned by {}:{}, the checkout by {}:{}",
                    seen.uid, seen.gid, owner.0, owner.1
                )));
            }
            shown.push((origin.clone(), *seen));
        }
        let prefix = prefix.unwrap_or_default();
        let dirs = build_mask(&root, &shown, dir, owner)?;
        let ours = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        if owner != ours && !fs.idmaps {
            return Err(NotExact(format!(
                "the checkout is owned by {}:{} on a {} file system, which cannot show it as \
                 strata's",
                owner.0, owner.1, fs.name
            )));
        }
        Ok(CheckoutView {
            owner: (owner != ours).then_some(owner),
            root,
            prefix,
            mask: dir.to_path_buf(),
            files: shown,
            dirs,
        })
    }

    /// `/workspace/<prefix>` inside the task, relative to its root (`workspace` or
    /// `workspace/<path>`).
    pub(crate) fn mount_point(&self) -> PathBuf {
        PathBuf::from("workspace").join(self.prefix.trim_end_matches('/'))
    }

    /// The lower dirs of the `/workspace` overlay, top first: from each of the root overlay's
    /// lower dirs `above` the checkout (top first) and `below` it, its directory at the mount
    /// point; the mask and the checkout between. `Err` when a layer hides the checkout.
    pub(crate) fn overlay(
        &self,
        above: &[PathBuf],
        below: &[PathBuf],
        upperdir: PathBuf,
        workdir: PathBuf,
    ) -> Result<OverlayMount, NotExact> {
        let point = self.mount_point();
        let mut out = Vec::with_capacity(above.len() + below.len() + 2);
        for lower in above {
            out.extend(part_at(lower, &point)?);
        }
        out.push(self.mask.clone());
        let idmapped = self
            .owner
            .map(|(uid, gid)| IdMappedLower {
                lower: out.len(),
                uid,
                gid,
            })
            .into_iter()
            .collect();
        out.push(self.root.clone());
        for lower in below {
            // A base whose `/workspace` is the checkout (or holds it) adds nothing it shows.
            if let Some(p) = part_at(lower, &point)?
                && !overlaps(&p, &self.root)
            {
                out.push(p);
            }
        }
        Ok(OverlayMount {
            target: point,
            lowerdirs: out,
            upperdir,
            workdir,
            idmapped,
        })
    }

    /// What of the checkout changed since the capture, among what the task was shown: `None`
    /// when nothing did; asked of the watcher where it can say (see the module's notes).
    pub(crate) fn changed_since_capture(
        &self,
        watch: Option<&WatchedCapture>,
    ) -> (Option<String>, Checked) {
        match watch.and_then(|w| self.changed_by_watch(w)) {
            Some(changed) => (changed, Checked::Watcher),
            None => (self.changed_by_stat(), Checked::Stat),
        }
    }

    /// The watcher's word: `Some(None)` when nothing shown changed, `Some(Some(_))` when a file
    /// with other hard links did; `None` when it cannot say, or names something that matters
    /// (then the whole check says what).
    fn changed_by_watch(&self, watch: &WatchedCapture) -> Option<Option<String>> {
        use rustix::fs::FileType;
        use std::sync::atomic::Ordering;
        // The watcher does not look inside `.git` (but at `.git` itself and its `info/`): a task
        // shown the repository (`preserve-git-dir`) gets the whole check.
        if watch.failed.load(Ordering::Relaxed) || self.shows(".git") {
            return None;
        }
        let answer = strata_watch::ask(&watch.socket, Some(watch.token)).filter(|a| {
            a.root == watch.root
                && a.mount_ns == watch.mount_ns
                && strata_key::root_id(&self.root) == Some(watch.root)
        });
        let Some(changed) = answer.as_ref().and_then(|a| a.changed.as_ref()) else {
            watch.failed.store(true, Ordering::Relaxed);
            return None;
        };
        let dirs: HashSet<&str> = self.dirs.iter().map(|d| d.rel.as_str()).collect();
        for c in changed {
            let path = std::str::from_utf8(&c.path).ok()?;
            let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
            // A shown file, a directory on the way to one, or a name in a directory the mask
            // was built from; or a directory made, moved, removed or not watched (its files,
            // perhaps new names for shown ones, may have been written before its watch was set
            // up, or are never seen).
            if path.is_empty() || c.dir || self.shows(path) || dirs.contains(parent) {
                return None;
            }
            match rustix::fs::lstat(self.root.join(path)) {
                // A new name, elsewhere, for a file shown: a write through it changes that file
                // with no event where it is shown. Or a directory after all.
                Ok(st) => {
                    let kind = FileType::from_raw_mode(st.st_mode);
                    if kind == FileType::Directory
                        || (kind == FileType::RegularFile && st.st_nlink > 1)
                    {
                        return None;
                    }
                }
                // Gone: perhaps such a name, written through and removed (or moved away) since.
                // Not inside `.git`, where git's own lock files come and go.
                Err(_) if path != ".git" && !path.starts_with(".git/") => return None,
                Err(_) => {}
            }
        }
        // Few files have other names: each is looked up among those shown.
        let linked: Vec<(Arc<str>, Seen)> = watch
            .linked
            .iter()
            .filter_map(|p| {
                let i = self.files.binary_search_by(|(f, _)| f.cmp(p)).ok()?;
                Some(self.files[i].clone())
            })
            .collect();
        Some(self.changed_file(&linked))
    }

    /// Every file shown stat'ed again (on all CPUs), and every directory of the mask.
    fn changed_by_stat(&self) -> Option<String> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = self.files.len().div_ceil(threads).max(1024);
        let changed = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .files
                .chunks(chunk)
                .map(|part| s.spawn(move || self.changed_file(part)))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().expect("stat thread panicked"))
                .next()
        });
        if changed.is_some() {
            return changed;
        }
        for d in &self.dirs {
            let gone = || Some(format!("{}/ is gone", d.rel));
            let Ok(fd) = open_dir(&self.root.join(&d.rel)) else {
                return gone();
            };
            let Ok(st) = rustix::fs::fstat(&fd) else {
                return gone();
            };
            if dir_stamp(&st) == d.stamp {
                continue;
            }
            let Ok(names) = read_names(fd) else {
                return gone();
            };
            // A name that is neither shown nor masked appeared since.
            let masked = self.mask.join(&d.rel);
            for name in names {
                let path = join(&d.rel, &name);
                if !self.shows(&path) && std::fs::symlink_metadata(masked.join(&name)).is_err() {
                    return Some(format!("{path} appeared"));
                }
            }
        }
        None
    }

    /// The first of `files` that is not as the capture found it.
    fn changed_file(&self, files: &[(Arc<str>, Seen)]) -> Option<String> {
        let mut dir: Option<(&str, OwnedFd)> = None;
        for (rel, seen) in files {
            let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            if dir.as_ref().is_none_or(|(p, _)| *p != parent) {
                let Ok(fd) = open_dir(&self.root.join(parent)) else {
                    return Some(format!("{parent}/ is gone"));
                };
                dir = Some((parent, fd));
            }
            let (_, fd) = dir.as_ref().expect("opened above");
            let now = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Seen::of_stat(&st),
                Err(_) => return Some(format!("{rel} is gone")),
            };
            let same = now.dev == seen.dev
                && now.ino == seen.ino
                && now.size == seen.size
                && now.mode == seen.mode
                && now.mtime == seen.mtime
                && now.ctime == seen.ctime;
            if !same {
                return Some(format!("{rel} changed"));
            }
        }
        None
    }

    /// Whether the checkout's `path` is a shown file or a directory on the way to one.
    fn shows(&self, path: &str) -> bool {
        if self
            .files
            .binary_search_by(|(p, _)| (**p).cmp(path))
            .is_ok()
        {
            return true;
        }
        // Not `path` itself: `path-x` sorts between `path` and `path/…`.
        let dir = format!("{path}/");
        let i = self.files.partition_point(|(p, _)| **p < *dir);
        self.files.get(i).is_some_and(|(p, _)| p.starts_with(&dir))
    }
}

/// A task's workspace as it is mounted: a tree among its lower dirs, or the checkout through an
/// overlay of its own.
pub(crate) struct WorkspaceMount {
    /// The root overlay's lower dirs, top first.
    pub(crate) lowerdirs: Vec<PathBuf>,
    pub(crate) overlays: Vec<OverlayMount>,
    /// The checkout view the task is given, to be checked once it has run.
    pub(crate) view: Option<Arc<CheckoutView>>,
    /// How: `checkout`, or `tree: <why not the checkout>`; `None` without workspace files.
    pub(crate) how: Option<String>,
    /// Directories made in the task's upper dir for the overlay's own upper dir, outermost
    /// first: not the task's doing, so removed again when it left them empty.
    made: Vec<PathBuf>,
}

impl WorkspaceMount {
    /// Gives the task of `resolved` its workspace: the checkout itself where that is exact,
    /// else a tree (`workspace_tree.rs`). `upper` is the task's upper dir, `scratch` its
    /// scratch directory.
    pub(crate) fn prepare(
        ctx: &RunContext<'_>,
        task: &Task,
        resolved: &ResolvedInputs,
        parents: &[PathBuf],
        upper: &Path,
        scratch: &Path,
    ) -> Result<WorkspaceMount, String> {
        let why_not = if resolved.tree.files.is_empty() {
            None
        } else if resolved.masked {
            Some("a used task wrote into the workspace".to_string())
        } else {
            match ctx.trees.checkout_view(ctx, &resolved.tree) {
                Err(why) => Some(why),
                Ok(view) => {
                    let (lowerdirs, above) = resolved.lowerdirs_around(ctx, task, None, parents)?;
                    let mut below = lowerdirs[above..].to_vec();
                    below.push(ctx.base_root.clone());
                    let overlay = view.overlay(
                        &lowerdirs[..above],
                        &below,
                        upper.join(view.mount_point()),
                        scratch.join("work-workspace"),
                    );
                    match overlay {
                        Err(NotExact(why)) => Some(why),
                        Ok(overlay) => return Self::checkout(view, lowerdirs, overlay, upper),
                    }
                }
            }
        };
        let tree = resolved.tree.materialize(ctx).map_err(|e| {
            format!(
                "failed to prepare the workspace: {}",
                strata_store::error_chain(&e)
            )
        })?;
        Ok(WorkspaceMount {
            lowerdirs: resolved.lowerdirs(ctx, task, tree, parents)?,
            overlays: Vec::new(),
            view: None,
            how: why_not.map(|why| format!("tree: {why}")),
            made: Vec::new(),
        })
    }

    fn checkout(
        view: Arc<CheckoutView>,
        lowerdirs: Vec<PathBuf>,
        overlay: OverlayMount,
        upper: &Path,
    ) -> Result<WorkspaceMount, String> {
        let io =
            |what: &Path, e: std::io::Error| format!("failed to create {}: {e}", what.display());
        let mut made = Vec::new();
        let mut dir = upper.to_path_buf();
        for component in overlay.target.components() {
            dir.push(component);
            if !dir.exists() {
                std::fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
                rustix::fs::chmod(&dir, Mode::from_raw_mode(0o755))
                    .map_err(|e| io(&dir, e.into()))?;
                made.push(dir.clone());
            }
        }
        let workdir = &overlay.workdir;
        if workdir.exists() {
            std::fs::remove_dir_all(workdir).map_err(|e| io(workdir, e))?;
        }
        std::fs::create_dir_all(workdir).map_err(|e| io(workdir, e))?;
        Ok(WorkspaceMount {
            lowerdirs,
            overlays: vec![overlay],
            view: Some(view),
            how: Some("checkout".into()),
            made,
        })
    }

    /// Once the task has ended: removes the directories made for the overlay's upper dir if
    /// the task left them empty, and says what of the checkout changed while it ran, if
    /// anything did.
    pub(crate) fn finish(&self, watch: Option<&WatchedCapture>) -> Option<String> {
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        self.view
            .as_ref()
            .and_then(|v| v.changed_since_capture(watch).0)
    }
}

/// The checkout's file system, as far as serving it matters.
struct Filesystem {
    name: &'static str,
    /// Whether it can be bind-mounted with an idmapping.
    idmaps: bool,
}

/// The file system of `path`, if it is one an overlay is known to take as a lower dir (local
/// file systems with `d_type`); network and FUSE file systems get a tree instead, rather than
/// a task whose sandbox cannot be mounted.
fn filesystem(path: &Path) -> Result<Filesystem, NotExact> {
    let st = rustix::fs::statfs(path).map_err(|e| NotExact(format!("{}: {e}", path.display())))?;
    let (name, idmaps) = match st.f_type as u64 {
        0xEF53 => ("ext4", true),
        0x5846_5342 => ("xfs", true),
        0x9123_683E => ("btrfs", true),
        0xF2F5_2010 => ("f2fs", true),
        0x0102_1994 => ("tmpfs", true),
        0x794C_7630 => ("overlay", false),
        0x2FC1_2FC1 => ("zfs", false),
        other => {
            return Err(NotExact(format!(
                "the checkout's file system (type {other:#x}) is not one strata gives as is"
            )));
        }
    };
    Ok(Filesystem { name, idmaps })
}

/// Whether either path lies inside the other (or they are the same).
fn overlaps(a: &Path, b: &Path) -> bool {
    let a = std::fs::canonicalize(a).unwrap_or_else(|_| a.to_path_buf());
    let b = std::fs::canonicalize(b).unwrap_or_else(|_| b.to_path_buf());
    a.starts_with(&b) || b.starts_with(&a)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
}

fn dir_stamp(st: &rustix::fs::Stat) -> (u64, (i64, u32), (i64, u32)) {
    (
        st.st_ino,
        (st.st_mtime, st.st_mtime_nsec as u32),
        (st.st_ctime, st.st_ctime_nsec as u32),
    )
}

fn read_names(fd: OwnedFd) -> rustix::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let dir = rustix::fs::Dir::read_from(&fd)?;
    for entry in dir {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(out)
}

/// The directory of lower dir `lower` at `point` (relative), if it has one; `Err` when the
/// layer hides whatever is below it there (a whiteout, a file, an opaque directory).
fn part_at(lower: &Path, point: &Path) -> Result<Option<PathBuf>, NotExact> {
    let mut path = lower.to_path_buf();
    for component in point.components() {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NotExact(format!("{}: {e}", path.display()))),
            Ok(m) if !m.is_dir() => {
                return Err(NotExact(format!("{} hides the checkout", path.display())));
            }
            Ok(_) => {
                let opaque = rustix::fs::lgetxattr(&path, "trusted.overlay.opaque", &mut [0u8; 4])
                    .is_ok_and(|n| n == 1);
                if opaque {
                    return Err(NotExact(format!("{} hides the checkout", path.display())));
                }
            }
        }
    }
    Ok(Some(path))
}

/// Makes the mask's directory `rel` and those above it, each with the mode of the checkout's
/// (a lower dir's attributes show through the overlay).
fn make_mask_dir(
    mask: &Path,
    rel: &str,
    modes: &HashMap<&str, u32>,
    made: &mut HashSet<String>,
) -> std::io::Result<()> {
    if made.contains(rel) {
        return Ok(());
    }
    if let Some((parent, _)) = rel.rsplit_once('/') {
        make_mask_dir(mask, parent, modes, made)?;
    } else if !rel.is_empty() {
        make_mask_dir(mask, "", modes, made)?;
    }
    let path = mask.join(rel);
    if !rel.is_empty() {
        std::fs::create_dir(&path)?;
    }
    let mode = modes.get(rel).copied().unwrap_or(0o755);
    rustix::fs::chmod(&path, Mode::from_raw_mode(mode))?;
    made.insert(rel.to_string());
    Ok(())
}

/// Builds in `mask` a whiteout for every entry of the checkout's directories that hold shown
/// files which is neither a shown file nor a directory on the way to one. Directories of the
/// mask take the mode and times of the checkout's, since a lower dir's attributes show.
fn build_mask(
    root: &Path,
    shown: &[(Arc<str>, Seen)],
    mask: &Path,
    owner: (u32, u32),
) -> Result<Vec<DirSeen>, NotExact> {
    let fail = |what: &str, e: &dyn std::fmt::Display| NotExact(format!("{what}: {e}"));
    // Each directory holding shown entries, with the names it must keep. The paths come
    // sorted, so a directory's files are next to each other: one lookup per directory.
    let mut keep: HashMap<&str, Vec<&str>> = HashMap::new();
    keep.insert("", Vec::new());
    let mut current: Option<&str> = None;
    for (rel, _) in shown {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if current != Some(parent) {
            let mut new = Vec::new();
            let mut p = parent;
            while !keep.contains_key(p) {
                keep.insert(p, Vec::new());
                new.push(p.rsplit_once('/').unwrap_or(("", p)));
                p = new.last().expect("pushed").0;
            }
            for (above, child) in new {
                keep.get_mut(above).expect("inserted").push(child);
            }
            current = Some(parent);
        }
        keep.get_mut(parent).expect("inserted").push(name);
    }
    for names in keep.values_mut() {
        names.sort_unstable();
    }
    let _ = std::fs::remove_dir_all(mask);
    std::fs::create_dir_all(mask).map_err(|e| fail(&mask.display().to_string(), &e))?;
    let mut dirs: Vec<(&str, &Vec<&str>)> = keep.iter().map(|(d, n)| (*d, n)).collect();
    // Parents before children, so a mask directory exists before its whiteouts.
    dirs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut seen = Vec::with_capacity(dirs.len());
    // A mask directory only where a whiteout goes: elsewhere the checkout's own shows.
    let mut modes: HashMap<&str, u32> = HashMap::new();
    let mut made: HashSet<String> = HashSet::new();
    for (rel, wanted) in dirs {
        let path = root.join(rel);
        let fd = open_dir(&path).map_err(|e| fail(&path.display().to_string(), &e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| fail(&path.display().to_string(), &e))?;
        if (st.st_uid, st.st_gid) != owner {
            return Err(NotExact(format!(
                "{} is owned by {}:{}, the checkout by {}:{}",
                path.display(),
                st.st_uid,
                st.st_gid,
                owner.0,
                owner.1
            )));
        }
        modes.insert(rel, st.st_mode & 0o7777);
        let names = read_names(fd).map_err(|e| fail(&path.display().to_string(), &e))?;
        for name in &names {
            if wanted.binary_search(&name.as_str()).is_ok() {
                continue;
            }
            make_mask_dir(mask, rel, &modes, &mut made)
                .map_err(|e| fail(&mask.join(rel).display().to_string(), &e))?;
            let whiteout = mask.join(rel).join(name);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &whiteout,
                rustix::fs::FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .map_err(|e| fail(&whiteout.display().to_string(), &e))?;
        }
        seen.push(DirSeen {
            rel: rel.to_string(),
            stamp: dir_stamp(&st),
        });
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_without_the_mount_point_adds_nothing_and_a_file_there_hides_the_checkout() {
        let d = tempfile::tempdir().unwrap();
        let point = Path::new("workspace/app");
        let none = d.path().join("none");
        std::fs::create_dir_all(none.join("usr")).unwrap();
        assert!(part_at(&none, point).unwrap().is_none());
        let some = d.path().join("some");
        std::fs::create_dir_all(some.join("workspace/app/node_modules")).unwrap();
        assert_eq!(
            part_at(&some, point).unwrap(),
            Some(some.join("workspace/app"))
        );
        let file = d.path().join("file");
        std::fs::create_dir_all(file.join("workspace")).unwrap();
        std::fs::write(file.join("workspace/app"), "x").unwrap();
        assert!(part_at(&file, point).is_err());
    }

    #[test]
    fn a_directory_on_the_way_to_a_shown_file_is_shown() {
        let view = CheckoutView {
            root: PathBuf::from("/c"),
            prefix: String::new(),
            mask: PathBuf::from("/m"),
            owner: None,
            files: ["a.txt", "src-x", "src/lib/m.rs"]
                .into_iter()
                .map(|p| (Arc::from(p), Seen::default()))
                .collect(),
            dirs: Vec::new(),
        };
        for shown in ["a.txt", "src-x", "src", "src/lib", "src/lib/m.rs"] {
            assert!(view.shows(shown), "{shown}");
        }
        for hidden in ["a", "sr", "src/li", "src/lib/m", "b"] {
            assert!(!view.shows(hidden), "{hidden}");
        }
    }

    #[test]
    fn a_watched_capture_is_checked_by_asking_the_watcher() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = tempfile::tempdir().unwrap();
        let root = files_at(
            d.path(),
            &["src/a.txt", "src/linked.txt", "other/x.txt", "top.txt"],
        );
        // A second name outside the workspace: a write through it is no event there.
        let outside = d.path().join("outside.txt");
        std::fs::hard_link(root.join("src/linked.txt"), &outside).unwrap();
        let socket = d.path().join("watch/w.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let mut watcher = strata_watch::Watcher::start(&root, &[], &socket).unwrap();
        let serving = {
            let stop = stop.clone();
            std::thread::spawn(move || watcher.serve(&stop))
        };
        // The capture is made after the answer, as the run's is.
        let answer = strata_watch::ask(&socket, None).unwrap();
        let workspace = Workspace::capture(&root, &[]).unwrap();
        let files: Vec<WorkspaceFile> = workspace
            .files
            .iter()
            .filter(|f| f.path.starts_with("src/"))
            .cloned()
            .collect();
        let origins: Vec<Origin> = files
            .iter()
            .map(|f| Origin::Captured(f.path.clone()))
            .collect();
        let mask = d.path().join("mask");
        let view =
            CheckoutView::build(&workspace, &files, &origins, &d.path().join("c"), &mask).unwrap();
        let watch = WatchedCapture {
            socket: socket.clone(),
            token: answer.now,
            root: answer.root,
            mount_ns: answer.mount_ns,
            linked: vec![Arc::from("src/linked.txt")],
            failed: Default::default(),
        };
        let check = || view.changed_since_capture(Some(&watch));
        assert_eq!(check(), (None, Checked::Watcher));
        // Outside what the task was shown (a directory that holds none of its files): still
        // the watcher's word, and nothing changed.
        std::fs::write(root.join("other/x.txt"), "edited").unwrap();
        std::fs::write(root.join("other/new.txt"), "new").unwrap();
        assert_eq!(check(), (None, Checked::Watcher));
        // Through the other name: looked at directly.
        std::fs::write(&outside, "edited through the other name").unwrap();
        let (changed, how) = check();
        assert_eq!(how, Checked::Watcher);
        assert!(changed.unwrap().contains("src/linked.txt"));
        // A shown file, or a new name beside them: the whole check, which says what.
        std::fs::hard_link(&outside, d.path().join("again")).unwrap();
        let back = view.changed_since_capture(None);
        assert_eq!(back.1, Checked::Stat);
        assert!(back.0.unwrap().contains("src/linked.txt"));
        let fresh = d.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        let view_of = |root: &Path| {
            let workspace = Workspace::capture(root, &[]).unwrap();
            let files: Vec<WorkspaceFile> = workspace
                .files
                .iter()
                .filter(|f| f.path.starts_with("src/") && *f.path != *"src/linked.txt")
                .cloned()
                .collect();
            let origins: Vec<Origin> = files
                .iter()
                .map(|f| Origin::Captured(f.path.clone()))
                .collect();
            let mask = tempfile::tempdir_in(&fresh).unwrap().keep();
            CheckoutView::build(&workspace, &files, &origins, &d.path().join("c"), &mask).unwrap()
        };
        let answer = strata_watch::ask(&socket, None).unwrap();
        let view = view_of(&root);
        let watch = WatchedCapture {
            token: answer.now,
            linked: Vec::new(),
            ..watch
        };
        assert_eq!(
            view.changed_since_capture(Some(&watch)),
            (None, Checked::Watcher)
        );
        std::fs::write(root.join("src/b.txt"), "new beside the shown").unwrap();
        let (changed, how) = view.changed_since_capture(Some(&watch));
        assert_eq!(how, Checked::Stat);
        assert!(changed.unwrap().contains("src/b.txt appeared"));
        std::fs::remove_file(root.join("src/b.txt")).unwrap();
        std::fs::write(root.join("src/a.txt"), "edited").unwrap();
        let (changed, how) = view.changed_since_capture(Some(&watch));
        assert_eq!(how, Checked::Stat);
        assert!(changed.unwrap().contains("src/a.txt"));
        // A second name for a shown file, made where the task is shown nothing: a write
        // through it would be no event beside the file, so the whole check is made.
        let answer = strata_watch::ask(&socket, None).unwrap();
        let view = view_of(&root);
        let watch = WatchedCapture {
            token: answer.now,
            ..watch
        };
        assert_eq!(view.changed_since_capture(Some(&watch)).1, Checked::Watcher);
        std::fs::hard_link(root.join("src/a.txt"), root.join("other/alias.txt")).unwrap();
        assert_eq!(view.changed_since_capture(Some(&watch)).1, Checked::Stat);
        // No watcher: the whole check.
        stop.store(true, Ordering::Relaxed);
        serving.join().unwrap().unwrap();
        let (_, how) = view.changed_since_capture(Some(&watch));
        assert_eq!(how, Checked::Stat);
    }

    /// A workspace `ws` under `dir` holding `files`, each containing its own path.
    fn files_at(dir: &Path, files: &[&str]) -> PathBuf {
        let root = dir.join("ws");
        for f in files {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), f).unwrap();
        }
        root
    }

    /// A watcher serving in a thread that can be paused (events queue up unread meanwhile),
    /// a capture at its answer, and a view of the files under `src/`.
    fn paused_watcher_setup(
        d: &Path,
        selection: &strata_key::Selection<'_>,
        shown: &dyn Fn(&str) -> bool,
    ) -> (PathBuf, CheckoutView, WatchedCapture, strata_watch::Watcher) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let root = d.join("ws");
        let socket = d.join("watch/w.sock");
        let mut watcher = strata_watch::Watcher::start(&root, &[], &socket).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let serving = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let r = watcher.serve(&stop);
                (watcher, r)
            })
        };
        let answer = strata_watch::ask(&socket, None).unwrap();
        let captured = Workspace::capture_watched(
            &root,
            &[],
            &strata_key::StatCache::default(),
            selection,
            None,
        )
        .unwrap();
        let workspace = captured.workspace;
        let files: Vec<WorkspaceFile> = workspace
            .files
            .iter()
            .filter(|f| shown(&f.path))
            .cloned()
            .collect();
        let origins: Vec<Origin> = files
            .iter()
            .map(|f| Origin::Captured(f.path.clone()))
            .collect();
        let view = CheckoutView::build(&workspace, &files, &origins, &d.join("c"), &d.join("mask"))
            .unwrap();
        let watch = WatchedCapture {
            socket: socket.clone(),
            token: answer.now,
            root: answer.root,
            mount_ns: answer.mount_ns,
            linked: captured.linked,
            failed: Default::default(),
        };
        assert_eq!(view.changed_since_capture(Some(&watch)).0, None);
        // Paused: whatever happens next is queued, unread, until it serves again.
        stop.store(true, Ordering::Relaxed);
        let (watcher, r) = serving.join().unwrap();
        r.unwrap();
        (root, view, watch, watcher)
    }

    fn serve_again(
        mut watcher: strata_watch::Watcher,
    ) -> (
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    ) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::spawn(move || watcher.serve(&s).unwrap());
        (stop, h)
    }

    #[test]
    fn a_hard_link_in_a_new_directory_written_before_it_is_watched_is_seen() {
        // `cp -al src other/snap` then a write through other/snap/a.txt, quicker than the
        // watcher sets up its watch on the new directory (made deterministic here by pausing it).
        let d = tempfile::tempdir().unwrap();
        files_at(d.path(), &["src/a.txt", "other/x.txt"]);
        let (root, view, watch, watcher) =
            paused_watcher_setup(d.path(), &strata_key::Selection::default(), &|p| {
                p.starts_with("src/")
            });
        std::fs::create_dir(root.join("other/snap")).unwrap();
        std::fs::hard_link(root.join("src/a.txt"), root.join("other/snap/a.txt")).unwrap();
        std::fs::write(root.join("other/snap/a.txt"), "edited through the copy").unwrap();
        let (stop, h) = serve_again(watcher);
        let stat = view.changed_since_capture(None);
        let watched = view.changed_since_capture(Some(&watch));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
        assert_eq!(stat.1, Checked::Stat);
        assert!(
            stat.0.as_deref().unwrap_or("").contains("src/a.txt"),
            "{stat:?}"
        );
        assert_eq!(
            watched, stat,
            "the watched check must say what the stat check says"
        );
    }

    #[test]
    fn a_hard_link_made_written_and_removed_inside_the_workspace_is_seen() {
        let d = tempfile::tempdir().unwrap();
        files_at(d.path(), &["src/a.txt", "other/x.txt"]);
        let (root, view, watch, watcher) =
            paused_watcher_setup(d.path(), &strata_key::Selection::default(), &|p| {
                p.starts_with("src/")
            });
        let (stop, h) = serve_again(watcher);
        std::fs::hard_link(root.join("src/a.txt"), root.join("other/alias")).unwrap();
        std::fs::write(root.join("other/alias"), "edited through the alias").unwrap();
        std::fs::remove_file(root.join("other/alias")).unwrap();
        let stat = view.changed_since_capture(None);
        let watched = view.changed_since_capture(Some(&watch));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
        assert!(
            stat.0.as_deref().unwrap_or("").contains("src/a.txt"),
            "{stat:?}"
        );
        assert_eq!(
            watched, stat,
            "the watched check must say what the stat check says"
        );
    }

    #[test]
    fn a_task_shown_the_git_directory_gets_the_whole_check() {
        // preserve-git-dir: the capture keeps `.git/…`, which the watcher does not watch
        // inside (but for `.git` itself and `.git/info`).
        let d = tempfile::tempdir().unwrap();
        files_at(
            d.path(),
            &[
                "src/a.txt",
                ".git/HEAD",
                ".git/refs/heads/main",
                ".git/refs/tags/v0",
            ],
        );
        let selection = strata_key::Selection {
            git_dir: true,
            ..strata_key::Selection::default()
        };
        let (root, view, watch, watcher) = paused_watcher_setup(d.path(), &selection, &|_| true);
        assert!(view.shows(".git/refs/heads/main"));
        let (stop, h) = serve_again(watcher);
        // `git commit`/`git update-ref` rewrite a ref; `git tag` adds one.
        std::fs::write(root.join(".git/refs/heads/main"), "another commit").unwrap();
        std::fs::write(root.join(".git/refs/tags/v1"), "a new tag").unwrap();
        let stat = view.changed_since_capture(None);
        let watched = view.changed_since_capture(Some(&watch));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
        assert!(stat.0.is_some(), "{stat:?}");
        assert_eq!(
            watched, stat,
            "the watched check must say what the stat check says"
        );
    }

    #[test]
    fn changes_to_what_a_task_was_shown_are_seen_with_a_watcher() {
        type Change = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "rename over a shown file",
                Box::new(|r: &Path| {
                    std::fs::write(r.join("other/new"), "zzz").unwrap();
                    std::fs::rename(r.join("other/new"), r.join("src/a.txt")).unwrap();
                }),
            ),
            (
                "shown dir replaced by a symlink",
                Box::new(|r: &Path| {
                    std::fs::rename(r.join("src"), r.join("src.real")).unwrap();
                    std::os::unix::fs::symlink("src.real", r.join("src")).unwrap();
                }),
            ),
            (
                "shown dir swapped with a copy",
                Box::new(|r: &Path| {
                    std::fs::create_dir(r.join("copy")).unwrap();
                    std::fs::write(r.join("copy/a.txt"), "src/a.txt").unwrap();
                    std::fs::rename(r.join("src"), r.join("old")).unwrap();
                    std::fs::rename(r.join("copy"), r.join("src")).unwrap();
                }),
            ),
            (
                "chmod",
                Box::new(|r: &Path| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(
                        r.join("src/a.txt"),
                        std::fs::Permissions::from_mode(0o600),
                    )
                    .unwrap();
                }),
            ),
            (
                "touch",
                Box::new(|r: &Path| {
                    let f = std::fs::File::options()
                        .write(true)
                        .open(r.join("src/a.txt"))
                        .unwrap();
                    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
                }),
            ),
            (
                "chown",
                Box::new(|r: &Path| {
                    std::os::unix::fs::lchown(r.join("src/a.txt"), Some(1), Some(1)).unwrap();
                }),
            ),
            (
                "new link beside, written",
                Box::new(|r: &Path| {
                    std::fs::hard_link(r.join("src/a.txt"), r.join("other/alias")).unwrap();
                    std::fs::write(r.join("other/alias"), "through alias").unwrap();
                }),
            ),
            (
                "new name in a nested shown dir",
                Box::new(|r: &Path| {
                    std::fs::write(r.join("src/deep/new"), "n").unwrap();
                }),
            ),
            (
                "a dir moved into a shown dir",
                Box::new(|r: &Path| {
                    std::fs::rename(r.join("other"), r.join("src/other")).unwrap();
                }),
            ),
            (
                "bind mount over a shown dir",
                Box::new(|r: &Path| {
                    let st = std::process::Command::new("mount")
                        .arg("--bind")
                        .arg(r.join("other"))
                        .arg(r.join("src/deep"))
                        .status()
                        .unwrap();
                    assert!(st.success());
                }),
            ),
        ];
        for (name, change) in cases {
            let d = tempfile::tempdir().unwrap();
            files_at(d.path(), &["src/a.txt", "src/deep/b.txt", "other/x.txt"]);
            let (root, view, watch, watcher) =
                paused_watcher_setup(d.path(), &strata_key::Selection::default(), &|p| {
                    p.starts_with("src/")
                });
            let (stop, h) = serve_again(watcher);
            change(&root);
            let stat = view.changed_since_capture(None);
            let watched = view.changed_since_capture(Some(&watch));
            let _ = std::process::Command::new("umount")
                .arg(root.join("src/deep"))
                .status();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            h.join().unwrap();
            assert!(stat.0.is_some(), "{name}: stat saw nothing");
            assert!(watched.0.is_some(), "{name}: watched says nothing changed");
        }
    }

    #[test]
    fn a_watcher_restarted_killed_or_stuck_leaves_the_whole_check() {
        let d = tempfile::tempdir().unwrap();
        files_at(d.path(), &["src/a.txt", "other/x.txt"]);
        let (root, view, watch, watcher) =
            paused_watcher_setup(d.path(), &strata_key::Selection::default(), &|p| {
                p.starts_with("src/")
            });
        // Killed (its socket removed as on Drop): the whole check.
        drop(watcher);
        std::fs::write(root.join("src/a.txt"), "while no watcher").unwrap();
        let c = view.changed_since_capture(Some(&watch));
        assert_eq!(c.1, Checked::Stat, "{c:?}");
        assert!(c.0.is_some());
        // A watcher that failed is not asked again by the tasks after.
        assert!(watch.failed.load(std::sync::atomic::Ordering::Relaxed));
        watch
            .failed
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // Restarted: another instance, the whole check.
        let w2 = strata_watch::Watcher::start(&root, &[], &watch.socket).unwrap();
        let (stop, h) = serve_again(w2);
        let c = view.changed_since_capture(Some(&watch));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
        assert_eq!(c.1, Checked::Stat, "{c:?}");
        assert!(c.0.is_some());
        // Stuck (accepts, never answers): the whole check, after the 10 s timeout, once.
        watch
            .failed
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::remove_file(&watch.socket);
        let _l = std::os::unix::net::UnixListener::bind(&watch.socket).unwrap();
        let c = view.changed_since_capture(Some(&watch));
        assert_eq!(c.1, Checked::Stat, "{c:?}");
        let t = std::time::Instant::now();
        let c = view.changed_since_capture(Some(&watch));
        assert_eq!(c.1, Checked::Stat, "{c:?}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_linked_copy_of_shown_files_written_at_once_is_seen_with_a_live_watcher() {
        let mut missed = 0;
        for i in 0..20 {
            let d = tempfile::tempdir().unwrap();
            files_at(d.path(), &["src/a.txt", "other/x.txt"]);
            let (root, view, watch, watcher) =
                paused_watcher_setup(d.path(), &strata_key::Selection::default(), &|p| {
                    p.starts_with("src/")
                });
            let (stop, h) = serve_again(watcher);
            std::thread::sleep(std::time::Duration::from_millis(50));
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "cd {} && cp -al src other/snap && echo edit{i} >> other/snap/a.txt",
                    root.display()
                ))
                .status()
                .unwrap();
            assert!(st.success());
            let stat = view.changed_since_capture(None);
            let watched = view.changed_since_capture(Some(&watch));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            h.join().unwrap();
            assert!(stat.0.is_some());
            if watched.0.is_none() {
                missed += 1;
            }
        }
        assert_eq!(missed, 0);
    }

    #[test]
    fn overlapping_paths() {
        assert!(overlaps(Path::new("/a/b"), Path::new("/a/b/c")));
        assert!(overlaps(Path::new("/a/b/c"), Path::new("/a/b")));
        assert!(!overlaps(Path::new("/a/b"), Path::new("/a/bc")));
    }
}
