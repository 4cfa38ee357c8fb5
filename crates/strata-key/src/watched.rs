//! A capture's walk from the previous one and what a watcher of the workspace says changed
//! since (`strata watch`): the warm key without an `lstat` of every file.
//!
//! The previous walk is kept as a [`WalkCache`]: every file the walk kept (before a selection
//! narrows it), with its `lstat` and link target, the rules it was walked by, and the watcher's
//! [`WatchToken`] of the moment just before it. A watcher that can vouch for every change since
//! that token lists the changed paths; each is looked at again (`lstat`, and whether the walk
//! would keep it) and the rest is taken as it was. Anything that can change which files the walk
//! keeps beyond the paths themselves (a directory created, removed or renamed where the walk
//! descends, an ignore file, a `.git`) falls back to the whole walk, as does a watcher that
//! cannot vouch (another instance, an overflowed queue).
//!
//! What a watcher cannot see, this cannot either: writes through a shared memory mapping, and
//! writes through a hard link made from outside the workspace after the walk, change a file
//! without an event on its path (git's and watchman's fsmonitor have the same limit). That is
//! why watching is opt-in.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::dir_walk::{IgnoreFile, Keeper, WalkRules, Walked};
use crate::workspace::Seen;

/// A watcher's instance and a moment in its record of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchToken {
    /// Chosen at random when the watcher starts: a token of another instance means nothing.
    pub instance: [u8; 16],
    /// How many events the instance had taken in at that moment.
    pub generation: u64,
}

/// What a watcher said just before a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchAnswer {
    /// The moment of the answer: the walk made now is kept with it.
    pub now: WatchToken,
    /// The device and inode of the directory it watches: an answer about another directory
    /// than the workspace's path names now (a parent renamed) is no answer.
    pub root: (u64, u64),
    /// The watcher's mount namespace (the inode of `/proc/self/ns/mnt`): it sees mounts in that
    /// one only, so from another (a container) its answer is no answer.
    pub mount_ns: u64,
    /// Every path changed since the token asked about, or `None` when the watcher cannot say
    /// (no token, another instance, events lost).
    pub changed: Option<Vec<Changed>>,
}

/// A path the watcher saw an event for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Relative to the workspace root, `/`-separated.
    pub path: Vec<u8>,
    /// The event was about a directory (created, removed or renamed).
    pub dir: bool,
}

/// How a capture found its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalkHow {
    /// Every directory listed and every file `lstat`ed.
    #[default]
    Walked,
    /// The previous walk, with the paths a watcher named looked at again.
    Watched {
        /// How many changed paths the watcher named.
        changed: usize,
    },
}

const MAGIC: &[u8] = b"strata-walk-v3\0";
/// Magic, rules digest, instance, generation, root device and inode, ignore file count, entry
/// count.
const HEADER: usize = MAGIC.len() + 32 + 16 + 8 + 8 + 8 + 8 + 8;
/// A `Seen`: dev, ino, size, mtime (s, ns), ctime (s, ns), mode, uid, gid.
const SEEN: usize = 8 * 3 + 12 + 12 + 4 * 3;
/// An ignore file: present, its `Seen`, path length.
const IGNORE_RECORD: usize = 4 + SEEN + 4;
/// An entry: its `Seen`, flags, path length, target length.
const RECORD: usize = SEEN + 4 + 4 + 4;
/// The target length of an entry that is not a symlink.
const NO_TARGET: u32 = u32::MAX;
/// Flags: the file has other hard links.
const MANY_LINKS: u32 = 1;

/// The walk of an earlier capture, as its file holds it. Only a cache: anything unreadable in
/// it is no walk at all.
#[derive(Debug, Clone, Default)]
pub struct WalkCache {
    bytes: Vec<u8>,
}

/// What a walk cache holds besides its entries.
struct Kept {
    root: (u64, u64),
    ignore_files: Vec<IgnoreFile>,
}

