//! The full collision check of one block, for the rare block whose bit conditions hold for some
//! disturbance vector: SHA-1DC's recompression, done from the block's own chaining value.
//!
//! For each vector in the mask, the second message of a would-be colliding pair is the block's
//! expanded message XOR the vector's difference. An attack makes both messages' states equal at
//! step 58 (or 65); so from this block's state at that step, the second message is computed
//! backwards to its chaining value and forwards to its output. If its output equals this
//! block's output, the block is one half of a collision of that kind.

use super::dvs::DISTURBANCE_VECTORS;

/// One SHA-1 block's 80 expanded message words.
pub(super) type Expanded = [u32; 80];

pub(super) fn expand(block: &[u8; 64]) -> Expanded {
    let mut w = [0u32; 80];
    for (word, bytes) in w.iter_mut().zip(block.as_chunks::<4>().0) {
        *word = u32::from_be_bytes(*bytes);
    }
    for t in 16..80 {
        w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
    }
    w
}

/// Compresses `w` into `state` as SHA-1 does (the result is always plain SHA-1's), and returns
/// whether the block is one half of a collision for a disturbance vector whose bit is set in
/// `mask`.
pub(super) fn compress_and_check(state: &mut [u32; 5], w: &Expanded, mask: u32) -> bool {
    let chaining = *state;
    let mut at_58 = chaining;
    forward(&mut at_58, w, 0..58);
    let mut at_65 = at_58;
    forward(&mut at_65, w, 58..65);
    let mut end = at_65;
    forward(&mut end, w, 65..80);
    *state = add(chaining, end);
    DISTURBANCE_VECTORS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .any(|(_, dv)| {
            let mut m2 = *w;
            for (m, d) in m2.iter_mut().zip(dv.dm) {
                *m ^= d;
            }
            let from = dv.recompress_from;
            let middle = if from == 58 { at_58 } else { at_65 };
            let mut back = middle;
            backward(&mut back, &m2, 0..from);
            let mut forth = middle;
            forward(&mut forth, &m2, from..80);
            add(back, forth) == *state
        })
}

fn add(a: [u32; 5], b: [u32; 5]) -> [u32; 5] {
    std::array::from_fn(|i| a[i].wrapping_add(b[i]))
}

/// Steps `steps` of SHA-1 applied to `s`, in order. Split by round so that each loop has one
/// round function and constant.
fn forward(s: &mut [u32; 5], w: &Expanded, steps: std::ops::Range<usize>) {
    let within = |round: usize| steps.start.max(20 * round)..steps.end.min(20 * round + 20);
    for t in within(0) {
        step_forward::<0>(s, w[t]);
    }
    for t in within(1) {
        step_forward::<1>(s, w[t]);
    }
    for t in within(2) {
        step_forward::<2>(s, w[t]);
    }
    for t in within(3) {
        step_forward::<3>(s, w[t]);
    }
}

/// Steps `steps` undone from `s`, last first.
fn backward(s: &mut [u32; 5], w: &Expanded, steps: std::ops::Range<usize>) {
    let within = |round: usize| steps.start.max(20 * round)..steps.end.min(20 * round + 20);
    for t in within(3).rev() {
        step_backward::<3>(s, w[t]);
    }
    for t in within(2).rev() {
        step_backward::<2>(s, w[t]);
    }
    for t in within(1).rev() {
        step_backward::<1>(s, w[t]);
    }
    for t in within(0).rev() {
        step_backward::<0>(s, w[t]);
    }
}

#[inline(always)]
fn round_function<const ROUND: usize>(b: u32, c: u32, d: u32) -> u32 {
    match ROUND {
        0 => d ^ (b & (c ^ d)),
        2 => (b & c) | (d & (b | c)),
        _ => b ^ c ^ d,
    }
}

const K: [u32; 4] = [0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6];

/// One SHA-1 step of round `ROUND` (steps `20 ROUND .. 20 ROUND + 20`): `(a, b, c, d, e)`
/// becomes `(T, a, b <<< 30, c, d)`.
#[inline(always)]
fn step_forward<const ROUND: usize>(s: &mut [u32; 5], w: u32) {
    let [a, b, c, d, e] = *s;
    let new_a = a
        .rotate_left(5)
        .wrapping_add(round_function::<ROUND>(b, c, d))
        .wrapping_add(e)
        .wrapping_add(K[ROUND])
        .wrapping_add(w);
    *s = [new_a, a, b.rotate_left(30), c, d];
}

/// Undoes [`step_forward`]: the state before the step, given the state after it.
#[inline(always)]
fn step_backward<const ROUND: usize>(s: &mut [u32; 5], w: u32) {
    let [new_a, a, b30, c, d] = *s;
    let b = b30.rotate_right(30);
    let e = new_a.wrapping_sub(
        a.rotate_left(5)
            .wrapping_add(round_function::<ROUND>(b, c, d))
            .wrapping_add(K[ROUND])
            .wrapping_add(w),
    );
    *s = [a, b, c, d, e];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_back_undoes_a_step_forth() {
        let start = [1, 0xdead_beef, 3, 0x8000_0000, 5];
        let w = expand(&[0x5a; 64]);
        for t in 0..80 {
            let mut s = start;
            forward(&mut s, &w, t..80);
            assert_ne!(s, start);
            backward(&mut s, &w, t..80);
            assert_eq!(s, start, "from step {t}");
        }
    }
}
