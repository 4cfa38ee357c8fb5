//! `outputs:` and `retry:` of a task, every sub-key of RWX's schema accepted: those strata
//! honours become [`TaskOutputs`] and [`Retry`], the others (RWX's UI and storage) a note.

use crate::diagnostic::Diagnostic;
use crate::model::{Note, TaskName, Unsupported};
use crate::outputs::{
    ArtifactDecl, FilesystemFilter, FilesystemOutput, Retry, TaskOutputs, TestResultsDecl,
};
use crate::parse::options::whole_number;
use crate::parse::scalars::{as_bool, as_map, as_string, as_text, key_name, unknown_key};
use crate::yaml::{Node, Value};

const OUTPUT_KEYS: &[&str] = &[
    "artifacts",
    "test-results",
    "execution-status",
    "filesystem",
    "values",
    "problems",
    "logs",
];
const ARTIFACT_KEYS: &[&str] = &["key", "path"];
const TEST_RESULT_KEYS: &[&str] = &["path", "options"];
const TEST_RESULT_OPTIONS: &[&str] = &["framework", "language"];
const FILESYSTEM_KEYS: &[&str] = &["filter", "deduplicate"];
const FILESYSTEM_FILTER_KEYS: &[&str] = &["workspace", "system"];
const RETRY_KEYS: &[&str] = &["count", "if", "action"];

/// What an `outputs` or `retry` may add beside the task: notes, keys refused by `run`.
pub(crate) struct OutputExtras<'a> {
    pub(crate) task: Option<TaskName>,
    pub(crate) unsupported: &'a mut Vec<Unsupported>,
    pub(crate) notes: &'a mut Vec<Note>,
}

impl OutputExtras<'_> {
    fn note(&mut self, node: &Node, message: String) {
        self.notes.push(Note {
            warning: false,
            at: node.at,
            message,
        });
    }

    fn later(&mut self, node: &Node, what: String) {
        self.unsupported.push(Unsupported {
            key: what,
            task: self.task.clone(),
            at: node.at,
        });
    }
}

pub(crate) fn build_outputs(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    extras: &mut OutputExtras<'_>,
) -> TaskOutputs {
    let mut out = TaskOutputs::default();
    let Some(entries) = as_map(node, "`outputs`", errors) else {
        return out;
    };
    for (key, value) in entries {
        let Some(k) = key_name(key, errors) else {
            continue;
        };
        match k.as_str() {
            "artifacts" => out.artifacts = artifacts(value, errors),
            "test-results" => out.test_results = test_results(value, errors),
            "execution-status" => {
                for (key, v) in as_map(value, "`outputs.execution-status`", errors).unwrap_or_default() {
                    match key_name(key, errors).as_deref() {
                        Some("success-exit-codes") => {
                            out.success_exit_codes = exit_codes(v, errors)
                        }
                        Some(other) => errors.push(unknown_key(
                            key,
                            other,
                            "`outputs.execution-status`",
                            &["success-exit-codes"],
                        )),
                        None => {}
                    }
                }
            }
            "filesystem" => out.filesystem = filesystem(value, errors, extras),
            // Values flow whether declared or not: the list only documents them.
            "values" => {
                if !matches!(value.value, Value::Seq(_)) {
                    errors.push(value.error(format!(
                        "`outputs.values` must be a list of value names, found {}",
                        value.kind()
                    )));
                }
            }
            "problems" => extras.note(
                key,
                "`outputs.problems` has no effect in strata (RWX shows problems in its UI); \
                 write messages into $RWX_ERRORS to have them in the summary"
                    .into(),
            ),
            "logs" => extras.note(
                key,
                "`outputs.logs` has no effect in strata (logs are kept with the entry and pruned with it)"
                    .into(),
            ),
            other => errors.push(unknown_key(key, other, "`outputs`", OUTPUT_KEYS)),
        }
    }
    out
}

