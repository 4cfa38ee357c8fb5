//! The record of a run: its events as they happen, with when, kept in the cache
//! (`history/<pipeline>/runs/`, see `strata-store`'s `history.rs`), and read back as a
//! [`RunView`] by the HTML report, the GitHub summary and `strata logs`.
//!
//! A record is JSON lines: first `{"run": {...}}` (the pipeline and its DAG), then
//! `{"at_ms": N, "e": EVENT}` per event (ms since the run began; task output is left out, the
//! logs have it), then `{"failed_log": {...}}` with the tail of each failed task's log (the
//! kept failed log is replaced by the task's next failure; the record keeps its own). Every
//! string is masked with the run's secrets before it is written.
//!
//! Records are read as untyped JSON so that an older or newer record (events gain fields)
//! still reads.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};
use strata_engine::{Event, Reporter};
use strata_pipeline::Pipeline;
use strata_store::{LocalCache, RunRecordWriter};

/// How much of a log a record or a report holds: its tail.
pub(crate) const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// Writes the events of a run into its record as they happen.
pub(crate) struct Recorder {
    writer: Mutex<Option<RunRecordWriter>>,
    start: Instant,
    /// Each secret as it appears raw and inside a JSON string.
    secrets: Vec<String>,
}

/// Masks each secret (raw, and as JSON escapes it) in `text`.
fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Recorder {
    /// Starts the record of a run of `pipeline`. A record that cannot be written is a warning:
    /// the run goes on without it.
    pub(crate) fn start(
        cache: &LocalCache,
        pipeline: &Pipeline,
        secret_values: &[String],
    ) -> Result<Recorder, strata_store::StoreError> {
        let started_ms = now_ms();
        let mut secrets = Vec::new();
        for s in secret_values.iter().flat_map(|s| s.lines()) {
            if s.len() < 3 {
                continue;
            }
            secrets.push(s.to_string());
            let escaped = serde_json::to_string(s).expect("a string serializes");
            let escaped = escaped[1..escaped.len() - 1].to_string();
            if escaped != s {
                secrets.push(escaped);
            }
        }
        let mut writer = cache
            .history()
            .run_record_writer(&pipeline.path, started_ms)?;
        let tasks: Vec<Value> = pipeline
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "name": t.name.as_str(),
                    "uses": t.uses.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
                    "after": t.after.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
                    "line": t.at.line,
                })
            })
            .collect();
        let header = json!({"run": {
            "pipeline": pipeline.path.display().to_string(),
            "started_ms": started_ms,
            "tasks": tasks,
        }});
        writer.write_line(&mask(&header.to_string(), &secrets))?;
        Ok(Recorder {
            writer: Mutex::new(Some(writer)),
            start: Instant::now(),
            secrets,
        })
    }

    fn line(&self, value: &Value) {
        let mut w = self.writer.lock().expect("record lock");
        if let Some(writer) = w.as_mut()
            && writer
                .write_line(&mask(&value.to_string(), &self.secrets))
                .is_err()
        {
            // A full disk: the run goes on, without its record.
            *w = None;
        }
    }

    /// Adds the tail of each failed task's kept log and publishes the record.
    pub(crate) fn finish(
        &self,
        cache: &LocalCache,
        pipeline: &Path,
        failed: &[String],
    ) -> Option<std::path::PathBuf> {
        for task in failed {
            if let Some((path, _)) = cache.history().failed_log(pipeline, task)
                && let Some((tail, omitted)) = read_tail(&path, LOG_TAIL_BYTES)
            {
                self.line(&json!({"failed_log": {
                    "task": task, "tail": tail, "omitted_bytes": omitted,
                }}));
            }
        }
        let writer = self.writer.lock().expect("record lock").take()?;
        writer.finish().ok()
    }
}

impl Reporter for Recorder {
    fn event(&self, event: &Event) {
        if matches!(
            event,
            Event::TaskOutput { .. } | Event::RestoreProgress { .. }
        ) {
            return;
        }
        let Ok(e) = serde_json::to_value(event) else {
            return;
        };
        let at = self.start.elapsed().as_millis() as u64;
        self.line(&json!({"at_ms": at, "e": e}));
    }
}

/// Sends each event to every reporter in turn.
pub(crate) struct Tee<'a>(pub(crate) Vec<&'a dyn Reporter>);

