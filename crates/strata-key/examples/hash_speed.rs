//! Compares the hashes a workspace file's id could use, over every regular file of a tree
//! held in memory (one core, no I/O): `hash_speed DIR`. BLAKE3 (what keyed files before),
//! plain SHA-1 (SHA-NI where the CPU has it) and SHA-1 with collision detection (what ids use).
use std::time::Instant;

use sha1::Digest;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("DIR"));
    let (ws, _) =
        strata_key::Workspace::capture_with(&dir, &[], &strata_key::StatCache::default()).unwrap();
    let contents: Vec<Vec<u8>> = ws
        .files
        .iter()
        .filter(|f| matches!(f.kind, strata_key::FileKind::File { .. }))
        .map(|f| std::fs::read(dir.join(&*f.path)).unwrap())
        .collect();
    let bytes: usize = contents.iter().map(|c| c.len()).sum();
    let report = |name: &str, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {} files, {} MB in {:.0} ms ({:.0} MB/s)",
            contents.len(),
            bytes >> 20,
            s * 1000.0,
            bytes as f64 / s / 1e6
        );
    };
    for _ in 0..2 {
        let t = Instant::now();
        for c in &contents {
            std::hint::black_box(blake3::hash(c));
        }
        report("blake3", t);
        let t = Instant::now();
        for c in &contents {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {}\0", c.len()));
            h.update(c);
            std::hint::black_box(h.finalize());
        }
        report("sha1 (blob ids, no collision detection)", t);
        let t = Instant::now();
        for c in &contents {
            std::hint::black_box(strata_key::FileId::of_bytes(c, &dir).unwrap());
        }
        report("sha1-checked (blob ids, collision detection)", t);
    }
}
