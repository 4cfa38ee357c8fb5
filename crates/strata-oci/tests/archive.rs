//! Layer archives: random trees survive a round trip exactly, and hostile archives are refused
//! without anything being written outside the target. Needs root (owners, device nodes, the
//! `trusted.` xattr namespace overlay uses).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use proptest::prelude::*;
use strata_oci::{ApplyError, Compression, Expected, OciDigest, apply_layer, write_layer};

fn assert_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "archive tests need root (chown, mknod, trusted.* xattrs); run them with sudo"
    );
}

/// Everything about a tree that an archive must keep, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
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
            "dir".to_string()
        } else if ft.is_file() {
            let content = std::fs::read(&path).unwrap();
            // Hard links: every name of an inode points at the first name seen.
            let first = inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.clone())
                .clone();
            format!("file {} link-of={first}", blake3::hash(&content))
        } else if ft.is_symlink() {
            format!("symlink {}", std::fs::read_link(&path).unwrap().display())
        } else if ft.is_char_device() {
            format!("char {}", m.rdev())
        } else if ft.is_block_device() {
            format!("block {}", m.rdev())
        } else {
            "fifo".to_string()
        };
        let mtime = m.mtime();
        let xattrs = xattrs(&path);
        out.insert(
            rel,
            format!(
                "{kind} mode={:o} owner={}:{} mtime={mtime} xattrs={xattrs:?}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
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

fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[derive(Debug, Clone)]
enum Node {
    File {
        content: Vec<u8>,
        mode: u32,
    },
    Dir {
        children: Vec<(String, Node)>,
        opaque: bool,
    },
    Symlink(String),
    /// A second name for the first regular file created before it (if any).
    HardLink,
    Whiteout,
    Fifo,
    CharDev(u32, u32),
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        4 => (proptest::collection::vec(any::<u8>(), 0..3000), prop_oneof![Just(0o644u32), Just(0o755), Just(0o600), Just(0o4755)])
            .prop_map(|(content, mode)| Node::File { content, mode }),
        1 => "[a-z/.]{1,20}".prop_map(Node::Symlink),
        1 => Just(Node::HardLink),
        1 => Just(Node::Whiteout),
        1 => Just(Node::Fifo),
        1 => (1u32..10, 1u32..10).prop_map(|(a, b)| Node::CharDev(a, b)),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        (
            proptest::collection::btree_map("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,11}", inner, 0..6),
            any::<bool>(),
        )
            .prop_map(|(children, opaque)| Node::Dir {
                children: children.into_iter().collect(),
                opaque,
            })
    })
}

fn build(
    dir: &Path,
    children: &[(String, Node)],
    first_file: &mut Option<std::path::PathBuf>,
    n: &mut u32,
) {
    for (name, node) in children {
        *n += 1;
        let path = dir.join(name);
        match node {
            Node::File { content, mode } => {
                std::fs::write(&path, content).unwrap();
                std::os::unix::fs::chown(&path, Some(*n % 3 * 1000), Some(*n % 2 * 100)).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
                let c = CString::new("user.note").unwrap();
                rustix::fs::lsetxattr(
                    &path,
                    c.as_c_str(),
                    format!("n{n}").as_bytes(),
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap();
                first_file.get_or_insert(path.clone());
            }
            Node::Dir { children, opaque } => {
                std::fs::create_dir(&path).unwrap();
                if *opaque {
                    let c = CString::new("trusted.overlay.opaque").unwrap();
                    rustix::fs::lsetxattr(
                        &path,
                        c.as_c_str(),
                        b"y",
                        rustix::fs::XattrFlags::empty(),
                    )
                    .unwrap();
                }
                build(&path, children, first_file, n);
            }
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            Node::HardLink => match first_file {
                Some(f) => std::fs::hard_link(f.as_path(), &path).unwrap(),
                None => std::fs::write(&path, b"no file yet").unwrap(),
            },
            Node::Whiteout => rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap(),
            Node::Fifo => rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o640),
                0,
            )
            .unwrap(),
            Node::CharDev(a, b) => rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o660),
                rustix::fs::makedev(*a, *b),
            )
            .unwrap(),
        }
        set_mtime(&path, 1_600_000_000 + *n as i64 * 1000);
    }
}

