//! A client for the OCI distribution API (what `docker push`/`pull` speak): blobs by digest,
//! manifests by tag or digest, monolithic blob uploads, and the usual authentication (basic, or a
//! bearer token fetched from the realm a 401 names).
//!
//! Outcomes are kept apart: a missing blob or manifest is `Ok(None)`, a server that cannot be
//! reached is [`RegistryError::Unreachable`], anything else the server refused is
//! [`RegistryError::Status`].

use std::io::Read;
use std::sync::{Mutex, OnceLock};

use crate::auth::{AuthEnvironment, CredentialError, RegistryCredential};
use std::time::Duration;

use crate::digest::OciDigest;
use crate::image::{MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} is unreachable")]
    Unreachable {
        registry: String,
        #[source]
        source: crate::retry::TransportFailure,
    },
    #[error("registry refused {method} {url}: HTTP {status} {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("failed to read a response from {url}")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "registry {registry} wants credentials ({challenge}): set STRATA_REGISTRY_USERNAME and STRATA_REGISTRY_PASSWORD, or log in with `docker login`"
    )]
    Auth { registry: String, challenge: String },
    #[error("failed to get credentials for registry {registry}")]
    Credentials {
        registry: String,
        #[source]
        source: CredentialError,
    },
}

/// A manifest as fetched: its media type, bytes and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: OciDigest,
}

/// A blob being downloaded.
pub type BlobStream = Box<dyn Read + Send + Sync>;

/// What a request sends.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Stream(&'a mut dyn Read),
}

/// One registry host.
pub struct Registry {
    host: String,
    base: String,
    agent: ureq::Agent,
    env: AuthEnvironment,
    /// Looked up at the first challenge (`crate::auth`): a credential helper is a process.
    credentials: OnceLock<Result<Option<RegistryCredential>, CredentialError>>,
    /// The `Authorization` header value that last worked.
    auth: Mutex<Option<String>>,
}

impl Registry {
    /// A client for `host[:port]`. Plain HTTP is used for loopback hosts and for hosts listed in
    /// `$STRATA_INSECURE_REGISTRIES` (comma-separated); HTTPS otherwise. Credentials are found
    /// as docker and podman find them (`crate::auth`).
    pub fn new(host: &str) -> Registry {
        let insecure = is_loopback(host)
            || std::env::var("STRATA_INSECURE_REGISTRIES")
                .unwrap_or_default()
                .split(',')
                .any(|h| h.trim() == host);
        let scheme = if insecure { "http" } else { "https" };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(300))
            .build();
        Registry {
            host: host.to_string(),
            base: format!("{scheme}://{host}"),
            agent,
            env: AuthEnvironment::of_process(),
            credentials: OnceLock::new(),
            auth: Mutex::new(None),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request, answering one authentication challenge if the registry makes one, and
    /// sending an idempotent one again after a transient failure (`crate::retry`).
    fn call(
        &self,
        method: &'static str,
        url: &str,
        prepare: &dyn Fn(ureq::Request) -> ureq::Request,
        mut body: Body<'_>,
    ) -> Result<Option<ureq::Response>, RegistryError> {
        // A stream cannot be sent twice; a chunk appended with PATCH must not be.
        let repeatable =
            !matches!(body, Body::Stream(_)) && matches!(method, "GET" | "HEAD" | "PUT" | "DELETE");
        let mut answered = false;
        let mut failures = 0;
        let mut pause = crate::retry::FIRST_BACKOFF;
        loop {
            let mut req = prepare(self.agent.request(method, url));
            if let Some(auth) = self.auth.lock().expect("auth lock").clone() {
                req = req.set("Authorization", &auth);
            }
            let result = match &mut body {
                Body::Empty => req.call(),
                Body::Bytes(bytes) => req.send_bytes(bytes),
                Body::Stream(reader) => req.send(&mut **reader),
            };
            match result {
                Ok(resp) => return Ok(Some(resp)),
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(401, resp)) if !answered => {
                    answered = true;
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_string();
                    let auth = self.answer(&challenge)?;
                    *self.auth.lock().expect("auth lock") = Some(auth);
                }
                Err(e)
                    if repeatable
                        && failures + 1 < crate::retry::ATTEMPTS
                        && crate::retry::transient(&e) =>
                {
                    failures += 1;
                    std::thread::sleep(pause);
                    pause *= 4;
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let body = resp.into_string().unwrap_or_default();
                    return Err(RegistryError::Status {
                        method,
                        url: url.to_string(),
                        status,
                        body: body.chars().take(300).collect(),
                    });
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(RegistryError::Unreachable {
                        registry: self.host.clone(),
                        source: crate::retry::TransportFailure::new(&t),
                    });
                }
            }
        }
    }

