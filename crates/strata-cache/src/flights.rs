//! One upload of a blob at a time per process: a publisher that reaches a blob another thread is
//! uploading waits for it, then finds the blob there and skips its own upload. Two tasks of a run
//! often make the same layer (an empty one, most often) or the same log; uploading it twice at
//! once is wasted work, and some stores handle it badly (docker-registry's filesystem storage
//! rewrites the blob's link file in place on every commit, and a manifest written meanwhile can
//! find it empty and be refused as naming an unknown blob).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Condvar, Mutex};

pub(crate) struct Flights<K> {
    held: Mutex<HashSet<K>>,
    landed: Condvar,
}

/// The right to upload one blob; dropping it lets the next waiter in.
pub(crate) struct Flight<'a, K: Eq + Hash> {
    flights: &'a Flights<K>,
    key: K,
}

impl<K: Eq + Hash + Clone> Flights<K> {
    pub(crate) fn new() -> Flights<K> {
        Flights {
            held: Mutex::new(HashSet::new()),
            landed: Condvar::new(),
        }
    }

    /// Waits until no other thread holds `key`, then holds it.
    pub(crate) fn hold(&self, key: K) -> Flight<'_, K> {
        let mut held = self.held.lock().expect("flights lock");
        while held.contains(&key) {
            held = self.landed.wait(held).expect("flights lock");
        }
        held.insert(key.clone());
        Flight { flights: self, key }
    }
}

impl<K: Eq + Hash> Drop for Flight<'_, K> {
    fn drop(&mut self) {
        // A poisoned lock still holds a valid set: release the key either way.
        let mut held = match self.flights.held.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        held.remove(&self.key);
        self.flights.landed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_holder_per_key_and_different_keys_do_not_wait() {
        let flights = Flights::new();
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _f = flights.hold("blob");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
        // Another key is not held up by a held one.
        let _a = flights.hold("a");
        let _b = flights.hold("b");
        drop(_a);
        let _a_again = flights.hold("a");
    }
}
