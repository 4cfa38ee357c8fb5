//! The on-disk format of an uncompressed erofs image, written in one pass.
//!
//! File contents are appended as they arrive (each file starts on a block, `FLAT_PLAIN`
//! layout), so a layer streaming out of a tar archive never waits for its metadata; directories
//! and inodes are laid out at the end, when the whole tree is known, and the superblock (block
//! 0) is written last. Format: the kernel's `Documentation/filesystems/erofs.rst` and
//! erofs-utils' `include/erofs_fs.h`.
//!
//! Every inode is an extended (64-byte) inode: 32-bit owners and a per-inode mtime, as tar
//! archives carry them. Xattrs are stored inline after their inode; overlayfs whiteouts are
//! 0/0 character devices and opaque directories carry `trusted.overlay.opaque=y`, exactly as in
//! a layer directory, so an image mounts as an overlay lower with no conversion.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

const BLOCK: u64 = 4096;
const BLOCK_BITS: u8 = 12;
const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
/// Inodes are addressed in 32-byte slots from the start of the metadata area.
const SLOT: u64 = 32;
const INODE_EXTENDED: u64 = 64;
/// `i_format`: bit 0 set = extended inode; bits 1-3 = data layout (0 = `FLAT_PLAIN`).
const FORMAT_EXTENDED_FLAT_PLAIN: u16 = 1;
const DIRENT: usize = 12;
const XATTR_HEADER: usize = 12;
const XATTR_ENTRY: usize = 4;

/// What a node is; its bytes follow from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    /// A regular file whose content is at `block` (in blocks), `size` bytes long, with the
    /// BLAKE3 digest of that content (taken as it was written).
    File {
        block: u32,
        size: u64,
        content: [u8; 32],
    },
    Symlink(Vec<u8>),
    /// Character or block device, FIFO or socket: the file type bits of `mode` say which;
    /// `rdev` is the device number (0 for an overlayfs whiteout).
    Special {
        rdev: u64,
    },
}

/// Extended attributes: full names (`user.x`, `trusted.overlay.opaque`) and values.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Owner, permissions (with the file type bits) and mtime, as `stat` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub mtime_nsec: u32,
    pub xattrs: Xattrs,
}

#[derive(Debug)]
struct Node {
    kind: NodeKind,
    meta: NodeMeta,
    /// Names under this directory, sorted as erofs requires (bytewise), and their nodes.
    children: BTreeMap<Vec<u8>, usize>,
    parent: usize,
    nlink: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("erofs image: {0}")]
    Invalid(String),
    #[error("failed to write the erofs image")]
    Io(#[from] io::Error),
}

/// An erofs image being written to `out` (a new, empty file: block 0 is left for the
/// superblock). Paths are lists of names from the root; a parent must be added before its
/// children.
pub struct ImageWriter<W: Write + Seek> {
    out: W,
    /// Where the next file's content goes (always on a block boundary).
    end: u64,
    nodes: Vec<Node>,
    /// File contents pass through here on their way to `out`: a buffer initialized once.
    /// (`io::copy` into a `BufWriter` reads into the writer's spare capacity, which a reader
    /// without `read_buf` makes it zero on every call: for a 45k-file layer that zeroing was a
    /// tenth of the conversion's CPU time.)
    copy_buf: Vec<u8>,
}

impl<W: Write + Seek> ImageWriter<W> {
    /// Starts an image whose root directory has `root` as its metadata.
    pub fn new(mut out: W, root: NodeMeta) -> Result<Self, ImageError> {
        out.seek(SeekFrom::Start(BLOCK))?;
        Ok(ImageWriter {
            out,
            end: BLOCK,
            nodes: vec![Node {
                kind: NodeKind::Dir,
                meta: root,
                children: BTreeMap::new(),
                parent: 0,
                nlink: 2,
            }],
            copy_buf: vec![0; COPY_BUF],
        })
    }

    /// Where the contents written so far end: [`ImageWriter::finish`] writes the metadata
    /// (symlink targets, directories, inodes) from there.
    pub fn contents_end(&self) -> u64 {
        self.end
    }

    /// Sets the root directory's metadata (an archive may carry it as its first entry).
    pub fn set_root_meta(&mut self, meta: NodeMeta) {
        self.nodes[0].meta = meta;
    }