    /// The `Authorization` header for a `WWW-Authenticate` challenge.
    fn answer(&self, challenge: &str) -> Result<String, RegistryError> {
        let auth_err = || RegistryError::Auth {
            registry: self.host.clone(),
            challenge: challenge.to_string(),
        };
        let credentials = self
            .credentials
            .get_or_init(|| crate::auth::credentials_for(&self.env, &self.host))
            .clone()
            .map_err(|source| RegistryError::Credentials {
                registry: self.host.clone(),
                source,
            })?;
        let basic = match &credentials {
            Some(RegistryCredential::Basic { username, password }) => Some(format!(
                "Basic {}",
                base64_encode(format!("{username}:{password}").as_bytes())
            )),
            _ => None,
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(auth_err);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(auth_err());
        }
        let params = parse_challenge(params);
        let realm = params.get("realm").ok_or_else(auth_err)?;
        let req = match &credentials {
            // An identity token is a refresh token: exchanged with an OAuth2 POST, as docker does.
            Some(RegistryCredential::IdentityToken(token)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("client_id", "strata"),
                    ("refresh_token", token.as_str()),
                ];
                for key in ["service", "scope"] {
                    if let Some(v) = params.get(key) {
                        form.push((key, v.as_str()));
                    }
                }
                self.agent.post(realm).send_form(&form)
            }
            _ => {
                let mut req = self.agent.get(realm);
                for key in ["service", "scope"] {
                    if let Some(v) = params.get(key) {
                        req = req.query(key, v);
                    }
                }
                if let Some(basic) = &basic {
                    req = req.set("Authorization", basic);
                }
                req.call()
            }
        };
        let resp = req.map_err(|e| match e {
            ureq::Error::Transport(t) => RegistryError::Unreachable {
                registry: realm.clone(),
                source: crate::retry::TransportFailure::new(&t),
            },
            ureq::Error::Status(..) => auth_err(),
        })?;
        let text = resp.into_string().map_err(|source| RegistryError::Read {
            url: realm.clone(),
            source,
        })?;
        let body: serde_json::Value = serde_json::from_str(&text).map_err(|_| auth_err())?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(auth_err)?;
        Ok(format!("Bearer {token}"))
    }

    pub fn has_blob(&self, repo: &str, digest: &OciDigest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        Ok(self.call("HEAD", &url, &|r| r, Body::Empty)?.is_some())
    }

    /// A blob's content as a stream, or `None` when the registry does not have it. The caller
    /// verifies the digest of what it reads.
    pub fn get_blob(
        &self,
        repo: &str,
        digest: &OciDigest,
    ) -> Result<Option<(u64, BlobStream)>, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        Ok(self.call("GET", &url, &|r| r, Body::Empty)?.map(|resp| {
            let len = resp
                .header("Content-Length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            (len, resp.into_reader())
        }))
    }

    /// Uploads a blob in one request (unless the registry already has it).
    pub fn put_blob(
        &self,
        repo: &str,
        digest: &OciDigest,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), RegistryError> {
        if self.has_blob(repo, digest)? {
            return Ok(());
        }
        let location = self.start_upload(repo)?;
        let url = with_digest(&location, digest);
        let length = size.to_string();
        self.call(
            "PUT",
            &url,
            &|r| {
                r.set("Content-Type", "application/octet-stream")
                    .set("Content-Length", &length)
            },
            Body::Stream(content),
        )?;
        Ok(())
    }

    /// Opens an upload session; returns where to send its content.
    pub fn start_upload(&self, repo: &str) -> Result<String, RegistryError> {
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self
            .call(
                "POST",
                &start,
                &|r| r.set("Content-Length", "0"),
                Body::Empty,
            )?
            .ok_or_else(|| RegistryError::Status {
                method: "POST",
                url: start.clone(),
                status: 404,
                body: "repository not found".into(),
            })?;
        Ok(self.location_of(&resp))
    }

    fn location_of(&self, resp: &ureq::Response) -> String {
        let location = resp.header("Location").unwrap_or_default().to_string();
        if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            self.url(&location)
        }
    }

    /// Sends the bytes at `offset` of an upload session; returns where to send the next ones.
    pub fn upload_chunk(
        &self,
        location: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<String, RegistryError> {
        let range = format!("{offset}-{}", offset + bytes.len() as u64 - 1);
        let length = bytes.len().to_string();
        let resp = self
            .call(
                "PATCH",
                location,
                &|r| {
                    r.set("Content-Type", "application/octet-stream")
                        .set("Content-Range", &range)
                        .set("Content-Length", &length)
                },
                Body::Bytes(bytes),
            )?
            .ok_or_else(|| RegistryError::Status {
                method: "PATCH",
                url: location.to_string(),
                status: 404,
                body: "upload session not found".into(),
            })?;
        Ok(self.location_of(&resp))
    }

    /// Closes an upload session as the blob `digest` (the registry checks it).
    pub fn finish_upload(&self, location: &str, digest: &OciDigest) -> Result<(), RegistryError> {
        let url = with_digest(location, digest);
        self.call("PUT", &url, &|r| r.set("Content-Length", "0"), Body::Empty)?
            .ok_or_else(|| RegistryError::Status {
                method: "PUT",
                url,
                status: 404,
                body: "upload session not found".into(),
            })?;
        Ok(())
    }

    /// Abandons an upload session.
    pub fn cancel_upload(&self, location: &str) {
        let _ = self.call("DELETE", location, &|r| r, Body::Empty);
    }

    /// A manifest (or index) by tag or digest, or `None` when there is no such reference.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let accept = [
            MEDIA_MANIFEST,
            MEDIA_INDEX,
            MEDIA_DOCKER_MANIFEST,
            MEDIA_DOCKER_LIST,
        ]
        .join(", ");
        let Some(resp) = self.call("GET", &url, &|r| r.set("Accept", &accept), Body::Empty)? else {
            return Ok(None);
        };
        let media_type = resp
            .header("Content-Type")
            .unwrap_or(MEDIA_MANIFEST)
            .to_string();
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(16 << 20)
            .read_to_end(&mut bytes)
            .map_err(|source| RegistryError::Read {
                url: url.clone(),
                source,
            })?;
        let digest = OciDigest::of(&bytes);
        Ok(Some(FetchedManifest {
            media_type,
            bytes,
            digest,
        }))
    }

    pub fn has_manifest(&self, repo: &str, reference: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let accept = [MEDIA_MANIFEST, MEDIA_INDEX].join(", ");
        Ok(self
            .call("HEAD", &url, &|r| r.set("Accept", &accept), Body::Empty)?
            .is_some())
    }

    /// The tags of a repository (every page); none when the repository does not exist.
    pub fn list_tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let mut tags = Vec::new();
        let mut next = Some(self.url(&format!("/v2/{repo}/tags/list?n=1000")));
        while let Some(url) = next.take() {
            let Some(resp) = self.call("GET", &url, &|r| r, Body::Empty)? else {
                break;
            };
            // `Link: </v2/repo/tags/list?last=x&n=1000>; rel="next"`
            next = resp
                .header("Link")
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(path, _)| {
                    if path.starts_with("http") {
                        path.to_string()
                    } else {
                        self.url(path)
                    }
                });
            let text = resp.into_string().map_err(|source| RegistryError::Read {
                url: url.clone(),
                source,
            })?;
            let body: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| RegistryError::Read {
                    url: url.clone(),
                    source: std::io::Error::other(e),
                })?;
            tags.extend(
                body.get("tags")
                    .and_then(|t| t.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string)),
            );
        }
        Ok(tags)
    }

    /// Deletes a manifest by digest (and every tag naming it). `Ok(false)` when it is gone
    /// already. A registry that refuses deletes answers 405 (`docker-registry` needs
    /// `storage: {delete: {enabled: true}}`).
    pub fn delete_manifest(&self, repo: &str, digest: &OciDigest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        Ok(self.call("DELETE", &url, &|r| r, Body::Empty)?.is_some())
    }

    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.call(
            "PUT",
            &url,
            &|r| r.set("Content-Type", media_type),
            Body::Bytes(bytes),
        )?
        .ok_or_else(|| RegistryError::Status {
            method: "PUT",
            url: url.clone(),
            status: 404,
            body: "repository not found".into(),
        })?;
        Ok(())
    }
}

