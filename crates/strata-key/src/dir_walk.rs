//! The workspace walk: every regular file and symlink a capture keeps, each with its `lstat`,
//! found over directory handles on all CPUs.
//!
//! This is the warm key's whole cost (nothing is read when the stat cache vouches for every
//! file), so it does per entry only what the kernel must: one `getdents64` batch per directory
//! and one `lstat` relative to the directory's handle. Names stay bytes in one buffer per
//! directory; a path string is made once per kept file; ignore files are compiled only in the
//! directories that have them and matched only under them.
//!
//! Which files it keeps is exactly what the `ignore` crate's walker kept when configured as the
//! capture used to configure it (`.ignore`, `.gitignore` and `.git/info/exclude` honoured in every
//! directory, nearest first, with no parent directories, global excludes or hidden-file rule;
//! `.git` left out; symlinks not followed); the matching itself is that crate's `Gitignore`. The
//! tests compare the two on awkward trees.

use std::ffi::{CStr, OsStr};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::workspace::{Seen, WorkspaceError};

/// A kept file: its workspace-relative path, its `lstat`, and its target when it is a symlink.
#[derive(Debug)]
pub(crate) struct Walked {
    /// Made once, shared by the capture's `WorkspaceFile` from then on.
    pub(crate) rel: Arc<str>,
    pub(crate) seen: Seen,
    pub(crate) link_target: Option<Vec<u8>>,
    /// A regular file with other hard links: a write through another of its names changes it
    /// without an event on this path, so a watched capture looks at it again every time.
    pub(crate) many_links: bool,
}

/// An ignore file a walk read (or would have read: absent ones count), with what `stat`
/// (following symlinks) said of it just before: a watched capture walks again if that changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IgnoreFile {
    pub(crate) path: PathBuf,
    pub(crate) stamp: Option<Seen>,
}

impl IgnoreFile {
    /// The file as it is now.
    pub(crate) fn now(path: PathBuf) -> IgnoreFile {
        let stamp = Self::stamp_of(&path);
        IgnoreFile { path, stamp }
    }

    /// What `stat` says of the file at `path` now (`None`: it is not there).
    pub(crate) fn stamp_of(path: &Path) -> Option<Seen> {
        rustix::fs::stat(path).ok().map(|st| Seen::of_stat(&st))
    }
}

/// What the walk leaves out besides ignored files.
pub(crate) struct WalkRules<'a> {
    /// Absolute paths left out (the cache directory inside the workspace).
    pub(crate) exclude: &'a [PathBuf],
    /// Keep the top-level `.git` directory.
    pub(crate) git_dir: bool,
    /// Honour `.ignore`, `.gitignore` and `.git/info/exclude`.
    pub(crate) honour_ignores: bool,
}

/// Lists the files under `root` that `rules` keep, sorted by path (bytewise, as `str` sorts).
pub(crate) fn walk(root: &Path, rules: &WalkRules<'_>) -> Result<Vec<Walked>, WorkspaceError> {
    walk_inner(root, rules, false).map(|(walked, _)| walked)
}

/// [`walk`], also listing the ignore files it read (or looked for), each stamped before it was
/// read.
pub(crate) fn walk_noting(
    root: &Path,
    rules: &WalkRules<'_>,
) -> Result<(Vec<Walked>, Vec<IgnoreFile>), WorkspaceError> {
    walk_inner(root, rules, true)
}

fn walk_inner(
    root: &Path,
    rules: &WalkRules<'_>,
    note_ignore_files: bool,
) -> Result<(Vec<Walked>, Vec<IgnoreFile>), WorkspaceError> {
    let exclude = relative_excludes(root, rules.exclude);
    let shared = Shared {
        root,
        exclude,
        git_dir: rules.git_dir,
        honour_ignores: rules.honour_ignores,
        next_id: AtomicUsize::new(1),
        ignore_files: note_ignore_files.then(|| Mutex::new(Vec::new())),
        queue: Mutex::new(Queue {
            items: vec![Work {
                id: 0,
                parent: None,
                name: Vec::new(),
                rel: Vec::new(),
                ignores: None,
            }],
            active: 0,
            error: None,
        }),
        wake: Condvar::new(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut listings: Vec<(usize, Listing)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(|| shared.work())).collect();
        let mut all = shared.work();
        for h in helpers {
            all.extend(h.join().expect("walk thread panicked"));
        }
        all
    });
    if let Some(e) = shared.queue.into_inner().expect("walk lock").error {
        return Err(e);
    }
    listings.sort_unstable_by_key(|(id, _)| *id);
    debug_assert!(listings.iter().enumerate().all(|(i, (id, _))| i == *id));
    let mut listings: Vec<Listing> = listings.into_iter().map(|(_, l)| l).collect();
    let mut out = Vec::with_capacity(listings.iter().map(|l| l.files).sum());
    let mut prefix = Vec::with_capacity(256);
    flatten(root, &mut listings, 0, &mut prefix, &mut out)?;
    let mut ignore_files = match shared.ignore_files {
        Some(noted) => noted.into_inner().expect("walk lock"),
        None => Vec::new(),
    };
    ignore_files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok((out, ignore_files))
}

