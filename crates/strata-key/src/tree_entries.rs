//! The tree digest of a tree described rather than walked: a layer converted from its archive
//! into an image is known entry by entry as it is written, so its digest need not walk the
//! mounted image afterwards. The records are [`crate::tree_digest`]'s, byte for byte (pinned by
//! the test below against a real directory).

use crate::digest::{ContentDigest, LayerDigest};
use crate::tree::{OPAQUE_XATTR, is_bookkeeping_xattr};

/// What an entry is, as the digest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntryKind {
    Dir,
    File { size: u64, content: [u8; 32] },
    Symlink(Vec<u8>),
    CharDevice(u64),
    BlockDevice(u64),
    Fifo,
}

/// One entry: its path from the tree's root with a leading `/` (`/a/b`), its permission bits
/// (`mode & 0o7777`), owner, kind and xattrs (full names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub rel: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub kind: TreeEntryKind,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// [`crate::tree_digest`] of the tree these entries describe; they must come in its walk's
/// order: each directory followed by its contents, names sorted bytewise.
pub fn tree_digest_of_entries(entries: &[TreeEntry]) -> LayerDigest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"strata-tree-v1\0");
    let mut out = Vec::new();
    for e in entries {
        out.clear();
        out.extend_from_slice(e.rel.as_bytes());
        out.push(0);
        out.extend_from_slice(format!("{:o} {} {}\0", e.mode & 0o7777, e.uid, e.gid).as_bytes());
        match &e.kind {
            TreeEntryKind::Dir => out.extend_from_slice(b"d\0"),
            TreeEntryKind::File { size, content } => {
                let digest = ContentDigest::from_bytes(*content);
                out.extend_from_slice(format!("f {size} {digest}\0").as_bytes());
            }
            TreeEntryKind::Symlink(target) => {
                out.extend_from_slice(b"l ");
                out.extend_from_slice(target);
                out.push(0);
            }
            TreeEntryKind::CharDevice(rdev) => {
                out.extend_from_slice(format!("c {rdev}\0").as_bytes())
            }
            TreeEntryKind::BlockDevice(rdev) => {
                out.extend_from_slice(format!("b {rdev}\0").as_bytes())
            }
            TreeEntryKind::Fifo => out.extend_from_slice(b"p\0"),
        }
        let mut xattrs: Vec<_> = e
            .xattrs
            .iter()
            .filter(|(n, v)| !is_bookkeeping_xattr(n) && (n != OPAQUE_XATTR || v == b"y"))
            .collect();
        xattrs.sort();
        for (name, value) in xattrs {
            out.extend_from_slice(b"x ");
            out.extend_from_slice(name);
            out.push(b'=');
            out.extend_from_slice(value);
            out.push(0);
        }
        hasher.update(&out);
    }
    LayerDigest::from_hash(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::Path;

    /// The entries of a real directory, in the walk's order, read as the image writer knows them.
    fn describe(dir: &Path, rel: &str, out: &mut Vec<TreeEntry>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = format!("{rel}/{}", name.to_string_lossy());
            let m = std::fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                TreeEntryKind::Dir
            } else if ft.is_file() {
                let content = *blake3::hash(&std::fs::read(&path).unwrap()).as_bytes();
                TreeEntryKind::File {
                    size: m.len(),
                    content,
                }
            } else if ft.is_symlink() {
                TreeEntryKind::Symlink(
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_char_device() {
                TreeEntryKind::CharDevice(m.rdev())
            } else {
                TreeEntryKind::Fifo
            };
            let mut names = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(&path, &mut names).unwrap_or(0);
            let xattrs = names[..n]
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    let c = std::ffi::CString::new(n).unwrap();
                    let mut v = vec![0u8; 4096];
                    let len = rustix::fs::lgetxattr(&path, c.as_c_str(), &mut v).unwrap();
                    (n.to_vec(), v[..len].to_vec())
                })
                .collect();
            out.push(TreeEntry {
                rel: rel.clone(),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                kind,
                xattrs,
            });
            if ft.is_dir() {
                describe(&path, &rel, out);
            }
        }
    }

    #[test]
    fn described_entries_give_the_walked_digest() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"content").unwrap();
        std::fs::write(root.join("a/empty"), b"").unwrap();
        std::fs::write(root.join("Z"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("a/b/f", root.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // user.* xattrs need a filesystem that has them; tmpfs and ext4 do.
        let c = std::ffi::CString::new("user.note").unwrap();
        let _ = rustix::fs::lsetxattr(
            root.join("Z"),
            c.as_c_str(),
            b"v",
            rustix::fs::XattrFlags::empty(),
        );
        let mut entries = Vec::new();
        describe(root, "", &mut entries);
        assert_eq!(
            tree_digest_of_entries(&entries),
            crate::tree_digest(root).unwrap()
        );
        // And it is not a constant: a changed mode changes it.
        entries[0].mode ^= 0o1;
        assert_ne!(
            tree_digest_of_entries(&entries),
            crate::tree_digest(root).unwrap()
        );
    }
}
