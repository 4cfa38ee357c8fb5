//! Content digest of a directory tree, as used for layers and `rootfs` bases. Two trees have the
//! same digest when they hold the same paths with the same kinds, modes, owners, contents, link
//! targets, device numbers (overlay whiteouts are 0/0 character devices) and xattrs (overlay's
//! bookkeeping xattrs aside, but its opaque marker `y` kept). Timestamps are left out on purpose:
//! a task that re-runs and writes the same files must produce the same layer.
//!
//! The digest covers exactly what a layer archive carries, so that a layer restored from its
//! archive on another machine has the digest of the original: Unix sockets (which tar cannot
//! hold, and which mean nothing once the process that bound them is gone) are not part of a
//! layer — [`tree_digest_listing_sockets`] names them so a commit can remove them — and of
//! overlay's xattrs only the opaque marker with the value `y` (an archive's `.wh..wh..opq`).

use std::collections::HashMap;
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
///
/// The digest is BLAKE3 over one record per entry, in sorted path order. The walk is sequential
/// (it fixes the order); the records — file contents and xattrs being the costly part — are
/// computed on all CPUs, then fed to the hasher in order.
pub fn tree_digest(root: &Path) -> Result<LayerDigest, TreeError> {
    tree_digest_listing_sockets(root).map(|(digest, _)| digest)
}

/// The same, also naming the Unix sockets under `root`, which the digest leaves out.
pub fn tree_digest_listing_sockets(root: &Path) -> Result<(LayerDigest, Vec<PathBuf>), TreeError> {
    let mut items = Vec::new();
    let mut sockets = Vec::new();
    collect(root, "", &mut items, &mut sockets)?;
    Ok((digest_items(&items, &HashMap::new())?, sockets))
}

/// [`tree_digest`] of a tree whose files' content digests are already known, by path (`root`
/// joined with the file's relative path), as the code that just wrote them computed them: those
/// files are not read again. A file not in `known` is read as usual.
pub fn tree_digest_known(
    root: &Path,
    known: &HashMap<PathBuf, [u8; 32]>,
) -> Result<LayerDigest, TreeError> {
    let mut items = Vec::new();
    collect(root, "", &mut items, &mut Vec::new())?;
    digest_items(&items, known)
}

/// The digest [`tree_digest`] gives the tree under `root` once its top-level entry `skip` (and
/// everything under it) is taken away: a layer without its `workspace/` part.
pub fn tree_digest_without(root: &Path, skip: &str) -> Result<LayerDigest, TreeError> {
    let mut items = Vec::new();
    collect(root, "", &mut items, &mut Vec::new())?;
    let alone = format!("/{skip}");
    let under = format!("/{skip}/");
    items.retain(|i| i.rel != alone && !i.rel.starts_with(&under));
    digest_items(&items, &HashMap::new())
}

/// Hashes a file's content as every content digest is made.
pub fn content_digest(path: &Path) -> Result<ContentDigest, TreeError> {
    hash_file(path)
}

fn digest_items(
    items: &[Item],
    known: &HashMap<PathBuf, [u8; 32]>,
) -> Result<LayerDigest, TreeError> {
    let records = records_in_parallel(items, known)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"strata-tree-v1\0");
    for r in &records {
        hasher.update(r);
    }
    Ok(LayerDigest::from_hash(hasher.finalize()))
}

pub(crate) fn hash_file(path: &Path) -> Result<ContentDigest, TreeError> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).map_err(err(path))?;
    hasher.update_reader(file).map_err(err(path))?;
    Ok(ContentDigest::from_hash(hasher.finalize()))
}

struct Item {
    rel: String,
    path: PathBuf,
    meta: std::fs::Metadata,
}

/// Every entry under `dir`, each directory followed by its contents, names sorted.
fn collect(
    dir: &Path,
    rel: &str,
    items: &mut Vec<Item>,
    sockets: &mut Vec<PathBuf>,
) -> Result<(), TreeError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(err(dir))?
        .collect::<Result<_, _>>()
        .map_err(err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = format!("{rel}/{}", entry.file_name().to_string_lossy());
        let meta = std::fs::symlink_metadata(&path).map_err(err(&path))?;
        if meta.file_type().is_socket() {
            sockets.push(path);
            continue;
        }
        let is_dir = meta.file_type().is_dir();
        items.push(Item {
            rel: rel.clone(),
            path: path.clone(),
            meta,
        });
        if is_dir {
            collect(&path, &rel, items, sockets)?;
        }
    }
    Ok(())
}

fn records_in_parallel(
    items: &[Item],
    known: &HashMap<PathBuf, [u8; 32]>,
) -> Result<Vec<Vec<u8>>, TreeError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || items.len() < 64 {
        return items.iter().map(|i| record(i, known)).collect();
    }
    let next = AtomicUsize::new(0);
    type Part = Result<Vec<(usize, Vec<u8>)>, TreeError>;
    let parts: Vec<Part> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        // Small batches: big files and small ones even out.
                        let start = next.fetch_add(16, Ordering::Relaxed);
                        if start >= items.len() {
                            return Ok(done);
                        }
                        for (i, item) in items.iter().enumerate().skip(start).take(16) {
                            done.push((i, record(item, known)?));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("hashing thread panicked"))
            .collect()
    });
    let mut records = vec![Vec::new(); items.len()];
    for part in parts {
        for (i, r) in part? {
            records[i] = r;
        }
    }
    Ok(records)
}

