//! `strata cache ls | stats | verify | prune`: the cache's lifecycle.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use strata_store::{LocalCache, PruneOptions};

use crate::commands::{CliError, CliResult};
use crate::reporter::bytes;

#[derive(clap::Subcommand)]
pub(crate) enum CacheCommand {
    /// List the entries of the local cache, most recently used first, then its tool caches.
    Ls {
        #[command(flatten)]
        dir: CacheDirArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Totals: entries, layers, bytes on disk by kind, hits and time saved.
    Stats {
        #[command(flatten)]
        dir: CacheDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Check every layer, log and workspace blob against its digest, and every entry for what
    /// it names. Exits 1 when something is wrong (and was not repaired).
    Verify {
        #[command(flatten)]
        dir: CacheDirArg,
        /// Remove what is wrong and the entries naming it (their tasks run again).
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Collect garbage: entries not used for AGE, least recently used entries beyond SIZE,
    /// and everything nothing names. With --remote, prune that shared cache instead.
    Prune {
        #[command(flatten)]
        dir: CacheDirArg,
        /// Evict least recently used entries until the cache fits (`500MB`, `20GB`, `1.5GiB`).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Remove entries last used (for a shared cache: published) longer ago than this
        /// (`7d`, `12h`, `30 days`).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Keep what nothing names yet for this long: a concurrent run or publisher may be
        /// about to name it (default 1h).
        #[arg(long, value_name = "AGE")]
        grace: Option<String>,
        /// Prune this shared cache (repeatable): s3://..., oci://..., file:///DIR.
        #[arg(long = "shared-cache", alias = "remote", value_name = "URL")]
        remotes: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make a key pair for signing shared-cache entries.
    ///
    /// Writes NAME.secret (readable by its owner only; give it to publishers as
    /// $STRATA_SIGNING_KEY) and NAME.public (trusted with `trusted-keys` or
    /// $STRATA_TRUSTED_KEYS), both `NAME:BASE64` as Nix writes binary-cache keys, and prints the
    /// public key.
    Keygen {
        /// The key's name, filed with each signature (letters, digits, `.`, `_`, `-`;
        /// for example `ci-main-1`).
        name: String,
        /// Where to write the two files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
pub(crate) struct CacheDirArg {
    /// The cache directory (default: $STRATA_CACHE_DIR, /var/cache/strata as root).
    #[arg(long, env = "STRATA_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

impl CacheDirArg {
    /// Opens the local cache; one that does not exist is an error, not created.
    fn open(&self) -> Result<LocalCache, CliError> {
        let dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(strata_store::default_cache_dir);
        if !dir.join("index.sqlite").is_file() {
            return Err(CliError::bad_input(format!(
                "error: {} is not a strata cache (no index.sqlite)",
                dir.display()
            )));
        }
        LocalCache::open(&dir).map_err(|e| CliError::internal(&e))
    }
}

pub(crate) fn cache(command: CacheCommand) -> CliResult {
    match command {
        CacheCommand::Keygen { name, dir } => crate::signing::keygen(&name, &dir),
        CacheCommand::Ls { dir, json } => ls(&dir.open()?, json),
        CacheCommand::Stats { dir, json } => stats(&dir.open()?, json),
        CacheCommand::Verify { dir, repair, json } => verify(&dir.open()?, repair, json),
        CacheCommand::Prune {
            dir,
            max_size,
            older_than,
            grace,
            remotes,
            json,
        } => {
            let options =
                prune_options(max_size.as_deref(), older_than.as_deref(), grace.as_deref())?;
            if remotes.is_empty() {
                prune(&dir.open()?, &options, json)
            } else {
                crate::shared_prune::prune_shared_caches(&remotes, &options, json)
            }
        }
    }
}

fn prune_options(
    max_size: Option<&str>,
    older_than: Option<&str>,
    grace: Option<&str>,
) -> Result<PruneOptions, CliError> {
    let age = |flag: &str, text: &str| {
        strata_pipeline::parse_duration(text).map_err(|e| {
            CliError::bad_input(format!("error: {flag}: {e} (write `7d`, `12h`, `30 days`)"))
        })
    };
    Ok(PruneOptions {
        max_bytes: max_size
            .map(|s| {
                strata_pipeline::parse_size(s)
                    .map_err(|e| CliError::bad_input(format!("error: --max-size: {e}")))
            })
            .transpose()?,
        older_than: older_than.map(|t| age("--older-than", t)).transpose()?,
        grace: match grace {
            Some(t) => age("--grace", t)?,
            None => strata_store::DEFAULT_GRACE,
        },
        tool_cache_max_age: crate::commands::tool_cache_max_age()
            .unwrap_or(strata_store::DEFAULT_TOOL_CACHE_MAX_AGE),
    })
}

/// `3m ago`, `2h ago`, `5d ago`.
pub(crate) fn ago(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s ago")
    } else if s < 3600 {
        format!("{}m ago", s / 60)
    } else if s < 86400 {
        format!("{}h ago", s / 3600)
    } else {
        format!("{}d ago", s / 86400)
    }
}

pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{}m", d.as_secs() / 3600, (d.as_secs() % 3600) / 60)
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn internal(e: strata_store::StoreError) -> CliError {
    CliError::internal(&e)
}

fn ls(cache: &LocalCache, json: bool) -> CliResult {
    let entries = cache.index().entry_usage().map_err(internal)?;
    let tool_caches = crate::tool_cache_listing::usage(cache)?;
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "task": e.task,
                    "pipeline": e.pipeline,
                    "key": e.key.to_hex(),
                    "layer": e.layer.to_hex(),
                    "layer_bytes": e.layer_bytes,
                    "created_at_ms": epoch_ms(e.created_at),
                    "last_used_at_ms": epoch_ms(e.last_used_at),
                    "hits": e.hits,
                    "duration_ms": e.duration.as_millis() as u64,
                    "saved_ms": e.saved().as_millis() as u64,
                })
            })
            .collect();
        let value = serde_json::json!({
            "entries": rows,
            "tool_caches": crate::tool_cache_listing::json(&tool_caches),
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("json"));
        return Ok(0);
    }
    if entries.is_empty() {
        println!("the cache at {} has no entries", cache.root().display());
        crate::tool_cache_listing::print_table(&tool_caches);
        return Ok(0);
    }
    let task_w = entries
        .iter()
        .map(|e| e.task.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let file = |p: &str| {
        std::path::Path::new(p)
            .file_name()
            .map_or(p.to_string(), |f| f.to_string_lossy().into_owned())
    };
    let pipe_w = entries
        .iter()
        .map(|e| file(&e.pipeline).len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:task_w$}  {:pipe_w$}  {:12}  {:>9}  {:>9}  {:>9}  {:>5}  {:>7}",
        "TASK", "PIPELINE", "KEY", "SIZE", "CREATED", "USED", "HITS", "SAVED"
    );
    for e in &entries {
        let size = e.layer_bytes.map_or("missing".to_string(), bytes);
        println!(
            "{:task_w$}  {:pipe_w$}  {:12}  {:>9}  {:>9}  {:>9}  {:>5}  {:>7}",
            e.task,
            file(&e.pipeline),
            e.key.short(),
            size,
            ago(e.created_at),
            ago(e.last_used_at),
            e.hits,
            duration(e.saved()),
        );
    }
    crate::tool_cache_listing::print_table(&tool_caches);
    Ok(0)
}

fn stats(cache: &LocalCache, json: bool) -> CliResult {
    let s = cache.stats().map_err(internal)?;
    let tool_caches = crate::tool_cache_listing::totals(&crate::tool_cache_listing::usage(cache)?);
    if json {
        let value = serde_json::json!({
            "cache": cache.root().display().to_string(),
            "entries": s.entries,
            "layers": s.layers,
            "logs": s.logs,
            "workspace_blobs": s.files,
            "bytes": {
                "layers": s.disk.layers,
                "logs": s.disk.logs,
                "workspace_blobs": s.disk.files,
                "failed": s.disk.failed,
                "scratch": s.disk.scratch,
                "index": s.disk.index,
                "total": s.disk.total(),
            },
            "hits": s.hits,
            "saved_ms": s.saved.as_millis() as u64,
            "tool_caches": {
                "count": tool_caches.count,
                // Part of `bytes.layers`: a tool cache holds a committed layer.
                "layer_bytes": tool_caches.layer_bytes,
            },
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("json"));
        return Ok(0);
    }
    println!("cache     {}", cache.root().display());
    println!("entries   {}", s.entries);
    println!("hits      {} (saved {})", s.hits, duration(s.saved));
    println!("on disk   {}", bytes(s.disk.total()));
    println!(
        "  layers           {:>9}  ({} layers)",
        bytes(s.disk.layers),
        s.layers
    );
    println!(
        "  logs             {:>9}  ({} logs)",
        bytes(s.disk.logs),
        s.logs
    );
    println!(
        "  workspace blobs  {:>9}  ({} files)",
        bytes(s.disk.files),
        s.files
    );
    println!("  failed tasks     {:>9}", bytes(s.disk.failed));
    println!("  scratch          {:>9}", bytes(s.disk.scratch));
    println!("  index            {:>9}", bytes(s.disk.index));
    println!(
        "tool caches {} (their layers: {}, counted in layers above)",
        tool_caches.count,
        bytes(tool_caches.layer_bytes)
    );
    Ok(0)
}

fn verify(cache: &LocalCache, repair: bool, json: bool) -> CliResult {
    let r = cache.verify(repair).map_err(internal)?;
    let code = if r.problems.is_empty() || repair {
        0
    } else {
        1
    };
    if json {
        let value = serde_json::json!({
            "layers": r.layers,
            "logs": r.logs,
            "workspace_blobs": r.files,
            "entries": r.entries,
            "problems": r.problems.iter().map(|p| serde_json::json!({
                "kind": p.kind(),
                "message": p.to_string(),
            })).collect::<Vec<_>>(),
            "repaired": repair,
            "removed_entries": r.removed_entries.iter().map(|(task, key)| serde_json::json!({
                "task": task, "key": key,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("json"));
        return Ok(code);
    }
    println!(
        "checked {} layers, {} logs, {} workspace blobs, {} entries",
        r.layers, r.logs, r.files, r.entries
    );
    for p in &r.problems {
        println!("  {p}");
    }
    if r.problems.is_empty() {
        println!("everything matches its digest");
    } else if repair {
        println!(
            "repaired: removed what was wrong and {} entries naming it (their tasks run again)",
            r.removed_entries.len()
        );
    } else {
        println!(
            "{} problems; `strata cache verify --repair` removes them and the entries naming them",
            r.problems.len()
        );
    }
    Ok(code)
}

fn prune(cache: &LocalCache, options: &PruneOptions, json: bool) -> CliResult {
    let r = cache.prune(options).map_err(internal)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&prune_json(&r, options)).expect("json")
        );
        return Ok(0);
    }
    for line in prune_lines(&r, options) {
        println!("{line}");
    }
    Ok(0)
}

pub(crate) fn prune_json(
    r: &strata_store::PruneReport,
    options: &PruneOptions,
) -> serde_json::Value {
    serde_json::json!({
        "removed_entries": r.entries.iter().map(|(task, key)| serde_json::json!({
            "task": task, "key": key,
        })).collect::<Vec<_>>(),
        "layers": r.layers,
        "logs": r.logs,
        "workspace_blobs": r.files,
        "failed": r.failed,
        "locks": r.locks,
        "tool_caches": r.tool_caches,
        "freed_bytes": {
            "layers": r.freed.layers,
            "logs": r.freed.logs,
            "workspace_blobs": r.freed.files,
            "failed": r.freed.failed,
            "scratch": r.freed.scratch,
            "total": r.freed.total(),
        },
        "before_bytes": r.before,
        "after_bytes": r.after,
        "max_bytes": options.max_bytes,
        "over_budget": r.over_budget,
    })
}

pub(crate) fn prune_lines(r: &strata_store::PruneReport, options: &PruneOptions) -> Vec<String> {
    let mut lines = vec![format!(
        "removed {} entries, {} layers, {} logs, {} workspace blobs, {} failed dirs, {} lock files, {} tool caches: freed {} ({} -> {})",
        r.entries.len(),
        r.layers,
        r.logs,
        r.files,
        r.failed,
        r.locks,
        r.tool_caches,
        bytes(r.freed.total()),
        bytes(r.before),
        bytes(r.after),
    )];
    if r.over_budget {
        lines.push(format!(
            "the cache is still over its budget of {}: what is left is used by running tasks or was used since they began",
            bytes(options.max_bytes.unwrap_or(0))
        ));
    }
    lines
}
