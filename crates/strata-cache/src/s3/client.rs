//! One bucket on one S3 endpoint: presigned requests over a shared HTTP agent. Cheap to clone,
//! so that upload and download threads each hold one.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action};

use crate::backend::BackendError;

const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub(super) struct Client {
    pub bucket: Bucket,
    pub credentials: Option<Credentials>,
    pub agent: ureq::Agent,
    /// `s3://bucket/prefix`, for messages.
    pub location: String,
}

impl Client {
    pub fn sign<'a>(&self, action: impl S3Action<'a>) -> String {
        action.sign(SIGNATURE_LIFETIME).to_string()
    }

    pub fn put_url(&self, object: &str) -> String {
        self.sign(self.bucket.put_object(self.credentials.as_ref(), object))
    }

    pub fn error(&self, action: &str, e: ureq::Error) -> BackendError {
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
    pub fn exists(&self, object: &str, action: &str) -> Result<bool, BackendError> {
        let url = self.sign(self.bucket.head_object(self.credentials.as_ref(), object));
        match self.agent.head(&url).call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            Err(e) => Err(self.error(action, e)),
        }
    }

    pub fn get(&self, object: &str, action: &str) -> Result<Option<ureq::Response>, BackendError> {
        let url = self.sign(self.bucket.get_object(self.credentials.as_ref(), object));
        match self.agent.get(&url).call() {
            Ok(resp) => Ok(Some(resp)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.error(action, e)),
        }
    }

    /// Stores `size` bytes from `content` as one object.
    pub fn put(
        &self,
        object: &str,
        size: u64,
        content: impl std::io::Read,
        action: &str,
    ) -> Result<(), BackendError> {
        self.agent
            .put(&self.put_url(object))
            .set("Content-Length", &size.to_string())
            .set("Content-Type", "application/octet-stream")
            .send(content)
            .map_err(|e| self.error(action, e))?;
        Ok(())
    }

    /// Deletes an object, best effort: for cleaning up after an upload that did not finish.
    pub fn delete(&self, object: &str) {
        let url = self.sign(self.bucket.delete_object(self.credentials.as_ref(), object));
        let _ = self.agent.delete(&url).call();
    }
}
