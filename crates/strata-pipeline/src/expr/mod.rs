//! RWX's `${{ … }}` template language: parsing, static checks and evaluation.
//!
//! A [`Template`] is text with embedded expressions. [`parse_template`] checks its syntax;
//! [`Template::references`] and [`Template::functions`] let a checker validate names and calls.
//!
//! Pure logic: no I/O, and no panic on any input.

mod ast;
mod error;
mod lexer;
mod parser;
mod template;
mod value;

pub use error::ExprError;
pub use template::{FunctionUse, Reference, Template, parse_template};
pub use value::{Rendered, Val, Value, truthy};
