//! The workspace key of a real git checkout, with ids taken from git's index, against the key
//! of the same files with the index ignored and outside git: they must be equal whatever state
//! the files are in. Runs the real `git` (installed by `scripts/test`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_key::{FileId, FileKind, IdSources, Selection, StatCache, Workspace, WorkspaceFile};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn capture(root: &Path, ignore_git_index: bool) -> (Workspace, IdSources) {
    let selection = Selection {
        ignore_git_index,
        ..Selection::default()
    };
    let (ws, _, sources) =
        Workspace::capture_counted(root, &[], &StatCache::default(), &selection).unwrap();
    (ws, sources)
}

/// The same files copied to a directory that is not a git checkout.
fn outside_git(root: &Path) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(root)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(copy.join(".git")).unwrap();
    (d, copy)
}

/// Asserts that the key (and every file's id) of `root` is the same from the index, with the
/// index ignored, and outside git; returns where the ids came from.
fn assert_same_key_as_outside_git(root: &Path) -> IdSources {
    let (from_index, sources) = capture(root, false);
    let (ignored, none) = capture(root, true);
    assert_eq!(none.git_index, 0);
    let (_d, copy) = outside_git(root);
    let (outside, _) = capture(&copy, false);
    assert_eq!(files(&from_index), files(&ignored));
    assert_eq!(files(&from_index), files(&outside));
    let key = Workspace::digest(from_index.files.iter());
    assert_eq!(key, Workspace::digest(ignored.files.iter()));
    assert_eq!(key, Workspace::digest(outside.files.iter()));
    sources
}

fn files(ws: &Workspace) -> Vec<WorkspaceFile> {
    ws.files.clone()
}

fn id_of(ws: &Workspace, path: &str) -> FileId {
    match &ws.files.iter().find(|f| &*f.path == path).unwrap().kind {
        FileKind::File { digest, .. } => *digest,
        FileKind::Symlink { .. } => panic!("{path} is a symlink"),
    }
}

/// Lets the filesystem clock move past the index's mtime, then has git rewrite its index, as
/// any later git command does: entries written in the same tick as the index stop being racy.
fn settle_index(root: &Path, version: &str) {
    std::thread::sleep(std::time::Duration::from_millis(30));
    // git writes its index only when something changed: changing the version is a change.
    let other = if version == "4" { "2" } else { "4" };
    git(root, &["update-index", "--index-version", other]);
    git(root, &["update-index", "--index-version", version]);
}

fn repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    git(root, &["init", "-q"]);
    write(root, "clean.txt", "clean\n");
    write(root, "dirty.txt", "dirty\n");
    write(root, "same-size.txt", "abcdef\n");
    write(root, "staged.txt", "one\n");
    write(root, "to-rename.txt", "rename me\n");
    write(root, "mode.sh", "echo hi\n");
    write(root, "sub/deep/file.c", "int x;\n");
    write(root, "skip.txt", "skip\n");
    write(root, ".gitignore", "*.log\n");
    std::os::unix::fs::symlink("clean.txt", root.join("link")).unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "init"]);
    d
}

