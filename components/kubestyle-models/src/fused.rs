//! The networks on kubestyle's own CPU kernels ([`kubestyle_kernels`]): the default on the
//! pure-Rust CPU path (`--kernels fused`). Same weights as the burn modules (read from them once),
//! same arithmetic up to float rounding; the parity tests run both paths against PyTorch and
//! onnxruntime.
//!
//! Instance-norm statistics can be recorded and replayed ([`NormStats`]): tiled inference
//! records them on a downscaled copy of the whole image and every tile then normalises with those
//! shared statistics instead of its own.

use crate::error::ModelError;
use burn::module::Param;
use burn::tensor::Tensor;
pub use kubestyle_kernels::Stats;
use kubestyle_kernels::{Act, Conv, Post, norm_apply};

use crate::Network;
use crate::buffers::{Buffers, Plan};
use crate::layers::ReflectConv;

/// The input is reflect-padded to a multiple of this (two stride-2 layers, then two ×2).
const INPUT_MULTIPLE: usize = 4;

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
    /// The activation buffers of the last pass, for the next (see [`crate::buffers`]).
    buffers: Buffers,
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
                    buffers: Buffers::default(),
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
                    buffers: Buffers::default(),
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
    ) -> Result<Vec<f32>, ModelError> {
        if rgb.len() != 3 * h * w || h == 0 || w == 0 {
            return Err(ModelError::Invalid(format!(
                "image data of {} values for 3×{h}×{w}",
                rgb.len()
            )));
        }
        if let NormStats::Replay(s) = &stats {
            let norms = self.layers.iter().filter(|l| !l.gamma.is_empty()).count();
            if s.len() != norms {
                return Err(ModelError::Internal(format!(
                    "{} recorded statistics for {norms} norm layers",
                    s.len()
                )));
            }
        }
        // acts[0] is the input, acts[i + 1] the output of step i; a step's input is the
        // previous activation, its residual an earlier one.
        let steps = self.schedule();
        let last = last_uses(&steps);
        // Every activation's size (the input is padded to a multiple of 4), then a buffer slot
        // for each (see `crate::buffers`).
        let m = INPUT_MULTIPLE;
        let (mut ah, mut aw) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let mut sizes = vec![3 * ah * aw];
        for step in &steps {
            let conv = &self.layers[step.layer].conv;
            (ah, aw) = conv.out_dims(ah, aw);
            sizes.push(conv.cout * ah * aw);
        }
        let plan = Plan::new(&sizes, &last);
        let mut slots = self.buffers.take(&plan);
        let buf = slot_buffer(&mut slots, &plan, 0);
        let x = Act::from_planar_in(buf, rgb, 3, h, w, m, self.input_scale());
        let mut acts: Vec<Option<Act>> = vec![Some(x)];
        let mut next = 0usize;
        for (i, step) in steps.iter().enumerate() {
            let l = &self.layers[step.layer];
            let x = acts.last().and_then(Option::as_ref).ok_or_else(|| {
                ModelError::Internal("the previous activation was released".into())
            })?;
            let t0 = std::time::Instant::now();
            let buf = slot_buffer(&mut slots, &plan, i + 1);
            if !step.norm {
                let y = l.conv.forward_in(x, false, buf).0;
                tracing::trace!(
                    "{:?}: conv {:.1} ms",
                    l.conv,
                    t0.elapsed().as_secs_f64() * 1e3
                );
                acts.push(Some(y));
                release(&mut acts, &last, i, &plan, &mut slots);
                continue;
            }
            let replay = match &stats {
                NormStats::Replay(s) => Some(&s[next]),
                _ => None,
            };
            let (mut y, own) = l.conv.forward_in(x, replay.is_none(), buf);
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
            let (g, b) = self.affine(step.layer, style);
            let residual = step.residual.and_then(|r| acts[r].as_ref());
            norm_apply(&mut y, &st, &g, &b, step.post, residual);
            tracing::trace!(
                "{:?} → {}x{}: conv {:.1} ms, norm {:.1} ms",
                l.conv,
                y.h,
                y.w,
                t1.as_secs_f64() * 1e3,
                (t0.elapsed() - t1).as_secs_f64() * 1e3
            );
            acts.push(Some(y));
            release(&mut acts, &last, i, &plan, &mut slots);
        }
        let y = acts
            .pop()
            .flatten()
            .ok_or_else(|| ModelError::Internal("no output activation".into()))?;
        let rgb = y.to_planar(h, w, 1.0 / self.input_scale(), 0.0, 1.0);
        put_back(&mut slots, &plan, steps.len(), y.data);
        self.buffers.keep(slots);
        Ok(rgb)
    }

    /// What the input is multiplied by before the first layer (TransformerNet works in 0..255).
    pub(crate) fn input_scale(&self) -> f32 {
        if self.multistyle { 1.0 } else { 255.0 }
    }

    /// The layers in order with what follows each convolution. Both networks: 3 contracting
    /// layers, residual blocks, 2 upsampling layers, and a last layer (MultiStyle26: conv + norm
    /// + sigmoid; TransformerNet: conv with bias only).
    pub(crate) fn schedule(&self) -> Vec<Step> {
        let blocks = if self.multistyle { 6 } else { 5 };
        let step = |layer, post, residual| Step {
            layer,
            post,
            residual,
            norm: true,
        };
        let mut v: Vec<Step> = (0..3).map(|i| step(i, Post::Relu, None)).collect();
        for r in 0..blocks {
            // The block's input is activation 3 + 2r (the input is activation 0).
            v.push(step(3 + 2 * r, Post::Relu, None));
            v.push(step(4 + 2 * r, Post::None, Some(3 + 2 * r)));
        }
        let up = 3 + 2 * blocks;
        v.push(step(up, Post::Relu, None));
        v.push(step(up + 1, Post::Relu, None));
        v.push(if self.multistyle {
            step(up + 2, Post::Sigmoid, None)
        } else {
            Step {
                layer: up + 2,
                post: Post::None,
                residual: None,
                norm: false,
            }
        });
        v
    }

    /// A norm layer's `(gamma, beta)` for this style mix.
    pub(crate) fn affine(&self, layer: usize, style: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let l = &self.layers[layer];
        if self.multistyle {
            let c = l.conv.cout;
            (mix(&l.gamma, style, c), mix(&l.beta, style, c))
        } else {
            (l.gamma.clone(), l.beta.clone())
        }
    }

    pub(crate) fn conv(&self, layer: usize) -> &Conv {
        &self.layers[layer].conv
    }
}

