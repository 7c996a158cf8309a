//! `stylize`: backend, device and sizes.

use super::Diagnostics;
use crate::bounds::{MAX_PIXELS, MAX_SIZE};
use crate::{Backend, StylizeOptions};

pub(super) fn validate(st: &StylizeOptions, d: &mut Diagnostics) {
    let backend = st.backend_kind();
    if let Err(m) = &backend {
        d.push("stylize.backend", m.as_str());
    }
    if let Err(m) = st.device_kind() {
        d.push("stylize.device", m);
    }
    // On the text, so that a malformed `cuda…` device with flex is reported for both reasons.
    if backend == Ok(Backend::Flex) && st.device.starts_with("cuda") {
        d.push("stylize.device", "the flex backend runs on the CPU only");
    }
    if let Some(m) = st.max_size {
        d.range("stylize.max_size", m.into(), MAX_SIZE);
    }
    if let Some(s) = st.strength
        && !kubestyle_manifest::vocab::style::valid_strength(s)
    {
        d.push(
            "stylize.strength",
            format!("{s} must be a number from 0 to 1"),
        );
    }
    if let Some(m) = st.max_pixels {
        d.range(
            "stylize.max_pixels",
            i64::try_from(m).unwrap_or(i64::MAX),
            MAX_PIXELS,
        );
    }
}
