//! Bounded decoding: the header's dimensions are checked against [`Limits`] before any pixel
//! buffer exists, and a JPEG cut short is an error instead of rows filled with grey.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader};

use crate::{Pixels, PreprocessError, Result};

/// 8192² pixels: a 48-megapixel photo fits; its RGB buffer is 192 MiB.
pub const DEFAULT_MAX_PIXELS: u64 = 1 << 26;
/// Longer side over shorter side. Panoramas fit; a 1-pixel-high strip does not.
pub const DEFAULT_MAX_ASPECT: u64 = 64;

/// What a decode may cost, checked from the header before decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_pixels: u64,
    /// Longest side / shortest side, at most `max_aspect` (1:max_aspect).
    pub max_aspect: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_aspect: DEFAULT_MAX_ASPECT,
        }
    }
}

impl Limits {
    /// `Err(TooLarge)` when `width`×`height` exceeds the pixel count or the aspect ratio;
    /// `Err(Empty)` when a side is zero.
    pub fn check(&self, width: u64, height: u64) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(PreprocessError::Empty { width, height });
        }
        let (short, long) = (width.min(height), width.max(height));
        if width.saturating_mul(height) > self.max_pixels
            || long > short.saturating_mul(self.max_aspect)
        {
            return Err(PreprocessError::TooLarge {
                width,
                height,
                max_pixels: self.max_pixels,
                max_aspect: self.max_aspect,
            });
        }
        Ok(())
    }

    /// The decoder's own allocation limits, a second line behind [`Limits::check`]: the widest
    /// sample layout (16-bit RGBA, 8 bytes) of the largest allowed image.
    fn for_decoder(&self) -> image::Limits {
        let mut l = image::Limits::default();
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        l.max_image_width = Some(side);
        l.max_image_height = Some(side);
        l.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(1 << 20));
        l
    }
}

/// Format (from the content) and size from the header, the size checked against `limits`, and
/// a JPEG checked for truncation: everything refused before pixels are decoded.
fn checked_header(bytes: &[u8], limits: &Limits) -> Result<(ImageFormat, u32, u32)> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Header {
            source: image::ImageError::IoError(e),
        })?;
    let format = reader.format().ok_or(PreprocessError::UnknownFormat)?;
    let (width, height) = reader
        .into_dimensions()
        .map_err(|source| PreprocessError::Header { source })?;
    limits.check(width as u64, height as u64)?;
    if format == ImageFormat::Jpeg {
        if let Some(reason) = jpeg_is_truncated(bytes) {
            return Err(PreprocessError::TruncatedJpeg(reason));
        }
    }
    Ok((format, width, height))
}

/// Decodes JPEG/PNG/WebP/BMP/GIF bytes (format from the content) within `limits`.
pub fn decode_dynamic(bytes: &[u8], limits: &Limits) -> Result<DynamicImage> {
    let (format, _, _) = checked_header(bytes, limits)?;
    decode_full(bytes, format, limits)
}

/// The full decode, after [`checked_header`].
fn decode_full(bytes: &[u8], format: ImageFormat, limits: &Limits) -> Result<DynamicImage> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits.for_decoder());
    let img = reader
        .decode()
        .map_err(|source| PreprocessError::Decode { source })?;
    // The decoder must agree with the header it was checked against.
    limits.check(img.width() as u64, img.height() as u64)?;
    Ok(img)
}

/// Decodes at the smallest JPEG DCT scale (1/8, 1/4, 1/2 or 1) that keeps at least
/// `min_scale(width, height)` of the full resolution in both axes, as PIL's `draft` does: a
/// 4000-pixel photo bound for a 224² crop is decoded at an eighth of the work. Other formats,
/// and JPEGs the scaled decoder cannot give as luma or RGB (CMYK), decode in full. Returns the
/// pixels and the full-size `[width, height]` from the header.
pub fn decode_reduced(
    bytes: &[u8],
    limits: &Limits,
    min_scale: impl FnOnce(u32, u32) -> f64,
) -> Result<(Pixels, [u32; 2])> {
    let (format, width, height) = checked_header(bytes, limits)?;
    let scale = min_scale(width, height);
    if format == ImageFormat::Jpeg && scale < 1.0 {
        if let Some(pixels) = decode_jpeg_scaled(bytes, limits, width, height, scale)? {
            return Ok((pixels, [width, height]));
        }
    }
    let img = decode_full(bytes, format, limits)?;
    Ok((Pixels::from_dynamic(img), [width, height]))
}