/// Appends directory `id`'s files, and its subdirectories' in place, in path order: `prefix` is
/// the directory's relative path with a trailing `/` (empty at the root).
fn flatten(
    root: &Path,
    listings: &mut [Listing],
    id: usize,
    prefix: &mut Vec<u8>,
    out: &mut Vec<Walked>,
) -> Result<(), WorkspaceError> {
    let Listing { names, items, .. } = std::mem::take(&mut listings[id]);
    for item in items {
        let len = prefix.len();
        prefix
            .extend_from_slice(&names[item.name.0 as usize..(item.name.0 + item.name.1) as usize]);
        let (seen, link_target, many_links) = match item.what {
            What::Dir(child) => {
                prefix.push(b'/');
                flatten(root, listings, child, prefix, out)?;
                prefix.truncate(len);
                continue;
            }
            What::File(seen, many) => (seen, None, many),
            What::Symlink(seen, target) => (seen, Some(target), false),
        };
        let Ok(rel) = std::str::from_utf8(prefix) else {
            return Err(WorkspaceError::NotUtf8 {
                path: root.join(OsStr::from_bytes(prefix)),
            });
        };
        out.push(Walked {
            rel: rel.into(),
            seen,
            link_target,
            many_links,
        });
        prefix.truncate(len);
    }
    Ok(())
}

/// One directory's kept entries, sorted so that a depth-first flattening gives path order.
#[derive(Default)]
struct Listing {
    names: Vec<u8>,
    items: Vec<Item>,
    /// Kept files (not directories) among `items`.
    files: usize,
}

struct Item {
    /// (start, length) in the listing's `names`.
    name: (u32, u32),
    what: What,
}

enum What {
    /// Its `lstat`, and whether it has other hard links.
    File(Seen, bool),
    Symlink(Seen, Vec<u8>),
    /// A subdirectory, by the id of its listing.
    Dir(usize),
}

/// A directory to list: opened relative to its parent's handle, which it keeps alive.
struct Work {
    id: usize,
    /// `None` for the root, which is opened by its path.
    parent: Option<Arc<OwnedFd>>,
    name: Vec<u8>,
    /// Relative to the root, without a trailing `/`; empty for the root.
    rel: Vec<u8>,
    /// The ignore files of this directory's ancestors, nearest first.
    ignores: Option<Arc<IgnoreLevel>>,
}

struct Queue {
    items: Vec<Work>,
    /// Directories being listed right now (their subdirectories are still to come).
    active: usize,
    error: Option<WorkspaceError>,
}

