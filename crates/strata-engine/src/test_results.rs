//! Test result files read after a task: JUnit XML as pytest, jest-junit, cargo nextest,
//! go-junit-report and Maven surefire write it (nested `testsuite`s, `failure`, `error`,
//! `skipped`), and RWX's `rwx-v1-json`. A file that cannot be read is a warning, never a
//! failure of the task.

use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event as Xml};
use strata_key::{TestCase, TestResults, TestStatus};

/// The first bytes of a message kept with a case.
const MESSAGE_BYTES: usize = 4096;

/// Reads every file of `files` (each with the name the user knows it by) into one
/// [`TestResults`]; the warnings name the files that could not be read.
pub(crate) fn read_files(
    files: &[(String, std::path::PathBuf)],
) -> (Option<TestResults>, Vec<String>) {
    let mut results = TestResults::default();
    let mut warnings = Vec::new();
    for (shown, path) in files {
        match read_file(path, &mut results) {
            Ok(()) => results.files.push(shown.clone()),
            Err(why) => warnings.push(format!("test results `{shown}` not read: {why}")),
        }
    }
    (
        (!results.files.is_empty()).then(|| {
            // Failed cases first: they are what a reader looks for.
            results
                .cases
                .sort_by_key(|c| c.status != TestStatus::Failed);
            results
        }),
        warnings,
    )
}

/// Result files larger than this are not read (they would be held in memory whole).
const MAX_FILE_BYTES: u64 = 256 << 20;

fn read_file(path: &Path, results: &mut TestResults) -> Result<(), String> {
    // The task's processes are gone by now, so what is checked here is what is read; a
    // symlink would be followed on the host, outside the sandbox.
    let meta = path.symlink_metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {} MiB", MAX_FILE_BYTES >> 20));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let start = text.trim_start();
    if start.starts_with('{') {
        return parse_rwx_json(start, results);
    }
    parse_junit(&text, results)
}

/// One JUnit XML document into `results`. Only a well-formed document counts: on an error
/// nothing of it is added.
pub(crate) fn parse_junit(xml: &str, results: &mut TestResults) -> Result<(), String> {
    let mut reader = Reader::from_str(xml);
    let mut suites: Vec<String> = Vec::new();
    let mut case: Option<TestCase> = None;
    let mut in_message = false;
    let mut found = TestResults::default();
    let mut saw_root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Xml::Start(e) if e.local_name().as_ref() == b"testsuite" => {
                saw_root = true;
                suites.push(attr(&e, b"name").unwrap_or_default());
            }
            // An empty suite never gets an `End`: only open ones are stacked.
            Xml::Start(e) | Xml::Empty(e)
                if matches!(e.local_name().as_ref(), b"testsuites" | b"testsuite") =>
            {
                saw_root = true;
            }
            Xml::End(e) if e.local_name().as_ref() == b"testsuite" => {
                suites.pop();
            }
            Xml::Start(e) if e.local_name().as_ref() == b"testcase" => {
                case = Some(new_case(&e, &suites));
            }
            Xml::Empty(e) if e.local_name().as_ref() == b"testcase" => {
                found.add(new_case(&e, &suites));
            }
            Xml::End(e) if e.local_name().as_ref() == b"testcase" => {
                if let Some(c) = case.take() {
                    found.add(c);
                }
                in_message = false;
            }
            Xml::Start(e) | Xml::Empty(e)
                if matches!(e.local_name().as_ref(), b"failure" | b"error" | b"skipped") =>
            {
                if let Some(c) = case.as_mut() {
                    let skipped = e.local_name().as_ref() == b"skipped";
                    // A failure outweighs a skip within one case.
                    if !(skipped && c.status == TestStatus::Failed) {
                        c.status = if skipped {
                            TestStatus::Skipped
                        } else {
                            TestStatus::Failed
                        };
                        c.message = attr(&e, b"message").map(|m| cut(&m));
                    }
                    in_message = c.message.is_none();
                }
            }
            Xml::Text(t) if in_message => {
                if let Some(c) = case.as_mut()
                    && let Ok(text) = t.unescape()
                {
                    let text = text.trim();
                    if !text.is_empty() {
                        c.message = Some(cut(text));
                        in_message = false;
                    }
                }
            }
            Xml::CData(t) if in_message => {
                if let Some(c) = case.as_mut() {
                    let text = String::from_utf8_lossy(&t);
                    let text = text.trim();
                    if !text.is_empty() {
                        c.message = Some(cut(text));
                        in_message = false;
                    }
                }
            }
            Xml::End(e)
                if matches!(e.local_name().as_ref(), b"failure" | b"error" | b"skipped") =>
            {
                in_message = false;
            }
            Xml::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err("not JUnit XML (no `testsuites` or `testsuite` element)".into());
    }
    results.absorb(found);
    Ok(())
}

