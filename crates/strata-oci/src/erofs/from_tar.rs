//! An OCI layer archive (untrusted) made into an erofs image in one streamed pass: the
//! compressed stream is hashed and decompressed on one thread while this one reads the tar
//! entries and appends each file's content to the image. Nothing is written outside the image
//! file: entry paths are names in the image's own tree, so `..`, absolute paths and paths
//! through a symlink can only be refused, never followed.

use std::io::{self, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};

use crate::archive::{
    ApplyError, Compression, Expected, OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, PAX_XATTR_PREFIX,
    WHITEOUT_PREFIX, decompressing,
};
use crate::digest::OciDigest;

use super::image::{ImageEntry, ImageError, ImageWriter, NodeMeta, Xattrs};

/// What was converted: the compressed stream's digest and size, and every entry of the image
/// with its metadata and, for a file, the BLAKE3 digest of its content (taken as it was
/// written), in the order of a layer's tree digest: the digest need not walk the mounted image.
#[derive(Debug)]
pub struct ConvertedLayer {
    pub digest: OciDigest,
    pub size: u64,
    pub entries: Vec<ImageEntry>,
    /// Where the image's contents end and its metadata begins.
    metadata_offset: u64,
}

/// Reads the layer archive from `input` and writes it as an erofs image into `out` (a new,
/// empty file), converting `.wh.` whiteouts to overlay whiteouts and opaque markers to the
/// opaque xattr. The digests in `expected` are checked as [`crate::apply_layer`] checks them.
pub fn convert_layer<R: Read + Send, W: Write + Seek>(
    input: R,
    compression: Compression,
    out: W,
    expected: Expected,
) -> Result<(ConvertedLayer, W), ApplyError> {
    std::thread::scope(|s| {
        let (producer, mut reader) = decompressing(s, input, compression);
        // The tar stream is hashed only when its diff_id is to be checked (see `Expected`).
        let (converted, diff_id) = match expected.diff_id {
            Some(_) => {
                let mut plain = crate::DigestReader::new(&mut reader);
                let converted = convert_to_end(&mut plain, out);
                (converted, Some(plain.finish().0))
            }
            None => (convert_to_end(&mut reader, out), None),
        };
        // A refused entry leaves the stream unread: the thread stops when it has no reader.
        drop(reader);
        let produced = producer.join().expect("decompression thread panicked");
        let (entries, metadata_offset, out) = converted?;
        let (digest, size) = produced.map_err(ApplyError::Malformed)?;
        expected.check(digest, diff_id)?;
        Ok((
            ConvertedLayer {
                digest,
                size,
                entries,
                metadata_offset,
            },
            out,
        ))
    })
}

/// Converts, then reads the stream to its end, so the compressed stream's digest covers it all.
fn convert_to_end<W: Write + Seek>(
    plain: &mut dyn Read,
    out: W,
) -> Result<(Vec<ImageEntry>, u64, W), ApplyError> {
    let converted = convert(plain, out)?;
    io::copy(plain, &mut io::sink()).map_err(ApplyError::Malformed)?;
    Ok(converted)
}

fn convert<W: Write + Seek>(
    plain: &mut dyn Read,
    out: W,
) -> Result<(Vec<ImageEntry>, u64, W), ApplyError> {
    let mut writer = ImageWriter::new(out, dir_meta(0o755, 0, 0, 0)).map_err(entry_err)?;
    let mut archive = tar::Archive::new(plain);
    for entry in archive.entries().map_err(ApplyError::Malformed)? {
        let mut entry = entry.map_err(ApplyError::Malformed)?;
        let raw = entry.path_bytes().into_owned();
        let refuse = |reason: &'static str| ApplyError::Unsafe {
            entry: String::from_utf8_lossy(&raw).into_owned(),
            reason,
        };
        let rel = clean_path(&raw).map_err(refuse)?;
        let header = entry.header().clone();
        let names: Vec<Vec<u8>> = rel
            .components()
            .map(|c| c.as_os_str().as_encoded_bytes().to_vec())
            .collect();
        let meta = |xattrs: Xattrs| -> Result<NodeMeta, ApplyError> {
            Ok(NodeMeta {
                mode: header.mode().map_err(ApplyError::Malformed)? & 0o7777,
                uid: header.uid().map_err(ApplyError::Malformed)? as u32,
                gid: header.gid().map_err(ApplyError::Malformed)? as u32,
                mtime: header.mtime().unwrap_or(0),
                mtime_nsec: 0,
                xattrs,
            })
        };
        let Some((name, dirs)) = names.split_last() else {
            // The root itself (`./`): its metadata is not part of a layer.
            continue;
        };
        ensure_dirs(&mut writer, dirs).map_err(refuse)?;
        let parent: Vec<&[u8]> = dirs.iter().map(Vec::as_slice).collect();
        let at = |name: &[u8]| -> Vec<Vec<u8>> {
            let mut p: Vec<Vec<u8>> = dirs.to_vec();
            p.push(name.to_vec());
            p
        };
        if name.as_slice() == OPAQUE_MARKER.as_bytes() {
            let dir = writer.lookup(&parent).expect("ensured above");
            writer.add_xattr(dir, OVERLAY_OPAQUE_XATTR.as_bytes(), b"y");
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(refuse("malformed whiteout name"));
            }
            let path = at(hidden);
            let path: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
            let mut m = meta(Vec::new())?;
            m.mode |= 0o020000;
            writer.add_special(&path, 0, m).map_err(entry_err)?;
            continue;
        }
        let xattrs = pax_xattrs(&mut entry)?;
        if xattrs
            .iter()
            .any(|(n, _)| n.starts_with(b"trusted.overlay."))
        {
            return Err(refuse("it sets an overlayfs xattr"));
        }
        let path: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        match header.entry_type() {
            tar::EntryType::Directory => {
                let mut m = meta(xattrs)?;
                m.mode |= 0o040000;
                match writer.lookup(&path) {
                    // Listed again, or made as a parent before: now it gets its own metadata.
                    Some(i) if writer.is_dir(i) => writer.set_meta(i, m),
                    _ => writer.add_dir(&path, m).map_err(entry_err)?,
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = header.size().map_err(ApplyError::Malformed)?;
                let mut m = meta(xattrs)?;
                m.mode |= 0o100000;
                writer
                    .add_file(&path, size, &mut entry, m)
                    .map_err(entry_err)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("symlink without a target"))?
                    .into_owned();
                let mut m = meta(xattrs)?;
                m.mode = 0o120777;
                writer.add_symlink(&path, &target, m).map_err(entry_err)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("hard link without a target"))?
                    .into_owned();
                let target = clean_path(&target)
                    .map_err(|_| refuse("hard link to a path outside the layer"))?;
                let target: Vec<Vec<u8>> = target
                    .components()
                    .map(|c| c.as_os_str().as_encoded_bytes().to_vec())
                    .collect();
                let target: Vec<&[u8]> = target.iter().map(Vec::as_slice).collect();
                writer.add_hard_link(&path, &target).map_err(entry_err)?;
            }
            kind @ (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) => {
                let mut m = meta(xattrs)?;
                let rdev = match kind {
                    tar::EntryType::Fifo => {
                        m.mode |= 0o010000;
                        0
                    }
                    _ => {
                        m.mode |= if kind == tar::EntryType::Char {
                            0o020000
                        } else {
                            0o060000
                        };
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        rustix::fs::makedev(major, minor)
                    }
                };
                writer.add_special(&path, rdev, m).map_err(entry_err)?;
            }
            _ => return Err(refuse("unsupported entry type")),
        }
    }
    let entries = writer.entries();
    let contents_end = writer.contents_end();
    let out = writer.finish().map_err(entry_err)?;
    Ok((entries, contents_end, out))
}

