//! Times a workspace capture, cold then warm (with the stat cache of the first):
//! `capture DIR [--ignore-git-index]`. In a git checkout the cold capture takes clean tracked
//! files' ids from git's index; `--ignore-git-index` hashes every file as outside git.
use std::time::Instant;
fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("DIR"));
    let selection = strata_key::Selection {
        ignore_git_index: std::env::args().any(|a| a == "--ignore-git-index"),
        ..strata_key::Selection::default()
    };
    let t = Instant::now();
    let (ws, stats, sources) = strata_key::Workspace::capture_counted(
        &dir,
        &[],
        &strata_key::StatCache::default(),
        &selection,
    )
    .unwrap();
    eprintln!(
        "cold: {} files in {:?} ({sources:?})",
        ws.files.len(),
        t.elapsed()
    );
    let t = Instant::now();
    // In a checkout whose files git's index all vouches for, there is nothing to remember.
    let bytes = stats.unwrap_or_default().to_bytes();
    let encoded = t.elapsed();
    let t = std::time::Instant::now();
    let back = strata_key::StatCache::from_bytes(&bytes);
    eprintln!(
        "stat cache: {} bytes, encoded in {encoded:?}, loaded in {:?}",
        bytes.len(),
        t.elapsed()
    );
    std::thread::sleep(std::time::Duration::from_millis(10));
    let mut ws = None;
    for _ in 0..5 {
        let t = Instant::now();
        let (w, _, sources) =
            strata_key::Workspace::capture_counted(&dir, &[], &back, &selection).unwrap();
        eprintln!(
            "warm: {} files in {:?} ({sources:?})",
            w.files.len(),
            t.elapsed()
        );
        ws = Some(w);
    }
    let ws = ws.unwrap();
    let t = Instant::now();
    let d = strata_key::Workspace::digest(ws.files.iter());
    eprintln!("digest {} in {:?}", d.short(), t.elapsed());
}
