//! Bytes → a `--list` file: `parse_list` (CSV with a header row, or one entry a line; the
//! first byte picks CSV or text and the column asked for) and `resolve_entry` of every entry
//! against a local and an S3 list. Never a panic; every entry is trimmed and non-empty, and
//! an S3 list never yields a local path.
#![no_main]

use kubestyle_download::lists::{parse_list, resolve_entry};
use kubestyle_manifest::Location;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let is_csv = flags & 1 == 1;
    let column = match (flags >> 1) & 3 {
        0 => None,
        1 => Some("uri"),
        2 => Some("1"),
        _ => Some("99"),
    };
    let Ok(entries) = parse_list(text, is_csv, column.filter(|_| is_csv)) else {
        return;
    };
    let local: Location = "/lists/l.txt".parse().unwrap();
    let s3: Location = "s3://bkt/lists/l.txt".parse().unwrap();
    for e in entries {
        assert!(!e.is_empty() && e.trim() == e, "{e:?}");
        let _ = resolve_entry(&e, &local);
        if let Ok(loc) = resolve_entry(&e, &s3) {
            assert!(matches!(loc, Location::S3 { .. }), "{e:?} → {loc:?}");
        }
    }
});