impl Reporter for Tee<'_> {
    fn event(&self, event: &Event) {
        for r in &self.0 {
            r.event(event);
        }
    }
}

/// The last `max` bytes of a file (from a line start when one is near), and how many bytes
/// before them were left out.
pub(crate) fn read_tail(path: &Path, max: u64) -> Option<(String, u64)> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let skip = len.saturating_sub(max);
    file.seek(SeekFrom::Start(skip)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let mut omitted = skip;
    if skip > 0
        && let Some(nl) = bytes.iter().take(4096).position(|&b| b == b'\n')
    {
        bytes.drain(..=nl);
        omitted += nl as u64 + 1;
    }
    Some((String::from_utf8_lossy(&bytes).into_owned(), omitted))
}

/// A task as a record tells it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskView {
    pub(crate) name: String,
    pub(crate) uses: Vec<String>,
    pub(crate) after: Vec<String>,
    /// The line of its `key:` in the pipeline file.
    pub(crate) line: Option<u64>,
    /// `ran`, `cached`, `failed`, `skipped`, `workspace`, `call`, or `not-run` (not reached:
    /// not a target, or the run was cut short).
    pub(crate) status: String,
    pub(crate) key: Option<String>,
    pub(crate) layer: Option<String>,
    /// Where a restored task came from: `local` or a shared cache.
    pub(crate) from: Option<String>,
    /// When it began and ended, in ms since the run began.
    pub(crate) start_ms: Option<u64>,
    pub(crate) end_ms: Option<u64>,
    pub(crate) duration_ms: u64,
    /// For a restored task, how long it took when it ran.
    pub(crate) saved_ms: u64,
    /// Why it failed or was skipped.
    pub(crate) reason: Option<String>,
    pub(crate) exit_code: Option<i64>,
    pub(crate) errors: Vec<String>,
    /// Why it missed the cache.
    pub(crate) miss_reasons: Vec<String>,
    pub(crate) downloaded_bytes: u64,
    /// When the prefetch started downloading its layer, and for which task that runs.
    pub(crate) prefetched: Option<(u64, Option<String>)>,
    pub(crate) pushed_bytes: u64,
    /// The tail of a failed task's log, as the record kept it, and the bytes left out.
    pub(crate) failed_log: Option<(String, u64)>,
    /// The last lines the failure event carried (when no log was kept).
    pub(crate) log_tail: Vec<String>,
    /// Parsed test results, when the task produced them (`test-results` in its events; wired
    /// by the test-results work: the report shows them where this is `Some`).
    pub(crate) tests: Option<Value>,
}

/// A run as its record tells it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunView {
    pub(crate) pipeline: String,
    pub(crate) started_ms: u64,
    /// In the pipeline's order, then tasks that joined during the run.
    pub(crate) tasks: Vec<TaskView>,
    pub(crate) warnings: Vec<String>,
    /// The `run-finished` summary (absent when the run was killed).
    pub(crate) summary: Option<Value>,
}

