//! The pipeline parser with its expressions, in both dialects: any text is a pipeline or a list
//! of diagnostics, never a panic, a hang or an explosion of memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&dialect, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let path = if dialect & 1 == 0 {
        "/fuzz/.rwx/ci.yml"
    } else {
        "/fuzz/strata.yml"
    };
    if let Err(d) = strata_pipeline::parse_str(std::path::Path::new(path), text) {
        // Rendering the diagnostics (cut lines, carets) must not panic either.
        let _ = d.to_string();
    }
});
