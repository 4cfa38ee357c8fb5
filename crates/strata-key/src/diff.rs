//! Why a task misses: the recorded inputs of its latest entry against today's.

use std::collections::BTreeMap;
use std::fmt;

use crate::recipe::{ArtifactInput, EnvInput, ParentInput, RecordedInputs};
use crate::workspace::WorkspaceFile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    KeyVersion {
        old: u32,
        new: u32,
    },
    Base,
    /// One way a host base changed, when both inventories are recorded (replaces [`Difference::Base`]).
    BaseChanged(crate::base::BaseChange),
    ParentAdded {
        task: String,
    },
    ParentRemoved {
        task: String,
    },
    ParentChanged {
        task: String,
    },
    ParentsReordered,
    FileAdded {
        path: String,
    },
    FileRemoved {
        path: String,
    },
    FileChanged {
        path: String,
    },
    FileModeChanged {
        path: String,
        old: u32,
        new: u32,
    },
    EnvAdded {
        name: String,
    },
    EnvRemoved {
        name: String,
    },
    EnvChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    Command {
        old: String,
        new: String,
    },
    Executor {
        old: String,
        new: String,
    },
    /// An artifact of another task it reads (`task.key`) is new, gone or has other content.
    ArtifactAdded {
        artifact: String,
    },
    ArtifactRemoved {
        artifact: String,
    },
    ArtifactChanged {
        artifact: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::KeyVersion { old, new } => {
                write!(f, "key recipe: version {old} -> {new}")
            }
            Difference::Base => write!(f, "base: the base filesystem changed"),
            Difference::BaseChanged(change) => write!(f, "base: {change}"),
            Difference::ParentAdded { task } => write!(f, "parent `{task}`: added"),
            Difference::ParentRemoved { task } => write!(f, "parent `{task}`: removed"),
            Difference::ParentChanged { task } => {
                write!(f, "parent `{task}`: produced a different layer")
            }
            Difference::ParentsReordered => write!(f, "parents: same layers in another order"),
            Difference::FileAdded { path } => write!(f, "file {path}: added"),
            Difference::FileRemoved { path } => write!(f, "file {path}: removed"),
            Difference::FileChanged { path } => write!(f, "file {path}: content changed"),
            Difference::FileModeChanged { path, old, new } => {
                write!(f, "file {path}: mode {old:o} -> {new:o}")
            }
            Difference::EnvAdded { name } => write!(f, "env {name}: added"),
            Difference::EnvRemoved { name } => write!(f, "env {name}: removed"),
            Difference::EnvChanged { name, old, new } => {
                let show = |v: &Option<String>| {
                    v.as_deref()
                        .map_or("(excluded)".to_string(), |v| format!("{v:?}"))
                };
                write!(f, "env {name}: {} -> {}", show(old), show(new))
            }
            Difference::Command { old, new } => {
                write!(f, "command: {:?} -> {:?}", old, new)
            }
            Difference::Executor { old, new } => write!(f, "executor: {old} -> {new}"),
            Difference::ArtifactAdded { artifact } => write!(f, "artifact {artifact}: now read"),
            Difference::ArtifactRemoved { artifact } => {
                write!(f, "artifact {artifact}: no longer read")
            }
            Difference::ArtifactChanged { artifact } => write!(f, "artifact {artifact} changed"),
        }
    }
}

/// Every recorded input that differs, most fundamental first.
pub fn compare(old: &RecordedInputs, new: &RecordedInputs) -> Vec<Difference> {
    let (o, n) = (&old.inputs, &new.inputs);
    let mut out = Vec::new();
    if o.version != n.version {
        out.push(Difference::KeyVersion {
            old: o.version,
            new: n.version,
        });
    }
    if o.base != n.base {
        out.push(Difference::Base);
    }
    compare_parents(&o.parents, &n.parents, &mut out);
    // Files recorded under another version have ids of another kind: every file would differ.
    if o.workspace != n.workspace && o.version == n.version {
        compare_files(&old.workspace_files, &new.workspace_files, &mut out);
    }
    compare_env(&o.env, &n.env, &mut out);
    if o.command != n.command {
        out.push(Difference::Command {
            old: o.command.clone(),
            new: n.command.clone(),
        });
    }
    if o.executor != n.executor {
        out.push(Difference::Executor {
            old: o.executor.clone(),
            new: n.executor.clone(),
        });
    }
    compare_artifacts(&o.artifacts, &n.artifacts, &mut out);
    out
}

