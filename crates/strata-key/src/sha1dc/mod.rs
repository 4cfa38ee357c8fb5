//! SHA-1 with collision detection (SHA-1DC), fast: the same digest and the same verdict as
//! the `sha1-checked` crate (configured as file ids used it: detection on, unavoidable-bit-
//! condition check on, no "safe hash"), at half of hardware SHA-1's speed (twice the crate's).
//!
//! Why it can be split: SHA-1DC does two things per 64-byte block. It compresses the block
//! (plain SHA-1), and it checks whether the block could be one half of a known kind of
//! collision. The check first tests the *unavoidable bit conditions* of 32 disturbance
//! vectors, which depend only on the block's expanded message, not on the chaining value; only
//! for a block where some hold (a non-zero mask) does it need the block's intermediate states
//! to recompress. So here:
//! - the compression is `sha1::compress`, which uses the CPU's SHA extensions (SHA-NI) where it
//!   has them and portable code where not;
//! - the bit conditions (`ubc.rs`) of [`LANES`] blocks are checked at once, one block per lane
//!   of an AVX-512 vector, where the CPU has AVX-512 (detected at run time; one by one where
//!   not);
//! - a block with a non-zero mask is compressed instead by the software compression of
//!   `recheck.rs`, which keeps the states the recompression needs, from the chaining value the
//!   fast path had reached. On random data about 1 block in 21 gets there (4.7 %).
//!
//! The digest is always plain SHA-1's (the "safe hash" mode, which changes it on detection, is
//! not offered: a detection is an error for ids, and an id must be git's).

#[cfg(target_arch = "x86_64")]
mod avx512;
mod dvs;
mod recheck;
mod ubc;
mod word;

/// Blocks whose bit conditions are checked together.
const LANES: usize = 16;

const BLOCK: usize = 64;
const INITIAL_STATE: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];

/// What hashing a message gave: its SHA-1, and whether any of its blocks carries a collision
/// attack SHA-1DC knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Sha1DcOutput {
    pub(crate) digest: [u8; 20],
    pub(crate) collision: bool,
}

/// A batch's bytes.
const BATCH: usize = BLOCK * LANES;

/// An incremental SHA-1DC hasher.
#[derive(Clone)]
pub(crate) struct Sha1Dc {
    state: [u32; 5],
    /// The start of a batch not yet complete, with room for the padding at the end. Whole
    /// batches only are hashed before the end, so that a small file costs one batch, not one
    /// for its first block (which the id's header shifts), one for the rest and one for the
    /// padding.
    pending: [u8; BATCH + BLOCK],
    pending_len: usize,
    total_len: u64,
    collision: bool,
}

impl Sha1Dc {
    pub(crate) fn new() -> Sha1Dc {
        Sha1Dc {
            state: INITIAL_STATE,
            pending: [0; BATCH + BLOCK],
            pending_len: 0,
            total_len: 0,
            collision: false,
        }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.total_len += data.len() as u64;
        if self.pending_len > 0 || data.len() < BATCH {
            let take = (BATCH - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BATCH {
                return;
            }
            let pending = self.pending;
            self.compress(pending[..BATCH].as_chunks::<BLOCK>().0);
            self.pending_len = 0;
        }
        let (blocks, _) = data.as_chunks::<BLOCK>();
        let whole = blocks.len() / LANES * LANES;
        self.compress(&blocks[..whole]);
        let rest = &data[whole * BLOCK..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    pub(crate) fn finalize(mut self) -> Sha1DcOutput {
        // SHA-1's padding: 0x80, zeros, and the length in bits, big-endian, ending a block.
        // The padding blocks are checked like any other, as sha1collisiondetection does.
        let bit_len = self.total_len.wrapping_mul(8);
        let n = self.pending_len;
        let end = (n + 1 + 8).div_ceil(BLOCK) * BLOCK;
        let mut tail = self.pending;
        tail[n] = 0x80;
        tail[n + 1..end - 8].fill(0);
        tail[end - 8..end].copy_from_slice(&bit_len.to_be_bytes());
        self.compress(tail[..end].as_chunks::<BLOCK>().0);
        let mut digest = [0u8; 20];
        for (out, word) in digest.as_chunks_mut::<4>().0.iter_mut().zip(self.state) {
            *out = word.to_be_bytes();
        }
        Sha1DcOutput {
            digest,
            collision: self.collision,
        }
    }

    fn compress(&mut self, blocks: &[[u8; BLOCK]]) {
        for batch in blocks.chunks(LANES) {
            let masks = condition_masks(batch);
            // Runs of blocks whose conditions fail everywhere go through the fast compression
            // in one call; each other block through the checking one.
            let mut run_start = 0;
            for (i, &mask) in masks.iter().enumerate().take(batch.len()) {
                if mask != 0 {
                    compress_plain(&mut self.state, &batch[run_start..i]);
                    let w = recheck::expand(&batch[i]);
                    self.collision |= recheck::compress_and_check(&mut self.state, &w, mask);
                    run_start = i + 1;
                }
            }
            compress_plain(&mut self.state, &batch[run_start..]);
        }
    }
}

type ShaBlock = sha1::digest::generic_array::GenericArray<u8, sha1::digest::typenum::U64>;

/// Plain SHA-1 compression of `blocks` (SHA-NI when the CPU has it: `sha1` detects it).
fn compress_plain(state: &mut [u32; 5], blocks: &[[u8; BLOCK]]) {
    if blocks.is_empty() {
        return;
    }
    // SAFETY: `GenericArray<u8, U64>` has exactly the layout of `[u8; 64]` (generic-array
    // guarantees it), so a slice of one is a slice of the other, of the same length: the cast
    // the `sha1` crate itself does, the other way round.
    let blocks: &[ShaBlock] = unsafe { &*(blocks as *const [[u8; BLOCK]] as *const [ShaBlock]) };
    sha1::compress(state, blocks);
}

/// The disturbance-vector mask of each block of `batch` (at most [`LANES`] blocks; the masks
/// past its end are meaningless).
fn condition_masks(batch: &[[u8; BLOCK]]) -> [u32; LANES] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        let padded;
        let full = match <&[[u8; BLOCK]; LANES]>::try_from(batch) {
            Ok(full) => full,
            // A message's last blocks (all of a small file's): a whole batch costs less than
            // checking even two blocks one by one.
            Err(_) => {
                let mut blocks = [[0u8; BLOCK]; LANES];
                blocks[..batch.len()].copy_from_slice(batch);
                padded = blocks;
                &padded
            }
        };
        // SAFETY: the CPU has the features `avx512::masks` is compiled for.
        return unsafe { avx512::masks(full) };
    }
    masks_one_by_one(batch)
}

fn masks_one_by_one(batch: &[[u8; BLOCK]]) -> [u32; LANES] {
    let mut masks = [0; LANES];
    for (mask, block) in masks.iter_mut().zip(batch) {
        *mask = condition_mask(block);
    }
    masks
}

/// The disturbance-vector mask of one block.
fn condition_mask(block: &[u8; BLOCK]) -> u32 {
    let w = recheck::expand(block);
    ubc::ubc_check(w.first_chunk().expect("80 words"))
}

#[cfg(test)]
pub(crate) mod tests;