#[test]
fn every_kind_of_change_keys_as_outside_git() {
    for version in ["2", "3", "4"] {
        let d = repo();
        let root = d.path();
        // Extended flags need version 3 (git writes 3 for 2 when one is set): skip-worktree
        // for 3 and 4, and that file is read.
        let skipped = usize::from(version != "2");
        if skipped == 1 {
            git(root, &["update-index", "--skip-worktree", "skip.txt"]);
        }
        settle_index(root, version);
        let index = std::fs::read(root.join(".git/index")).unwrap();
        assert_eq!(index[4..8], [0, 0, 0, version.parse::<u8>().unwrap()]);

        // Clean: every regular file's id from the index, none read.
        let sources = assert_same_key_as_outside_git(root);
        assert_eq!(
            sources.read, skipped,
            "only skip-worktree is read: {sources:?}"
        );
        let (ws, _) = capture(root, false);
        for path in ["clean.txt", "sub/deep/file.c"] {
            let git_id = git(root, &["hash-object", path]);
            assert_eq!(id_of(&ws, path).to_hex(), git_id.trim());
        }

        // Dirty (new size), dirty with the same size, staged then modified, renamed, mode
        // changed, untracked, ignored, a new symlink.
        write(root, "dirty.txt", "dirty and longer\n");
        write(root, "same-size.txt", "ABCDEF\n");
        write(root, "staged.txt", "two\n");
        git(root, &["add", "staged.txt"]);
        write(root, "staged.txt", "three\n");
        git(root, &["mv", "to-rename.txt", "renamed.txt"]);
        std::fs::set_permissions(root.join("mode.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        write(root, "untracked.txt", "new\n");
        write(root, "build.log", "ignored\n");
        std::os::unix::fs::symlink("sub", root.join("newlink")).unwrap();
        let sources = assert_same_key_as_outside_git(root);
        assert!(sources.git_index >= 2, "{sources:?}");
        let (ws, _) = capture(root, false);
        assert!(ws.files.iter().all(|f| &*f.path != "build.log"));
        assert_eq!(
            id_of(&ws, "same-size.txt"),
            FileId::of_bytes(b"ABCDEF\n", Path::new("x")).unwrap()
        );

        // After git has recorded all of it, the ids come from the index again.
        git(root, &["add", "-A"]);
        settle_index(root, version);
        let sources = assert_same_key_as_outside_git(root);
        assert_eq!(sources.read, skipped, "{sources:?}");
    }
}

#[test]
fn a_racily_clean_file_is_read() {
    let d = repo();
    let root = d.path();
    settle_index(root, "2");
    assert_eq!(assert_same_key_as_outside_git(root).read, 0);
    // An index written no later than the files were last modified: git itself could not tell
    // a change made in the same tick, so every file is read.
    let index = root.join(".git/index");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&index)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let sources = assert_same_key_as_outside_git(root);
    assert_eq!(sources.git_index, 0, "{sources:?}");

    // A file changed right after `git add`, in the same tick as the index: read, whatever
    // git recorded.
    let d = repo();
    let root = d.path();
    write(root, "clean.txt", "CLEAN\n");
    git(root, &["add", "clean.txt"]);
    write(root, "clean.txt", "other\n");
    let (ws, _) = capture(root, false);
    assert_eq!(
        id_of(&ws, "clean.txt"),
        FileId::of_bytes(b"other\n", Path::new("x")).unwrap()
    );
    assert_same_key_as_outside_git(root);
}

#[test]
fn a_fresh_clone_reads_no_clean_tracked_file() {
    let d = tempfile::tempdir().unwrap();
    let upstream = d.path().join("upstream");
    std::fs::create_dir(&upstream).unwrap();
    git(&upstream, &["init", "-q"]);
    for i in 0..300 {
        write(
            &upstream,
            &format!("d{}/f{i}.txt", i % 7),
            &format!("file {i}\n"),
        );
    }
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "init"]);
    let clone = d.path().join("clone");
    git(
        d.path(),
        &["clone", "-q", upstream.to_str().unwrap(), "clone"],
    );

    // Straight after the clone: only files written in the index's own tick are read.
    let index_mtime = std::fs::metadata(clone.join(".git/index"))
        .unwrap()
        .modified()
        .unwrap();
    let racy = walk_files(&clone)
        .iter()
        .filter(|p| std::fs::metadata(p).unwrap().modified().unwrap() >= index_mtime)
        .count();
    let sources = assert_same_key_as_outside_git(&clone);
    assert_eq!(sources.read, racy, "{sources:?}");
    assert_eq!(sources.git_index + sources.read, 300);

    // Once git has rewritten its index (any later git command), none is.
    settle_index(&clone, "4");
    let sources = assert_same_key_as_outside_git(&clone);
    assert_eq!(
        sources,
        IdSources {
            remembered: 0,
            git_index: 300,
            read: 0
        }
    );
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        if e.file_name() == ".git" {
            continue;
        }
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk_files(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// A clone whose files pass through a clean/smudge filter (as LFS does) and end-of-line
/// conversion: the index holds the ids of the blobs, not of the files.
#[test]
fn converted_files_are_keyed_by_their_bytes() {
    let d = tempfile::tempdir().unwrap();
    let upstream = d.path().join("upstream");
    std::fs::create_dir(&upstream).unwrap();
    let filter = [
        "-c",
        "filter.x.clean=sed s/^/STORED:/",
        "-c",
        "filter.x.smudge=sed s/^STORED://",
        "-c",
        "filter.x.required=true",
    ];
    git(&upstream, &["init", "-q"]);
    write(&upstream, ".gitattributes", "*.dat filter=x\n");
    write(&upstream, "big.dat", "payload\n");
    write(&upstream, "plain.c", "int main;\n");
    write(&upstream, "crlf/.gitattributes", "*.txt text eol=crlf\n");
    write(&upstream, "crlf/notes.txt", "line one\nline two\n");
    write(&upstream, "crlf/other.c", "int y;\n");
    let mut add = filter.to_vec();
    add.extend(["add", "-A"]);
    git(&upstream, &add);
    git(&upstream, &["commit", "-qm", "init"]);

    let clone = d.path().join("clone");
    let mut args = vec!["clone", "-q"];
    args.extend(filter);
    args.extend([upstream.to_str().unwrap(), "clone"]);
    git(d.path(), &args);
    settle_index(&clone, "2");
    // The conversions are real: the files' bytes are not the blobs the index names.
    assert_eq!(
        std::fs::read_to_string(clone.join("crlf/notes.txt")).unwrap(),
        "line one\r\nline two\r\n"
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("big.dat")).unwrap(),
        "payload\n"
    );
    let staged = git(&clone, &["ls-files", "-s", "big.dat", "crlf/notes.txt"]);
    let (ws, sources) = capture(&clone, false);
    for (path, bytes) in [
        ("big.dat", &b"payload\n"[..]),
        ("crlf/notes.txt", &b"line one\r\nline two\r\n"[..]),
    ] {
        let id = FileId::of_bytes(bytes, Path::new(path)).unwrap();
        assert_eq!(id_of(&ws, path), id);
        assert!(!staged.contains(&id.to_hex()), "{path}: {staged}");
    }
    // The root `.gitattributes` sets a filter: every file is read.
    assert_eq!(sources.git_index, 0, "{sources:?}");
    assert_same_key_as_outside_git(&clone);

    // Only `crlf/` converts: the files elsewhere come from the index. (`big.dat` is checked out
    // again without its filter: a file converted under attributes since removed is one git
    // itself calls clean although its bytes are not its blob; docs/cache-key.md.)
    git(&clone, &["rm", "-q", "--cached", ".gitattributes"]);
    std::fs::remove_file(clone.join(".gitattributes")).unwrap();
    std::fs::remove_file(clone.join("big.dat")).unwrap();
    git(&clone, &["checkout", "--", "big.dat"]);
    settle_index(&clone, "2");
    let sources = assert_same_key_as_outside_git(&clone);
    assert_eq!(sources.read, 3, "crlf/ only: {sources:?}");

    // `core.autocrlf` and `.git/info/attributes` apply everywhere.
    git(&clone, &["config", "core.autocrlf", "true"]);
    assert_eq!(assert_same_key_as_outside_git(&clone).git_index, 0);
    git(&clone, &["config", "core.autocrlf", "false"]);
    assert!(assert_same_key_as_outside_git(&clone).git_index > 0);
    write(&clone, ".git/info/attributes", "*.c ident\n");
    assert_eq!(assert_same_key_as_outside_git(&clone).git_index, 0);
    // An attributes file need not be UTF-8: still read for conversions.
    std::fs::remove_file(clone.join(".git/info/attributes")).unwrap();
    assert!(assert_same_key_as_outside_git(&clone).git_index > 0);
    std::fs::write(
        clone.join(".gitattributes"),
        b"caf\xe9.c -diff\n*.c ident\n",
    )
    .unwrap();
    assert_eq!(assert_same_key_as_outside_git(&clone).git_index, 0);
}