/// One step of a network's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub layer: usize,
    pub post: Post,
    /// The activation added after `post` (0 = the input, i + 1 = step i's output).
    pub residual: Option<usize>,
    /// Instance norm (with `post`) follows the convolution; else the output is the convolution.
    pub norm: bool,
}

/// For every activation (0 = the input, i + 1 = step i's output), the last step that reads it
/// (as its input or its residual); the output of the last step is never released.
pub(crate) fn last_uses(steps: &[Step]) -> Vec<usize> {
    (0..=steps.len())
        .map(|a| {
            steps
                .iter()
                .enumerate()
                .filter(|(i, s)| *i == a || s.residual == Some(a))
                .map(|(i, _)| i)
                .max()
                .unwrap_or(usize::MAX)
        })
        .collect()
}

/// Release the activations no step after `done` reads, each buffer back into its slot.
fn release(
    acts: &mut [Option<Act>],
    last: &[usize],
    done: usize,
    plan: &Plan,
    slots: &mut [Vec<f32>],
) {
    for (a, (act, l)) in acts.iter_mut().zip(last).enumerate() {
        if *l <= done
            && let Some(act) = act.take()
        {
            put_back(slots, plan, a, act.data);
        }
    }
}

/// The buffer for activation `a`: its slot's if the slot is kept (see `crate::buffers`), else
/// a new one.
fn slot_buffer(slots: &mut [Vec<f32>], plan: &Plan, a: usize) -> Vec<f32> {
    std::mem::take(&mut slots[plan.slot_of[a]])
}

/// Released activation `a`'s buffer back into its slot if the slot is kept, else freed.
fn put_back(slots: &mut [Vec<f32>], plan: &Plan, a: usize, buf: Vec<f32>) {
    let s = plan.slot_of[a];
    if plan.kept[s] {
        slots[s] = buf;
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
