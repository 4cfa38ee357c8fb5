//! The real watcher (inotify, its socket, its cookies) over real directories: after every kind
//! of change, a capture from the previous walk and the watcher's answer finds exactly what a
//! whole walk finds, and it walks where it must.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strata_key::{Selection, StatCache, WalkCache, WalkHow, Watch, Workspace};
use strata_watch::Watcher;

/// A workspace with a watcher answering on a socket beside it.
struct Watched {
    dir: tempfile::TempDir,
    /// The workspace, under `dir`.
    at: &'static str,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), strata_watch::WatchError>>>,
    walk: WalkCache,
    known: StatCache,
}

impl Watched {
    fn new(setup: impl FnOnce(&Path)) -> Watched {
        Self::new_at("ws", setup)
    }

    fn new_at(at: &'static str, setup: impl FnOnce(&Path)) -> Watched {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(at)).unwrap();
        setup(&dir.path().join(at));
        let socket = dir.path().join("watch/w.sock");
        let mut w = Watched {
            dir,
            at,
            socket,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            walk: WalkCache::default(),
            known: StatCache::default(),
        };
        w.start();
        w
    }

    fn start(&mut self) {
        self.stop.store(false, Ordering::Relaxed);
        let mut watcher = Watcher::start(&self.root(), &[], &self.socket).unwrap();
        let stop = self.stop.clone();
        self.thread = Some(std::thread::spawn(move || watcher.serve(&stop)));
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join(self.at)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// A capture as a run makes it with a watcher: asks, captures, keeps what it says to keep.
    /// Checked against a whole walk with nothing remembered; returns how it found the files.
    fn capture(&mut self) -> WalkHow {
        let answer =
            strata_watch::ask(&self.socket, self.walk.token()).expect("the watcher answers");
        let watch = Watch {
            answer: &answer,
            previous: &self.walk,
        };
        let captured = Workspace::capture_watched(
            &self.root(),
            &[],
            &self.known,
            &Selection::default(),
            Some(watch),
        )
        .unwrap();
        let (whole, _, _) = Workspace::capture_counted(
            &self.root(),
            &[],
            &StatCache::default(),
            &Selection::default(),
        )
        .unwrap();
        let paths = |ws: &Workspace| {
            ws.files
                .iter()
                .map(|f| f.path.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(&captured.workspace), paths(&whole), "the same files");
        assert_eq!(
            captured.workspace.files, whole.files,
            "the same modes and ids"
        );
        assert_eq!(captured.workspace.seen, whole.seen, "the same stats");
        if let Some(walk) = captured.walk_cache {
            self.walk = walk;
        }
        if let Some(known) = captured.stat_cache {
            self.known = known;
        }
        captured.walk
    }
}

impl Watched {
    /// The paths a whole walk keeps now.
    fn capture_paths(&self) -> Vec<String> {
        let ws = Workspace::capture(&self.root(), &[]).unwrap();
        ws.files.iter().map(|f| f.path.to_string()).collect()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn tree(root: &Path) {
    write(&root.join(".gitignore"), "target/\n*.log\n");
    write(&root.join("src/main.rs"), "fn main() {}");
    write(&root.join("src/lib/a.rs"), "a");
    write(&root.join("src/lib/b.rs"), "b");
    write(&root.join("docs/readme.md"), "readme");
    write(&root.join("target/debug/out"), "built");
    std::os::unix::fs::symlink("src/main.rs", root.join("main-link")).unwrap();
}

fn watched(changed: usize) -> WalkHow {
    WalkHow::Watched { changed }
}

#[test]
fn every_kind_of_change_is_found_as_a_whole_walk_finds_it() {
    let mut w = Watched::new(tree);
    assert_eq!(w.capture(), WalkHow::Walked, "the first capture walks");
    assert_eq!(w.capture(), watched(0), "nothing changed");

    // The same size, so only the event can tell.
    write(&w.path("src/lib/a.rs"), "A");
    assert_eq!(w.capture(), watched(1));

    std::fs::set_permissions(
        w.path("src/main.rs"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // The walk is kept with its first token: the watcher names every change since.
    assert_eq!(w.capture(), watched(2));
    assert_eq!(w.capture(), watched(2), "the same changes, named again");

    write(&w.path("src/lib/c.rs"), "c");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));

    // Ignored, by a directory rule and by a name rule: not kept, no walk.
    write(&w.path("target/debug/more"), "x");
    write(&w.path("src/build.log"), "x");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));

    std::fs::remove_file(w.path("src/lib/b.rs")).unwrap();
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));

