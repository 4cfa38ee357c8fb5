//! Layers as erofs images: one file per layer that the kernel mounts read-only (from the file,
//! no loop device) and overlayfs stacks as a lower, instead of a directory of many files.
//! A restore with `--layer-images on` converts the layer archive into one while it downloads
//! (strata-engine's `layer_images.rs`); the local cache mounts it (strata-store's `layer_images.rs`).

mod direct;
mod from_dir;
mod from_tar;
mod image;

pub use direct::ImageFile;
pub use from_dir::write_image_from_dir;
pub use from_tar::{ConvertedLayer, convert_layer};
pub use image::{ImageEntry, ImageError, ImageWriter, NodeKind, NodeMeta, Xattrs};