fn artifacts(node: &Node, errors: &mut Vec<Diagnostic>) -> Vec<ArtifactDecl> {
    let Value::Seq(items) = &node.value else {
        errors.push(node.error(format!(
            "`outputs.artifacts` must be a list of `{{key, path}}`, found {}",
            node.kind()
        )));
        return Vec::new();
    };
    let mut out: Vec<ArtifactDecl> = Vec::new();
    for item in items {
        let Some(fields) = as_map(item, "an artifact", errors) else {
            continue;
        };
        let (mut key, mut path) = (None, None);
        for (k, v) in fields {
            match key_name(k, errors).as_deref() {
                Some("key") => key = as_string(v, "an artifact's `key`", errors).map(|s| (s, v)),
                Some("path") => path = as_text(v, "an artifact's `path`", errors),
                Some(other) => errors.push(unknown_key(k, other, "an artifact", ARTIFACT_KEYS)),
                None => {}
            }
        }
        let (Some((key, key_node)), Some(path)) = (key, path) else {
            errors.push(
                item.error("an artifact needs both `key` and `path`")
                    .with_help("for example `- {key: dist, path: build/dist}`"),
            );
            continue;
        };
        if !valid_artifact_key(&key) {
            errors.push(
                key_node
                    .error(format!("invalid artifact key `{key}`"))
                    .with_help("use letters, digits, `.`, `_` and `-`"),
            );
            continue;
        }
        if out.iter().any(|a| a.key == key) {
            errors.push(key_node.error(format!("artifact `{key}` is declared twice")));
            continue;
        }
        if path.raw.trim().is_empty() {
            errors.push(item.error(format!("artifact `{key}` has an empty `path`")));
            continue;
        }
        out.push(ArtifactDecl {
            key,
            path,
            at: item.at,
        });
    }
    out
}

/// An artifact's key names a directory: RWX's `$RWX_ARTIFACTS/NAME` file names, nothing that
/// could climb out.
pub fn valid_artifact_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn test_results(node: &Node, errors: &mut Vec<Diagnostic>) -> Vec<TestResultsDecl> {
    let Value::Seq(items) = &node.value else {
        errors.push(node.error(format!(
            "`outputs.test-results` must be a list of `{{path}}`, found {}",
            node.kind()
        )));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        // A bare string is read as its path: lenient, as RWX's CLI is with lists of paths.
        if let Value::Scalar { .. } = item.value {
            if let Some(path) = as_text(item, "a test results path", errors) {
                out.push(TestResultsDecl { path, at: item.at });
            }
            continue;
        }
        let Some(fields) = as_map(item, "a test results item", errors) else {
            continue;
        };
        let mut path = None;
        for (k, v) in fields {
            match key_name(k, errors).as_deref() {
                Some("path") => path = as_text(v, "a test results `path`", errors),
                Some("options") => {
                    for (ok, _) in as_map(v, "`options`", errors).unwrap_or_default() {
                        match key_name(ok, errors).as_deref() {
                            Some("framework" | "language") => {}
                            Some(other) => errors.push(unknown_key(
                                ok,
                                other,
                                "test results `options`",
                                TEST_RESULT_OPTIONS,
                            )),
                            None => {}
                        }
                    }
                }
                Some(other) => errors.push(unknown_key(
                    k,
                    other,
                    "a test results item",
                    TEST_RESULT_KEYS,
                )),
                None => {}
            }
        }
        match path {
            Some(path) if !path.raw.trim().is_empty() => {
                out.push(TestResultsDecl { path, at: item.at })
            }
            _ => errors.push(
                item.error("a test results item needs a `path`")
                    .with_help("for example `- path: reports/junit.xml`"),
            ),
        }
    }
    out
}

fn exit_codes(node: &Node, errors: &mut Vec<Diagnostic>) -> Vec<i32> {
    let Value::Seq(items) = &node.value else {
        errors.push(node.error(format!(
            "`success-exit-codes` must be a list of exit codes, found {}",
            node.kind()
        )));
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            let n = whole_number(i, "an exit code", 0, errors)?;
            if n > 255 {
                errors.push(i.error(format!("exit code {n} is out of range (0 to 255)")));
                return None;
            }
            Some(n as i32)
        })
        .collect()
}

fn filesystem(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    extras: &mut OutputExtras<'_>,
) -> FilesystemOutput {
    if let Value::Scalar { .. } = node.value {
        return match as_bool(node, "`outputs.filesystem`", errors) {
            Some(false) => FilesystemOutput::None,
            _ => FilesystemOutput::All,
        };
    }
    let Some(fields) = as_map(node, "`outputs.filesystem`", errors) else {
        return FilesystemOutput::All;
    };
    let mut out = FilesystemOutput::All;
    for (k, v) in fields {
        match key_name(k, errors).as_deref() {
            Some("filter") => {
                if let Some(f) = filesystem_filter(v, errors) {
                    out = FilesystemOutput::Filtered(f);
                }
            }
            Some("deduplicate") => {
                let _ = as_bool(v, "`deduplicate`", errors);
                extras.note(
                    k,
                    "`outputs.filesystem.deduplicate` has no effect in strata (layers are content-addressed)".into(),
                );
            }
            Some(other) => errors.push(unknown_key(
                k,
                other,
                "`outputs.filesystem`",
                FILESYSTEM_KEYS,
            )),
            None => {}
        }
    }
    out
}

