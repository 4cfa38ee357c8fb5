//! `strata logs`: the log of a task's latest run, failed or not, with a line on stderr saying
//! which run it is (stdout is the log alone, to pipe).
//!
//! The latest run is the newest run record (`record.rs`) in which the task finished; without
//! one (records pruned, or older runs), the newer of the task's latest entry (a run that
//! passed) and its kept failed log.

use std::time::{Duration, SystemTime};

use strata_store::{Entry, LocalCache};

use crate::commands::{CliError, CliResult};
use crate::record::RunView;

/// `2026-12-01 21:40:12 UTC` for ms since the epoch.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", Duration::from_millis(ms).as_secs_f64())
}

/// What `strata logs` prints: a line about the run, then the log from `source`.
enum Shown {
    Entry(Box<Entry>),
    FailedLog(std::path::PathBuf),
    Nothing,
}

pub(crate) fn logs(cache: &LocalCache, pipeline: &std::path::Path, task: &str) -> CliResult {
    let id = pipeline.display().to_string();
    let entry = cache
        .index()
        .latest_for_task(&id, task)
        .map_err(|e| CliError::internal(&e))?;
    let failed = cache.history().failed_log(pipeline, task);
    let latest_run = cache
        .history()
        .run_records(pipeline)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| RunView::read(&p).ok())
        .find(|v| {
            v.task(task)
                .is_some_and(|t| !matches!(t.status.as_str(), "not-run"))
        });
    let (about, shown) = match &latest_run {
        Some(run) => {
            let t = run.task(task).expect("found above");
            let when = crate::logs::utc(run.started_ms);
            match t.status.as_str() {
                "failed" => {
                    let reason = t.reason.clone().unwrap_or_default();
                    // A failure before the command ran leaves no log (the kept one is older).
                    let log = failed
                        .as_ref()
                        .filter(|(_, at)| epoch_ms(*at) + 1000 >= run.started_ms)
                        .map(|(p, _)| p.clone());
                    let about = format!(
                        "`{task}` failed in the run of {when} after {}: {reason}",
                        secs(t.duration_ms)
                    );
                    match log {
                        Some(p) => (about, Shown::FailedLog(p)),
                        None => (
                            format!("{about} (it failed before its command ran: no log)"),
                            Shown::Nothing,
                        ),
                    }
                }
                "ran" => {
                    // The entry of the key it ran (none for `cache: false`, whose log is not
                    // kept; never an older entry's log under this run's heading).
                    let e = t
                        .key
                        .as_deref()
                        .and_then(strata_key::CacheKey::parse)
                        .and_then(|k| cache.index().lookup(&k).ok().flatten());
                    let about = format!(
                        "`{task}` passed in the run of {when}, in {}",
                        secs(t.duration_ms)
                    );
                    match e {
                        Some(e) => (about, Shown::Entry(Box::new(e))),
                        None => (
                            format!("{about} (its log was not kept: the task stores no entry)"),
                            Shown::Nothing,
                        ),
                    }
                }
                "restored" => {
                    let e = t
                        .key
                        .as_deref()
                        .and_then(strata_key::CacheKey::parse)
                        .and_then(|k| cache.index().lookup(&k).ok().flatten());
                    let built = e.as_ref().map_or(String::new(), |e| {
                        format!(
                            "; this log is of the run that built it, on {}, in {}",
                            utc(epoch_ms(e.created_at)),
                            secs(e.duration.as_millis() as u64)
                        )
                    });
                    (
                        format!(
                            "`{task}` was restored from the cache ({}) in the run of {when}{built}",
                            t.from.as_deref().unwrap_or("local")
                        ),
                        e.map_or(Shown::Nothing, |e| Shown::Entry(Box::new(e))),
                    )
                }
                other => (
                    format!(
                        "`{task}` was {other} in the run of {when}{}: it has no log from that run",
                        t.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    ),
                    Shown::Nothing,
                ),
            }
        }
        None => match (entry, failed) {
            (Some(e), Some((path, at))) if epoch_ms(at) > epoch_ms(e.created_at) => (
                format!(
                    "`{task}` failed in its latest run, on {}",
                    utc(epoch_ms(at))
                ),
                Shown::FailedLog(path),
            ),
            (Some(e), _) => (
                format!(
                    "`{task}` passed in its latest run, on {}, in {}",
                    utc(epoch_ms(e.created_at)),
                    secs(e.duration.as_millis() as u64)
                ),
                Shown::Entry(Box::new(e)),
            ),
            (None, Some((path, at))) => (
                format!(
                    "`{task}` failed in its latest run, on {}",
                    utc(epoch_ms(at))
                ),
                Shown::FailedLog(path),
            ),
            (None, None) => {
                return Err(CliError::bad_input(format!(
                    "error: `{task}` has no run with a log yet"
                )));
            }
        },
    };
    eprintln!("{about}");
    // Streamed: a log may be gigabytes.
    let mut log = match shown {
        Shown::Entry(e) => cache
            .content()
            .open_log(&e.log)
            .map_err(|e| CliError::internal(&e))?,
        Shown::FailedLog(p) => std::fs::File::open(&p).map_err(|e| CliError::internal(&e))?,
        Shown::Nothing => return Ok(0),
    };
    let _ = std::io::copy(&mut log, &mut std::io::stdout().lock());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
    }
}
