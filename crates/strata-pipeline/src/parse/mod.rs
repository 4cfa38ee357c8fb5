//! From the YAML tree to the typed model, collecting every problem rather than stopping at the
//! first, so that a user fixes a file in one pass.

pub(crate) mod catalog;
pub(crate) mod expressions;
mod file;
mod options;
pub(crate) mod outputs;
mod services;

pub use services::DOCKERD_PROCESS;
pub(crate) mod scalars;
pub(crate) mod task;

pub use file::{dialect_of, load, load_with, parse_str, parse_with};
pub(crate) use file::{read_source, remote_caches};
