//! Instance normalisation fused with the activation and the residual add ([`norm_apply`]).

use rayon::prelude::*;

use crate::BLOCK_FLOATS;
use crate::act::Act;
use crate::stats::Stats;

/// Instance-norm epsilon of both networks (PyTorch's default).
pub const EPS: f32 = 1e-5;

/// What follows the normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    None,
    Relu,
    Sigmoid,
}

/// A channel whose spread is within float rounding of its mean (standard deviation at most
/// 2⁻²⁰ of it, a few ulps of f32) is constant: its values differ only by the order in which the
/// convolution summed them. The references (PyTorch, onnxruntime) compute exactly equal values
/// there and normalise them to exactly `beta`; normalising the rounding noise instead would
/// multiply it by `gamma / sqrt(EPS)` (≈ 316 × gamma) at every layer of a flat image and, after
/// a dozen layers, turn a uniform input into noise (measured: up to 101 levels on a 1×1 image).
/// Such channels get `beta`.
pub fn is_constant(mean: f32, var: f32) -> bool {
    let floor = mean.abs() * (1.0 / (1u32 << 16) as f32);
    var <= floor * floor
}

/// Instance normalisation with per-channel `gamma`, `beta` and the given statistics, then
/// `post`, then `+ residual` — in one pass over `x`.
pub fn norm_apply(
    x: &mut Act,
    stats: &Stats,
    gamma: &[f32],
    beta: &[f32],
    post: Post,
    residual: Option<&Act>,
) {
    let c = x.c;
    assert!(stats.mean.len() == c && gamma.len() == c && beta.len() == c);
    let scale: Vec<f32> = (0..c)
        .map(|i| {
            if is_constant(stats.mean[i], stats.var[i]) {
                0.0
            } else {
                gamma[i] / (stats.var[i] + EPS).sqrt()
            }
        })
        .collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - stats.mean[i] * scale[i]).collect();
    // Repeat the per-channel vectors to a span of whole pixels at least 64 long, so that the
    // inner loops are long and branch-free (and vectorise) whatever the channel count.
    let span = 64usize.div_ceil(c) * c;
    let (scale, shift) = (scale.repeat(span / c), shift.repeat(span / c));
    let block = (BLOCK_FLOATS / span).max(1) * span;
    // Each block's loops on 16 floats at a time where the CPU can.
    let apply = |chunk: &mut [f32], res: Option<&[f32]>| {
        crate::simd::with_avx512(|| apply_block(chunk, res, span, &scale, &shift, post))
    };
    match residual {
        Some(r) => {
            assert_eq!(r.data.len(), x.data.len(), "residual of another shape");
            x.data
                .par_chunks_mut(block)
                .zip(r.data.par_chunks(block))
                .for_each(|(d, r)| apply(d, Some(r)));
        }
        None => x.data.par_chunks_mut(block).for_each(|d| apply(d, None)),
    }
}

/// `chunk` normalised, activated and (with `res`) added to, `span` values at a time.
#[inline(always)]
fn apply_block(
    chunk: &mut [f32],
    res: Option<&[f32]>,
    span: usize,
    scale: &[f32],
    shift: &[f32],
    post: Post,
) {
    for (i, part) in chunk.chunks_mut(span).enumerate() {
        let lane = scale.iter().zip(shift);
        match post {
            Post::None => part
                .iter_mut()
                .zip(lane)
                .for_each(|(v, (a, b))| *v = *v * a + b),
            Post::Relu => part
                .iter_mut()
                .zip(lane)
                .for_each(|(v, (a, b))| *v = (*v * a + b).max(0.0)),
            Post::Sigmoid => part
                .iter_mut()
                .zip(lane)
                .for_each(|(v, (a, b))| *v = 1.0 / (1.0 + (-(*v * a + b)).exp())),
        }
        if let Some(r) = res {
            let r = &r[i * span..i * span + part.len()];
            part.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_apply_normalises_activates_and_adds() {
        let mut x = Act {
            c: 2,
            h: 1,
            w: 2,
            data: vec![1.0, -4.0, 3.0, 4.0],
        };
        let res = Act {
            c: 2,
            h: 1,
            w: 2,
            data: vec![10.0, 20.0, 30.0, 40.0],
        };
        let s = Stats::of(&x);
        norm_apply(&mut x, &s, &[1.0, 2.0], &[0.0, 0.5], Post::Relu, Some(&res));
        let e = (1.0f32 + EPS).sqrt();
        let want = [
            10.0,
            20.0 + 0.0,
            30.0 + 1.0 / e,
            40.0 + 2.0 / ((16.0 + EPS).sqrt() / 4.0) + 0.5,
        ];
        for (g, w) in x.data.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{:?} vs {want:?}", x.data);
        }
    }
}
