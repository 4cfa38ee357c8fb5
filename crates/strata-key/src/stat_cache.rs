//! Remembered file digests, so that a workspace whose files did not change is not read again
//! (git's index does the same). A file's digest is reused only when its inode, size, mode, mtime
//! and ctime are exactly those recorded *and* it was last changed before the capture that
//! recorded it began: a file written during or after that capture (which might share its mtime
//! with a later write) is always read again.
//!
//! This crate only encodes and decodes the cache; the store keeps the bytes.

use crate::file_id::FileId;

// v2: ids are git blob ids (20 bytes), not BLAKE3 digests. v3: fixed-size records, then the
// paths, so that loading is one read and no per-entry work.
const MAGIC: &[u8] = b"strata-stat-v3\0";

/// One entry on disk and in memory: path (start, length) in the paths, dev, ino, size, mtime
/// (seconds, nanoseconds), ctime (likewise), mode, id.
const RECORD: usize = 4 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 4 + 20;
/// Magic, `taken_at`, entry count, paths length.
const HEADER: usize = MAGIC.len() + 8 + 4 + 8 + 8;

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

/// File digests by workspace-relative path, and when they were taken. Kept as the bytes of its
/// file format, records sorted by path: a workspace's files come sorted, so building the cache
/// is an append, loading it is one read with nothing decoded until a lookup asks, and a lookup
/// is a comparison with the entry after the previous one (or a binary search).
#[derive(Debug, Clone, Default)]
pub struct StatCache {
    /// When the capture that recorded these began (seconds, nanoseconds since the epoch).
    taken_at: (i64, u32),
    /// Holds the records from `records_at` on (a loaded cache keeps its header before them).
    records: Vec<u8>,
    records_at: usize,
    paths: Vec<u8>,
}

/// One record, read from its bytes.
struct Record<'a>(&'a [u8]);

impl Record<'_> {
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }
    fn path_span(&self) -> (usize, usize) {
        (self.u32_at(0) as usize, self.u32_at(4) as usize)
    }
    fn stamp(&self) -> Stamp {
        Stamp {
            dev: self.u64_at(8),
            ino: self.u64_at(16),
            size: self.u64_at(24),
            mtime: (self.u64_at(32) as i64, self.u32_at(40)),
            ctime: (self.u64_at(44) as i64, self.u32_at(52)),
            mode: self.u32_at(56),
        }
    }
    fn id(&self) -> FileId {
        FileId::from_bytes(self.0[60..80].try_into().expect("20 bytes"))
    }
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

    /// Whether this cache was kept by an earlier capture (an empty one loaded from its file
    /// counts), rather than being a first capture's nothing.
    pub(crate) fn was_kept(&self) -> bool {
        self.taken_at != (0, 0)
    }

    pub fn len(&self) -> usize {
        (self.records.len() - self.records_at) / RECORD
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record(&self, i: usize) -> Record<'_> {
        let at = self.records_at + i * RECORD;
        Record(&self.records[at..at + RECORD])
    }

    /// The path of entry `i`; empty when the record points outside the paths (a damaged file:
    /// then the entry matches nothing and the file is read).
    fn path(&self, i: usize) -> &[u8] {
        let (start, len) = self.record(i).path_span();
        self.paths.get(start..start + len).unwrap_or_default()
    }

    fn find(&self, rel: &str) -> Option<usize> {
        let rel = rel.as_bytes();
        let (mut lo, mut hi) = (0, self.len());
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
        let i = if *cursor < self.len() && self.path(*cursor) == rel.as_bytes() {
            *cursor
        } else {
            self.find(rel)?
        };
        *cursor = i + 1;
        let record = self.record(i);
        let settled = stamp.mtime < self.taken_at && stamp.ctime < self.taken_at;
        (record.stamp() == *stamp && settled).then(|| record.id())
    }

    /// Records a file; files must come in increasing path order (as a capture lists them).
    pub(crate) fn insert(&mut self, rel: &str, stamp: Stamp, digest: FileId) {
        debug_assert!(self.is_empty() || self.path(self.len() - 1) < rel.as_bytes());
        let start = self.paths.len() as u32;
        self.paths.extend_from_slice(rel.as_bytes());
        let r = &mut self.records;
        r.extend_from_slice(&start.to_le_bytes());
        r.extend_from_slice(&(rel.len() as u32).to_le_bytes());
        for v in [stamp.dev, stamp.ino, stamp.size] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        for (secs, nanos) in [stamp.mtime, stamp.ctime] {
            r.extend_from_slice(&secs.to_le_bytes());
            r.extend_from_slice(&nanos.to_le_bytes());
        }
        r.extend_from_slice(&stamp.mode.to_le_bytes());
        r.extend_from_slice(digest.as_bytes());
    }

    /// For tests: a cache that trusts every recorded stamp, with `rel` said to have `digest`.
    #[cfg(test)]
    pub(crate) fn settled_with(mut self, rel: &str, digest: FileId) -> StatCache {
        self.taken_at = (i64::MAX, 0);
        if let Some(i) = self.find(rel) {
            let at = self.records_at + i * RECORD + 60;
            self.records[at..at + 20].copy_from_slice(digest.as_bytes());
        }
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let records = &self.records[self.records_at..];
        let mut out = Vec::with_capacity(HEADER + records.len() + self.paths.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.taken_at.0.to_le_bytes());
        out.extend_from_slice(&self.taken_at.1.to_le_bytes());
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.paths.len() as u64).to_le_bytes());
        out.extend_from_slice(records);
        out.extend_from_slice(&self.paths);
        out
    }

    /// Decodes a cache; anything unreadable is an empty cache (it is only an optimisation).
    pub fn from_bytes(bytes: &[u8]) -> StatCache {
        Self::from_vec(bytes.to_vec())
    }

    /// [`StatCache::from_bytes`], keeping `bytes` rather than copying them.
    pub fn from_vec(bytes: Vec<u8>) -> StatCache {
        Self::decode(bytes).unwrap_or_default()
    }

    /// Only the sizes are checked here: a record whose path lies outside the paths matches
    /// nothing, and records out of order only cost binary searches that miss (then reads).
    fn decode(mut bytes: Vec<u8>) -> Option<StatCache> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        let taken_at = (r.i64()?, r.u32()?);
        let count = usize::try_from(r.u64()?).ok()?;
        let paths_len = usize::try_from(r.u64()?).ok()?;
        let records_len = count.checked_mul(RECORD)?;
        if bytes.len() != HEADER.checked_add(records_len)?.checked_add(paths_len)? {
            return None;
        }
        let paths = bytes.split_off(HEADER + records_len);
        Some(StatCache {
            taken_at,
            records: bytes,
            records_at: HEADER,
            paths,
        })
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
        assert_eq!(back.to_bytes(), c.to_bytes());
        assert_eq!(back.lookup("f", &stamp), c.lookup("f", &stamp));
        assert_eq!(back.record(0).stamp(), stamp);
        assert!(StatCache::from_bytes(b"nonsense").is_empty());
        let mut cut = c.to_bytes();
        cut.pop();
        assert!(StatCache::from_bytes(&cut).is_empty());
        // A record pointing outside the paths: loaded, matches nothing, never panics.
        let mut damaged = c.to_bytes();
        damaged[HEADER..HEADER + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let damaged = StatCache::from_vec(damaged);
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged.lookup("f", &stamp), None);
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
