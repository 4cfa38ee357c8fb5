//! From the YAML tree to the typed model, collecting every problem rather than stopping at the
//! first, so that a user fixes a file in one pass.

pub(crate) mod catalog;
pub(crate) mod expressions;
mod file;
pub(crate) mod scalars;
pub(crate) mod task;

pub use file::{dialect_of, load, parse_str};
pub(crate) use file::{read_source, remote_caches};
