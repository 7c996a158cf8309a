//! The style controls, applied to the network's output pixel by pixel (so tiled = untiled):
//!
//! * **preserve colour** — luminance transfer (Gatys et al. 2016, "Preserving Color in Neural
//!   Artistic Style Transfer"): the output is the stylised image's luminance with the photo's
//!   chrominance, in YIQ (the FCC NTSC 1953 matrix: Y = 0.299 R + 0.587 G + 0.114 B). The I
//!   and Q rows sum to zero and the Y row to one, so YIQ → RGB of (Y_styled, I_photo, Q_photo)
//!   is the photo plus the luminance difference on every channel: `photo + (Y_s − Y_p)`,
//!   clamped to 0..1. On the gamma-encoded (sRGB) values, as the paper and its common
//!   implementations do.
//! * **strength** — `photo · (1 − s) + styled · s` on the sRGB-encoded values: the opacity of
//!   image editors and of the fast-style-transfer tools users compare with (blending in linear
//!   light would lighten the mid-tones of a half-strength result compared with what they know),
//!   and exact at both ends: s = 0 is the photo, s = 1 the network's output, bit for bit.
//!
//! Colour first, then strength: a half-strength colour-preserving result mixes the photo with
//! its colour-preserved stylisation.

/// The YIQ luminance weights (sum 1).
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Apply the controls to `styled` (planar RGB in 0..1, `3 × pixels`) given the `photo` the
/// network saw (same layout and size).
pub fn apply(styled: &mut [f32], photo: &[f32], preserve_colour: bool, strength: f32) {
    debug_assert_eq!(styled.len(), photo.len());
    let plane = styled.len() / 3;
    if preserve_colour {
        let (sr, rest) = styled.split_at_mut(plane);
        let (sg, sb) = rest.split_at_mut(plane);
        let (pr, pg, pb) = (
            &photo[..plane],
            &photo[plane..2 * plane],
            &photo[2 * plane..3 * plane],
        );
        for i in 0..plane {
            let ys = LUMA[0] * sr[i] + LUMA[1] * sg[i] + LUMA[2] * sb[i];
            let yp = LUMA[0] * pr[i] + LUMA[1] * pg[i] + LUMA[2] * pb[i];
            let d = ys - yp;
            sr[i] = (pr[i] + d).clamp(0.0, 1.0);
            sg[i] = (pg[i] + d).clamp(0.0, 1.0);
            sb[i] = (pb[i] + d).clamp(0.0, 1.0);
        }
    }
    if strength == 0.0 {
        styled.copy_from_slice(photo);
    } else if strength != 1.0 {
        let keep = 1.0 - strength;
        for (s, p) in styled.iter_mut().zip(photo) {
            *s = p * keep + *s * strength;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels() -> (Vec<f32>, Vec<f32>) {
        let n = 64;
        let photo: Vec<f32> = (0..3 * n)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        let styled: Vec<f32> = (0..3 * n).map(|i| ((i * 53) % 89) as f32 / 88.0).collect();
        (photo, styled)
    }

    #[test]
    fn strength_ends_are_exact() {
        let (photo, styled) = pixels();
        let mut y = styled.clone();
        apply(&mut y, &photo, false, 1.0);
        assert_eq!(y, styled);
        apply(&mut y, &photo, false, 0.0);
        assert_eq!(y, photo);
        let mut y = styled.clone();
        apply(&mut y, &photo, false, 0.25);
        for i in 0..y.len() {
            assert!((y[i] - (0.75 * photo[i] + 0.25 * styled[i])).abs() < 1e-6);
        }
    }

    #[test]
    fn preserved_colour_keeps_the_stylised_luminance_and_the_photos_chroma() {
        let (photo, styled) = pixels();
        let mut y = styled.clone();
        apply(&mut y, &photo, true, 1.0);
        let n = photo.len() / 3;
        let luma =
            |v: &[f32], i: usize| LUMA[0] * v[i] + LUMA[1] * v[n + i] + LUMA[2] * v[2 * n + i];
        for i in 0..n {
            let unclamped = (0..3).all(|c| {
                (0.0..=1.0).contains(&(photo[c * n + i] + luma(&styled, i) - luma(&photo, i)))
            });
            if unclamped {
                assert!((luma(&y, i) - luma(&styled, i)).abs() < 1e-5);
                // Chroma: differences between channels are the photo's.
                assert!(((y[i] - y[n + i]) - (photo[i] - photo[n + i])).abs() < 1e-5);
            }
            assert!((0..3).all(|c| (0.0..=1.0).contains(&y[c * n + i])));
        }
        // The photo with itself is the photo.
        let mut same = photo.clone();
        apply(&mut same, &photo, true, 1.0);
        assert_eq!(same, photo);
    }
}
