//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), as skopeo,
//! umoci and podman read and write them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{DigestReader, OciDigest};
use crate::image::{Descriptor, ImageIndex, MEDIA_INDEX};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("failed to access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OCI image layout: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("image layout {path} has no image tagged `{tag}`")]
    NoSuchTag { path: PathBuf, tag: String },
    #[error("blob {digest} in {path} does not match its digest")]
    Corrupt { path: PathBuf, digest: OciDigest },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Opens an existing layout.
    pub fn open(root: &Path) -> Result<OciLayout, LayoutError> {
        let marker = root.join("oci-layout");
        if !marker.is_file() {
            return Err(LayoutError::Invalid {
                path: root.to_path_buf(),
                reason: "it has no `oci-layout` file".into(),
            });
        }
        Ok(OciLayout {
            root: root.to_path_buf(),
        })
    }

    /// Opens the layout at `root`, creating an empty one if there is none.
    pub fn create(root: &Path) -> Result<OciLayout, LayoutError> {
        let blobs = root.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        let marker = root.join("oci-layout");
        if !marker.exists() {
            std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&marker))?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let empty = ImageIndex {
                schema_version: 2,
                media_type: Some(MEDIA_INDEX.to_string()),
                manifests: Vec::new(),
            };
            write_atomic(
                &index,
                &serde_json::to_vec_pretty(&empty).expect("serializes"),
            )?;
        }
        Ok(OciLayout {
            root: root.to_path_buf(),
        })
    }

    pub fn blob_path(&self, digest: &OciDigest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<OciDigest, LayoutError> {
        let digest = OciDigest::of(bytes);
        let path = self.blob_path(&digest);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Streams a blob into the layout, checking that it has `digest`.
    pub fn put_blob(&self, digest: &OciDigest, content: impl Read) -> Result<(), LayoutError> {
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut reader = DigestReader::new(content);
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        std::io::copy(&mut reader, &mut file).map_err(io(&tmp))?;
        file.flush().map_err(io(&tmp))?;
        let (actual, _) = reader.finish();
        if actual != *digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(LayoutError::Corrupt {
                path: path.clone(),
                digest: *digest,
            });
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn read_blob(&self, digest: &OciDigest) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if OciDigest::of(&bytes) != *digest {
            return Err(LayoutError::Corrupt {
                path,
                digest: *digest,
            });
        }
        Ok(bytes)
    }

    pub fn index(&self) -> Result<ImageIndex, LayoutError> {
        let path = self.root.join("index.json");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| LayoutError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })
    }

    /// Names the manifest `desc` with `tag` in `index.json`, replacing what had that tag.
    pub fn tag(&self, mut desc: Descriptor, tag: &str) -> Result<(), LayoutError> {
        let mut index = self.index()?;
        index
            .manifests
            .retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        desc.annotations
            .insert(REF_NAME.to_string(), tag.to_string());
        index.manifests.push(desc);
        let path = self.root.join("index.json");
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&index).expect("serializes"),
        )
    }

    /// The manifest descriptor tagged `tag`; with no tag, the only manifest of the layout.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor, LayoutError> {
        let index = self.index()?;
        let found = match tag {
            Some(tag) => index
                .manifests
                .into_iter()
                .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag)),
            None if index.manifests.len() == 1 => index.manifests.into_iter().next(),
            None => {
                return Err(LayoutError::Invalid {
                    path: self.root.clone(),
                    reason: format!(
                        "it holds {} images; name one with `oci:DIR:TAG`",
                        index.manifests.len()
                    ),
                });
            }
        };
        found.ok_or_else(|| LayoutError::NoSuchTag {
            path: self.root.clone(),
            tag: tag.unwrap_or("").to_string(),
        })
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}