impl WalkCache {
    pub fn from_vec(bytes: Vec<u8>) -> WalkCache {
        let ok = bytes.len() >= HEADER && bytes.starts_with(MAGIC);
        WalkCache {
            bytes: if ok { bytes } else { Vec::new() },
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn u64_at(&self, at: usize) -> Option<u64> {
        self.bytes.get(at..at + 8).map(|b| u64_at(b, 0))
    }

    /// The watcher's token the walk was made at, to ask what changed since.
    pub fn token(&self) -> Option<WatchToken> {
        let at = MAGIC.len() + 32;
        let instance = self.bytes.get(at..at + 16)?.try_into().ok()?;
        Some(WatchToken {
            instance,
            generation: self.u64_at(at + 16)?,
        })
    }

    fn rules(&self) -> Option<&[u8]> {
        self.bytes.get(MAGIC.len()..MAGIC.len() + 32)
    }

    pub(crate) fn new(
        rules: &[u8; 32],
        token: WatchToken,
        root: (u64, u64),
        walked: &[Walked],
        ignore_files: &[IgnoreFile],
    ) -> WalkCache {
        let paths: usize = walked
            .iter()
            .map(|w| w.rel.len() + w.link_target.as_ref().map_or(0, Vec::len))
            .sum();
        let mut b = Vec::with_capacity(HEADER + walked.len() * RECORD + paths);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(rules);
        b.extend_from_slice(&token.instance);
        for v in [
            token.generation,
            root.0,
            root.1,
            ignore_files.len() as u64,
            walked.len() as u64,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for f in ignore_files {
            b.extend_from_slice(&u32::from(f.stamp.is_some()).to_le_bytes());
            put_seen(&mut b, &f.stamp.unwrap_or_default());
            let path = f.path.as_os_str().as_bytes();
            b.extend_from_slice(&(path.len() as u32).to_le_bytes());
            b.extend_from_slice(path);
        }
        for w in walked {
            put_seen(&mut b, &w.seen);
            let flags = if w.many_links { MANY_LINKS } else { 0 };
            let target_len = w.link_target.as_ref().map_or(NO_TARGET, |t| t.len() as u32);
            for v in [flags, w.rel.len() as u32, target_len] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(w.rel.as_bytes());
            if let Some(t) = &w.link_target {
                b.extend_from_slice(t);
            }
        }
        WalkCache { bytes: b }
    }

    /// The walk's root, ignore files and entries, or `None` when the file is damaged (then the
    /// capture walks).
    fn decode(&self) -> Option<(Kept, Vec<Walked>)> {
        let at = MAGIC.len() + 32 + 16 + 8;
        let root = (self.u64_at(at)?, self.u64_at(at + 8)?);
        let ignore_count = self.u64_at(at + 16)?;
        let count = self.u64_at(at + 24)?;
        let mut rest = self.bytes.get(HEADER..)?;
        let mut ignore_files = Vec::new();
        for _ in 0..ignore_count {
            let (fixed, tail) = rest.split_at_checked(IGNORE_RECORD)?;
            let stamp = (u32_at(fixed, 0) == 1).then(|| get_seen(&fixed[4..]));
            let (path, tail) = tail.split_at_checked(u32_at(fixed, 4 + SEEN) as usize)?;
            ignore_files.push(IgnoreFile {
                path: Path::new(OsStr::from_bytes(path)).to_path_buf(),
                stamp,
            });
            rest = tail;
        }
        let mut out = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / RECORD));
        let mut last: Option<Arc<str>> = None;
        for _ in 0..count {
            let (fixed, tail) = rest.split_at_checked(RECORD)?;
            let seen = get_seen(fixed);
            let many_links = u32_at(fixed, SEEN) & MANY_LINKS != 0;
            let (path, tail) = tail.split_at_checked(u32_at(fixed, SEEN + 4) as usize)?;
            let (link_target, tail) = match u32_at(fixed, SEEN + 8) {
                NO_TARGET => (None, tail),
                n => {
                    let (t, tail) = tail.split_at_checked(n as usize)?;
                    (Some(t.to_vec()), tail)
                }
            };
            let rel: Arc<str> = std::str::from_utf8(path).ok()?.into();
            // Sorted and unique, as the walk made it: the merge below relies on it.
            if last.as_ref().is_some_and(|l| **l >= *rel) {
                return None;
            }
            last = Some(rel.clone());
            out.push(Walked {
                rel,
                seen,
                link_target,
                many_links,
            });
            rest = tail;
        }
        let kept = Kept { root, ignore_files };
        rest.is_empty().then_some((kept, out))
    }
}

fn put_seen(b: &mut Vec<u8>, s: &Seen) {
    for v in [s.dev, s.ino, s.size] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for (secs, nanos) in [s.mtime, s.ctime] {
        b.extend_from_slice(&secs.to_le_bytes());
        b.extend_from_slice(&nanos.to_le_bytes());
    }
    for v in [s.mode, s.uid, s.gid] {
        b.extend_from_slice(&v.to_le_bytes());
    }
}

/// The `Seen` at the start of `b`, which holds at least [`SEEN`] bytes.
fn get_seen(b: &[u8]) -> Seen {
    Seen {
        dev: u64_at(b, 0),
        ino: u64_at(b, 8),
        size: u64_at(b, 16),
        mtime: (u64_at(b, 24) as i64, u32_at(b, 32)),
        ctime: (u64_at(b, 36) as i64, u32_at(b, 44)),
        mode: u32_at(b, 48),
        uid: u32_at(b, 52),
        gid: u32_at(b, 56),
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// This process's mount namespace, as the inode of `/proc/self/ns/mnt`.
pub fn mount_ns() -> Option<u64> {
    rustix::fs::stat("/proc/self/ns/mnt")
        .ok()
        .map(|st| st.st_ino)
}

/// The device and inode of `root` now.
pub fn root_id(root: &Path) -> Option<(u64, u64)> {
    rustix::fs::stat(root).ok().map(|st| (st.st_dev, st.st_ino))
}

/// What identifies the rules of a walk (and the root it walked): a walk made by other rules
/// keeps other files, and is not reused.
pub(crate) fn rules_digest(root: &Path, rules: &WalkRules<'_>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"strata-walk-rules-v1\0");
    h.update(root.as_os_str().as_bytes());
    h.update(&[0, rules.git_dir as u8, rules.honour_ignores as u8]);
    for x in rules.exclude {
        h.update(x.as_os_str().as_bytes());
        h.update(&[0]);
    }
    *h.finalize().as_bytes()
}

/// The walk as it is now, from `previous` and the watcher's answer, with the ignore files it
/// rests on; `None` when only walking again can tell (see the module's documentation).
pub(crate) fn rewalk(
    root: &Path,
    rules: &WalkRules<'_>,
    previous: &WalkCache,
    answer: &WatchAnswer,
) -> Option<(Vec<Walked>, Vec<IgnoreFile>)> {
    let changed = answer.changed.as_ref()?;
    // The watcher leaves the insides of `.git` alone, so a walk that keeps them walks.
    if rules.git_dir || previous.rules() != Some(&rules_digest(root, rules)[..]) {
        return None;
    }
    let (kept, walked) = previous.decode()?;
    // The walk, the watcher and the path must all mean the same directory, seen through the
    // same mounts.
    if kept.root != answer.root
        || root_id(root)? != answer.root
        || mount_ns() != Some(answer.mount_ns)
    {
        return None;
    }
    // An ignore file the watcher cannot see change (a symlink's target, a linked worktree's
    // `info/exclude` outside the workspace) is looked at directly.
    if kept
        .ignore_files
        .iter()
        .any(|f| IgnoreFile::stamp_of(&f.path) != f.stamp)
    {
        return None;
    }
    let mut keeper = Keeper::new(root, rules);
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // The paths to look at again: those named, and files with other hard links (a write through
    // another name has no event here).
    let was_linked = |path: &[u8]| {
        walked
            .binary_search_by(|w| w.rel.as_bytes().cmp(path))
            .is_ok_and(|i| walked[i].many_links)
    };
    let linked: Vec<Arc<str>> = walked
        .iter()
        .filter(|w| w.many_links)
        .map(|w| w.rel.clone())
        .collect();
    let mut paths: Vec<(&[u8], bool)> = changed.iter().map(|c| (&c.path[..], c.dir)).collect();
    paths.extend(linked.iter().map(|p| (p.as_bytes(), false)));
    // Each one's entry as it is now: `None` for one the walk does not keep.
    let mut now: BTreeMap<&[u8], Option<Walked>> = BTreeMap::new();
    for (path, was_dir) in paths {
        if changes_what_is_kept(path) {
            return None;
        }
        // A directory the walk descends into was created, removed or renamed there (or is one
        // now): which files are under it, only a walk can say.
        if was_dir && keeper.keeps(path, true) {
            return None;
        }
        if now.contains_key(path) {
            continue;
        }
        let entry = match look_again(&root_fd, path)? {
            Found::Gone => None,
            Found::Dir if keeper.keeps(path, true) => return None,
            Found::Dir => None,
            // A file that has other names now and had not: a link was made, which changes the
            // other names' files without an event there. A walk finds them all.
            Found::Entry(w) if w.many_links && !was_linked(path) => return None,
            Found::Entry(w) => keeper.keeps(path, false).then_some(w),
        };
        now.insert(path, entry);
    }
    if now.is_empty() {
        return Some((walked, kept.ignore_files));
    }
    // Merge: both are in path order.
    let mut out = Vec::with_capacity(walked.len() + now.len());
    let mut now = now.into_iter().peekable();
    for w in walked {
        while let Some((path, _)) = now.peek()
            && *path < w.rel.as_bytes()
        {
            out.extend(now.next().and_then(|(_, e)| e));
        }
        match now.peek() {
            Some((path, _)) if *path == w.rel.as_bytes() => {
                out.extend(now.next().and_then(|(_, e)| e));
            }
            _ => out.push(w),
        }
    }
    out.extend(now.filter_map(|(_, e)| e));
    Some((out, kept.ignore_files))
}

/// Whether a change at `path` can change which other files the walk keeps: an ignore file, a
/// `.git` itself or what is under its `info/` (a repository's `info/exclude`), or the root.
/// Other files in a `.git` (git's index, refs) are never kept and change nothing.
fn changes_what_is_kept(path: &[u8]) -> bool {
    if path.is_empty() {
        return true;
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let last = parts[parts.len() - 1];
    matches!(last, b".gitignore" | b".ignore" | b".git")
        || parts.windows(2).any(|w| w[0] == b".git" && w[1] == b"info")
}

/// What is at a changed path now.
enum Found {
    Gone,
    Dir,
    /// A regular file or a symlink (whether the walk keeps it is for the caller to say).
    Entry(Walked),
}

/// A changed path, looked at again; `None` when only a whole walk can say (it cannot be read).
/// FIFOs, sockets and devices are never part of the workspace: gone, as far as it goes.
fn look_again(root: &rustix::fd::OwnedFd, rel: &[u8]) -> Option<Found> {
    let name = OsStr::from_bytes(rel);
    let st = match rustix::fs::statat(root, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Some(Found::Gone),
        Err(_) => return None,
    };
    let link_target = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => None,
        FileType::Symlink => Some(
            rustix::fs::readlinkat(root, name, Vec::new())
                .ok()?
                .into_bytes(),
        ),
        FileType::Directory => return Some(Found::Dir),
        _ => return Some(Found::Gone),
    };
    let rel: Arc<str> = std::str::from_utf8(rel).ok()?.into();
    Some(Found::Entry(Walked {
        rel,
        seen: Seen::of_stat(&st),
        link_target,
        many_links: FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_nlink > 1,
    }))
}

/// Whether a capture that reused the walk should write it again. The walk kept with its older
/// token stays right however much changed since (the watcher names every change since that
/// token, and each is looked at again), so it is rewritten only once the list of changes is
/// long enough to cost more than writing it (a few MB for 100k files, on every edit otherwise).
pub(crate) fn worth_keeping(changed: usize) -> bool {
    changed > 256
}
