use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The environment a task hands to the tasks that `use` it: what its parents handed it, then
/// what it wrote into `$STRATA_ENV`. `PATH` is kept apart as a list of directories, most
/// important first, because exported `PATH`s are joined, not replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedEnv {
    pub vars: BTreeMap<String, String>,
    pub path: Vec<String>,
}

impl ExportedEnv {
    /// Merges parents' environments in `use` order: a later parent wins a variable, and its
    /// `PATH` entries come first.
    pub fn merge<'a>(parents: impl IntoIterator<Item = &'a ExportedEnv>) -> ExportedEnv {
        let mut out = ExportedEnv::default();
        for p in parents {
            out.vars
                .extend(p.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            let mut path = p.path.clone();
            path.append(&mut out.path);
            out.path = path;
        }
        out.dedup_path();
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
}
