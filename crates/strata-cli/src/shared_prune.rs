//! `strata cache prune --remote URL`: garbage collection of shared caches (`strata-cache`'s
//! `gc.rs` has the rules).

use strata_cache::{SharedPruneOptions, SharedPruneReport};
use strata_store::PruneOptions;

use crate::commands::{CliError, CliResult};
use crate::reporter::bytes;

pub(crate) fn prune_shared_caches(
    remotes: &[String],
    options: &PruneOptions,
    json: bool,
) -> CliResult {
    // Every URL is checked before any cache is touched.
    let mut backends = Vec::new();
    for url in remotes {
        let spec = strata_cache::parse_spec(url)
            .map_err(|e| CliError::bad_input(format!("error: --shared-cache: {e}")))?;
        if spec.read_only {
            return Err(CliError::bad_input(format!(
                "error: --shared-cache {url}: a read-only cache cannot be pruned"
            )));
        }
        let backend = strata_cache::open_backend(&spec)
            .map_err(|e| CliError::bad_input(format!("error: --shared-cache: {e}")))?;
        backends.push(backend);
    }
    let remote_options = SharedPruneOptions {
        older_than: options.older_than,
        max_bytes: options.max_bytes,
        grace: options.grace,
    };
    let mut reports = Vec::new();
    for backend in &backends {
        let report = strata_cache::prune_shared(backend.as_ref(), &remote_options)
            .map_err(|e| CliError::internal(&e))?;
        if !json {
            println!("{}", describe(&report));
        }
        reports.push(report);
    }
    if json {
        let rows: Vec<serde_json::Value> = reports.iter().map(to_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
    }
    Ok(0)
}

fn describe(r: &SharedPruneReport) -> String {
    let mut line = format!("{}: removed {} entries", r.location, r.entries);
    if r.server_collects_blobs {
        line.push_str(
            " (the registry's garbage collector reclaims their blobs and abandoned uploads)",
        );
    } else {
        line.push_str(&format!(
            ", {} blobs ({}), {} abandoned upload objects ({})",
            r.blobs,
            bytes(r.blob_bytes),
            r.uploads.objects,
            bytes(r.uploads.bytes)
        ));
    }
    if r.withdrawn > 0 {
        line.push_str(&format!(
            "; {} entries published meanwhile named a deleted blob and were removed",
            r.withdrawn
        ));
    }
    line
}

fn to_json(r: &SharedPruneReport) -> serde_json::Value {
    serde_json::json!({
        "location": r.location,
        "removed_entries": r.entries,
        "blobs": r.blobs,
        "blob_bytes": r.blob_bytes,
        "withdrawn_entries": r.withdrawn,
        "abandoned_upload_objects": r.uploads.objects,
        "abandoned_upload_bytes": r.uploads.bytes,
        "server_collects_blobs": r.server_collects_blobs,
        "remaining_bytes": r.remaining_bytes,
    })
}
