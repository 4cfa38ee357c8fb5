//! Garbage collection of a shared cache (`strata cache prune --remote URL`).
//!
//! 1. Entries published before `--older-than` are deleted (a shared cache does not know when
//!    an entry was last read: it ages by publication, and a popular task is published again
//!    by the first run that misses it). With `--max-size`, the oldest entries go until the
//!    blobs the others name fit.
//! 2. Blobs no remaining entry names are deleted once older than the grace period. A publisher
//!    uploads blobs before the entry naming them, so a blob it is about to name is younger than
//!    the grace period and stays.
//! 3. A publisher may also name a blob that was already there (its upload skipped) while this
//!    prune deletes it. Both sides close that race: after deleting blobs the prune lists the
//!    entries again and deletes any that names a blob it deleted, and a publisher checks the
//!    blobs it did not upload itself after writing its entry, withdrawing the entry if one is
//!    gone (`chain.rs`). Whichever comes last sees the other's work, so no entry is left naming
//!    a missing blob; readers treat one as a miss meanwhile.
//! 4. Tool cache documents past the tool caches' maximum age are deleted first; the others
//!    keep every blob they name, and are checked again after blobs were deleted
//!    (`gc_tool_caches.rs`).
//! 5. Uploads never published are removed once older than the grace period: S3 chunks under
//!    `chunks/<upload>/` that no `.chunks` list names, a directory cache's `tmp/`. A registry's
//!    upload sessions (`_uploads`) and unreferenced blobs are the registry's own business (its
//!    garbage collector reclaims them once their manifests are deleted).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use strata_key::CacheKey;
use strata_oci::OciDigest;

use crate::backend::{BackendError, CacheBackend, Listed, Swept};

#[derive(Debug, Clone, Copy)]
pub struct SharedPruneOptions {
    pub older_than: Option<Duration>,
    pub max_bytes: Option<u64>,
    pub grace: Duration,
    /// Tool cache documents written longer ago are deleted (`local.tool-cache-max-age`).
    pub tool_cache_max_age: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct SharedPruneReport {
    pub location: String,
    pub entries: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Entries published during the prune that named a blob it deleted, deleted in turn.
    pub withdrawn: u64,
    /// Tool cache documents deleted for their age.
    pub tool_caches: u64,
    /// Tool cache documents left (their blobs stay).
    pub live_tool_caches: u64,
    /// Tool cache documents written during the prune that named a blob it deleted.
    pub withdrawn_tool_caches: u64,
    pub uploads: Swept,
    /// Whether the server reclaims unreferenced blobs itself (a registry).
    pub server_collects_blobs: bool,
    /// Bytes of blobs named by the entries left (when the backend lists blobs).
    pub remaining_bytes: Option<u64>,
}

/// The blob digests an entry document names, whatever its schema: every `sha256:<64 hex>` in
/// it. Generous on purpose: keeping a blob too many is cheap, deleting a named one is not.
pub(crate) fn named_digests(document: &[u8]) -> HashSet<OciDigest> {
    let text = String::from_utf8_lossy(document);
    let mut out = HashSet::new();
    let mut rest = text.as_ref();
    while let Some(at) = rest.find("sha256:") {
        let candidate = rest[at..].get(..7 + 64).unwrap_or_default();
        if let Some(d) = OciDigest::parse(candidate) {
            out.insert(d);
        }
        rest = &rest[at + 7..];
    }
    out
}

/// Which entries go (indices into `entries`, oldest first): those published before `cutoff`,
/// then the oldest until the blobs the rest name add up to at most `max_bytes`.
pub(crate) fn select_entries(
    entries: &[Listed<CacheKey>],
    names: &[HashSet<OciDigest>],
    blob_sizes: &HashMap<OciDigest, u64>,
    cutoff: Option<SystemTime>,
    max_bytes: Option<u64>,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| entries[i].modified);
    let mut refs: HashMap<&OciDigest, usize> = HashMap::new();
    for set in names {
        for d in set {
            *refs.entry(d).or_default() += 1;
        }
    }
    let mut total: u64 = refs
        .keys()
        .map(|d| blob_sizes.get(*d).copied().unwrap_or(0))
        .sum();
    let mut chosen = Vec::new();
    for i in order {
        let old = cutoff.is_some_and(|c| entries[i].modified < c);
        let over = max_bytes.is_some_and(|m| total > m);
        if !old && !over {
            continue;
        }
        chosen.push(i);
        for d in &names[i] {
            let n = refs.get_mut(d).expect("counted");
            *n -= 1;
            if *n == 0 {
                total -= blob_sizes.get(d).copied().unwrap_or(0).min(total);
            }
        }
    }
    chosen
}

