//! `--github-summary`: a run as GitHub Actions shows it — a Markdown summary appended to
//! `$GITHUB_STEP_SUMMARY`, and an `::error` workflow command per failed task (an annotation
//! on the pipeline file, at the task's `key:`).

use std::io::Write;
use std::path::Path;

use crate::record::{RunView, TaskView};

/// Lines of a failed task's log in the summary.
const SUMMARY_LOG_LINES: usize = 50;

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// A table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// A fenced block that no backtick run in `text` can close.
fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}text\n{}\n{fence}\n", text.trim_end_matches('\n'))
}

fn status(t: &TaskView) -> &'static str {
    match t.status.as_str() {
        "ran" => "✅ passed",
        "restored" => "♻️ restored",
        "failed" => "❌ failed",
        "skipped" => "⏭️ skipped",
        "workspace" => "workspace",
        "call" => "call",
        _ => "not run",
    }
}

/// The Markdown summary of a run.
pub(crate) fn summary_markdown(view: &RunView) -> String {
    let mut md = String::new();
    let verdict = match view.verdict() {
        "success" => "✅ success",
        "failed" => "❌ failed",
        "interrupted" => "⚠️ interrupted",
        _ => "⚠️ unfinished",
    };
    md.push_str(&format!(
        "## strata: {verdict} — `{}`\n\n",
        cell(&view.pipeline)
    ));
    let count = |s: &str| view.tasks.iter().filter(|t| t.status == s).count();
    md.push_str(&format!(
        "{} ran, {} restored, {} failed, {} skipped in {}; restoring saved {}.\n\n",
        count("ran"),
        count("restored"),
        count("failed"),
        count("skipped"),
        seconds(view.duration_ms()),
        seconds(view.saved_ms()),
    ));
    md.push_str("| Task | Status | Duration | Cache | Time saved |\n|---|---|---|---|---|\n");
    for t in &view.tasks {
        let duration = match t.status.as_str() {
            "ran" | "failed" => seconds(t.duration_ms),
            _ => "—".into(),
        };
        let cache = match t.status.as_str() {
            "restored" => format!("hit ({})", t.from.as_deref().unwrap_or("local")),
            "ran" | "failed" => match t.miss_reasons.first() {
                Some(r) if t.miss_reasons.len() > 1 => {
                    format!("miss: {r} (+{} more)", t.miss_reasons.len() - 1)
                }
                Some(r) => format!("miss: {r}"),
                None => "miss".into(),
            },
            _ => "—".into(),
        };
        let saved = if t.status == "restored" {
            seconds(t.saved_ms)
        } else {
            "—".into()
        };
        md.push_str(&format!(
            "| `{}` | {} | {duration} | {} | {saved} |\n",
            cell(&t.name),
            status(t),
            cell(&cache)
        ));
    }
    for t in view.failed() {
        md.push_str(&format!(
            "\n### ❌ `{}`\n\n{}\n\n",
            cell(&t.name),
            cell(t.reason.as_deref().unwrap_or("failed"))
        ));
        for e in &t.errors {
            md.push_str(&fenced(e));
        }
        let tail: Vec<&str> = match &t.failed_log {
            Some((log, _)) => {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(SUMMARY_LOG_LINES)..].to_vec()
            }
            None => t.log_tail.iter().map(String::as_str).collect(),
        };
        if !tail.is_empty() {
            md.push_str(&format!(
                "Last lines of its log:\n\n{}",
                fenced(&tail.join("\n"))
            ));
        }
    }
    md
}

/// Escapes the data of a workflow command.
fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property of a workflow command.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// An `::error` command per failed task, pointing at its `key:` in the pipeline file (relative
/// to `$GITHUB_WORKSPACE` when under it, as annotations expect).
pub(crate) fn annotations(view: &RunView) -> Vec<String> {
    let file = match std::env::var_os("GITHUB_WORKSPACE") {
        Some(ws) => Path::new(&view.pipeline)
            .strip_prefix(&ws)
            .map_or(view.pipeline.clone(), |p| p.display().to_string()),
        None => view.pipeline.clone(),
    };
    view.failed()
        .into_iter()
        .map(|t| {
            let mut message = t.reason.clone().unwrap_or_else(|| "failed".into());
            for e in &t.errors {
                message.push('\n');
                message.push_str(e);
            }
            let tail: Vec<&str> = match &t.failed_log {
                Some((log, _)) => {
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(10)..].to_vec()
                }
                None => t
                    .log_tail
                    .iter()
                    .rev()
                    .take(10)
                    .rev()
                    .map(String::as_str)
                    .collect(),
            };
            if !tail.is_empty() {
                message.push_str("\n\n");
                message.push_str(&tail.join("\n"));
            }
            let line = t.line.map(|l| format!(",line={l}")).unwrap_or_default();
            format!(
                "::error file={}{line},title={}::{}",
                escape_property(&file),
                escape_property(&format!("strata: task `{}` failed", t.name)),
                escape_data(&message)
            )
        })
        .collect()
}

/// Appends the summary to `$GITHUB_STEP_SUMMARY` (when set) and prints the annotations on
/// stdout (unless stdout is the `--json` stream).
pub(crate) fn publish(view: &RunView, json: bool) -> Result<(), String> {
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("$GITHUB_STEP_SUMMARY {}: {e}", Path::new(&path).display()))?;
        file.write_all(summary_markdown(view).as_bytes())
            .map_err(|e| format!("$GITHUB_STEP_SUMMARY {}: {e}", Path::new(&path).display()))?;
    }
    if !json {
        let mut out = std::io::stdout().lock();
        for a in annotations(view) {
            let _ = writeln!(out, "{a}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> RunView {
        RunView::parse(&[
            r#"{"run":{"pipeline":"/w/ci/strata.yml","started_ms":0,"tasks":[{"name":"a","uses":[],"after":[],"line":2},{"name":"b","uses":["a"],"after":[],"line":5}]}}"#,
            r#"{"at_ms":1,"e":{"event":"task-restored","task":"a","key":"k","layer":"l","saved_ms":1500,"from":"local"}}"#,
            r#"{"at_ms":9,"e":{"event":"task-failed","task":"b","reason":"command exited with status 3","exit_code":3,"duration_ms":8,"log_tail":["100% done","a|b ```"]}}"#,
            r#"{"at_ms":9,"e":{"event":"run-finished","failed":1,"skipped":0,"interrupted":false,"duration_ms":9}}"#,
        ].join("\n"))
    }

    #[test]
    fn the_summary_has_a_row_per_task_and_the_failure_log_fenced() {
        let md = summary_markdown(&view());
        assert!(
            md.contains("| `a` | ♻️ restored | — | hit (local) | 1.5s |"),
            "{md}"
        );
        assert!(md.contains("| `b` | ❌ failed | 0.0s | miss | — |"), "{md}");
        assert!(md.contains("````text\n100% done\na|b ```\n````"), "{md}");
    }

    #[test]
    fn annotations_escape_what_github_requires() {
        let a = annotations(&view());
        assert_eq!(
            a,
            vec![
                "::error file=/w/ci/strata.yml,line=5,title=strata%3A task `b` failed::command exited with status 3%0A%0A100%25 done%0Aa|b ```"
            ]
        );
    }
}
