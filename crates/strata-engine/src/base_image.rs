//! Base images: `base: {image: REF}` pulls an OCI image from a registry (`host/repo:tag`,
//! `host/repo@sha256:...`) or an image layout directory (`oci:DIR[:TAG]`). Its layers are
//! unpacked into the local cache like any other layer (verified against their digests, and their
//! `diff_id`s against the config) and form the bottom of every task's stack; its manifest digest
//! is the base identity. A pulled image is remembered, so a later run only resolves the tag.

use std::io::Read;
use std::path::{Path, PathBuf};

use strata_key::LayerDigest;
use strata_oci::{
    Compression, Expected, ImageConfig, ImageIndex, ImageManifest, ImageRef, OciDigest, OciLayout,
    Platform, Registry, apply_layer,
};
use strata_store::{ArchiveRecord, LocalCache};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] strata_oci::RefError),
    #[error("failed to pull image {image}")]
    Registry {
        image: String,
        #[source]
        source: strata_oci::RegistryError,
    },
    #[error("failed to read image layout")]
    Layout(#[from] strata_oci::LayoutError),
    #[error("image {image} not found")]
    NotFound { image: String },
    #[error("image {image} is invalid: {reason}")]
    Invalid { image: String, reason: String },
    #[error("failed to unpack layer {digest} of image {image}")]
    Apply {
        image: String,
        digest: OciDigest,
        #[source]
        source: Box<strata_oci::ApplyError>,
    },
    #[error("failed to store image {image} in the local cache")]
    Store {
        image: String,
        #[source]
        source: Box<strata_store::StoreError>,
    },
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Registry(ImageRef),
    Layout { dir: PathBuf, tag: Option<String> },
}

impl ImageSource {
    /// `oci:DIR[:TAG]` (relative to `relative_to`) or a registry reference.
    pub fn parse(reference: &str, relative_to: &Path) -> Result<ImageSource, ImageError> {
        if let Some(rest) = reference.strip_prefix("oci:") {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') => (d, Some(t.to_string())),
                _ => (rest, None),
            };
            let dir = PathBuf::from(dir);
            let dir = if dir.is_relative() {
                relative_to.join(dir)
            } else {
                dir
            };
            return Ok(ImageSource::Layout { dir, tag });
        }
        Ok(ImageSource::Registry(ImageRef::parse(reference)?))
    }
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::Registry(r) => write!(f, "{r}"),
            ImageSource::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageSource::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
        }
    }
}

/// A base image in the local cache.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub manifest: OciDigest,
    /// The registry could not be reached: this is the image the reference resolved to when it
    /// was last pulled.
    pub offline: bool,
    /// Its layers, bottom first.
    pub layers: Vec<LayerDigest>,
    pub config: ImageConfig,
}

/// Reads blobs and manifests from wherever the image is.
trait Fetch: Sync {
    fn manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, OciDigest)>, ImageError>;
    fn blob(&self, digest: &OciDigest) -> Result<Box<dyn Read + Send + Sync>, ImageError>;
}

struct FromRegistry<'a> {
    registry: Registry,
    image: &'a ImageRef,
}

impl Fetch for FromRegistry<'_> {
    fn manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, OciDigest)>, ImageError> {
        let m = self
            .registry
            .get_manifest(&self.image.repository, reference)
            .map_err(|source| ImageError::Registry {
                image: self.image.to_string(),
                source,
            })?;
        Ok(m.map(|m| (m.bytes, m.digest)))
    }

    fn blob(&self, digest: &OciDigest) -> Result<Box<dyn Read + Send + Sync>, ImageError> {
        match self
            .registry
            .get_blob(&self.image.repository, digest)
            .map_err(|source| ImageError::Registry {
                image: self.image.to_string(),
                source,
            })? {
            Some((_, r)) => Ok(r),
            None => Err(ImageError::Invalid {
                image: self.image.to_string(),
                reason: format!("blob {digest} is missing"),
            }),
        }
    }
}

struct FromLayout {
    layout: OciLayout,
}

impl Fetch for FromLayout {
    fn manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, OciDigest)>, ImageError> {
        let digest = match OciDigest::parse(reference) {
            Some(d) => d,
            None => {
                let tag = (!reference.is_empty()).then_some(reference);
                self.layout.resolve(tag)?.digest
            }
        };
        Ok(Some((self.layout.read_blob(&digest)?, digest)))
    }

    fn blob(&self, digest: &OciDigest) -> Result<Box<dyn Read + Send + Sync>, ImageError> {
        let path = self.layout.blob_path(digest);
        let file = std::fs::File::open(&path)
            .map_err(|source| ImageError::Layout(strata_oci::LayoutError::Io { path, source }))?;
        Ok(Box::new(file))
    }
}

/// Makes the image available in the local cache and returns its layers.
pub fn pull_image(local: &LocalCache, source: &ImageSource) -> Result<PulledImage, ImageError> {
    let name = source.to_string();
    match source {
        ImageSource::Registry(image) => {
            let fetch = FromRegistry {
                registry: Registry::new(&image.registry),
                image,
            };
            match pull(local, &fetch, &image.reference_str(), &name) {
                Ok(pulled) => {
                    let _ = local
                        .index()
                        .record_image_tag(&name, &pulled.manifest.to_string());
                    Ok(pulled)
                }
                // No registry: the image as last pulled, if every layer is still here.
                Err(ImageError::Registry {
                    source: source @ strata_oci::RegistryError::Unreachable { .. },
                    image,
                }) => last_pulled(local, &name).ok_or(ImageError::Registry { image, source }),
                Err(e) => Err(e),
            }
        }
        ImageSource::Layout { dir, tag } => {
            let fetch = FromLayout {
                layout: OciLayout::open(dir)?,
            };
            pull(local, &fetch, tag.as_deref().unwrap_or(""), &name)
        }
    }
}

