//! Test helpers shared by the unit tests: pseudo-random data and a direct reference convolution.

use crate::act::{Act, reflect};

/// Straightforward reference: upsample, reflect-pad, convolve, all on planar data.
pub(crate) fn reference(
    x: &Act,
    w: &[f32],
    dims: [usize; 4],
    bias: Option<&[f32]>,
    s: usize,
    up: usize,
) -> Act {
    let [cout, cin, k, _] = dims;
    let (hu, wu) = (x.h * up, x.w * up);
    let p = k / 2;
    let ho = (hu + 2 * p - k) / s + 1;
    let wo = (wu + 2 * p - k) / s + 1;
    let mut out = Act::zeros(cout, ho, wo);
    for yo in 0..ho {
        for xo in 0..wo {
            for co in 0..cout {
                let mut acc = bias.map_or(0.0f64, |b| b[co] as f64);
                for ci in 0..cin {
                    for ky in 0..k {
                        for kx in 0..k {
                            let yy = reflect((yo * s + ky) as isize - p as isize, hu) / up;
                            let xx = reflect((xo * s + kx) as isize - p as isize, wu) / up;
                            acc += x.data[(yy * x.w + xx) * cin + ci] as f64
                                * w[((co * cin + ci) * k + ky) * k + kx] as f64;
                        }
                    }
                }
                out.data[(yo * wo + xo) * cout + co] = acc as f32;
            }
        }
    }
    out
}

pub(crate) fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}