/// A SHA-256 repository: its index is not read (ids are SHA-1 blob ids), every file is hashed.
#[test]
fn a_sha256_repository_hashes_every_file() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    git(root, &["init", "-q", "--object-format=sha256"]);
    write(root, "a.txt", "a\n");
    git(root, &["add", "-A"]);
    settle_index(root, "2");
    let sources = assert_same_key_as_outside_git(root);
    assert_eq!(sources.git_index, 0);
    assert_eq!(sources.read, 1);
}

/// strata runs as root (not through sudo) over a clone that the CI's user made: git, asked for
/// the checkout's config, must not refuse it as another user's repository.
#[test]
fn a_checkout_of_another_user_is_keyed_from_its_index() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test changes file owners: run it as root (scripts/test does)"
    );
    let d = tempfile::tempdir().unwrap();
    let upstream = d.path().join("upstream");
    std::fs::create_dir(&upstream).unwrap();
    git(&upstream, &["init", "-q"]);
    for i in 0..50 {
        write(
            &upstream,
            &format!("d{}/f{i}.txt", i % 5),
            &format!("file {i}\n"),
        );
    }
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "init"]);
    git(
        d.path(),
        &["clone", "-q", upstream.to_str().unwrap(), "clone"],
    );
    let clone = d.path().join("clone");
    let status = Command::new("chown")
        .args(["-R", "1234:1234"])
        .arg(&clone)
        .status()
        .unwrap();
    assert!(status.success());
    // The chown moved every ctime: the index is refreshed as the CI's user would have it.
    std::thread::sleep(std::time::Duration::from_millis(30));
    for version in ["2", "4"] {
        let out = Command::new("git")
            .arg("-C")
            .arg(&clone)
            .args([
                "-c",
                "safe.directory=*",
                "update-index",
                "--refresh",
                "--index-version",
            ])
            .arg(version)
            .env_remove("SUDO_UID")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sources = assert_same_key_as_outside_git(&clone);
    assert_eq!(
        sources,
        IdSources {
            remembered: 0,
            git_index: 50,
            read: 0
        }
    );
    // Its own config is read too: git, as root without sudo, would skip a repository of
    // another user's and answer as if nothing were set there.
    let set = Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args(["-c", "safe.directory=*", "config", "core.autocrlf", "true"])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let plain = Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args(["config", "--get", "core.autocrlf"])
        .env_remove("SUDO_UID")
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "git reads another user's repository here: this test proves nothing"
    );
    let sources = assert_same_key_as_outside_git(&clone);
    assert_eq!(
        sources,
        IdSources {
            remembered: 0,
            git_index: 0,
            read: 50
        }
    );
}

