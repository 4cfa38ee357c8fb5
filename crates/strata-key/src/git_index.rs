//! A reader of git's index file (`.git/index`, versions 2, 3 and 4), keeping of each entry
//! what decides whether its blob id can stand for the file in the work tree: the stat data git
//! recorded, the mode, the stage and the flags that say git does not look at the file.
//!
//! Hand-written rather than borrowed from a git library: it is small, it only reads, and it is
//! fuzzed (`fuzz/fuzz_targets/git_index.rs`). Untrusted bytes never panic it; anything it does
//! not understand is an error, and the caller then hashes every file instead.
//! Format: git's `Documentation/gitformat-index.txt`.

use sha1::Digest;

use crate::file_id::FileId;

/// Why an index cannot be used (the capture then hashes every file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("not an index file (no `DIRC` signature)")]
    Signature,
    #[error("index version {0} is not supported")]
    Version(u32),
    #[error("the index is cut short")]
    Truncated,
    #[error("the index's checksum does not match its content")]
    Checksum,
    #[error("an index path is not valid UTF-8 or is out of order")]
    BadPath,
    /// The entries are only part of the index (split index: `link`; sparse index: `sdir`), or
    /// an extension git marks as required is unknown.
    #[error("index extension `{0}` is not supported")]
    Extension(String),
}

/// The stat data git recorded for an entry, as git stores it: 32-bit fields (seconds, sizes,
/// inode and device numbers truncated to their low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexStat {
    pub(crate) ctime: (u32, u32),
    pub(crate) mtime: (u32, u32),
    pub(crate) dev: u32,
    pub(crate) ino: u32,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) stat: IndexStat,
    pub(crate) id: FileId,
    /// Merge stage: 0 for a normal entry, 1–3 for the sides of a conflict.
    pub(crate) stage: u8,
    /// `assume-unchanged` (git does not stat the file), `skip-worktree` (not checked out) or
    /// intent-to-add (the id is that of an empty blob, not the file's): git does not vouch for
    /// the file's content.
    pub(crate) unverified: bool,
}

/// The entries of an index, sorted by path (bytewise, as git sorts them) then stage.
#[derive(Debug, Default)]
pub struct GitIndex {
    paths: String,
    entries: Vec<(u32, u32, IndexEntry)>,
}

const ASSUME_VALID: u16 = 0x8000;
const EXTENDED: u16 = 0x4000;
const SKIP_WORKTREE: u16 = 0x4000;
const INTENT_TO_ADD: u16 = 0x2000;

