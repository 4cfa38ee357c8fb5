//! Where the workspace enters: which tasks see it, where, and so which files a run must
//! capture. A task sees the workspace only through a *source* it reaches by `use`: a `git/clone`
//! of the checkout (placed at its `path`, with `.git` when `preserve-git-dir` is true), or, in
//! strata's own files, a task with a `filter` or `workspace: true`. What it sees is narrowed by
//! its own `filter`, and only that enters its key.

use std::borrow::Cow;
use std::collections::BTreeSet;

use strata_key::{Workspace, WorkspaceFile};
use strata_pipeline::{Dialect, Filter, Pipeline, Task, TaskKind, Visibility};

use crate::workspace_tree::Origin;

/// How one source lays the checkout into `/workspace`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SourceMount {
    /// Prepended to every path: `""`, or a relative directory ending in `/`.
    pub(crate) prefix: String,
    /// Whether the checkout's `.git` comes with it.
    pub(crate) git_dir: bool,
}

impl SourceMount {
    /// The whole checkout at the root of `/workspace`, without `.git`.
    pub(crate) fn root() -> SourceMount {
        SourceMount {
            prefix: String::new(),
            git_dir: false,
        }
    }

    /// From `with.path` (`./`, `src/app`, `.`): a clean relative prefix, or an error for a path
    /// that leaves the workspace.
    pub(crate) fn at(path: &str, git_dir: bool) -> Result<SourceMount, String> {
        let mut parts = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(format!("`path: {path}` leaves the workspace")),
                p => parts.push(p),
            }
        }
        if path.starts_with('/') {
            return Err(format!(
                "`path: {path}` must be relative to the workspace directory"
            ));
        }
        let mut prefix = parts.join("/");
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Ok(SourceMount { prefix, git_dir })
    }
}

/// One visible workspace file: where the task sees it, and the captured file it is.
#[derive(Debug, Clone)]
pub(crate) struct VisibleFile {
    /// The captured file, with the path the task sees (the source's prefix added).
    pub(crate) file: WorkspaceFile,
    /// Where it comes from: the captured workspace, or a used task's layer.
    pub(crate) origin: Origin,
    /// Whether it enters the key (not when a `cache-key: excluded` filter entry selects it).
    pub(crate) keyed: bool,
}

/// For every task, the sources it reaches.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkspacePlan {
    reach: Vec<BTreeSet<SourceMount>>,
    /// (filter, mounts) of every wanted task that sees anything, for the capture.
    wanted: Vec<(Option<Filter>, Vec<SourceMount>)>,
}

impl WorkspacePlan {
    /// `mount_of(i)`: the mount of source task `i` (its `with` resolved).
    pub(crate) fn new(
        pipeline: &Pipeline,
        wanted: &[bool],
        mut mount_of: impl FnMut(usize) -> Result<SourceMount, String>,
    ) -> Result<WorkspacePlan, (usize, String)> {
        let index =
            |n: &strata_pipeline::TaskName| pipeline.tasks.iter().position(|t| &t.name == n);
        let mut reach: Vec<BTreeSet<SourceMount>> = vec![BTreeSet::new(); pipeline.tasks.len()];
        for i in pipeline.topological_order() {
            let task = &pipeline.tasks[i];
            let mut r: BTreeSet<SourceMount> = task
                .uses
                .iter()
                .filter_map(index)
                .flat_map(|p| reach[p].iter().cloned())
                .collect();
            match &task.kind {
                TaskKind::Source(_) => {
                    r.insert(mount_of(i).map_err(|e| (i, e))?);
                }
                _ if asks_for_workspace(pipeline.dialect, task) => {
                    r.insert(SourceMount::root());
                }
                _ => {}
            }
            reach[i] = r;
        }
        let wanted = pipeline
            .tasks
            .iter()
            .enumerate()
            .filter(|(i, _)| wanted[*i] && !reach[*i].is_empty())
            // A filter with expressions is known when the task starts: the capture reads
            // everything the task could see.
            .map(|(i, t)| {
                (
                    t.filter.clone().filter(|f| !f.is_templated()),
                    reach[i].iter().cloned().collect(),
                )
            })
            .collect();
        Ok(WorkspacePlan { reach, wanted })
    }

