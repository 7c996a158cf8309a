//! Tiled inference for images too large to run whole.
//!
//! The image is cut into overlapping tiles; each is stylised on its own and the results are
//! blended with weights that ramp linearly across the overlap, so no seam is a hard edge.
//! Instance normalisation then sees per-tile statistics, so tiled output differs from the
//! untiled result (measured in the tests and the README), most in flat regions.

/// Start offsets of tiles of length `tile` covering `0..len` with at least `overlap` shared.
pub fn starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let step = tile.saturating_sub(overlap).max(1);
    let mut v = Vec::new();
    let mut s = 0;
    while s + tile < len {
        v.push(s);
        s += step;
    }
    v.push(len - tile);
    v
}

/// Blend weight of position `i` within a tile `[s, s + n)` of an axis of length `len`: 1 in the
/// middle, ramping down over `overlap` toward edges that border another tile.
pub fn ramp(i: usize, s: usize, n: usize, len: usize, overlap: usize) -> f32 {
    if overlap == 0 {
        return 1.0;
    }
    let mut w = 1.0f32;
    if s > 0 && i < overlap {
        w = w.min((i as f32 + 1.0) / (overlap as f32 + 1.0));
    }
    if s + n < len && n - i <= overlap {
        w = w.min((n - i) as f32 / (overlap as f32 + 1.0));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_everything() {
        assert_eq!(starts(100, 256, 32), vec![0]);
        let s = starts(1000, 256, 64);
        assert_eq!(s.first(), Some(&0));
        assert_eq!(s.last(), Some(&(1000 - 256)));
        for w in s.windows(2) {
            assert!(w[1] - w[0] <= 256 - 64);
        }
    }

    #[test]
    fn weights_sum_positive_and_ramp() {
        let len = 600;
        let (tile, ov) = (256, 64);
        let st = starts(len, tile, ov);
        for i in 0..len {
            let total: f32 = st
                .iter()
                .filter(|&&s| i >= s && i < s + tile)
                .map(|&s| ramp(i - s, s, tile, len, ov))
                .sum();
            assert!(total > 0.0, "position {i} uncovered");
        }
        assert_eq!(ramp(0, 0, tile, len, ov), 1.0);
        assert!(ramp(0, 100, tile, len, ov) < 0.05);
    }
}
