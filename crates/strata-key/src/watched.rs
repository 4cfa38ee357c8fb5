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
//! writes through a hard link outside the workspace, change a file without an event on its
//! path (git's and watchman's fsmonitor have the same limit). That is why watching is opt-in.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::dir_walk::{Keeper, WalkRules, Walked};
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

const MAGIC: &[u8] = b"strata-walk-v1\0";
/// Magic, rules digest, instance, generation, entry count.
const HEADER: usize = MAGIC.len() + 32 + 16 + 8 + 8;
/// dev, ino, size, mtime (s, ns), ctime (s, ns), mode, uid, gid, path length, target length.
const RECORD: usize = 8 * 3 + 12 + 12 + 4 * 3 + 4 + 4;
/// The target length of an entry that is not a symlink.
const NO_TARGET: u32 = u32::MAX;

/// The walk of an earlier capture, as its file holds it. Only a cache: anything unreadable in
/// it is no walk at all.
#[derive(Debug, Clone, Default)]
pub struct WalkCache {
    bytes: Vec<u8>,
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

    /// The watcher's token the walk was made at, to ask what changed since.
    pub fn token(&self) -> Option<WatchToken> {
        let at = MAGIC.len() + 32;
        let instance = self.bytes.get(at..at + 16)?.try_into().ok()?;
        let generation = u64::from_le_bytes(self.bytes.get(at + 16..at + 24)?.try_into().ok()?);
        Some(WatchToken {
            instance,
            generation,
        })
    }

    fn rules(&self) -> Option<&[u8]> {
        self.bytes.get(MAGIC.len()..MAGIC.len() + 32)
    }

    pub(crate) fn new(rules: &[u8; 32], token: WatchToken, walked: &[Walked]) -> WalkCache {
        let paths: usize = walked
            .iter()
            .map(|w| w.rel.len() + w.link_target.as_ref().map_or(0, Vec::len))
            .sum();
        let mut b = Vec::with_capacity(HEADER + walked.len() * RECORD + paths);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(rules);
        b.extend_from_slice(&token.instance);
        b.extend_from_slice(&token.generation.to_le_bytes());
        b.extend_from_slice(&(walked.len() as u64).to_le_bytes());
        for w in walked {
            let s = &w.seen;
            for v in [s.dev, s.ino, s.size] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for (secs, nanos) in [s.mtime, s.ctime] {
                b.extend_from_slice(&secs.to_le_bytes());
                b.extend_from_slice(&nanos.to_le_bytes());
            }
            for v in [s.mode, s.uid, s.gid, w.rel.len() as u32] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            let target_len = w.link_target.as_ref().map_or(NO_TARGET, |t| t.len() as u32);
            b.extend_from_slice(&target_len.to_le_bytes());
            b.extend_from_slice(w.rel.as_bytes());
            if let Some(t) = &w.link_target {
                b.extend_from_slice(t);
            }
        }
        WalkCache { bytes: b }
    }

    /// The walk's entries, or `None` when the file is damaged (then the capture walks).
    fn entries(&self) -> Option<Vec<Walked>> {
        let count = u64::from_le_bytes(self.bytes.get(HEADER - 8..HEADER)?.try_into().ok()?);
        let mut rest = &self.bytes[HEADER..];
        let mut out = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / RECORD));
        let mut last: Option<Arc<str>> = None;
        for _ in 0..count {
            let (fixed, tail) = rest.split_at_checked(RECORD)?;
            let u64_at = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().unwrap());
            let u32_at = |at: usize| u32::from_le_bytes(fixed[at..at + 4].try_into().unwrap());
            let seen = Seen {
                dev: u64_at(0),
                ino: u64_at(8),
                size: u64_at(16),
                mtime: (u64_at(24) as i64, u32_at(32)),
                ctime: (u64_at(36) as i64, u32_at(44)),
                mode: u32_at(48),
                uid: u32_at(52),
                gid: u32_at(56),
            };
            let path_len = u32_at(60) as usize;
            let target_len = u32_at(64);
            let (path, tail) = tail.split_at_checked(path_len)?;
            let (target, tail) = match target_len {
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
                link_target: target,
            });
            rest = tail;
        }
        rest.is_empty().then_some(out)
    }
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

/// The walk as it is now, from `previous` and the watcher's changed paths; `None` when only
/// walking again can tell (see the module's documentation).
pub(crate) fn rewalk(
    root: &Path,
    rules: &WalkRules<'_>,
    previous: &WalkCache,
    changed: &[Changed],
) -> Option<Vec<Walked>> {
    // The watcher leaves the insides of `.git` alone, so a walk that keeps them walks.
    if rules.git_dir || previous.rules() != Some(&rules_digest(root, rules)[..]) {
        return None;
    }
    let walked = previous.entries()?;
    let mut keeper = Keeper::new(root, rules);
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // The changed paths' entries as they are now: `None` for one the walk no longer keeps.
    let mut now: BTreeMap<&[u8], Option<Walked>> = BTreeMap::new();
    for c in changed {
        if changes_what_is_kept(&c.path) {
            return None;
        }
        if c.dir {
            if keeper.keeps(&c.path, true) {
                return None;
            }
            continue;
        }
        if now.contains_key(&c.path[..]) {
            continue;
        }
        let entry = if keeper.keeps(&c.path, false) {
            look_again(&root_fd, &c.path)?
        } else {
            None
        };
        now.insert(&c.path, entry);
    }
    if now.is_empty() {
        return Some(walked);
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
    Some(out)
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

/// A changed path the walk would keep, looked at again: `Ok(None)` when it is gone (or is no
/// longer a file or symlink), `None` when only a whole walk can say (it is now a directory, or
/// cannot be read).
fn look_again(root: &rustix::fd::OwnedFd, rel: &[u8]) -> Option<Option<Walked>> {
    let name = OsStr::from_bytes(rel);
    let st = match rustix::fs::statat(root, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Some(None),
        Err(_) => return None,
    };
    let link_target = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => None,
        FileType::Symlink => Some(
            rustix::fs::readlinkat(root, name, Vec::new())
                .ok()?
                .into_bytes(),
        ),
        FileType::Directory => return None,
        _ => return Some(None),
    };
    let rel: Arc<str> = std::str::from_utf8(rel).ok()?.into();
    Some(Some(Walked {
        rel,
        seen: Seen::of_stat(&st),
        link_target,
    }))
}

/// Whether a capture that reused the walk should write it again. The walk kept with its older
/// token stays right however much changed since (the watcher names every change since that
/// token, and each is looked at again), so it is rewritten only once the list of changes is
/// long enough to cost more than writing it (a few MB for 100k files, on every edit otherwise).
pub(crate) fn worth_keeping(changed: usize) -> bool {
    changed > 256
}