fn filesystem_filter(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<FilesystemFilter> {
    let mut workspace: Vec<(String, &Node)> = Vec::new();
    let mut system: Vec<(String, &Node)> = Vec::new();
    let list = |n: &'_ Node, what: &str, errors: &mut Vec<Diagnostic>| -> Vec<(String, Node)> {
        match &n.value {
            Value::Seq(items) => items
                .iter()
                .filter_map(|i| as_string(i, what, errors).map(|s| (s, i.clone())))
                .collect(),
            _ => {
                errors.push(n.error(format!(
                    "{what} must be a list of patterns, found {}",
                    n.kind()
                )));
                Vec::new()
            }
        }
    };
    let mut owned: Vec<(String, Node, bool)> = Vec::new();
    match &node.value {
        Value::Seq(_) => {
            for (p, n) in list(node, "`filesystem.filter`", errors) {
                let absolute = p.trim_start_matches('!').starts_with('/');
                owned.push((p, n, absolute));
            }
        }
        Value::Map(fields) => {
            for (k, v) in fields {
                match key_name(k, errors).as_deref() {
                    Some("workspace") => {
                        for (p, n) in list(v, "`filesystem.filter.workspace`", errors) {
                            if p.trim_start_matches('!').starts_with('/') {
                                errors.push(n.error(format!(
                                    "workspace pattern `{p}` must be relative to the workspace"
                                )));
                                continue;
                            }
                            owned.push((p, n, false));
                        }
                    }
                    Some("system") => {
                        for (p, n) in list(v, "`filesystem.filter.system`", errors) {
                            if !p.trim_start_matches('!').starts_with('/') {
                                errors.push(
                                    n.error(format!(
                                        "system pattern `{p}` must be an absolute path"
                                    ))
                                    .with_help("for example `!/root/.npm`"),
                                );
                                continue;
                            }
                            owned.push((p, n, true));
                        }
                    }
                    Some(other) => errors.push(unknown_key(
                        k,
                        other,
                        "`filesystem.filter`",
                        FILESYSTEM_FILTER_KEYS,
                    )),
                    None => {}
                }
            }
        }
        _ => {
            errors.push(node.error(format!(
                "`filesystem.filter` must be a list of patterns or `{{workspace, system}}`, found {}",
                node.kind()
            )));
            return None;
        }
    }
    for (p, n, absolute) in &owned {
        if *absolute {
            system.push((p.clone(), n));
        } else {
            workspace.push((p.clone(), n));
        }
    }
    let before = errors.len();
    let mut compile = |side: &[(String, &Node)], absolute: bool| {
        let patterns: Vec<String> = side.iter().map(|(p, _)| p.clone()).collect();
        match FilesystemFilter::compile(&patterns, absolute) {
            Ok(f) => f,
            Err((i, message)) => {
                if let Some((_, n)) = side.get(i) {
                    errors.push(n.error(message));
                }
                None
            }
        }
    };
    let workspace_filter = compile(&workspace, false);
    let system_filter = compile(&system, true);
    (errors.len() == before).then(|| FilesystemFilter {
        workspace_patterns: workspace.iter().map(|(p, _)| p.clone()).collect(),
        system_patterns: system.iter().map(|(p, _)| p.clone()).collect(),
        workspace: workspace_filter,
        system: system_filter,
    })
}

pub(crate) fn build_retry(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    extras: &mut OutputExtras<'_>,
) -> Option<Retry> {
    let mut retry = Retry {
        count: 0,
        condition: None,
        action: None,
        at: node.at,
    };
    match &node.value {
        Value::Scalar { text, .. } => {
            if text.contains("${{") {
                extras.later(node, "`retry` with an expression".into());
                return None;
            }
            retry.count = whole_number(node, "`retry`", 0, errors)? as u32;
        }
        Value::Map(fields) => {
            let mut count = None;
            for (k, v) in fields {
                match key_name(k, errors).as_deref() {
                    Some("count") => {
                        if matches!(&v.value, Value::Scalar { text, .. } if text.contains("${{")) {
                            extras.later(v, "`retry.count` with an expression".into());
                            return None;
                        }
                        count = whole_number(v, "`retry.count`", 0, errors)
                    }
                    Some("if") => {
                        retry.condition = as_text(v, "`retry.if`", errors);
                        if retry
                            .condition
                            .as_ref()
                            .is_some_and(|c| !c.raw.contains("${{"))
                        {
                            errors
                                .push(v.error("`retry.if` must be an expression like `${{ … }}`"));
                        }
                    }
                    Some("action") => retry.action = as_string(v, "`retry.action`", errors),
                    Some(other) => errors.push(unknown_key(k, other, "`retry`", RETRY_KEYS)),
                    None => {}
                }
            }
            match count {
                Some(c) => retry.count = c as u32,
                None => {
                    errors.push(
                        node.error("`retry` needs a `count`")
                            .with_help("for example `retry: {count: 2}` or `retry: 2`"),
                    );
                    return None;
                }
            }
        }
        Value::Seq(_) => {
            errors.push(node.error("`retry` must be a number or a mapping with `count`"));
            return None;
        }
    }
    Some(retry)
}

