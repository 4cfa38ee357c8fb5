//! The unavoidable-bit-condition check of SHA-1 collision detection (SHA-1DC), over any
//! [`Word`]: one block's expanded message as `u32`s, or many blocks' at once as [`Lanes`].
//!
//! Generated, not written: a mechanical translation of `ubc_check` in the `sha1-checked` crate
//! 0.10.0 (RustCrypto, MIT OR Apache-2.0), itself a translation of `lib/ubc_check.c` of Marc
//! Stevens' and Dan Shumow's sha1collisiondetection (MIT; generated there by `parse_bitrel` from
//! the data in `tools/data/3565`). Two changes, neither of which changes a verdict: every
//! `if mask & BITS != 0 { mask &= X | !BITS }` guard is dropped (such a statement can only clear
//! bits of `BITS`, so it is a no-op whenever the guard is false), and the final
//! `if mask & BIT != 0 && (c1 || c2 ...) { mask &= !BIT }` clears are written without branches,
//! so that sixteen blocks can be checked in the lanes of one vector. Its masks were compared with
//! the original's on 20 million random inputs when it was generated (no difference); the tests
//! compare digests and verdicts with `sha1-checked`.
//!
//! Bit `i` of the result is set when every unavoidable bit condition of disturbance vector `i`
//! of [`super::dvs::DISTURBANCE_VECTORS`] holds: only then must the block be recompressed for
//! that vector.

#![allow(clippy::precedence)]

use super::word::Word;

const DV_I_43_0_BIT: u32 = 1 << 0;
const DV_I_44_0_BIT: u32 = 1 << 1;
const DV_I_45_0_BIT: u32 = 1 << 2;
const DV_I_46_0_BIT: u32 = 1 << 3;
const DV_I_46_2_BIT: u32 = 1 << 4;
const DV_I_47_0_BIT: u32 = 1 << 5;
const DV_I_47_2_BIT: u32 = 1 << 6;
const DV_I_48_0_BIT: u32 = 1 << 7;
const DV_I_48_2_BIT: u32 = 1 << 8;
const DV_I_49_0_BIT: u32 = 1 << 9;
const DV_I_49_2_BIT: u32 = 1 << 10;
const DV_I_50_0_BIT: u32 = 1 << 11;
const DV_I_50_2_BIT: u32 = 1 << 12;
const DV_I_51_0_BIT: u32 = 1 << 13;
const DV_I_51_2_BIT: u32 = 1 << 14;
const DV_I_52_0_BIT: u32 = 1 << 15;
const DV_II_45_0_BIT: u32 = 1 << 16;
const DV_II_46_0_BIT: u32 = 1 << 17;
const DV_II_46_2_BIT: u32 = 1 << 18;
const DV_II_47_0_BIT: u32 = 1 << 19;
const DV_II_48_0_BIT: u32 = 1 << 20;
const DV_II_49_0_BIT: u32 = 1 << 21;
const DV_II_49_2_BIT: u32 = 1 << 22;
const DV_II_50_0_BIT: u32 = 1 << 23;
const DV_II_50_2_BIT: u32 = 1 << 24;
const DV_II_51_0_BIT: u32 = 1 << 25;
const DV_II_51_2_BIT: u32 = 1 << 26;
const DV_II_52_0_BIT: u32 = 1 << 27;
const DV_II_53_0_BIT: u32 = 1 << 28;
const DV_II_54_0_BIT: u32 = 1 << 29;
const DV_II_55_0_BIT: u32 = 1 << 30;
const DV_II_56_0_BIT: u32 = 1 << 31;

