//! Remembered file digests, so that a workspace whose files did not change is not read again
//! (git's index does the same). A file's digest is reused only when its inode, size, mode, mtime
//! and ctime are exactly those recorded *and* it was last changed before the capture that
//! recorded it began: a file written during or after that capture (which might share its mtime
//! with a later write) is always read again.
//!
//! This crate only encodes and decodes the cache; the store keeps the bytes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::digest::ContentDigest;

const MAGIC: &[u8] = b"strata-stat-v1\0";

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
    mode: u32,
}

impl Stamp {
    pub(crate) fn of_stat(st: &rustix::fs::Stat) -> Stamp {
        Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
            mode: st.st_mode,
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

/// File digests by workspace-relative path, and when they were taken.
#[derive(Debug, Clone, Default)]
pub struct StatCache {
    /// When the capture that recorded these began (seconds, nanoseconds since the epoch).
    taken_at: (i64, u32),
    entries: HashMap<String, (Stamp, ContentDigest), BuildHasherDefault<PathHasher>>,
}

/// A fast, non-cryptographic hasher for the map of workspace paths (the Fx hash of rustc):
/// the keys are our own paths, not attacker-chosen, and the map is hit once per file per run.
#[derive(Default)]
struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl StatCache {
    /// An empty cache for a capture starting now.
    pub(crate) fn starting_now() -> StatCache {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        StatCache {
            taken_at: (now.as_secs() as i64, now.subsec_nanos()),
            entries: HashMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The recorded digest of `rel`, if the file provably has not changed since.
    pub(crate) fn lookup(&self, rel: &str, stamp: &Stamp) -> Option<ContentDigest> {
        let (recorded, digest) = self.entries.get(rel)?;
        let settled = stamp.mtime < self.taken_at && stamp.ctime < self.taken_at;
        (recorded == stamp && settled).then_some(*digest)
    }

    pub(crate) fn insert(&mut self, rel: String, stamp: Stamp, digest: ContentDigest) {
        self.entries.insert(rel, (stamp, digest));
    }

    /// For tests: a cache that trusts every recorded stamp, with `rel` said to have `digest`.
    #[cfg(test)]
    pub(crate) fn settled_with(mut self, rel: &str, digest: ContentDigest) -> StatCache {
        self.taken_at = (i64::MAX, 0);
        if let Some(entry) = self.entries.get_mut(rel) {
            entry.1 = digest;
        }
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 20 + self.entries.len() * 120);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.taken_at.0.to_le_bytes());
        out.extend_from_slice(&self.taken_at.1.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (path, (s, digest)) in &self.entries {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
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
        let mut entries = HashMap::with_capacity_and_hasher(
            count.min(1 << 24) as usize,
            BuildHasherDefault::default(),
        );
        for _ in 0..count {
            let len = r.u32()? as usize;
            let path = std::str::from_utf8(r.take(len)?).ok()?.to_string();
            let stamp = Stamp {
                dev: r.u64()?,
                ino: r.u64()?,
                size: r.u64()?,
                mtime: (r.i64()?, r.u32()?),
                ctime: (r.i64()?, r.u32()?),
                mode: r.u32()?,
            };
            let digest = ContentDigest::from_bytes(r.take(32)?.try_into().ok()?);
            entries.insert(path, (stamp, digest));
        }
        r.0.is_empty().then_some(StatCache { taken_at, entries })
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
            "f".into(),
            stamp,
            ContentDigest::from_hash(blake3::hash(b"x")),
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
            "f".into(),
            stamp,
            ContentDigest::from_hash(blake3::hash(b"x")),
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
