//! `parallelism`.

use super::Diagnostics;
use crate::Parallelism;

pub(super) fn validate(p: &Parallelism, d: &mut Diagnostics) {
    if p.transfers == 0 {
        d.push("parallelism.transfers", "must be at least 1");
    }
    if p.threads == Some(0) {
        d.push("parallelism.threads", "must be at least 1");
    }
}
