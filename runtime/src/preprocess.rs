//! Image → NCHW tensor, following the model's `Preprocess` (from `lkd-models`, the only place
//! preprocessing values are defined).

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use lkd_models::preprocess::{Interpolation, Preprocess};

use crate::error::{Result, RuntimeError};
use crate::session::ModelInfo;

/// Explicit preprocessing flags; each one overrides (or, without metadata, supplies) a field.
#[derive(Clone, Debug, Default)]
pub struct PreprocessOverrides {
    pub input_size: Option<[usize; 2]>,
    pub channels: Option<usize>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub crop_pct: Option<f32>,
    pub interpolation: Option<Interpolation>,
}

impl PreprocessOverrides {
    pub fn is_empty(&self) -> bool {
        self.input_size.is_none()
            && self.channels.is_none()
            && self.mean.is_none()
            && self.std.is_none()
            && self.crop_pct.is_none()
            && self.interpolation.is_none()
    }

    fn apply(&self, p: &mut Preprocess) {
        if let Some(v) = self.input_size {
            p.input_size = v;
        }
        if let Some(v) = self.channels {
            p.channels = v;
        }
        if let Some(v) = &self.mean {
            p.mean = v.clone();
        }
        if let Some(v) = &self.std {
            p.std = v.clone();
        }
        if let Some(v) = self.crop_pct {
            p.crop_pct = v;
        }
        if let Some(v) = self.interpolation {
            p.interpolation = v;
        }
    }
}

/// The preprocessing for `info`: its metadata with `overrides` applied; without metadata, the
/// flags plus what the input shape fixes (size, channels). Mean/std are never guessed.
pub fn resolve_preprocess(info: &ModelInfo, overrides: &PreprocessOverrides) -> Result<Preprocess> {
    let mut p = match Preprocess::from_metadata(&info.metadata) {
        Ok(p) => p,
        Err(reason) => {
            let (Some(mean), Some(std)) = (&overrides.mean, &overrides.std) else {
                return Err(RuntimeError::NoPreprocess { model: info.name.clone(), reason });
            };
            let dim = |i: usize| Some(info.input_shape[i]).filter(|&d| d > 0).map(|d| d as usize);
            let channels = overrides.channels.or(dim(1)).ok_or_else(|| RuntimeError::NoPreprocess {
                model: info.name.clone(),
                reason: "the channel dimension is dynamic and --channels was not given".into(),
            })?;
            let input_size = overrides
                .input_size
                .or_else(|| Some([dim(2)?, dim(3)?]))
                .ok_or_else(|| RuntimeError::NoPreprocess {
                    model: info.name.clone(),
                    reason: "the spatial dimensions are dynamic and --input-size was not given".into(),
                })?;
            Preprocess {
                input_size,
                channels,
                // Without metadata: resize the shorter side straight to the input size.
                crop_pct: 1.0,
                interpolation: Interpolation::Bilinear,
                mean: mean.clone(),
                std: std.clone(),
            }
        }
    };
    overrides.apply(&mut p);
    p.validate().map_err(RuntimeError::BadPreprocess)?;
    let s = &info.input_shape;
    let want = [p.channels, p.input_size[0], p.input_size[1]];
    if s[1..].iter().zip(want).any(|(&d, w)| d > 0 && d as usize != w) {
        return Err(RuntimeError::Input {
            expected: format!("preprocessing that matches the input shape {s:?}"),
            found: format!("channels {} and size {:?}", p.channels, p.input_size),
            hint: "Fix --input-size / --channels, or the metadata written at export".into(),
        });
    }
    Ok(p)
}

pub fn filter(i: Interpolation) -> FilterType {
    match i {
        Interpolation::Nearest => FilterType::Nearest,
        Interpolation::Bilinear => FilterType::Triangle,
        Interpolation::Bicubic => FilterType::CatmullRom,
    }
}

/// Decodes JPEG/PNG/WebP/BMP/GIF bytes, guessing the format from the content.
pub fn decode(bytes: &[u8], name: Option<&str>) -> Result<DynamicImage> {
    let err = |reason: String| RuntimeError::Image { name: name.map(str::to_string), reason };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err("unrecognised file signature".into()));
    }
    let img = reader.decode().map_err(|e| err(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(err("the image is empty".into()));
    }
    Ok(img)
}

/// Number of f32 values one image occupies.
pub fn image_len(p: &Preprocess) -> usize {
    p.channels * p.input_size[0] * p.input_size[1]
}

/// Resize shorter side → centre crop → channels → /255 → normalize, written CHW into `out`
/// (`image_len(p)` values). Sizes and offsets follow torchvision's Resize/CenterCrop.
pub fn preprocess_into(img: &DynamicImage, p: &Preprocess, out: &mut [f32]) {
    let [ch, cw] = p.input_size;
    assert_eq!(out.len(), image_len(p), "output slice does not match the preprocessing");
    let (w, h) = (img.width() as usize, img.height() as usize);
    let short = p.resize_size();
    let (rw, rh) = if w <= h { (short, (short * h) / w) } else { ((short * w) / h, short) };
    let (rw, rh) = (rw.max(cw), rh.max(ch));
    let rgb: RgbImage = if (rw, rh) == (w, h) {
        // Already at size: no resampling, so the tensor is exact.
        img.to_rgb8()
    } else {
        image::imageops::resize(&img.to_rgb8(), rw as u32, rh as u32, filter(p.interpolation))
    };
    let top = ((rh - ch) as f32 / 2.0).round() as usize;
    let left = ((rw - cw) as f32 / 2.0).round() as usize;
    let plane = ch * cw;
    let raw = rgb.as_raw();
    let scale: Vec<f32> = p.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
    let shift: Vec<f32> = p.mean.iter().zip(&p.std).map(|(m, s)| m / s).collect();
    for y in 0..ch {
        let row = &raw[((top + y) * rw + left) * 3..((top + y) * rw + left + cw) * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let i = y * cw + x;
            if p.channels == 1 {
                // ITU-R BT.601 luma, as PIL and torchvision's Grayscale compute it.
                let l = 0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32;
                out[i] = l * scale[0] - shift[0];
            } else {
                for c in 0..3 {
                    out[c * plane + i] = px[c] as f32 * scale[c] - shift[c];
                }
            }
        }
    }
}

/// One contiguous NCHW batch (defined in the ONNX Runtime core, which the exporter shares).
pub use lkd_ort::Batch;

/// Decodes and preprocesses encoded images straight into one batch buffer, in parallel over
/// the available cores. The first undecodable image fails the batch and is named.
pub fn preprocess_batch<B: AsRef<[u8]> + Sync>(images: &[(String, B)], p: &Preprocess) -> Result<Batch> {
    let mut batch = Batch::zeros(images.len(), p);
    let len = image_len(p);
    if images.is_empty() {
        return Ok(batch);
    }
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(images.len());
    let per = images.len().div_ceil(workers);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .data
            .chunks_mut(len * per)
            .zip(images.chunks(per))
            .map(|(out, imgs)| {
                s.spawn(move || {
                    for ((name, bytes), dst) in imgs.iter().zip(out.chunks_mut(len)) {
                        let img = decode(bytes.as_ref(), Some(name))?;
                        preprocess_into(&img, p, dst);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(RuntimeError::Run("preprocessing worker panicked".into()))))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(batch)
}