    /// Whether any task that runs sees the workspace at all (else nothing is captured).
    pub(crate) fn needs_capture(&self) -> bool {
        !self.wanted.is_empty()
    }

    /// Whether some source brings the checkout's `.git`.
    pub(crate) fn needs_git_dir(&self) -> bool {
        self.wanted
            .iter()
            .any(|(_, mounts)| mounts.iter().any(|m| m.git_dir))
    }

    /// Whether some task sees the captured file at `path`: the capture reads only these.
    pub(crate) fn wants(&self, path: &str) -> bool {
        self.wanted.iter().any(|(filter, mounts)| {
            mounts
                .iter()
                .any(|m| sees(m, filter.as_ref(), path).is_some())
        })
    }

    /// How many sources task `i` reaches (0: it sees no workspace).
    pub(crate) fn sees_workspace(&self, i: usize) -> bool {
        !self.reach[i].is_empty()
    }

    /// The files task `i` sees through `filter` (its own, expressions resolved), sorted by the
    /// path it sees them at.
    pub(crate) fn visible(
        &self,
        ws: &Workspace,
        i: usize,
        filter: Option<&Filter>,
    ) -> Vec<VisibleFile> {
        let mut out: Vec<VisibleFile> = Vec::new();
        for m in &self.reach[i] {
            for f in &ws.files {
                if let Some((path, keyed)) = sees(m, filter, &f.path) {
                    let origin = Origin::Captured(f.path.clone());
                    let mut file = f.clone();
                    if let Cow::Owned(path) = path {
                        file.path = path.into();
                    }
                    out.push(VisibleFile {
                        file,
                        origin,
                        keyed,
                    });
                }
            }
        }
        if self.reach[i].len() > 1 {
            out.sort_by(|a, b| a.file.path.cmp(&b.file.path));
            out.dedup_by(|a, b| a.file.path == b.file.path);
        }
        out
    }
}

/// In strata's own files a task asks for the workspace with a `filter` or `workspace: true`.
fn asks_for_workspace(dialect: Dialect, task: &Task) -> bool {
    dialect == Dialect::Strata && (task.filter.is_some() || task.workspace)
}

