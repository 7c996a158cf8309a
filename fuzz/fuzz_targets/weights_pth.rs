//! Bytes → a `.pth` file → `open_weights` (zip or legacy pickle header through pytorch-reader)
//! → the architecture checks and bounded reads. pytorch-reader reads storages from the file,
//! so the input is written to one.
#![no_main]

use kubestyle_weights::weights::open_weights;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kubestyle_fuzz::scratch().join("input.pth");
    std::fs::write(&path, data).expect("write the input");
    if let Ok(file) = open_weights(&path, &kubestyle_fuzz::LIMITS) {
        kubestyle_fuzz::exercise(&file);
    }
});
