//! `strata run --report FILE.html` and `strata report`: one self-contained HTML page about a
//! run (inline CSS, SVG and a little JS; nothing fetched), built from its record
//! (`record.rs`) and the logs in the cache.
//!
//! Everything that comes from the pipeline or a task (names, output, reasons, errors) is
//! HTML-escaped where it is written, and appears only in text or attribute positions — never
//! inside the script — so a task that prints markup shows it as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use strata_store::LocalCache;

use crate::record::{LOG_TAIL_BYTES, RunView, TaskView, read_tail};

/// The tail of a task's log shown in the report, and the bytes before it left out.
pub(crate) struct LogExcerpt {
    pub(crate) text: String,
    pub(crate) omitted_bytes: u64,
}

/// What the report shows beyond the record: each task's log and the size of the layers the
/// run reused.
pub(crate) struct ReportInputs {
    pub(crate) logs: BTreeMap<String, LogExcerpt>,
    /// Bytes of the layers of restored tasks (the files the run did not have to produce).
    pub(crate) reused_layer_bytes: u64,
}

/// Gathers the logs (a failed task's from its record, the others' from their entries) and the
/// restored layers' sizes.
pub(crate) fn gather(cache: &LocalCache, view: &RunView) -> ReportInputs {
    let mut logs = BTreeMap::new();
    let mut reused = 0;
    for t in &view.tasks {
        if let Some((text, omitted)) = &t.failed_log {
            logs.insert(
                t.name.clone(),
                LogExcerpt {
                    text: text.clone(),
                    omitted_bytes: *omitted,
                },
            );
            continue;
        }
        if t.status == "restored"
            && let Some(layer) = t.layer.as_deref().and_then(strata_key::LayerDigest::parse)
        {
            reused += cache.layers().bytes(&layer).ok().flatten().unwrap_or(0);
        }
        if !matches!(t.status.as_str(), "ran" | "restored") {
            continue;
        }
        let Some(key) = t.key.as_deref().and_then(strata_key::CacheKey::parse) else {
            continue;
        };
        if let Ok(Some(entry)) = cache.index().lookup(&key)
            && let Some((text, omitted)) =
                read_tail(&cache.content().log_path(&entry.log), LOG_TAIL_BYTES)
        {
            logs.insert(
                t.name.clone(),
                LogExcerpt {
                    text,
                    omitted_bytes: omitted,
                },
            );
        }
    }
    ReportInputs {
        logs,
        reused_layer_bytes: reused,
    }
}

