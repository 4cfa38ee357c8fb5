//! The S3 backend: entries and whole blobs as single objects; streamed blobs through `stream`.

use std::io::Read;
use std::time::Duration;

use rusty_s3::{Bucket, UrlStyle};
use strata_key::CacheKey;
use strata_oci::{DigestReader, OciDigest};

use super::client::Client;
use super::stream::{ChunkList, StreamedBlob};
use crate::backend::{
    BackendError, BlobReader, BlobUpload, CacheBackend, Listed, PutOutcome, Swept, read_small,
};
use crate::entry::EntryDocument;

/// Object names under the cache's prefix.
#[derive(Clone)]
pub(super) struct Names {
    prefix: String,
}

impl Names {
    pub fn object(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn entry(&self, key: &CacheKey) -> String {
        self.object(&format!("entries/{}.json", key.to_hex()))
    }

    pub fn blob(&self, digest: &OciDigest) -> String {
        self.object(&format!("blobs/sha256/{}", digest.hex()))
    }

    pub fn chunk_list(&self, digest: &OciDigest) -> String {
        self.object(&format!("blobs/sha256/{}.chunks", digest.hex()))
    }

    /// Where the chunks of one streamed upload go: `<prefix>/chunks/<upload>/`.
    pub fn chunks_dir(&self, upload: &str) -> String {
        self.object(&format!("chunks/{upload}/"))
    }
}

pub struct S3Backend {
    client: Client,
    names: Names,
}

/// One streamed upload's chunk objects (name, size) and when it last wrote one.
type Upload<'a> = (Vec<(&'a str, u64)>, std::time::SystemTime);

impl S3Backend {
    /// A blob's chunk list, if it is a streamed blob.
    fn chunk_list(&self, digest: &OciDigest) -> Result<Option<ChunkList>, BackendError> {
        let Some(resp) = self
            .client
            .get(&self.names.chunk_list(digest), "read a blob")?
        else {
            return Ok(None);
        };
        let text = read_small(resp.into_reader(), &self.client.location, "a chunk list")?;
        Ok(ChunkList::parse(&text, &self.names.object("chunks/")))
    }
}

impl S3Backend {
    /// `endpoint` is the server's base URL (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://127.0.0.1:8014`); `prefix` has no leading or trailing `/`.
    pub fn new(
        endpoint: &str,
        bucket: &str,
        prefix: &str,
        region: &str,
        path_style: bool,
        credentials: super::CredentialChain,
    ) -> Result<S3Backend, String> {
        let url = url::Url::parse(endpoint).map_err(|e| format!("endpoint `{endpoint}`: {e}"))?;
        let style = if path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket_handle = Bucket::new(url, style, bucket.to_string(), region.to_string())
            .map_err(|e| format!("bucket `{bucket}` at `{endpoint}`: {e}"))?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(Duration::from_secs(300))
            .build();
        let location = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        Ok(S3Backend {
            client: Client {
                bucket: bucket_handle,
                credentials: std::sync::Arc::new(credentials),
                agent,
                location,
            },
            names: Names {
                prefix: prefix.to_string(),
            },
        })
    }
}

impl CacheBackend for S3Backend {
    fn location(&self) -> String {
        self.client.location.clone()
    }

    fn get_entry(&self, key: &CacheKey) -> Result<Option<EntryDocument>, BackendError> {
        let Some(resp) = self.client.get(&self.names.entry(key), "read an entry")? else {
            return Ok(None);
        };
        let bytes = read_small(resp.into_reader(), &self.client.location, "an entry")?;
        Ok(EntryDocument::from_json(&bytes, key))
    }

    fn put_entry(&self, entry: &EntryDocument) -> Result<PutOutcome, BackendError> {
        let object = self.names.entry(&entry.key);
        if self.client.exists(&object, "look up an entry")? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        match self
            .client
            .agent
            .put(&self.client.put_url(&object)?)
            .set("If-None-Match", "*")
            .set("Content-Type", "application/json")
            .send_bytes(&entry.to_json())
        {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(ureq::Error::Status(412, _)) => Ok(PutOutcome::AlreadyPresent),
            Err(e) => Err(self.client.error("write an entry", e)),
        }
    }

