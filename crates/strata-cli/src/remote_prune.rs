//! `strata cache prune --remote URL`: garbage collection of shared caches.

use strata_store::PruneOptions;

use crate::commands::{CliError, CliResult};

pub(crate) fn prune_remotes(
    _remotes: &[String],
    _options: &PruneOptions,
    _json: bool,
) -> CliResult {
    Err(CliError::bad_input(
        "error: pruning shared caches is not supported yet",
    ))
}
