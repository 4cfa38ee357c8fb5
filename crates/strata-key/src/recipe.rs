//! The inputs of a cache key and how they are hashed. See `docs/cache-key.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{ArtifactDigest, BaseId, CacheKey, LayerDigest, WorkspaceDigest};
use crate::workspace::WorkspaceFile;

/// Changes whenever anything about how keys are computed changes, so that entries written by an
/// older recipe are never mistaken for current ones.
pub const KEY_VERSION: u32 = 4;

/// One layer of the stack a task runs on. The task name is recorded for explanations but not
/// hashed: parents enter the key by what they produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInput {
    pub task: String,
    pub layer: LayerDigest,
}

/// An artifact of another task that a task reads (`${{ tasks.TASK.artifacts.KEY }}`): keyed by
/// its content, so that the reader re-runs when the artifact changes and only then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInput {
    pub task: String,
    pub key: String,
    pub digest: ArtifactDigest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvInput {
    Value(String),
    /// Declared with `cache-key: excluded`: its presence is keyed, its value is not (nor
    /// recorded).
    Excluded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub version: u32,
    pub base: BaseId,
    /// The layers under the task, bottom first: its `use` parents' stacks, flattened in order.
    pub parents: Vec<ParentInput>,
    pub workspace: WorkspaceDigest,
    /// The task's whole environment (inherited from parents, then declared), by name.
    pub env: BTreeMap<String, EnvInput>,
    pub command: String,
    /// How the command is run (executor, working directory, shell): anything that changes
    /// behaviour without being part of the task's text.
    pub executor: String,
    /// The artifacts of other tasks it reads, by task then key. Hashed only when there are
    /// some, so that the keys of every other task are what they were before artifacts could be
    /// read (and entries recorded before then still deserialize).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactInput>,
}

impl KeyInputs {
    /// Hashes a length-prefixed encoding of every input. Written by hand rather than derived so
    /// that it cannot change by accident when a type gains a field.
    pub fn key(&self) -> CacheKey {
        let mut h = blake3::Hasher::new();
        let mut field = |tag: &str, bytes: &[u8]| {
            h.update(tag.as_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field("version", &self.version.to_le_bytes());
        field("base", self.base.to_hex().as_bytes());
        for p in &self.parents {
            field("parent", p.layer.to_hex().as_bytes());
        }
        field("workspace", self.workspace.to_hex().as_bytes());
        for (name, value) in &self.env {
            field("env", name.as_bytes());
            match value {
                EnvInput::Value(v) => field("value", v.as_bytes()),
                EnvInput::Excluded => field("excluded", b""),
            }
        }
        field("command", self.command.as_bytes());
        field("executor", self.executor.as_bytes());
        for a in &self.artifacts {
            field("artifact", a.task.as_bytes());
            field("artifact-key", a.key.as_bytes());
            field("artifact-digest", a.digest.to_hex().as_bytes());
        }
        CacheKey::from_hash(h.finalize())
    }
}

/// What is stored beside an entry so that a later miss can be explained: the hashed inputs and
/// the workspace files behind the workspace digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedInputs {
    pub inputs: KeyInputs,
    pub workspace_files: Vec<WorkspaceFile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyInputs {
        KeyInputs {
            version: KEY_VERSION,
            base: BaseId::from_hash(blake3::hash(b"base")),
            parents: vec![ParentInput {
                task: "deps".into(),
                layer: LayerDigest::from_hash(blake3::hash(b"layer")),
            }],
            workspace: WorkspaceDigest::from_hash(blake3::hash(b"ws")),
            env: BTreeMap::from([("CI".into(), EnvInput::Value("true".into()))]),
            command: "make".into(),
            executor: "sandbox".into(),
            artifacts: Vec::new(),
        }
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = sample();
        let k = base.key();
        let mut v = base.clone();
        v.command = "make test".into();
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.env.insert("CI".into(), EnvInput::Value("false".into()));
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.env.insert("TOKEN".into(), EnvInput::Excluded);
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.parents[0].layer = LayerDigest::from_hash(blake3::hash(b"other"));
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.workspace = WorkspaceDigest::from_hash(blake3::hash(b"ws2"));
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.base = BaseId::from_hash(blake3::hash(b"b2"));
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.executor = "vm".into();
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.artifacts.push(ArtifactInput {
            task: "build".into(),
            key: "bundle".into(),
            digest: ArtifactDigest::from_hash(blake3::hash(b"a")),
        });
        let with_artifact = v.key();
        assert_ne!(with_artifact, k);
        v.artifacts[0].digest = ArtifactDigest::from_hash(blake3::hash(b"b"));
        assert_ne!(v.key(), with_artifact);
    }

    #[test]
    fn parent_names_do_not_change_the_key() {
        let a = sample();
        let mut b = a.clone();
        b.parents[0].task = "renamed".into();
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn the_recipe_is_stable() {
        // If this changes, KEY_VERSION must change too.
        assert_eq!(sample().key().short(), "1b74858aa033");
    }
}
