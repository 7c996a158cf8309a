//! Bytes → `open_weights_bytes` (the onnx header reader `open_weights` uses) → the
//! architecture checks and bounded reads.
#![no_main]

use std::path::Path;

use kubestyle_weights::weights::open_weights_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.onnx");
    if let Ok(file) = open_weights_bytes(path, data.to_vec(), &kubestyle_fuzz::LIMITS) {
        kubestyle_fuzz::exercise(&file);
    }
});
