use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a task hands to the tasks that `use` it besides its files: the variables it wrote into
/// `$STRATA_ENV` (`$RWX_ENV`), those it wrote into `$RWX_CACHE_KEY_EXCLUDED_ENV`, and its values
/// (`$RWX_VALUES`, read with `${{ tasks.X.values.NAME }}`). An entry stores a task's own
/// exports; what it inherited is merged in again at every run, so an excluded value (a commit
/// sha) is always the current one. `PATH` is kept apart as a list of directories, most important
/// first, because exported `PATH`s are joined, not replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedEnv {
    pub vars: BTreeMap<String, String>,
    pub path: Vec<String>,
    /// Given to dependents but never part of their keys (neither name nor value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub excluded: BTreeMap<String, String>,
    /// Values for `${{ tasks.X.values.NAME }}`: a task's own, never inherited.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// The files the task wrote into `$RWX_DYNAMIC_TASKS` (name -> YAML): tasks that join the
    /// run once it succeeds, or is restored. A task's own, never inherited.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dynamic_tasks: BTreeMap<String, String>,
    /// What the task's test result files said (`outputs.test-results`, `$RWX_TEST_RESULTS`).
    /// A task's own, never inherited, never keyed: kept so a restored task reports its tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_results: Option<crate::TestResults>,
}

impl ExportedEnv {
    /// Merges parents' environments in `use` order: a later parent wins a variable, and its
    /// `PATH` entries come first.
    pub fn merge<'a>(parents: impl IntoIterator<Item = &'a ExportedEnv>) -> ExportedEnv {
        let mut out = ExportedEnv::default();
        for p in parents {
            // A variable exported the usual way replaces an excluded one of the same name, and
            // the other way round.
            for (k, v) in &p.vars {
                out.excluded.remove(k);
                out.vars.insert(k.clone(), v.clone());
            }
            for (k, v) in &p.excluded {
                out.vars.remove(k);
                out.excluded.insert(k.clone(), v.clone());
            }
            let mut path = p.path.clone();
            path.append(&mut out.path);
            out.path = path;
        }
        out.dedup_path();
        out
    }

    /// What a task hands on: what it inherited, then its own exports (`own`) on top. Values
    /// are not inherited: `tasks.X.values` names X's own.
    pub fn inherit(inherited: &ExportedEnv, own: &ExportedEnv) -> ExportedEnv {
        let mut out = ExportedEnv::merge([inherited, own]);
        out.values = own.values.clone();
        out.dynamic_tasks = own.dynamic_tasks.clone();
        out.test_results = own.test_results.clone();
        out
    }

    /// Applies a task's own exports on top of what it inherited.
    pub fn with_exports(mut self, exports: BTreeMap<String, String>) -> ExportedEnv {
        for (name, value) in exports {
            if name == "PATH" {
                let mut path: Vec<String> = value
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                path.append(&mut self.path);
                self.path = path;
            } else {
                self.vars.insert(name, value);
            }
        }
        self.dedup_path();
        self
    }

    /// The `PATH` a task sees: exported directories first, then the default.
    pub fn path_value(&self, default: &str) -> String {
        let mut parts: Vec<&str> = self.path.iter().map(String::as_str).collect();
        for d in default.split(':') {
            if !parts.contains(&d) {
                parts.push(d);
            }
        }
        parts.join(":")
    }

    fn dedup_path(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.path.retain(|p| seen.insert(p.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_parent_wins_and_paths_join() {
        let a = ExportedEnv::default().with_exports(BTreeMap::from([
            ("X".into(), "a".into()),
            ("PATH".into(), "/a/bin".into()),
        ]));
        let b = ExportedEnv::default().with_exports(BTreeMap::from([
            ("X".into(), "b".into()),
            ("PATH".into(), "/b/bin:/usr/bin".into()),
        ]));
        let m = ExportedEnv::merge([&a, &b]);
        assert_eq!(m.vars["X"], "b");
        assert_eq!(m.path, vec!["/b/bin", "/usr/bin", "/a/bin"]);
        assert_eq!(m.path_value("/usr/bin:/bin"), "/b/bin:/usr/bin:/a/bin:/bin");
    }

    #[test]
    fn excluded_and_values_travel_apart() {
        let clone = ExportedEnv {
            excluded: BTreeMap::from([("RWX_GIT_COMMIT_SHA".into(), "abc".into())]),
            values: BTreeMap::from([("git-dir-path".into(), ".git".into())]),
            ..ExportedEnv::default()
        };
        let own =
            ExportedEnv::default().with_exports(BTreeMap::from([("BUILT".into(), "yes".into())]));
        let handed = ExportedEnv::inherit(&clone, &own);
        assert_eq!(handed.excluded["RWX_GIT_COMMIT_SHA"], "abc");
        assert_eq!(handed.vars["BUILT"], "yes");
        assert!(handed.values.is_empty(), "values are a task's own");
        // A later export of the same name as a key-excluded variable replaces it.
        let over = ExportedEnv::default()
            .with_exports(BTreeMap::from([("RWX_GIT_COMMIT_SHA".into(), "x".into())]));
        let m = ExportedEnv::merge([&handed, &over]);
        assert!(!m.excluded.contains_key("RWX_GIT_COMMIT_SHA"));
        assert_eq!(m.vars["RWX_GIT_COMMIT_SHA"], "x");
    }
}
