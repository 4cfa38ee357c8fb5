//! A task's `outputs` (what it produces besides its layer and exports) and its `retry`: the
//! model read from the file by `parse/outputs.rs` and honoured by the engine.

use crate::diagnostic::Location;
use crate::filter::Filter;
use crate::model::Text;

/// `outputs:` of a task. The default (no `outputs`) changes nothing.
#[derive(Debug, Clone, Default)]
pub struct TaskOutputs {
    /// `artifacts: [{key, path}]`: files or directories kept with the entry and copied out by
    /// `strata run --artifacts DIR`.
    pub artifacts: Vec<ArtifactDecl>,
    /// `test-results: [{path}]`: JUnit XML (or RWX's `rwx-v1-json`) files, globs allowed,
    /// parsed after the task.
    pub test_results: Vec<TestResultsDecl>,
    /// `execution-status.success-exit-codes`: exit codes that count as success (0 always does).
    pub success_exit_codes: Vec<i32>,
    /// `filesystem`: what of the task's writes becomes its layer.
    pub filesystem: FilesystemOutput,
}

impl TaskOutputs {
    /// Whether anything here changes what the task's entry holds: such options enter the key.
    pub fn is_default(&self) -> bool {
        self.artifacts.is_empty()
            && self.test_results.is_empty()
            && self.success_exit_codes.is_empty()
            && matches!(self.filesystem, FilesystemOutput::All)
    }

    /// A stable text of every option that changes the task's entry, for its key.
    pub fn key_text(&self) -> String {
        let mut out = String::new();
        for a in &self.artifacts {
            out.push_str(&format!("artifact {:?} {:?}\n", a.key, a.path.raw));
        }
        for t in &self.test_results {
            out.push_str(&format!("test-results {:?}\n", t.path.raw));
        }
        for c in &self.success_exit_codes {
            out.push_str(&format!("success-exit-code {c}\n"));
        }
        match &self.filesystem {
            FilesystemOutput::All => {}
            FilesystemOutput::None => out.push_str("filesystem false\n"),
            FilesystemOutput::Filtered(f) => {
                out.push_str(&format!(
                    "filesystem workspace {:?} system {:?}\n",
                    f.workspace_patterns, f.system_patterns
                ));
            }
        }
        out
    }
}

/// One `outputs.artifacts` item.
#[derive(Debug, Clone)]
pub struct ArtifactDecl {
    /// `key`: the artifact's name (`DIR/<task>/<key>/`).
    pub key: String,
    /// `path`: relative to the task's working directory (`/workspace`), or absolute.
    pub path: Text,
    pub at: Location,
}

/// One `outputs.test-results` item.
#[derive(Debug, Clone)]
pub struct TestResultsDecl {
    /// A path or glob (`**` crosses directories), relative to `/workspace` or absolute.
    pub path: Text,
    pub at: Location,
}

/// `outputs.filesystem`.
#[derive(Debug, Clone, Default)]
pub enum FilesystemOutput {
    /// Everything the task wrote (the default).
    #[default]
    All,
    /// `false`: the task's layer holds none of its files; its env and values still flow.
    None,
    /// `filter`: only what the patterns keep.
    Filtered(FilesystemFilter),
}

/// `outputs.filesystem.filter`: which of the task's writes its layer keeps, as RWX's
/// `{workspace: [...], system: [...]}` (a plain list: absolute patterns are system ones,
/// relative ones workspace ones). Each side follows `filter`'s rules (the last matching
/// pattern decides; `!` drops); a side with only `!` patterns, or none, keeps everything else.
#[derive(Debug, Clone)]
pub struct FilesystemFilter {
    /// Patterns relative to `/workspace`, as written.
    pub workspace_patterns: Vec<String>,
    /// Absolute patterns, as written.
    pub system_patterns: Vec<String>,
    /// Compiled: paths relative to the workspace.
    pub workspace: Option<Filter>,
    /// Compiled: paths relative to `/`.
    pub system: Option<Filter>,
}

impl FilesystemFilter {
    /// Whether the file at `path` (relative to the root of the task's filesystem, `/`-separated)
    /// stays in the layer. `workspace_dir` is where the workspace is, relative to the root.
    pub fn keeps(&self, path: &str, workspace_dir: &str) -> bool {
        let in_workspace = path == workspace_dir
            || path
                .strip_prefix(workspace_dir)
                .is_some_and(|r| r.starts_with('/'));
        if in_workspace {
            let rel = path[workspace_dir.len()..].trim_start_matches('/');
            rel.is_empty() || self.workspace.as_ref().is_none_or(|f| f.matches(rel))
        } else {
            self.system.as_ref().is_none_or(|f| f.matches(path))
        }
    }

    /// Whether some path under the directory `path` may stay in the layer, so the directory
    /// itself must (it is kept when something under it is).
    pub fn may_keep_under(&self, path: &str, workspace_dir: &str) -> bool {
        if path == workspace_dir
            || workspace_dir.starts_with(&format!("{path}/"))
            || path.is_empty()
        {
            return true;
        }
        match path.strip_prefix(workspace_dir) {
            Some(r) if r.starts_with('/') => self
                .workspace
                .as_ref()
                .is_none_or(|f| f.may_select_under(r.trim_start_matches('/'))),
            _ => self
                .system
                .as_ref()
                .is_none_or(|f| f.may_select_under(path)),
        }
    }

    /// One side's patterns compiled: a side of only `!` patterns keeps the rest.
    pub fn compile(patterns: &[String], absolute: bool) -> Result<Option<Filter>, (usize, String)> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut list: Vec<String> = Vec::new();
        if patterns.iter().all(|p| p.starts_with('!')) {
            list.push("**".into());
        }
        for p in patterns {
            let (neg, rest) = match p.strip_prefix('!') {
                Some(r) => ("!", r),
                None => ("", p.as_str()),
            };
            let rest = if absolute {
                rest.trim_start_matches('/')
            } else {
                rest
            };
            list.push(format!("{neg}{rest}"));
        }
        let offset = usize::from(list.len() > patterns.len());
        Filter::new(&list)
            .map(Some)
            .map_err(|(i, m)| (i.saturating_sub(offset), m))
    }
}

/// `retry:` a failed task runs again, up to `count` more times.
#[derive(Debug, Clone)]
pub struct Retry {
    pub count: u32,
    /// `if: ${{ … }}`: retried only while it is true (evaluated with the task's scope).
    pub condition: Option<Text>,
    /// `action`: a directory the failed attempt wrote under `$RWX_RETRY_ACTIONS`, whose `env/`
    /// files are set for the next attempt.
    pub action: Option<String>,
    pub at: Location,
}