    std::fs::rename(w.path("docs/readme.md"), w.path("docs/README.md")).unwrap();
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));

    // An editor's save: a new file renamed over the old one (a new inode).
    write(&w.path("src/.main.rs.swp"), "fn main() { loop {} }");
    std::fs::rename(w.path("src/.main.rs.swp"), w.path("src/main.rs")).unwrap();
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));

    std::fs::remove_file(w.path("main-link")).unwrap();
    std::os::unix::fs::symlink("docs/README.md", w.path("main-link")).unwrap();
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));

    // Directories inside ignored ones (a build's) change nothing kept.
    std::fs::create_dir_all(w.path("target/debug/incremental/x1")).unwrap();
    write(&w.path("target/debug/incremental/x1/dep"), "d");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));

    // What can change which files are kept walks.
    write(&w.path("src/new/d.rs"), "d");
    assert_eq!(w.capture(), WalkHow::Walked, "a new directory");
    write(&w.path(".gitignore"), "target/\n");
    assert_eq!(w.capture(), WalkHow::Walked, "an ignore file");
    write(&w.path("src/.ignore"), "lib/\n");
    assert_eq!(w.capture(), WalkHow::Walked, "a nested ignore file");
    std::fs::remove_file(w.path("src/.ignore")).unwrap();
    assert_eq!(w.capture(), WalkHow::Walked);

    // A renamed directory walks; then the files under its new name are watched as such.
    std::fs::rename(w.path("src/lib"), w.path("src/library")).unwrap();
    assert_eq!(w.capture(), WalkHow::Walked, "a renamed directory");
    write(&w.path("src/library/a.rs"), "again");
    assert_eq!(w.capture(), watched(1), "its files under their new path");
    write(&w.path("src/library/deeper/e.rs"), "e");
    assert_eq!(w.capture(), WalkHow::Walked);
    write(&w.path("src/library/deeper/e.rs"), "E");
    assert_eq!(
        w.capture(),
        watched(1),
        "a directory made under a moved one is watched"
    );

    // A file replaced by a directory of the same name, and a directory removed.
    std::fs::remove_file(w.path("src/lib/../main.rs")).ok();
    std::fs::remove_file(w.path("src/main.rs")).ok();
    write(&w.path("src/main.rs/inner"), "i");
    assert_eq!(w.capture(), WalkHow::Walked);
    std::fs::remove_dir_all(w.path("src/library")).unwrap();
    assert_eq!(w.capture(), WalkHow::Walked);
    assert_eq!(w.capture(), watched(0));
}

#[test]
fn a_git_checkout_walks_only_for_what_decides_what_is_kept() {
    let mut w = Watched::new(|root| {
        tree(root);
        std::fs::create_dir_all(root.join(".git/info")).unwrap();
        write(&root.join(".git/HEAD"), "ref: refs/heads/main\n");
        write(&root.join(".git/info/exclude"), "");
    });
    assert_eq!(w.capture(), WalkHow::Walked);
    // git's own files (its index, refs) are never kept: no walk.
    write(&w.path(".git/index"), "index");
    write(&w.path(".git/HEAD"), "ref: refs/heads/other\n");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
    // info/exclude decides what is kept.
    write(&w.path(".git/info/exclude"), "docs/\n");
    assert_eq!(w.capture(), WalkHow::Walked);
    assert!(w.path("docs").exists());
}

