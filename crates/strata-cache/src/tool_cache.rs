//! Tool caches in shared caches: one document per tool cache (`tool-caches/<id>.json`), replaced
//! whole by each writer (last writer wins), holding the *entry* of the execution that wrote it.
//! The entry is a task result like any other (its recorded inputs hash to its key; its layer
//! archive and log are the blobs it names), so a machine without a local tool cache restores it
//! with [`SharedCaches::restore`], verified as every restore is.
//!
//! A document is signed as a whole (domain tag `strata-tool-cache-signature-v1\n`, then the
//! canonical JSON of every member but `signatures`): the tool cache's name, vault, age and entry
//! are all covered, so a writer without a trusted key can neither forge a tool cache nor put
//! another task's signed entry under this name. A remote with trusted keys uses only documents
//! one of them signed, exactly as for entries.

use serde::{Deserialize, Serialize};
use strata_key::CacheKey;
use strata_store::ToolCacheId;

use crate::backend::Access;
use crate::entry::{EntryDocument, EntrySignature};
use crate::shared::{SharedCaches, Warn};
use crate::signing::{Untrusted, verify_signatures, write_canonical};

/// Bumped when the document's members change meaning; other schemas are ignored.
pub const TOOL_CACHE_SCHEMA: u32 = 1;

const SIGNATURE_DOMAIN: &[u8] = b"strata-tool-cache-signature-v1\n";

/// A tool cache as a shared cache holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCacheDocument {
    pub schema: u32,
    pub vault: String,
    pub name: String,
    /// When the execution that wrote it finished (milliseconds since the epoch): its age.
    pub written_ms: i64,
    /// The execution's entry: its layer is the tool cache's content.
    pub entry: EntryDocument,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<EntrySignature>,
}

impl ToolCacheDocument {
    fn signed_form(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("documents serialize");
        if let serde_json::Value::Object(members) = &mut value {
            members.remove("signatures");
        }
        let mut out = SIGNATURE_DOMAIN.to_vec();
        write_canonical(&value, &mut out);
        out
    }

    /// Parses a document fetched for `id`: another schema, another tool cache, or an entry
    /// whose recorded inputs do not hash to its key is refused.
    pub fn from_json(bytes: &[u8], id: &ToolCacheId) -> Option<ToolCacheDocument> {
        let doc: ToolCacheDocument = serde_json::from_slice(bytes).ok()?;
        (doc.schema == TOOL_CACHE_SCHEMA
            && doc.vault == id.vault
            && doc.name == id.name
            && doc.entry.inputs.key() == doc.entry.key)
            .then_some(doc)
    }
}

/// What asking the shared caches for a tool cache found.
#[derive(Debug, Default)]
pub struct ToolCacheLookup {
    /// The first remote (in order) with a usable document, and the document.
    pub found: Option<(usize, ToolCacheDocument)>,
    /// Documents refused because no trusted key signed them: (remote, why).
    pub untrusted: Vec<(String, Untrusted)>,
}

impl SharedCaches {
    /// Publishes the tool cache `id` as holding the entry of `key` to every writable remote
    /// that is up and has that entry (published just before, or by another machine: the same
    /// key's result either way). Returns how many remotes took it.
    pub fn publish_tool_cache(
        &self,
        id: &ToolCacheId,
        key: &CacheKey,
        written_ms: i64,
        warn: Warn<'_>,
    ) -> usize {
        let mut published = 0;
        for (_, remote) in self.up() {
            if remote.backend.access() != Access::ReadWrite {
                continue;
            }
            let result = remote.backend.get_entry(key).and_then(|entry| {
                let Some(entry) = entry else {
                    return Ok(None);
                };
                let mut doc = ToolCacheDocument {
                    schema: TOOL_CACHE_SCHEMA,
                    vault: id.vault.clone(),
                    name: id.name.clone(),
                    written_ms,
                    entry,
                    signatures: Vec::new(),
                };
                let message = doc.signed_form();
                doc.signatures = self
                    .signing()
                    .iter()
                    .map(|k| k.sign_message(&message))
                    .collect();
                let bytes = serde_json::to_vec(&doc).expect("documents serialize");
                let name = id.file_name();
                remote.backend.put_tool_cache(&name, &bytes)?;
                // The entry's blobs may be old: a concurrent prune may have deleted one since
                // the entry was read (`gc_tool_caches.rs`). Then the document goes again,
                // unless another writer has replaced it already.
                let backend = &remote.backend;
                if backend.has_blob(&doc.entry.archive.digest)?
                    && backend.has_blob(&doc.entry.log.digest)?
                {
                    return Ok(Some(true));
                }
                if backend.get_tool_cache(&name)?.as_deref() == Some(&bytes[..]) {
                    backend.delete_tool_cache(&name)?;
                }
                Ok(Some(false))
            });
            match result {
                Ok(Some(true)) => published += 1,
                Ok(Some(false)) => warn(&crate::BackendError::Failed {
                    location: remote.location(),
                    action: format!("publish the tool cache `{id}`"),
                    message:
                        "a concurrent prune deleted a blob it names; the tool cache was withdrawn"
                            .into(),
                }),
                Ok(None) => {}
                // A backend without tool caches (a registry) is not a failing remote.
                Err(crate::BackendError::Unsupported { .. }) => {}
                Err(e) => self.failed(remote, e, warn),
            }
        }
        published
    }

    /// The tool cache `id` from the first remote that has a usable document for it: one
    /// written after `written_after_ms`, signed by a trusted key where the remote has any.
    pub fn lookup_tool_cache(
        &self,
        id: &ToolCacheId,
        written_after_ms: i64,
        warn: Warn<'_>,
    ) -> ToolCacheLookup {
        let mut out = ToolCacheLookup::default();
        for (i, remote) in self.up() {
            let doc = match remote.backend.get_tool_cache(&id.file_name()) {
                Ok(Some(bytes)) => ToolCacheDocument::from_json(&bytes, id),
                Ok(None) => None,
                Err(e) => {
                    self.failed(remote, e, warn);
                    None
                }
            };
            let Some(doc) = doc.filter(|d| d.written_ms > written_after_ms) else {
                continue;
            };
            if !remote.trusted_keys().is_empty()
                && let Err(why) =
                    verify_signatures(&doc.signatures, remote.trusted_keys(), || doc.signed_form())
            {
                out.untrusted.push((remote.location(), why));
                continue;
            }
            out.found = Some((i, doc));
            return out;
        }
        out
    }
}
