//! erofs images: a layer directory written as an image, mounted by the kernel from the file,
//! reads back as the same tree (same tree digest, same owners, modes, mtimes, xattrs, links,
//! whiteouts), and stacks under overlayfs as a lower. Needs root (mount, owners, device nodes,
//! `trusted.` xattrs) and a kernel with file-backed erofs mounts (6.12 and later).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;

fn assert_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "erofs tests need root (mount, chown, mknod, trusted.* xattrs); run them with sudo"
    );
}

/// A mount removed when dropped, even when the test panics.
struct Mounted(PathBuf);

impl Mounted {
    fn erofs(image: &Path, at: &Path) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "erofs", "-o", "ro"])
            .arg(image)
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t erofs {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(at.to_path_buf())
    }

    fn overlay(lowers: &[&Path], upper: &Path, work: &Path, at: &Path) -> Mounted {
        for d in [upper, work, at] {
            std::fs::create_dir_all(d).unwrap();
        }
        let lowers: Vec<_> = lowers.iter().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "overlay mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn write_image(src: &Path, image: &Path) {
    let out = std::fs::File::create_new(image).unwrap();
    strata_oci::erofs::write_image_from_dir(src, std::io::BufWriter::new(out)).unwrap();
}

/// Everything about a tree a layer must keep, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut BTreeMap::new());
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    inodes: &mut BTreeMap<(u64, u64), String>,
) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(&path).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            format!("dir nlink={}", m.nlink())
        } else if ft.is_file() {
            let first = inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.clone())
                .clone();
            let content = std::fs::read(&path).unwrap();
            format!(
                "file {} size={} nlink={} link-of={first}",
                blake3::hash(&content),
                m.len(),
                m.nlink()
            )
        } else if ft.is_symlink() {
            format!("symlink {}", std::fs::read_link(&path).unwrap().display())
        } else if ft.is_char_device() {
            format!("char {}", m.rdev())
        } else if ft.is_block_device() {
            format!("block {}", m.rdev())
        } else {
            "fifo".to_string()
        };
        out.insert(
            rel,
            format!(
                "{kind} mode={:o} owner={}:{} mtime={}.{} xattrs={:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                xattrs(&path)
            ),
        );
        if ft.is_dir() {
            walk(root, &path, out, inodes);
        }
    }
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names).unwrap();
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c = CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(path, c.as_c_str(), &mut v).unwrap();
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            v[..len].to_vec(),
        ));
    }
    out.sort();
    out
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c = CString::new(name).unwrap();
    rustix::fs::lsetxattr(path, c.as_c_str(), value, rustix::fs::XattrFlags::empty()).unwrap();
}

fn mknod(path: &Path, kind: rustix::fs::FileType, mode: u32, dev: u64) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(mode),
        dev,
    )
    .unwrap();
}

