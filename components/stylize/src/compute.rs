//! The forward pass of one image: whole, or above `--tile-above` in exact bands or approximate
//! tiles, on the fused CPU kernels or burn's tensor ops.

use super::*;

/// What `--tiling` comes to: `exact` or `approximate`.
pub fn resolved_tiling(t: Tiling, fused: bool) -> &'static str {
    match (t, fused) {
        (Tiling::Exact, _) | (Tiling::Auto, true) => "exact",
        _ => "approximate",
    }
}

/// Run the network on one image (whole, or above `--tile-above` pixels in exact bands or
/// approximate tiles, see `--tiling`), on the fused CPU kernels when `fused` is given, else with
/// burn's tensor ops on `device`. Returns planar RGB in 0..1 and how it ran.
///
/// Approximate tiles on the fused kernels share instance-norm statistics: they are recorded once
/// on a copy of the whole image scaled down to what runs whole (`--tile-above` pixels or one
/// tile), and every tile normalises with them (so a flat sky in one tile is not stretched to full
/// contrast on its own). On burn's ops each tile uses its own statistics.
pub fn stylize_planar(
    net: &Network,
    fused: Option<&FusedNet>,
    img: &image_io::Planar,
    style: &[f32],
    device: &Device,
    args: &Args,
) -> Result<(Vec<f32>, TileRun), StageError> {
    let (h, w) = (img.height, img.width);
    let style = net.style_weights(style)?;
    let large = (h * w) as u64 > args.tile_above;
    if let (true, Some(f), "exact") = (large, fused, resolved_tiling(args.tiling, fused.is_some()))
    {
        let mut opts = ExactOptions::new(
            args.scratch_dir
                .clone()
                .unwrap_or_else(|| args.volume.clone()),
        );
        if let Some(rows) = args.band_rows {
            (opts.band_bytes, opts.min_rows) = (1, rows);
        }
        // Sides below what the networks accept are extended by mirroring and cropped back
        // (the image itself is not copied otherwise: it may be most of the memory).
        if h >= MIN_SIDE && w >= MIN_SIDE {
            return Ok((
                f.stylize_exact(&img.rgb, h, w, &style, &opts)?,
                TileRun::Exact,
            ));
        }
        let (rgb, th, tw) = extend_planar(&img.rgb, h, w, MIN_SIDE);
        let y = f.stylize_exact(&rgb, th, tw, &style, &opts)?;
        return Ok((crop_planar(&y, th, tw, h, w), TileRun::Exact));
    }
    let shared: Option<Vec<kubestyle_models::fused::Stats>> = match fused {
        Some(f) if large => {
            // As large as runs whole: `--tile-above` pixels, or one tile if that is larger.
            let fits = args.tile_above.max((args.tile * args.tile) as u64);
            let (small, sh, sw) = image_io::downscale_to(img, fits);
            let (small, sh, sw) = extend_planar(&small, sh, sw, MIN_SIDE);
            let mut stats = Vec::new();
            f.stylize(&small, sh, sw, &style, NormStats::Record(&mut stats))?;
            Some(stats)
        }
        _ => None,
    };
    // Sides below what the networks accept (MIN_SIDE) are extended by mirroring and cropped
    // back, so any size from 1×1 up runs on every backend.
    let whole = |rgb: Vec<f32>, oh: usize, ow: usize| -> Result<Vec<f32>, StageError> {
        let (rgb, th, tw) = extend_planar(&rgb, oh, ow, MIN_SIDE);
        let y = if let Some(f) = fused {
            let mode = match &shared {
                Some(s) => NormStats::Replay(s),
                None => NormStats::Own,
            };
            f.stylize(&rgb, th, tw, &style, mode)?
        } else {
            let x = Tensor::<4>::from_data(TensorData::new(rgb, [1, 3, th, tw]), device);
            let (padded, hw) = pad_to_multiple(x, 4);
            let y = crop(net.stylize(padded, &style)?, hw);
            y.into_data()
                .try_to_vec::<f32>()
                .map_err(|e| StageError::Internal(format!("reading the result: {e:?}")))?
        };
        Ok(crop_planar(&y, th, tw, oh, ow))
    };
    if !large {
        return Ok((whole(img.rgb.clone(), h, w)?, TileRun::Whole));
    }
    let ys = tiles::starts(h, args.tile, args.overlap);
    let xs = tiles::starts(w, args.tile, args.overlap);
    let (plane, mut acc, mut wsum) = (h * w, vec![0f32; 3 * h * w], vec![0f32; h * w]);
    for &y0 in &ys {
        let th = args.tile.min(h);
        for &x0 in &xs {
            let tw = args.tile.min(w);
            let mut tile = vec![0f32; 3 * th * tw];
            for c in 0..3 {
                for r in 0..th {
                    let src = c * plane + (y0 + r) * w + x0;
                    tile[c * th * tw + r * tw..c * th * tw + (r + 1) * tw]
                        .copy_from_slice(&img.rgb[src..src + tw]);
                }
            }
            let out = whole(tile, th, tw)?;
            for r in 0..th {
                let wy = tiles::ramp(r, y0, th, h, args.overlap);
                for col in 0..tw {
                    let wgt = wy.min(tiles::ramp(col, x0, tw, w, args.overlap));
                    let di = (y0 + r) * w + x0 + col;
                    wsum[di] += wgt;
                    for c in 0..3 {
                        acc[c * plane + di] += wgt * out[c * th * tw + r * tw + col];
                    }
                }
            }
        }
    }
    for (i, v) in acc.iter_mut().enumerate() {
        *v /= wsum[i % plane].max(f32::MIN_POSITIVE);
    }
    Ok((acc, TileRun::Approximate(ys.len() * xs.len())))
}
