//! Remembered file digests, so that a workspace whose files did not change is not read again
//! (git's index does the same). A file's digest is reused only when its inode, size, mode, mtime
//! and ctime are exactly those recorded *and* it was last changed before the capture that
//! recorded it began: a file written during or after that capture (which might share its mtime
//! with a later write) is always read again.
//!
//! This crate only encodes and decodes the cache; the store keeps the bytes.

use crate::file_id::FileId;

// v2: ids are git blob ids (20 bytes), not BLAKE3 digests.
const MAGIC: &[u8] = b"strata-stat-v2\0";

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    pub(crate) mtime: (i64, u32),
    ctime: (i64, u32),
    mode: u32,
}

impl Stamp {
    pub(crate) fn of_seen(seen: &crate::workspace::Seen) -> Stamp {
        Stamp {
            dev: seen.dev,
            ino: seen.ino,
            size: seen.size,
            mtime: seen.mtime,
            ctime: seen.ctime,
            mode: seen.mode,
        }
    }

    #[cfg(test)]
    pub(crate) fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            ctime: (meta.ctime(), meta.ctime_nsec() as u32),
            mode: meta.mode(),
        }
    }
}

/// File digests by workspace-relative path, and when they were taken. Entries are kept sorted
/// by path in one string buffer: a workspace's files come sorted, so building the cache is an
/// append, loading it allocates twice, and a lookup is a binary search.
#[derive(Debug, Clone, Default)]
pub struct StatCache {
    /// When the capture that recorded these began (seconds, nanoseconds since the epoch).
    taken_at: (i64, u32),
    paths: String,
    /// (start, length) of the path in `paths`, stamp, digest; sorted by path.
    entries: Vec<(u32, u32, Stamp, FileId)>,
}

impl StatCache {
    /// An empty cache for a capture starting now. "Now" as the filesystem's timestamps see it:
    /// the kernel stamps files from its coarse clock, which can lag the precise one by a tick,
    /// so a file written just after a precise "now" could carry an earlier mtime and pass for
    /// settled. Against the coarse clock, a later write never stamps earlier.
    pub(crate) fn starting_now() -> StatCache {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        StatCache {
            taken_at: (now.tv_sec, now.tv_nsec as u32),
            ..StatCache::default()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn path(&self, i: usize) -> &str {
        let (start, len, ..) = self.entries[i];
        &self.paths[start as usize..(start + len) as usize]
    }

    fn find(&self, rel: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.entries.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.path(mid).cmp(rel) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The recorded digest of `rel`, if the file provably has not changed since.
    #[cfg(test)]
    pub(crate) fn lookup(&self, rel: &str, stamp: &Stamp) -> Option<FileId> {
        self.lookup_near(rel, stamp, &mut 0)
    }

    /// [`StatCache::lookup`] for files asked in path order: `cursor` (where the previous file
    /// was found, plus one) is tried before a binary search, which a capture's sorted files
    /// almost never need.
    pub(crate) fn lookup_near(
        &self,
        rel: &str,
        stamp: &Stamp,
        cursor: &mut usize,
    ) -> Option<FileId> {
        let i = if *cursor < self.entries.len() && self.path(*cursor) == rel {
            *cursor
        } else {
            self.find(rel)?
        };
        *cursor = i + 1;
        let (_, _, recorded, digest) = self.entries[i];
        let settled = stamp.mtime < self.taken_at && stamp.ctime < self.taken_at;
        (recorded == *stamp && settled).then_some(digest)
    }

    /// Records a file; files must come in increasing path order (as a capture lists them).
    pub(crate) fn insert(&mut self, rel: &str, stamp: Stamp, digest: FileId) {
        debug_assert!(self.entries.is_empty() || self.path(self.entries.len() - 1) < rel);
        let start = self.paths.len() as u32;
        self.paths.push_str(rel);
        self.entries.push((start, rel.len() as u32, stamp, digest));
    }

    /// For tests: a cache that trusts every recorded stamp, with `rel` said to have `digest`.
    #[cfg(test)]
    pub(crate) fn settled_with(mut self, rel: &str, digest: FileId) -> StatCache {
        self.taken_at = (i64::MAX, 0);
        if let Some(i) = self.find(rel) {
            self.entries[i].3 = digest;
        }
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 20 + self.paths.len() + self.len() * 84);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.taken_at.0.to_le_bytes());
        out.extend_from_slice(&self.taken_at.1.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (i, (_, len, s, digest)) in self.entries.iter().enumerate() {
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(self.path(i).as_bytes());
            for v in [s.dev, s.ino, s.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for (secs, nanos) in [s.mtime, s.ctime] {
                out.extend_from_slice(&secs.to_le_bytes());
                out.extend_from_slice(&nanos.to_le_bytes());
            }
            out.extend_from_slice(&s.mode.to_le_bytes());
            out.extend_from_slice(digest.as_bytes());
        }
        out
    }

    /// Decodes a cache; anything unreadable is an empty cache (it is only an optimisation).
    pub fn from_bytes(bytes: &[u8]) -> StatCache {
        Self::decode(bytes).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<StatCache> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        let taken_at = (r.i64()?, r.u32()?);
        let count = r.u64()?;
        let mut cache = StatCache {
            taken_at,
            paths: String::with_capacity(bytes.len() / 2),
            entries: Vec::with_capacity(count.min(1 << 24) as usize),
        };
        for _ in 0..count {
            let len = r.u32()? as usize;
            let path = std::str::from_utf8(r.take(len)?).ok()?;
            if !cache.is_empty() && cache.path(cache.len() - 1) >= path {
                return None;
            }
            let stamp = Stamp {
                dev: r.u64()?,
                ino: r.u64()?,
                size: r.u64()?,
                mtime: (r.i64()?, r.u32()?),
                ctime: (r.i64()?, r.u32()?),
                mode: r.u32()?,
            };
            let digest = FileId::from_bytes(r.take(20)?.try_into().ok()?);
            cache.insert(path, stamp, digest);
        }
        r.0.is_empty().then_some(cache)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let stamp = Stamp::of(&std::fs::metadata(&f).unwrap());
        let mut c = StatCache::starting_now();
        c.insert(
            "f",
            stamp,
            FileId::of_bytes(b"x", std::path::Path::new("f")).unwrap(),
        );
        let back = StatCache::from_bytes(&c.to_bytes());
        assert_eq!(back.len(), 1);
        assert_eq!(back.entries, c.entries);
        assert!(StatCache::from_bytes(b"nonsense").is_empty());
        let mut cut = c.to_bytes();
        cut.pop();
        assert!(StatCache::from_bytes(&cut).is_empty());
    }

    #[test]
    fn a_file_changed_after_the_capture_began_is_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        let c = StatCache::starting_now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&f, "x").unwrap();
        let stamp = Stamp::of(&std::fs::metadata(&f).unwrap());
        let mut c = c;
        c.insert(
            "f",
            stamp,
            FileId::of_bytes(b"x", std::path::Path::new("f")).unwrap(),
        );
        // Written after the capture began: it could change again within the same mtime.
        assert_eq!(c.lookup("f", &stamp), None);
        let later = StatCache {
            taken_at: (i64::MAX, 0),
            ..c.clone()
        };
        assert!(later.lookup("f", &stamp).is_some());
        let mut other = stamp;
        other.size += 1;
        assert_eq!(later.lookup("f", &other), None);
    }
}