/// The bytes one entry contributes to the digest.
fn record(item: &Item, known: &HashMap<PathBuf, [u8; 32]>) -> Result<Vec<u8>, TreeError> {
    let Item { rel, path, meta } = item;
    let ft = meta.file_type();
    let mut out = Vec::with_capacity(rel.len() + 96);
    out.extend_from_slice(rel.as_bytes());
    out.push(0);
    out.extend_from_slice(
        format!("{:o} {} {}\0", meta.mode() & 0o7777, meta.uid(), meta.gid()).as_bytes(),
    );
    if ft.is_dir() {
        out.extend_from_slice(b"d\0");
    } else if ft.is_file() {
        let digest = match known.get(path) {
            Some(bytes) => ContentDigest::from_hash(blake3::Hash::from_bytes(*bytes)),
            None => hash_file(path)?,
        };
        out.extend_from_slice(format!("f {} {}\0", meta.len(), digest).as_bytes());
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(err(path))?;
        out.extend_from_slice(b"l ");
        out.extend_from_slice(target.as_os_str().as_encoded_bytes());
        out.push(0);
    } else if ft.is_char_device() || ft.is_block_device() {
        let kind = if ft.is_char_device() { 'c' } else { 'b' };
        out.extend_from_slice(format!("{kind} {}\0", meta.rdev()).as_bytes());
    } else {
        // A fifo: sockets are left out by `collect`.
        out.extend_from_slice(b"p\0");
    }
    xattr_record(path, &mut out)?;
    Ok(out)
}

pub(crate) const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Overlay's bookkeeping xattrs that describe how a file was copied up, not what it is.
pub(crate) fn is_bookkeeping_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") && name != OPAQUE_XATTR
}

fn xattr_record(path: &Path, out: &mut Vec<u8>) -> Result<(), TreeError> {
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
        // Only an opaque directory (`y`) is what an archive's opaque marker carries.
        if name == OPAQUE_XATTR && &value[..len] != b"y" {
            continue;
        }
        out.extend_from_slice(b"x ");
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(&value[..len]);
        out.push(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_contents_give_the_same_digest_without_reading() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), "alpha").unwrap();
        std::fs::write(d.path().join("b"), "beta").unwrap();
        let mut known = HashMap::new();
        known.insert(d.path().join("sub/a"), *blake3::hash(b"alpha").as_bytes());
        // `b` is not known: it is read.
        assert_eq!(
            tree_digest_known(d.path(), &known).unwrap(),
            tree_digest(d.path()).unwrap()
        );
        // What is known is believed: a wrong digest gives another tree digest.
        known.insert(d.path().join("b"), *blake3::hash(b"other").as_bytes());
        assert_ne!(
            tree_digest_known(d.path(), &known).unwrap(),
            tree_digest(d.path()).unwrap()
        );
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn without_a_top_level_entry_is_the_digest_of_the_rest() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir(d.join("etc")).unwrap();
            std::fs::write(d.join("etc/conf"), "x").unwrap();
        }
        std::fs::create_dir(a.path().join("workspace")).unwrap();
        std::fs::write(a.path().join("workspace/out"), "y").unwrap();
        std::fs::write(a.path().join("workspaces"), "z").unwrap();
        std::fs::write(b.path().join("workspaces"), "z").unwrap();
        assert_eq!(
            tree_digest_without(a.path(), "workspace").unwrap(),
            tree_digest(b.path()).unwrap()
        );
        assert_ne!(
            tree_digest(a.path()).unwrap(),
            tree_digest(b.path()).unwrap()
        );
    }

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

#[cfg(test)]
mod stable {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Layer digests name layers in every cache: the encoding must not change by accident
    /// (it changes only with `strata-tree-v1` and `KEY_VERSION`).
    #[test]
    fn the_digest_of_a_fixed_tree_is_stable() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("dir")).unwrap();
        for i in 0..100 {
            std::fs::write(root.join(format!("dir/f{i:03}")), format!("content {i}")).unwrap();
        }
        std::os::unix::fs::symlink("dir/f001", root.join("link")).unwrap();
        for p in std::fs::read_dir(root.join("dir")).unwrap() {
            std::fs::set_permissions(p.unwrap().path(), std::fs::Permissions::from_mode(0o640))
                .unwrap();
        }
        std::fs::set_permissions(root.join("dir"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            rustix::process::geteuid().is_root(),
            "owners are part of the digest: this test runs as root"
        );
        let digest = tree_digest(root).unwrap().to_hex();
        assert_eq!(&digest[..16], "fff81e84daf48fb5");
    }
}
