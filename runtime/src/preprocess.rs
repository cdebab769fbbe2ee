//! Image → NCHW tensor, following the model's `Preprocess` (from `lkd-models`, the only place
//! preprocessing values are defined). The pixels are computed by `lkd-preprocess`, the same
//! function trainer evaluation and quantize calibration call.

use image::DynamicImage;
use lkd_models::preprocess::{Interpolation, Preprocess};
use lkd_preprocess::Pixels;
pub use lkd_preprocess::{Limits, PreprocessError};

use crate::error::{NoPreprocessReason, Result, RuntimeError};
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
                return Err(RuntimeError::NoPreprocess {
                    model: info.name.clone(),
                    reason: reason.into(),
                });
            };
            let dim = |i: usize| {
                Some(info.input_shape[i])
                    .filter(|&d| d > 0)
                    .map(|d| d as usize)
            };
            let channels =
                overrides
                    .channels
                    .or(dim(1))
                    .ok_or_else(|| RuntimeError::NoPreprocess {
                        model: info.name.clone(),
                        reason: NoPreprocessReason::DynamicChannels,
                    })?;
            let input_size = overrides
                .input_size
                .or_else(|| Some([dim(2)?, dim(3)?]))
                .ok_or_else(|| RuntimeError::NoPreprocess {
                    model: info.name.clone(),
                    reason: NoPreprocessReason::DynamicSize,
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
    if s[1..]
        .iter()
        .zip(want)
        .any(|(&d, w)| d > 0 && d as usize != w)
    {
        return Err(RuntimeError::Input {
            expected: format!("preprocessing that matches the input shape {s:?}"),
            found: format!("channels {} and size {:?}", p.channels, p.input_size),
            hint: "Fix --input-size / --channels, or the metadata written at export".into(),
        });
    }
    Ok(p)
}

/// Decodes JPEG/PNG/WebP/BMP/GIF bytes (format from the content) within the default
/// [`Limits`]: the header's size is checked before decoding, a cut-off JPEG is an error.
pub fn decode(bytes: &[u8], name: Option<&str>) -> Result<DynamicImage> {
    decode_within(bytes, name, &Limits::default())
}

/// [`decode`] with explicit limits.
pub fn decode_within(bytes: &[u8], name: Option<&str>, limits: &Limits) -> Result<DynamicImage> {
    lkd_preprocess::decode_dynamic(bytes, limits).map_err(|source| image_error(name, source))
}

fn image_error(name: Option<&str>, source: lkd_preprocess::PreprocessError) -> RuntimeError {
    RuntimeError::Image {
        name: name.map(str::to_string),
        source,
    }
}

/// Number of f32 values one image occupies.
pub fn image_len(p: &Preprocess) -> usize {
    lkd_preprocess::tensor_len(p)
}

/// The eval preprocessing (`lkd_preprocess::eval_into`, the one the trainer evaluates with),
/// written CHW into `out` (`image_len(p)` values).
pub fn preprocess_into(img: &DynamicImage, p: &Preprocess, out: &mut [f32]) -> Result<()> {
    lkd_preprocess::eval_into(Pixels::from_dynamic_ref(img), p, out)
        .map_err(|source| image_error(None, source))
}

/// One contiguous NCHW batch (defined in the ONNX Runtime core, which the exporter shares).
pub use lkd_ort::Batch;

/// Decodes and preprocesses encoded images straight into one batch buffer, in parallel over
/// the available cores. The first undecodable image fails the batch and is named.
pub fn preprocess_batch<B: AsRef<[u8]> + Sync>(
    images: &[(String, B)],
    p: &Preprocess,
) -> Result<Batch> {
    let mut batch = Batch::zeros(images.len(), p.channels, p.input_size);
    let len = image_len(p);
    if images.is_empty() {
        return Ok(batch);
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(images.len());
    let per = images.len().div_ceil(workers);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .data
            .chunks_mut(len * per)
            .zip(images.chunks(per))
            .map(|(out, imgs)| {
                s.spawn(move || {
                    for ((name, bytes), dst) in imgs.iter().zip(out.chunks_mut(len)) {
                        let limits = Limits::default();
                        lkd_preprocess::eval_bytes_into(bytes.as_ref(), &limits, p, dst)
                            .map_err(|source| image_error(Some(name), source))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(RuntimeError::Run("preprocessing worker panicked".into()))
                })
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(batch)
}
