//! UTF-8 bytes → `kubestyle_spec::parse` (what `pipeline run | validate | render | submit` do
//! with a spec file after reading it): every error must carry its field, and an accepted spec
//! must serialise and parse again to the same spec.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match kubestyle_spec::parse(text) {
        Ok(spec) => {
            let yaml = serde_yaml_ng::to_string(&spec).expect("an accepted spec serialises");
            let again = kubestyle_spec::parse(&yaml).expect("an accepted spec parses again");
            assert_eq!(
                serde_json::to_value(&spec).unwrap(),
                serde_json::to_value(&again).unwrap()
            );
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
