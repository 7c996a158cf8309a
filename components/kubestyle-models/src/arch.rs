//! Which network a weight file holds, and a strict check of its tensors: defined in
//! [`kubestyle_weights::arch`] (no burn), re-exported here.

pub use kubestyle_weights::arch::*;