/// The mask of disturbance vectors whose conditions hold for the expanded message `w` (its
/// first 65 words; only `w[35..=64]` are read).
#[inline(always)]
pub(super) fn ubc_check<W: Word>(w: &[W; 65]) -> W {
    let mut mask = W::splat(!0);
    mask &= ((w[44] ^ w[45]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_48_0_BIT
                | DV_I_51_0_BIT
                | DV_I_52_0_BIT
                | DV_II_45_0_BIT
                | DV_II_46_0_BIT
                | DV_II_50_0_BIT
                | DV_II_51_0_BIT),
        );
    mask &= ((w[49] ^ w[50]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_46_0_BIT
                | DV_II_45_0_BIT
                | DV_II_50_0_BIT
                | DV_II_51_0_BIT
                | DV_II_55_0_BIT
                | DV_II_56_0_BIT),
        );
    mask &= ((w[48] ^ w[49]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_45_0_BIT
                | DV_I_52_0_BIT
                | DV_II_49_0_BIT
                | DV_II_50_0_BIT
                | DV_II_54_0_BIT
                | DV_II_55_0_BIT),
        );
    mask &= ((w[47] ^ w[50] >> 25) & W::splat(1 << 4)).minus((1) << 4)
        | W::splat(
            !(DV_I_47_0_BIT
                | DV_I_49_0_BIT
                | DV_I_51_0_BIT
                | DV_II_45_0_BIT
                | DV_II_51_0_BIT
                | DV_II_56_0_BIT),
        );
    mask &= ((w[47] ^ w[48]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_44_0_BIT
                | DV_I_51_0_BIT
                | DV_II_48_0_BIT
                | DV_II_49_0_BIT
                | DV_II_53_0_BIT
                | DV_II_54_0_BIT),
        );
    mask &= ((w[46] >> 4 ^ w[49] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_46_0_BIT
                | DV_I_48_0_BIT
                | DV_I_50_0_BIT
                | DV_I_52_0_BIT
                | DV_II_50_0_BIT
                | DV_II_55_0_BIT),
        );
    mask &= ((w[46] ^ w[47]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_43_0_BIT
                | DV_I_50_0_BIT
                | DV_II_47_0_BIT
                | DV_II_48_0_BIT
                | DV_II_52_0_BIT
                | DV_II_53_0_BIT),
        );
    mask &= ((w[45] >> 4 ^ w[48] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_45_0_BIT
                | DV_I_47_0_BIT
                | DV_I_49_0_BIT
                | DV_I_51_0_BIT
                | DV_II_49_0_BIT
                | DV_II_54_0_BIT),
        );
    mask &= ((w[45] ^ w[46]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_49_0_BIT
                | DV_I_52_0_BIT
                | DV_II_46_0_BIT
                | DV_II_47_0_BIT
                | DV_II_51_0_BIT
                | DV_II_52_0_BIT),
        );
    mask &= ((w[44] >> 4 ^ w[47] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_44_0_BIT
                | DV_I_46_0_BIT
                | DV_I_48_0_BIT
                | DV_I_50_0_BIT
                | DV_II_48_0_BIT
                | DV_II_53_0_BIT),
        );
    mask &= ((w[43] >> 4 ^ w[46] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_43_0_BIT
                | DV_I_45_0_BIT
                | DV_I_47_0_BIT
                | DV_I_49_0_BIT
                | DV_II_47_0_BIT
                | DV_II_52_0_BIT),
        );
    mask &= ((w[43] ^ w[44]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_47_0_BIT
                | DV_I_50_0_BIT
                | DV_I_51_0_BIT
                | DV_II_45_0_BIT
                | DV_II_49_0_BIT
                | DV_II_50_0_BIT),
        );
    mask &= ((w[42] >> 4 ^ w[45] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_44_0_BIT
                | DV_I_46_0_BIT
                | DV_I_48_0_BIT
                | DV_I_52_0_BIT
                | DV_II_46_0_BIT
                | DV_II_51_0_BIT),
        );
    mask &= ((w[41] >> 4 ^ w[44] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_43_0_BIT
                | DV_I_45_0_BIT
                | DV_I_47_0_BIT
                | DV_I_51_0_BIT
                | DV_II_45_0_BIT
                | DV_II_50_0_BIT),
        );
    mask &= ((w[40] ^ w[41]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_44_0_BIT
                | DV_I_47_0_BIT
                | DV_I_48_0_BIT
                | DV_II_46_0_BIT
                | DV_II_47_0_BIT
                | DV_II_56_0_BIT),
        );
    mask &= ((w[54] ^ w[55]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_51_0_BIT | DV_II_47_0_BIT | DV_II_50_0_BIT | DV_II_55_0_BIT | DV_II_56_0_BIT),
        );
    mask &= ((w[53] ^ w[54]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_50_0_BIT | DV_II_46_0_BIT | DV_II_49_0_BIT | DV_II_54_0_BIT | DV_II_55_0_BIT),
        );
    mask &= ((w[52] ^ w[53]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_49_0_BIT | DV_II_45_0_BIT | DV_II_48_0_BIT | DV_II_53_0_BIT | DV_II_54_0_BIT),
        );
    mask &= ((w[50] ^ w[53] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(
            !(DV_I_50_0_BIT | DV_I_52_0_BIT | DV_II_46_0_BIT | DV_II_48_0_BIT | DV_II_54_0_BIT),
        );
    mask &= ((w[50] ^ w[51]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_47_0_BIT | DV_II_46_0_BIT | DV_II_51_0_BIT | DV_II_52_0_BIT | DV_II_56_0_BIT),
        );
    mask &= ((w[49] ^ w[52] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(
            !(DV_I_49_0_BIT | DV_I_51_0_BIT | DV_II_45_0_BIT | DV_II_47_0_BIT | DV_II_53_0_BIT),
        );
    mask &= ((w[48] ^ w[51] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(
            !(DV_I_48_0_BIT | DV_I_50_0_BIT | DV_I_52_0_BIT | DV_II_46_0_BIT | DV_II_52_0_BIT),
        );
    mask &= ((w[42] ^ w[43]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_46_0_BIT | DV_I_49_0_BIT | DV_I_50_0_BIT | DV_II_48_0_BIT | DV_II_49_0_BIT),
        );
    mask &= ((w[41] ^ w[42]) >> 29 & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_45_0_BIT | DV_I_48_0_BIT | DV_I_49_0_BIT | DV_II_47_0_BIT | DV_II_48_0_BIT),
        );
    mask &= ((w[40] >> 4 ^ w[43] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_44_0_BIT | DV_I_46_0_BIT | DV_I_50_0_BIT | DV_II_49_0_BIT | DV_II_56_0_BIT),
        );
    mask &= ((w[39] >> 4 ^ w[42] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_43_0_BIT | DV_I_45_0_BIT | DV_I_49_0_BIT | DV_II_48_0_BIT | DV_II_55_0_BIT),
        );
    mask &= ((w[38] >> 4 ^ w[41] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_44_0_BIT | DV_I_48_0_BIT | DV_II_47_0_BIT | DV_II_54_0_BIT | DV_II_56_0_BIT),
        );
    mask &= ((w[37] >> 4 ^ w[40] >> 29) & W::splat(1)).minus(1)
        | W::splat(
            !(DV_I_43_0_BIT | DV_I_47_0_BIT | DV_II_46_0_BIT | DV_II_53_0_BIT | DV_II_55_0_BIT),
        );
    mask &= ((w[55] ^ w[56]) >> 29 & W::splat(1)).minus(1)
        | W::splat(!(DV_I_52_0_BIT | DV_II_48_0_BIT | DV_II_51_0_BIT | DV_II_56_0_BIT));
    mask &= ((w[52] ^ w[55] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_I_52_0_BIT | DV_II_48_0_BIT | DV_II_50_0_BIT | DV_II_56_0_BIT));
    mask &= ((w[51] ^ w[54] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_I_51_0_BIT | DV_II_47_0_BIT | DV_II_49_0_BIT | DV_II_55_0_BIT));
    mask &= ((w[51] ^ w[52]) >> 29 & W::splat(1)).minus(1)
        | W::splat(!(DV_I_48_0_BIT | DV_II_47_0_BIT | DV_II_52_0_BIT | DV_II_53_0_BIT));
    mask &= ((w[36] >> 4 ^ w[40] >> 29) & W::splat(1)).minus(1)
        | W::splat(!(DV_I_46_0_BIT | DV_I_49_0_BIT | DV_II_45_0_BIT | DV_II_48_0_BIT));
    mask &= negate((w[53] ^ w[56]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_52_0_BIT | DV_II_48_0_BIT | DV_II_49_0_BIT));
    mask &= negate((w[51] ^ w[54]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_50_0_BIT | DV_II_46_0_BIT | DV_II_47_0_BIT));
    mask &= negate((w[50] ^ w[52]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_49_0_BIT | DV_I_51_0_BIT | DV_II_45_0_BIT));
    mask &= negate((w[49] ^ w[51]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_48_0_BIT | DV_I_50_0_BIT | DV_I_52_0_BIT));
    mask &= negate((w[48] ^ w[50]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_47_0_BIT | DV_I_49_0_BIT | DV_I_51_0_BIT));
    mask &= negate((w[47] ^ w[49]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_46_0_BIT | DV_I_48_0_BIT | DV_I_50_0_BIT));
    mask &= negate((w[46] ^ w[48]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_45_0_BIT | DV_I_47_0_BIT | DV_I_49_0_BIT));
    mask &= ((w[45] ^ w[47]) & W::splat(1 << 6)).minus(1 << 6)
        | W::splat(!(DV_I_47_2_BIT | DV_I_49_2_BIT | DV_I_51_2_BIT));
    mask &= negate((w[45] ^ w[47]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_44_0_BIT | DV_I_46_0_BIT | DV_I_48_0_BIT));
    mask &= ((w[44] ^ w[46]) >> 6 & W::splat(1)).minus(1)
        | W::splat(!(DV_I_46_2_BIT | DV_I_48_2_BIT | DV_I_50_2_BIT));
    mask &= negate((w[44] ^ w[46]) >> 29 & W::splat(1))
        | W::splat(!(DV_I_43_0_BIT | DV_I_45_0_BIT | DV_I_47_0_BIT));
    mask &= negate((w[41] ^ w[42] >> 5) & W::splat(1 << 1))
        | W::splat(!(DV_I_48_2_BIT | DV_II_46_2_BIT | DV_II_51_2_BIT));
    mask &= negate((w[40] ^ w[41] >> 5) & W::splat(1 << 1))
        | W::splat(!(DV_I_47_2_BIT | DV_I_51_2_BIT | DV_II_50_2_BIT));
    mask &= negate((w[40] ^ w[42]) >> 4 & W::splat(1))
        | W::splat(!(DV_I_44_0_BIT | DV_I_46_0_BIT | DV_II_56_0_BIT));
    mask &= negate((w[39] ^ w[40] >> 5) & W::splat(1 << 1))
        | W::splat(!(DV_I_46_2_BIT | DV_I_50_2_BIT | DV_II_49_2_BIT));
    mask &= negate((w[39] ^ w[41]) >> 4 & W::splat(1))
        | W::splat(!(DV_I_43_0_BIT | DV_I_45_0_BIT | DV_II_55_0_BIT));
    mask &= negate((w[38] ^ w[40]) >> 4 & W::splat(1))
        | W::splat(!(DV_I_44_0_BIT | DV_II_54_0_BIT | DV_II_56_0_BIT));
    mask &= negate((w[37] ^ w[39]) >> 4 & W::splat(1))
        | W::splat(!(DV_I_43_0_BIT | DV_II_53_0_BIT | DV_II_55_0_BIT));
    mask &= negate((w[36] ^ w[37] >> 5) & W::splat(1 << 1))
        | W::splat(!(DV_I_47_2_BIT | DV_I_50_2_BIT | DV_II_46_2_BIT));
    mask &= ((w[35] >> 4 ^ w[39] >> 29) & W::splat(1)).minus(1)
        | W::splat(!(DV_I_45_0_BIT | DV_I_48_0_BIT | DV_II_47_0_BIT));
    mask &= negate((w[63] ^ w[64] >> 5) & W::splat(1 << 0))
        | W::splat(!(DV_I_48_0_BIT | DV_II_48_0_BIT));
    mask &= negate((w[63] ^ w[64] >> 5) & W::splat(1 << 1))
        | W::splat(!(DV_I_45_0_BIT | DV_II_45_0_BIT));
    mask &= negate((w[62] ^ w[63] >> 5) & W::splat(1 << 0))
        | W::splat(!(DV_I_47_0_BIT | DV_II_47_0_BIT));
    mask &= negate((w[61] ^ w[62] >> 5) & W::splat(1 << 0))
        | W::splat(!(DV_I_46_0_BIT | DV_II_46_0_BIT));
    mask &= negate((w[61] ^ w[62] >> 5) & W::splat(1 << 2))
        | W::splat(!(DV_I_46_2_BIT | DV_II_46_2_BIT));
    mask &= negate((w[60] ^ w[61] >> 5) & W::splat(1 << 0))
        | W::splat(!(DV_I_45_0_BIT | DV_II_45_0_BIT));
    mask &= ((w[58] ^ w[59]) >> 29 & W::splat(1)).minus(1)
        | W::splat(!(DV_II_51_0_BIT | DV_II_54_0_BIT));
    mask &= ((w[57] ^ w[58]) >> 29 & W::splat(1)).minus(1)
        | W::splat(!(DV_II_50_0_BIT | DV_II_53_0_BIT));
    mask &= ((w[56] ^ w[59] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_II_52_0_BIT | DV_II_54_0_BIT));
    mask &=
        negate((w[56] ^ w[59]) >> 29 & W::splat(1)) | W::splat(!(DV_II_51_0_BIT | DV_II_52_0_BIT));
    mask &= ((w[56] ^ w[57]) >> 29 & W::splat(1)).minus(1)
        | W::splat(!(DV_II_49_0_BIT | DV_II_52_0_BIT));
    mask &= ((w[55] ^ w[58] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_II_51_0_BIT | DV_II_53_0_BIT));
    mask &= ((w[54] ^ w[57] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_II_50_0_BIT | DV_II_52_0_BIT));
    mask &= ((w[53] ^ w[56] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_II_49_0_BIT | DV_II_51_0_BIT));
    mask &= ((w[51] ^ w[50] >> 5) & W::splat(1 << 1)).minus(1 << 1)
        | W::splat(!(DV_I_50_2_BIT | DV_II_46_2_BIT));
    mask &= ((w[48] ^ w[50]) & W::splat(1 << 6)).minus(1 << 6)
        | W::splat(!(DV_I_50_2_BIT | DV_II_46_2_BIT));
    mask &=
        negate((w[48] ^ w[55]) >> 29 & W::splat(1)) | W::splat(!(DV_I_51_0_BIT | DV_I_52_0_BIT));
    mask &= ((w[47] ^ w[49]) & W::splat(1 << 6)).minus(1 << 6)
        | W::splat(!(DV_I_49_2_BIT | DV_I_51_2_BIT));
    mask &= ((w[48] ^ w[47] >> 5) & W::splat(1 << 1)).minus(1 << 1)
        | W::splat(!(DV_I_47_2_BIT | DV_II_51_2_BIT));
    mask &= ((w[46] ^ w[48]) & W::splat(1 << 6)).minus(1 << 6)
        | W::splat(!(DV_I_48_2_BIT | DV_I_50_2_BIT));
    mask &= ((w[47] ^ w[46] >> 5) & W::splat(1 << 1)).minus(1 << 1)
        | W::splat(!(DV_I_46_2_BIT | DV_II_50_2_BIT));
    mask &= negate((w[44] ^ w[45] >> 5) & W::splat(1 << 1))
        | W::splat(!(DV_I_51_2_BIT | DV_II_49_2_BIT));
    mask &= ((w[43] ^ w[45]) & W::splat(1 << 6)).minus(1 << 6)
        | W::splat(!(DV_I_47_2_BIT | DV_I_49_2_BIT));
    mask &=
        ((w[42] ^ w[44]) >> 6 & W::splat(1)).minus(1) | W::splat(!(DV_I_46_2_BIT | DV_I_48_2_BIT));
    mask &= ((w[43] ^ w[42] >> 5) & W::splat(1 << 1)).minus(1 << 1)
        | W::splat(!(DV_II_46_2_BIT | DV_II_51_2_BIT));
    mask &= ((w[42] ^ w[41] >> 5) & W::splat(1 << 1)).minus(1 << 1)
        | W::splat(!(DV_I_51_2_BIT | DV_II_50_2_BIT));
    mask &= ((w[41] ^ w[40] >> 5) & W::splat(1 << 1)).minus(1 << 1)
        | W::splat(!(DV_I_50_2_BIT | DV_II_49_2_BIT));
    mask &= ((w[39] ^ w[43] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_I_52_0_BIT | DV_II_51_0_BIT));
    mask &= ((w[38] ^ w[42] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_I_51_0_BIT | DV_II_50_0_BIT));
    mask &= negate((w[37] ^ w[38] >> 5) & W::splat(1 << 1))
        | W::splat(!(DV_I_48_2_BIT | DV_I_51_2_BIT));
    mask &= ((w[37] ^ w[41] >> 25) & W::splat(1 << 4)).minus(1 << 4)
        | W::splat(!(DV_I_50_0_BIT | DV_II_49_0_BIT));
    mask &=
        negate((w[36] ^ w[38]) & W::splat(1 << 4)) | W::splat(!(DV_II_52_0_BIT | DV_II_54_0_BIT));
    mask &= negate((w[35] ^ w[36] >> 5) & W::splat(1 << 1))
        | W::splat(!(DV_I_46_2_BIT | DV_I_49_2_BIT));
    mask &= ((w[35] ^ w[39] >> 25) & W::splat(1 << 3)).minus(1 << 3)
        | W::splat(!(DV_I_51_0_BIT | DV_II_47_0_BIT));
    mask &= !(W::splat(DV_I_43_0_BIT)
        & (is_zero((w[61] ^ w[62] >> 5) & W::splat(1 << 1))
            | nonzero((w[59] ^ w[63] >> 25) & W::splat(1 << 5))
            | is_zero((w[58] ^ w[63] >> 30) & W::splat(1 << 0))));
    mask &= !(W::splat(DV_I_44_0_BIT)
        & (is_zero((w[62] ^ w[63] >> 5) & W::splat(1 << 1))
            | nonzero((w[60] ^ w[64] >> 25) & W::splat(1 << 5))
            | is_zero((w[59] ^ w[64] >> 30) & W::splat(1 << 0))));
    mask &= !((w[40] ^ w[42]) >> 2) | W::splat(!DV_I_46_2_BIT);
    mask &= !(W::splat(DV_I_47_2_BIT)
        & (is_zero((w[62] ^ w[63] >> 5) & W::splat(1 << 2))
            | nonzero((w[41] ^ w[43]) & W::splat(1 << 6))));
    mask &= !(W::splat(DV_I_48_2_BIT)
        & (is_zero((w[63] ^ w[64] >> 5) & W::splat(1 << 2))
            | nonzero((w[48] ^ w[49] << 5) & W::splat(1 << 6))));
    mask &= !(W::splat(DV_I_49_2_BIT)
        & (nonzero((w[49] ^ w[50] << 5) & W::splat(1 << 6))
            | is_zero((w[42] ^ w[50]) & W::splat(1 << 1))
            | nonzero((w[39] ^ w[40] << 5) & W::splat(1 << 6))
            | is_zero((w[38] ^ w[40]) & W::splat(1 << 1))));
    mask &= (w[36] ^ w[37]) << 7 | W::splat(!DV_I_50_0_BIT);
    mask &= (w[43] ^ w[51]) << 11 | W::splat(!DV_I_50_2_BIT);
    mask &= (w[37] ^ w[38]) << 9 | W::splat(!DV_I_51_0_BIT);
    mask &= !(W::splat(DV_I_51_2_BIT)
        & (nonzero((w[51] ^ w[52] << 5) & W::splat(1 << 6))
            | nonzero((w[49] ^ w[51]) & W::splat(1 << 6))
            | nonzero((w[37] ^ w[37] >> 5) & W::splat(1 << 1))
            | nonzero((w[35] ^ w[39] >> 25) & W::splat(1 << 5))));
    mask &= (w[38] ^ w[39]) << 11 | W::splat(!DV_I_52_0_BIT);
    mask &= (w[47] ^ w[51]) << 17 | W::splat(!DV_II_46_2_BIT);
    mask &= !(W::splat(DV_II_48_0_BIT)
        & (nonzero((w[36] ^ w[40] >> 25) & W::splat(1 << 3))
            | is_zero((w[35] ^ w[40] << 2) & W::splat(1 << 30))));
    mask &= !(W::splat(DV_II_49_0_BIT)
        & (nonzero((w[37] ^ w[41] >> 25) & W::splat(1 << 3))
            | is_zero((w[36] ^ w[41] << 2) & W::splat(1 << 30))));
    mask &= !(W::splat(DV_II_49_2_BIT)
        & (nonzero((w[53] ^ w[54] << 5) & W::splat(1 << 6))
            | nonzero((w[51] ^ w[53]) & W::splat(1 << 6))
            | is_zero((w[50] ^ w[54]) & W::splat(1 << 1))
            | nonzero((w[45] ^ w[46] << 5) & W::splat(1 << 6))
            | nonzero((w[37] ^ w[41] >> 25) & W::splat(1 << 5))
            | is_zero((w[36] ^ w[41] >> 30) & W::splat(1 << 0))));
    mask &= !(W::splat(DV_II_50_0_BIT)
        & (is_zero((w[55] ^ w[58]) & W::splat(1 << 29))
            | nonzero((w[38] ^ w[42] >> 25) & W::splat(1 << 3))
            | is_zero((w[37] ^ w[42] << 2) & W::splat(1 << 30))));
    mask &= !(W::splat(DV_II_50_2_BIT)
        & (nonzero((w[54] ^ w[55] << 5) & W::splat(1 << 6))
            | nonzero((w[52] ^ w[54]) & W::splat(1 << 6))
            | is_zero((w[51] ^ w[55]) & W::splat(1 << 1))
            | is_zero((w[45] ^ w[47]) & W::splat(1 << 1))
            | nonzero((w[38] ^ w[42] >> 25) & W::splat(1 << 5))
            | is_zero((w[37] ^ w[42] >> 30) & W::splat(1 << 0))));
    mask &= !(W::splat(DV_II_51_0_BIT)
        & (nonzero((w[39] ^ w[43] >> 25) & W::splat(1 << 3))
            | is_zero((w[38] ^ w[43] << 2) & W::splat(1 << 30))));
    mask &= !(W::splat(DV_II_51_2_BIT)
        & (nonzero((w[55] ^ w[56] << 5) & W::splat(1 << 6))
            | nonzero((w[53] ^ w[55]) & W::splat(1 << 6))
            | is_zero((w[52] ^ w[56]) & W::splat(1 << 1))
            | is_zero((w[46] ^ w[48]) & W::splat(1 << 1))
            | nonzero((w[39] ^ w[43] >> 25) & W::splat(1 << 5))
            | is_zero((w[38] ^ w[43] >> 30) & W::splat(1 << 0))));
    mask &= !(W::splat(DV_II_52_0_BIT)
        & (nonzero((w[59] ^ w[60]) & W::splat(1 << 29))
            | nonzero((w[40] ^ w[44] >> 25) & W::splat(1 << 3))
            | nonzero((w[40] ^ w[44] >> 25) & W::splat(1 << 4))
            | is_zero((w[39] ^ w[44] << 2) & W::splat(1 << 30))));
    mask &= !(W::splat(DV_II_53_0_BIT)
        & (is_zero((w[58] ^ w[61]) & W::splat(1 << 29))
            | nonzero((w[57] ^ w[61] >> 25) & W::splat(1 << 4))
            | nonzero((w[41] ^ w[45] >> 25) & W::splat(1 << 3))
            | nonzero((w[41] ^ w[45] >> 25) & W::splat(1 << 4))));
    mask &= !(W::splat(DV_II_54_0_BIT)
        & (nonzero((w[58] ^ w[62] >> 25) & W::splat(1 << 4))
            | nonzero((w[42] ^ w[46] >> 25) & W::splat(1 << 3))
            | nonzero((w[42] ^ w[46] >> 25) & W::splat(1 << 4))));
    mask &= !(W::splat(DV_II_55_0_BIT)
        & (nonzero((w[59] ^ w[63] >> 25) & W::splat(1 << 4))
            | nonzero((w[57] ^ w[59] >> 25) & W::splat(1 << 4))
            | nonzero((w[43] ^ w[47] >> 25) & W::splat(1 << 3))
            | nonzero((w[43] ^ w[47] >> 25) & W::splat(1 << 4))));
    mask &= !(W::splat(DV_II_56_0_BIT)
        & (nonzero((w[60] ^ w[64] >> 25) & W::splat(1 << 4))
            | nonzero((w[44] ^ w[48] >> 25) & W::splat(1 << 3))
            | nonzero((w[44] ^ w[48] >> 25) & W::splat(1 << 4))));
    mask
}

#[inline(always)]
fn negate<W: Word>(x: W) -> W {
    W::splat(0).minus_word(x)
}

#[inline(always)]
fn nonzero<W: Word>(x: W) -> W {
    x.nonzero()
}

#[inline(always)]
fn is_zero<W: Word>(x: W) -> W {
    !x.nonzero()
}