struct Shared<'a> {
    root: &'a Path,
    /// Relative paths left out, `/`-separated.
    exclude: Vec<Vec<u8>>,
    git_dir: bool,
    honour_ignores: bool,
    next_id: AtomicUsize,
    /// The ignore files read so far.
    /// The ignore files read so far, when they are to be listed (a walk kept for a watcher).
    ignore_files: Option<Mutex<Vec<IgnoreFile>>>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared<'_> {
    /// Lists directories until none is left (or one failed); returns this thread's listings.
    fn work(&self) -> Vec<(usize, Listing)> {
        let mut done = Vec::new();
        // getdents64 fills this; 32 KiB holds about a thousand entries.
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 32 * 1024];
        loop {
            let work = {
                let mut q = self.queue.lock().expect("walk lock");
                loop {
                    if q.error.is_some() {
                        return done;
                    }
                    if let Some(w) = q.items.pop() {
                        q.active += 1;
                        break w;
                    }
                    if q.active == 0 {
                        self.wake.notify_all();
                        return done;
                    }
                    q = self.wake.wait(q).expect("walk lock");
                }
            };
            let id = work.id;
            let result = self.list(work, &mut buf);
            let mut q = self.queue.lock().expect("walk lock");
            q.active -= 1;
            match result {
                Ok((listing, children)) => {
                    let more = !children.is_empty();
                    q.items.extend(children);
                    done.push((id, listing));
                    if more || q.active == 0 {
                        self.wake.notify_all();
                    }
                }
                Err(e) => {
                    q.error.get_or_insert(e);
                    self.wake.notify_all();
                }
            }
        }
    }

    fn path_of(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    /// Lists one directory: its kept files with their `lstat`, and its subdirectories to list.
    fn list(
        &self,
        work: Work,
        buf: &mut [MaybeUninit<u8>],
    ) -> Result<(Listing, Vec<Work>), WorkspaceError> {
        let dir_err = |source: rustix::io::Errno| WorkspaceError::ReadDir {
            path: self.path_of(&work.rel),
            source: source.into(),
        };
        let fd = match &work.parent {
            None => rustix::fs::open(
                self.root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            Some(parent) => rustix::fs::openat(
                parent,
                OsStr::from_bytes(&work.name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ),
        }
        .map_err(dir_err)?;
        drop(work.parent);

        // The entries' names and types, as getdents64 gives them.
        let mut names: Vec<u8> = Vec::with_capacity(4096);
        let mut raw: Vec<((u32, u32), FileType)> = Vec::with_capacity(64);
        let mut dir = rustix::fs::RawDir::new(&fd, buf);
        while let Some(entry) = dir.next() {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let start = names.len() as u32;
            names.extend_from_slice(name);
            raw.push(((start, name.len() as u32), entry.file_type()));
        }
        let name_of = |n: (u32, u32)| &names[n.0 as usize..(n.0 + n.1) as usize];

        let ignores = if self.honour_ignores {
            let has = |wanted: &[u8]| raw.iter().any(|(n, _)| name_of(*n) == wanted);
            IgnoreLevel::of_dir(
                &self.path_of(&work.rel),
                has(b".ignore"),
                has(b".gitignore"),
                has(b".git"),
                work.ignores,
                self.ignore_files.as_ref(),
            )
        } else {
            None
        };

        let fd = Arc::new(fd);
        let mut items = Vec::with_capacity(raw.len());
        let mut children = Vec::new();
        let mut files = 0;
        let mut rel = work.rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        let dir_len = rel.len();
        let mut abs = PathBuf::new();
        // A C string of the entry's name, for the *at calls.
        let mut c_name: Vec<u8> = Vec::with_capacity(256);
        for (name_at, d_type) in raw.iter().copied() {
            let name = name_of(name_at);
            c_name.clear();
            c_name.extend_from_slice(name);
            c_name.push(0);
            let c = CStr::from_bytes_with_nul(&c_name).expect("a directory entry has no NUL");
            let mut st = None;
            let file_type = if d_type == FileType::Unknown {
                // Some filesystems do not say in getdents64.
                let s = rustix::fs::statat(&fd, c, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                    WorkspaceError::Read {
                        path: self.path_of(&work.rel).join(OsStr::from_bytes(name)),
                        source: e.into(),
                    }
                })?;
                let t = FileType::from_raw_mode(s.st_mode);
                st = Some(s);
                t
            } else {
                d_type
            };
            let is_dir = file_type == FileType::Directory;
            if !is_dir && file_type != FileType::RegularFile && file_type != FileType::Symlink {
                continue;
            }
            if name == b".git" && !(self.git_dir && work.rel.is_empty()) {
                continue;
            }
            rel.truncate(dir_len);
            rel.extend_from_slice(name);
            if self.exclude.contains(&rel) {
                continue;
            }
            if let Some(level) = &ignores {
                abs.clear();
                abs.push(self.root);
                abs.push(OsStr::from_bytes(&rel));
                if level.ignores(&abs, is_dir) {
                    continue;
                }
            }
            if is_dir {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                children.push(Work {
                    id,
                    parent: Some(fd.clone()),
                    name: name.to_vec(),
                    rel: rel.clone(),
                    ignores: ignores.clone(),
                });
                items.push(Item {
                    name: name_at,
                    what: What::Dir(id),
                });
                continue;
            }
            let read_err = |e: rustix::io::Errno| WorkspaceError::Read {
                path: self.path_of(&rel),
                source: e.into(),
            };
            let st = match st {
                Some(st) => st,
                None => rustix::fs::statat(&fd, c, AtFlags::SYMLINK_NOFOLLOW).map_err(read_err)?,
            };
            let seen = Seen::of_stat(&st);
            // The type the stat found wins over getdents64's, should the entry have been
            // replaced in between.
            let what = match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => What::File(seen, st.st_nlink > 1),
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(&fd, c, Vec::new()).map_err(read_err)?;
                    What::Symlink(seen, target.into_bytes())
                }
                _ => continue,
            };
            files += 1;
            items.push(Item {
                name: name_at,
                what,
            });
        }
        // A directory sorts as its name followed by `/`: then its files, listed in its place,
        // come in the order of their whole paths.
        let key = |item: &Item| {
            let dir = matches!(item.what, What::Dir(_));
            let n = &names[item.name.0 as usize..(item.name.0 + item.name.1) as usize];
            (n, dir)
        };
        items.sort_unstable_by(|a, b| {
            let (na, da) = key(a);
            let (nb, db) = key(b);
            let slash: &[u8] = b"/";
            let ka = na.iter().chain(if da { slash } else { &[] });
            let kb = nb.iter().chain(if db { slash } else { &[] });
            ka.cmp(kb)
        });
        Ok((
            Listing {
                names,
                items,
                files,
            },
            children,
        ))
    }
}

