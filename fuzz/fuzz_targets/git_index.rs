//! git's index file as the workspace capture reads it: any bytes are an index or refused,
//! never a panic; what is accepted is sorted, and a path's entry is handed out only when it is
//! that path's one stage-0 entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_key::GitIndex;

fuzz_target!(|data: &[u8]| {
    // Unchecked, so the fuzzer gets past the trailing checksum; then checked, as captures do.
    let _ = GitIndex::parse(data, true);
    let Ok(index) = GitIndex::parse(data, false) else {
        return;
    };
    let paths: Vec<&str> = index.paths().collect();
    assert_eq!(paths.len(), index.len());
    assert!(paths.windows(2).all(|w| w[0] <= w[1]));
    for (i, p) in paths.iter().enumerate() {
        let repeated = (i > 0 && paths[i - 1] == *p) || paths.get(i + 1) == Some(p);
        if repeated {
            assert!(!index.has_clean_candidate(p));
        }
    }
});