fn with_digest(location: &str, digest: &OciDigest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

fn parse_challenge(params: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, n)) => (v, n),
                None => (quoted, ""),
            }
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.insert(key, value.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(input: &[u8]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in input.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|b| *b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_registry_is_asked_again_but_an_append_is_never_repeated() {
        let digest = OciDigest::of(b"x");
        let (endpoint, seen) = strata_testkit::scripted_http(vec![(500, "busy"), (200, "")]);
        let registry = Registry::new(endpoint.trim_start_matches("http://"));
        assert!(registry.has_blob("r", &digest).unwrap());
        assert_eq!(seen.join().unwrap(), ["HEAD", "HEAD"]);
        // A PATCH appends to an upload: sent once, whatever the answer.
        let (endpoint, seen) = strata_testkit::scripted_http(vec![(503, "busy")]);
        let registry = Registry::new(endpoint.trim_start_matches("http://"));
        let location = format!("{endpoint}/v2/r/blobs/uploads/u");
        assert!(registry.upload_chunk(&location, 0, b"chunk").is_err());
        assert_eq!(seen.join().unwrap(), ["PATCH"]);
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "user:pa ss"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes());
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn parses_bearer_challenges() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn loopback_hosts_use_plain_http() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(!is_loopback("ghcr.io"));
    }
}