/// Writes the page to `path` (through a temp file and a rename: never half a page).
pub(crate) fn write(path: &Path, html: &str) -> Result<(), String> {
    let tmp = path.with_extension("html.tmp");
    std::fs::write(&tmp, html)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("failed to write the report {}: {e}", path.display()))
}

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn seconds(ms: u64) -> String {
    if ms >= 60_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// What a status is called on the page.
fn status_label(t: &TaskView) -> &'static str {
    match t.status.as_str() {
        "ran" => "passed",
        "restored" => "restored",
        "failed" => "failed",
        "skipped" => "skipped",
        "workspace" => "workspace",
        "call" => "call",
        _ => "not run",
    }
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px;color:#1b1f24}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.verdict{display:inline-block;padding:2px 8px;border-radius:4px;color:#fff;font-weight:600}
.v-success{background:#1a7f37}.v-failed,.v-interrupted,.v-unfinished{background:#cf222e}
.facts{display:flex;gap:24px;flex-wrap:wrap;margin:8px 0}.facts div{min-width:120px}
.facts b{display:block;font-size:18px}
.s-passed{fill:#dafbe1;background:#dafbe1}.s-restored{fill:#ddf4ff;background:#ddf4ff}
.s-failed{fill:#ffebe9;background:#ffebe9}.s-skipped,.s-not-run{fill:#f6f8fa;background:#f6f8fa}
.s-workspace,.s-call{fill:#fff8c5;background:#fff8c5}
svg text{font:12px system-ui,sans-serif} svg rect{stroke:#57606a}
.edge{stroke:#8c959f;fill:none}.edge.after{stroke-dasharray:4 3}
.row{display:flex;align-items:center;height:20px}.row .name{width:220px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.track{position:relative;flex:1;height:14px;background:#f6f8fa}
.bar{position:absolute;top:0;height:14px;min-width:3px;border:1px solid #57606a;box-sizing:border-box}
details.task{border:1px solid #d0d7de;border-radius:6px;margin:6px 0;padding:4px 8px}
details.task>summary{cursor:pointer;font-weight:600}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:480px;white-space:pre-wrap;word-break:break-all}
.muted{color:#57606a} code{background:#f6f8fa;padding:0 3px}
.filters button{margin-right:4px} .hidden{display:none}
"#;

/// Opens a task's details from the DAG or the timeline, and filters the list by status. Reads
/// nothing from the page but its own attributes.
const SCRIPT: &str = r#"
document.documentElement.dataset.scripted = "yes";
function openTask(id){var d=document.getElementById(id);if(d){d.open=true;d.scrollIntoView();}}
document.querySelectorAll("[data-open]").forEach(function(el){
  el.addEventListener("click",function(){openTask(el.getAttribute("data-open"));});});
document.querySelectorAll(".filters button").forEach(function(b){
  b.addEventListener("click",function(){var want=b.getAttribute("data-filter");
    document.querySelectorAll("details.task").forEach(function(d){
      d.classList.toggle("hidden",want!=="all"&&d.getAttribute("data-status")!==want);});});});
if(location.hash){openTask(decodeURIComponent(location.hash.slice(1)));}
"#;

/// The page.
pub(crate) fn render(view: &RunView, inputs: &ReportInputs) -> String {
    let mut h = String::new();
    let verdict = view.verdict();
    let count = |s: &str| view.tasks.iter().filter(|t| t.status == s).count();
    let downloaded: u64 = view.tasks.iter().map(|t| t.downloaded_bytes).sum();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>strata run: {verdict}</title><style>{STYLE}</style></head><body>\
         <h1>strata run <span class=\"verdict v-{verdict}\" id=\"verdict\">{verdict}</span></h1>\
         <div class=\"muted\">{} · began {}</div>",
        escape(&view.pipeline),
        crate::logs::utc(view.started_ms),
    );
    let _ = write!(
        h,
        "<div class=\"facts\" id=\"facts\">\
         <div><b>{}</b>tasks</div><div><b>{}</b>ran</div><div><b>{}</b>restored</div>\
         <div><b>{}</b>failed</div><div><b>{}</b>skipped</div><div><b>{}</b>took</div>\
         <div><b id=\"saved-time\">{}</b>saved by restoring</div>\
         <div><b id=\"saved-bytes\">{}</b>of layers reused</div>\
         <div><b>{}</b>downloaded from shared caches</div></div>",
        view.tasks.len(),
        count("ran"),
        count("restored"),
        count("failed"),
        count("skipped"),
        seconds(view.duration_ms()),
        seconds(view.saved_ms()),
        crate::reporter::bytes(inputs.reused_layer_bytes),
        crate::reporter::bytes(downloaded),
    );
    for w in &view.warnings {
        let _ = write!(h, "<div class=\"muted\">warning: {}</div>", escape(w));
    }
    h.push_str("<h2>Tasks and their dependencies</h2>");
    dag(&mut h, view);
    h.push_str("<h2>Timeline</h2>");
    timeline(&mut h, view);
    h.push_str(
        "<h2>Tasks</h2><div class=\"filters\">\
         <button data-filter=\"all\">all</button><button data-filter=\"failed\">failed</button>\
         <button data-filter=\"ran\">ran</button><button data-filter=\"restored\">restored</button>\
         <button data-filter=\"skipped\">skipped</button></div>",
    );
    for t in &view.tasks {
        task_details(&mut h, t, inputs.logs.get(&t.name));
    }
    let _ = writeln!(h, "<script>{SCRIPT}</script></body></html>");
    h
}

fn anchor(task: &str) -> String {
    format!("task-{task}")
}

/// The DAG as an SVG laid out by levels: a task one column right of the furthest task it uses
/// or runs after. `use` edges are solid, `after` edges dashed.
fn dag(h: &mut String, view: &RunView) {
    let index: BTreeMap<&str, usize> = view
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut level = vec![0usize; view.tasks.len()];
    // Tasks come in an order where dependencies may follow; relax until nothing moves (bounded:
    // a DAG settles within as many passes as it has tasks).
    for _ in 0..view.tasks.len() {
        let mut moved = false;
        for (i, t) in view.tasks.iter().enumerate() {
            for d in t.uses.iter().chain(&t.after) {
                if let Some(&j) = index.get(d.as_str())
                    && level[i] <= level[j]
                    && level[j] < view.tasks.len()
                {
                    level[i] = level[j] + 1;
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    let mut row_in_level: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos = vec![(0usize, 0usize); view.tasks.len()];
    for (i, l) in level.iter().enumerate() {
        let r = row_in_level.entry(*l).or_insert(0);
        pos[i] = (*l, *r);
        *r += 1;
    }
    let (w, hgt, dx, dy) = (170usize, 26usize, 210usize, 36usize);
    let cols = level.iter().max().map_or(1, |m| m + 1);
    let rows = row_in_level.values().max().copied().unwrap_or(1);
    let _ = write!(
        h,
        "<svg id=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">",
        cols * dx,
        rows * dy + 4
    );
    let at = |i: usize| (pos[i].0 * dx + 2, pos[i].1 * dy + 2);
    for (i, t) in view.tasks.iter().enumerate() {
        for (deps, class) in [(&t.uses, "edge use"), (&t.after, "edge after")] {
            for d in deps {
                if let Some(&j) = index.get(d.as_str()) {
                    let (x1, y1) = at(j);
                    let (x2, y2) = at(i);
                    let (x1, y1, x2, y2) = (x1 + w, y1 + hgt / 2, x2, y2 + hgt / 2);
                    let mid = (x1 + x2) / 2;
                    let _ = write!(
                        h,
                        "<path class=\"{class}\" d=\"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}\"/>"
                    );
                }
            }
        }
    }
    for (i, t) in view.tasks.iter().enumerate() {
        let (x, y) = at(i);
        let label = status_label(t);
        let shown: String = if t.name.chars().count() > 22 {
            t.name.chars().take(21).collect::<String>() + "…"
        } else {
            t.name.clone()
        };
        let _ = write!(
            h,
            "<g class=\"node\" data-task=\"{name}\" data-open=\"{id}\" style=\"cursor:pointer\">\
             <title>{name}: {label}</title>\
             <rect class=\"s-{cls}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{hgt}\" rx=\"4\"/>\
             <text x=\"{tx}\" y=\"{ty}\">{shown}</text></g>",
            name = escape(&t.name),
            id = escape(&anchor(&t.name)),
            cls = label.replace(' ', "-"),
            tx = x + 6,
            ty = y + 17,
            shown = escape(&shown),
        );
    }
    h.push_str("</svg>");
}

/// A bar per task from when it began to when it ended (a restored task: when it was found to
/// when its layer arrived).
fn timeline(h: &mut String, view: &RunView) {
    let total = view.duration_ms().max(1) as f64;
    h.push_str("<div id=\"timeline\">");
    for t in &view.tasks {
        let label = status_label(t);
        let bar = match (t.start_ms, t.end_ms) {
            (Some(s), Some(e)) => {
                // At least a sliver, so that an instant (a restore) still shows.
                let left = (s as f64 / total * 100.0).min(99.7);
                let width = (e.saturating_sub(s) as f64 / total * 100.0)
                    .max(0.3)
                    .min(100.0 - left);
                let what = match label {
                    "restored" => format!("restored (saved {})", seconds(t.saved_ms)),
                    _ => format!("{label} in {}", seconds(e.saturating_sub(s))),
                };
                format!(
                    "<div class=\"bar s-{cls}\" style=\"left:{left:.2}%;width:{width:.2}%\" \
                     title=\"{name}: {what}\"></div>",
                    cls = label.replace(' ', "-"),
                    name = escape(&t.name),
                    what = escape(&what),
                )
            }
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<div class=\"row\" data-task=\"{name}\" data-open=\"{id}\"><div class=\"name\">{name}</div>\
             <div class=\"track\">{bar}</div></div>",
            name = escape(&t.name),
            id = escape(&anchor(&t.name)),
        );
    }
    h.push_str("</div>");
}

fn task_details(h: &mut String, t: &TaskView, log: Option<&LogExcerpt>) {
    let label = status_label(t);
    let open = if t.status == "failed" { " open" } else { "" };
    let time = match t.status.as_str() {
        "ran" | "failed" => format!(" in {}", seconds(t.duration_ms)),
        "restored" => format!(" (saved {})", seconds(t.saved_ms)),
        _ => String::new(),
    };
    let _ = write!(
        h,
        "<details class=\"task\" id=\"{id}\" data-task=\"{name}\" data-status=\"{status}\"{open}>\
         <summary><span class=\"s-{cls}\">{label}</span> {name}{time}</summary>",
        id = escape(&anchor(&t.name)),
        name = escape(&t.name),
        status = escape(&t.status),
        cls = label.replace(' ', "-"),
    );
    let mut facts = Vec::new();
    if let Some(key) = &t.key {
        facts.push(format!("key <code class=\"key\">{}</code>", escape(key)));
    }
    if let Some(from) = &t.from
        && t.status == "restored"
    {
        facts.push(format!("restored from {}", escape(from)));
    }
    if let Some(code) = t.exit_code {
        facts.push(format!("exit status {code}"));
    }
    if t.downloaded_bytes > 0 {
        facts.push(format!(
            "downloaded {}",
            crate::reporter::bytes(t.downloaded_bytes)
        ));
    }
    if let Some((at, needed_by)) = &t.prefetched {
        let why = match needed_by {
            Some(task) => format!(" for <code>{}</code>", escape(task)),
            None => String::new(),
        };
        facts.push(format!(
            "prefetched at {}{why}",
            crate::reporter::seconds(*at)
        ));
    }
    if t.pushed_bytes > 0 {
        facts.push(format!(
            "uploaded {}",
            crate::reporter::bytes(t.pushed_bytes)
        ));
    }
    if !facts.is_empty() {
        let _ = write!(h, "<div class=\"muted\">{}</div>", facts.join(" · "));
    }
    if let Some(reason) = &t.reason {
        let _ = write!(h, "<p class=\"reason\">{}</p>", escape(reason));
    }
    if !t.miss_reasons.is_empty() {
        h.push_str("<div class=\"miss\">Why it ran (changed since its latest entry):<ul>");
        for r in &t.miss_reasons {
            let _ = write!(h, "<li>{}</li>", escape(r));
        }
        h.push_str("</ul></div>");
    }
    for e in &t.errors {
        let _ = write!(h, "<pre class=\"error\">{}</pre>", escape(e));
    }
    // Test results: filled when the task's events carry them.
    h.push_str("<section class=\"tests\" data-slot=\"test-results\">");
    if let Some(tests) = &t.tests {
        test_results(h, tests);
    }
    h.push_str("</section>");
    match log {
        Some(log) => {
            if log.omitted_bytes > 0 {
                let _ = write!(
                    h,
                    "<div class=\"muted\">the first {} of the log are left out: \
                     <code>strata logs {}</code> has all of it</div>",
                    crate::reporter::bytes(log.omitted_bytes),
                    escape(&t.name)
                );
            }
            let _ = write!(h, "<pre class=\"log\">{}</pre>", escape(&log.text));
        }
        None if !t.log_tail.is_empty() => {
            let _ = write!(
                h,
                "<pre class=\"log\">{}</pre>",
                escape(&t.log_tail.join("\n"))
            );
        }
        None => {}
    }
    h.push_str("</details>");
}

/// A task's test results: the counts, then the failing cases with their messages, then the
/// others (at most [`TEST_CASES_SHOWN`]). Results in another shape are shown as they came.
fn test_results(h: &mut String, tests: &serde_json::Value) {
    let results = tests.get("results").unwrap_or(tests);
    let Ok(parsed) = serde_json::from_value::<strata_key::TestResults>(results.clone()) else {
        let pretty = serde_json::to_string_pretty(tests).unwrap_or_default();
        let _ = write!(h, "<h3>Test results</h3><pre>{}</pre>", escape(&pretty));
        return;
    };
    let _ = write!(
        h,
        "<h3>Test results</h3><p class=\"test-counts\"><span class=\"{}\">{} passed, {} failed</span>, {} skipped{}</p>",
        if parsed.failed > 0 {
            "failed"
        } else {
            "passed"
        },
        parsed.passed,
        parsed.failed,
        parsed.skipped,
        if parsed.truncated {
            " (not every case kept)"
        } else {
            ""
        }
    );
    let mut cases: Vec<&strata_key::TestCase> = parsed.cases.iter().collect();
    // Failures first, as a reader looks for them.
    cases.sort_by_key(|c| c.status != strata_key::TestStatus::Failed);
    h.push_str("<table class=\"test-cases\"><tr><th>status</th><th>suite</th><th>test</th><th>message</th></tr>");
    for c in cases.iter().take(TEST_CASES_SHOWN) {
        let status = serde_json::to_value(c.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr class=\"test-{status}\"><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            escape(&status),
            escape(&c.suite),
            escape(&c.name),
            escape(c.message.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");
    if cases.len() > TEST_CASES_SHOWN {
        let _ = write!(
            h,
            "<div class=\"muted\">{} more cases not shown</div>",
            cases.len() - TEST_CASES_SHOWN
        );
    }
}

/// How many test cases a task's section lists.
const TEST_CASES_SHOWN: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_from_a_task_is_shown_as_text() {
        let view = RunView::parse(&[
            r#"{"run":{"pipeline":"/w/<p>.yml","started_ms":0,"tasks":[{"name":"a<b>","uses":[],"after":[],"line":2}]}}"#,
            r#"{"at_ms":3,"e":{"event":"task-failed","task":"a<b>","reason":"<script>alert(1)</script>","duration_ms":3,"log_tail":[]}}"#,
        ].join("\n"));
        let mut logs = BTreeMap::new();
        logs.insert(
            "a<b>".to_string(),
            LogExcerpt {
                text: "<img src=x onerror=alert(1)>".into(),
                omitted_bytes: 0,
            },
        );
        let html = render(
            &view,
            &ReportInputs {
                logs,
                reused_layer_bytes: 0,
            },
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a&lt;b&gt;"));
        assert_eq!(
            html.matches("<script>").count(),
            1,
            "only the page's own script"
        );
    }

    #[test]
    fn a_timeline_of_instants_at_the_end_of_a_run_still_draws() {
        // Restores all found in the run's last millisecond, as in a fully warm run.
        let view = RunView::parse(&[
            r#"{"run":{"pipeline":"p","started_ms":0,"tasks":[{"name":"a","uses":[],"after":[]}]}}"#,
            r#"{"at_ms":7,"e":{"event":"task-restored","task":"a","key":"k","layer":"l","saved_ms":5,"from":"local"}}"#,
            r#"{"at_ms":7,"e":{"event":"run-finished","failed":0,"skipped":0,"interrupted":false,"duration_ms":3}}"#,
        ].join("\n"));
        let mut h = String::new();
        timeline(&mut h, &view);
        assert!(h.contains("left:99.70%;width:0.30%"), "{h}");
    }

    #[test]
    fn a_task_sits_right_of_what_it_uses() {
        let view = RunView::parse(
            r#"{"run":{"pipeline":"p","started_ms":0,"tasks":[{"name":"b","uses":["a"],"after":[]},{"name":"a","uses":[],"after":[]}]}}"#,
        );
        let mut h = String::new();
        dag(&mut h, &view);
        // `b` is in the second column although it comes first in the file.
        assert!(h.contains("<rect class=\"s-not-run\" x=\"212\""), "{h}");
        assert!(h.contains("<rect class=\"s-not-run\" x=\"2\""), "{h}");
    }
}
