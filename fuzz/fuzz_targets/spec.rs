//! UTF-8 bytes → `kubestyle_spec::parse` (what `pipeline run | validate | render | submit` do
//! with a spec file after reading it): every error must carry its field, and an accepted spec
//! must serialise and parse again to the same spec. Seeds include alias bombs and numbers past
//! every bound: `scripts/fuzz.sh` runs it under `-rss_limit_mb=1024`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match kubestyle_spec::parse(text) {
        Ok(spec) => {
            let yaml = serde_yaml_ng::to_string(&spec).expect("an accepted spec serialises");
            // Aliases expanded (up to MAX_EXPANDED_BYTES) may serialise past the file bound,
            // which is then what refuses it: only a spec that fits is parsed again.
            if yaml.len() as u64 > kubestyle_spec::bounds::MAX_SPEC_BYTES {
                return;
            }
            let again = kubestyle_spec::parse(&yaml).expect("an accepted spec parses again");
            assert_eq!(
                serde_json::to_value(&spec).unwrap(),
                serde_json::to_value(&again).unwrap()
            );
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
