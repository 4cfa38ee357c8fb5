//! The walk against the `ignore` crate's walker, configured as the capture configured it before
//! strata had a walk of its own: the same files, modes, ids and targets on awkward trees.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::file_id::file_id;
use crate::stat_cache::StatCache;
use crate::workspace::{FileKind, Selection, Workspace, WorkspaceError, WorkspaceFile};

/// A file found by the walk: its relative path and whether it is a symlink.
type Found = (String, bool);

/// The capture's walk as it was, with the `ignore` crate (kept verbatim).
fn reference_walk(
    root: &Path,
    exclude: &[PathBuf],
    selection: &Selection<'_>,
) -> Result<Vec<Found>, WorkspaceError> {
    use std::sync::Mutex;
    let exclude = exclude.to_vec();
    let git_dir = selection.git_dir;
    let honour = !selection.no_ignore;
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .ignore(honour)
        .git_ignore(honour)
        .git_exclude(honour)
        .git_global(false)
        .require_git(false)
        .parents(false)
        .threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .filter_entry(move |e| {
            (e.file_name() != ".git" || (git_dir && e.depth() == 1))
                && !exclude.iter().any(|x| e.path() == x)
        })
        .build_parallel();
    let found: Mutex<Vec<Found>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<WorkspaceError>> = Mutex::new(None);

    /// A walker thread's findings, handed over in batches (and when the thread is done).
    struct Batch<'a> {
        items: Vec<Found>,
        into: &'a Mutex<Vec<Found>>,
    }
    impl Drop for Batch<'_> {
        fn drop(&mut self) {
            self.into.lock().expect("walk lock").append(&mut self.items);
        }
    }

    walker.run(|| {
        let mut batch = Batch {
            items: Vec::with_capacity(1024),
            into: &found,
        };
        let failure = &failure;
        Box::new(move |entry| {
            let fail = |e: WorkspaceError| {
                failure.lock().expect("walk lock").get_or_insert(e);
                ignore::WalkState::Quit
            };
            let entry = match entry {
                Ok(e) => e,
                Err(source) => {
                    return fail(WorkspaceError::Walk {
                        root: root.to_path_buf(),
                        source,
                    });
                }
            };
            let Some(ft) = entry.file_type() else {
                return ignore::WalkState::Continue;
            };
            if ft.is_dir() || !(ft.is_file() || ft.is_symlink()) {
                return ignore::WalkState::Continue;
            }
            let rel = entry
                .path()
                .strip_prefix(root)
                .expect("walk stays under its root");
            let Some(rel) = rel.to_str() else {
                return fail(WorkspaceError::NotUtf8 {
                    path: entry.path().to_path_buf(),
                });
            };
            batch.items.push((rel.to_string(), ft.is_symlink()));
            if batch.items.len() >= 1024 {
                batch
                    .into
                    .lock()
                    .expect("walk lock")
                    .append(&mut batch.items);
            }
            ignore::WalkState::Continue
        })
    });
    if let Some(e) = failure.into_inner().expect("walk lock") {
        return Err(e);
    }
    let mut found = found.into_inner().expect("walk lock");
    found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// What the capture must give, computed the plain way from the reference walk.
fn reference_capture(
    root: &Path,
    exclude: &[PathBuf],
    selection: &Selection<'_>,
) -> Vec<WorkspaceFile> {
    reference_walk(root, exclude, selection)
        .unwrap()
        .into_iter()
        .filter(|(rel, _)| selection.files.is_none_or(|keep| keep(rel)))
        .map(|(rel, is_symlink)| {
            use std::os::unix::fs::MetadataExt;
            let path = root.join(&rel);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = if is_symlink {
                FileKind::Symlink {
                    target: std::fs::read_link(&path)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                }
            } else {
                FileKind::File {
                    digest: file_id(&path).unwrap(),
                    size: meta.len(),
                }
            };
            WorkspaceFile {
                path: rel.into(),
                mode: meta.mode() & 0o7777,
                kind,
            }
        })
        .collect()
}