#[cfg(test)]
mod tests {
    use crate::outputs::FilesystemOutput;

    fn task(extra: &str) -> Result<crate::Pipeline, String> {
        let text = format!("tasks:\n  - key: t\n    run: 'true'\n{extra}");
        crate::parse_str(std::path::Path::new("p.yml"), &text).map_err(|d| d.to_string())
    }

    #[test]
    fn every_sub_key_of_outputs_is_read() {
        let p = task(
            "    outputs:\n      artifacts:\n        - {key: dist, path: build/dist}\n      test-results:\n        - path: 'reports/**/*.xml'\n          options: {framework: pytest, language: python}\n      execution-status:\n        success-exit-codes: [0, 3]\n      values: [version]\n      problems: [{matcher: eslint}]\n      logs: {retention: 7d}\n      filesystem:\n        deduplicate: true\n        filter:\n          workspace: ['node_modules/**']\n          system: ['!/root/.npm/**']\n    retry: {count: 2, action: debug}\n",
        )
        .unwrap();
        let t = &p.tasks[0];
        assert_eq!(t.outputs.artifacts[0].key, "dist");
        assert_eq!(t.outputs.test_results[0].path.raw, "reports/**/*.xml");
        assert_eq!(t.outputs.success_exit_codes, vec![0, 3]);
        let FilesystemOutput::Filtered(f) = &t.outputs.filesystem else {
            panic!("a filter")
        };
        assert!(f.keeps("workspace/node_modules/a/b.js", "workspace"));
        assert!(!f.keeps("workspace/src/x", "workspace"));
        assert!(!f.keeps("root/.npm/_cacache/x", "workspace"));
        assert!(f.keeps("usr/lib/x", "workspace"));
        let r = t.retry.as_ref().unwrap();
        assert_eq!((r.count, r.action.as_deref()), (2, Some("debug")));
        assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
        assert_eq!(p.notes.len(), 3, "{:?}", p.notes);
    }

    #[test]
    fn bad_outputs_are_located_errors() {
        let e =
            task("    outputs:\n      artifacts:\n        - {key: 'a/b', path: x}\n").unwrap_err();
        assert!(
            e.contains("invalid artifact key `a/b`") && e.contains("p.yml:6"),
            "{e}"
        );
        let e = task("    outputs:\n      artifact: []\n").unwrap_err();
        assert!(e.contains("did you mean `artifacts`"), "{e}");
        let e = task("    outputs:\n      execution-status: {success-exit-codes: [300]}\n")
            .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = task("    outputs:\n      filesystem: {filter: {system: ['tmp']}}\n").unwrap_err();
        assert!(e.contains("must be an absolute path"), "{e}");
        let e = task("    retry: {action: x}\n").unwrap_err();
        assert!(e.contains("`retry` needs a `count`"), "{e}");
        assert_eq!(
            task("    retry: 3\n").unwrap().tasks[0]
                .retry
                .as_ref()
                .unwrap()
                .count,
            3
        );
    }

    #[test]
    fn filesystem_false_and_plain_lists() {
        let p = task("    outputs: {filesystem: false}\n").unwrap();
        assert!(matches!(
            p.tasks[0].outputs.filesystem,
            FilesystemOutput::None
        ));
        let p = task("    outputs: {filesystem: {filter: ['!/tmp/**', 'dist']}}\n").unwrap();
        let FilesystemOutput::Filtered(f) = &p.tasks[0].outputs.filesystem else {
            panic!()
        };
        assert!(!f.keeps("tmp/x", "workspace") && f.keeps("etc/x", "workspace"));
        assert!(f.keeps("workspace/dist/a", "workspace") && !f.keeps("workspace/a", "workspace"));
    }
}