    pub fn is_dir(&self, node: usize) -> bool {
        self.nodes[node].kind == NodeKind::Dir
    }

    /// Replaces a node's metadata; an xattr it had and `meta` does not name is kept (an
    /// opaque marker may come before its directory's own entry).
    pub fn set_meta(&mut self, node: usize, mut meta: NodeMeta) {
        for (name, value) in std::mem::take(&mut self.nodes[node].meta.xattrs) {
            if !meta.xattrs.iter().any(|(n, _)| *n == name) {
                meta.xattrs.push((name, value));
            }
        }
        self.nodes[node].meta = meta;
    }

    /// Sets one xattr on a node.
    pub fn add_xattr(&mut self, node: usize, name: &[u8], value: &[u8]) {
        let xattrs = &mut self.nodes[node].meta.xattrs;
        xattrs.retain(|(n, _)| n != name);
        xattrs.push((name.to_vec(), value.to_vec()));
    }

    /// Every entry but the root, each directory followed by its contents, names sorted
    /// bytewise (the order of a layer's tree digest); a hard-linked file under each of its
    /// names. Paths start with `/`.
    pub fn entries(&self) -> Vec<ImageEntry> {
        let mut out = Vec::with_capacity(self.nodes.len());
        self.list(0, &mut Vec::new(), &mut out);
        out
    }

    fn list(&self, dir: usize, prefix: &mut Vec<u8>, out: &mut Vec<ImageEntry>) {
        for (name, &i) in &self.nodes[dir].children {
            let len = prefix.len();
            prefix.push(b'/');
            prefix.extend_from_slice(name);
            out.push(ImageEntry {
                rel: prefix.clone(),
                kind: self.nodes[i].kind.clone(),
                meta: self.nodes[i].meta.clone(),
            });
            if self.nodes[i].kind == NodeKind::Dir {
                self.list(i, prefix, out);
            }
            prefix.truncate(len);
        }
    }

    /// The node at `path`, if any.
    pub fn lookup(&self, path: &[&[u8]]) -> Option<usize> {
        let mut at = 0;
        for name in path {
            at = *self.nodes[at].children.get(*name)?;
        }
        Some(at)
    }

    fn parent_of<'p>(&self, path: &'p [&'p [u8]]) -> Result<(usize, &'p [u8]), ImageError> {
        let (name, dirs) = path
            .split_last()
            .ok_or_else(|| ImageError::Invalid("an entry has an empty path".into()))?;
        let shown = || String::from_utf8_lossy(&path.join(&b'/')).into_owned();
        if name.is_empty() || *name == b"." || *name == b".." || name.contains(&b'/') {
            return Err(ImageError::Invalid(format!("bad name in `{}`", shown())));
        }
        if name.len() > 255 {
            return Err(ImageError::Invalid(format!(
                "name too long in `{}`",
                shown()
            )));
        }
        let parent = self
            .lookup(dirs)
            .ok_or_else(|| ImageError::Invalid(format!("`{}` has no parent", shown())))?;
        if self.nodes[parent].kind != NodeKind::Dir {
            return Err(ImageError::Invalid(format!(
                "the parent of `{}` is not a directory",
                shown()
            )));
        }
        if self.nodes[parent].children.contains_key(*name) {
            return Err(ImageError::Invalid(format!("`{}` appears twice", shown())));
        }
        Ok((parent, name))
    }

    fn insert(
        &mut self,
        path: &[&[u8]],
        kind: NodeKind,
        meta: NodeMeta,
    ) -> Result<usize, ImageError> {
        let (parent, name) = self.parent_of(path)?;
        let is_dir = kind == NodeKind::Dir;
        let index = self.nodes.len();
        self.nodes.push(Node {
            kind,
            meta,
            children: BTreeMap::new(),
            parent,
            nlink: if is_dir { 2 } else { 1 },
        });
        self.nodes[parent].children.insert(name.to_vec(), index);
        if is_dir {
            self.nodes[parent].nlink += 1;
        }
        Ok(index)
    }

    pub fn add_dir(&mut self, path: &[&[u8]], meta: NodeMeta) -> Result<(), ImageError> {
        self.insert(path, NodeKind::Dir, meta).map(drop)
    }

