//! One bucket on one S3 endpoint: presigned requests over a shared HTTP agent. Cheap to clone,
//! so that upload and download threads each hold one.

use std::time::Duration;

use std::sync::Arc;

use rusty_s3::{Bucket, Credentials, S3Action};

use super::credentials::CredentialChain;

use strata_oci::retry::{transient, with_retries};

use crate::backend::BackendError;

const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);
#[derive(Clone)]
pub(super) struct Client {
    pub bucket: Bucket,
    pub credentials: Arc<CredentialChain>,
    pub agent: ureq::Agent,
    /// `s3://bucket/prefix`, for messages.
    pub location: String,
}

impl Client {
    pub fn sign<'a>(&self, action: impl S3Action<'a>) -> String {
        action.sign(SIGNATURE_LIFETIME).to_string()
    }

    /// The keys to sign the next request with (`None`: unsigned). A chain that finds none it
    /// can use makes the cache unreachable for this run, like a server that cannot be reached.
    pub fn keys(&self) -> Result<Option<Credentials>, BackendError> {
        self.credentials
            .current()
            .map(|c| c.map(|c| c.signing()))
            .map_err(|e| BackendError::Unreachable {
                location: self.location.clone(),
                message: format!("no usable S3 credentials: {e}"),
            })
    }

    pub fn put_url(&self, object: &str) -> Result<String, BackendError> {
        let keys = self.keys()?;
        Ok(self.sign(self.bucket.put_object(keys.as_ref(), object)))
    }

    pub fn error(&self, action: &str, e: ureq::Error) -> BackendError {
        match e {
            ureq::Error::Transport(t) => BackendError::Unreachable {
                location: self.location.clone(),
                message: strata_oci::retry::TransportFailure::new(&t).to_string(),
            },
            ureq::Error::Status(code, resp) => BackendError::Failed {
                location: self.location.clone(),
                action: action.to_string(),
                message: format!("HTTP {code} {}", body_excerpt(resp)),
            },
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
        let keys = self.keys()?;
        let url = self.sign(self.bucket.head_object(keys.as_ref(), object));
        match self.call(|| self.agent.head(&url), None).map_err(|e| *e) {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            Err(e) => Err(self.error(action, e)),
        }
    }

    pub fn get(&self, object: &str, action: &str) -> Result<Option<ureq::Response>, BackendError> {
        let keys = self.keys()?;
        let url = self.sign(self.bucket.get_object(keys.as_ref(), object));
        match self.call(|| self.agent.get(&url), None).map_err(|e| *e) {
            Ok(resp) => Ok(Some(resp)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.error(action, e)),
        }
    }

    /// Stores `bytes` as one object, trying again after a transient failure.
    pub fn put_bytes(&self, object: &str, bytes: &[u8], action: &str) -> Result<(), BackendError> {
        let url = self.put_url(object)?;
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
            .put(&self.put_url(object)?)
            .set("Content-Length", &size.to_string())
            .set("Content-Type", "application/octet-stream")
            .send(content)
            .map_err(|e| self.error(action, e))?;
        Ok(())
    }

    /// Every object under `prefix`: (name, size, time stored). ListObjectsV2, a page at a time.
    pub fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, u64, std::time::SystemTime)>, BackendError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let keys = self.keys()?;
            let mut action = self.bucket.list_objects_v2(keys.as_ref());
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = self.sign(action);
            let resp = self
                .call(|| self.agent.get(&url), None)
                .map_err(|e| self.error("list objects", *e))?;
            let text = crate::backend::read_small(resp.into_reader(), &self.location, "a listing")?;
            let unreadable = |what: String| BackendError::Failed {
                location: self.location.clone(),
                action: "list objects".into(),
                message: format!("unreadable listing: {what}"),
            };
            let text = String::from_utf8_lossy(&text);
            for object in elements(&text, "Contents") {
                let field = |name| {
                    elements(object, name)
                        .next()
                        .map(unescape)
                        .ok_or_else(|| unreadable(format!("an object without {name}")))
                };
                let (key, size, time) = (field("Key")?, field("Size")?, field("LastModified")?);
                let size = size
                    .parse()
                    .map_err(|_| unreadable(format!("size `{size}`")))?;
                let modified =
                    parse_time(&time).ok_or_else(|| unreadable(format!("time `{time}`")))?;
                out.push((key, size, modified));
            }
            let truncated = elements(&text, "IsTruncated").next() == Some("true");
            match elements(&text, "NextContinuationToken").next() {
                Some(t) if truncated && !t.is_empty() => token = Some(unescape(t)),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes an object; one already gone is fine.
    pub fn delete_object(&self, object: &str, action: &str) -> Result<(), BackendError> {
        let keys = self.keys()?;
        let url = self.sign(self.bucket.delete_object(keys.as_ref(), object));
        match self.call(|| self.agent.delete(&url), None).map_err(|e| *e) {
            Ok(_) | Err(ureq::Error::Status(404, _)) => Ok(()),
            Err(e) => Err(self.error(action, e)),
        }
    }

    /// Deletes an object, best effort: for cleaning up after an upload that did not finish.
    pub fn delete(&self, object: &str) {
        let Ok(keys) = self.keys() else {
            return;
        };
        let url = self.sign(self.bucket.delete_object(keys.as_ref(), object));
        let _ = self.call(|| self.agent.delete(&url), None);
    }
}

/// The start of an error answer's body, for a message (servers explain refusals there).
pub(super) fn body_excerpt(resp: ureq::Response) -> String {
    resp.into_string()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// The contents of every `<name>…</name>` element in `xml` (S3 listings are flat and simple
/// enough not to need an XML parser; servers differ in which optional fields they send).
pub(super) fn elements<'a>(xml: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let found = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(found)
    })
}

pub(super) fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// An S3 timestamp (`2026-12-01T19:45:03.000Z`, RFC 3339 in UTC).
pub(super) fn parse_time(text: &str) -> Option<std::time::SystemTime> {
    let text = text.trim();
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    // Days since the epoch of a civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    let millis: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
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
            credentials: Arc::new(CredentialChain::fixed(None)),
            agent: ureq::AgentBuilder::new().build(),
            location: "s3://b".into(),
        }
    }

    #[test]
    fn reads_listings_with_or_without_optional_fields() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key><LastModified>1970-01-01T00:00:01Z</LastModified><Size>3</Size></Contents><Contents><ETag>x</ETag><Key>c</Key><Size>4</Size><LastModified>1970-01-01T00:00:02.5Z</LastModified></Contents><NextContinuationToken>t</NextContinuationToken></ListBucketResult>";
        let keys: Vec<String> = elements(xml, "Contents")
            .map(|c| unescape(elements(c, "Key").next().unwrap()))
            .collect();
        assert_eq!(keys, ["a&b", "c"]);
        assert_eq!(elements(xml, "NextContinuationToken").next(), Some("t"));
    }

    #[test]
    fn reads_s3_timestamps() {
        let t = parse_time("2026-12-01T19:45:03.250Z").unwrap();
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(secs, Duration::from_millis(1_796_154_303_250));
        assert_eq!(
            parse_time("1970-01-01T00:00:00Z"),
            Some(std::time::UNIX_EPOCH)
        );
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("2026-13-01T00:00:00Z").is_none());
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