impl RunView {
    pub(crate) fn read(path: &Path) -> Result<RunView, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(RunView::parse(&text))
    }

    /// Reads a record; lines it does not understand are left out.
    pub(crate) fn parse(text: &str) -> RunView {
        let mut view = RunView::default();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let s = |v: &Value| v.as_str().map(str::to_string);
        let list = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(run) = v.get("run") {
                view.pipeline = s(&run["pipeline"]).unwrap_or_default();
                view.started_ms = run["started_ms"].as_u64().unwrap_or(0);
                for t in run["tasks"].as_array().into_iter().flatten() {
                    let name = s(&t["name"]).unwrap_or_default();
                    index.insert(name.clone(), view.tasks.len());
                    view.tasks.push(TaskView {
                        name,
                        uses: list(&t["uses"]),
                        after: list(&t["after"]),
                        line: t["line"].as_u64(),
                        status: "not-run".into(),
                        ..Default::default()
                    });
                }
                continue;
            }
            if let Some(f) = v.get("failed_log") {
                if let Some(i) = s(&f["task"]).and_then(|t| index.get(&t).copied()) {
                    view.tasks[i].failed_log = Some((
                        s(&f["tail"]).unwrap_or_default(),
                        f["omitted_bytes"].as_u64().unwrap_or(0),
                    ));
                }
                continue;
            }
            let at = v["at_ms"].as_u64().unwrap_or(0);
            let e = &v["e"];
            let kind = e["event"].as_str().unwrap_or_default();
            match kind {
                "warning" => view.warnings.extend(s(&e["message"])),
                "run-finished" => view.summary = Some(e.clone()),
                "tasks-added" => {
                    let by = s(&e["by"]).unwrap_or_default();
                    for name in list(&e["tasks"]) {
                        if index.contains_key(&name) {
                            continue;
                        }
                        index.insert(name.clone(), view.tasks.len());
                        view.tasks.push(TaskView {
                            name,
                            after: vec![by.clone()],
                            status: "not-run".into(),
                            ..Default::default()
                        });
                    }
                }
                _ => {}
            }
            let Some(task) = s(&e["task"]) else {
                continue;
            };
            let i = *index.entry(task.clone()).or_insert_with(|| {
                view.tasks.push(TaskView {
                    name: task.clone(),
                    status: "not-run".into(),
                    ..Default::default()
                });
                view.tasks.len() - 1
            });
            let t = &mut view.tasks[i];
            match kind {
                "task-missed" => {
                    t.key = s(&e["key"]);
                    t.miss_reasons = list(&e["reasons"]);
                }
                "task-started" => {
                    t.key = s(&e["key"]);
                    t.start_ms = Some(at);
                }
                "task-restored" => {
                    let from = s(&e["from"]).unwrap_or_default();
                    t.status = match from.as_str() {
                        "workspace" | "call" => from.clone(),
                        _ => "restored".into(),
                    };
                    t.key = s(&e["key"]);
                    t.layer = s(&e["layer"]).filter(|l| !l.is_empty());
                    t.saved_ms = e["saved_ms"].as_u64().unwrap_or(0);
                    t.from = Some(from);
                    t.start_ms = Some(at);
                    t.end_ms = Some(at);
                }
                "layer-prefetching" => t.prefetched = Some((at, s(&e["needed_by"]))),
                "layer-fetched" => {
                    t.downloaded_bytes += e["bytes"].as_u64().unwrap_or(0);
                    t.end_ms = Some(at);
                }
                "task-pushed" => t.pushed_bytes += e["bytes"].as_u64().unwrap_or(0),
                "task-passed" => {
                    t.status = "ran".into();
                    t.key = s(&e["key"]);
                    t.layer = s(&e["layer"]);
                    t.duration_ms = e["duration_ms"].as_u64().unwrap_or(0);
                    t.end_ms = Some(at);
                    t.start_ms.get_or_insert(at.saturating_sub(t.duration_ms));
                }
                "task-failed" => {
                    t.status = "failed".into();
                    t.duration_ms = e["duration_ms"].as_u64().unwrap_or(0);
                    t.reason = s(&e["reason"]);
                    t.exit_code = e["exit_code"].as_i64();
                    t.errors = list(&e["errors"]);
                    t.log_tail = list(&e["log_tail"]);
                    t.end_ms = Some(at);
                    t.start_ms.get_or_insert(at.saturating_sub(t.duration_ms));
                }
                "task-skipped" => {
                    t.status = "skipped".into();
                    t.reason = s(&e["because"]);
                    t.start_ms = Some(at);
                    t.end_ms = Some(at);
                }
                _ => {}
            }
            // TEST RESULTS: parsed test results, when the task's events carry them — a
            // `test_results`/`tests` field of a task event, or an event of their own whose kind
            // names tests. Read loosely until the test-results work is wired in; the report
            // shows whatever is here in its `data-slot="test-results"` section.
            if let Some(tests) = e.get("test_results").or_else(|| e.get("tests"))
                && !tests.is_null()
            {
                t.tests = Some(tests.clone());
            } else if kind.contains("test") {
                let mut tests = e.clone();
                if let Some(map) = tests.as_object_mut() {
                    map.remove("event");
                    map.remove("task");
                }
                t.tests = Some(tests);
            }
        }
        view
    }

    pub(crate) fn task(&self, name: &str) -> Option<&TaskView> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub(crate) fn failed(&self) -> Vec<&TaskView> {
        self.tasks.iter().filter(|t| t.status == "failed").collect()
    }

    pub(crate) fn duration_ms(&self) -> u64 {
        self.summary
            .as_ref()
            .and_then(|s| s["duration_ms"].as_u64())
            .unwrap_or_else(|| {
                self.tasks
                    .iter()
                    .filter_map(|t| t.end_ms)
                    .max()
                    .unwrap_or(0)
            })
    }

    pub(crate) fn saved_ms(&self) -> u64 {
        self.tasks.iter().map(|t| t.saved_ms).sum()
    }

    /// `success`, `failed`, `interrupted`, or `unfinished` (the record has no summary).
    pub(crate) fn verdict(&self) -> &'static str {
        match &self.summary {
            None => "unfinished",
            Some(s) if s["interrupted"].as_bool() == Some(true) => "interrupted",
            Some(s) if s["failed"].as_u64() == Some(0) && s["skipped"].as_u64() == Some(0) => {
                "success"
            }
            Some(_) => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_tasks_with_their_timeline() {
        let text = [
            r#"{"run":{"pipeline":"/w/strata.yml","started_ms":5,"tasks":[{"name":"a","uses":[],"after":[],"line":2},{"name":"b","uses":["a"],"after":[],"line":4}]}}"#,
            r#"{"at_ms":1,"e":{"event":"task-restored","task":"a","key":"k1","layer":"l1","saved_ms":900,"from":"local"}}"#,
            r#"{"at_ms":2,"e":{"event":"task-missed","task":"b","key":"k2","reasons":["file x: content changed"]}}"#,
            r#"{"at_ms":3,"e":{"event":"task-started","task":"b","key":"k2"}}"#,
            r#"{"at_ms":50,"e":{"event":"task-failed","task":"b","reason":"command exited with status 1","exit_code":1,"duration_ms":47,"log_tail":["boom"],"kept_upper":null}}"#,
            r#"{"at_ms":51,"e":{"event":"run-finished","ran":0,"restored":1,"failed":1,"skipped":0,"interrupted":false,"duration_ms":51}}"#,
            r#"{"failed_log":{"task":"b","tail":"boom\n","omitted_bytes":0}}"#,
            "not json",
        ]
        .join("\n");
        let v = RunView::parse(&text);
        assert_eq!(v.pipeline, "/w/strata.yml");
        assert_eq!(v.verdict(), "failed");
        assert_eq!(v.saved_ms(), 900);
        let a = v.task("a").unwrap();
        assert_eq!(
            (a.status.as_str(), a.from.as_deref()),
            ("restored", Some("local"))
        );
        let b = v.task("b").unwrap();
        assert_eq!(b.status, "failed");
        assert_eq!(b.uses, vec!["a"]);
        assert_eq!(b.line, Some(4));
        assert_eq!((b.start_ms, b.end_ms), (Some(3), Some(50)));
        assert_eq!(b.miss_reasons, vec!["file x: content changed"]);
        assert_eq!(b.failed_log.as_ref().unwrap().0, "boom\n");
        assert_eq!(v.failed().len(), 1);
    }

    #[test]
    fn test_results_land_in_their_slot_whichever_way_events_carry_them() {
        let v = RunView::parse(&[
            r#"{"run":{"pipeline":"p","started_ms":0,"tasks":[{"name":"a"},{"name":"b"}]}}"#,
            r#"{"at_ms":1,"e":{"event":"task-passed","task":"a","key":"k","layer":"l","duration_ms":1,"test_results":{"passed":3,"failed":0}}}"#,
            r#"{"at_ms":2,"e":{"event":"task-test-results","task":"b","failed":["t1"]}}"#,
        ]
        .join("\n"));
        assert_eq!(
            v.task("a").unwrap().tests,
            Some(json!({"passed": 3, "failed": 0}))
        );
        assert_eq!(v.task("b").unwrap().tests, Some(json!({"failed": ["t1"]})));
    }

    #[test]
    fn secrets_are_masked_raw_and_json_escaped() {
        let secrets = vec!["p\"ss1".to_string(), "p\\\"ss1".to_string()];
        let line = json!({"reason": "token p\"ss1 leaked"}).to_string();
        assert_eq!(mask(&line, &secrets), r#"{"reason":"token *** leaked"}"#);
    }
}
