//! Many openers of one fresh cache at once: none may fail for a lock.

use strata_store::LocalCache;

#[test]
fn a_fresh_cache_opened_by_many_threads_at_once() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| LocalCache::open(dir.path()).map(drop)))
                .collect();
            for h in handles {
                if let Err(e) = h.join().unwrap() {
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(c) = src {
                        msg.push_str(&format!(": {c}"));
                        src = c.source();
                    }
                    panic!("{msg}");
                }
            }
        });
    }
}
