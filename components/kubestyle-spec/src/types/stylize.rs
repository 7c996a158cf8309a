//! `stylize`: options of the stylize stage, with the [`Backend`] and [`Device`] they name
//! (defined with the stage's other words in `kubestyle_manifest::vocab`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Backend, Device};
use crate::bounds;

/// `stylize.format`: the stage's `--format` values.
pub use kubestyle_manifest::command::stylize::OutFormat as OutputFormat;

/// Options of the stylize stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StylizeOptions {
    /// Longest edge in pixels; larger images are scaled down first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = bounds::MAX_SIZE.min, max = bounds::MAX_SIZE.max))]
    pub max_size: Option<u32>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "auto")]
    pub device: String,
    /// `auto`, `flex` (pure Rust) or `tch` (libtorch).
    #[serde(default = "auto")]
    pub backend: String,
    #[serde(default)]
    pub format: OutputFormat,
    /// Refuse images with more pixels than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = bounds::MAX_PIXELS.min, max = bounds::MAX_PIXELS.max))]
    pub max_pixels: Option<u64>,
    /// Keep the photos' own colours in every style that does not say otherwise (a style opts
    /// out with `~preserve-colour=false`): the stylised luminance with the photo's chrominance
    /// (YIQ). Per style: `7~preserve-colour`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_colour: bool,
    /// Style strength, 0 (the photo) to 1 (the network's output, the default), of every style
    /// that does not set its own (`7~strength=0.6`); blended on the sRGB values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub strength: Option<f32>,
}

fn auto() -> String {
    kubestyle_manifest::command::stylize::AUTO.into()
}

impl Default for StylizeOptions {
    fn default() -> Self {
        StylizeOptions {
            max_size: None,
            device: auto(),
            backend: auto(),
            format: OutputFormat::Keep,
            max_pixels: None,
            preserve_colour: false,
            strength: None,
        }
    }
}

impl StylizeOptions {
    /// `backend` as a [`Backend`]; the error is the validation message. The field keeps the
    /// text so that a wrong value is reported with the spec's other problems, not alone.
    pub fn backend_kind(&self) -> Result<Backend, String> {
        self.backend.parse()
    }

    /// `device` as a [`Device`]; the error is the validation message.
    pub fn device_kind(&self) -> Result<Device, String> {
        self.device.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_auto() {
        let st = StylizeOptions::default();
        assert_eq!(st.backend_kind(), Ok(Backend::Auto));
        assert_eq!(st.device_kind(), Ok(Device::Auto));
    }
}
