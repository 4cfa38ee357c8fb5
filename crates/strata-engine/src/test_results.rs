//! Test result files read after a task: JUnit XML as pytest, jest-junit, cargo nextest,
//! go-junit-report and Maven surefire write it (nested `testsuite`s, `failure`, `error`,
//! `skipped`); RWX's `rwx-v1-json`; and the JSON that test runners write themselves, told apart
//! by their shape (as RWX's Captain does): Jest's and Vitest's `--json`, Mocha's `json`
//! reporter and pytest-json-report. A file that cannot be read is a warning, never a failure
//! of the task.

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
        return parse_json(start, results);
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

/// A JSON results file, by its shape: Jest's (and Vitest's) `testResults`, Mocha's `stats`
/// with its `tests`, pytest-json-report's `tests` with `nodeid`s, RWX's `tests` with
/// `attempt`s.
pub(crate) fn parse_json(text: &str, results: &mut TestResults) -> Result<(), String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let tests = doc.get("tests").and_then(|t| t.as_array());
    let first = tests.and_then(|t| t.first());
    let has = |key: &str| first.is_some_and(|t| t.get(key).is_some());
    if doc.get("testResults").is_some_and(|r| r.is_array()) {
        parse_jest(&doc, results)
    } else if doc.get("stats").is_some() && tests.is_some() && !has("attempt") {
        parse_mocha(&doc, results)
    } else if has("nodeid") {
        parse_pytest_json(tests.expect("checked above"), results)
    } else if tests.is_some() {
        parse_rwx_json(&doc, results)
    } else {
        Err(
            "not a JSON test report strata reads (rwx-v1-json, Jest's or Vitest's `--json`, \
             Mocha's `json` reporter, pytest-json-report)"
                .into(),
        )
    }
}

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|s| s.as_str()).unwrap_or_default()
}

/// Jest's `--json` (and Vitest's, the same shape): `testResults`, one per test file, each
/// with `assertionResults` (`ancestorTitles`, `title`, `status`, `duration` in ms,
/// `failureMessages`). A file that failed before any test ran (a syntax error) has none:
/// it counts as one failed case, named after the file, with its `message`.
fn parse_jest(doc: &serde_json::Value, results: &mut TestResults) -> Result<(), String> {
    let mut found = TestResults::default();
    for file in doc["testResults"]
        .as_array()
        .expect("checked by the caller")
    {
        let path = str_of(file, "name");
        let cases = file.get("assertionResults").and_then(|a| a.as_array());
        if cases.is_none_or(|c| c.is_empty()) {
            if str_of(file, "status") == "failed" {
                found.add(TestCase {
                    suite: path.to_string(),
                    name: path.rsplit('/').next().unwrap_or(path).to_string(),
                    status: TestStatus::Failed,
                    message: Some(cut(str_of(file, "message"))).filter(|m| !m.is_empty()),
                    duration_ms: None,
                });
            }
            continue;
        }
        for case in cases.into_iter().flatten() {
            // Vitest's first title is often empty (the file's own block).
            let groups: Vec<&str> = case
                .get("ancestorTitles")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str())
                        .filter(|s| !s.trim().is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let status = match str_of(case, "status") {
                "passed" => TestStatus::Passed,
                "pending" | "skipped" | "todo" | "disabled" => TestStatus::Skipped,
                _ => TestStatus::Failed,
            };
            let message = case
                .get("failureMessages")
                .and_then(|m| m.as_array())
                .and_then(|m| m.iter().find_map(|s| s.as_str()))
                .map(cut);
            found.add(TestCase {
                suite: if groups.is_empty() {
                    path.to_string()
                } else {
                    groups.join(" / ")
                },
                name: str_of(case, "title").to_string(),
                status,
                message,
                duration_ms: case
                    .get("duration")
                    .and_then(|d| d.as_f64())
                    .filter(|d| d.is_finite() && *d >= 0.0)
                    .map(|d| d.round() as u64),
            });
        }
    }
    results.absorb(found);
    Ok(())
}