/// Whether single paths would be kept by [`walk`] under the same rules, judged from the ignore
/// files as they are now: the paths a watcher says changed since an earlier walk.
pub(crate) struct Keeper<'a> {
    root: &'a Path,
    exclude: Vec<Vec<u8>>,
    git_dir: bool,
    honour_ignores: bool,
    /// Each directory's ignore level (with its ancestors'), by relative path, once compiled.
    levels: std::collections::HashMap<Vec<u8>, Option<Arc<IgnoreLevel>>>,
}

impl<'a> Keeper<'a> {
    pub(crate) fn new(root: &'a Path, rules: &WalkRules<'_>) -> Keeper<'a> {
        Keeper {
            root,
            exclude: relative_excludes(root, rules.exclude),
            git_dir: rules.git_dir,
            honour_ignores: rules.honour_ignores,
            levels: Default::default(),
        }
    }

    /// The level of directory `dir` (relative, `/`-separated, empty for the root): what the walk
    /// would hold when listing it.
    fn level(&mut self, dir: &[u8]) -> Option<Arc<IgnoreLevel>> {
        if let Some(level) = self.levels.get(dir) {
            return level.clone();
        }
        let parent = match dir.iter().rposition(|&b| b == b'/') {
            _ if dir.is_empty() => None,
            Some(slash) => self.level(&dir[..slash]),
            None => self.level(b""),
        };
        let abs = self.root.join(OsStr::from_bytes(dir));
        let has = |name: &str| abs.join(name).symlink_metadata().is_ok();
        let level = IgnoreLevel::of_dir(
            &abs,
            has(".ignore"),
            has(".gitignore"),
            has(".git"),
            parent,
            None,
        );
        self.levels.insert(dir.to_vec(), level.clone());
        level
    }

    /// Whether the walk would keep `rel` (relative, `/`-separated, not empty): each directory
    /// on the way is descended into, and the entry itself (a directory when `is_dir`) is not
    /// left out.
    pub(crate) fn keeps(&mut self, rel: &[u8], is_dir: bool) -> bool {
        let mut start = 0;
        loop {
            let slash = rel[start..]
                .iter()
                .position(|&b| b == b'/')
                .map(|i| start + i);
            let end = slash.unwrap_or(rel.len());
            let (prefix, name) = (&rel[..end], &rel[start..end]);
            let parent = &rel[..start.saturating_sub(1)];
            if name.is_empty() || name == b"." || name == b".." {
                return false;
            }
            if name == b".git" && !(self.git_dir && start == 0) {
                return false;
            }
            if self.exclude.iter().any(|x| x == prefix) {
                return false;
            }
            if self.honour_ignores
                && let Some(level) = self.level(parent)
                && level.ignores(
                    &self.root.join(OsStr::from_bytes(prefix)),
                    slash.is_some() || is_dir,
                )
            {
                return false;
            }
            match slash {
                None => return true,
                Some(slash) => start = slash + 1,
            }
        }
    }
}

/// The excluded paths under `root`, relative and `/`-separated.
fn relative_excludes(root: &Path, exclude: &[PathBuf]) -> Vec<Vec<u8>> {
    exclude
        .iter()
        .filter_map(|x| x.strip_prefix(root).ok())
        .map(|rel| {
            let parts: Vec<&[u8]> = rel.iter().map(|c| c.as_bytes()).collect();
            parts.join(&b'/')
        })
        .filter(|rel| !rel.is_empty())
        .collect()
}

