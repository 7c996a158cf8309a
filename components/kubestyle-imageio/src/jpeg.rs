//! JPEG decoding with libjpeg-turbo's own code (vendored by `mozjpeg-sys`, built with `cc`), so
//! the pixels are the ones PIL, torchvision and OpenCV get: libjpeg-turbo's default ISLOW IDCT
//! and fancy upsampling, CMYK/YCCK converted to RGB the way PIL's `convert("RGB")` does.
//! `tests/decode_parity.rs` holds this to 0 levels against PIL on a corpus.
//!
//! libjpeg reports fatal errors by unwinding out of the C code (the `mozjpeg` crate's error
//! manager); every call into it is wrapped in `catch_unwind` and turned into
//! `ImageIoError::Invalid`. Warnings (corrupt entropy data, extraneous bytes) are ignored as
//! PIL ignores them; running out of data is an error, as in PIL ("image file is truncated").

use std::any::Any;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ImageIoError;
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg::{ColorSpace, Decompress, Marker};

/// The file, remembering whether libjpeg asked for bytes past its end (the `mozjpeg` source
/// manager then feeds libjpeg a fake EOI and decoding "succeeds" with grey rows).
struct Tracked {
    inner: BufReader<File>,
    eof: Arc<AtomicBool>,
}

impl Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }
}

impl BufRead for Tracked {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            self.eof.store(true, Ordering::Relaxed);
        }
        Ok(buf)
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt)
    }
}

/// A JPEG whose header has been read (nothing decoded or allocated for pixels yet).
pub(super) struct Header {
    dec: Decompress<Tracked>,
    eof: Arc<AtomicBool>,
}

fn bad(path: &Path, m: String) -> ImageIoError {
    ImageIoError::Invalid(format!("{}: {m}", path.display()))
}

fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("libjpeg failed")
}

/// Run a step of libjpeg, turning its fatal errors (unwinds) and I/O errors into `InputInvalid`.
fn guarded<T>(path: &Path, f: impl FnOnce() -> io::Result<T>) -> Result<T, ImageIoError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(bad(path, format!("cannot decode JPEG: {e}"))),
        Err(p) => Err(bad(
            path,
            format!("cannot decode JPEG: {}", panic_message(&*p)),
        )),
    }
}

/// Read the header of the JPEG at `path` (markers up to the first scan, keeping APP1 for EXIF).
pub(super) fn open(path: &Path) -> Result<Header, ImageIoError> {
    let file = File::open(path).map_err(|e| ImageIoError::read(path, e))?;
    let eof = Arc::new(AtomicBool::new(false));
    let reader = Tracked {
        inner: BufReader::with_capacity(64 << 10, file),
        eof: Arc::clone(&eof),
    };
    let dec = guarded(path, || {
        Decompress::with_markers(&[Marker::APP(1)]).from_reader(reader)
    })?;
    let header = Header { dec, eof };
    header.check_eof(path)?;
    Ok(header)
}

impl Header {
    /// The stored size (width, height).
    pub(super) fn dimensions(&self) -> (u32, u32) {
        let (w, h) = self.dec.size();
        // libjpeg stores sides as JDIMENSION (u32) and limits them to 65500.
        (w as u32, h as u32)
    }

    /// The EXIF orientation, from the first `Exif\0\0` APP1 segment as PIL reads it.
    pub(super) fn orientation(&self) -> Orientation {
        self.dec
            .markers()
            .find(|m| matches!(m.marker, Marker::APP(1)) && m.data.starts_with(b"Exif\0\0"))
            .and_then(|m| Orientation::from_exif_chunk(&m.data[6..]))
            .unwrap_or(Orientation::NoTransforms)
    }

    fn check_eof(&self, path: &Path) -> Result<(), ImageIoError> {
        check_eof(&self.eof, path)
    }

    /// Decode to 8-bit RGB (grayscale JPEGs to 8-bit gray).
    pub(super) fn decode(self, path: &Path) -> Result<DynamicImage, ImageIoError> {
        let Header { dec, eof } = self;
        let (w, h) = (dec.width() as u32, dec.height() as u32);
        let invalid = || io::Error::new(io::ErrorKind::InvalidData, "short pixel buffer");
        let img = guarded(path, move || match dec.color_space() {
            ColorSpace::JCS_GRAYSCALE => {
                let mut s = dec.grayscale()?;
                let px = s.read_scanlines::<u8>()?;
                s.finish()?;
                GrayImage::from_raw(w, h, px)
                    .map(DynamicImage::ImageLuma8)
                    .ok_or_else(invalid)
            }
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
                // libjpeg converts YCCK to CMYK; PIL then treats it as Adobe-inverted CMYK.
                let mut s = dec.to_colorspace(ColorSpace::JCS_CMYK)?;
                let px = s.read_scanlines::<u8>()?;
                s.finish()?;
                RgbImage::from_raw(w, h, cmyk_to_rgb(&px))
                    .map(DynamicImage::ImageRgb8)
                    .ok_or_else(invalid)
            }
            _ => {
                let mut s = dec.rgb()?;
                let px = s.read_scanlines::<u8>()?;
                s.finish()?;
                RgbImage::from_raw(w, h, px)
                    .map(DynamicImage::ImageRgb8)
                    .ok_or_else(invalid)
            }
        })?;
        check_eof(&eof, path)?;
        Ok(img)
    }
}

fn check_eof(eof: &AtomicBool, path: &Path) -> Result<(), ImageIoError> {
    if eof.load(Ordering::Relaxed) {
        return Err(bad(
            path,
            "cannot decode JPEG: the file is truncated (data ends before the end-of-image marker)"
                .into(),
        ));
    }
    Ok(())
}

/// libjpeg's CMYK output (PIL reads every CMYK JPEG as Adobe-inverted, rawmode `CMYK;I`) to RGB
/// exactly as Pillow's `cmyk2rgb`: with ink `c = 255 - raw` and `nk = 255 - k`,
/// `r = nk - round(c·nk/255)` using Pillow's MULDIV255.
fn cmyk_to_rgb(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / 4 * 3);
    for p in raw.chunks_exact(4) {
        let nk = i32::from(p[3]);
        for &v in &p[..3] {
            let t = (255 - i32::from(v)) * nk + 128;
            let ink = ((t >> 8) + t) >> 8;
            out.push((nk - ink).clamp(0, 255) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cmyk_to_rgb;

    #[test]
    fn cmyk_extremes() {
        // raw (inverted) 255 = no ink: white; raw K 0 = full black.
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[0, 128, 255, 255]), [0, 128, 255]);
    }
}
