//! Any bytes given to the snapshot reader give a world or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = delegraph::persist::snapshot::decode(data) {
        // A snapshot that loads must write back to one that loads.
        if let Ok(bytes) = delegraph::persist::snapshot::encode(&w, 0) {
            let _ = delegraph::persist::snapshot::decode(&bytes);
        }
    }
});
