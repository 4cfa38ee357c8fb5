//! The workspace as captured when a run starts: every file the pipeline may see (honouring
//! `.gitignore`, never `.git`), with its mode and content digest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::WorkspaceDigest;
use crate::dir_walk::{self, WalkRules, Walked};
use crate::file_id::{FileId, FileIdError, id_of_reader};
use crate::git_checkout::{self, GitCheckout};
use crate::stat_cache::{Stamp, StatCache};
use crate::watched::{self, WalkCache, WalkHow, WatchAnswer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// `digest` is the content's git blob id, however it was obtained (see [`FileId`]).
    File {
        digest: FileId,
        size: u64,
    },
    Symlink {
        target: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceFile {
    /// Relative to the workspace root, `/`-separated. Shared, not copied, when every task's
    /// selection of a large workspace is made.
    pub path: std::sync::Arc<str>,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub kind: FileKind,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("failed to read workspace {root}")]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error("failed to read workspace directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read workspace file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Id(#[from] FileIdError),
    #[error("workspace path {path} is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
}

/// Which files a capture keeps: only those some task will see are read and hashed.
#[derive(Default)]
pub struct Selection<'a> {
    /// Keep a file (by its relative path) or not; all files when `None`.
    pub files: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
    /// Include the top-level `.git` directory (`preserve-git-dir`), whose files are then found
    /// under `.git/`.
    pub git_dir: bool,
    /// Keep files that `.gitignore` and `.git/info/exclude` would leave out (a host path, not a
    /// checkout).
    pub no_ignore: bool,
    /// Never take ids from git's index, hashing every file (what a directory outside git gets;
    /// tests compare the two).
    pub ignore_git_index: bool,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    /// Sorted by path.
    pub files: Vec<WorkspaceFile>,
    /// How the capture found each file (lstat before read, so a file edited while it was read
    /// shows an mtime no newer than its content, and a later change shows in its ctime), in the
    /// order of `files`; empty when unknown. Never part of a digest: the tasks' trees show the
    /// mtimes, and a task given the checkout itself is checked against the rest afterwards.
    pub seen: Vec<Seen>,
}

/// A file as the capture's `lstat` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// The whole `st_mode`: file type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Seen {
    pub fn of_stat(st: &rustix::fs::Stat) -> Seen {
        Seen {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

impl Workspace {
    /// Walks and hashes the workspace. `exclude` lists absolute paths to leave out (the cache
    /// directory when it lives inside the workspace).
    pub fn capture(root: &Path, exclude: &[PathBuf]) -> Result<Workspace, WorkspaceError> {
        Self::capture_with(root, exclude, &StatCache::default()).map(|(ws, _)| ws)
    }

    /// The same, reading only files that `known` cannot vouch for; also returns the stat cache
    /// to keep for the next capture, or `None` when `known` is still exactly right.
    pub fn capture_with(
        root: &Path,
        exclude: &[PathBuf],
        known: &StatCache,
    ) -> Result<(Workspace, Option<StatCache>), WorkspaceError> {
        Self::capture_selected(root, exclude, known, &Selection::default())
    }

    /// The same, keeping (and reading) only the files `selection` asks for.
    pub fn capture_selected(
        root: &Path,
        exclude: &[PathBuf],
        known: &StatCache,
        selection: &Selection<'_>,
    ) -> Result<(Workspace, Option<StatCache>), WorkspaceError> {
        Self::capture_counted(root, exclude, known, selection).map(|(ws, stats, _)| (ws, stats))
    }

    /// The same, also saying where each regular file's id came from.
    pub fn capture_counted(
        root: &Path,
        exclude: &[PathBuf],
        known: &StatCache,
        selection: &Selection<'_>,
    ) -> Result<(Workspace, Option<StatCache>, IdSources), WorkspaceError> {
        Self::capture_watched(root, exclude, known, selection, None)
            .map(|c| (c.workspace, c.stat_cache, c.sources))
    }

    /// The same, finding the files from the previous walk and what a watcher of the workspace
    /// says changed since, when `watch` is given and the watcher can vouch (see
    /// [`crate::WatchAnswer`]); otherwise by walking, and then keeping the walk for next time.
    pub fn capture_watched(
        root: &Path,
        exclude: &[PathBuf],
        known: &StatCache,
        selection: &Selection<'_>,
        watch: Option<Watch<'_>>,
    ) -> Result<Captured, WorkspaceError> {
        let fresh = StatCache::starting_now();
        let root = root.to_path_buf();
        let use_git = !(selection.ignore_git_index || selection.no_ignore);
        let rules = WalkRules {
            exclude,
            git_dir: selection.git_dir,
            honour_ignores: !selection.no_ignore,
        };
        // A checkout's first capture here takes the ids of clean tracked files from git's index
        // and keeps none of them (a fresh clone on an ephemeral machine would write a copy of
        // the index, 10 MB for 100k files, to use it never again). A later capture that read a
        // file (an edit), or runs under a watcher, keeps them too (below): writing 10 MB more
        // is cheap then, where writing them on a rerun with nothing changed would cost it more
        // than the index does. Once the cache holds as many ids as the index has entries, the
        // index (its read, its parse, a `git config`) is left alone unless the files the cache
        // cannot vouch for are many (below).
        let keep_git_ids = known.was_kept();
        let git_ahead =
            use_git && git_checkout::index_entries(&root).is_none_or(|n| known.len() < n as usize);
        let (walked, git) = std::thread::scope(|s| {
            // Read while the directories are walked rather than after.
            let git = git_ahead.then(|| s.spawn(|| GitCheckout::open(&root)));
            let walked = walk_or_rewalk(&root, &rules, watch.as_ref());
            let git = git.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (walked, git)
        });
        // The checkout's index when read ahead (`Some(None)`: none to trust); `None` when left
        // alone, to be opened only if the misses below are worth it.
        let git: Option<Option<GitCheckout>> = git;
        let (mut walked, walk, walk_cache) = walked?;
        if let Some(wanted) = selection.files {
            walked.retain(|w| wanted(&w.rel));
        }
        // Only a watcher's answer gives a later question to ask about them.
        let linked = match watch {
            Some(_) => walked
                .iter()
                .filter(|w| w.many_links)
                .map(|w| w.rel.clone())
                .collect(),
            None => Vec::new(),
        };

        // Ids known without reading, in path order (the stat cache and the index are sorted
        // the same way, so each lookup starts where the previous one ended).
        let mut files = Vec::with_capacity(walked.len());
        let mut seen = Vec::with_capacity(walked.len());
        let mut sources = Vec::with_capacity(walked.len());
        let mut to_read = Vec::new();
        // Files neither the stat cache nor an index read ahead vouched for.
        let mut misses = Vec::new();
        let mut cursors = (0, 0);
        for w in walked {
            let (kind, source) = match w.link_target {
                Some(target) => {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    (FileKind::Symlink { target }, None)
                }
                None => {
                    let now = Stamp::of_seen(&w.seen);
                    let known_id = match known.lookup_near(&w.rel, &now, &mut cursors.0) {
                        Some(id) => Some((id, IdSource::Remembered)),
                        None => git
                            .as_ref()
                            .and_then(Option::as_ref)
                            .and_then(|g| g.clean_id(&w.rel, &w.seen, &mut cursors.1))
                            .map(|id| (id, IdSource::GitIndex)),
                    };
                    let (digest, source) = known_id.unwrap_or_else(|| {
                        misses.push(files.len());
                        (FileId::from_bytes([0; 20]), IdSource::Read)
                    });
                    let size = w.seen.size;
                    (FileKind::File { digest, size }, Some(source))
                }
            };
            files.push(WorkspaceFile {
                path: w.rel,
                mode: w.seen.mode & 0o7777,
                kind,
            });
            seen.push(w.seen);
            sources.push(source);
        }
        // The index left alone: opened (10 MB for 100k files) only for misses that would cost
        // more to read than it does; a few edited files are read.
        let missed_bytes: u64 = misses.iter().map(|&i| seen[i].size).sum();
        let few = misses.len() <= REREAD_FILES && missed_bytes <= REREAD_BYTES;
        let index = match (git.is_none() && use_git && !few).then(|| GitCheckout::open(&root)) {
            Some(Some(index)) => Some(index),
            _ => None,
        };
        let mut cursor = 0;
        for i in misses {
            let id = index
                .as_ref()
                .and_then(|g| g.clean_id(&files[i].path, &seen[i], &mut cursor));
            match (id, &mut files[i].kind) {
                (Some(id), FileKind::File { digest, .. }) => {
                    *digest = id;
                    sources[i] = Some(IdSource::GitIndex);
                }
                _ => to_read.push(i),
            }
        }
        read_in_parallel(&root, &mut files, &seen, &to_read)?;

        let mut counted = IdSources::default();
        for source in sources.iter().flatten() {
            match source {
                IdSource::Remembered => counted.remembered += 1,
                IdSource::GitIndex => counted.git_index += 1,
                IdSource::Read => counted.read += 1,
            }
        }
        // A cache to keep (it is rewritten whole: 12 MB for 100k files) only when that pays:
        // on a first capture, as the mark that the next is not one; when git's index gave ids it
        // can keep from now on (after an edit, as above, or under a watcher, where the index
        // would otherwise be the largest cost of every run); and when many files were read or
        // many entries went stale. A few edited files are read again by the next capture
        // instead, which costs less than the write (the dev loop: one edit, one run).
        let read_bytes: u64 = to_read.iter().map(|&i| seen[i].size).sum();
        let stale = known.len().saturating_sub(counted.remembered);
        let index_to_keep =
            keep_git_ids && counted.git_index > 0 && (counted.read > 0 || watch.is_some());
        let changed = !keep_git_ids
            || index_to_keep
            || counted.read > REREAD_FILES
            || read_bytes > REREAD_BYTES
            || stale > REREAD_FILES.max(known.len() / 8);
        let fresh = changed.then(|| {
            let mut fresh = fresh;
            for ((file, seen), source) in files.iter().zip(&seen).zip(&sources) {
                let keep = match source {
                    Some(IdSource::Remembered | IdSource::Read) => true,
                    Some(IdSource::GitIndex) => keep_git_ids,
                    None => false,
                };
                if let (true, FileKind::File { digest, .. }) = (keep, &file.kind) {
                    fresh.insert(&file.path, Stamp::of_seen(seen), *digest);
                }
            }
            fresh
        });
        // Nothing new to remember: the old cache (and the time it was taken) stays valid.
        Ok(Captured {
            workspace: Workspace { root, files, seen },
            stat_cache: fresh,
            sources: counted,
            walk_cache,
            walk,
            linked,
        })
    }

    /// The mtime the capture found for the file at `path`, if it captured it.
    pub fn mtime(&self, path: &str) -> Option<(i64, u32)> {
        let i = self.files.binary_search_by(|f| (*f.path).cmp(path)).ok()?;
        self.seen.get(i).map(|s| s.mtime)
    }

    /// The files whose path `wanted` keeps (a task's filter).
    pub fn select<'a>(
        &'a self,
        wanted: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = &'a WorkspaceFile> {
        self.files.iter().filter(move |f| wanted(&f.path))
    }

    /// Digest of a selection of files: paths, modes and contents, in path order.
    pub fn digest<'a>(files: impl Iterator<Item = &'a WorkspaceFile>) -> WorkspaceDigest {
        use std::fmt::Write;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"strata-workspace-v2\0");
        // Records are gathered into large blocks: BLAKE3 hashes a block's chunks side by side
        // (SIMD), which small per-file updates would not allow. This runs over every file of the
        // workspace for every task.
        let mut buf = String::with_capacity(1 << 20);
        for f in files {
            if buf.len() > (1 << 20) - 4096 {
                hasher.update(buf.as_bytes());
                buf.clear();
            }
            buf.push_str(&f.path);
            let _ = write!(buf, "\0{:o}\0", f.mode);
            match &f.kind {
                FileKind::File { digest, .. } => {
                    buf.push_str("f ");
                    digest.write_hex(&mut buf);
                }
                FileKind::Symlink { target } => {
                    buf.push_str("l ");
                    buf.push_str(target);
                }
            }
            buf.push('\0');
        }
        hasher.update(buf.as_bytes());
        WorkspaceDigest::from_hash(hasher.finalize())
    }
}

