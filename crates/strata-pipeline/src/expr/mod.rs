//! RWX's `${{ … }}` template language: parsing, static checks and evaluation.
//!
//! Pure logic: no I/O, and no panic on any input.

mod value;

pub use value::{Rendered, Val, Value, truthy};
