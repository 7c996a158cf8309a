//! Where stylize computes: the [`Backend`] (`--backend`, the spec's `stylize.backend`) and the
//! [`Device`] (`--device`, `stylize.device`).

use std::fmt;
use std::str::FromStr;

/// The stylize backend (`stylize.backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The stylize stage chooses.
    #[default]
    Auto,
    /// Pure Rust, on the CPU only.
    Flex,
    /// libtorch.
    Tch,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Auto, Backend::Flex, Backend::Tch];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Flex => "flex",
            Backend::Tch => "tch",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Backend::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| format!("{s:?}: expected auto, flex or tch"))
    }
}

/// Where stylize computes (`stylize.device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The stylize stage chooses.
    #[default]
    Auto,
    Cpu,
    /// `cuda` (`None`: the default GPU) or `cuda:N`.
    Cuda(Option<u32>),
}

impl Device {
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(None) => f.write_str("cuda"),
            Device::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<u32>().ok())
                .map(|n| Device::Cuda(Some(n)))
                .ok_or_else(|| format!("{s:?}: expected auto, cpu, cuda or cuda:N")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in Backend::ALL {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
            assert_eq!(b.to_string(), b.as_str());
        }
        assert_eq!(
            "torch".parse::<Backend>().unwrap_err(),
            "\"torch\": expected auto, flex or tch"
        );
        assert!("Flex".parse::<Backend>().is_err());
    }

    #[test]
    fn devices_round_trip() {
        assert_eq!("cuda:1".parse::<Device>(), Ok(Device::Cuda(Some(1))));
        assert_eq!(Device::Cuda(Some(1)).to_string(), "cuda:1");
        for d in ["auto", "cpu", "cuda", "cuda:0", "cuda:1"] {
            assert_eq!(d.parse::<Device>().unwrap().to_string(), d);
        }
        assert!(Device::Cuda(None).is_cuda() && !Device::Cpu.is_cuda());
        for bad in ["gpu", "CPU", "cuda:", "cuda:-1", "cudax", "cuda:4294967296"] {
            assert_eq!(
                bad.parse::<Device>().unwrap_err(),
                format!("{bad:?}: expected auto, cpu, cuda or cuda:N")
            );
        }
    }
}