/// Mocha's `json` reporter: `tests` (`title`, `fullTitle`, `duration` in ms, `err`, empty
/// when it passed), and `pending`, the skipped ones.
fn parse_mocha(doc: &serde_json::Value, results: &mut TestResults) -> Result<(), String> {
    let pending: Vec<&str> = doc
        .get("pending")
        .and_then(|p| p.as_array())
        .map(|p| p.iter().map(|t| str_of(t, "fullTitle")).collect())
        .unwrap_or_default();
    let mut found = TestResults::default();
    for t in doc["tests"].as_array().expect("checked by the caller") {
        let (title, full) = (str_of(t, "title"), str_of(t, "fullTitle"));
        let err = t
            .get("err")
            .filter(|e| e.as_object().is_some_and(|o| !o.is_empty()));
        let status = if pending.contains(&full) {
            TestStatus::Skipped
        } else if err.is_some() {
            TestStatus::Failed
        } else {
            TestStatus::Passed
        };
        let suite = full.strip_suffix(title).unwrap_or_default().trim();
        found.add(TestCase {
            suite: if suite.is_empty() {
                str_of(t, "file").to_string()
            } else {
                suite.to_string()
            },
            name: title.to_string(),
            status,
            message: err
                .map(|e| str_of(e, "message"))
                .filter(|m| !m.is_empty())
                .map(cut),
            duration_ms: t.get("duration").and_then(|d| d.as_u64()),
        });
    }
    results.absorb(found);
    Ok(())
}

/// pytest-json-report: `tests`, each with a `nodeid` (`file::Class::test`), an `outcome`
/// (`passed`, `failed`, `error`, `skipped`, `xfailed`, `xpassed`) and its `setup`, `call` and
/// `teardown` stages (`duration` in seconds, `longrepr` when one failed).
fn parse_pytest_json(tests: &[serde_json::Value], results: &mut TestResults) -> Result<(), String> {
    let mut found = TestResults::default();
    for t in tests {
        let nodeid = str_of(t, "nodeid");
        let (suite, name) = nodeid.rsplit_once("::").unwrap_or(("", nodeid));
        let status = match str_of(t, "outcome") {
            "passed" | "xpassed" => TestStatus::Passed,
            "skipped" | "xfailed" => TestStatus::Skipped,
            _ => TestStatus::Failed,
        };
        let stages = ["setup", "call", "teardown"].map(|s| t.get(s));
        // The error itself (`crash.message`: `AssertionError: …`) says more than the start
        // of the traceback (`longrepr`), which is the failing test's source.
        let message = stages.iter().flatten().find_map(|s| {
            let crash = s.get("crash").and_then(|c| c.get("message"));
            crash
                .or_else(|| s.get("longrepr"))
                .and_then(|l| l.as_str())
                .filter(|l| !l.is_empty())
        });
        let seconds: f64 = stages
            .iter()
            .flatten()
            .filter_map(|s| s.get("duration").and_then(|d| d.as_f64()))
            .sum();
        found.add(TestCase {
            suite: suite.to_string(),
            name: name.to_string(),
            status,
            message: message.map(cut),
            duration_ms: (seconds.is_finite() && seconds > 0.0)
                .then(|| (seconds * 1000.0).round() as u64),
        });
    }
    results.absorb(found);
    Ok(())
}