/// How many files read (or bytes), or stale entries, make a capture rewrite the stat cache
/// rather than leave the next capture to read those files again.
const REREAD_FILES: usize = 256;
const REREAD_BYTES: u64 = 64 << 20;

/// A watcher's answer and the walk it answered about (see [`Workspace::capture_watched`]).
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub answer: &'a WatchAnswer,
    /// The walk kept by the previous capture (empty when there is none).
    pub previous: &'a WalkCache,
}

/// What a capture found, and what to keep of it for the next.
#[derive(Debug)]
pub struct Captured {
    pub workspace: Workspace,
    /// The stat cache to keep, or `None` when the one given is still exactly right.
    pub stat_cache: Option<StatCache>,
    /// Where each regular file's id came from.
    pub sources: IdSources,
    /// The walk to keep for the watcher's next answer, or `None` (no watcher, or the one kept is
    /// still right).
    pub walk_cache: Option<WalkCache>,
    /// How the files were found.
    pub walk: WalkHow,
    /// The regular files kept that have other hard links, in path order, when a watcher
    /// answered (else empty): a write through another name is no event a watcher of the
    /// workspace sees, so they are looked at directly.
    pub linked: Vec<std::sync::Arc<str>>,
}

/// The kept files: from the previous walk and the watcher's answer when it can vouch, else by
/// walking; with the walk to keep when a watcher is there to answer next time.
fn walk_or_rewalk(
    root: &Path,
    rules: &WalkRules<'_>,
    watch: Option<&Watch<'_>>,
) -> Result<(Vec<Walked>, WalkHow, Option<WalkCache>), WorkspaceError> {
    let Some(watch) = watch else {
        return Ok((dir_walk::walk(root, rules)?, WalkHow::Walked, None));
    };
    let digest = watched::rules_digest(root, rules);
    let answer = watch.answer;
    if let Some((walked, ignore_files)) = watched::rewalk(root, rules, watch.previous, answer) {
        let changed = answer.changed.as_ref().map_or(0, Vec::len);
        let keep = watched::worth_keeping(changed)
            .then(|| WalkCache::new(&digest, answer.now, answer.root, &walked, &ignore_files));
        return Ok((walked, WalkHow::Watched { changed }, keep));
    }
    // The directory as it is when the walk starts; a walk of another than the watcher's is
    // never reused (its root differs from every answer's).
    let root_now = watched::root_id(root).unwrap_or((0, 0));
    let (walked, ignore_files) = dir_walk::walk_noting(root, rules)?;
    let keep = WalkCache::new(&digest, answer.now, root_now, &walked, &ignore_files);
    Ok((walked, WalkHow::Walked, Some(keep)))
}

