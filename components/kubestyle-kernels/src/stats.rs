//! Per-channel instance-norm statistics ([`Stats`]) and the block moments they combine.

use rayon::prelude::*;

use crate::BLOCK_FLOATS;
use crate::act::Act;

/// Per-channel mean and biased variance over H × W.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

impl Stats {
    /// Combine per-block `(sum, sum of squares)` partials, in block order.
    pub(crate) fn from_partials(
        partials: &[(Vec<f64>, Vec<f64>)],
        c: usize,
        count: usize,
    ) -> Stats {
        let mut s = vec![0f64; c];
        let mut q = vec![0f64; c];
        for (ps, pq) in partials {
            for ch in 0..c {
                s[ch] += ps[ch];
                q[ch] += pq[ch];
            }
        }
        let n = count.max(1) as f64;
        let mean: Vec<f64> = s.iter().map(|v| v / n).collect();
        let var = q
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / n - m * m).max(0.0) as f32)
            .collect();
        Stats {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            var,
        }
    }

    /// Statistics of an activation (what [`Conv::forward`](crate::Conv::forward) returns
    /// alongside its output).
    pub fn of(x: &Act) -> Stats {
        let c = x.c;
        let block = (BLOCK_FLOATS / c.max(1)).max(1) * c;
        let partials: Vec<(Vec<f64>, Vec<f64>)> = x
            .data
            .par_chunks(block)
            .map(|b| crate::simd::with_avx512(|| moments(b, c)))
            .collect();
        Stats::from_partials(&partials, c, x.h * x.w)
    }
}

/// Per-channel sums for statistics gathered piece by piece, e.g. band by band over an image
/// that is never whole in memory. Pieces are added in order; the result is the same however the
/// image is cut up to float rounding (f64 sums).
#[derive(Debug, Clone)]
pub struct Moments {
    c: usize,
    count: usize,
    sum: Vec<f64>,
    sq: Vec<f64>,
}

impl Moments {
    pub fn new(c: usize) -> Moments {
        Moments {
            c,
            count: 0,
            sum: vec![0.0; c],
            sq: vec![0.0; c],
        }
    }

    /// Add NHWC data (whole pixels of `c` channels), in parallel blocks combined in order.
    pub fn add(&mut self, data: &[f32]) {
        let c = self.c;
        let block = (BLOCK_FLOATS / c.max(1)).max(1) * c;
        let partials: Vec<(Vec<f64>, Vec<f64>)> = data
            .par_chunks(block)
            .map(|b| crate::simd::with_avx512(|| moments(b, c)))
            .collect();
        for (ps, pq) in partials {
            for ch in 0..c {
                self.sum[ch] += ps[ch];
                self.sq[ch] += pq[ch];
            }
        }
        self.count += data.len() / c.max(1);
    }

    /// Mean and biased variance of everything added.
    pub fn stats(&self) -> Stats {
        Stats::from_partials(&[(self.sum.clone(), self.sq.clone())], self.c, self.count)
    }
}

/// Per-channel sum and sum of squares of NHWC data.
#[inline(always)]
fn moments(data: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    // Accumulate over spans of whole pixels (long, vectorisable inner loops), fold per channel.
    let span = 64usize.div_ceil(c) * c;
    let mut s = vec![0f64; span];
    let mut q = vec![0f64; span];
    for part in data.chunks(span) {
        for ((s, q), &v) in s.iter_mut().zip(q.iter_mut()).zip(part) {
            let v = v as f64;
            *s += v;
            *q += v * v;
        }
    }
    let mut sc = vec![0f64; c];
    let mut qc = vec![0f64; c];
    for (i, (s, q)) in s.iter().zip(&q).enumerate() {
        sc[i % c] += s;
        qc[i % c] += q;
    }
    (sc, qc)
}

/// A block's `moments` when the caller wants statistics (else nothing).
pub(crate) fn block_moments(dst: &[f32], c: usize, want_stats: bool) -> (Vec<f64>, Vec<f64>) {
    if want_stats {
        crate::simd::with_avx512(|| moments(dst, c))
    } else {
        (Vec::new(), Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_mean_and_biased_variance() {
        let x = Act {
            c: 2,
            h: 1,
            w: 4,
            data: vec![1.0, 10.0, 2.0, 10.0, 3.0, 10.0, 4.0, 10.0],
        };
        let s = Stats::of(&x);
        assert_eq!(s.mean, vec![2.5, 10.0]);
        assert_eq!(s.var, vec![1.25, 0.0]);
    }
}