fn round_trip(children: &[(String, Node)], threads: u32) {
    let src = tempfile::tempdir().unwrap();
    let mut first = None;
    let mut n = 0;
    build(src.path(), children, &mut first, &mut n);
    // Directory mtimes change as children are created: set them last.
    fix_dir_times(src.path());
    let mut blob = Vec::new();
    let written = write_layer(src.path(), &mut blob, Compression::Zstd, threads).unwrap();
    assert_eq!(written.size, blob.len() as u64);
    assert_eq!(written.digest, OciDigest::of(&blob));
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().join("layer");
    std::fs::create_dir(&out).unwrap();
    let applied = apply_layer(&blob[..], Compression::Zstd, &out, both(&written)).unwrap();
    assert_eq!(applied.digest, written.digest);
    assert_eq!(snapshot(src.path()), snapshot(&out));
    assert_eq!(
        strata_key::tree_digest(src.path()).unwrap(),
        strata_key::tree_digest(&out).unwrap()
    );
    // The content digests taken while writing are those of the files written.
    assert_eq!(
        strata_key::tree_digest(src.path()).unwrap(),
        strata_key::tree_digest_known(&out, &applied.contents).unwrap()
    );
}

fn fix_dir_times(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            fix_dir_times(&e.path());
            set_mtime(&e.path(), 1_500_000_000);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_trees_round_trip(tree in proptest::collection::btree_map("[a-z][a-z0-9]{0,7}", node(), 0..8)) {
        assert_root();
        let children: Vec<_> = tree.into_iter().collect();
        round_trip(&children, 0);
    }
}

#[test]
fn multithreaded_compression_round_trips_a_large_file_and_long_names() {
    assert_root();
    let long = "d".repeat(120);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let tree = vec![
        (
            long.clone(),
            Node::Dir {
                children: vec![(
                    "f".repeat(150),
                    Node::File {
                        content: big,
                        mode: 0o644,
                    },
                )],
                opaque: false,
            },
        ),
        ("link".to_string(), Node::Symlink("x".repeat(200))),
    ];
    round_trip(&tree, 2);
}

// ---- hostile archives ----

/// Appends an entry with exactly these name bytes, bypassing the tar crate's own path checks.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

/// Applies an uncompressed archive into a fresh dir inside a sandbox dir, and checks that nothing
/// appeared beside the target.
fn apply_hostile(tar: &[u8]) -> ApplyError {
    assert_root();
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("layer");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(outer.path().join("victim"), b"untouched").unwrap();
    let err = apply_layer(tar, Compression::None, &dest, Expected::default())
        .expect_err("hostile archive applied");
    let names: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "something was written beside the layer: {names:?}"
    );
    assert_eq!(
        std::fs::read(outer.path().join("victim")).unwrap(),
        b"untouched"
    );
    err
}

fn assert_refused(err: ApplyError, why: &str) {
    let text = err.to_string();
    assert!(matches!(err, ApplyError::Unsafe { .. }), "{text}");
    assert!(text.contains(why), "expected `{why}` in: {text}");
}

#[test]
fn absolute_paths_are_refused() {
    let t = archive(|b| raw_entry(b, "/etc/strata-pwned", tar::EntryType::Regular, "", b"x"));
    assert_refused(apply_hostile(&t), "absolute");
}

#[test]
fn parent_dir_components_are_refused() {
    let t = archive(|b| raw_entry(b, "a/../../victim", tar::EntryType::Regular, "", b"x"));
    assert_refused(apply_hostile(&t), "`..`");
}

#[test]
fn a_file_through_a_symlink_is_refused() {
    let t = archive(|b| {
        raw_entry(b, "escape", tar::EntryType::Symlink, "..", b"");
        raw_entry(b, "escape/victim", tar::EntryType::Regular, "", b"pwned");
    });
    assert_refused(apply_hostile(&t), "non-directory");
}

#[test]
fn hard_links_outside_the_layer_are_refused() {
    for target in ["/etc/passwd", "../victim", "missing"] {
        let t = archive(|b| raw_entry(b, "hl", tar::EntryType::Link, target, b""));
        assert_refused(apply_hostile(&t), "hard link");
    }
}

#[test]
fn duplicate_entries_are_refused() {
    let t = archive(|b| {
        raw_entry(b, "a", tar::EntryType::Regular, "", b"one");
        raw_entry(b, "a", tar::EntryType::Symlink, "/etc/passwd", b"");
    });
    assert_refused(apply_hostile(&t), "already has an entry");
    let t = archive(|b| {
        raw_entry(b, "b", tar::EntryType::Regular, "", b"one");
        raw_entry(b, ".wh.b", tar::EntryType::Regular, "", b"");
    });
    assert_refused(apply_hostile(&t), "already has an entry");
}

