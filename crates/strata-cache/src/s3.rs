//! A shared cache in an S3-compatible bucket, under a prefix:
//!
//! ```text
//! <prefix>/entries/<cache key>.json
//! <prefix>/blobs/sha256/<hex>
//! ```
//!
//! Requests are presigned (SigV4) and sent with a plain HTTP client. Credentials come from the
//! standard variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); with
//! none, requests go unsigned (a public bucket). Entries are written with `If-None-Match: *`
//! after checking that the key is free, so the first writer wins on servers that honour the
//! condition; on one that does not, a later writer replaces the entry with another complete one
//! (each entry names only blobs already stored), so readers still never see a broken entry.

use std::io::Read;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use strata_key::CacheKey;
use strata_oci::{DigestReader, OciDigest};

use crate::backend::{BackendError, BlobReader, BlobUpload, CacheBackend, PutOutcome};
use crate::chunks::{ChunkedUpload, Chunks};
use crate::entry::RemoteEntry;

const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);
/// Streamed uploads go up in parts of this size (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// How many parts of a streamed upload are sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// `blobs/sha256/<hex>.ref`: where a streamed blob lives. A streamed upload cannot be named by a
/// digest known only at its end, and S3 has no rename, so it keeps its upload name and this
/// small document, written once the digest is known, points to it.
#[derive(serde::Serialize, serde::Deserialize)]
struct BlobRefDoc {
    object: String,
    size: u64,
}

pub struct S3Backend {
    bucket: Bucket,
    prefix: String,
    credentials: Option<Credentials>,
    agent: ureq::Agent,
    location: String,
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
        credentials: Option<Credentials>,
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
            bucket: bucket_handle,
            prefix: prefix.to_string(),
            credentials,
            agent,
            location,
        })
    }

    fn object(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn ref_object(&self, digest: &OciDigest) -> String {
        self.object(&format!("blobs/sha256/{}.ref", digest.hex()))
    }

    fn start_multipart(&self) -> Result<Multipart<'_>, BackendError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let object = self.object(&format!(
            "uploads/{nanos:x}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let url = self
            .bucket
            .create_multipart_upload(self.credentials.as_ref(), &object)
            .sign(SIGNATURE_LIFETIME);
        let resp = self
            .agent
            .post(url.as_str())
            .call()
            .map_err(|e| self.error("start an upload", e))?;
        let body = resp.into_string().map_err(|e| BackendError::Unreachable {
            location: self.location.clone(),
            message: e.to_string(),
        })?;
        let upload_id = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map_err(|e| BackendError::Failed {
                location: self.location.clone(),
                action: "start an upload".into(),
                message: e.to_string(),
            })?
            .upload_id()
            .to_string();
        // Several parts in flight, as S3 clients do: one connection rarely fills the pipe.
        let parts = ChunkedUpload::start(
            self.location.clone(),
            PART_SIZE,
            PARTS_IN_FLIGHT,
            |chunks: Chunks| {
                let (bucket, credentials, agent) = (
                    self.bucket.clone(),
                    self.credentials.clone(),
                    self.agent.clone(),
                );
                let (object, upload_id, location) =
                    (object.clone(), upload_id.clone(), self.location.clone());
                std::thread::spawn(move || {
                    let mut etags = Vec::new();
                    loop {
                        let next = chunks.lock().expect("parts lock").recv();
                        let Ok((number, part)) = next else {
                            return Ok(etags);
                        };
                        let url = bucket
                            .upload_part(credentials.as_ref(), &object, number, &upload_id)
                            .sign(SIGNATURE_LIFETIME);
                        let resp = agent.put(url.as_str()).send_bytes(&part).map_err(|e| {
                            BackendError::Failed {
                                location: location.clone(),
                                action: format!("upload part {number}"),
                                message: e.to_string(),
                            }
                        })?;
                        etags.push((number, resp.header("ETag").unwrap_or_default().to_string()));
                    }
                })
            },
        );
        Ok(Multipart {
            backend: self,
            object,
            upload_id,
            parts,
        })
    }

    fn entry_object(&self, key: &CacheKey) -> String {
        self.object(&format!("entries/{}.json", key.to_hex()))
    }

    fn blob_object(&self, digest: &OciDigest) -> String {
        self.object(&format!("blobs/sha256/{}", digest.hex()))
    }

    fn error(&self, action: &str, e: ureq::Error) -> BackendError {
        match e {
            ureq::Error::Transport(t) => BackendError::Unreachable {
                location: self.location.clone(),
                message: t.to_string(),
            },
            ureq::Error::Status(code, resp) => {
                let body: String = resp
                    .into_string()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                BackendError::Failed {
                    location: self.location.clone(),
                    action: action.to_string(),
                    message: format!("HTTP {code} {body}"),
                }
            }
        }
    }

    /// HEAD: whether the object exists.
    fn exists(&self, object: &str, action: &str) -> Result<bool, BackendError> {
        let url = self
            .bucket
            .head_object(self.credentials.as_ref(), object)
            .sign(SIGNATURE_LIFETIME);
        match self.agent.head(url.as_str()).call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            Err(e) => Err(self.error(action, e)),
        }
    }

    fn get(&self, object: &str, action: &str) -> Result<Option<ureq::Response>, BackendError> {
        let url = self
            .bucket
            .get_object(self.credentials.as_ref(), object)
            .sign(SIGNATURE_LIFETIME);
        match self.agent.get(url.as_str()).call() {
            Ok(resp) => Ok(Some(resp)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.error(action, e)),
        }
    }
}

