//! The identity of the base filesystem, part of every key.

use std::path::Path;

use strata_pipeline::Base;

use crate::digest::BaseId;
use crate::tree::{TreeError, tree_digest};

/// Files whose content says what a host is: the OS release and the package databases, so that
/// installing or upgrading a package changes the identity.
const HOST_IDENTITY_FILES: &[&str] = &[
    "etc/os-release",
    "usr/lib/os-release",
    "var/lib/dpkg/status",
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "lib/apk/db/installed",
];

/// `host`: the OS release, the package databases and the architecture of the root at `/`.
/// `rootfs`: the content digest of the directory tree.
/// `image`: known only once the reference is resolved: see [`image_identity`].
pub fn base_identity(base: &Base) -> Result<BaseId, TreeError> {
    match base {
        Base::Host => host_identity(Path::new("/")),
        Base::Rootfs(dir) => Ok(BaseId::from_hash(blake3::hash(
            format!("rootfs\0{}", tree_digest(dir)?).as_bytes(),
        ))),
        Base::Image(reference) => Err(TreeError {
            path: reference.into(),
            source: std::io::Error::other(
                "an image base is identified by its manifest digest once pulled",
            ),
        }),
    }
}

/// An image base: its manifest digest (`sha256:...`), which names its layers and config exactly.
/// A tag that moves to another image changes the identity.
pub fn image_identity(manifest_digest: &str) -> BaseId {
    BaseId::from_hash(blake3::hash(format!("image\0{manifest_digest}").as_bytes()))
}

fn host_identity(root: &Path) -> Result<BaseId, TreeError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"host\0");
    hasher.update(std::env::consts::ARCH.as_bytes());
    hasher.update(b"\0");
    for rel in HOST_IDENTITY_FILES {
        let path = root.join(rel);
        match std::fs::read(&path) {
            Ok(content) => {
                hasher.update(rel.as_bytes());
                hasher.update(b"\0");
                hasher.update(blake3::hash(&content).as_bytes());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TreeError { path, source }),
        }
    }
    Ok(BaseId::from_hash(hasher.finalize()))
}
