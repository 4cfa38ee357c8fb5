//! Records the index keeps beside entries: the archive each layer was shipped as, pulled images
//! and the tags they resolved from, and entries of shared caches found broken.

use rusqlite::{OptionalExtension, params};
use strata_key::{CacheKey, LayerDigest};

use crate::error::StoreError;
use crate::local::Index;

/// How long an entry of a shared cache found broken is not asked for again.
pub const BROKEN_ENTRY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The OCI archive a layer was last shipped as (digests in `sha256:<hex>` form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRecord {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

impl Index<'_> {
    pub fn record_archive(
        &self,
        layer: &LayerDigest,
        archive: &ArchiveRecord,
    ) -> Result<(), StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute(
            "INSERT OR REPLACE INTO archives (layer, digest, size, diff_id) VALUES (?1, ?2, ?3, ?4)",
            params![
                layer.to_hex(),
                archive.digest,
                archive.size as i64,
                archive.diff_id
            ],
        )
        .map_err(self.cache.index_err("record a layer archive"))?;
        Ok(())
    }

    pub fn archive_of(&self, layer: &LayerDigest) -> Result<Option<ArchiveRecord>, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.query_row(
            "SELECT digest, size, diff_id FROM archives WHERE layer = ?1",
            params![layer.to_hex()],
            |r| {
                Ok(ArchiveRecord {
                    digest: r.get(0)?,
                    size: r.get::<_, i64>(1)?.max(0) as u64,
                    diff_id: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(self.cache.index_err("read a layer archive record"))
    }

    /// The layer unpacked from the archive `digest`, if the cache has it.
    pub fn layer_for_archive(&self, digest: &str) -> Result<Option<LayerDigest>, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        let layer: Option<String> = db
            .query_row(
                "SELECT layer FROM archives WHERE digest = ?1",
                params![digest],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.cache.index_err("read a layer archive record"))?;
        drop(db);
        Ok(layer
            .and_then(|l| LayerDigest::parse(&l))
            .filter(|l| self.cache.layers().has(l)))
    }

    /// Records a pulled image: its layers (bottom first) and its config document.
    pub fn record_image(
        &self,
        manifest: &str,
        layers: &[LayerDigest],
        config: &str,
    ) -> Result<(), StoreError> {
        let layers: Vec<String> = layers.iter().map(|l| l.to_hex()).collect();
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute(
            "INSERT OR REPLACE INTO images (manifest, layers, config) VALUES (?1, ?2, ?3)",
            params![
                manifest,
                serde_json::to_string(&layers).expect("serializes"),
                config
            ],
        )
        .map_err(self.cache.index_err("record an image"))?;
        Ok(())
    }

    /// A pulled image's layers (bottom first) and config, if every layer is still here.
    pub fn image(&self, manifest: &str) -> Result<Option<(Vec<LayerDigest>, String)>, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        let row: Option<(String, String)> = db
            .query_row(
                "SELECT layers, config FROM images WHERE manifest = ?1",
                params![manifest],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.cache.index_err("read an image"))?;
        drop(db);
        let Some((layers, config)) = row else {
            return Ok(None);
        };
        let layers: Vec<String> = serde_json::from_str(&layers).unwrap_or_default();
        let layers: Option<Vec<LayerDigest>> =
            layers.iter().map(|l| LayerDigest::parse(l)).collect();
        Ok(layers
            .filter(|ls| ls.iter().all(|l| self.cache.layers().has(l)))
            .map(|ls| (ls, config)))
    }

    /// Remembers that the entry for `key` in the shared cache at `location` is broken (a blob
    /// missing or corrupt), so that runs in the next [`BROKEN_ENTRY_TTL`] build the task instead
    /// of downloading it again. The mark expires: someone may repair the shared cache.
    pub fn mark_unusable(&self, key: &CacheKey, location: &str) -> Result<(), StoreError> {
        let now = crate::durability::now_ms();
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute(
            "DELETE FROM broken_remote_entries WHERE until_ms <= ?1",
            params![now],
        )
        .map_err(self.cache.index_err("forget expired broken shared entries"))?;
        db.execute(
            "INSERT OR REPLACE INTO broken_remote_entries (key, location, until_ms) VALUES (?1, ?2, ?3)",
            params![
                key.to_hex(),
                location,
                now + BROKEN_ENTRY_TTL.as_millis() as i64
            ],
        )
        .map_err(self.cache.index_err("record a broken shared entry"))?;
        Ok(())
    }

    pub fn is_unusable(&self, key: &CacheKey, location: &str) -> Result<bool, StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.query_row(
            "SELECT 1 FROM broken_remote_entries WHERE key = ?1 AND location = ?2 AND until_ms > ?3",
            params![key.to_hex(), location, crate::durability::now_ms()],
            |_| Ok(()),
        )
        .optional()
        .map(|found| found.is_some())
        .map_err(self.cache.index_err("read broken shared entries"))
    }

    /// Remembers which manifest an image reference resolved to, for runs without the registry.
    pub fn record_image_tag(&self, reference: &str, manifest: &str) -> Result<(), StoreError> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.execute(
            "INSERT OR REPLACE INTO image_tags (reference, manifest) VALUES (?1, ?2)",
            params![reference, manifest],
        )
        .map_err(self.cache.index_err("record an image tag"))?;
        Ok(())
    }

    /// The manifest an image reference last resolved to.
    pub fn image_tag(&self, reference: &str) -> Option<String> {
        let db = self.cache.db.lock().expect("index lock poisoned");
        db.query_row(
            "SELECT manifest FROM image_tags WHERE reference = ?1",
            params![reference],
            |r| r.get(0),
        )
        .optional()
        .ok()
        .flatten()
    }
}