    fn has_blob(&self, digest: &OciDigest) -> Result<bool, BackendError> {
        Ok(self
            .client
            .exists(&self.names.blob(digest), "look up a blob")?
            || self
                .client
                .exists(&self.names.chunk_list(digest), "look up a blob")?)
    }

    fn get_blob(&self, digest: &OciDigest) -> Result<Option<BlobReader>, BackendError> {
        if let Some(resp) = self.client.get(&self.names.blob(digest), "read a blob")? {
            return Ok(Some(resp.into_reader()));
        }
        let Some(resp) = self
            .client
            .get(&self.names.chunk_list(digest), "read a blob")?
        else {
            return Ok(None);
        };
        let text = read_small(
            resp.into_reader(),
            &self.client.location,
            "a blob's chunk list",
        )?;
        let list = ChunkList::parse(&text, &self.names.object("chunks/")).ok_or_else(|| {
            BackendError::Corrupt {
                location: self.client.location.clone(),
                digest: *digest,
            }
        })?;
        Ok(Some(list.reader(self.client.clone())))
    }

    fn begin_upload(&self) -> Option<Result<Box<dyn BlobUpload + '_>, BackendError>> {
        Some(Ok(Box::new(StreamedBlob::start(
            self.client.clone(),
            self.names.clone(),
        ))))
    }

    fn put_blob(
        &self,
        digest: &OciDigest,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackendError> {
        let object = self.names.blob(digest);
        if self.client.exists(&object, "look up a blob")? {
            return Ok(());
        }
        let mut reader = DigestReader::new(content.take(size));
        self.client
            .put(&object, size, &mut reader, "write a blob")?;
        let (actual, len) = reader.finish();
        if actual != *digest || len != size {
            // S3 does not check content against our digest: take the object back.
            self.client.delete(&object);
            return Err(BackendError::Corrupt {
                location: self.client.location.clone(),
                digest: *digest,
            });
        }
        Ok(())
    }

    fn put_own_blob(
        &self,
        digest: &OciDigest,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackendError> {
        self.client.put(
            &self.names.blob(digest),
            size,
            content.take(size),
            "write a blob",
        )
    }

    fn list_entries(&self) -> Result<Vec<Listed<CacheKey>>, BackendError> {
        let prefix = self.names.object("entries/");
        Ok(self
            .client
            .list(&prefix)?
            .into_iter()
            .filter_map(|(name, size, modified)| {
                let key = name.strip_prefix(&prefix)?.strip_suffix(".json")?;
                Some(Listed {
                    name: CacheKey::parse(key)?,
                    size,
                    modified,
                })
            })
            .collect())
    }

    fn get_tool_cache(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let object = self.names.object(&format!("tool-caches/{name}"));
        match self.client.get(&object, "read a tool cache")? {
            Some(resp) => Ok(Some(read_small(
                resp.into_reader(),
                &self.client.location,
                "a tool cache",
            )?)),
            None => Ok(None),
        }
    }

    /// A plain PUT: S3 replaces an object whole, so the last writer wins.
    fn put_tool_cache(&self, name: &str, document: &[u8]) -> Result<(), BackendError> {
        let object = self.names.object(&format!("tool-caches/{name}"));
        self.client
            .agent
            .put(&self.client.put_url(&object)?)
            .set("Content-Type", "application/json")
            .send_bytes(document)
            .map(|_| ())
            .map_err(|e| self.client.error("write a tool cache", e))
    }

    fn list_tool_caches(&self) -> Result<Vec<Listed<String>>, BackendError> {
        let prefix = self.names.object("tool-caches/");
        Ok(self
            .client
            .list(&prefix)?
            .into_iter()
            .filter_map(|(name, size, modified)| {
                let name = name.strip_prefix(&prefix)?;
                name.ends_with(".json").then(|| Listed {
                    name: name.to_string(),
                    size,
                    modified,
                })
            })
            .collect())
    }

    fn delete_tool_cache(&self, name: &str) -> Result<(), BackendError> {
        self.client.delete_object(
            &self.names.object(&format!("tool-caches/{name}")),
            "delete a tool cache",
        )
    }

    fn entry_document(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, BackendError> {
        match self.client.get(&self.names.entry(key), "read an entry")? {
            Some(resp) => Ok(Some(read_small(
                resp.into_reader(),
                &self.client.location,
                "an entry",
            )?)),
            None => Ok(None),
        }
    }

    fn delete_entry(&self, key: &CacheKey) -> Result<(), BackendError> {
        self.client
            .delete_object(&self.names.entry(key), "delete an entry")
    }

    /// Whole blobs and streamed ones (by their chunk list, which is read for the size).
    fn list_blobs(&self) -> Result<Option<Vec<Listed<OciDigest>>>, BackendError> {
        let prefix = self.names.object("blobs/sha256/");
        let mut out = Vec::new();
        for (name, size, modified) in self.client.list(&prefix)? {
            let Some(hex) = name.strip_prefix(&prefix) else {
                continue;
            };
            let (hex, streamed) = match hex.strip_suffix(".chunks") {
                Some(hex) => (hex, true),
                None => (hex, false),
            };
            let Some(digest) = OciDigest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            let size = match streamed {
                true => self.chunk_list(&digest)?.map_or(size, |l| l.size()),
                false => size,
            };
            out.push(Listed {
                name: digest,
                size,
                modified,
            });
        }
        Ok(Some(out))
    }

    /// The chunk list goes first (readers then miss the blob), then its chunks.
    fn delete_blob(&self, digest: &OciDigest) -> Result<(), BackendError> {
        self.client
            .delete_object(&self.names.blob(digest), "delete a blob")?;
        let list = self.chunk_list(digest)?;
        self.client
            .delete_object(&self.names.chunk_list(digest), "delete a blob")?;
        // A list that cannot be read names no chunks: they go as an abandoned upload.
        for object in list.iter().flat_map(|l| l.objects()) {
            self.client.delete_object(object, "delete a blob chunk")?;
        }
        Ok(())
    }

    /// Chunks under `chunks/<upload>/` that no chunk list names, whose upload last wrote
    /// before `before` (an upload in progress keeps writing; a finished one publishes its
    /// list first).
    fn clean_uploads(&self, before: std::time::SystemTime) -> Result<Swept, BackendError> {
        let chunks_prefix = self.names.object("chunks/");
        let chunks = self.client.list(&chunks_prefix)?;
        if chunks.is_empty() {
            return Ok(Swept::default());
        }
        let mut named = std::collections::HashSet::new();
        let lists_prefix = self.names.object("blobs/sha256/");
        for (name, _, _) in self.client.list(&lists_prefix)? {
            let Some(hex) = name
                .strip_prefix(&lists_prefix)
                .and_then(|n| n.strip_suffix(".chunks"))
            else {
                continue;
            };
            let Some(digest) = OciDigest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            if let Some(list) = self.chunk_list(&digest)? {
                named.extend(list.objects().map(str::to_string));
            }
        }
        // Per upload: its objects and when it last wrote.
        let mut uploads: std::collections::HashMap<&str, Upload<'_>> =
            std::collections::HashMap::new();
        for (name, size, modified) in &chunks {
            let upload = name
                .strip_prefix(&chunks_prefix)
                .and_then(|rest| rest.split_once('/'))
                .map_or("", |(u, _)| u);
            let slot = uploads
                .entry(upload)
                .or_insert((Vec::new(), std::time::UNIX_EPOCH));
            slot.0.push((name, *size));
            slot.1 = slot.1.max(*modified);
        }
        let mut swept = Swept::default();
        for (objects, last) in uploads.into_values() {
            if last >= before || objects.iter().any(|(o, _)| named.contains(*o)) {
                continue;
            }
            for (object, size) in objects {
                self.client
                    .delete_object(object, "remove an abandoned upload")?;
                swept.objects += 1;
                swept.bytes += size;
            }
        }
        Ok(swept)
    }
}
