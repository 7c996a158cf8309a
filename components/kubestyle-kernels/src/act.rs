//! One image's activation ([`Act`], NHWC) and reflection indexing.

use rayon::prelude::*;

/// One image's activation, NHWC with batch 1: `data[(y * w + x) * c + ch]`.
#[derive(Clone, PartialEq)]
pub struct Act {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl std::fmt::Debug for Act {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Act {}x{}x{}", self.h, self.w, self.c)
    }
}

impl Act {
    /// A `c × h × w` activation in `buf`'s allocation, or a fresh one if `buf` is too small.
    /// The values are unspecified (what `buf` held, zeros past its old length): for outputs the
    /// caller overwrites entirely, without zeroing memory that was already written.
    pub fn reuse(mut buf: Vec<f32>, c: usize, h: usize, w: usize) -> Act {
        let n = c * h * w;
        if buf.capacity() < n {
            // Fresh zeroed pages (calloc), first touched by the parallel writers, rather than
            // a single-threaded fill of a grown buffer.
            return Act::zeros(c, h, w);
        }
        buf.truncate(n);
        buf.resize(n, 0.0);
        Act { c, h, w, data: buf }
    }

    pub fn zeros(c: usize, h: usize, w: usize) -> Act {
        Act {
            c,
            h,
            w,
            data: vec![0.0; c * h * w],
        }
    }

    /// From planar (CHW) data, multiplied by `scale`, reflection-padded at the bottom and right
    /// so that H and W become multiples of `multiple`.
    pub fn from_planar(
        planar: &[f32],
        c: usize,
        h: usize,
        w: usize,
        multiple: usize,
        scale: f32,
    ) -> Act {
        Act::from_planar_in(Vec::new(), planar, c, h, w, multiple, scale)
    }

    /// [`Act::from_planar`] into `buf`'s allocation (see [`Act::reuse`]).
    pub fn from_planar_in(
        buf: Vec<f32>,
        planar: &[f32],
        c: usize,
        h: usize,
        w: usize,
        multiple: usize,
        scale: f32,
    ) -> Act {
        assert_eq!(planar.len(), c * h * w, "planar data of the wrong length");
        let m = multiple.max(1);
        let (hp, wp) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let my: Vec<usize> = (0..hp).map(|i| reflect(i as isize, h)).collect();
        let mx: Vec<usize> = (0..wp).map(|i| reflect(i as isize, w)).collect();
        // Every value is written below.
        let mut out = Act::reuse(buf, c, hp, wp);
        out.data
            .par_chunks_mut(wp * c)
            .enumerate()
            .for_each(|(y, row)| {
                let sy = my[y];
                for (x, px) in row.chunks_exact_mut(c).enumerate() {
                    let sx = mx[x];
                    for (ch, v) in px.iter_mut().enumerate() {
                        *v = planar[(ch * h + sy) * w + sx] * scale;
                    }
                }
            });
        out
    }

    /// The top-left `h × w` region as planar (CHW) data, each value `clamp(v * scale, lo, hi)`.
    pub fn to_planar(&self, h: usize, w: usize, scale: f32, lo: f32, hi: f32) -> Vec<f32> {
        assert!(
            h <= self.h && w <= self.w,
            "crop larger than the activation"
        );
        let c = self.c;
        let mut out = vec![0.0f32; c * h * w];
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(ch, plane)| {
                for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                    let src = &self.data[y * self.w * c..];
                    for (x, v) in row.iter_mut().enumerate() {
                        *v = (src[x * c + ch] * scale).clamp(lo, hi);
                    }
                }
            });
        out
    }
}

/// Reflection (without repeating the edge, like PyTorch's `ReflectionPad2d`) of index `i` into
/// `0..n`.
pub fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pseudo;

    #[test]
    fn reflect_matches_pytorch() {
        // ReflectionPad2d(2) of [0, 1, 2, 3]: [2, 1, 0, 1, 2, 3, 2, 1].
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
        assert_eq!(reflect(-1, 1), 0);
    }

    #[test]
    fn planar_round_trip_with_reflect_padding() {
        let (c, h, w) = (3, 5, 6);
        let planar = pseudo(c * h * w, 7);
        let a = Act::from_planar(&planar, c, h, w, 4, 2.0);
        assert_eq!((a.h, a.w), (8, 8));
        // Row 5 is row 3 reflected (5 → 2*(5-1) - 5 = 3).
        assert_eq!(a.data[(5 * 8) * c], planar[3 * w] * 2.0);
        let back = a.to_planar(h, w, 0.5, -1.0, 1.0);
        assert_eq!(back, planar);
        let stale = vec![f32::NAN; 1000];
        assert_eq!(Act::from_planar_in(stale, &planar, c, h, w, 4, 2.0), a);
    }
}