/// `None` when the JPEG's pixel format is neither luma nor RGB.
fn decode_jpeg_scaled(
    bytes: &[u8],
    limits: &Limits,
    width: u32,
    height: u32,
    scale: f64,
) -> Result<Option<Pixels>> {
    let fail = |e: jpeg_decoder::Error| PreprocessError::Decode {
        source: image::ImageError::Decoding(image::error::DecodingError::new(
            image::error::ImageFormatHint::Exact(ImageFormat::Jpeg),
            e,
        )),
    };
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    d.set_max_decoding_buffer_size(
        usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX),
    );
    d.read_info().map_err(fail)?;
    let channels = match d.info().map(|i| i.pixel_format) {
        Some(jpeg_decoder::PixelFormat::L8) => 1,
        Some(jpeg_decoder::PixelFormat::RGB24) => 3,
        _ => return Ok(None),
    };
    // Width and height fit u16: JPEG headers store them so.
    let want = |side: u32| ((side as f64 * scale).ceil() as u32).clamp(1, side) as u16;
    d.scale(want(width), want(height)).map_err(fail)?;
    let data = d.decode().map_err(fail)?;
    let info = d
        .info()
        .ok_or_else(|| fail(jpeg_decoder::Error::Format("no frame".into())))?;
    let (w, h) = (info.width as usize, info.height as usize);
    if data.len() != w * h * channels {
        return Err(fail(jpeg_decoder::Error::Format(format!(
            "{} bytes decoded for {w}×{h}×{channels}",
            data.len()
        ))));
    }
    Ok(Some(Pixels {
        width: w,
        height: h,
        channels,
        data,
    }))
}

/// [`decode_dynamic`], then 8-bit pixels by the crate's channel rule ([`Pixels::from_dynamic`]).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Pixels> {
    decode_dynamic(bytes, limits).map(Pixels::from_dynamic)
}

