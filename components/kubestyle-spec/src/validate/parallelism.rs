//! `parallelism`.

use super::Diagnostics;
use crate::Parallelism;
use crate::bounds::{THREADS, TRANSFERS};

pub(super) fn validate(p: &Parallelism, d: &mut Diagnostics) {
    d.range("parallelism.transfers", p.transfers.into(), TRANSFERS);
    if let Some(t) = p.threads {
        d.range("parallelism.threads", t.into(), THREADS);
    }
}