/// Missing parents are made as plain directories (root-owned, 0755), as `tar -x` makes them.
fn ensure_dirs<W: Write + Seek>(
    writer: &mut ImageWriter<W>,
    dirs: &[Vec<u8>],
) -> Result<(), &'static str> {
    for depth in 1..=dirs.len() {
        let path: Vec<&[u8]> = dirs[..depth].iter().map(Vec::as_slice).collect();
        match writer.lookup(&path) {
            Some(i) if writer.is_dir(i) => {}
            Some(_) => return Err("its path goes through a non-directory of the layer"),
            None => writer
                .add_dir(&path, dir_meta(0o755, 0, 0, 0))
                .map_err(|_| "its parent directory cannot be created")?,
        }
    }
    Ok(())
}

fn dir_meta(mode: u32, uid: u32, gid: u32, mtime: u64) -> NodeMeta {
    NodeMeta {
        mode: 0o040000 | mode,
        uid,
        gid,
        mtime,
        mtime_nsec: 0,
        xattrs: Vec::new(),
    }
}

/// A refused entry (a duplicate name, a link to nothing) or a failed write.
fn entry_err(e: ImageError) -> ApplyError {
    match e {
        ImageError::Invalid(reason) => {
            ApplyError::Malformed(io::Error::new(io::ErrorKind::InvalidData, reason))
        }
        ImageError::Io(source) => ApplyError::Io {
            path: PathBuf::from("<erofs image>"),
            source,
        },
    }
}

/// An entry path as a clean relative path: no root, no `..`; `.` components dropped.
fn clean_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
            Component::ParentDir => return Err("its path contains `..`"),
        }
    }
    Ok(out)
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Xattrs, ApplyError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Malformed)? {
        for ext in exts {
            let ext = ext.map_err(ApplyError::Malformed)?;
            if let Some(name) = ext.key_bytes().strip_prefix(PAX_XATTR_PREFIX.as_bytes()) {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

impl ConvertedLayer {
    /// Where the image's contents end and its metadata (symlink targets, directories, inodes)
    /// begins: every path lookup reads from there on.
    pub fn metadata_offset(&self) -> u64 {
        self.metadata_offset
    }

    /// The layer's tree digest (`strata_key::tree_digest`), from the entries written: no walk
    /// of the mounted image.
    pub fn layer_digest(&self) -> strata_key::LayerDigest {
        strata_key::tree_digest_of_entries(&tree_entries(&self.entries))
    }
}

/// The entries of a converted image as the layer's tree digest sees them (sockets, which a
/// layer never holds, left out).
fn tree_entries(entries: &[ImageEntry]) -> Vec<strata_key::TreeEntry> {
    use super::image::NodeKind;
    use strata_key::TreeEntryKind as K;
    entries
        .iter()
        .filter(|e| e.meta.mode & 0o170000 != 0o140000)
        .map(|e| strata_key::TreeEntry {
            rel: String::from_utf8_lossy(&e.rel).into_owned(),
            mode: e.meta.mode,
            uid: e.meta.uid,
            gid: e.meta.gid,
            kind: match &e.kind {
                NodeKind::Dir => K::Dir,
                NodeKind::File { size, content, .. } => K::File {
                    size: *size,
                    content: *content,
                },
                NodeKind::Symlink(target) => K::Symlink(target.clone()),
                NodeKind::Special { rdev } => match e.meta.mode & 0o170000 {
                    0o020000 => K::CharDevice(*rdev),
                    0o060000 => K::BlockDevice(*rdev),
                    _ => K::Fifo,
                },
            },
            xattrs: e.meta.xattrs.clone(),
        })
        .collect()
}
