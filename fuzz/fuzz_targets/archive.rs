//! The layer archive reader: untrusted bytes from a shared cache or a registry are unpacked
//! into a fresh directory, or refused; nothing escapes the directory, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_oci::{Compression, Expected, apply_layer};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let compression = match mode % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let root = tempfile::tempdir().expect("a temp dir");
    let dest = root.path().join("layer");
    std::fs::create_dir(&dest).expect("the layer dir");
    let _ = apply_layer(rest, compression, &dest, Expected::default());
    // Whatever was written stays under `root`.
    for entry in std::fs::read_dir(root.path()).expect("readable") {
        let name = entry.expect("an entry").file_name();
        assert_eq!(name, "layer", "the archive wrote beside its directory");
    }
});