/// How many regular files' ids a capture took from where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdSources {
    /// From the stat cache of an earlier capture.
    pub remembered: usize,
    /// From git's index (clean tracked files).
    pub git_index: usize,
    /// Hashed from the file's bytes.
    pub read: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdSource {
    Remembered,
    GitIndex,
    Read,
}

/// Reads the files at `to_read` (indices into `files`, whose `seen` is their `lstat`) and sets
/// their ids, on all CPUs. The stat came first: a file edited while it is read shows a stamp
/// no newer than the content read, so the stat cache never vouches for a newer one.
fn read_in_parallel(
    root: &Path,
    files: &mut [WorkspaceFile],
    seen: &[Seen],
    to_read: &[usize],
) -> Result<(), WorkspaceError> {
    if to_read.is_empty() {
        return Ok(());
    }
    let root_fd = rustix::fs::open(
        root,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| WorkspaceError::ReadDir {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = to_read.len().div_ceil(threads).max(16);
    let ids = std::thread::scope(|s| {
        let handles: Vec<_> = to_read
            .chunks(chunk)
            .map(|part| {
                let (files, root_fd) = (&*files, &root_fd);
                s.spawn(move || {
                    part.iter()
                        .map(|&i| {
                            let path = &*files[i].path;
                            let fd = rustix::fs::openat(
                                root_fd,
                                path,
                                rustix::fs::OFlags::RDONLY
                                    | rustix::fs::OFlags::NOFOLLOW
                                    | rustix::fs::OFlags::CLOEXEC,
                                rustix::fs::Mode::empty(),
                            )
                            .map_err(|e| WorkspaceError::Read {
                                path: root.join(path),
                                source: e.into(),
                            })?;
                            let id = id_of_reader(
                                std::fs::File::from(fd),
                                seen[i].size,
                                &root.join(path),
                            )?;
                            Ok::<_, WorkspaceError>((i, id))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("hashing thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    for (i, id) in ids.into_iter().flatten() {
        if let FileKind::File { digest, .. } = &mut files[i].kind {
            *digest = id;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn id(bytes: &[u8]) -> FileId {
        FileId::of_bytes(bytes, Path::new("test")).unwrap()
    }

    #[test]
    fn honours_gitignore_and_skips_git() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(root.join(".gitignore"), "target/\n*.log\n").unwrap();
        std::fs::create_dir(root.join("target")).unwrap();
        std::fs::write(root.join("target/out"), "x").unwrap();
        std::fs::write(root.join("build.log"), "x").unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/main.c"), "int main;").unwrap();
        let ws = Workspace::capture(root, &[]).unwrap();
        let paths: Vec<&str> = ws.files.iter().map(|f| &*f.path).collect();
        assert_eq!(paths, vec![".gitignore", "src/main.c"]);
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "one").unwrap();
        std::fs::write(d.path().join("b"), "two").unwrap();
        let (_, cache) = Workspace::capture_with(d.path(), &[], &StatCache::default()).unwrap();
        let cache = cache.expect("a first capture has something to remember");
        assert_eq!(cache.len(), 2);
        // A cache that vouches for `a` with a made-up digest: a capture that trusts it reports
        // the made-up digest, which proves it did not read `a`.
        let made_up = id(b"made up");
        let cache = cache.settled_with("a", made_up);
        let digest_of = |ws: &Workspace, i: usize| match &ws.files[i].kind {
            FileKind::File { digest, .. } => *digest,
            FileKind::Symlink { .. } => unreachable!(),
        };
        let (ws, _) = Workspace::capture_with(d.path(), &[], &cache).unwrap();
        assert_eq!(digest_of(&ws, 0), made_up);
        // Any change to the file (content, size, mode: ctime moves) makes it read again.
        std::fs::write(d.path().join("a"), "one!").unwrap();
        let (ws, _) = Workspace::capture_with(d.path(), &[], &cache).unwrap();
        assert_eq!(digest_of(&ws, 0), id(b"one!"));
        std::fs::set_permissions(d.path().join("b"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let cache = Workspace::capture_with(d.path(), &[], &StatCache::default())
            .unwrap()
            .1
            .expect("a first capture has something to remember")
            .settled_with("b", made_up);
        std::fs::set_permissions(d.path().join("b"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let (ws, _) = Workspace::capture_with(d.path(), &[], &cache).unwrap();
        assert_eq!(digest_of(&ws, 1), id(b"two"));
    }

    #[test]
    fn a_few_edits_leave_the_stat_cache_and_are_read_again_many_rewrite_it() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..300 {
            std::fs::write(d.path().join(format!("f{i}")), "old").unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (_, cache) = Workspace::capture_with(d.path(), &[], &StatCache::default()).unwrap();
        let cache = cache.expect("a first capture is kept");
        let id_of = |ws: &Workspace, name: &str| {
            let i = ws.files.iter().position(|f| &*f.path == name).unwrap();
            match &ws.files[i].kind {
                FileKind::File { digest, .. } => *digest,
                FileKind::Symlink { .. } => unreachable!(),
            }
        };
        std::fs::write(d.path().join("f7"), "new").unwrap();
        for _ in 0..2 {
            let (ws, again, sources) =
                Workspace::capture_counted(d.path(), &[], &cache, &Selection::default()).unwrap();
            assert!(again.is_none(), "one edit does not rewrite the cache");
            assert_eq!(sources.read, 1, "the edited file is read, every time");
            assert_eq!(id_of(&ws, "f7"), id(b"new"));
        }
        for i in 0..300 {
            std::fs::write(d.path().join(format!("f{i}")), "newer").unwrap();
        }
        let (ws, again, _) =
            Workspace::capture_counted(d.path(), &[], &cache, &Selection::default()).unwrap();
        assert!(again.is_some(), "300 files read: the cache is rewritten");
        assert_eq!(id_of(&ws, "f299"), id(b"newer"));
    }

    #[test]
    fn a_selection_reads_only_what_it_keeps() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(root.join("keep.c"), "k").unwrap();
        std::fs::write(root.join("skip.c"), "s").unwrap();
        let only_keep = |p: &str| p != "skip.c";
        let selection = Selection {
            files: Some(&only_keep),
            git_dir: true,
            ..Selection::default()
        };
        let (ws, _) =
            Workspace::capture_selected(root, &[], &StatCache::default(), &selection).unwrap();
        let paths: Vec<&str> = ws.files.iter().map(|f| &*f.path).collect();
        assert_eq!(paths, vec![".git/HEAD", "keep.c"]);
    }

    #[test]
    fn filter_narrows_and_changes_digest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "a").unwrap();
        std::fs::write(d.path().join("b.txt"), "b").unwrap();
        let ws = Workspace::capture(d.path(), &[]).unwrap();
        let only_a = |p: &str| p == "a.txt";
        assert_eq!(ws.select(only_a).count(), 1);
        let before = Workspace::digest(ws.select(only_a));
        std::fs::write(d.path().join("b.txt"), "changed").unwrap();
        let ws2 = Workspace::capture(d.path(), &[]).unwrap();
        assert_eq!(before, Workspace::digest(ws2.select(only_a)));
        assert_ne!(
            Workspace::digest(ws.select(|_| true)),
            Workspace::digest(ws2.select(|_| true))
        );
    }
}
