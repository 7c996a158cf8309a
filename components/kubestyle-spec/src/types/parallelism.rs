//! `parallelism`: how much runs at once.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounds;

/// How much runs at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Parallelism {
    /// Downloads and uploads in flight at once.
    #[serde(default = "four")]
    #[schemars(range(min = bounds::TRANSFERS.min, max = bounds::TRANSFERS.max))]
    pub transfers: u16,
    /// CPU threads for the forward passes (default: all cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = bounds::THREADS.min, max = bounds::THREADS.max))]
    pub threads: Option<u32>,
}

fn four() -> u16 {
    4
}

impl Default for Parallelism {
    fn default() -> Self {
        Parallelism {
            transfers: 4,
            threads: None,
        }
    }
}
