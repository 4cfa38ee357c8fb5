//! The bit conditions of sixteen blocks at once, one block per 32-bit lane of an AVX-512
//! vector: the message expansion and [`super::ubc::ubc_check`] run once for all sixteen.
//!
//! The only `unsafe` of `sha1dc` besides one slice cast: AVX-512 intrinsics. [`V512`] values
//! exist only inside [`masks`], a function compiled for AVX-512 that its caller runs only after
//! detecting AVX-512 (`is_x86_feature_detected!`); the operations are `#[inline(always)]` so
//! that they are compiled into it.

use std::arch::x86_64::*;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitXor, Not, Shl, Shr};

use super::word::Word;

/// Blocks checked together.
pub(super) const LANES: usize = 16;

/// Word `t` of the expanded messages of sixteen blocks, block `i` in lane `i`.
#[derive(Clone, Copy)]
struct V512(__m512i);

/// The disturbance-vector mask of each of the sixteen blocks.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn masks(batch: &[[u8; 64]; LANES]) -> [u32; LANES] {
    let mut w = [V512(_mm512_setzero_si512()); 65];
    w[..16].copy_from_slice(&transposed(batch));
    // The conditions read the expanded words up to 64 only.
    for t in 16..65 {
        let x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16];
        w[t] = V512(_mm512_rol_epi32::<1>(x.0));
    }
    let mask = super::ubc::ubc_check(&w);
    let mut out = [0u32; LANES];
    // SAFETY: `out` is 64 bytes, what one unaligned store writes.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, mask.0) };
    out
}

/// The sixteen blocks' big-endian words, transposed: element `i` of word `t` is word `t` of
/// block `i`.
#[inline(always)]
fn transposed(batch: &[[u8; 64]; LANES]) -> [V512; 16] {
    // SAFETY: see below the impls; each load reads the 64 bytes of one block.
    unsafe {
        let big_endian = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
        let rows: [__m512i; 16] = std::array::from_fn(|j| {
            let row = _mm512_loadu_si512(batch[j].as_ptr() as *const __m512i);
            _mm512_shuffle_epi8(row, big_endian)
        });
        // Interleave 32-bit words of row pairs, then 64-bit pairs of those: `b[4 g + m]`
        // holds, in its 128-bit lane k, word 4 k + m of rows 4 g .. 4 g + 3.
        let a: [__m512i; 16] = std::array::from_fn(|i| {
            let (x, y) = (rows[i & !1], rows[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_epi32(x, y)
            } else {
                _mm512_unpackhi_epi32(x, y)
            }
        });
        let b: [__m512i; 16] = std::array::from_fn(|i| {
            let (g, m) = (i / 4, i % 4);
            let (x, y) = (a[4 * g + m / 2], a[4 * g + m / 2 + 2]);
            if m % 2 == 0 {
                _mm512_unpacklo_epi64(x, y)
            } else {
                _mm512_unpackhi_epi64(x, y)
            }
        });
        // Then gather the 128-bit lanes: word 4 k + m is lane k of b[m], b[4 + m], b[8 + m],
        // b[12 + m].
        let mut out = [V512(_mm512_setzero_si512()); 16];
        for m in 0..4 {
            let p0 = _mm512_shuffle_i32x4::<0x44>(b[m], b[4 + m]);
            let p1 = _mm512_shuffle_i32x4::<0xEE>(b[m], b[4 + m]);
            let q0 = _mm512_shuffle_i32x4::<0x44>(b[8 + m], b[12 + m]);
            let q1 = _mm512_shuffle_i32x4::<0xEE>(b[8 + m], b[12 + m]);
            out[m] = V512(_mm512_shuffle_i32x4::<0x88>(p0, q0));
            out[4 + m] = V512(_mm512_shuffle_i32x4::<0xDD>(p0, q0));
            out[8 + m] = V512(_mm512_shuffle_i32x4::<0x88>(p1, q1));
            out[12 + m] = V512(_mm512_shuffle_i32x4::<0xDD>(p1, q1));
        }
        out
    }
}

// SAFETY (every `unsafe` below): a `V512` exists only inside `masks`, which runs only where the
// CPU has AVX-512 F and BW; these functions are always inlined into it.

impl Word for V512 {
    #[inline(always)]
    fn splat(x: u32) -> Self {
        V512(unsafe { _mm512_set1_epi32(x as i32) })
    }
    #[inline(always)]
    fn minus(self, x: u32) -> Self {
        self.minus_word(V512::splat(x))
    }
    #[inline(always)]
    fn minus_word(self, x: Self) -> Self {
        V512(unsafe { _mm512_sub_epi32(self.0, x.0) })
    }
    #[inline(always)]
    fn nonzero(self) -> Self {
        V512(unsafe {
            let nonzero = _mm512_test_epi32_mask(self.0, self.0);
            _mm512_maskz_set1_epi32(nonzero, -1)
        })
    }
}

impl BitAnd for V512 {
    type Output = V512;
    #[inline(always)]
    fn bitand(self, o: V512) -> V512 {
        V512(unsafe { _mm512_and_si512(self.0, o.0) })
    }
}

impl BitAndAssign for V512 {
    #[inline(always)]
    fn bitand_assign(&mut self, o: V512) {
        *self = *self & o;
    }
}

impl BitOr for V512 {
    type Output = V512;
    #[inline(always)]
    fn bitor(self, o: V512) -> V512 {
        V512(unsafe { _mm512_or_si512(self.0, o.0) })
    }
}

impl BitXor for V512 {
    type Output = V512;
    #[inline(always)]
    fn bitxor(self, o: V512) -> V512 {
        V512(unsafe { _mm512_xor_si512(self.0, o.0) })
    }
}

impl Not for V512 {
    type Output = V512;
    #[inline(always)]
    fn not(self) -> V512 {
        self ^ V512::splat(!0)
    }
}

impl Shr<u32> for V512 {
    type Output = V512;
    #[inline(always)]
    fn shr(self, n: u32) -> V512 {
        V512(unsafe { _mm512_srlv_epi32(self.0, _mm512_set1_epi32(n as i32)) })
    }
}

impl Shl<u32> for V512 {
    type Output = V512;
    #[inline(always)]
    fn shl(self, n: u32) -> V512 {
        V512(unsafe { _mm512_sllv_epi32(self.0, _mm512_set1_epi32(n as i32)) })
    }
}