/// A checkout's first capture keeps only what git's index cannot vouch for (a fresh clone does
/// not write a copy of its index), and a rerun with nothing changed writes nothing; a capture
/// that reads an edited file keeps the index's ids too, and from then on the stat cache answers
/// for every file. Keyed as outside git throughout.
#[test]
fn the_stat_cache_of_a_checkout_keeps_index_ids_once_it_is_written_after_a_first_capture() {
    let d = repo();
    let root = d.path();
    settle_index(root, "2");
    write(root, "untracked.txt", "new\n");
    write(root, "clean.txt.bak", "copy\n");
    // Files written in the stat cache's own tick are never vouched for (racily clean).
    std::thread::sleep(std::time::Duration::from_millis(30));
    let capture_with = |known: &StatCache| {
        Workspace::capture_counted(root, &[], known, &Selection::default()).unwrap()
    };
    let (first, kept, sources) = capture_with(&StatCache::default());
    let kept = kept.expect("a first capture is kept");
    assert!(sources.git_index > 0, "{sources:?}");
    assert_eq!(kept.len(), sources.read, "{sources:?}");

    // Through its bytes, as the engine keeps it.
    let known = StatCache::from_bytes(&kept.to_bytes());
    let (second, again, sources2) = capture_with(&known);
    assert_eq!(
        sources2,
        IdSources {
            remembered: sources.read,
            git_index: sources.git_index,
            read: 0
        }
    );
    assert!(again.is_none(), "nothing changed: nothing new to keep");
    assert_eq!(files(&second), files(&first));

    // A tracked file edited since: read, and the cache written keeps every id. (Settled
    // first: an edit in the capture's own tick would be read again next time.)
    std::thread::sleep(std::time::Duration::from_millis(30));
    write(root, "clean.txt", "edited\n");
    std::thread::sleep(std::time::Duration::from_millis(30));
    let (third, kept3, sources3) = capture_with(&known);
    assert_eq!(
        sources3,
        IdSources {
            remembered: sources.read,
            git_index: sources.git_index - 1,
            read: 1
        }
    );
    let all = kept3.expect("an edit is kept");
    assert_eq!(all.len(), sources.read + sources.git_index);
    assert_eq!(
        id_of(&third, "clean.txt"),
        FileId::of_bytes(b"edited\n", Path::new("x")).unwrap()
    );

    // From then on the stat cache answers for every file (the index is not asked).
    let known = StatCache::from_bytes(&all.to_bytes());
    let (fourth, nothing, sources4) = capture_with(&known);
    assert_eq!(
        sources4,
        IdSources {
            remembered: sources.read + sources.git_index,
            git_index: 0,
            read: 0
        }
    );
    assert!(nothing.is_none(), "nothing changed: nothing new to keep");
    assert_eq!(files(&fourth), files(&third));
    assert_same_key_as_outside_git(root);
}

