//! The workspace file list an entry recorded (what `explain` and a miss's reasons compare), as
//! the index keeps it: a zstd-compressed run of binary records. One list is written per new
//! workspace digest, which in a 100k-file repository is every commit: as JSON it was 11 MB of
//! text to build, write into SQLite and parse back on every miss, about a tenth of a second on
//! each side of a task; this is a seventh of the bytes and a few milliseconds to encode or
//! decode. Lists written as JSON by earlier versions are still read.
//!
//! The format (`SWL1`, then zstd of): per file, its path (`u32` length, bytes), mode (`u32`),
//! then `F` with the 20-byte id and the size (`u64`), or `L` with the target (`u32` length,
//! bytes); little-endian.

use std::sync::Arc;

use strata_key::{FileId, FileKind, WorkspaceFile};

const MAGIC: &[u8; 4] = b"SWL1";

/// The list as the index stores it.
pub(crate) fn encode(files: &[WorkspaceFile]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(files.len() * 72);
    let put_str = |raw: &mut Vec<u8>, s: &[u8]| {
        raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
        raw.extend_from_slice(s);
    };
    for f in files {
        put_str(&mut raw, f.path.as_bytes());
        raw.extend_from_slice(&f.mode.to_le_bytes());
        match &f.kind {
            FileKind::File { digest, size } => {
                raw.push(b'F');
                raw.extend_from_slice(digest.as_bytes());
                raw.extend_from_slice(&size.to_le_bytes());
            }
            FileKind::Symlink { target } => {
                raw.push(b'L');
                put_str(&mut raw, target.as_bytes());
            }
        }
    }
    let mut out = MAGIC.to_vec();
    out.extend(zstd::bulk::compress(&raw, 1).expect("compressing into memory cannot fail"));
    out
}

/// A list as read from the index: this format, or the JSON of earlier versions.
pub(crate) fn decode(stored: rusqlite::types::ValueRef<'_>) -> Result<Vec<WorkspaceFile>, String> {
    match stored {
        rusqlite::types::ValueRef::Text(json) => {
            serde_json::from_slice(json).map_err(|e| e.to_string())
        }
        rusqlite::types::ValueRef::Blob(bytes) => decode_blob(bytes),
        other => Err(format!("a workspace list of type {:?}", other.data_type())),
    }
}

fn decode_blob(bytes: &[u8]) -> Result<Vec<WorkspaceFile>, String> {
    let packed = bytes
        .strip_prefix(MAGIC)
        .ok_or("a workspace list of an unknown format")?;
    let mut raw = Vec::new();
    zstd::stream::copy_decode(packed, &mut raw).map_err(|e| e.to_string())?;
    let mut r = Reader { raw: &raw, at: 0 };
    let mut files = Vec::new();
    while r.at < raw.len() {
        let path: Arc<str> = r.string()?.into();
        let mode = r.u32()?;
        let kind = match r.take(1)?[0] {
            b'F' => {
                let digest = FileId::from_bytes(r.take(20)?.try_into().expect("20 bytes"));
                let size = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
                FileKind::File { digest, size }
            }
            b'L' => FileKind::Symlink {
                target: r.string()?,
            },
            other => return Err(format!("a workspace list with a record of kind {other}")),
        };
        files.push(WorkspaceFile { path, mode, kind });
    }
    Ok(files)
}

struct Reader<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.raw.len())
            .ok_or("a truncated workspace list")?;
        let bytes = &self.raw[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| "a workspace list path that is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::ValueRef;

    fn sample() -> Vec<WorkspaceFile> {
        vec![
            WorkspaceFile {
                path: "a/b.txt".into(),
                mode: 0o644,
                kind: FileKind::File {
                    digest: FileId::from_bytes([7; 20]),
                    size: 12,
                },
            },
            WorkspaceFile {
                path: "bin/run ü".into(),
                mode: 0o755,
                kind: FileKind::File {
                    digest: FileId::from_bytes([0xab; 20]),
                    size: u64::MAX,
                },
            },
            WorkspaceFile {
                path: "link".into(),
                mode: 0o777,
                kind: FileKind::Symlink {
                    target: "a/b.txt".into(),
                },
            },
        ]
    }

    #[test]
    fn a_list_reads_back_as_written_and_json_lists_still_read() {
        let files = sample();
        assert_eq!(decode(ValueRef::Blob(&encode(&files))).unwrap(), files);
        assert_eq!(decode(ValueRef::Blob(&encode(&[]))).unwrap(), Vec::new());
        let json = serde_json::to_string(&files).unwrap();
        assert_eq!(decode(ValueRef::Text(json.as_bytes())).unwrap(), files);
    }

    #[test]
    fn damaged_lists_are_errors_not_panics() {
        let good = encode(&sample());
        let mut raw = Vec::new();
        zstd::stream::copy_decode(&good[4..], &mut raw).unwrap();
        // Every truncation of the records, and a record of an unknown kind.
        for cut in 0..raw.len() {
            let mut bad = MAGIC.to_vec();
            bad.extend(zstd::bulk::compress(&raw[..cut], 1).unwrap());
            let decoded = decode(ValueRef::Blob(&bad));
            assert!(
                decoded.is_err() || cut == 0 || decoded.unwrap().len() < 3,
                "cut {cut}"
            );
        }
        let mut kind = raw.clone();
        kind[4 + 7 + 4] = b'X';
        let mut bad = MAGIC.to_vec();
        bad.extend(zstd::bulk::compress(&kind, 1).unwrap());
        assert!(decode(ValueRef::Blob(&bad)).is_err());
        assert!(decode(ValueRef::Blob(b"SWL1not zstd")).is_err());
        assert!(decode(ValueRef::Blob(b"other")).is_err());
        assert!(decode(ValueRef::Integer(3)).is_err());
    }
}
