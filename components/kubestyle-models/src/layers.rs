//! Building blocks shared by both networks.

use burn::module::{Module, Param};
use burn::tensor::module::{conv2d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions, PadMode};
use burn::tensor::{Device, Tensor, TensorData};

pub const EPS: f32 = 1e-5;

thread_local! {
    static NEXT_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
}

/// Restart parameter numbering. Networks call this before building, so the same weights always
/// get the same parameter ids and a package's bytes depend only on its weights.
pub fn reset_param_ids() {
    NEXT_ID.with(|c| c.set(1));
}

/// A parameter with the next deterministic id.
pub fn param<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    let id = NEXT_ID.with(|c| {
        let v = c.get();
        c.set(v + 1);
        v
    });
    Param::initialized(burn::module::ParamId::from(id), t)
}

/// Optional nearest ×`upsample`, reflection padding of `k / 2`, then a plain convolution with
/// stride `stride` (the `ConvLayer` / `UpsampleConvLayer` of fast_neural_style).
#[derive(Module, Debug)]
pub struct ReflectConv {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub stride: usize,
    pub upsample: usize,
}

impl ReflectConv {
    /// Zero weights of the given shape (to be loaded over).
    pub fn zeros(
        shape: [usize; 4],
        bias: bool,
        stride: usize,
        upsample: usize,
        device: &Device,
    ) -> Self {
        ReflectConv {
            weight: param(Tensor::zeros(shape, device)),
            bias: bias.then(|| param(Tensor::zeros([shape[0]], device))),
            stride,
            upsample,
        }
    }

    pub fn from_data(
        weight: TensorData,
        bias: Option<TensorData>,
        stride: usize,
        upsample: usize,
        device: &Device,
    ) -> Self {
        ReflectConv {
            weight: param(Tensor::from_data(weight, device)),
            bias: bias.map(|b| param(Tensor::from_data(b, device))),
            stride,
            upsample,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.upsample > 1 {
            let f = self.upsample as f32;
            interpolate(
                x,
                InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([f, f]),
            )
        } else {
            x
        };
        let k = self.weight.dims()[2];
        let p = k / 2;
        let x = if p > 0 {
            x.pad([(p, p), (p, p)], PadMode::Reflect)
        } else {
            x
        };
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            ConvOptions::new([self.stride, self.stride], [0, 0], [1, 1], 1),
        )
    }
}

/// Per-channel normalisation over H×W with biased variance, then `x * scale + shift` where
/// `scale` and `shift` are `[C]`. Computed as one multiply-add over the image.
pub fn instance_norm(x: Tensor<4>, weight: Tensor<1>, bias: Tensor<1>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let flat = x.reshape([n, c, h * w]);
    let (var, mean) = flat.clone().var_mean_bias(2); // [n, c, 1]
    let scale = var
        .add_scalar(EPS)
        .sqrt()
        .recip()
        .mul(weight.reshape([1, c, 1]));
    let shift = bias.reshape([1, c, 1]).sub(mean.mul(scale.clone()));
    flat.mul(scale).add(shift).reshape([n, c, h, w])
}

/// Affine instance normalisation (PyTorch `InstanceNorm2d(affine=True)`).
#[derive(Module, Debug)]
pub struct InstanceNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
}

impl InstanceNorm {
    pub fn zeros(c: usize, device: &Device) -> Self {
        InstanceNorm {
            weight: param(Tensor::zeros([c], device)),
            bias: param(Tensor::zeros([c], device)),
        }
    }

    pub fn from_data(weight: TensorData, bias: TensorData, device: &Device) -> Self {
        InstanceNorm {
            weight: param(Tensor::from_data(weight, device)),
            bias: param(Tensor::from_data(bias, device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        instance_norm(x, self.weight.val(), self.bias.val())
    }
}

/// Conditional instance normalisation: per-style tables `gamma`, `beta` of shape
/// `[styles, C]`, mixed by the style weights.
#[derive(Module, Debug)]
pub struct CondInstanceNorm {
    pub gamma: Param<Tensor<2>>,
    pub beta: Param<Tensor<2>>,
}

impl CondInstanceNorm {
    pub fn zeros(styles: usize, c: usize, device: &Device) -> Self {
        CondInstanceNorm {
            gamma: param(Tensor::zeros([styles, c], device)),
            beta: param(Tensor::zeros([styles, c], device)),
        }
    }

    pub fn from_data(gamma: TensorData, beta: TensorData, device: &Device) -> Self {
        CondInstanceNorm {
            gamma: param(Tensor::from_data(gamma, device)),
            beta: param(Tensor::from_data(beta, device)),
        }
    }

    /// `style` is `[1, styles]`, already normalised to sum 1.
    pub fn forward(&self, x: Tensor<4>, style: Tensor<2>) -> Tensor<4> {
        let c = self.gamma.dims()[1];
        let g = style.clone().matmul(self.gamma.val()).reshape([c]);
        let b = style.matmul(self.beta.val()).reshape([c]);
        instance_norm(x, g, b)
    }
}