/// The path at which a task with `filter` sees the captured file `path` through mount `m`, if
/// it sees it at all, and whether the file is keyed. Runs for every file and task: the path is
/// copied only under a prefix.
fn sees<'p>(
    m: &SourceMount,
    filter: Option<&Filter>,
    path: &'p str,
) -> Option<(Cow<'p, str>, bool)> {
    if !m.git_dir && (path == ".git" || path.starts_with(".git/")) {
        return None;
    }
    let seen = if m.prefix.is_empty() {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("{}{path}", m.prefix))
    };
    match filter.map(|f| f.visibility(&seen)) {
        None | Some(Visibility::Keyed) => Some((seen, true)),
        Some(Visibility::Unkeyed) => Some((seen, false)),
        Some(Visibility::Hidden) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use strata_key::{ContentDigest, FileKind};

    fn pipeline(path: &str, text: &str) -> Pipeline {
        strata_pipeline::parse_str(Path::new(path), text).unwrap()
    }

    fn ws(paths: &[&str]) -> Workspace {
        Workspace {
            root: "/ws".into(),
            files: paths
                .iter()
                .map(|p| WorkspaceFile {
                    path: (*p).into(),
                    mode: 0o644,
                    kind: FileKind::File {
                        digest: ContentDigest::from_hash(blake3::hash(p.as_bytes())),
                        size: 1,
                    },
                })
                .collect(),
        }
    }

    fn mount_from_with(p: &Pipeline) -> impl FnMut(usize) -> Result<SourceMount, String> + '_ {
        |i| match &p.tasks[i].kind {
            TaskKind::Source(s) => SourceMount::at(
                s.path.as_ref().map_or("./", |t| t.raw.as_str()),
                s.preserve_git_dir.as_ref().is_some_and(|t| t.raw == "true"),
            ),
            _ => unreachable!(),
        }
    }

    #[test]
    fn rwx_only_descendants_of_a_clone_see_the_workspace() {
        let p = pipeline(
            ".rwx/ci.yml",
            "tasks:
  - key: packages
    run: apt-get install -y jq
    filter: [src]
  - key: code
    call: git/clone 2.0.8
    with: {repository: https://github.com/o/r.git, ref: main, path: app}
  - key: build
    use: [packages, code]
    run: make
  - key: test
    use: build
    filter: [app/tests]
    run: make test
",
        );
        let plan = WorkspacePlan::new(&p, &[true; 4], mount_from_with(&p)).unwrap();
        let w = ws(&["Makefile", "src/a.c", "tests/t.sh"]);
        // A filter alone does not bring the workspace in an RWX file.
        assert!(!plan.sees_workspace(0));
        let seen = |i: usize| -> Vec<String> {
            plan.visible(&w, i, p.tasks[i].filter.as_ref())
                .iter()
                .map(|v| v.file.path.to_string())
                .collect()
        };
        assert_eq!(seen(2), ["app/Makefile", "app/src/a.c", "app/tests/t.sh"]);
        assert_eq!(seen(3), ["app/tests/t.sh"]);
        assert!(plan.wants("tests/t.sh") && plan.wants("src/a.c"));
        assert!(!plan.needs_git_dir());
    }

    #[test]
    fn strata_files_ask_with_filter_or_workspace_and_pass_it_down() {
        let p = pipeline(
            "strata.yml",
            "tasks:
  - key: system
    run: apt-get install -y gcc
  - key: build
    use: system
    filter: [src]
    run: make
  - key: test
    use: build
    run: ./tests/run.sh
  - key: docs
    workspace: true
    filter: ['!src']
    run: make docs
",
        );
        let plan = WorkspacePlan::new(&p, &[true; 4], |_| unreachable!()).unwrap();
        let w = ws(&["README", "src/a.c", "tests/run.sh"]);
        assert!(!plan.sees_workspace(0), "a system task sees no workspace");
        let seen = |i: usize| -> Vec<String> {
            plan.visible(&w, i, p.tasks[i].filter.as_ref())
                .iter()
                .map(|v| v.file.path.to_string())
                .collect()
        };
        assert_eq!(seen(1), ["src/a.c"]);
        // Reaching a task that sees the workspace gives all of it, narrowed by its own filter.
        assert_eq!(seen(2), ["README", "src/a.c", "tests/run.sh"]);
        assert_eq!(
            seen(3),
            Vec::<String>::new(),
            "`!src` alone selects nothing"
        );
    }

    #[test]
    fn capture_reads_only_what_some_task_sees() {
        let p = pipeline(
            "strata.yml",
            "tasks:
  - key: a
    filter: ['src/**/*.c']
    run: x
  - key: b
    run: y
",
        );
        let plan = WorkspacePlan::new(&p, &[true, true], |_| unreachable!()).unwrap();
        assert!(plan.wants("src/x/y.c"));
        assert!(!plan.wants("docs/big.pdf"));
        // Only `b` is wanted: nothing at all is captured.
        let plan = WorkspacePlan::new(&p, &[false, true], |_| unreachable!()).unwrap();
        assert!(!plan.needs_capture());
    }

    #[test]
    fn git_dir_only_through_preserving_sources() {
        let p = pipeline(
            ".mint/ci.yml",
            "tasks:
  - key: code
    call: mint/git-clone 1.6.0
    with: {repository: x, ref: main, preserve-git-dir: true}
  - key: t
    use: code
    run: git log -1
",
        );
        let plan = WorkspacePlan::new(&p, &[true, true], mount_from_with(&p)).unwrap();
        assert!(plan.needs_git_dir());
        let w = ws(&[".git/HEAD", "a"]);
        assert_eq!(plan.visible(&w, 1, p.tasks[1].filter.as_ref()).len(), 2);
        assert!(SourceMount::at("../x", false).is_err());
        assert!(SourceMount::at("/abs", false).is_err());
        assert_eq!(
            SourceMount::at("./sub/dir/", false).unwrap().prefix,
            "sub/dir/"
        );
    }
}