#[test]
fn overlay_xattrs_are_refused() {
    let t = archive(|b| {
        b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])])
            .unwrap();
        raw_entry(b, "d", tar::EntryType::Directory, "", b"");
    });
    assert_refused(apply_hostile(&t), "overlayfs xattr");
}

/// Expect the blob's digest only.
fn digest(digest: OciDigest) -> Expected {
    Expected {
        digest: Some(digest),
        diff_id: None,
    }
}

/// Expect both digests of a layer just written.
fn both(written: &strata_oci::LayerArchive) -> Expected {
    Expected {
        digest: Some(written.digest),
        diff_id: Some(written.diff_id),
    }
}

#[test]
fn a_tampered_blob_is_detected_by_digest() {
    assert_root();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"content").unwrap();
    let mut blob = Vec::new();
    let written = write_layer(src.path(), &mut blob, Compression::Zstd, 0).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let wrong = OciDigest::of(b"something else");
    let err = apply_layer(&blob[..], Compression::Zstd, dest.path(), digest(wrong)).unwrap_err();
    assert!(matches!(err, ApplyError::DigestMismatch { .. }), "{err}");
    // The right blob, but not the tar stream an image config would list.
    let dest = tempfile::tempdir().unwrap();
    let expected = Expected {
        digest: Some(written.digest),
        diff_id: Some(wrong),
    };
    let err = apply_layer(&blob[..], Compression::Zstd, dest.path(), expected).unwrap_err();
    assert!(matches!(err, ApplyError::DiffIdMismatch { .. }), "{err}");
    // A flipped byte breaks decompression or the digest; either way it is refused.
    let mut bad = blob.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let dest = tempfile::tempdir().unwrap();
    assert!(
        apply_layer(
            &bad[..],
            Compression::Zstd,
            dest.path(),
            digest(written.digest)
        )
        .is_err()
    );
    // Truncated input too.
    let dest = tempfile::tempdir().unwrap();
    assert!(
        apply_layer(
            &blob[..blob.len() - 5],
            Compression::Zstd,
            dest.path(),
            digest(written.digest)
        )
        .is_err()
    );
}

#[test]
fn whiteouts_and_opaque_dirs_map_to_oci_names() {
    assert_root();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("opaque")).unwrap();
    let c = CString::new("trusted.overlay.opaque").unwrap();
    rustix::fs::lsetxattr(
        src.path().join("opaque"),
        c.as_c_str(),
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.path().join("gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    let mut blob = Vec::new();
    write_layer(src.path(), &mut blob, Compression::Zstd, 0).unwrap();
    let plain = zstd::decode_all(&blob[..]).unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&plain[..]).entries().unwrap() {
        let e = e.unwrap();
        names.push((
            e.path().unwrap().display().to_string(),
            e.header().entry_type(),
        ));
    }
    assert_eq!(
        names,
        vec![
            (".wh.gone".to_string(), tar::EntryType::Regular),
            ("opaque".to_string(), tar::EntryType::Directory),
            ("opaque/.wh..wh..opq".to_string(), tar::EntryType::Regular),
        ]
    );
}

#[test]
fn gzip_and_plain_layers_round_trip_too() {
    assert_root();
    let tree = vec![(
        "d".to_string(),
        Node::Dir {
            children: vec![
                (
                    "f".into(),
                    Node::File {
                        content: b"gzip me".to_vec(),
                        mode: 0o640,
                    },
                ),
                ("gone".into(), Node::Whiteout),
            ],
            opaque: true,
        },
    )];
    for compression in [Compression::Gzip, Compression::None] {
        let src = tempfile::tempdir().unwrap();
        let (mut first, mut n) = (None, 0);
        build(src.path(), &tree, &mut first, &mut n);
        fix_dir_times(src.path());
        let mut blob = Vec::new();
        let written = write_layer(src.path(), &mut blob, compression, 0).unwrap();
        let dest = tempfile::tempdir().unwrap();
        apply_layer(&blob[..], compression, dest.path(), both(&written)).unwrap();
        assert_eq!(
            snapshot(src.path()),
            snapshot(dest.path()),
            "{compression:?}"
        );
    }
}