#[test]
fn a_token_of_another_watcher_walks() {
    let mut w = Watched::new(tree);
    assert_eq!(w.capture(), WalkHow::Walked);
    assert_eq!(w.capture(), watched(0));
    w.stop();
    assert!(!w.socket.exists(), "a stopped watcher removes its socket");
    // Changed while nothing watched: only a walk can know.
    write(&w.path("src/lib/a.rs"), "B");
    w.start();
    assert_eq!(w.capture(), WalkHow::Walked);
    assert_eq!(w.capture(), watched(0));
}

#[test]
fn a_second_watcher_on_the_same_socket_is_refused() {
    let w = Watched::new(tree);
    let again = Watcher::start(&w.root(), &[], &w.socket);
    assert!(
        matches!(again, Err(strata_watch::WatchError::AlreadyWatching { .. })),
        "{:?}",
        again.err()
    );
    // And the first still answers.
    assert!(strata_watch::ask(&w.socket, None).is_some());
}

#[test]
fn no_watcher_is_no_answer_and_a_damaged_walk_walks() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(strata_watch::ask(&dir.path().join("none.sock"), None), None);
    // A socket file nobody listens on (a watcher that was killed).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert_eq!(strata_watch::ask(&stale, None), None);

    let mut w = Watched::new(tree);
    assert_eq!(w.capture(), WalkHow::Walked);
    let mut bytes = w.walk.as_bytes().to_vec();
    bytes.truncate(bytes.len() - 3);
    w.walk = WalkCache::from_vec(bytes);
    write(&w.path("src/lib/a.rs"), "Z");
    assert_eq!(w.capture(), WalkHow::Walked, "a cut walk is no walk");
    assert_eq!(w.capture(), watched(0));
}

/// Random edits, many at a time between captures: each capture must equal a whole walk.
#[test]
fn random_changes_are_found_as_a_whole_walk_finds_them() {
    let mut w = Watched::new(tree);
    assert_eq!(w.capture(), WalkHow::Walked);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let dirs = ["src", "src/lib", "docs", "target/debug", "src/deep/er"];
    let names = ["a.rs", "b.rs", "x.log", "notes", ".hidden"];
    let mut watched_captures = 0;
    for round in 0..60 {
        for _ in 0..=next(4) {
            let dir = dirs[next(dirs.len() as u64) as usize];
            let name = names[next(names.len() as u64) as usize];
            let path = w.path(&format!("{dir}/{name}"));
            match next(6) {
                0 | 1 => {
                    // In place, but not through a symlink (it may point at itself).
                    if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                        std::fs::remove_file(&path).unwrap();
                    }
                    write(&path, &format!("round {round} {}", next(3)))
                }
                2 => {
                    let _ = std::fs::remove_file(&path);
                }
                3 => {
                    let other = w.path(&format!("{dir}/{}", names[next(5) as usize]));
                    let _ = std::fs::rename(&path, other);
                }
                4 => {
                    let mode = if next(2) == 0 { 0o644 } else { 0o755 };
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                    let _ = std::os::unix::fs::symlink(name, &path);
                }
            }
        }
        if let WalkHow::Watched { .. } = w.capture() {
            watched_captures += 1;
        }
    }
    assert!(
        watched_captures > 30,
        "most captures used the watcher: {watched_captures}"
    );
}

#[test]
fn the_walk_is_kept_again_once_the_changes_since_it_are_many() {
    let mut w = Watched::new(tree);
    assert_eq!(w.capture(), WalkHow::Walked);
    for i in 0..300 {
        write(&w.path(&format!("src/lib/n{i}.rs")), "n");
    }
    assert_eq!(w.capture(), watched(300));
    assert_eq!(w.capture(), watched(0), "kept with the answer's token");
    write(&w.path("src/lib/n7.rs"), "seven");
    assert_eq!(w.capture(), watched(1));
}

