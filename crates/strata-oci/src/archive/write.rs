//! Layer directory -> OCI layer archive. The tar stream is hashed (the `diff_id`) before it enters
//! the compressor and the compressed stream is hashed (the blob digest) on its way out, so one
//! pass over the tree yields the archive and both digests.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Compression, OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, PAX_XATTR_PREFIX, WHITEOUT_PREFIX};
use crate::digest::{DigestWriter, OciDigest};

/// A finished layer archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerArchive {
    /// The digest of the compressed blob (what a manifest names).
    pub digest: OciDigest,
    /// The size of the compressed blob.
    pub size: u64,
    /// The digest of the uncompressed tar stream (what an image config lists).
    pub diff_id: OciDigest,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to archive {path}")]
pub struct ArchiveError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the layer directory `root` to `out` as an OCI layer, compressed as asked (zstd with
/// `threads` worker threads, 0 meaning the calling thread; gzip for tools that predate zstd).
pub fn write_layer<W: Write>(
    root: &Path,
    out: W,
    compression: Compression,
    threads: u32,
) -> Result<LayerArchive, ArchiveError> {
    let compressed = DigestWriter::new(out);
    let encoder = match compression {
        Compression::Zstd => {
            let mut e = zstd::Encoder::new(compressed, 3).map_err(err(root))?;
            if threads > 0 {
                e.multithread(threads).map_err(err(root))?;
            }
            Encoder::Zstd(e)
        }
        Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
            compressed,
            flate2::Compression::default(),
        )),
        Compression::None => Encoder::Plain(compressed),
    };
    let plain = DigestWriter::new(encoder);
    let mut builder = tar::Builder::new(plain);
    let mut writer = TreeWriter {
        builder: &mut builder,
        links: HashMap::new(),
    };
    writer.dir(root, Path::new(""))?;
    let plain = builder.into_inner().map_err(err(root))?;
    let (encoder, diff_id, _) = plain.finish();
    let compressed = encoder.finish().map_err(err(root))?;
    let (mut out, digest, size) = compressed.finish();
    out.flush().map_err(err(root))?;
    Ok(LayerArchive {
        digest,
        size,
        diff_id,
    })
}

enum Encoder<W: Write> {
    Zstd(zstd::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    Plain(W),
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

struct TreeWriter<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    /// (dev, inode) -> the archive path of the first name of a multiply-linked file.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> TreeWriter<'_, W> {
    fn dir(&mut self, dir: &Path, rel: &Path) -> Result<(), ArchiveError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(err(dir))?
            .collect::<Result<_, _>>()
            .map_err(err(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            self.entry(&entry.path(), &rel.join(&name), &name)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &Path, name: &OsStr) -> Result<(), ArchiveError> {
        let meta = std::fs::symlink_metadata(path).map_err(err(path))?;
        let ft = meta.file_type();
        let mut header = tar::Header::new_ustar();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(meta.uid() as u64);
        header.set_gid(meta.gid() as u64);
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(0);
        let xattrs = read_xattrs(path).map_err(err(path))?;
        let opaque = xattrs
            .iter()
            .any(|(n, v)| n == OVERLAY_OPAQUE_XATTR && v.as_slice() == b"y");
        // Overlay's own xattrs describe how the upper dir was made, not the files.
        let xattrs: Vec<_> = xattrs
            .into_iter()
            .filter(|(n, _)| !n.starts_with("trusted.overlay."))
            .collect();
        if ft.is_char_device() && meta.rdev() == 0 {
            // An overlay whiteout: `.wh.NAME` beside where NAME was.
            let mut wh_name = std::ffi::OsString::from(WHITEOUT_PREFIX);
            wh_name.push(name);
            let wh = rel.with_file_name(wh_name);
            header.set_entry_type(tar::EntryType::Regular);
            return self.append(&mut header, &wh, io::empty(), path);
        }
        let mut pax: Vec<(String, Vec<u8>)> = xattrs
            .into_iter()
            .map(|(n, v)| (format!("{PAX_XATTR_PREFIX}{n}"), v))
            .collect();
        if ft.is_symlink() {
            // Written literally: the tar crate's own link setter normalizes `a//b` to `a/b`, and
            // a layer must keep its link targets byte for byte.
            let target = std::fs::read_link(path).map_err(err(path))?;
            let bytes = target.as_os_str().as_bytes();
            if bytes.len() < header.as_old().linkname.len() {
                header.set_link_name_literal(bytes).map_err(err(path))?;
            } else {
                pax.push(("linkpath".to_string(), bytes.to_vec()));
            }
        }
        self.pax(&pax, path)?;
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            self.append(&mut header, rel, io::empty(), path)?;
            if opaque {
                let mut marker = tar::Header::new_ustar();
                marker.set_mode(0o644);
                marker.set_mtime(meta.mtime().max(0) as u64);
                marker.set_size(0);
                marker.set_entry_type(tar::EntryType::Regular);
                self.append(&mut marker, &rel.join(OPAQUE_MARKER), io::empty(), path)?;
            }
            return self.dir(path, rel);
        }
        if ft.is_file() {
            if meta.nlink() > 1 {
                let id = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&id) {
                    header.set_entry_type(tar::EntryType::Link);
                    let first = first.clone();
                    return self
                        .builder
                        .append_link(&mut header, rel, &first)
                        .map_err(err(path));
                }
                self.links.insert(id, rel.to_path_buf());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(path).map_err(err(path))?;
            return self.append(&mut header, rel, file, path);
        }
        if ft.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            return self.append(&mut header, rel, io::empty(), path);
        }
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else if ft.is_fifo() {
            tar::EntryType::Fifo
        } else {
            // Sockets cannot be archived (tar has no type for them) and mean nothing once the
            // process that bound them is gone.
            return Ok(());
        };
        header.set_entry_type(kind);
        if kind != tar::EntryType::Fifo {
            let rdev = meta.rdev();
            header
                .set_device_major(rustix::fs::major(rdev))
                .map_err(err(path))?;
            header
                .set_device_minor(rustix::fs::minor(rdev))
                .map_err(err(path))?;
        }
        self.append(&mut header, rel, io::empty(), path)
    }

    fn append(
        &mut self,
        header: &mut tar::Header,
        rel: &Path,
        data: impl io::Read,
        source: &Path,
    ) -> Result<(), ArchiveError> {
        self.builder
            .append_data(header, rel, data)
            .map_err(err(source))
    }

    /// One PAX header carrying every extended record of the next entry.
    fn pax(&mut self, records: &[(String, Vec<u8>)], path: &Path) -> Result<(), ArchiveError> {
        if records.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(err(path))
    }
}

/// The extended attributes of `path` (not following symlinks), sorted by name.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("xattr names have no NUL");
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut value)?;
        value.truncate(len);
        out.push((
            OsStr::from_bytes(name).to_string_lossy().into_owned(),
            value,
        ));
    }
    out.sort();
    Ok(out)
}