fn new_case(e: &BytesStart<'_>, suites: &[String]) -> TestCase {
    let classname = attr(e, b"classname").unwrap_or_default();
    let joined = suites
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" / ");
    TestCase {
        // The class (pytest's module, surefire's class, go's package) says more than a
        // tool-wide suite name such as `pytest`.
        suite: if classname.is_empty() {
            joined
        } else {
            classname
        },
        name: attr(e, b"name").unwrap_or_default(),
        status: TestStatus::Passed,
        message: None,
        duration_ms: attr(e, b"time")
            .and_then(|t| t.trim().replace(',', "").parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0).round() as u64),
    }
}

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn cut(s: &str) -> String {
    if s.len() <= MESSAGE_BYTES {
        return s.to_string();
    }
    let mut end = MESSAGE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// RWX's `rwx-v1-json` (rwx-research/test-results-schema): a `tests` list whose items have a
/// `name`, a `lineage` (group names, then the test's), a `location`, and an `attempt` with a
/// `status.kind` (`successful`, `failed`, `skipped`, `pended`, `todo`, ...), an optional
/// `status.message` and `durationInNanoseconds`.
pub(crate) fn parse_rwx_json(text: &str, results: &mut TestResults) -> Result<(), String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let tests = doc
        .get("tests")
        .and_then(|t| t.as_array())
        .ok_or("not rwx-v1-json (no `tests` list)")?;
    let mut found = TestResults::default();
    for t in tests {
        let name = t.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let attempt = t.get("attempt");
        let status = attempt.and_then(|a| a.get("status"));
        let kind = status
            .and_then(|s| s.get("kind"))
            .and_then(|k| k.as_str())
            .unwrap_or("successful");
        let status_kind = match kind {
            "successful" => TestStatus::Passed,
            "skipped" | "todo" | "pended" | "quarantined" => TestStatus::Skipped,
            _ => TestStatus::Failed,
        };
        // `lineage` is the names from the outermost group to the test itself.
        let lineage: Vec<&str> = t
            .get("lineage")
            .and_then(|l| l.as_array())
            .map(|l| l.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        let suite = match lineage.split_last() {
            Some((_, groups)) if !groups.is_empty() => groups.join(" / "),
            _ => t
                .get("location")
                .and_then(|l| l.get("file"))
                .and_then(|f| f.as_str())
                .unwrap_or_default()
                .to_string(),
        };
        found.add(TestCase {
            suite,
            name: name.to_string(),
            status: status_kind,
            message: status
                .and_then(|s| s.get("message"))
                .and_then(|m| m.as_str())
                .map(cut),
            duration_ms: attempt
                .and_then(|a| a.get("durationInNanoseconds"))
                .and_then(|d| d.as_u64())
                .map(|ns| ns / 1_000_000),
        });
    }
    results.absorb(found);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_style_junit_with_failures_errors_and_skips() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="0.05"><testcase classname="test_calc" name="test_add" time="0.001" /><testcase classname="test_calc" name="test_sub" time="0.002"><failure message="assert 1 == 2">def test_sub():
&gt;       assert 1 == 2</failure></testcase><testcase classname="test_calc" name="test_div" time="0.003"><error message="ZeroDivisionError">trace</error></testcase><testcase classname="test_calc" name="test_skip" time="0.000"><skipped type="pytest.skip" message="not today">skip</skipped></testcase></testsuite></testsuites>"#;
        let mut r = TestResults::default();
        parse_junit(xml, &mut r).unwrap();
        assert_eq!((r.passed, r.failed, r.skipped), (1, 2, 1));
        assert_eq!(
            r.failing_names(),
            vec!["test_calc > test_sub", "test_calc > test_div"]
        );
        assert_eq!(r.cases[1].message.as_deref(), Some("assert 1 == 2"));
        assert_eq!(r.cases[1].duration_ms, Some(2));
        assert_eq!(r.cases[3].message.as_deref(), Some("not today"));
    }

    #[test]
    fn nested_suites_and_text_messages_as_surefire_and_go_write_them() {
        let xml = r#"<testsuites><testsuite name="outer"><testsuite name="inner"><testcase name="a"><failure><![CDATA[boom at line 3]]></failure></testcase></testsuite><testcase name="b"/></testsuite><testsuite name="empty"/></testsuites>"#;
        let mut r = TestResults::default();
        parse_junit(xml, &mut r).unwrap();
        assert_eq!((r.passed, r.failed), (1, 1));
        assert_eq!(r.cases[0].suite, "outer / inner");
        assert_eq!(r.cases[0].message.as_deref(), Some("boom at line 3"));
        assert_eq!(r.cases[1].suite, "outer");
    }

    #[test]
    fn malformed_files_are_warnings_and_add_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.xml");
        std::fs::write(&bad, "<testsuite><testcase name='x'></testsuite>").unwrap();
        let good = dir.path().join("good.xml");
        std::fs::write(
            &good,
            "<testsuite name='s'><testcase name='ok'/></testsuite>",
        )
        .unwrap();
        let other = dir.path().join("other.xml");
        std::fs::write(&other, "<html/>").unwrap();
        let link = dir.path().join("link.xml");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let (r, warnings) = read_files(&[
            ("bad.xml".into(), bad),
            ("good.xml".into(), good),
            ("other.xml".into(), other),
            ("link.xml".into(), link),
        ]);
        let r = r.unwrap();
        assert_eq!((r.passed, r.failed), (1, 0));
        assert_eq!(r.files, vec!["good.xml"]);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[2].contains("not a regular file"), "{warnings:?}");
        assert!(warnings[0].contains("bad.xml") && warnings[0].contains("malformed"));
    }

    #[test]
    fn rwx_v1_json() {
        let json = r#"{"$schema":"https://raw.githubusercontent.com/rwx-research/test-results-schema/main/v1.json","framework":{"language":"Ruby","kind":"RSpec"},"summary":{"status":{"kind":"failed"},"tests":2},"tests":[{"name":"Moon is bright","lineage":["Moon","is bright"],"attempt":{"durationInNanoseconds":2000000,"status":{"kind":"failed","message":"expected bright"}}},{"name":"Sun","attempt":{"status":{"kind":"successful"}}}]}"#;
        let mut r = TestResults::default();
        parse_rwx_json(json, &mut r).unwrap();
        assert_eq!((r.passed, r.failed), (1, 1));
        assert_eq!(r.failing_names(), vec!["Moon > Moon is bright"]);
        assert_eq!(r.cases[0].duration_ms, Some(2));
    }

    #[test]
    fn many_cases_keep_exact_counts_and_every_failure_that_fits() {
        let mut xml = String::from("<testsuite name='s'>");
        for i in 0..3000 {
            xml.push_str(&format!("<testcase name='p{i}'/>"));
        }
        xml.push_str("<testcase name='late'><failure message='m'/></testcase></testsuite>");
        let mut r = TestResults::default();
        parse_junit(&xml, &mut r).unwrap();
        assert_eq!((r.passed, r.failed), (3000, 1));
        assert!(r.truncated);
        assert_eq!(r.cases.len(), TestResults::MAX_CASES);
        assert_eq!(r.failing_names(), vec!["s > late"]);
    }
}
