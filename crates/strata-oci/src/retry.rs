//! When to send an HTTP request again. Registries and object stores answer a busy moment with
//! 500, 503 or 429, or drop a connection, and expect clients to try again (every SDK does); a
//! refusal (4xx) is final, and so is a server that cannot be reached at all, so that a cache that
//! is down costs one warning, not a wait.

use std::time::Duration;

/// Tries per request.
pub const ATTEMPTS: u32 = 3;
/// The pause after the first failure; each later one is four times longer.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Whether a failed request may succeed if sent again.
pub fn transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Status(code, _) => *code >= 500 || *code == 429,
        ureq::Error::Transport(t) => !matches!(
            t.kind(),
            ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns | ureq::ErrorKind::InvalidUrl
        ),
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has been tried `ATTEMPTS` times, with a
/// growing pause between tries.
pub fn with_retries<T, E>(
    mut attempt: impl FnMut() -> Result<T, E>,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let mut pause = FIRST_BACKOFF;
    for _ in 1..ATTEMPTS {
        match attempt() {
            Err(e) if transient(&e) => {
                std::thread::sleep(pause);
                pause *= 4;
            }
            done => return done,
        }
    }
    attempt()
}

/// A request that failed below HTTP (no connection, a reset, a timeout), described without the
/// query of its URL: a presigned URL (S3, or a registry's blob redirect) carries a signature
/// that is a credential for its lifetime, and errors end up in logs and CI output.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TransportFailure(String);

impl TransportFailure {
    pub fn new(t: &ureq::Transport) -> TransportFailure {
        let mut text = t.kind().to_string();
        if let Some(url) = t.url() {
            let mut url = url.clone();
            url.set_query(None);
            url.set_fragment(None);
            text.push_str(&format!(" ({url})"));
        }
        if let Some(message) = t.message() {
            text.push_str(&format!(": {message}"));
        }
        let mut source = std::error::Error::source(t);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        TransportFailure(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_request_is_described_without_the_signature_in_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url =
            format!("http://127.0.0.1:{port}/b/o?X-Amz-Signature=secret123&X-Amz-Credential=k");
        let Err(ureq::Error::Transport(t)) = ureq::get(&url).call() else {
            panic!("a closed port must fail to connect");
        };
        let text = TransportFailure::new(&t).to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}/b/o")), "{text}");
        assert!(
            !text.contains("secret123") && !text.contains("X-Amz"),
            "{text}"
        );
    }
}
