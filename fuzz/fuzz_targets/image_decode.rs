//! Bytes → a file → `kubestyle_imageio::probe` and `load` (what stylize does with every input
//! image): any format the `image` crate knows, JPEG through libjpeg-turbo's code.
//!
//! libjpeg reports fatal errors by unwinding out of the C code, and the decoder turns that
//! unwinding into an error (`catch_unwind`). libfuzzer-sys' panic hook would abort on it first,
//! so this target installs a silent hook and treats as a crash only a panic that escapes
//! `probe` or `load`.
#![no_main]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use libfuzzer_sys::fuzz_target;

/// 4 MP: bounds what a header may make the decoder allocate.
const MAX_PIXELS: u64 = 4_000_000;

fuzz_target!(|data: &[u8]| {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let path = kubestyle_fuzz::scratch().join("input.img");
    std::fs::write(&path, data).expect("scratch file");
    let run = catch_unwind(AssertUnwindSafe(|| {
        if let Ok((_, (w, h))) = kubestyle_imageio::probe(&path, MAX_PIXELS) {
            assert!(u64::from(w) * u64::from(h) <= MAX_PIXELS);
            if let Ok(img) = kubestyle_imageio::load(&path, MAX_PIXELS, Some(64)) {
                assert_eq!(img.rgb.len(), 3 * img.width * img.height);
                assert!(img.width <= 64 && img.height <= 64);
            }
        }
    }));
    if run.is_err() {
        std::process::abort();
    }
});
