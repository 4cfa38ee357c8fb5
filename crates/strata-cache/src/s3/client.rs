//! One bucket on one S3 endpoint: presigned requests over a shared HTTP agent. Cheap to clone,
//! so that upload and download threads each hold one.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action};

use strata_oci::retry::{transient, with_retries};

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

    /// Sends a request, with `body` if given (again, after a transient failure). The error is
    /// boxed: ureq's is large.
    fn call(
        &self,
        request: impl Fn() -> ureq::Request,
        body: Option<&[u8]>,
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        let send = || {
            let request = request();
            match body {
                Some(bytes) => request.send_bytes(bytes),
                None => request.call(),
            }
            .map_err(Box::new)
        };
        with_retries(send, |e| transient(e))
    }

    /// HEAD: whether the object exists.
    pub fn exists(&self, object: &str, action: &str) -> Result<bool, BackendError> {
        let url = self.sign(self.bucket.head_object(self.credentials.as_ref(), object));
        match self.call(|| self.agent.head(&url), None).map_err(|e| *e) {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            Err(e) => Err(self.error(action, e)),
        }
    }

    pub fn get(&self, object: &str, action: &str) -> Result<Option<ureq::Response>, BackendError> {
        let url = self.sign(self.bucket.get_object(self.credentials.as_ref(), object));
        match self.call(|| self.agent.get(&url), None).map_err(|e| *e) {
            Ok(resp) => Ok(Some(resp)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.error(action, e)),
        }
    }

    /// Stores `bytes` as one object, trying again after a transient failure.
    pub fn put_bytes(&self, object: &str, bytes: &[u8], action: &str) -> Result<(), BackendError> {
        let url = self.put_url(object);
        let put = || {
            self.agent
                .put(&url)
                .set("Content-Type", "application/octet-stream")
        };
        self.call(put, Some(bytes))
            .map_err(|e| self.error(action, *e))?;
        Ok(())
    }

    /// Stores `size` bytes streamed from `content` as one object (tried once: a stream cannot be
    /// read again).
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
        let _ = self.call(|| self.agent.delete(&url), None);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use strata_testkit::scripted_http as server;

    use super::*;

    fn client(endpoint: &str) -> Client {
        let url = url::Url::parse(endpoint).unwrap();
        Client {
            bucket: Bucket::new(url, rusty_s3::UrlStyle::Path, "b", "us-east-1").unwrap(),
            credentials: None,
            agent: ureq::AgentBuilder::new().build(),
            location: "s3://b".into(),
        }
    }

    #[test]
    fn a_busy_server_is_asked_again() {
        let (endpoint, seen) = server(vec![(503, "busy"), (500, "oops"), (200, "")]);
        client(&endpoint)
            .put_bytes("o", b"content", "write")
            .unwrap();
        assert_eq!(seen.join().unwrap(), ["PUT", "PUT", "PUT"]);
        let (endpoint, seen) = server(vec![(429, ""), (200, "hello")]);
        let resp = client(&endpoint).get("o", "read").unwrap().unwrap();
        assert_eq!(resp.into_string().unwrap(), "hello");
        assert_eq!(seen.join().unwrap(), ["GET", "GET"]);
    }

    #[test]
    fn a_refusal_is_final_and_so_is_a_server_that_cannot_be_reached() {
        let (endpoint, seen) = server(vec![(403, "denied")]);
        let err = client(&endpoint).put_bytes("o", b"x", "write").unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
        assert_eq!(seen.join().unwrap(), ["PUT"]);
        let (endpoint, seen) = server(vec![(503, ""), (503, ""), (503, "still busy")]);
        let err = client(&endpoint).put_bytes("o", b"x", "write").unwrap_err();
        assert!(err.to_string().contains("still busy"), "{err}");
        assert_eq!(
            seen.join().unwrap().len(),
            strata_oci::retry::ATTEMPTS as usize
        );
        // Nothing listens there: tried once, and reported as unreachable.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let start = std::time::Instant::now();
        let err = client(&format!("http://127.0.0.1:{port}"))
            .put_bytes("o", b"x", "write")
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(
            start.elapsed() < strata_oci::retry::FIRST_BACKOFF,
            "an unreachable server was tried again"
        );
    }
}
