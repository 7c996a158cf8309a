//! The words the spec, the pipeline and the stages share: the style grammar ([`style`]), the
//! network architectures ([`architecture`]), and stylize's backends and devices ([`device`]).
//! Each is defined here once; the spec validates with them, the stages parse with them.

pub mod architecture;
pub mod device;
pub mod style;

pub use architecture::ArchitectureName;
pub use device::{Backend, Device};
pub use style::{StyleRef, StyleSpec};
