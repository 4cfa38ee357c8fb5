//! The 32-bit word arithmetic the bit-condition check needs, so that one generated check serves
//! one block (`u32`) and sixteen blocks side by side (one AVX-512 vector, `avx512.rs`).

use std::ops::{BitAnd, BitAndAssign, BitOr, BitXor, Not, Shl, Shr};

pub(super) trait Word:
    Copy
    + BitAnd<Output = Self>
    + BitAndAssign
    + BitOr<Output = Self>
    + BitXor<Output = Self>
    + Not<Output = Self>
    + Shl<u32, Output = Self>
    + Shr<u32, Output = Self>
{
    fn splat(x: u32) -> Self;
    /// `self - x`, wrapping.
    fn minus(self, x: u32) -> Self;
    /// `self - x`, wrapping.
    fn minus_word(self, x: Self) -> Self;
    /// All ones where the word is not zero, zero where it is.
    fn nonzero(self) -> Self;
}

impl Word for u32 {
    #[inline(always)]
    fn splat(x: u32) -> Self {
        x
    }
    #[inline(always)]
    fn minus(self, x: u32) -> Self {
        self.wrapping_sub(x)
    }
    #[inline(always)]
    fn minus_word(self, x: Self) -> Self {
        self.wrapping_sub(x)
    }
    #[inline(always)]
    fn nonzero(self) -> Self {
        0u32.wrapping_sub((self != 0) as u32)
    }
}
