//! The entry document a shared cache serves: any bytes are an entry for the key asked, or
//! refused; what is accepted survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_cache::EntryDocument;
use strata_key::CacheKey;

fuzz_target!(|data: &[u8]| {
    let other = CacheKey::from_hash(blake3::hash(b"fuzz"));
    let _ = EntryDocument::from_json(data, &other);
    // The key its own inputs hash to: the path a genuine entry takes.
    let Ok(doc) = serde_json::from_slice::<EntryDocument>(data) else {
        return;
    };
    let key = doc.inputs.key();
    if let Some(entry) = EntryDocument::from_json(data, &key) {
        assert_eq!(entry.key, key);
        let again = EntryDocument::from_json(&entry.to_json(), &key);
        assert_eq!(again.as_ref(), Some(&entry));
    }
});
