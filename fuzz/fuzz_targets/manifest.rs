//! Bytes → `Manifest::parse` (what `Manifest::read` does after reading the file): JSON, schema
//! check, serde, validation and the volume containment check of every artifact path.
#![no_main]

use std::path::Path;

use kubestyle_manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `read` refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let volume = kubestyle_fuzz::scratch();
    if let Ok(m) = Manifest::parse(text, Path::new("fuzz/manifest.json"), volume) {
        // What a stage does with an accepted manifest: it stays valid and what `write` would
        // write reads back (not compared: JSON floats need not round-trip bit for bit).
        m.validate().expect("accepted manifest validates");
        let json = serde_json::to_string_pretty(&m).expect("serialises");
        Manifest::parse(&json, Path::new("fuzz/again.json"), volume)
            .expect("a serialised manifest reads back");
    }
});