    pub fn add_symlink(
        &mut self,
        path: &[&[u8]],
        target: &[u8],
        meta: NodeMeta,
    ) -> Result<(), ImageError> {
        self.insert(path, NodeKind::Symlink(target.to_vec()), meta)
            .map(drop)
    }

    /// A device, FIFO or socket (`meta.mode` says which); a whiteout is a character device 0/0.
    pub fn add_special(
        &mut self,
        path: &[&[u8]],
        rdev: u64,
        meta: NodeMeta,
    ) -> Result<(), ImageError> {
        self.insert(path, NodeKind::Special { rdev }, meta)
            .map(drop)
    }

    /// A regular file of `size` bytes read from `content`, written at the end of the image.
    pub fn add_file(
        &mut self,
        path: &[&[u8]],
        size: u64,
        content: &mut dyn Read,
        meta: NodeMeta,
    ) -> Result<(), ImageError> {
        self.parent_of(path)?;
        let block = u32::try_from(self.end / BLOCK)
            .map_err(|_| ImageError::Invalid("the image is larger than 16 TiB".into()))?;
        let mut hasher = blake3::Hasher::new();
        let mut copied = 0u64;
        while copied < size {
            let want = (size - copied).min(self.copy_buf.len() as u64) as usize;
            let n = match content.read(&mut self.copy_buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            hasher.update(&self.copy_buf[..n]);
            self.out.write_all(&self.copy_buf[..n])?;
            copied += n as u64;
        }
        if copied != size {
            return Err(ImageError::Invalid(format!(
                "`{}` ended after {copied} of {size} bytes",
                String::from_utf8_lossy(&path.join(&b'/'))
            )));
        }
        self.pad_to_block(size)?;
        let content = *hasher.finalize().as_bytes();
        self.insert(
            path,
            NodeKind::File {
                block,
                size,
                content,
            },
            meta,
        )
        .map(drop)
    }

    /// A second name for the regular file at `target`.
    pub fn add_hard_link(&mut self, path: &[&[u8]], target: &[&[u8]]) -> Result<(), ImageError> {
        let shown = |p: &[&[u8]]| String::from_utf8_lossy(&p.join(&b'/')).into_owned();
        let node = self.lookup(target).ok_or_else(|| {
            ImageError::Invalid(format!("hard link to missing `{}`", shown(target)))
        })?;
        if !matches!(self.nodes[node].kind, NodeKind::File { .. }) {
            return Err(ImageError::Invalid(format!(
                "hard link `{}` to `{}`, which is not a regular file",
                shown(path),
                shown(target)
            )));
        }
        let (parent, name) = self.parent_of(path)?;
        self.nodes[parent].children.insert(name.to_vec(), node);
        self.nodes[node].nlink += 1;
        Ok(())
    }

    /// Pads the content just written (of `len` bytes) to a whole block, so the next starts on one.
    fn pad_to_block(&mut self, len: u64) -> Result<(), ImageError> {
        let padded = len.div_ceil(BLOCK) * BLOCK;
        if padded > len {
            self.out.write_all(&ZEROES[..(padded - len) as usize])?;
        }
        self.end += padded;
        Ok(())
    }

    /// Lays out directories and inodes after the contents, writes the superblock, and returns
    /// the output (flushed).
    pub fn finish(mut self) -> Result<W, ImageError> {
        // Symlink targets and directory blocks are contents too: written now, each from a block.
        let mut data_block = vec![0u32; self.nodes.len()];
        let mut data_size = vec![0u64; self.nodes.len()];
        for i in 0..self.nodes.len() {
            if let NodeKind::Symlink(target) = &self.nodes[i].kind {
                let target = target.clone();
                data_block[i] = self.block_here()?;
                data_size[i] = target.len() as u64;
                self.out.write_all(&target)?;
                self.pad_to_block(target.len() as u64)?;
            }
        }
        // Inode slots: each node's inode and inline xattrs, never across a block boundary.
        let mut nid = vec![0u64; self.nodes.len()];
        let mut inode_bytes = Vec::with_capacity(self.nodes.len());
        let mut at = 0u64;
        for node in &self.nodes {
            let xattrs = encode_xattrs(&node.meta.xattrs)?;
            let len = INODE_EXTENDED + xattrs.len() as u64;
            if at % BLOCK + len > BLOCK {
                at = at.div_ceil(BLOCK) * BLOCK;
            }
            inode_bytes.push((at, xattrs));
            at += len.div_ceil(SLOT) * SLOT;
        }
        for (i, (offset, _)) in inode_bytes.iter().enumerate() {
            nid[i] = offset / SLOT;
        }
        let meta_len = at;
        // The root's nid is 16 bits in the superblock: it comes first, so it is 0.
        for i in 0..self.nodes.len() {
            if self.nodes[i].kind == NodeKind::Dir {
                let blocks = self.dir_blocks(i, &nid);
                data_block[i] = self.block_here()?;
                data_size[i] = blocks_size(&blocks);
                // Each block starts on a block boundary; the kernel reads names up to the
                // block's end (or the directory's size) and stops at the zero padding.
                for block in &blocks {
                    self.out.write_all(block)?;
                    self.pad_to_block(block.len() as u64)?;
                }
            }
        }
        let meta_block = self.block_here()?;
        let mut meta = vec![0u8; meta_len as usize];
        for (i, node) in self.nodes.iter().enumerate() {
            let (offset, xattrs) = &inode_bytes[i];
            let (size, u) = match &node.kind {
                NodeKind::File { block, size, .. } => (*size, if *size == 0 { 0 } else { *block }),
                NodeKind::Dir | NodeKind::Symlink(_) => (data_size[i], data_block[i]),
                NodeKind::Special { rdev } => (0, encode_dev(*rdev)),
            };
            let icount = if xattrs.is_empty() {
                0
            } else {
                1 + (xattrs.len() - XATTR_HEADER) / 4
            };
            let slot = &mut meta[*offset as usize..*offset as usize + INODE_EXTENDED as usize];
            slot[0..2].copy_from_slice(&FORMAT_EXTENDED_FLAT_PLAIN.to_le_bytes());
            slot[2..4].copy_from_slice(&(icount as u16).to_le_bytes());
            slot[4..6].copy_from_slice(&(node.meta.mode as u16).to_le_bytes());
            slot[8..16].copy_from_slice(&size.to_le_bytes());
            slot[16..20].copy_from_slice(&u.to_le_bytes());
            slot[20..24].copy_from_slice(&((i + 1) as u32).to_le_bytes());
            slot[24..28].copy_from_slice(&node.meta.uid.to_le_bytes());
            slot[28..32].copy_from_slice(&node.meta.gid.to_le_bytes());
            slot[32..40].copy_from_slice(&node.meta.mtime.to_le_bytes());
            slot[40..44].copy_from_slice(&node.meta.mtime_nsec.to_le_bytes());
            slot[44..48].copy_from_slice(&node.nlink.to_le_bytes());
            let x = *offset as usize + INODE_EXTENDED as usize;
            meta[x..x + xattrs.len()].copy_from_slice(xattrs);
        }
        self.out.write_all(&meta)?;
        self.pad_to_block(meta_len)?;
        let blocks = u32::try_from(self.end / BLOCK)
            .map_err(|_| ImageError::Invalid("the image is larger than 16 TiB".into()))?;
        let mut sb = [0u8; 128];
        sb[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        sb[12] = BLOCK_BITS;
        sb[14..16].copy_from_slice(&(nid[0] as u16).to_le_bytes());
        sb[16..24].copy_from_slice(&(self.nodes.len() as u64).to_le_bytes());
        sb[36..40].copy_from_slice(&blocks.to_le_bytes());
        sb[40..44].copy_from_slice(&meta_block.to_le_bytes());
        self.out.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
        self.out.write_all(&sb)?;
        self.out.seek(SeekFrom::Start(self.end))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn block_here(&self) -> Result<u32, ImageError> {
        u32::try_from(self.end / BLOCK)
            .map_err(|_| ImageError::Invalid("the image is larger than 16 TiB".into()))
    }

    /// A directory's blocks: `.`, `..` and its entries, sorted by name, as many to a block as
    /// fit (each block: its dirents, then their names).
    fn dir_blocks(&self, dir: usize, nid: &[u64]) -> Vec<Vec<u8>> {
        let node = &self.nodes[dir];
        let mut entries: Vec<(&[u8], usize)> = vec![(b".", dir), (b"..", node.parent)];
        entries.extend(node.children.iter().map(|(n, &i)| (n.as_slice(), i)));
        // `.` and `..` sort before any other name but those starting with bytes below `.`.
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < entries.len() {
            let mut end = start;
            let mut used = 0;
            while end < entries.len() && used + DIRENT + entries[end].0.len() <= BLOCK as usize {
                used += DIRENT + entries[end].0.len();
                end += 1;
            }
            let chunk = &entries[start..end];
            let mut block = vec![0u8; used];
            let mut name_at = chunk.len() * DIRENT;
            for (k, (name, i)) in chunk.iter().enumerate() {
                let d = &mut block[k * DIRENT..(k + 1) * DIRENT];
                d[0..8].copy_from_slice(&nid[*i].to_le_bytes());
                d[8..10].copy_from_slice(&(name_at as u16).to_le_bytes());
                d[10] = self.file_type(*i);
                block[name_at..name_at + name.len()].copy_from_slice(name);
                name_at += name.len();
            }
            blocks.push(block);
            start = end;
        }
        blocks
    }

    /// A directory entry's file type byte (`EROFS_FT_*`), from the node's mode.
    fn file_type(&self, i: usize) -> u8 {
        match self.nodes[i].meta.mode & S_IFMT {
            0o100000 => 1,
            0o040000 => 2,
            0o020000 => 3,
            0o060000 => 4,
            0o010000 => 5,
            0o140000 => 6,
            0o120000 => 7,
            _ => 0,
        }
    }
}

/// The file type bits of a mode.
const S_IFMT: u32 = 0o170000;

/// A directory's size: whole blocks but the last, which ends where its last name ends.
fn blocks_size(blocks: &[Vec<u8>]) -> u64 {
    match blocks.split_last() {
        None => 0,
        Some((last, full)) => full.len() as u64 * BLOCK + last.len() as u64,
    }
}

/// The kernel's `new_encode_dev`: 12-bit major, 20-bit minor, in 32 bits.
fn encode_dev(rdev: u64) -> u32 {
    let major = ((rdev >> 8) & 0xfff) as u32 | ((rdev >> 32) & !0xfff) as u32;
    let minor = (rdev & 0xff) as u32 | ((rdev >> 12) & !0xff) as u32;
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The inline xattr area: a 12-byte header, then each entry (name without its prefix, the
/// prefix as an index) padded to 4 bytes. Empty when there are no xattrs.
fn encode_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<u8>, ImageError> {
    if xattrs.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = vec![0u8; XATTR_HEADER];
    for (name, value) in xattrs {
        let (index, suffix) = XATTR_PREFIXES
            .iter()
            .find_map(|(prefix, index)| name.strip_prefix(*prefix).map(|s| (*index, s)))
            .ok_or_else(|| {
                ImageError::Invalid(format!(
                    "xattr `{}` has a namespace erofs cannot store",
                    String::from_utf8_lossy(name)
                ))
            })?;
        if suffix.len() > 255 || value.len() > u16::MAX as usize {
            return Err(ImageError::Invalid(format!(
                "xattr `{}` is too large",
                String::from_utf8_lossy(name)
            )));
        }
        out.push(suffix.len() as u8);
        out.push(index);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(suffix);
        out.extend_from_slice(value);
        let entry = XATTR_ENTRY + suffix.len() + value.len();
        out.resize(out.len() + entry.next_multiple_of(4) - entry, 0);
    }
    Ok(out)
}

/// The name prefixes erofs stores as an index (longest first, so `trusted.` never hides a
/// POSIX ACL name).
const XATTR_PREFIXES: &[(&[u8], u8)] = &[
    (b"system.posix_acl_default", 3),
    (b"system.posix_acl_access", 2),
    (b"security.", 6),
    (b"trusted.", 4),
    (b"user.", 1),
];

/// An entry of the image, as [`ImageWriter::entries`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// The path from the root, starting with `/`.
    pub rel: Vec<u8>,
    pub kind: NodeKind,
    pub meta: NodeMeta,
}

/// Hashes what is read through it.
/// The size of `ImageWriter::copy_buf`.
const COPY_BUF: usize = 256 * 1024;

static ZEROES: [u8; BLOCK as usize] = [0; BLOCK as usize];