fn write(root: &Path, rel: impl AsRef<Path>, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Everything a walk can trip over, in one tree.
fn awkward_tree(root: &Path) {
    // Ignore files at several depths, with negations, anchors, directory patterns, a line
    // that does not parse, and the three kinds (`.ignore` outranks `.gitignore`).
    write(
        root,
        ".gitignore",
        "target/\n*.log\n!keep.log\n/anchored\nbuild\n[\n",
    );
    write(
        root,
        "sub/.gitignore",
        "*.tmp\n!important.tmp\n/only-here\n",
    );
    write(root, "sub/deeper/.ignore", "secret\n!build\n");
    write(root, "sub/deeper/.gitignore", "visible\n");
    write(root, ".git/HEAD", "ref: refs/heads/main\n");
    write(root, ".git/info/exclude", "excluded.txt\n");
    write(root, ".git/objects/ab/cdef", "blob");
    for rel in [
        "target/out",
        "a.log",
        "keep.log",
        "anchored",
        "sub/anchored",
        "build/x",
        "sub/build",
        "sub/deeper/build/kept",
        "x.tmp",
        "sub/x.tmp",
        "sub/important.tmp",
        "sub/only-here",
        "sub/deeper/only-here",
        "sub/deeper/secret",
        "sub/deeper/visible",
        "excluded.txt",
        "sub/excluded.txt",
        "src/main.c",
    ] {
        write(root, rel, rel);
    }
    // A nested repository (a `.git` file naming its git directory, as a linked worktree
    // has), whose exclude file applies beneath it, and a stray `.git` directory deeper down.
    let real_git = root.join("elsewhere/real.git");
    write(root, "elsewhere/real.git/commondir", ".\n");
    write(root, "elsewhere/real.git/info/exclude", "nested-excluded\n");
    write(
        root,
        "nested/.git",
        &format!("gitdir: {}\n", real_git.display()),
    );
    write(root, "nested/nested-excluded", "n");
    write(root, "nested/kept", "n");
    write(root, "other/.git/HEAD", "ref");
    write(root, "other/file", "o");
    // Names that sort awkwardly against directories, odd characters, a hidden file.
    for rel in [
        "a",
        "a.c",
        "a-b",
        "a0",
        "dir.x",
        "dir/inner",
        "dir0",
        "h\u{e9}llo",
        ".hidden",
    ] {
        write(root, rel, rel);
    }
    write(root, "new\nline", "newline");
    write(root, "with space/f", "s");
    // Symlinks: to a file, to a directory (not followed), dangling, absolute, and one whose
    // name an ignore pattern matches.
    std::os::unix::fs::symlink("a.c", root.join("link-file")).unwrap();
    std::os::unix::fs::symlink("dir", root.join("link-dir")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("a.c", root.join("link.log")).unwrap();
    // Hard links: two names, one content.
    write(root, "hard/one", "same inode");
    std::fs::hard_link(root.join("hard/one"), root.join("hard/two")).unwrap();
    // Empty directories, and one holding only ignored files.
    std::fs::create_dir_all(root.join("empty/emptier")).unwrap();
    write(root, "only-ignored/z.log", "z");
    // Modes: executable, setgid, and a file nobody may read (root reads it anyway).
    write(root, "run.sh", "#!/bin/sh");
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(root, "sticky", "s");
    std::fs::set_permissions(root.join("sticky"), std::fs::Permissions::from_mode(0o2644)).unwrap();
    write(root, "locked", "l");
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // A name that is not UTF-8, ignored (so no error), and a FIFO (never kept).
    std::fs::write(
        root.join("target")
            .join(std::ffi::OsStr::from_bytes(b"\xff\xfe")),
        "x",
    )
    .unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo.as_c_str(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // A directory larger than one getdents64 buffer, and a deep one.
    for i in 0..1500 {
        write(
            root,
            format!("wide/a-rather-long-file-name-to-fill-the-buffer-{i:05}"),
            "w",
        );
    }
    let deep: PathBuf = (0..40).map(|i| format!("d{i}")).collect();
    write(root, deep.join("bottom"), "deep");
    // The cache directory, left out by the caller.
    write(root, "cache/entry", "c");
}

fn same_as_reference(root: &Path, exclude: &[PathBuf], selection: &Selection<'_>) {
    let (ws, _) =
        Workspace::capture_selected(root, exclude, &StatCache::default(), selection).unwrap();
    let expected = reference_capture(root, exclude, selection);
    let paths =
        |files: &[WorkspaceFile]| files.iter().map(|f| f.path.to_string()).collect::<Vec<_>>();
    assert_eq!(paths(&ws.files), paths(&expected));
    assert_eq!(ws.files, expected);
    assert_eq!(ws.seen.len(), ws.files.len());
    assert_eq!(
        Workspace::digest(ws.files.iter()),
        Workspace::digest(expected.iter())
    );
}

#[test]
fn the_walk_keeps_what_the_ignore_crate_kept() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    awkward_tree(root);
    let exclude = [root.join("cache")];
    let no_index = Selection {
        ignore_git_index: true,
        ..Selection::default()
    };
    same_as_reference(root, &exclude, &no_index);
    same_as_reference(root, &exclude, &Selection::default());
    same_as_reference(
        root,
        &exclude,
        &Selection {
            git_dir: true,
            ..Selection::default()
        },
    );
    // Without ignore rules the name that is not UTF-8 is kept: an error for both walks.
    let everything = Selection {
        no_ignore: true,
        ..Selection::default()
    };
    let bad = root
        .join("target")
        .join(std::ffi::OsStr::from_bytes(b"\xff\xfe"));
    assert!(reference_walk(root, &[], &everything).is_err());
    let err =
        Workspace::capture_selected(root, &[], &StatCache::default(), &everything).unwrap_err();
    assert!(
        matches!(&err, WorkspaceError::NotUtf8 { path } if *path == bad),
        "{err:?}"
    );
    std::fs::remove_file(&bad).unwrap();
    same_as_reference(root, &[], &everything);
    let only_sub = |p: &str| p.starts_with("sub/");
    same_as_reference(
        root,
        &exclude,
        &Selection {
            files: Some(&only_sub),
            ..Selection::default()
        },
    );
    // A few things the tree must show, so that agreement is not agreement on nothing.
    let (ws, _) =
        Workspace::capture_selected(root, &exclude, &StatCache::default(), &no_index).unwrap();
    let has = |p: &str| ws.files.iter().any(|f| &*f.path == p);
    assert!(has("keep.log") && has("sub/important.tmp") && has("sub/deeper/build/kept"));
    assert!(has("new\nline") && has("link-dir") && has("hard/two") && has("locked"));
    assert!(!has("a.log") && !has("excluded.txt") && !has("nested/nested-excluded"));
    assert!(!has("sub/deeper/secret") && has("other/file") && has("sub/deeper/build/kept"));
    assert!(!has("fifo") && !has("cache/entry") && !has(".git/HEAD"));
    assert!(ws.files.len() > 1500);
}

#[test]
fn a_kept_name_that_is_not_utf8_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("dir")).unwrap();
    std::fs::write(
        d.path()
            .join("dir")
            .join(std::ffi::OsStr::from_bytes(b"bad\xff")),
        "x",
    )
    .unwrap();
    let err = Workspace::capture(d.path(), &[]).unwrap_err();
    assert!(
        matches!(&err, WorkspaceError::NotUtf8 { path } if path.starts_with(d.path().join("dir"))),
        "{err:?}"
    );
}

