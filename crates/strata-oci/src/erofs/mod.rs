//! Layers as erofs images: one file per layer that the kernel mounts read-only (from the file,
//! no loop device) and overlayfs stacks as a lower, instead of a directory of many files.
//! Measured as the candidate for a cold restore (BENCHMARKS.md, issue 13); not yet used by the
//! local cache.

mod from_dir;
mod from_tar;
mod image;

pub use from_dir::write_image_from_dir;
pub use from_tar::{ConvertedLayer, convert_layer};
pub use image::{ImageEntry, ImageError, ImageWriter, NodeKind, NodeMeta, Xattrs};
