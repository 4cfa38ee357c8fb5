//! RWX's `${{ … }}` template language: parsing, static checks and evaluation.
//!
//! A [`Template`] is text with embedded expressions. [`parse_template`] checks its syntax;
//! [`Template::references`] and [`Template::functions`] let a checker validate names and calls
//! ([`check_functions`] does the latter); [`Template::render`] and [`Template::evaluate`]
//! compute it against a [`Scope`], tracking which results derive from secrets.
//!
//! Pure logic: no I/O, and no panic on any input.

mod access;
mod ast;
mod date;
mod error;
mod eval;
mod functions;
mod lexer;
mod parser;
mod scope;
mod template;
mod value;

pub use error::{EvalError, ExprError};
pub use functions::{check_functions, function_names};
pub use scope::Scope;
pub use template::{FunctionUse, Reference, Template, parse_template};
pub use value::{Rendered, Val, Value, truthy};
