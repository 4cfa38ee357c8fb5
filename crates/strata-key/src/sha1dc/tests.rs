//! `Sha1Dc` against the reference it must equal, `sha1-checked`: digests and verdicts.

use std::path::PathBuf;

use proptest::prelude::*;
use sha1_checked::Digest;

use super::*;

/// What `sha1-checked`, configured as ids were before `Sha1Dc`, says of `pieces` fed in turn.
fn reference(pieces: &[&[u8]]) -> Sha1DcOutput {
    let mut sha = sha1_checked::Sha1::builder().safe_hash(false).build();
    for piece in pieces {
        Digest::update(&mut sha, piece);
    }
    let (digest, collision) = match sha.try_finalize() {
        sha1_checked::CollisionResult::Ok(d) => (d, false),
        sha1_checked::CollisionResult::Collision(d) => (d, true),
        sha1_checked::CollisionResult::Mitigated(_) => panic!("safe hash is off"),
    };
    Sha1DcOutput {
        digest: digest.into(),
        collision,
    }
}

fn ours(pieces: &[&[u8]]) -> Sha1DcOutput {
    let mut sha = Sha1Dc::new();
    for piece in pieces {
        sha.update(piece);
    }
    sha.finalize()
}

/// Deterministic pseudo-random bytes (xorshift), for inputs larger than proptest should shrink.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A data file of the `sha1-checked` crate's tests, from the sources cargo unpacked to build
/// this crate.
pub(crate) fn sha1_checked_test_data(name: &str) -> Vec<u8> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let src = home.join("registry/src");
    for index in std::fs::read_dir(&src).expect("cargo's registry sources") {
        let path = index
            .unwrap()
            .path()
            .join("sha1-checked-0.10.0/tests/data")
            .join(name);
        if let Ok(bytes) = std::fs::read(&path) {
            return bytes;
        }
    }
    panic!(
        "{name} of sha1-checked 0.10.0 not found under {}",
        src.display()
    );
}

#[test]
fn known_digests() {
    assert_eq!(
        ours(&[b"abc"]).digest,
        *b"\xa9\x99\x3e\x36\x47\x06\x81\x6a\xba\x3e\x25\x71\x78\x50\xc2\x6c\x9c\xd0\xd8\x9d"
    );
    assert_eq!(ours(&[]), reference(&[]));
}

#[test]
fn every_length_around_the_block_boundaries_equals_the_reference() {
    let data = noise(64 * 40 + 1, 7);
    for len in (0..=200)
        .chain(64 * 16 - 2..=64 * 16 + 70)
        .chain(64 * 40..=64 * 40 + 1)
    {
        let bytes = &data[..len];
        assert_eq!(ours(&[bytes]), reference(&[bytes]), "length {len}");
    }
}

#[test]
fn multi_megabyte_inputs_in_uneven_pieces_equal_the_reference() {
    let data = noise(5 * 1024 * 1024 + 37, 99);
    let (a, rest) = data.split_at(1_000_003);
    let (b, c) = rest.split_at(65_536 * 3 + 5);
    assert_eq!(ours(&[a, b, c]), reference(&[&data]));
}

#[test]
fn the_published_collisions_are_detected_as_the_reference_detects_them() {
    for name in [
        "shattered-1.pdf",
        "shattered-2.pdf",
        "sha-mbles-1.bin",
        "sha-mbles-2.bin",
    ] {
        let bytes = sha1_checked_test_data(name);
        let want = reference(&[&bytes]);
        assert!(want.collision, "{name}: the reference detects it");
        assert_eq!(ours(&[&bytes]), want, "{name}");
        // Fed in pieces that split the colliding blocks.
        let (a, b) = bytes.split_at(333);
        assert_eq!(ours(&[a, b]), want, "{name} in two pieces");
        // Shifted off the block boundaries, the same bytes are no attack.
        let shifted = reference(&[b"x", &bytes]);
        assert!(!shifted.collision);
        assert_eq!(ours(&[b"x", &bytes]), shifted, "{name} shifted");
    }
}

#[test]
fn the_colliding_block_is_found_by_the_batched_check_too() {
    // Batches sliding over the SHAttered PDF's blocks, whose colliding blocks have non-zero
    // masks: every lane equals the one-block check, whichever vector code the CPU runs.
    let bytes = sha1_checked_test_data("shattered-1.pdf");
    let blocks = bytes.as_chunks::<BLOCK>().0;
    let mut flagged = 0;
    for start in 0..blocks.len() - LANES {
        // Whole batches, and the short ones that end a message.
        for len in [LANES, 1, 7] {
            let batch = &blocks[start..start + len];
            let masks = condition_masks(batch);
            for (lane, block) in batch.iter().enumerate() {
                let one = condition_mask(block);
                assert_eq!(
                    masks[lane],
                    one,
                    "block {} of a batch of {len}",
                    start + lane
                );
                flagged += (one != 0) as usize;
            }
        }
    }
    assert!(flagged > 0);
}

#[test]
fn the_checking_compression_is_plain_sha1() {
    // Every block through the slow path, every vector tested: same state as SHA-NI's.
    let data = noise(64 * 100, 3);
    let mut slow = INITIAL_STATE;
    let mut fast = INITIAL_STATE;
    for block in data.as_chunks::<BLOCK>().0 {
        let w = recheck::expand(block);
        assert!(!recheck::compress_and_check(&mut slow, &w, !0));
        compress_plain(&mut fast, std::slice::from_ref(block));
        assert_eq!(slow, fast);
    }
}

#[test]
fn random_blocks_rarely_need_the_full_check() {
    // The mask is what decides the speed: report how often it is not zero (and keep it rare).
    let data = noise(64 * LANES * 4096, 11);
    let blocks = data.as_chunks::<BLOCK>().0;
    let mut flagged = 0;
    for batch in blocks.chunks(LANES) {
        let masks = condition_masks(batch);
        for (lane, block) in batch.iter().enumerate() {
            assert_eq!(masks[lane], condition_mask(block));
            flagged += (masks[lane] != 0) as usize;
        }
    }
    eprintln!(
        "{flagged} of {} random blocks have a non-zero mask",
        blocks.len()
    );
    assert!(flagged * 10 < blocks.len(), "{flagged} of {}", blocks.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_input_in_any_pieces_equals_the_reference(
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 900..5000),
        ],
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        cuts.sort();
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts {
            pieces.push(&data[at..cut]);
            at = cut;
        }
        pieces.push(&data[at..]);
        prop_assert_eq!(ours(&pieces), reference(&[&data]));
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn large_random_inputs_equal_the_reference(len in 0usize..3_000_000, seed in any::<u64>()) {
        let data = noise(len, seed);
        prop_assert_eq!(ours(&[&data]), reference(&[&data]));
    }
}