/// RWX's `rwx-v1-json` (rwx-research/test-results-schema): a `tests` list whose items have a
/// `name`, a `lineage` (group names, then the test's), a `location`, and an `attempt` with a
/// `status.kind` (`successful`, `failed`, `skipped`, `pended`, `todo`, ...), an optional
/// `status.message` and `durationInNanoseconds`.
fn parse_rwx_json(doc: &serde_json::Value, results: &mut TestResults) -> Result<(), String> {
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
        parse_json(json, &mut r).unwrap();
        assert_eq!((r.passed, r.failed), (1, 1));
        assert_eq!(r.failing_names(), vec!["Moon > Moon is bright"]);
        assert_eq!(r.cases[0].duration_ms, Some(2));
    }

    #[test]
    fn jest_and_vitest_json() {
        let json = r#"{"numFailedTestSuites":2,"numFailedTests":1,"numPassedTests":1,"numPendingTests":1,"numTotalTests":3,"success":false,"testResults":[{"name":"/w/src/calc.test.js","status":"failed","message":"","assertionResults":[{"ancestorTitles":["","Calculator","add"],"fullName":"Calculator add sums","status":"passed","title":"sums","duration":3,"failureMessages":[]},{"ancestorTitles":["Calculator"],"fullName":"Calculator divides","status":"failed","title":"divides","duration":null,"failureMessages":["Error: expect(received).toBe(expected)\n\nExpected: 2"]},{"ancestorTitles":[],"fullName":"later","status":"todo","title":"later","failureMessages":[]}]},{"name":"/w/src/broken.test.js","status":"failed","message":"SyntaxError: Unexpected token","assertionResults":[]}]}"#;
        let mut r = TestResults::default();
        parse_json(json, &mut r).unwrap();
        assert_eq!((r.passed, r.failed, r.skipped), (1, 2, 1));
        assert_eq!(
            r.failing_names(),
            vec![
                "Calculator > divides",
                "/w/src/broken.test.js > broken.test.js"
            ]
        );
        assert_eq!(r.cases[0].suite, "Calculator / add");
        assert_eq!(r.cases[0].duration_ms, Some(3));
        assert!(
            r.cases[1]
                .message
                .as_deref()
                .unwrap()
                .starts_with("Error: expect")
        );
        assert_eq!(
            r.cases[3].message.as_deref(),
            Some("SyntaxError: Unexpected token")
        );
    }

    #[test]
    fn mocha_json() {
        let json = r#"{"stats":{"suites":1,"tests":3,"passes":1,"pending":1,"failures":1},"tests":[{"title":"adds","fullTitle":"Calc adds","file":"/w/test/calc.js","duration":2,"currentRetry":0,"err":{}},{"title":"divides","fullTitle":"Calc divides","file":"/w/test/calc.js","duration":1,"err":{"message":"expected 1 to equal 2","stack":"AssertionError"}},{"title":"later","fullTitle":"Calc later","file":"/w/test/calc.js","err":{}}],"pending":[{"title":"later","fullTitle":"Calc later"}],"failures":[],"passes":[]}"#;
        let mut r = TestResults::default();
        parse_json(json, &mut r).unwrap();
        assert_eq!((r.passed, r.failed, r.skipped), (1, 1, 1));
        assert_eq!(r.failing_names(), vec!["Calc > divides"]);
        assert_eq!(r.cases[1].message.as_deref(), Some("expected 1 to equal 2"));
        assert_eq!(r.cases[1].duration_ms, Some(1));
    }

    #[test]
    fn pytest_json_report() {
        let json = r#"{"created":1,"duration":0.1,"exitcode":1,"root":"/w","environment":{},"summary":{"passed":1,"failed":1,"total":3},"tests":[{"nodeid":"tests/test_calc.py::test_add","lineno":1,"outcome":"passed","setup":{"duration":0.001,"outcome":"passed"},"call":{"duration":0.002,"outcome":"passed"},"teardown":{"duration":0.0,"outcome":"passed"}},{"nodeid":"tests/test_calc.py::TestDiv::test_zero","outcome":"failed","setup":{"duration":0.0,"outcome":"passed"},"call":{"duration":0.004,"outcome":"failed","crash":{"path":"/w/tests/test_calc.py","lineno":9,"message":"ZeroDivisionError: division by zero"},"longrepr":"self = <test_calc.TestDiv object at 0x7f>\\n\\n    def test_zero(self):"}},{"nodeid":"tests/test_calc.py::test_skip","outcome":"skipped","setup":{"duration":0.0,"outcome":"skipped","longrepr":"('x', 1, 'Skipped: not today')"}}]}"#;
        let mut r = TestResults::default();
        parse_json(json, &mut r).unwrap();
        assert_eq!((r.passed, r.failed, r.skipped), (1, 1, 1));
        assert_eq!(
            r.failing_names(),
            vec!["tests/test_calc.py::TestDiv > test_zero"]
        );
        assert_eq!(
            r.cases[1].message.as_deref(),
            Some("ZeroDivisionError: division by zero")
        );
        assert_eq!(r.cases[1].duration_ms, Some(4));
        assert_eq!(r.cases[0].duration_ms, Some(3));
    }

    #[test]
    fn json_of_another_shape_is_named_as_such() {
        let mut r = TestResults::default();
        let err = parse_json(r#"{"results": []}"#, &mut r).unwrap_err();
        assert!(err.contains("Jest") && err.contains("rwx-v1-json"), "{err}");
        assert!(r.cases.is_empty());
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
