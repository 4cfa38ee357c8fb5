//! What stat'ing every file of a tree costs on this machine, with nothing else done: the floor
//! under any warm key that checks each file (as `git status` and strata do). Reads the files'
//! paths, relative to ROOT, from standard input, then times three rounds of each way to stat
//! them, on one thread:
//!
//!   git -C ROOT ls-files | cargo run --release -p strata-key --example stat_floor -- ROOT
use std::io::BufRead;
use std::time::Instant;

use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};

fn main() {
    let root = std::env::args()
        .nth(1)
        .expect("usage: stat_floor ROOT < paths");
    let open = |dir: &rustix::fd::OwnedFd, path: &str| {
        rustix::fs::openat(
            dir,
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let cwd = rustix::fs::openat(
        rustix::fs::CWD,
        root.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("ROOT");
    let paths: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map(|l| l.unwrap())
        .collect();
    let n = paths.len() as f64;
    let report = |what: &str, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        println!("{what}: {:.1} ms, {:.2} µs a file", s * 1e3, s * 1e6 / n);
    };
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..paths.len() {
            let _ = rustix::process::getppid();
        }
        report("getppid (a bare system call), as many", t);

        let t = Instant::now();
        for p in &paths {
            rustix::fs::statat(&cwd, p.as_str(), AtFlags::SYMLINK_NOFOLLOW).expect("stat");
        }
        report("fstatat(root, whole path)", t);

        let t = Instant::now();
        let mut current: Option<(&str, rustix::fd::OwnedFd)> = None;
        for p in &paths {
            let (dir, name) = p.rsplit_once('/').unwrap_or((".", p));
            if current.as_ref().is_none_or(|(d, _)| *d != dir) {
                current = Some((dir, open(&cwd, dir)));
            }
            let fd = &current.as_ref().expect("set above").1;
            rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).expect("stat");
        }
        report("fstatat(its directory, name), one open per directory", t);

        let t = Instant::now();
        for p in &paths {
            rustix::fs::statx(
                &cwd,
                p.as_str(),
                AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
                StatxFlags::SIZE | StatxFlags::MTIME | StatxFlags::INO,
            )
            .expect("statx");
        }
        report("statx(root, whole path), minimal mask", t);
    }
}