/// Every kind of entry a layer holds, with the awkward cases: a whiteout, an opaque directory,
/// xattrs on files and directories, a setuid file with an owner, hard links, a symlink, empty
/// files, a file larger than a block and not a multiple of one, a 60-level path, a directory
/// whose entries need several blocks, a FIFO and a device with a large minor number.
fn awkward_tree(root: &Path) {
    let d = |p: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let w = |p: &str, content: &[u8]| std::fs::write(root.join(p), content).unwrap();
    d("a/keep");
    mknod(
        &root.join("a/gone"),
        rustix::fs::FileType::CharacterDevice,
        0,
        0,
    );
    set_xattr(&d("b"), "trusted.overlay.opaque", b"y");
    w("b/new", b"new\n");
    w("xa", b"x\n");
    set_xattr(&root.join("xa"), "user.origin", b"ci");
    set_xattr(
        &root.join("xa"),
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    set_xattr(&root.join("a"), "user.dir", b"v");
    std::os::unix::fs::chown(root.join("xa"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(root.join("xa"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    std::fs::hard_link(root.join("xa"), root.join("xa-link")).unwrap();
    std::fs::hard_link(root.join("xa"), root.join("a/keep/xa-link2")).unwrap();
    std::os::unix::fs::symlink("xa", root.join("sym")).unwrap();
    std::os::unix::fs::symlink("/a/target/outside/the/layer", root.join("a/abs")).unwrap();
    w("empty", b"");
    w("a/keep/empty2", b"");
    let big: Vec<u8> = (0..3_000_017u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    w("big.bin", &big);
    w("a/keep/block", &[7u8; 4096]);
    let deep = (0..60).map(|_| "d").collect::<Vec<_>>().join("/");
    d(&deep);
    w(&format!("{deep}/f"), b"deep\n");
    let many = d("many");
    for i in 0..700 {
        std::fs::write(
            many.join(format!("entry-with-a-longish-name-{i:04}")),
            i.to_string(),
        )
        .unwrap();
    }
    mknod(&root.join("fifo"), rustix::fs::FileType::Fifo, 0o640, 0);
    mknod(
        &root.join("dev"),
        rustix::fs::FileType::CharacterDevice,
        0o660,
        rustix::fs::makedev(259, 70_000),
    );
    // Directory mtimes last: creating entries changes them.
    for (i, p) in ["a", "a/keep", "b", "many", ""].iter().enumerate() {
        let t = rustix::fs::Timespec {
            tv_sec: 1_600_000_000 + i as i64,
            tv_nsec: 123_456_789,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            root.join(p),
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

#[test]
fn an_image_mounts_as_the_same_tree() {
    assert_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    awkward_tree(&src);
    let image = tmp.path().join("layer.erofs");
    write_image(&src, &image);
    let mounted = Mounted::erofs(&image, &tmp.path().join("mnt"));
    assert_eq!(snapshot(&src), snapshot(&mounted.0));
    assert_eq!(
        strata_key::tree_digest(&src).unwrap(),
        strata_key::tree_digest(&mounted.0).unwrap()
    );
}

#[test]
fn images_stack_as_overlay_lowers() {
    assert_root();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(base.join("a/keep")).unwrap();
    std::fs::create_dir_all(base.join("b")).unwrap();
    std::fs::write(base.join("a/gone"), b"base\n").unwrap();
    std::fs::write(base.join("a/keep/f"), b"k\n").unwrap();
    std::fs::write(base.join("b/old"), b"old\n").unwrap();
    let top = tmp.path().join("top");
    std::fs::create_dir(&top).unwrap();
    awkward_tree(&top);
    write_image(&base, &tmp.path().join("base.erofs"));
    write_image(&top, &tmp.path().join("top.erofs"));
    let mbase = Mounted::erofs(&tmp.path().join("base.erofs"), &tmp.path().join("mbase"));
    let mtop = Mounted::erofs(&tmp.path().join("top.erofs"), &tmp.path().join("mtop"));
    let merged = Mounted::overlay(
        &[&mtop.0, &mbase.0],
        &tmp.path().join("upper"),
        &tmp.path().join("work"),
        &tmp.path().join("merged"),
    );
    let m = &merged.0;
    assert!(
        !m.join("a/gone").exists(),
        "the whiteout hides the lower file"
    );
    assert_eq!(std::fs::read(m.join("a/keep/f")).unwrap(), b"k\n");
    assert!(
        !m.join("b/old").exists(),
        "the opaque directory hides the lower contents"
    );
    assert_eq!(std::fs::read(m.join("b/new")).unwrap(), b"new\n");
    // A write copies the file up; the image is untouched.
    std::fs::write(m.join("xa"), b"changed\n").unwrap();
    assert_eq!(std::fs::read(mtop.0.join("xa")).unwrap(), b"x\n");
    assert_eq!(
        std::fs::read(tmp.path().join("upper/xa")).unwrap(),
        b"changed\n"
    );
}

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>, u32),
    Dir(Vec<(String, Node)>),
    Symlink(String),
    HardLink,
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        4 => (proptest::collection::vec(any::<u8>(), 0..9000), prop_oneof![Just(0o644u32), Just(0o755), Just(0o600)])
            .prop_map(|(c, m)| Node::File(c, m)),
        1 => "[a-z/.]{1,40}".prop_map(Node::Symlink),
        1 => Just(Node::HardLink),
    ];
    leaf.prop_recursive(4, 60, 12, |inner| {
        proptest::collection::btree_map("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,40}", inner, 0..12)
            .prop_map(|c| Node::Dir(c.into_iter().collect()))
    })
}

fn build(dir: &Path, children: &[(String, Node)], first: &mut Option<PathBuf>) {
    for (name, node) in children {
        let path = dir.join(name);
        match node {
            Node::File(content, mode) => {
                std::fs::write(&path, content).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
                first.get_or_insert(path.clone());
            }
            Node::Dir(children) => {
                std::fs::create_dir(&path).unwrap();
                build(&path, children, first);
            }
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            Node::HardLink => match first {
                Some(f) => std::fs::hard_link(f.as_path(), &path).unwrap(),
                None => std::fs::write(&path, b"no file yet").unwrap(),
            },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_trees_mount_identically(tree in proptest::collection::btree_map("[a-z][a-z0-9]{0,7}", node(), 0..10)) {
        assert_root();
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let children: Vec<_> = tree.into_iter().collect();
        build(&src, &children, &mut None);
        let image = tmp.path().join("layer.erofs");
        write_image(&src, &image);
        let mounted = Mounted::erofs(&image, &tmp.path().join("mnt"));
        prop_assert_eq!(snapshot(&src), snapshot(&mounted.0));
        let layer = strata_key::tree_digest(&src).unwrap();
        prop_assert_eq!(strata_key::tree_digest(&mounted.0).unwrap(), layer);
        // The same tree through an archive: the converted image's listed entries have its digest.
        let mut blob = Vec::new();
        strata_oci::write_layer(&src, &mut blob, strata_oci::Compression::Zstd, 0).unwrap();
        let (converted, _) = strata_oci::erofs::convert_layer(
            &blob[..],
            strata_oci::Compression::Zstd,
            std::io::Cursor::new(Vec::new()),
            strata_oci::Expected::default(),
        )
        .unwrap();
        prop_assert_eq!(converted.layer_digest(), layer);
    }
}

/// The restore path: a layer archive converted while it streams, mounted, is the tree that
/// unpacking the same archive into a directory gives, and the content digests taken on the way
/// give its tree digest without reading the files again.
#[test]
fn a_converted_archive_mounts_as_the_unpacked_tree() {
    assert_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    awkward_tree(&src);
    let mut blob = Vec::new();
    let written =
        strata_oci::write_layer(&src, &mut blob, strata_oci::Compression::Zstd, 0).unwrap();
    let expected = strata_oci::Expected {
        digest: Some(written.digest),
        diff_id: Some(written.diff_id),
    };
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    strata_oci::apply_layer(
        &blob[..],
        strata_oci::Compression::Zstd,
        &unpacked,
        expected,
    )
    .unwrap();
    // Written as a restore writes it: direct, around the page cache.
    let image = tmp.path().join("layer.erofs");
    let out = strata_oci::erofs::ImageFile::create_new(&image).unwrap();
    assert!(out.is_direct(), "the test directory takes direct I/O");
    let (converted, out) =
        strata_oci::erofs::convert_layer(&blob[..], strata_oci::Compression::Zstd, out, expected)
            .unwrap();
    out.finish().unwrap();
    assert_eq!(converted.digest, written.digest);
    // Every content ends before the metadata offset, and the inodes start at or after it.
    let bytes = std::fs::read(&image).unwrap();
    let meta_blkaddr = u32::from_le_bytes(bytes[1024 + 40..1024 + 44].try_into().unwrap());
    let from = converted.metadata_offset();
    assert!(from <= u64::from(meta_blkaddr) * 4096 && from < bytes.len() as u64);
    for e in &converted.entries {
        if let strata_oci::erofs::NodeKind::File { block, size, .. } = e.kind {
            assert!(size == 0 || u64::from(block) * 4096 + size <= from);
        }
    }
    let mounted = Mounted::erofs(&image, &tmp.path().join("mnt"));
    assert_eq!(snapshot(&unpacked), snapshot(&mounted.0));
    let layer = strata_key::tree_digest(&src).unwrap();
    assert_eq!(strata_key::tree_digest(&mounted.0).unwrap(), layer);
    // The digest from the entries the conversion listed, without walking the mount.
    assert_eq!(converted.layer_digest(), layer);
}

/// A converted archive is refused, with nothing mounted, when its digest is not the one asked
/// for or an entry would escape the layer.
#[test]
fn a_converted_archive_is_checked_like_an_unpacked_one() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"f").unwrap();
    let mut blob = Vec::new();
    strata_oci::write_layer(&src, &mut blob, strata_oci::Compression::Zstd, 0).unwrap();
    let wrong = strata_oci::Expected {
        digest: Some(strata_oci::OciDigest::of(b"something else")),
        diff_id: None,
    };
    let out = std::io::Cursor::new(Vec::new());
    let err =
        strata_oci::erofs::convert_layer(&blob[..], strata_oci::Compression::Zstd, out, wrong)
            .unwrap_err();
    assert!(
        matches!(err, strata_oci::ApplyError::DigestMismatch { .. }),
        "{err}"
    );

    for (path, why) in [("../escape", "`..`"), ("/abs", "absolute")] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Written raw: the tar crate refuses such names when set through its API.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let out = std::io::Cursor::new(Vec::new());
        let err = strata_oci::erofs::convert_layer(
            &tar[..],
            strata_oci::Compression::None,
            out,
            strata_oci::Expected::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, strata_oci::ApplyError::Unsafe { .. }) && err.to_string().contains(path),
            "{path} ({why}): {err}"
        );
    }
}

/// A refused entry at the start of a large archive ends the conversion there: the thread
/// decompressing the rest stops when nobody reads it, rather than waiting forever for room.
#[test]
fn a_refused_entry_before_a_large_rest_fails_without_waiting_for_the_rest() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(64 << 20);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("big").unwrap();
    h.set_cksum();
    b.append(&h, std::io::repeat(7).take(64 << 20)).unwrap();
    let tar = b.into_inner().unwrap();
    // In one zstd frame and in several.
    let one = zstd::stream::encode_all(&tar[..], 3).unwrap();
    let mut framed = Vec::new();
    for part in tar.chunks(8 << 20) {
        framed.extend(zstd::bulk::compress(part, 3).unwrap());
    }
    for blob in [one, framed] {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let out = std::io::Cursor::new(Vec::new());
            let r = strata_oci::erofs::convert_layer(
                &blob[..],
                strata_oci::Compression::Zstd,
                out,
                strata_oci::Expected::default(),
            );
            let _ = tx.send(r.map(|_| ()));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the conversion still runs after a minute")
            .unwrap_err();
        assert!(
            matches!(err, strata_oci::ApplyError::Unsafe { .. }),
            "{err}"
        );
    }
}

/// A restore that runs out of disk: the image file reports the failed write, and every later
/// flush or finish reports it too, rather than waiting for a write that will never come or
/// calling an incomplete image complete.
#[test]
fn an_image_file_that_runs_out_of_space_fails_and_keeps_failing() {
    use std::io::Write;
    assert_root();
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a 2 MiB tmpfs");
    let _mounted = Mounted(small.clone());
    let path = small.join("image");
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut file = strata_oci::erofs::ImageFile::create_new(&path).unwrap();
        let first = file
            .write_all(&vec![1u8; 3 << 20])
            .and_then(|()| file.flush());
        let again = file.flush();
        let finished = file.finish();
        let _ = done.send((first.is_err(), again.is_err(), finished.is_err()));
    });
    let outcome = outcome
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the image file hung after a failed write");
    assert_eq!(
        outcome,
        (true, true, true),
        "(first, flush again, finish) failed"
    );
}