impl GitIndex {
    /// Parses an index file. `verify` checks its trailing SHA-1 (a torn or corrupt index must
    /// not hand out ids); an all-zero trailer (`index.skipHash`) is accepted unchecked.
    pub fn parse(bytes: &[u8], verify: bool) -> Result<GitIndex, IndexError> {
        if bytes.len() < 12 + 20 {
            return Err(IndexError::Truncated);
        }
        if &bytes[..4] != b"DIRC" {
            return Err(IndexError::Signature);
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 20);
        if verify && trailer.iter().any(|&b| b != 0) {
            let sum = sha1::Sha1::digest(body);
            if sum.as_slice() != trailer {
                return Err(IndexError::Checksum);
            }
        }
        let mut r = Reader { bytes: body, at: 4 };
        let version = r.u32()?;
        if !(2..=4).contains(&version) {
            return Err(IndexError::Version(version));
        }
        let count = r.u32()? as usize;
        let mut index = GitIndex {
            paths: String::new(),
            // Each entry takes at least 62 bytes: a count larger than that allows is a lie.
            entries: Vec::with_capacity(count.min(body.len() / 62)),
        };
        let mut previous: Vec<u8> = Vec::new();
        for _ in 0..count {
            let start = r.at;
            let mut f = [0u32; 10];
            for v in &mut f {
                *v = r.u32()?;
            }
            let stat = IndexStat {
                ctime: (f[0], f[1]),
                mtime: (f[2], f[3]),
                dev: f[4],
                ino: f[5],
                mode: f[6],
                uid: f[7],
                gid: f[8],
                size: f[9],
            };
            let id = FileId::from_bytes(r.take(20)?.try_into().expect("20 bytes"));
            let flags = r.u16()?;
            let extended = if flags & EXTENDED != 0 {
                if version < 3 {
                    return Err(IndexError::Version(version));
                }
                r.u16()?
            } else {
                0
            };
            let name_len = (flags & 0x0fff) as usize;
            // One buffer for every path: version 4 builds each from the one before.
            if version == 4 {
                // Prefix-compressed: drop N bytes from the end of the previous path, then add
                // the NUL-terminated suffix.
                let strip = r.varint()?;
                let keep = previous
                    .len()
                    .checked_sub(strip)
                    .ok_or(IndexError::BadPath)?;
                previous.truncate(keep);
                previous.extend_from_slice(r.until_nul()?);
            } else {
                previous.clear();
                previous.extend_from_slice(r.until_nul()?);
                // Entries are padded with 1–8 NULs to a multiple of 8 bytes; the NUL read
                // above is the first.
                let len = r.at - start;
                let padded = (len + 7) & !7;
                r.take(padded - len)?;
            }
            let path = previous.as_slice();
            if name_len < 0x0fff && name_len != path.len() {
                return Err(IndexError::BadPath);
            }
            let stage = ((flags >> 12) & 3) as u8;
            if let Some((s, l, e)) = index.entries.last() {
                let last = &index.paths.as_bytes()[*s as usize..(*s + *l) as usize];
                if (last, e.stage) >= (path, stage) {
                    return Err(IndexError::BadPath);
                }
            }
            let text = std::str::from_utf8(path).map_err(|_| IndexError::BadPath)?;
            let at = u32::try_from(index.paths.len()).map_err(|_| IndexError::Truncated)?;
            index.paths.push_str(text);
            index.entries.push((
                at,
                path.len() as u32,
                IndexEntry {
                    stat,
                    id,
                    stage,
                    unverified: flags & ASSUME_VALID != 0
                        || extended & (SKIP_WORKTREE | INTENT_TO_ADD) != 0,
                },
            ));
        }
        // Extensions: skipped, except those that mean the entries above are not the whole
        // index, and unknown ones git requires readers to understand (lowercase first letter).
        while r.at < body.len() {
            let sig = r.take(4)?;
            let size = r.u32()? as usize;
            r.take(size)?;
            let name = String::from_utf8_lossy(sig).into_owned();
            match sig {
                b"link" | b"sdir" => return Err(IndexError::Extension(name)),
                _ if sig[0].is_ascii_uppercase() => {}
                _ => return Err(IndexError::Extension(name)),
            }
        }
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn path(&self, i: usize) -> &str {
        let (s, l, _) = self.entries[i];
        &self.paths[s as usize..(s + l) as usize]
    }

    /// The stage-0 entry of `path` when it is the only entry of that path (a path with
    /// conflict stages is in the middle of a merge: not clean).
    pub(crate) fn entry(&self, path: &str) -> Option<&IndexEntry> {
        self.entry_near(path, &mut 0)
    }

    /// [`GitIndex::entry`] for paths asked in sorted order: the entry after the previous one
    /// found (`cursor`) is tried before a binary search.
    pub(crate) fn entry_near(&self, path: &str, cursor: &mut usize) -> Option<&IndexEntry> {
        let i = if *cursor < self.entries.len() && self.path(*cursor) == path {
            *cursor
        } else {
            self.lower_bound(path)
        };
        if i >= self.entries.len() || self.path(i) != path {
            return None;
        }
        *cursor = i + 1;
        let e = &self.entries[i].2;
        let alone = i + 1 >= self.entries.len() || self.path(i + 1) != path;
        (e.stage == 0 && alone).then_some(e)
    }

    fn lower_bound(&self, path: &str) -> usize {
        let (mut lo, mut hi) = (0, self.entries.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.path(mid) < path {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Whether `path` has an entry whose id could stand for the file (before its stat data is
    /// compared): for the fuzz target.
    pub fn has_clean_candidate(&self, path: &str) -> bool {
        self.entry(path).is_some()
    }

    /// Every path of the index (for tests and the fuzz target).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        (0..self.entries.len()).map(|i| self.path(i))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        let end = self.at.checked_add(n).ok_or(IndexError::Truncated)?;
        let s = self.bytes.get(self.at..end).ok_or(IndexError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, IndexError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, IndexError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn until_nul(&mut self) -> Result<&'a [u8], IndexError> {
        let rest = &self.bytes[self.at..];
        let n = memchr_nul(rest).ok_or(IndexError::Truncated)?;
        self.at += n + 1;
        Ok(&rest[..n])
    }
    /// git's offset varint: big-endian groups of 7 bits, each continuation adding one.
    fn varint(&mut self) -> Result<usize, IndexError> {
        let mut c = self.take(1)?[0];
        let mut v = (c & 0x7f) as usize;
        while c & 0x80 != 0 {
            c = self.take(1)?[0];
            v = v
                .checked_add(1)
                .and_then(|v| v.checked_mul(128))
                .and_then(|v| v.checked_add((c & 0x7f) as usize))
                .ok_or(IndexError::BadPath)?;
        }
        Ok(v)
    }
}

fn memchr_nul(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an index the way git lays it out, for the parser's own tests (real indexes
    /// written by git are read in `tests/git_index.rs`).
    fn build(version: u32, entries: &[(&str, u16, u16)]) -> Vec<u8> {
        let mut out = b"DIRC".to_vec();
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        let mut previous = "";
        for (path, flags, ext) in entries {
            let start = out.len();
            for v in [1u32, 2, 3, 4, 5, 6, 0o100644, 7, 8, 9] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&[0xab; 20]);
            out.extend_from_slice(&(flags | path.len() as u16).to_be_bytes());
            if flags & EXTENDED != 0 {
                out.extend_from_slice(&ext.to_be_bytes());
            }
            if version == 4 {
                let common = previous
                    .bytes()
                    .zip(path.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                out.push((previous.len() - common) as u8);
                out.extend_from_slice(&path.as_bytes()[common..]);
                out.push(0);
            } else {
                out.extend_from_slice(path.as_bytes());
                out.push(0);
                while !(out.len() - start).is_multiple_of(8) {
                    out.push(0);
                }
            }
            previous = path;
        }
        out.extend_from_slice(b"TREE");
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"abc");
        let sum = sha1::Sha1::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    #[test]
    fn reads_every_version_and_flag() {
        for version in [2, 3, 4] {
            let ext = if version >= 3 { EXTENDED } else { 0 };
            let bytes = build(
                version,
                &[
                    ("a/b", 0, 0),
                    ("a/c", ASSUME_VALID, 0),
                    ("conflict", 1 << 12, 0),
                    ("conflict", 2 << 12, 0),
                    ("d", ext, if ext != 0 { SKIP_WORKTREE } else { 0 }),
                    ("dd/e", 0, 0),
                ],
            );
            let index = GitIndex::parse(&bytes, true).unwrap();
            assert_eq!(
                index.paths().collect::<Vec<_>>(),
                ["a/b", "a/c", "conflict", "conflict", "d", "dd/e"]
            );
            let b = index.entry("a/b").unwrap();
            assert_eq!(b.stat.mode, 0o100644);
            assert_eq!(b.stat.size, 9);
            assert!(!b.unverified);
            assert!(index.entry("a/c").unwrap().unverified);
            assert!(index.entry("conflict").is_none());
            assert_eq!(index.entry("d").unwrap().unverified, ext != 0);
            assert!(index.entry("dd/e").is_some());
            assert!(index.entry("a").is_none() && index.entry("zz").is_none());
        }
    }

    #[test]
    fn rejects_what_it_cannot_trust() {
        let mut bytes = build(2, &[("a", 0, 0)]);
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert_eq!(
            GitIndex::parse(&bytes, true).unwrap_err(),
            IndexError::Checksum
        );
        let bytes = build(2, &[("b", 0, 0), ("a", 0, 0)]);
        assert_eq!(
            GitIndex::parse(&bytes, true).unwrap_err(),
            IndexError::BadPath
        );
        let mut bytes = build(2, &[("a", 0, 0)]);
        bytes.truncate(bytes.len() - 20);
        let at = bytes.len() - 11;
        bytes[at..at + 4].copy_from_slice(b"link");
        let sum = sha1::Sha1::digest(&bytes);
        bytes.extend_from_slice(&sum);
        assert_eq!(
            GitIndex::parse(&bytes, true).unwrap_err(),
            IndexError::Extension("link".into())
        );
        assert_eq!(
            GitIndex::parse(b"DIRC\0\0\0\x05\0\0\0\0aaaaaaaaaaaaaaaaaaaa", false).unwrap_err(),
            IndexError::Version(5)
        );
        for cut in 0..40 {
            let bytes = build(4, &[("a", 0, 0), ("ab", 0, 0)]);
            assert!(GitIndex::parse(&bytes[..cut], false).is_err());
        }
    }
}