/// `len` bytes that do not compress (xorshift from `seed`).
fn incompressible(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn an_archive_cut_inside_a_large_file_is_malformed_not_a_write_error() {
    // A large file is copied straight from the stream: when the stream ends early, that is the
    // archive's fault (a truncated blob), which must not pass for this machine's own failure.
    let src = tempfile::tempdir().unwrap();
    // Incompressible, so that the cut falls inside the file's data.
    let data = incompressible(3 << 20, 0x9e3779b97f4a7c15);
    std::fs::write(src.path().join("big"), data).unwrap();
    let mut blob = Vec::new();
    write_layer(src.path(), &mut blob, Compression::Zstd, 1).unwrap();
    blob.truncate(blob.len() / 2);
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().join("layer");
    std::fs::create_dir(&out).unwrap();
    let err = apply_layer(&blob[..], Compression::Zstd, &out, Expected::default()).unwrap_err();
    assert!(matches!(err, ApplyError::Malformed(_)), "{err:?}");
}

#[test]
fn the_digest_covers_what_follows_the_compressed_data() {
    // Bytes after the end of a gzip member are read to the end too, and count in the digest,
    // in both unpackers.
    assert_root();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"content").unwrap();
    let mut blob = Vec::new();
    write_layer(src.path(), &mut blob, Compression::Gzip, 0).unwrap();
    let bare = OciDigest::of(&blob);
    // More than the decompressing thread holds in its buffers ahead of the reader.
    blob.extend(std::iter::repeat_n(7u8, 20 << 20));
    let whole = OciDigest::of(&blob);
    let dest = tempfile::tempdir().unwrap();
    let applied = apply_layer(&blob[..], Compression::Gzip, dest.path(), digest(whole)).unwrap();
    assert_eq!(applied.size, blob.len() as u64);
    let dest = tempfile::tempdir().unwrap();
    let err = apply_layer(&blob[..], Compression::Gzip, dest.path(), digest(bare)).unwrap_err();
    assert!(matches!(err, ApplyError::DigestMismatch { .. }), "{err}");
    let image = std::io::Cursor::new(Vec::new());
    let (converted, _) =
        strata_oci::erofs::convert_layer(&blob[..], Compression::Gzip, image, digest(whole))
            .unwrap();
    assert_eq!(converted.size, blob.len() as u64);
    let image = std::io::Cursor::new(Vec::new());
    let err = strata_oci::erofs::convert_layer(&blob[..], Compression::Gzip, image, digest(bare))
        .unwrap_err();
    assert!(matches!(err, ApplyError::DigestMismatch { .. }), "{err}");
}

/// An error with its sources, as a user reads it.
fn chain(err: &dyn std::error::Error) -> String {
    let mut said = err.to_string();
    let mut at = err.source();
    while let Some(e) = at {
        said = format!("{said}: {e}");
        at = e.source();
    }
    said
}

/// Gives `ok` bytes of `data`, then fails.
struct Failing<'a> {
    data: &'a [u8],
    ok: usize,
}

impl std::io::Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ok == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the download broke off",
            ));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn a_download_that_breaks_off_fails_the_restore() {
    // Where the download fails, early or late, both unpackers fail (and return, with the
    // download's error among the causes), whatever the decompressor had read by then.
    assert_root();
    let src = tempfile::tempdir().unwrap();
    let data = incompressible(3 << 20, 0x2545f4914f6cdd1d);
    std::fs::write(src.path().join("big"), &data).unwrap();
    let mut blob = Vec::new();
    let written = write_layer(src.path(), &mut blob, Compression::Zstd, 1).unwrap();
    for ok in [0, 100, blob.len() / 2, blob.len() - 1] {
        let dest = tempfile::tempdir().unwrap();
        let out = dest.path().join("layer");
        std::fs::create_dir(&out).unwrap();
        let input = Failing { data: &blob, ok };
        let err = apply_layer(input, Compression::Zstd, &out, digest(written.digest)).unwrap_err();
        assert!(chain(&err).contains("broke off"), "{ok}: {}", chain(&err));
        let input = Failing { data: &blob, ok };
        let image = std::io::Cursor::new(Vec::new());
        let err = strata_oci::erofs::convert_layer(
            input,
            Compression::Zstd,
            image,
            digest(written.digest),
        )
        .unwrap_err();
        assert!(chain(&err).contains("broke off"), "{ok}: {}", chain(&err));
    }
}
