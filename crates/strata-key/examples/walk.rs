//! Times the `ignore` crate's parallel walk alone: `walk DIR`.
fn main() {
    let dir = std::env::args().nth(1).expect("DIR");
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let n = std::sync::atomic::AtomicUsize::new(0);
        ignore::WalkBuilder::new(&dir)
            .hidden(false)
            .threads(2)
            .build_parallel()
            .run(|| {
                Box::new(|_| {
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ignore::WalkState::Continue
                })
            });
        eprintln!("{} entries in {:?}", n.into_inner(), t.elapsed());
    }
}
