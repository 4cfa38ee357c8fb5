//! OCI interoperability: layer archives, image manifests and configs, image layout directories and
//! the registry (distribution) protocol.
//!
//! Owns: turning a layer directory (overlayfs upper dir format: whiteouts are 0/0 character
//! devices, opaque directories carry `trusted.overlay.opaque=y`) into an OCI image layer (tar,
//! zstd-compressed, `.wh.` whiteouts) and back, computing both digests in the same pass; applying
//! untrusted archives without ever writing outside the target directory; the JSON documents of
//! the image spec; reading and writing image layout directories; talking to registries.
//!
//! Must not touch: the cache index, the key recipe, mounts or processes. Callers decide where
//! archives are unpacked and when the result is published.

mod archive;
mod auth;
mod digest;
pub mod erofs;
mod image;
mod layout;
mod reference;
mod registry;
pub mod retry;

pub use archive::{
    AppliedLayer, ApplyError, ArchiveError, Compression, Expected, LayerArchive, apply_layer,
    write_layer,
};
pub use auth::{
    AuthEnvironment, CredentialError as RegistryCredentialError, RegistryCredential,
    credentials_for,
};
pub use digest::{DigestReader, DigestWriter, OciDigest};
pub use image::{
    Descriptor, ImageConfig, ImageIndex, ImageManifest, MEDIA_CONFIG, MEDIA_INDEX,
    MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD, MEDIA_MANIFEST, Platform, RootFs,
    RuntimeConfig,
};
pub use layout::{LayoutError, OciLayout};
pub use reference::{ImageRef, RefError, Reference};
pub use registry::{FetchedManifest, Registry, RegistryError};
