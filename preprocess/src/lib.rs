//! The one eval preprocessing: encoded bytes → bounded decode → 8-bit pixels → the model's
//! channels → resize (PIL's resampling, bit for bit) → torchvision centre crop → normalized CHW
//! floats. Trainer evaluation, `lkd quantize` calibration, `predict` and `serve` all call
//! [`eval_into`] (or [`eval_geometry`] + [`normalize_into`]), so a model is served on exactly
//! the tensors it was validated on.
//!
//! It owns pixels only: the preprocessing *values* (size, crop, mean/std) are data in
//! `lkd_models::preprocess::Preprocess`; this crate links neither libtorch nor ONNX Runtime, and
//! it is a separate crate so that `lkd-models` (and the exporter) do not pull image decoders.
//!
//! The contract, matching `timm`'s eval transform on PIL images
//! (`Resize(floor(size / crop_pct), interpolation)`, `CenterCrop(size)`, `ToTensor`, `Normalize`):
//! - grey sources (L, LA, 16-bit L) stay one channel, everything else becomes RGB; alpha is
//!   dropped (PIL `convert` drops it too); 16-bit samples become `(v + 128) / 257`.
//! - channel conversion happens before the resize: RGB → L with PIL's fixed-point
//!   `convert("L")`, L → RGB by replication.
//! - the shorter side becomes `resize_size()`, the longer `floor(resize_size · long / short)`
//!   (torchvision `Resize(int)`), resampled like PIL's `Image.resize` (antialiased, separable,
//!   horizontal pass first, 22-bit fixed point, 8-bit intermediate).
//! - centre crop offsets are `round((in − out) / 2)` with Python's half-to-even `round`; a
//!   side smaller than the crop is zero-padded with `(out − in) // 2` on the leading edge.
//! - `(v / 255 − mean) / std` in f32.

mod decode;
mod file;
mod resample;

pub use decode::{
    decode, decode_dynamic, decode_reduced, jpeg_is_truncated, Limits, DEFAULT_MAX_ASPECT,
    DEFAULT_MAX_PIXELS,
};
pub use file::{read_image_file, read_image_from, sniff_format, DEFAULT_MAX_FILE_BYTES};
pub use resample::resize_window;

use lkd_models::preprocess::{Interpolation, Preprocess, PreprocessSpecError};

/// Everything that can go wrong between encoded bytes and the input tensor.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The header declares more pixels, or a more extreme aspect ratio, than allowed. Nothing
    /// was decoded. A server answers 413.
    #[error(
        "image is {width}×{height} pixels; the limit is {max_pixels} pixels and aspect ratio 1:{max_aspect}. \
         Downscale the image before sending it"
    )]
    TooLarge {
        width: u64,
        height: u64,
        max_pixels: u64,
        max_aspect: u64,
    },

    #[error("unrecognised image format: expected a JPEG, PNG, WebP, BMP or GIF file")]
    UnknownFormat,

    /// Nothing was opened: reading it could block or never end.
    #[error("{0}, not a regular file: give an image file")]
    NotAFile(&'static str),

    /// Refused from the file's size, before reading it.
    #[error("the file is {bytes} bytes; the limit for an image file is {limit} bytes")]
    FileTooLarge { bytes: u64, limit: u64 },

    /// The read stopped at the limit (the file grew while being read).
    #[error("the file holds more than {limit} bytes, the limit for an image file")]
    StreamTooLong { limit: u64 },

    #[error("the file is empty")]
    EmptyFile,

    #[error("cannot read the file")]
    Read(#[source] std::io::Error),

    #[error("unreadable image header")]
    Header {
        #[source]
        source: image::ImageError,
    },

    #[error("corrupt image data")]
    Decode {
        #[source]
        source: image::ImageError,
    },

    #[error("the JPEG is truncated: {0}. Send the complete file")]
    TruncatedJpeg(&'static str),

    #[error("the image has no pixels ({width}×{height})")]
    Empty { width: u64, height: u64 },

    #[error("images with {0} channels are not supported (expected 1 or 3)")]
    Channels(usize),

    #[error("invalid preprocessing")]
    BadPreprocess(#[from] PreprocessSpecError),

    #[error("the output buffer holds {found} values; the preprocessing writes {expected}")]
    OutputLen { expected: usize, found: usize },
}

impl PreprocessError {
    /// True when the input was refused for its size (HTTP 413) rather than its content (400).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. } | Self::FileTooLarge { .. } | Self::StreamTooLong { .. }
        )
    }
}

pub type Result<T, E = PreprocessError> = std::result::Result<T, E>;

/// Decoded 8-bit pixels, row-major HWC with 1 (luma) or 3 (RGB) channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Pixels {
    /// `Err` when the buffer length is not `width · height · channels` or channels is not 1 or 3.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(PreprocessError::Channels(channels));
        }
        let expected = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(channels));
        if expected != Some(data.len()) {
            return Err(PreprocessError::OutputLen {
                expected: expected.unwrap_or(usize::MAX),
                found: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            channels,
            data,
        })
    }

    /// Grey sources (with or without alpha, 8 or 16 bit) → 1 channel; all others → RGB.
    pub fn from_dynamic(img: image::DynamicImage) -> Self {
        let (width, height) = (img.width() as usize, img.height() as usize);
        if img.color().has_color() {
            Self {
                width,
                height,
                channels: 3,
                data: img.into_rgb8().into_raw(),
            }
        } else {
            Self {
                width,
                height,
                channels: 1,
                data: img.into_luma8().into_raw(),
            }
        }
    }

    /// [`Pixels::from_dynamic`] without taking ownership (one conversion copy).
    pub fn from_dynamic_ref(img: &image::DynamicImage) -> Self {
        let (width, height) = (img.width() as usize, img.height() as usize);
        if img.color().has_color() {
            Self {
                width,
                height,
                channels: 3,
                data: img.to_rgb8().into_raw(),
            }
        } else {
            Self {
                width,
                height,
                channels: 1,
                data: img.to_luma8().into_raw(),
            }
        }
    }
}

