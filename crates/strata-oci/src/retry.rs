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
