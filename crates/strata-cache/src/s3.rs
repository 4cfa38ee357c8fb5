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

use crate::backend::{BackendError, BlobReader, CacheBackend, PutOutcome};
use crate::entry::RemoteEntry;

const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);

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
        self.exists(&self.blob_object(digest), "look up a blob")
    }

    fn get_blob(&self, digest: &OciDigest) -> Result<Option<BlobReader>, BackendError> {
        Ok(self
            .get(&self.blob_object(digest), "read a blob")?
            .map(|r| r.into_reader()))
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
