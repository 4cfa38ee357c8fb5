//! Content digest of a directory tree, as used for layers and `rootfs` bases. Two trees have the
//! same digest when they hold the same paths with the same kinds, modes, owners, contents, link
//! targets, device numbers (overlay whiteouts are 0/0 character devices) and xattrs (overlay's
//! bookkeeping xattrs aside, but its opaque marker kept). Timestamps are left out on purpose: a
//! task that re-runs and writes the same files must produce the same layer.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::digest::{ContentDigest, LayerDigest};

#[derive(Debug, thiserror::Error)]
#[error("failed to hash {path}")]
pub struct TreeError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> TreeError + '_ {
    move |source| TreeError {
        path: path.to_path_buf(),
        source,
    }
}

/// Hashes the tree under `root` (not `root`'s own metadata).
pub fn tree_digest(root: &Path) -> Result<LayerDigest, TreeError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"strata-tree-v1\0");
    walk(root, "", &mut hasher)?;
    Ok(LayerDigest::from_hash(hasher.finalize()))
}

pub(crate) fn hash_file(path: &Path) -> Result<ContentDigest, TreeError> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).map_err(err(path))?;
    hasher.update_reader(file).map_err(err(path))?;
    Ok(ContentDigest::from_hash(hasher.finalize()))
}

fn walk(dir: &Path, rel: &str, hasher: &mut blake3::Hasher) -> Result<(), TreeError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(err(dir))?
        .collect::<Result<_, _>>()
        .map_err(err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let rel = format!("{rel}/{}", name.to_string_lossy());
        let meta = std::fs::symlink_metadata(&path).map_err(err(&path))?;
        let ft = meta.file_type();
        hasher.update(rel.as_bytes());
        hasher.update(b"\0");
        let header = format!("{:o} {} {}\0", meta.mode() & 0o7777, meta.uid(), meta.gid());
        hasher.update(header.as_bytes());
        if ft.is_dir() {
            hasher.update(b"d\0");
        } else if ft.is_file() {
            let digest = hash_file(&path)?;
            hasher.update(format!("f {} {}\0", meta.len(), digest).as_bytes());
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(err(&path))?;
            hasher.update(b"l ");
            hasher.update(target.as_os_str().as_encoded_bytes());
            hasher.update(b"\0");
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() { 'c' } else { 'b' };
            hasher.update(format!("{kind} {}\0", meta.rdev()).as_bytes());
        } else if ft.is_fifo() {
            hasher.update(b"p\0");
        } else {
            hasher.update(b"s\0");
        }
        hash_xattrs(&path, hasher)?;
        if ft.is_dir() {
            walk(&path, &rel, hasher)?;
        }
    }
    Ok(())
}

/// Overlay's bookkeeping xattrs that describe how a file was copied up, not what it is.
fn is_bookkeeping_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") && name != b"trusted.overlay.opaque"
}

fn hash_xattrs(path: &Path, hasher: &mut blake3::Hasher) -> Result<(), TreeError> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(err(path)(e.into())),
    };
    let mut names: Vec<&[u8]> = names[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && !is_bookkeeping_xattr(n))
        .collect();
    names.sort();
    for name in names {
        let cname = std::ffi::CString::new(name).expect("xattr names have no NUL");
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut value)
            .map_err(|e| err(path)(e.into()))?;
        hasher.update(b"x ");
        hasher.update(name);
        hasher.update(b"=");
        hasher.update(&value[..len]);
        hasher.update(b"\0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn same_content_same_digest_whatever_the_mtime() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/f"), "hello").unwrap();
            std::os::unix::fs::symlink("sub/f", d.join("link")).unwrap();
        }
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        File::options()
            .write(true)
            .open(b.path().join("sub/f"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            tree_digest(a.path()).unwrap(),
            tree_digest(b.path()).unwrap()
        );
    }

    #[test]
    fn content_mode_and_names_change_the_digest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "one").unwrap();
        let first = tree_digest(d.path()).unwrap();
        std::fs::write(d.path().join("f"), "two").unwrap();
        let second = tree_digest(d.path()).unwrap();
        assert_ne!(first, second);
        std::fs::set_permissions(d.path().join("f"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let third = tree_digest(d.path()).unwrap();
        assert_ne!(second, third);
        std::fs::rename(d.path().join("f"), d.path().join("g")).unwrap();
        assert_ne!(third, tree_digest(d.path()).unwrap());
    }
}
