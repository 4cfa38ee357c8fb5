//! SHA-256 digests as OCI names them (`sha256:<hex>`), and readers/writers that compute one on the
//! fly so that content is hashed in the same pass that moves it.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A content digest in OCI form. Only `sha256` is produced or accepted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct OciDigest([u8; 32]);

impl OciDigest {
    pub fn of(bytes: &[u8]) -> OciDigest {
        OciDigest(Sha256::digest(bytes).into())
    }

    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Option<OciDigest> {
        let hex = s.strip_prefix("sha256:")?;
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let nibble = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(OciDigest(out))
    }

    /// The bare hex part, as used in file names (`blobs/sha256/<hex>`).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl fmt::Display for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OciDigest({})", self.short())
    }
}

impl From<OciDigest> for String {
    fn from(d: OciDigest) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for OciDigest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        OciDigest::parse(&s).ok_or_else(|| format!("invalid digest `{s}` (expected sha256:<hex>)"))
    }
}

/// A reader that hashes and counts what passes through it.
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R) -> Self {
        DigestReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Reads what is left, so that the digest covers the whole stream.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    pub fn finish(self) -> (OciDigest, u64) {
        (OciDigest(self.hasher.finalize().into()), self.len)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub fn finish(self) -> (W, OciDigest, u64) {
        (
            self.inner,
            OciDigest(self.hasher.finalize().into()),
            self.len,
        )
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints() {
        let d = OciDigest::of(b"hello");
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(OciDigest::parse(&d.to_string()), Some(d));
        assert_eq!(OciDigest::parse("sha512:00"), None);
        assert_eq!(
            OciDigest::parse(&format!("sha256:{}", "G".repeat(64))),
            None
        );
    }

    #[test]
    fn readers_and_writers_hash_what_passes() {
        let mut r = DigestReader::new(&b"hello"[..]);
        r.drain().unwrap();
        assert_eq!(r.finish(), (OciDigest::of(b"hello"), 5));
        let mut w = DigestWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (buf, d, n) = w.finish();
        assert_eq!(
            (buf.as_slice(), d, n),
            (&b"hello"[..], OciDigest::of(b"hello"), 5)
        );
    }
}
