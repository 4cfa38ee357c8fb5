//! The entry document a remote stores under a cache key.

use serde::{Deserialize, Serialize};
use strata_key::{CacheKey, ExportedEnv, KeyInputs, LayerDigest, WorkspaceFile};
use strata_oci::OciDigest;

/// Changes whenever the entry document changes incompatibly; a reader ignores entries of another
/// schema (as a miss).
///
/// Signatures (`signatures`) did not change it: the member is optional and added, every other
/// member means what it meant. A reader that knows nothing of signatures ignores the member
/// (entries are read without `deny_unknown_fields`) and reads a signed entry as before; a reader
/// that knows them reads an entry without the member as unsigned. Bumping the schema would
/// instead have made every machine not yet upgraded miss on every entry written by an upgraded
/// one, and the reverse, for no gain in safety: a reader that requires signatures refuses an
/// unsigned entry whatever its schema.
pub const ENTRY_SCHEMA: u32 = 1;

/// A signature of an entry: `key` names the signing key (the `NAME` of `NAME:BASE64`), `sig` is
/// the base64 of its ed25519 signature of the entry's signed form
/// ([`crate::signing::signed_form`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySignature {
    pub key: String,
    pub sig: String,
}

/// A blob an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: OciDigest,
    pub size: u64,
}

/// A layer's archive: an OCI image layer (tar+zstd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    pub digest: OciDigest,
    pub size: u64,
    /// The digest of the uncompressed tar stream.
    pub diff_id: OciDigest,
}

/// A cached task result as shared between machines: everything the local index keeps, with the
/// layer and log as blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDocument {
    pub schema: u32,
    pub key: CacheKey,
    pub task: String,
    /// The layer's content digest (strata's tree digest: the name the key recipe uses).
    pub layer: LayerDigest,
    pub archive: ArchiveRef,
    pub env: ExportedEnv,
    pub inputs: KeyInputs,
    pub workspace_files: Vec<WorkspaceFile>,
    pub exit_code: i32,
    pub duration_ms: u64,
    pub log: BlobRef,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Whether the layer has a `workspace/` directory: what a filtered task that uses this one
    /// reads of it for its key (`layer_parts.rs`). `Some(false)` lets such a child's key be
    /// known before the layer is downloaded (so their downloads overlap instead of following
    /// one another); the claim is checked when the layer arrives. `None`: not said (a writer
    /// from before this member, or it could not tell).
    ///
    /// Added without a schema change, like `signatures`: an older reader ignores it. An older
    /// reader that checks signatures computes the signed form without it and so refuses a
    /// signed entry that has it, until it is upgraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_workspace: Option<bool>,
    /// Signatures of everything above, one per key the writer signed with; absent when unsigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<EntrySignature>,
}

impl EntryDocument {
    /// Parses an entry fetched for `key`. An entry of another schema, for another key, or whose
    /// recorded inputs do not hash to its key is refused (`None`): it was written by another
    /// version of strata, or tampered with.
    pub fn from_json(bytes: &[u8], key: &CacheKey) -> Option<EntryDocument> {
        let entry: EntryDocument = serde_json::from_slice(bytes).ok()?;
        (entry.schema == ENTRY_SCHEMA && entry.key == *key && entry.inputs.key() == *key)
            .then_some(entry)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("entries serialize")
    }
}
