//! The networks on kubestyle's own CPU kernels ([`kubestyle_kernels`]): the default on the
//! pure-Rust CPU path (`--kernels fused`). Same weights as the burn modules (read from them once),
//! same arithmetic up to float rounding; the parity tests run both paths against PyTorch and
//! onnxruntime.
//!
//! Instance-norm statistics can be recorded and replayed ([`NormStats`]): tiled inference
//! records them on a downscaled copy of the whole image and every tile then normalises with those
//! shared statistics instead of its own.

use burn::module::Param;
use burn::tensor::Tensor;
pub use kubestyle_kernels::Stats;
use kubestyle_kernels::{Act, Conv, Post, norm_apply};
use kubestyle_manifest::StageError;

use crate::Network;
use crate::layers::ReflectConv;

/// Where each instance norm gets its statistics from.
#[derive(Debug)]
pub enum NormStats<'a> {
    /// From its own input (the networks as trained).
    Own,
    /// From its own input, and append them here (one entry per norm layer, in order).
    Record(&'a mut Vec<Stats>),
    /// From this list (recorded earlier), one entry per norm layer, in order.
    Replay(&'a [Stats]),
}

/// A layer: convolution, then (conditional) instance norm unless it is TransformerNet's last.
#[derive(Debug, Clone)]
struct Layer {
    conv: Conv,
    /// Affine parameters: `[C]` for TransformerNet, `[styles × C]` tables for MultiStyle26.
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// Either network, ready for the CPU kernels.
#[derive(Debug, Clone)]
pub struct FusedNet {
    multistyle: bool,
    layers: Vec<Layer>,
}

fn vec1<const D: usize>(p: &Param<Tensor<D>>) -> Vec<f32> {
    p.val()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

fn conv(rc: &ReflectConv) -> Conv {
    let d = rc.weight.dims();
    Conv::from_oihw(
        &vec1(&rc.weight),
        d,
        rc.bias.as_ref().map(vec1),
        rc.stride,
        rc.upsample,
    )
}

impl FusedNet {
    /// Read a loaded network's weights (on any device) into kernel layouts.
    pub fn new(net: &Network) -> FusedNet {
        match net {
            Network::TransformerNet(m) => {
                let mut layers = Vec::new();
                let mut push = |c: &ReflectConv, n: Option<&crate::layers::InstanceNorm>| {
                    let (gamma, beta) = n.map_or((Vec::new(), Vec::new()), |n| {
                        (vec1(&n.weight), vec1(&n.bias))
                    });
                    layers.push(Layer {
                        conv: conv(c),
                        gamma,
                        beta,
                    })
                };
                push(&m.conv1, Some(&m.in1));
                push(&m.conv2, Some(&m.in2));
                push(&m.conv3, Some(&m.in3));
                for r in &m.res {
                    push(&r.conv1, Some(&r.in1));
                    push(&r.conv2, Some(&r.in2));
                }
                push(&m.deconv1, Some(&m.in4));
                push(&m.deconv2, Some(&m.in5));
                push(&m.deconv3, None);
                FusedNet {
                    multistyle: false,
                    layers,
                }
            }
            Network::MultiStyle26(m) => {
                let layers = m
                    .contract
                    .iter()
                    .chain(m.res.iter().flat_map(|r| [&r.a, &r.b]))
                    .chain(&m.expand)
                    .map(|l| Layer {
                        conv: conv(&l.conv),
                        gamma: vec1(&l.norm.gamma),
                        beta: vec1(&l.norm.beta),
                    })
                    .collect();
                FusedNet {
                    multistyle: true,
                    layers,
                }
            }
        }
    }

    /// Stylise planar RGB in 0..1 (`[3, h, w]`); `style` is already validated and normalised to
    /// sum 1. Returns planar RGB in 0..1 of the same size.
    pub fn stylize(
        &self,
        rgb: &[f32],
        h: usize,
        w: usize,
        style: &[f32],
        mut stats: NormStats<'_>,
    ) -> Result<Vec<f32>, StageError> {
        if rgb.len() != 3 * h * w || h == 0 || w == 0 {
            return Err(StageError::InputInvalid(format!(
                "image data of {} values for 3×{h}×{w}",
                rgb.len()
            )));
        }
        if let NormStats::Replay(s) = &stats {
            let norms = self.layers.iter().filter(|l| !l.gamma.is_empty()).count();
            if s.len() != norms {
                return Err(StageError::Internal(format!(
                    "{} recorded statistics for {norms} norm layers",
                    s.len()
                )));
            }
        }
        let scale = if self.multistyle { 1.0 } else { 255.0 };
        let x = Act::from_planar(rgb, 3, h, w, 4, scale);
        let mut next = 0usize;
        let mut layer = |x: &Act, i: usize, post: Post, residual: Option<&Act>| -> Act {
            let l = &self.layers[i];
            let replay = match &stats {
                NormStats::Replay(s) => Some(&s[next]),
                _ => None,
            };
            let t0 = std::time::Instant::now();
            let (mut y, own) = l.conv.forward(x, replay.is_none());
            let t1 = t0.elapsed();
            let st = match (replay, own) {
                (Some(s), _) => s.clone(),
                (None, Some(s)) => s,
                (None, None) => unreachable!("statistics were requested"),
            };
            if let NormStats::Record(v) = &mut stats {
                v.push(st.clone());
            }
            next += 1;
            let c = l.conv.cout;
            let (g, b) = if self.multistyle {
                (mix(&l.gamma, style, c), mix(&l.beta, style, c))
            } else {
                (l.gamma.clone(), l.beta.clone())
            };
            norm_apply(&mut y, &st, &g, &b, post, residual);
            tracing::trace!(
                "{:?} → {}x{}: conv {:.1} ms, norm {:.1} ms",
                l.conv,
                y.h,
                y.w,
                t1.as_secs_f64() * 1e3,
                (t0.elapsed() - t1).as_secs_f64() * 1e3
            );
            y
        };
        // Both networks: 3 contracting layers, residual blocks, 2 upsampling layers, and a last
        // layer (MultiStyle26: conv + norm + sigmoid; TransformerNet: conv with bias only).
        let blocks = if self.multistyle { 6 } else { 5 };
        let mut x = x;
        for i in 0..3 {
            x = layer(&x, i, Post::Relu, None);
        }
        for r in 0..blocks {
            let y = layer(&x, 3 + 2 * r, Post::Relu, None);
            x = layer(&y, 4 + 2 * r, Post::None, Some(&x));
        }
        let up = 3 + 2 * blocks;
        let x = layer(&x, up, Post::Relu, None);
        let x = layer(&x, up + 1, Post::Relu, None);
        let y = if self.multistyle {
            layer(&x, up + 2, Post::Sigmoid, None)
        } else {
            let t0 = std::time::Instant::now();
            let last = &self.layers[up + 2].conv;
            let y = last.forward(&x, false).0;
            tracing::trace!("{last:?}: conv {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
            y
        };
        Ok(y.to_planar(h, w, 1.0 / scale, 0.0, 1.0))
    }
}

/// `style @ table` for a `[styles × c]` table.
fn mix(table: &[f32], style: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0f32; c];
    for (s, row) in style.iter().zip(table.chunks_exact(c)) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += s * v;
        }
    }
    out
}