#[test]
fn an_unreadable_directory_is_an_error_naming_it() {
    // Root reads any directory: take the right away with a directory that is not one.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("gone")).unwrap();
    let root = d.path().join("gone");
    std::fs::remove_dir(&root).unwrap();
    let err = Workspace::capture(&root, &[]).unwrap_err();
    assert!(
        matches!(&err, WorkspaceError::ReadDir { path, .. } if *path == root),
        "{err:?}"
    );
}

#[test]
fn a_file_rewritten_within_the_same_mtime_is_read_again() {
    // The racy case: same size, mtime put back to what the stat cache recorded. The ctime
    // moved, so the remembered id is not used.
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    std::fs::write(&f, "one").unwrap();
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (ws, cache) = Workspace::capture_with(d.path(), &[], &StatCache::default()).unwrap();
    let cache = cache.unwrap();
    let (again, unchanged) = Workspace::capture_with(d.path(), &[], &cache).unwrap();
    assert_eq!(again.files, ws.files);
    assert!(
        unchanged.is_none(),
        "an unchanged tree keeps its stat cache"
    );
    std::fs::write(&f, "two").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (after, _) = Workspace::capture_with(d.path(), &[], &cache).unwrap();
    let FileKind::File { digest, .. } = &after.files[0].kind else {
        panic!("a file")
    };
    assert_eq!(
        *digest,
        crate::file_id::FileId::of_bytes(b"two", &f).unwrap()
    );
}

#[test]
fn a_linked_worktree_named_by_relative_paths_reads_its_own_info_exclude() {
    // A `.git` file and `commondir` with relative paths, as `git worktree add` can write them:
    // relative to the `.git` file's directory and to the git directory, never to the working
    // directory of the process (which here is the crate's).
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("ws");
    write(d.path(), "main/.git/info/exclude", "*.tmp\n");
    write(d.path(), "main/.git/worktrees/ws/commondir", "../..\n");
    write(&root, ".git", "gitdir: ../main/.git/worktrees/ws\n");
    write(&root, "kept.txt", "k");
    write(&root, "left-out.tmp", "t");
    let ws = Workspace::capture(&root, &[]).unwrap();
    let paths: Vec<&str> = ws.files.iter().map(|f| &*f.path).collect();
    assert_eq!(paths, vec!["kept.txt"]);
}