/// Prunes one shared cache (see the module's doc).
pub fn prune_shared(
    backend: &dyn CacheBackend,
    options: &SharedPruneOptions,
) -> Result<SharedPruneReport, BackendError> {
    let started = SystemTime::now();
    let mut report = SharedPruneReport {
        location: backend.location(),
        ..Default::default()
    };
    // Tool caches first: the blobs the documents left name are kept whatever happens to the
    // entries they copy.
    let tool_caches = crate::gc_tool_caches::expire(backend, options.tool_cache_max_age, started)?;
    report.tool_caches = tool_caches.expired;
    report.live_tool_caches = tool_caches.live;
    let entries = backend.list_entries()?;
    let mut names = Vec::with_capacity(entries.len());
    for e in &entries {
        let doc = backend.entry_document(&e.name)?.unwrap_or_default();
        names.push(named_digests(&doc));
    }
    let blobs = backend.list_blobs()?;
    report.server_collects_blobs = blobs.is_none();
    if blobs.is_none() && options.max_bytes.is_some() {
        return Err(BackendError::Unsupported {
            location: backend.location(),
            action: "prune to a size: a registry does not list its blobs (use --older-than)".into(),
        });
    }
    let sizes: HashMap<OciDigest, u64> = blobs.iter().flatten().map(|b| (b.name, b.size)).collect();
    let cutoff = options.older_than.and_then(|a| started.checked_sub(a));
    let doomed = select_entries(&entries, &names, &sizes, cutoff, options.max_bytes);
    let doomed_set: HashSet<usize> = doomed.iter().copied().collect();
    for &i in &doomed {
        backend.delete_entry(&entries[i].name)?;
        report.entries += 1;
    }
    let kept: HashSet<CacheKey> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| !doomed_set.contains(i))
        .map(|(_, e)| e.name)
        .collect();
    let mut named: HashSet<OciDigest> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| !doomed_set.contains(i))
        .flat_map(|(_, set)| set.iter().copied())
        .collect();
    named.extend(tool_caches.named);
    let young = started
        .checked_sub(options.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if let Some(blobs) = blobs {
        let mut deleted = HashSet::new();
        for blob in &blobs {
            if named.contains(&blob.name) || blob.modified >= young {
                continue;
            }
            backend.delete_blob(&blob.name)?;
            deleted.insert(blob.name);
            report.blobs += 1;
            report.blob_bytes += blob.size;
        }
        // Entries published meanwhile may name what was just deleted (their blob was there
        // when they checked): they go too, so none is left naming a missing blob.
        if !deleted.is_empty() {
            for e in backend.list_entries()? {
                if kept.contains(&e.name) {
                    // Listed and kept before: what it names was not deleted.
                    continue;
                }
                let doc = backend.entry_document(&e.name)?.unwrap_or_default();
                if named_digests(&doc).iter().any(|d| deleted.contains(d)) {
                    backend.delete_entry(&e.name)?;
                    report.withdrawn += 1;
                }
            }
            report.withdrawn_tool_caches =
                crate::gc_tool_caches::withdraw_naming(backend, &deleted)?;
        }
        report.remaining_bytes = Some(
            named
                .iter()
                .map(|d| sizes.get(d).copied().unwrap_or(0))
                .sum(),
        );
    }
    report.uploads = backend.clean_uploads(young)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> OciDigest {
        OciDigest::of(&[n])
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::parse(&format!("{n:02x}").repeat(32)).unwrap()
    }

    fn listed(n: u8, secs: u64) -> Listed<CacheKey> {
        Listed {
            name: key(n),
            size: 1,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn every_digest_an_entry_names_is_found_whatever_its_schema() {
        let (a, b) = (digest(1), digest(2));
        let doc = format!(r#"{{"future": {{"blobs": ["{a}"]}}, "log": "{b}", "x": "sha256:zz"}}"#);
        assert_eq!(named_digests(doc.as_bytes()), HashSet::from([a, b]));
        assert!(named_digests(b"sha256:").is_empty());
    }

    #[test]
    fn old_entries_go_then_the_oldest_until_the_rest_fit() {
        let entries = vec![listed(1, 100), listed(2, 300), listed(3, 200)];
        let names = vec![
            HashSet::from([digest(1), digest(9)]),
            HashSet::from([digest(2), digest(9)]),
            HashSet::from([digest(3)]),
        ];
        let sizes = HashMap::from([
            (digest(1), 10),
            (digest(2), 10),
            (digest(3), 10),
            (digest(9), 5),
        ]);
        let at = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(
            select_entries(&entries, &names, &sizes, at(150), None),
            vec![0]
        );
        assert!(select_entries(&entries, &names, &sizes, at(50), None).is_empty());
        // 35 bytes named; at most 15: the two oldest go, the shared blob stays with the third.
        assert_eq!(
            select_entries(&entries, &names, &sizes, None, Some(15)),
            vec![0, 2]
        );
    }
}
