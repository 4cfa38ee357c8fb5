//! Layer directories <-> OCI image layers (`tar`, optionally zstd or gzip compressed).

mod apply;
mod write;

pub(crate) use apply::decompressing;
pub use apply::{AppliedLayer, ApplyError, Expected, apply_layer};
pub use write::{ArchiveError, LayerArchive, write_layer};

use crate::image::{MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD};

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_LAYER_TAR,
            Compression::Gzip => MEDIA_LAYER_GZIP,
            Compression::Zstd => MEDIA_LAYER_ZSTD,
        }
    }

    /// The compression a layer media type implies (OCI and Docker names), if it is a layer type
    /// strata can read.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            MEDIA_LAYER_ZSTD => Some(Compression::Zstd),
            MEDIA_LAYER_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            MEDIA_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            _ => None,
        }
    }
}

/// The prefix of a whiteout entry's name, and the name of an opaque-directory marker.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(crate) const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
pub(crate) const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
