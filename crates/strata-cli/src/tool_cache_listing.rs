//! The tool caches in `strata cache ls` and `strata cache stats`: name, vault, the task that
//! wrote it, its age, last use and layer size. A tool cache's layer is usually also its task's
//! entry's layer, so `stats` says how much of the layers' bytes tool caches hold rather than
//! adding them to the total.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_store::{LocalCache, ToolCacheUsage};

use crate::cache::ago;
use crate::commands::CliError;
use crate::reporter::bytes;

/// The maximum age readers use: the config file's, else RWX's 48 hours.
fn max_age() -> Duration {
    crate::commands::tool_cache_max_age().unwrap_or(strata_store::DEFAULT_TOOL_CACHE_MAX_AGE)
}

pub(crate) fn usage(cache: &LocalCache) -> Result<Vec<ToolCacheUsage>, CliError> {
    cache
        .tool_caches()
        .usage(max_age())
        .map_err(|e| CliError::internal(&e))
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub(crate) fn json(tool_caches: &[ToolCacheUsage]) -> serde_json::Value {
    tool_caches
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.record.id.name,
                "vault": t.record.id.vault,
                "task": t.record.task,
                "layer": t.record.layer.to_hex(),
                "layer_bytes": t.layer_bytes,
                "written_at_ms": t.record.written_ms,
                "last_used_at_ms": t.used_ms,
                "expired": t.expired,
            })
        })
        .collect()
}

/// The table under the entries' (nothing when there are no tool caches).
pub(crate) fn print_table(tool_caches: &[ToolCacheUsage]) {
    if tool_caches.is_empty() {
        return;
    }
    let width = |f: fn(&ToolCacheUsage) -> usize, title: &str| {
        tool_caches
            .iter()
            .map(f)
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let name_w = width(|t| t.record.id.name.len(), "TOOL CACHE");
    let vault_w = width(|t| t.record.id.vault.len(), "VAULT");
    let task_w = width(|t| t.record.task.len(), "TASK");
    println!();
    println!(
        "{:name_w$}  {:vault_w$}  {:task_w$}  {:>9}  {:>9}  {:>9}",
        "TOOL CACHE", "VAULT", "TASK", "SIZE", "WRITTEN", "USED"
    );
    for t in tool_caches {
        let written = match t.expired {
            true => format!("{} (expired)", ago(at(t.record.written_ms))),
            false => ago(at(t.record.written_ms)),
        };
        println!(
            "{:name_w$}  {:vault_w$}  {:task_w$}  {:>9}  {:>9}  {:>9}",
            t.record.id.name,
            t.record.id.vault,
            t.record.task,
            t.layer_bytes.map_or("missing".to_string(), bytes),
            written,
            ago(at(t.used_ms)),
        );
    }
}

/// `stats`: how many tool caches, and the bytes of their (distinct) layers.
pub(crate) struct ToolCacheTotals {
    pub(crate) count: usize,
    pub(crate) layer_bytes: u64,
}

pub(crate) fn totals(tool_caches: &[ToolCacheUsage]) -> ToolCacheTotals {
    let mut seen = std::collections::HashSet::new();
    ToolCacheTotals {
        count: tool_caches.len(),
        layer_bytes: tool_caches
            .iter()
            .filter(|t| seen.insert(t.record.layer))
            .filter_map(|t| t.layer_bytes)
            .sum(),
    }
}