/// The ignore files of one directory, and those of its ancestors (nearest first). A directory
/// without any shares its parent's level.
struct IgnoreLevel {
    ignore: Gitignore,
    git_ignore: Gitignore,
    git_exclude: Gitignore,
    parent: Option<Arc<IgnoreLevel>>,
}

impl IgnoreLevel {
    /// The level for directory `dir`, given which ignore files its listing showed; the files
    /// it reads (or looks for) are noted in `noted`, each stamped before it is read.
    fn of_dir(
        dir: &Path,
        has_ignore: bool,
        has_git_ignore: bool,
        has_git: bool,
        parent: Option<Arc<IgnoreLevel>>,
        noted: Option<&Mutex<Vec<IgnoreFile>>>,
    ) -> Option<Arc<IgnoreLevel>> {
        if !(has_ignore || has_git_ignore || has_git) {
            return parent;
        }
        let note = |file: &Path| {
            if let Some(noted) = noted {
                let stamped = IgnoreFile::now(file.to_path_buf());
                noted.lock().expect("walk lock").push(stamped);
            }
        };
        let of = |present: bool, file: &Path| {
            if present {
                note(file);
                compile(dir, file)
            } else {
                Gitignore::empty()
            }
        };
        let ignore = of(has_ignore, &dir.join(".ignore"));
        let git_ignore = of(has_git_ignore, &dir.join(".gitignore"));
        let git_exclude = if has_git {
            // A `.git` file too: it names where its repository is. (Not a `.git` directory,
            // whose times move with every git command.)
            let dot_git = dir.join(".git");
            if std::fs::metadata(&dot_git).is_ok_and(|m| m.is_file()) {
                note(&dot_git);
            }
            match git_common_dir(dir) {
                Some(git) => of(true, &git.join("info/exclude")),
                None => Gitignore::empty(),
            }
        } else {
            Gitignore::empty()
        };
        if ignore.is_empty() && git_ignore.is_empty() && git_exclude.is_empty() {
            return parent;
        }
        Some(Arc::new(IgnoreLevel {
            ignore,
            git_ignore,
            git_exclude,
            parent,
        }))
    }

    /// Whether `path` (absolute, as the root was given) is ignored: for each kind of file, the
    /// nearest directory with a rule for the path decides; `.ignore` outranks `.gitignore`,
    /// which outranks `info/exclude`.
    fn ignores(self: &Arc<Self>, path: &Path, is_dir: bool) -> bool {
        use ignore::Match;
        let (mut ignore, mut git_ignore, mut git_exclude) = (Match::None, Match::None, Match::None);
        let mut level = Some(self);
        while let Some(l) = level {
            if ignore.is_none() {
                ignore = l.ignore.matched(path, is_dir);
            }
            if git_ignore.is_none() {
                git_ignore = l.git_ignore.matched(path, is_dir);
            }
            if git_exclude.is_none() {
                git_exclude = l.git_exclude.matched(path, is_dir);
            }
            level = l.parent.as_ref();
        }
        ignore.or(git_ignore).or(git_exclude).is_ignore()
    }
}

/// The rules of one ignore file, relative to `dir`. Lines that do not parse are left out and an
/// unreadable file has no rules, as the `ignore` crate's walker did (it reported them beside the
/// entry, where the capture never looked).
fn compile(dir: &Path, file: &Path) -> Gitignore {
    let mut builder = GitignoreBuilder::new(dir);
    if file.exists() {
        let _ = builder.add(file);
    }
    builder.build().unwrap_or_else(|_| Gitignore::empty())
}

/// Where `dir/.git`'s `info/exclude` lives: `dir/.git` itself, or for a `.git` file (a linked
/// worktree) the common directory its git directory names; `None` when that cannot be told.
fn git_common_dir(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.join(".git");
    let is_file = std::fs::metadata(&dot_git).is_ok_and(|m| m.is_file());
    if !is_file {
        return Some(dot_git);
    }
    let first_line = |p: &Path| {
        let text = std::fs::read_to_string(p).ok()?;
        Some(text.lines().next()?.to_string())
    };
    let line = first_line(&dot_git)?;
    // Relative paths are git's: `gitdir:` from the directory of the `.git` file, `commondir`
    // from the git directory (never from the process's working directory).
    let git_dir = dir.join(line.strip_prefix("gitdir: ")?);
    let common = first_line(&git_dir.join("commondir"))?;
    Some(git_dir.join(common))
}

#[cfg(test)]
mod tests;
