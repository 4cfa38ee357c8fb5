//! Tool cache documents in a shared cache's garbage collection (`gc.rs`).
//!
//! A document older than the tool caches' maximum age (`local.tool-cache-max-age`, RWX's 48 h
//! by default) is deleted: readers with the same setting ignore it anyway. Its age is the
//! `written_ms` it carries (what readers judge by); a document this version cannot read ages by
//! when the backend stored it. A live document keeps every blob it names, even after the entry
//! it copies is deleted: a machine restores a tool cache from the document alone.
//!
//! Racing a publisher: a publisher reads the entry, then writes the document naming the
//! entry's blobs, which may be old. So after deleting blobs the prune reads every document
//! again and deletes those naming a deleted blob, and a publisher checks those blobs after
//! writing its document and withdraws it if one is gone (`tool_cache.rs`): whichever comes
//! last sees the other's work, so no document is left naming a missing blob.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_oci::OciDigest;

use crate::backend::{BackendError, CacheBackend};
use crate::gc::named_digests;

/// When a stored document was written (ms since the epoch): its own `written_ms`, or, for one
/// this version cannot read, when the backend stored it.
pub(crate) fn written_ms(document: &[u8], stored: SystemTime) -> i64 {
    serde_json::from_slice::<serde_json::Value>(document)
        .ok()
        .and_then(|v| v.get("written_ms")?.as_i64())
        .unwrap_or_else(|| epoch_ms(stored))
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// Whether a document written at `written_ms` is past `max_age` at `now`.
pub(crate) fn expired(written_ms: i64, max_age: Duration, now: SystemTime) -> bool {
    let max = max_age.as_millis().min(i64::MAX as u128) as i64;
    epoch_ms(now).saturating_sub(written_ms) > max
}

/// What the first pass over the documents did.
#[derive(Debug, Default)]
pub(crate) struct ToolCachePass {
    /// Documents deleted for their age.
    pub(crate) expired: u64,
    /// Documents left.
    pub(crate) live: u64,
    /// The blobs the documents left name: they stay.
    pub(crate) named: HashSet<OciDigest>,
}

/// Deletes the documents past `max_age` and returns the blobs the others name.
pub(crate) fn expire(
    backend: &dyn CacheBackend,
    max_age: Duration,
    now: SystemTime,
) -> Result<ToolCachePass, BackendError> {
    let mut pass = ToolCachePass::default();
    for listed in backend.list_tool_caches()? {
        let Some(document) = backend.get_tool_cache(&listed.name)? else {
            continue;
        };
        if expired(written_ms(&document, listed.modified), max_age, now) {
            // Read again just before deleting: a publisher may have replaced it meanwhile.
            let again = backend.get_tool_cache(&listed.name)?;
            if again.as_deref() == Some(&document[..]) {
                backend.delete_tool_cache(&listed.name)?;
                pass.expired += 1;
                continue;
            }
            let Some(again) = again else {
                continue;
            };
            pass.named.extend(named_digests(&again));
            pass.live += 1;
            continue;
        }
        pass.named.extend(named_digests(&document));
        pass.live += 1;
    }
    Ok(pass)
}

/// After blobs were deleted: deletes the documents that name one of them (written by a
/// publisher during the prune). Returns how many went.
pub(crate) fn withdraw_naming(
    backend: &dyn CacheBackend,
    deleted: &HashSet<OciDigest>,
) -> Result<u64, BackendError> {
    let mut withdrawn = 0;
    for listed in backend.list_tool_caches()? {
        let Some(document) = backend.get_tool_cache(&listed.name)? else {
            continue;
        };
        if named_digests(&document).iter().any(|d| deleted.contains(d)) {
            backend.delete_tool_cache(&listed.name)?;
            withdrawn += 1;
        }
    }
    Ok(withdrawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_ages_by_its_own_time_or_else_by_when_it_was_stored() {
        let stored = UNIX_EPOCH + Duration::from_secs(50);
        assert_eq!(written_ms(br#"{"written_ms": 1234}"#, stored), 1234);
        assert_eq!(written_ms(b"not json", stored), 50_000);
        let hour = Duration::from_secs(3600);
        let now = UNIX_EPOCH + 49 * hour;
        assert!(expired(0, 48 * hour, now));
        assert!(!expired(2 * 3_600_000, 48 * hour, now));
    }
}