// The cases below were found by an adversarial review of the first version; each gave a key
// other than the walk's.

#[test]
fn a_path_that_was_an_ignored_directory_and_is_now_a_file_is_kept() {
    let mut w = Watched::new(|root| {
        write(&root.join(".gitignore"), "build/\n");
        write(
            &root.join("build"),
            "a file, kept: the rule is for directories",
        );
    });
    assert_eq!(w.capture(), WalkHow::Walked);
    std::fs::remove_file(w.path("build")).unwrap();
    write(&w.path("build/out"), "inside an ignored directory");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
    std::fs::remove_dir_all(w.path("build")).unwrap();
    write(&w.path("build"), "a file again");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
}

#[test]
fn an_ignore_file_seen_through_a_symlink_or_outside_the_workspace_is_looked_at() {
    let outside = tempfile::tempdir().unwrap();
    let exclude = outside.path().join("exclude");
    write(&exclude, "");
    let mut w = Watched::new(|root| {
        write(&root.join("conf/ignores"), "*.log\n");
        std::os::unix::fs::symlink("conf/ignores", root.join(".gitignore")).unwrap();
        write(&root.join("b.tmp"), "b");
        write(&root.join("c.bak"), "c");
        // A `.git` file, as a linked worktree has: its `info/exclude` is elsewhere.
        let git_dir = outside.path().join("worktrees/ws");
        write(&git_dir.join("commondir"), "../..\n");
        std::fs::create_dir_all(outside.path().join("info")).unwrap();
        std::fs::rename(&exclude, outside.path().join("info/exclude")).unwrap();
        write(
            &root.join(".git"),
            &format!("gitdir: {}\n", git_dir.display()),
        );
    });
    assert_eq!(w.capture(), WalkHow::Walked);
    assert_eq!(w.capture(), watched(0));
    // The symlink's target changes; the symlink itself does not.
    write(&w.path("conf/ignores"), "*.log\n*.tmp\n");
    assert_eq!(w.capture(), WalkHow::Walked);
    write(&outside.path().join("info/exclude"), "*.bak\n");
    assert_eq!(w.capture(), WalkHow::Walked);
    assert!(!w.capture_paths().contains(&"c.bak".to_string()));
}

#[test]
fn a_file_with_other_hard_links_is_looked_at_every_time() {
    let outside = tempfile::tempdir().unwrap();
    let mut w = Watched::new(|root| {
        write(&root.join("a"), "one");
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::hard_link(root.join("a"), root.join("d/b")).unwrap();
        write(&root.join("c"), "three");
    });
    std::fs::hard_link(w.path("c"), outside.path().join("c")).unwrap();
    assert_eq!(w.capture(), WalkHow::Walked);
    // Written through one name: no event on the other.
    write(&w.path("a"), "two");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
    // Written from outside the workspace (a link made before the walk).
    write(&outside.path().join("c"), "four!");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
}

#[test]
fn a_workspace_whose_parent_was_renamed_is_walked_where_its_path_now_leads() {
    let mut w = Watched::new_at("par/ws", tree);
    assert_eq!(w.capture(), WalkHow::Walked);
    assert_eq!(w.capture(), watched(0));
    let parent = w.dir.path().to_path_buf();
    std::fs::rename(parent.join("par"), parent.join("par-old")).unwrap();
    std::fs::create_dir_all(w.root()).unwrap();
    write(&w.path("other"), "another directory at the same path");
    assert_eq!(w.capture(), WalkHow::Walked);
    assert_eq!(
        w.capture(),
        WalkHow::Walked,
        "still not the watched directory"
    );
}