/// Once the stat cache answers for every file, a few files it cannot vouch for are read, and
/// the index is opened only for many: after a branch switch that changed 300 files, they come
/// from the index, unread. Keyed as outside git either way.
#[test]
fn a_few_misses_are_read_and_many_are_taken_from_the_index() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    git(root, &["init", "-q", "-b", "main"]);
    for i in 0..400 {
        write(root, &format!("src/f{i:03}.txt"), &format!("main {i}\n"));
    }
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "main"]);
    git(root, &["checkout", "-qb", "other"]);
    for i in 0..300 {
        write(root, &format!("src/f{i:03}.txt"), &format!("other {i}\n"));
    }
    git(root, &["commit", "-qam", "other"]);
    git(root, &["checkout", "-q", "main"]);
    std::thread::sleep(std::time::Duration::from_millis(30));
    let capture_with = |known: &StatCache| {
        Workspace::capture_counted(root, &[], known, &Selection::default()).unwrap()
    };
    // A stat cache holding every id (a first capture, then an edit that keeps the index's).
    let (_, first, _) = capture_with(&StatCache::default());
    let first = first.expect("a first capture is kept");
    write(root, "src/f399.txt", "edited\n");
    std::thread::sleep(std::time::Duration::from_millis(30));
    let (_, all, _) = capture_with(&first);
    let all = all.expect("an edit keeps the index's ids");
    assert_eq!(all.len(), 400);

    // Three files changed: read, the index left alone.
    git(root, &["checkout", "-q", "--", "src/f399.txt"]);
    for i in 0..3 {
        write(root, &format!("src/f{i:03}.txt"), &format!("local {i}\n"));
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    let (_, _, few) = capture_with(&all);
    assert_eq!((few.git_index, few.read), (0, 4), "{few:?}");
    assert_same_key_as_outside_git(root);

    // A branch switch: 300 files clean in the index, taken from it.
    git(root, &["checkout", "-q", "--", "."]);
    git(root, &["checkout", "-q", "other"]);
    // The index rewritten after the files, so that git vouches for them (not racily clean).
    settle_index(root, "4");
    let (_, _, many) = capture_with(&all);
    assert_eq!((many.git_index, many.read), (301, 0), "{many:?}");
    assert_same_key_as_outside_git(root);
}