/// Borrowed pixels, same layout as [`Pixels`]; what the read-only operations take, so callers
/// with their own image type need not copy.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [u8],
}

impl Pixels {
    pub fn view(&self) -> View<'_> {
        View {
            width: self.width,
            height: self.height,
            channels: self.channels,
            data: &self.data,
        }
    }
}

/// PIL's `convert("L")`: ITU-R 601 weights in 16-bit fixed point, rounded.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// L → RGB by replication, RGB → L with [`luma`]; other counts are an error.
pub fn to_channels(img: Pixels, channels: usize) -> Result<Pixels> {
    let Pixels {
        width,
        height,
        data,
        ..
    } = &img;
    let (width, height) = (*width, *height);
    match (img.channels, channels) {
        (a, b) if a == b && (b == 1 || b == 3) => Ok(img),
        (1, 3) => Ok(Pixels {
            width,
            height,
            channels: 3,
            data: data.iter().flat_map(|&v| [v, v, v]).collect(),
        }),
        (3, 1) => Ok(Pixels {
            width,
            height,
            channels: 1,
            data: data
                .chunks_exact(3)
                .map(|p| luma(p[0], p[1], p[2]))
                .collect(),
        }),
        (_, b) if b != 1 && b != 3 => Err(PreprocessError::Channels(b)),
        (a, _) => Err(PreprocessError::Channels(a)),
    }
}

/// torchvision `Resize(int)`: the shorter side becomes `size`, the longer
/// `floor(size · long / short)`. `None` if the result does not fit in memory arithmetic.
pub fn resized_size(width: usize, height: usize, size: usize) -> Option<(usize, usize)> {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    if short == 0 {
        return None;
    }
    let new_long = (size as u128 * long as u128 / short as u128)
        .try_into()
        .ok()?;
    Some(if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    })
}

/// torchvision `center_crop`'s top-left offset on one axis (negative: zero padding).
pub fn center_crop_offset(in_size: usize, out_size: usize) -> isize {
    if out_size > in_size {
        -(((out_size - in_size) / 2) as isize)
    } else {
        round_half_even((in_size - out_size) as f64 / 2.0) as isize
    }
}

/// Python's `round`: halves go to the even neighbour.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// Copies the `w`×`h` window at (`x`, `y`); pixels outside `img` are zero.
pub fn crop(img: View<'_>, x: isize, y: isize, w: usize, h: usize) -> Pixels {
    let c = img.channels;
    let mut out = Pixels {
        width: w,
        height: h,
        channels: c,
        data: vec![0; w * h * c],
    };
    let x0 = x.max(0);
    let x1 = (x + w as isize).min(img.width as isize);
    if x1 <= x0 {
        return out;
    }
    for oy in 0..h {
        let sy = y + oy as isize;
        if sy < 0 || sy >= img.height as isize {
            continue;
        }
        let src = (sy as usize * img.width + x0 as usize) * c;
        let dst = (oy * w + (x0 - x) as usize) * c;
        let n = (x1 - x0) as usize * c;
        out.data[dst..dst + n].copy_from_slice(&img.data[src..src + n]);
    }
    out
}

/// PIL `Image.resize((w, h), interp)` on the whole image.
pub fn resize(img: View<'_>, w: usize, h: usize, interp: Interpolation) -> Pixels {
    resize_window(img, w, h, 0, 0, w, h, interp)
}