impl CacheBackend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn get_entry(&self, key: &CacheKey) -> Result<Option<RemoteEntry>, BackendError> {
        let Some(resp) = self.get(&self.entry_object(key), "read an entry")? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| BackendError::Unreachable {
                location: self.location.clone(),
                message: format!("reading an entry: {e}"),
            })?;
        Ok(RemoteEntry::from_json(&bytes, key))
    }

    fn put_entry(&self, entry: &RemoteEntry) -> Result<PutOutcome, BackendError> {
        let object = self.entry_object(&entry.key);
        if self.exists(&object, "look up an entry")? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let url = self
            .bucket
            .put_object(self.credentials.as_ref(), &object)
            .sign(SIGNATURE_LIFETIME);
        match self
            .agent
            .put(url.as_str())
            .set("If-None-Match", "*")
            .set("Content-Type", "application/json")
            .send_bytes(&entry.to_json())
        {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(ureq::Error::Status(412, _)) => Ok(PutOutcome::AlreadyPresent),
            Err(e) => Err(self.error("write an entry", e)),
        }
    }

    fn has_blob(&self, digest: &OciDigest) -> Result<bool, BackendError> {
        Ok(self.exists(&self.blob_object(digest), "look up a blob")?
            || self.exists(&self.ref_object(digest), "look up a blob")?)
    }

    fn get_blob(&self, digest: &OciDigest) -> Result<Option<BlobReader>, BackendError> {
        if let Some(resp) = self.get(&self.blob_object(digest), "read a blob")? {
            return Ok(Some(resp.into_reader()));
        }
        // A streamed upload: the blob lives under its upload name.
        let Some(resp) = self.get(&self.ref_object(digest), "read a blob")? else {
            return Ok(None);
        };
        let text = resp.into_string().map_err(|e| BackendError::Unreachable {
            location: self.location.clone(),
            message: format!("reading a blob reference: {e}"),
        })?;
        let object = serde_json::from_str::<BlobRefDoc>(&text)
            .ok()
            .filter(|r| r.object.starts_with(&self.object("uploads/")))
            .ok_or_else(|| BackendError::Corrupt {
                location: self.location.clone(),
                digest: *digest,
            })?
            .object;
        Ok(self.get(&object, "read a blob")?.map(|r| r.into_reader()))
    }

    fn begin_upload(&self) -> Option<Result<Box<dyn BlobUpload + '_>, BackendError>> {
        Some(
            self.start_multipart()
                .map(|u| Box::new(u) as Box<dyn BlobUpload + '_>),
        )
    }

    fn put_blob(
        &self,
        digest: &OciDigest,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackendError> {
        let object = self.blob_object(digest);
        if self.exists(&object, "look up a blob")? {
            return Ok(());
        }
        let url = self
            .bucket
            .put_object(self.credentials.as_ref(), &object)
            .sign(SIGNATURE_LIFETIME);
        let mut reader = DigestReader::new(content.take(size));
        self.agent
            .put(url.as_str())
            .set("Content-Length", &size.to_string())
            .set("Content-Type", "application/octet-stream")
            .send(&mut reader)
            .map_err(|e| self.error("write a blob", e))?;
        let (actual, len) = reader.finish();
        if actual != *digest || len != size {
            // S3 does not check content against our digest: take the object back.
            let url = self
                .bucket
                .delete_object(self.credentials.as_ref(), &object)
                .sign(SIGNATURE_LIFETIME);
            let _ = self.agent.delete(url.as_str()).call();
            return Err(BackendError::Corrupt {
                location: self.location.clone(),
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
        let url = self
            .bucket
            .put_object(self.credentials.as_ref(), &self.blob_object(digest))
            .sign(SIGNATURE_LIFETIME);
        self.agent
            .put(url.as_str())
            .set("Content-Length", &size.to_string())
            .set("Content-Type", "application/octet-stream")
            .send(content.take(size))
            .map_err(|e| self.error("write a blob", e))?;
        Ok(())
    }
}

/// A multipart upload fed as the blob is produced; full parts go to sender threads, so that
/// producing and uploading overlap.
struct Multipart<'a> {
    backend: &'a S3Backend,
    object: String,
    upload_id: String,
    /// Each sender returns the (part number, ETag) of the parts it sent.
    parts: ChunkedUpload<Vec<(u16, String)>>,
}

impl BlobUpload for Multipart<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.parts.write_all(bytes)
    }

    fn finish(mut self: Box<Self>, digest: &OciDigest, size: u64) -> Result<(), BackendError> {
        self.parts.flush(true)?;
        let mut etags: Vec<(u16, String)> = self.parts.join()?.into_iter().flatten().collect();
        etags.sort();
        let b = self.backend;
        let complete = b.bucket.complete_multipart_upload(
            b.credentials.as_ref(),
            &self.object,
            &self.upload_id,
            etags.iter().map(|(_, etag)| etag.as_str()),
        );
        let url = complete.sign(SIGNATURE_LIFETIME);
        b.agent
            .post(url.as_str())
            .send_string(&complete.body())
            .map_err(|e| b.error("complete an upload", e))?;
        self.upload_id.clear();
        let doc = serde_json::to_vec(&BlobRefDoc {
            object: self.object.clone(),
            size,
        })
        .expect("serializes");
        let url = b
            .bucket
            .put_object(b.credentials.as_ref(), &b.ref_object(digest))
            .sign(SIGNATURE_LIFETIME);
        match b
            .agent
            .put(url.as_str())
            .set("If-None-Match", "*")
            .send_bytes(&doc)
        {
            Ok(_) | Err(ureq::Error::Status(412, _)) => Ok(()),
            Err(e) => Err(b.error("publish a blob", e)),
        }
    }
}

impl Drop for Multipart<'_> {
    fn drop(&mut self) {
        // Unfinished: abandon the upload so the server drops its parts.
        if !self.upload_id.is_empty() {
            let _ = self.parts.join();
            let b = self.backend;
            let url = b
                .bucket
                .abort_multipart_upload(b.credentials.as_ref(), &self.object, &self.upload_id)
                .sign(SIGNATURE_LIFETIME);
            let _ = b.agent.delete(url.as_str()).call();
        }
    }
}