/// Walks the JPEG marker segments and entropy-coded scans; `Some(reason)` when the data ends
/// before the end-of-image marker. Some decoders fill the missing rows with grey instead of
/// failing, so this is checked by hand.
pub fn jpeg_is_truncated(bytes: &[u8]) -> Option<&'static str> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Some("no start-of-image marker");
    }
    let mut i = 2;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        if i >= bytes.len() {
            return Some("the data ends before the end-of-image marker");
        }
        if bytes[i - 1] != 0xFF {
            return Some("a marker was expected between segments");
        }
        let marker = bytes[i];
        i += 1;
        match marker {
            0xD9 => return None,
            // Standalone markers: TEM, RSTn.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        else {
            return Some("a marker segment is cut short");
        };
        if len < 2 || i + len > bytes.len() {
            return Some("a marker segment is cut short");
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: 0xFF is followed by 0x00 (stuffing) or RSTn inside a scan.
            loop {
                let Some(p) = bytes[i..].iter().position(|&b| b == 0xFF) else {
                    return Some("the data ends inside a scan");
                };
                i += p;
                match bytes.get(i + 1) {
                    None => return Some("the data ends inside a scan"),
                    Some(0x00) | Some(0xD0..=0xD7) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth 1600×1200 photo-like gradient, as JPEG or PNG bytes.
    fn gradient(format: ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(1600, 1200, |x, y| {
            image::Rgb([(x / 7) as u8, (y / 5) as u8, ((x + y) / 11) as u8])
        });
        let mut out = Cursor::new(vec![]);
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn jpegs_decode_at_the_smallest_dct_scale_that_covers_the_request() {
        let jpeg = gradient(ImageFormat::Jpeg);
        let full = decode(&jpeg, &Limits::default()).unwrap();
        for (want, side) in [(0.1, 200), (0.2, 400), (0.3, 800), (0.5, 800), (0.6, 1600)] {
            let mut asked = None;
            let (p, dims) = decode_reduced(&jpeg, &Limits::default(), |w, h| {
                asked = Some((w, h));
                want
            })
            .unwrap();
            assert_eq!(asked, Some((1600, 1200)));
            assert_eq!(dims, [1600, 1200]);
            assert_eq!((p.width, p.channels), (side, 3), "scale {want}");
            assert_eq!(p.height, side * 3 / 4);
            // Same picture: each reduced pixel against the full decode's pixel at its centre.
            let step = 1600 / side;
            let mut diff = 0u64;
            for y in 0..p.height {
                for x in 0..p.width {
                    for c in 0..3 {
                        let (fx, fy) = (x * step + step / 2, y * step + step / 2);
                        let a = p.data[(y * p.width + x) * 3 + c] as i64;
                        let b = full.data[(fy * 1600 + fx) * 3 + c] as i64;
                        diff += a.abs_diff(b);
                    }
                }
            }
            let mean = diff as f64 / (p.width * p.height * 3) as f64;
            assert!(mean < 3.0, "scale {want}: mean |difference| {mean}");
        }
    }

    #[test]
    fn other_formats_and_full_scale_decode_in_full() {
        let png = gradient(ImageFormat::Png);
        let (p, dims) = decode_reduced(&png, &Limits::default(), |_, _| 0.1).unwrap();
        assert_eq!((p.width, p.height, dims), (1600, 1200, [1600, 1200]));
        let jpeg = gradient(ImageFormat::Jpeg);
        let (p, _) = decode_reduced(&jpeg, &Limits::default(), |_, _| 1.0).unwrap();
        assert_eq!(p, decode(&jpeg, &Limits::default()).unwrap());
    }

    #[test]
    fn reduced_decoding_keeps_the_limits_and_the_truncation_check() {
        let jpeg = gradient(ImageFormat::Jpeg);
        let small = Limits {
            max_pixels: 1000,
            ..Limits::default()
        };
        let e = decode_reduced(&jpeg, &small, |_, _| 0.1).unwrap_err();
        assert!(matches!(e, PreprocessError::TooLarge { .. }), "{e}");
        let cut = &jpeg[..jpeg.len() / 2];
        let e = decode_reduced(cut, &Limits::default(), |_, _| 0.1).unwrap_err();
        assert!(matches!(e, PreprocessError::TruncatedJpeg(_)), "{e}");
    }

    #[test]
    fn limits_name_the_size_and_both_bounds() {
        let l = Limits::default();
        assert!(l.check(8192, 8192).is_ok());
        assert!(l.check(640, 10).is_ok()); // 1:64
        let e = l.check(100_000_000, 1).unwrap_err();
        assert!(e.is_too_large());
        assert_eq!(
            e.to_string(),
            "image is 100000000×1 pixels; the limit is 67108864 pixels and aspect ratio 1:64. \
             Downscale the image before sending it"
        );
        assert!(l.check(8193, 8192).unwrap_err().is_too_large());
        assert!(l.check(641, 10).unwrap_err().is_too_large());
        assert!(matches!(
            l.check(0, 5),
            Err(PreprocessError::Empty {
                width: 0,
                height: 5
            })
        ));
    }

    #[test]
    fn marker_walk_needs_the_end_of_image() {
        assert!(jpeg_is_truncated(&[0xFF, 0xD8, 0xFF, 0xD9]).is_none());
        assert!(jpeg_is_truncated(&[0xFF, 0xD8]).is_some());
        // APP0 of length 4, then a scan with stuffed 0xFF00 and RST0, then EOI.
        let ok = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xDA, 0, 2, 9, 0xFF, 0, 9, 0xFF, 0xD0, 9,
            0xFF, 0xD9,
        ];
        assert!(jpeg_is_truncated(&ok).is_none());
        for cut in 2..ok.len() - 1 {
            assert!(jpeg_is_truncated(&ok[..cut]).is_some(), "cut at {cut}");
        }
        assert!(jpeg_is_truncated(b"GIF89a").is_some());
    }
}