fn last_pulled(local: &LocalCache, name: &str) -> Option<PulledImage> {
    let manifest = local.index().image_tag(name)?;
    let (layers, config) = local.index().image(&manifest).ok()??;
    Some(PulledImage {
        manifest: OciDigest::parse(&manifest)?,
        offline: true,
        layers,
        config: serde_json::from_str(&config).ok()?,
    })
}

fn invalid(image: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        image: image.to_string(),
        reason: reason.into(),
    }
}

fn pull(
    local: &LocalCache,
    fetch: &dyn Fetch,
    reference: &str,
    name: &str,
) -> Result<PulledImage, ImageError> {
    let store_err = |source| ImageError::Store {
        image: name.to_string(),
        source: Box::new(source),
    };
    let (mut bytes, mut digest) =
        fetch
            .manifest(reference)?
            .ok_or_else(|| ImageError::NotFound {
                image: name.to_string(),
            })?;
    // An index (a multi-platform image): take this machine's platform.
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(&bytes)
        && !index.manifests.is_empty()
        && serde_json::from_slice::<ImageManifest>(&bytes).is_err()
    {
        let host = Platform::host();
        let chosen = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == host.os && p.architecture == host.architecture)
            })
            .or_else(|| {
                (index.manifests.len() == 1 && index.manifests[0].platform.is_none())
                    .then(|| &index.manifests[0])
            })
            .ok_or_else(|| {
                invalid(
                    name,
                    format!("it has no image for {}/{}", host.os, host.architecture),
                )
            })?;
        let digest_str = chosen.digest.to_string();
        (bytes, digest) = fetch
            .manifest(&digest_str)?
            .ok_or_else(|| invalid(name, format!("manifest {digest_str} is missing")))?;
    }
    if OciDigest::of(&bytes) != digest {
        return Err(invalid(name, "its manifest does not match its digest"));
    }
    let manifest_key = digest.to_string();
    if let Some((layers, config)) = local.index().image(&manifest_key).map_err(store_err)?
        && let Ok(config) = serde_json::from_str(&config)
    {
        return Ok(PulledImage {
            manifest: digest,
            offline: false,
            layers,
            config,
        });
    }
    let manifest: ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(name, format!("its manifest is unreadable: {e}")))?;
    let mut config_bytes = Vec::new();
    fetch
        .blob(&manifest.config.digest)?
        .take(16 << 20)
        .read_to_end(&mut config_bytes)
        .map_err(|e| invalid(name, format!("its config is unreadable: {e}")))?;
    if OciDigest::of(&config_bytes) != manifest.config.digest {
        return Err(invalid(name, "its config does not match its digest"));
    }
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| invalid(name, format!("its config is unreadable: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(invalid(
            name,
            "its config lists a different number of layers than its manifest",
        ));
    }
    // Layers unpack in parallel; each is verified before it is published.
    let layers: Vec<Result<LayerDigest, ImageError>> = std::thread::scope(|s| {
        let handles: Vec<_> = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(desc, diff_id)| {
                s.spawn(move || -> Result<LayerDigest, ImageError> {
                    if let Some(layer) = local
                        .index()
                        .layer_for_archive(&desc.digest.to_string())
                        .map_err(store_err)?
                    {
                        return Ok(layer);
                    }
                    let compression =
                        Compression::from_media_type(&desc.media_type).ok_or_else(|| {
                            invalid(
                                name,
                                format!("layer type `{}` is not supported", desc.media_type),
                            )
                        })?;
                    let dir = local.layers().import_dir().map_err(store_err)?;
                    let unpack = || -> Result<LayerDigest, ImageError> {
                        let expected = Expected {
                            digest: Some(desc.digest),
                            diff_id: Some(*diff_id),
                        };
                        let applied =
                            apply_layer(fetch.blob(&desc.digest)?, compression, &dir, expected)
                                .map_err(|source| ImageError::Apply {
                                    image: name.to_string(),
                                    digest: desc.digest,
                                    source: Box::new(source),
                                })?;
                        let layer = local
                            .layers()
                            .publish(&dir, None, &applied.contents)
                            .map_err(store_err)?;
                        local
                            .index()
                            .record_archive(
                                &layer,
                                &ArchiveRecord {
                                    digest: desc.digest.to_string(),
                                    size: desc.size,
                                    diff_id: diff_id.to_string(),
                                },
                            )
                            .map_err(store_err)?;
                        Ok(layer)
                    };
                    let result = unpack();
                    if result.is_err() {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("layer unpacking panicked"))
            .collect()
    });
    let layers = layers.into_iter().collect::<Result<Vec<_>, _>>()?;
    local
        .index()
        .record_image(
            &manifest_key,
            &layers,
            &String::from_utf8_lossy(&config_bytes),
        )
        .map_err(store_err)?;
    Ok(PulledImage {
        manifest: digest,
        offline: false,
        layers,
        config,
    })
}