fn compare_artifacts(old: &[ArtifactInput], new: &[ArtifactInput], out: &mut Vec<Difference>) {
    let name = |a: &ArtifactInput| format!("{}.{}", a.task, a.key);
    let by_name = |list: &[ArtifactInput]| -> BTreeMap<String, crate::ArtifactDigest> {
        list.iter().map(|a| (name(a), a.digest)).collect()
    };
    let (old, new) = (by_name(old), by_name(new));
    for (artifact, digest) in &new {
        match old.get(artifact) {
            None => out.push(Difference::ArtifactAdded {
                artifact: artifact.clone(),
            }),
            Some(d) if d != digest => out.push(Difference::ArtifactChanged {
                artifact: artifact.clone(),
            }),
            Some(_) => {}
        }
    }
    for artifact in old.keys().filter(|a| !new.contains_key(*a)) {
        out.push(Difference::ArtifactRemoved {
            artifact: artifact.clone(),
        });
    }
}

fn compare_parents(old: &[ParentInput], new: &[ParentInput], out: &mut Vec<Difference>) {
    if old == new {
        return;
    }
    let before = out.len();
    for p in new {
        match old.iter().find(|q| q.task == p.task) {
            None => out.push(Difference::ParentAdded {
                task: p.task.clone(),
            }),
            Some(q) if q.layer != p.layer => out.push(Difference::ParentChanged {
                task: p.task.clone(),
            }),
            Some(_) => {}
        }
    }
    for q in old {
        if !new.iter().any(|p| p.task == q.task) {
            out.push(Difference::ParentRemoved {
                task: q.task.clone(),
            });
        }
    }
    if out.len() == before {
        out.push(Difference::ParentsReordered);
    }
}

fn compare_files(old: &[WorkspaceFile], new: &[WorkspaceFile], out: &mut Vec<Difference>) {
    let old: BTreeMap<&str, &WorkspaceFile> = old.iter().map(|f| (&*f.path, f)).collect();
    let new: BTreeMap<&str, &WorkspaceFile> = new.iter().map(|f| (&*f.path, f)).collect();
    for (path, n) in &new {
        match old.get(path) {
            None => out.push(Difference::FileAdded {
                path: path.to_string(),
            }),
            Some(o) => {
                if o.kind != n.kind {
                    out.push(Difference::FileChanged {
                        path: path.to_string(),
                    });
                }
                if o.mode != n.mode {
                    out.push(Difference::FileModeChanged {
                        path: path.to_string(),
                        old: o.mode,
                        new: n.mode,
                    });
                }
            }
        }
    }
    for path in old.keys() {
        if !new.contains_key(path) {
            out.push(Difference::FileRemoved {
                path: path.to_string(),
            });
        }
    }
}

fn compare_env(
    old: &BTreeMap<String, EnvInput>,
    new: &BTreeMap<String, EnvInput>,
    out: &mut Vec<Difference>,
) {
    let value = |v: &EnvInput| match v {
        EnvInput::Value(s) => Some(s.clone()),
        EnvInput::Excluded => None,
    };
    for (name, n) in new {
        match old.get(name) {
            None => out.push(Difference::EnvAdded { name: name.clone() }),
            Some(o) if o != n => out.push(Difference::EnvChanged {
                name: name.clone(),
                old: value(o),
                new: value(n),
            }),
            Some(_) => {}
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            out.push(Difference::EnvRemoved { name: name.clone() });
        }
    }
}