#[test]
fn exchanged_directories_are_watched_under_their_new_names() {
    let mut w = Watched::new(|root| {
        write(&root.join("a/f"), "in a");
        write(&root.join("b/g"), "in b");
    });
    assert_eq!(w.capture(), WalkHow::Walked);
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        w.path("a"),
        rustix::fs::CWD,
        w.path("b"),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .unwrap();
    assert_eq!(w.capture(), WalkHow::Walked);
    write(&w.path("b/f"), "edited");
    write(&w.path("b/h"), "new");
    write(&w.path("a/g"), "edited too");
    assert_eq!(w.capture(), watched(3));
}

#[test]
fn a_mount_inside_the_workspace_makes_the_next_capture_walk() {
    let source = tempfile::tempdir().unwrap();
    write(&source.path().join("mounted"), "from elsewhere");
    let mut w = Watched::new(tree);
    assert_eq!(w.capture(), WalkHow::Walked);
    assert_eq!(w.capture(), watched(0));
    rustix::mount::mount_bind(source.path(), w.path("docs")).expect("bind mount (needs root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let mounted = Unmount(w.path("docs"));
    assert_eq!(w.capture(), WalkHow::Walked);
    // While it is mounted, every capture that keeps it walks (its files may have other paths).
    write(&w.path("docs/mounted"), "edited");
    assert_eq!(w.capture(), WalkHow::Walked);
    drop(mounted);
    assert_eq!(w.capture(), WalkHow::Walked);
    write(&w.path("src/lib/a.rs"), "after");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
}

#[test]
fn a_directory_or_file_bind_mounted_elsewhere_in_the_workspace_is_seen_under_both_paths() {
    let mut w = Watched::new(|root| {
        write(&root.join("a/f"), "one");
        std::fs::create_dir(root.join("b")).unwrap();
        write(&root.join("x"), "ex");
        write(&root.join("y"), "why");
    });
    assert_eq!(w.capture(), WalkHow::Walked);
    struct Unmount(Vec<PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
    rustix::mount::mount_bind(w.path("a"), w.path("b")).expect("bind mount (needs root)");
    let _dir = Unmount(vec![w.path("b")]);
    rustix::mount::mount_bind(w.path("x"), w.path("y")).expect("bind mount (needs root)");
    let _file = Unmount(vec![w.path("y")]);
    w.capture();
    // Written under one path, seen under both (each capture checks against a whole walk).
    write(&w.path("a/f"), "two");
    w.capture();
    write(&w.path("b/g"), "new");
    w.capture();
    write(&w.path("x"), "ex, the same size? no");
    w.capture();
}

#[test]
fn a_hard_link_made_after_the_walk_makes_the_next_capture_walk() {
    let mut w = Watched::new(|root| write(&root.join("p"), "one"));
    assert_eq!(w.capture(), WalkHow::Walked);
    std::fs::hard_link(w.path("p"), w.path("p2")).unwrap();
    assert_eq!(w.capture(), WalkHow::Walked, "p has another name now");
    // Written and chmodded through the new name: the old one is looked at every time.
    write(&w.path("p2"), "two");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
    std::fs::set_permissions(w.path("p2"), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
    std::fs::remove_file(w.path("p2")).unwrap();
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
}

#[test]
fn lost_events_make_the_next_capture_walk_and_every_directory_watched_again() {
    let mut w = Watched::new(tree);
    assert_eq!(w.capture(), WalkHow::Walked);
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Clients that say nothing hold the watcher for a second each; meanwhile twice as many
    // events as the queue holds, and a directory made.
    let stalled: Vec<_> = (0..3)
        .map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(&w.socket).unwrap();
            std::io::Write::write_all(&mut s, b"s").unwrap();
            s
        })
        .collect();
    let junk = w.path("target/junk");
    write(&junk, "0");
    for i in 0..max {
        std::fs::write(&junk, i.to_string()).unwrap();
    }
    write(&w.path("src/made/x"), "made while events were lost");
    drop(stalled);
    assert_eq!(w.capture(), WalkHow::Walked);
    write(&w.path("src/made/x"), "edited after");
    assert!(matches!(w.capture(), WalkHow::Watched { .. }));
}
