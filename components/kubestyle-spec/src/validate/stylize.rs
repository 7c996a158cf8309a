//! `stylize`: backend, device and sizes.

use super::Diagnostics;
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
    if st.max_size.is_some_and(|m| m < 4) {
        d.push("stylize.max_size", "must be at least 4");
    }
}