/// Channels, resize and centre crop: the u8 HWC image the model sees before normalization
/// (`p.channels` channels, `p.input_size`). Work and memory are bounded by the crop size and the
/// filter support, not by the resized size: only the cropped window is resampled.
pub fn eval_geometry(img: Pixels, p: &Preprocess) -> Result<Pixels> {
    p.validate().map_err(PreprocessError::BadPreprocess)?;
    if img.width == 0 || img.height == 0 {
        return Err(PreprocessError::Empty {
            width: img.width as u64,
            height: img.height as u64,
        });
    }
    let img = to_channels(img, p.channels)?;
    let [crop_h, crop_w] = p.input_size;
    let (rw, rh) =
        resized_size(img.width, img.height, p.resize_size()).ok_or(PreprocessError::TooLarge {
            width: img.width as u64,
            height: img.height as u64,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_aspect: DEFAULT_MAX_ASPECT,
        })?;
    let left = center_crop_offset(rw, crop_w);
    let top = center_crop_offset(rh, crop_h);
    Ok(resize_window(
        img.view(),
        rw,
        rh,
        left,
        top,
        crop_w,
        crop_h,
        p.interpolation,
    ))
}

/// `ToTensor` + `Normalize`: `(v / 255 − mean) / std` in f32, written CHW into `out`.
pub fn normalize_into(img: View<'_>, mean: &[f32], std: &[f32], out: &mut [f32]) -> Result<()> {
    let (c, hw) = (img.channels, img.width * img.height);
    if out.len() != c * hw {
        return Err(PreprocessError::OutputLen {
            expected: c * hw,
            found: out.len(),
        });
    }
    if mean.len() != c || std.len() != c {
        return Err(PreprocessSpecError::MeanStdLength {
            channels: c,
            mean: mean.len(),
            std: std.len(),
        }
        .into());
    }
    for k in 0..c {
        let mut lut = [0f32; 256];
        for (v, l) in lut.iter_mut().enumerate() {
            *l = (v as f32 / 255.0 - mean[k]) / std[k];
        }
        for (i, o) in out[k * hw..(k + 1) * hw].iter_mut().enumerate() {
            *o = lut[img.data[i * c + k] as usize];
        }
    }
    Ok(())
}

/// Number of f32 values one preprocessed image occupies.
pub fn tensor_len(p: &Preprocess) -> usize {
    p.channels * p.input_size[0] * p.input_size[1]
}

/// The whole eval preprocessing of decoded pixels into `out` (`tensor_len(p)` values, CHW).
pub fn eval_into(img: Pixels, p: &Preprocess, out: &mut [f32]) -> Result<()> {
    if out.len() != tensor_len(p) {
        return Err(PreprocessError::OutputLen {
            expected: tensor_len(p),
            found: out.len(),
        });
    }
    let cropped = eval_geometry(img, p)?;
    normalize_into(cropped.view(), &p.mean, &p.std, out)
}

/// Encoded bytes → tensor: [`decode`] within `limits`, then [`eval_into`].
pub fn eval_bytes_into(
    bytes: &[u8],
    limits: &Limits,
    p: &Preprocess,
    out: &mut [f32],
) -> Result<()> {
    eval_into(decode(bytes, limits)?, p, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offset_follows_python_round() {
        // 29 → 28: (29 - 28) / 2 = 0.5 rounds to 0 (even), as torchvision does.
        assert_eq!(center_crop_offset(29, 28), 0);
        assert_eq!(center_crop_offset(31, 28), 2); // 1.5 → 2
        assert_eq!(center_crop_offset(33, 28), 2); // 2.5 → 2
        assert_eq!(center_crop_offset(35, 28), 4); // 3.5 → 4
        assert_eq!(center_crop_offset(25, 28), -1); // pad 3 // 2 = 1 on the leading edge
        assert_eq!(center_crop_offset(27, 28), 0);
    }

    #[test]
    fn resized_size_truncates_like_torchvision() {
        assert_eq!(resized_size(29, 31, 28), Some((28, 29))); // 28 * 31 / 29 = 29.93
        assert_eq!(resized_size(640, 480, 256), Some((341, 256)));
        assert_eq!(resized_size(0, 5, 28), None);
    }

    #[test]
    fn luma_matches_pil_fixed_point() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76); // PIL: Image.new("RGB", (1, 1), (255, 0, 0)).convert("L")
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn wrong_sizes_are_errors_not_panics() {
        assert!(matches!(
            Pixels::new(2, 2, 3, vec![0; 11]),
            Err(PreprocessError::OutputLen {
                expected: 12,
                found: 11
            })
        ));
        assert!(matches!(
            Pixels::new(1, 1, 4, vec![0; 4]),
            Err(PreprocessError::Channels(4))
        ));
        let p = Preprocess::fashion_mnist();
        let img = Pixels::new(3, 3, 1, vec![7; 9]).unwrap();
        let mut short = vec![0.0; 10];
        assert_eq!(
            eval_into(img, &p, &mut short).unwrap_err().to_string(),
            "the output buffer holds 10 values; the preprocessing writes 784"
        );
    }
}
