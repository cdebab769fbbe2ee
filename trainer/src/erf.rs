//! Effective receptive field as measured in the RepLKNet/SLaK papers: the gradient of the sum of
//! the ReLU'd centre pixel of the last stage's map w.r.t. the input, ReLU'd, summed over
//! channels and averaged over images; then log10(x + 1), max-normalised, and the
//! high-contribution area ratio: the smallest centred square holding a share t of the total.
//! That ratio moves in whole-pixel steps, so two continuous measures sit beside it: the same
//! ratio with the square's side interpolated between whole pixels, and the contribution-weighted
//! RMS radius of the raw gradient map (in input pixels).
//! Numbers only: the `lkd` CLI draws the heatmaps.

use crate::data::{self, DatasetSpec, Loader, LoaderConfig, Split, Transform};
use crate::executor::{Executor, Params};
use crate::TrainError;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The ERF of a model over the first `images` validation images of `spec` (eval transform),
/// at `tap` (default: the last stage). Measured as the authors do: inputs resized to the
/// measuring size (`input_size`, default 4× the model's, unless the model's positional
/// parameters fix its size), no centre crop.
pub fn measure_on_dataset(
    exec: &Executor,
    params: &Params,
    spec: &DatasetSpec,
    images: usize,
    tap: Option<&str>,
    input_size: Option<usize>,
    device: tch::Device,
) -> Result<ErfResult, TrainError> {
    let tap = match tap {
        Some(t) => t.to_string(),
        None => exec
            .graph
            .stage_taps()
            .last()
            .map(|(k, _)| k.clone())
            .ok_or_else(|| {
                TrainError::Config(format!("{} has no stage taps", exec.graph.preset))
            })?,
    };
    let mut spec = spec.clone();
    spec.val_limit = Some(images);
    let set = std::sync::Arc::new(data::open(&spec, Split::Val)?);
    let mut pre = exec.graph.preprocess.clone();
    let fixed = exec
        .graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, lkd_models::Op::AddParam { .. }));
    if !fixed {
        let side = input_size.unwrap_or(4 * pre.input_size[0]);
        pre.input_size = [side, side];
    }
    pre.crop_pct = 1.0;
    let loader = Loader::new(
        set,
        Transform::eval(&pre),
        None,
        LoaderConfig {
            batch_size: 16,
            workers: 0,
            prefetch: 2,
            seed: 0,
            shuffle: false,
            drop_last: false,
            balanced: false,
        },
    )?;
    let mut meter = ErfMeter::new();
    for batch in loader.epoch(0, 0)? {
        meter.add(exec, params, &batch?.images.f_to_device(device)?, &tap)?;
    }
    meter.finish(&tap)
}

pub const THRESHOLDS: [f64; 4] = [0.2, 0.3, 0.5, 0.99];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErfResult {
    pub tap: String,
    pub images: usize,
    pub height: usize,
    pub width: usize,
    /// (threshold, area ratio), one per [`THRESHOLDS`]; ratio 1.0 when no square qualifies.
    pub area_ratios: Vec<(f64, f64)>,
    /// (threshold, area ratio) with the square's side interpolated between whole pixels.
    #[serde(default)]
    pub area_ratios_interpolated: Vec<(f64, f64)>,
    /// √(Σ g·d² / Σ g) over the raw contribution map g, d the distance to the centre pixel.
    #[serde(default)]
    pub rms_radius_px: f64,
    /// The log10(x+1), max-normalised map, row-major.
    pub map: Vec<f32>,
}

/// Accumulates the raw contribution map over batches of images.
pub struct ErfMeter {
    sum: Option<Tensor>,
    count: usize,
    /// Images skipped because their input gradient was not finite.
    pub skipped: usize,
}

impl Default for ErfMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl ErfMeter {
    pub fn new() -> Self {
        Self {
            sum: None,
            count: 0,
            skipped: 0,
        }
    }

    /// Adds one image at a time (the paper's per-sample gradient), in eval mode.
    pub fn add(
        &mut self,
        exec: &Executor,
        params: &Params,
        images: &Tensor,
        tap: &str,
    ) -> Result<(), TrainError> {
        self.add_with(images, |x| {
            let out = exec.forward(params, x, false, &[tap])?;
            let map = out.taps[tap].shallow_clone();
            if map.dim() != 4 {
                return Err(TrainError::Input(format!(
                    "tap `{tap}` is not a feature map: shape {:?}",
                    map.size()
                )));
            }
            Ok(map)
        })
    }

    /// As [`ErfMeter::add`], for any differentiable map from an image batch of one to an NCHW
    /// feature map.
    pub fn add_with(
        &mut self,
        images: &Tensor,
        feature_map: impl Fn(&Tensor) -> Result<Tensor, TrainError>,
    ) -> Result<(), TrainError> {
        for i in 0..images.size()[0] {
            let x = images
                .f_narrow(0, i, 1)?
                .f_detach()?
                .f_set_requires_grad(true)?;
            let map = feature_map(&x)?;
            let s = map.size();
            let centre = map
                .f_select(3, s[3] / 2)?
                .f_select(2, s[2] / 2)?
                .f_relu()?
                .f_sum(Kind::Float)?;
            let grad = Tensor::f_run_backward(&[centre], &[&x], false, false)?.remove(0);
            let contribution = grad
                .f_relu()?
                .f_sum_dim_intlist([0i64, 1].as_slice(), false, Kind::Float)?
                .f_to_device(tch::Device::Cpu)?;
            // As the authors' script: an image whose gradient is not finite is skipped.
            if !bool::try_from(contribution.f_isfinite()?.f_all()?)? {
                self.skipped += 1;
                continue;
            }
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc.f_add(&contribution)?,
                None => contribution,
            });
            self.count += 1;
        }
        Ok(())
    }

    pub fn finish(self, tap: &str) -> Result<ErfResult, TrainError> {
        let sum = self
            .sum
            .ok_or_else(|| TrainError::Input("ERF needs at least one image".into()))?;
        let mean = sum.f_div_scalar(self.count as f64)?;
        let (h, w) = (mean.size()[0] as usize, mean.size()[1] as usize);
        let raw: Vec<f64> = Vec::<f32>::try_from(mean.f_reshape([-1])?)?
            .iter()
            .map(|&v| v as f64)
            .collect();
        let logged: Vec<f64> = raw.iter().map(|v| (v + 1.0).log10()).collect();
        let max = logged.iter().cloned().fold(0.0, f64::max);
        let map: Vec<f64> = logged
            .iter()
            .map(|v| if max > 0.0 { v / max } else { 0.0 })
            .collect();
        let area_ratios = THRESHOLDS
            .iter()
            .map(|&t| (t, area_ratio(&map, h, w, t)))
            .collect();
        let area_ratios_interpolated = THRESHOLDS
            .iter()
            .map(|&t| (t, area_ratio_interpolated(&map, h, w, t)))
            .collect();
        Ok(ErfResult {
            tap: tap.into(),
            images: self.count,
            height: h,
            width: w,
            area_ratios,
            area_ratios_interpolated,
            rms_radius_px: rms_radius(&raw, h, w),
            map: map.iter().map(|&v| v as f32).collect(),
        })
    }
}

/// Side² / area of the smallest centred square whose sum exceeds `t` of the total (as the
/// reference `get_rectangle`), or 1.0 when none does.
pub fn area_ratio(map: &[f64], h: usize, w: usize, t: f64) -> f64 {
    let total: f64 = map.iter().sum();
    if total <= 0.0 {
        return 1.0;
    }
    for i in 1..h / 2 {
        let (y0, y1) = (h / 2 - i, (h / 2 + 1 + i).min(h));
        let (x0, x1) = (w / 2 - i.min(w / 2), (w / 2 + 1 + i).min(w));
        let mut s = 0.0;
        for y in y0..y1 {
            s += map[y * w + x0..y * w + x1].iter().sum::<f64>();
        }
        if s / total > t {
            let side = (2 * i + 1) as f64;
            return side / h as f64 * side / w as f64;
        }
    }
    1.0
}

/// Shares of the total held by the centred squares of side 1, 3, 5, … that fit the map.
fn centred_square_shares(map: &[f64], h: usize, w: usize) -> Vec<f64> {
    let total: f64 = map.iter().sum();
    let (cy, cx) = (h / 2, w / 2);
    (0..=cy.max(cx))
        .map(|i| {
            let (y0, y1) = (cy.saturating_sub(i), (cy + 1 + i).min(h));
            let (x0, x1) = (cx.saturating_sub(i), (cx + 1 + i).min(w));
            let s: f64 = (y0..y1)
                .map(|y| map[y * w + x0..y * w + x1].iter().sum::<f64>())
                .sum();
            s / total
        })
        .collect()
}

/// The area ratio with a continuous side: between the whole-pixel squares whose shares bracket
/// `t` the side is interpolated linearly in the share (side 0 holds nothing), so the measure
/// moves with the map instead of in steps of two pixels. 1.0 when no square reaches `t`.
pub fn area_ratio_interpolated(map: &[f64], h: usize, w: usize, t: f64) -> f64 {
    if map.iter().sum::<f64>() <= 0.0 {
        return 1.0;
    }
    let shares = centred_square_shares(map, h, w);
    let (mut side_below, mut share_below) = (0.0, 0.0);
    for (i, &share) in shares.iter().enumerate() {
        let side = (2 * i + 1) as f64;
        if share >= t {
            let f = if share > share_below {
                (t - share_below) / (share - share_below)
            } else {
                1.0
            };
            let s = side_below + f * (side - side_below);
            return (s * s / (h * w) as f64).min(1.0);
        }
        (side_below, share_below) = (side, share);
    }
    1.0
}

/// Contribution-weighted RMS distance (pixels) from the centre pixel; 0 for an empty map.
pub fn rms_radius(raw: &[f64], h: usize, w: usize) -> f64 {
    let (cy, cx) = ((h / 2) as f64, (w / 2) as f64);
    let (mut mass, mut moment) = (0.0, 0.0);
    for (k, &g) in raw.iter().enumerate() {
        let (dy, dx) = ((k / w) as f64 - cy, (k % w) as f64 - cx);
        mass += g;
        moment += g * (dy * dy + dx * dx);
    }
    if mass > 0.0 {
        (moment / mass).sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::{area_ratio, area_ratio_interpolated};

    #[test]
    fn interpolated_ratio_is_continuous_and_brackets_the_whole_pixel_one() {
        // A Gaussian-like blob: the stepped ratio jumps, the interpolated one moves smoothly.
        let (h, w) = (21, 21);
        let m: Vec<f64> = (0..h * w)
            .map(|k| {
                let (y, x) = ((k / w) as f64 - 10.0, (k % w) as f64 - 10.0);
                (-(y * y + x * x) / 18.0).exp()
            })
            .collect();
        let (mut last, mut last_stepped, mut largest_step) = (0.0, 0.0, 0.0f64);
        for step in 1..=950 {
            let t = step as f64 / 1000.0;
            let r = area_ratio_interpolated(&m, h, w, t);
            assert!(r > last, "t {t}: {r} after {last}");
            assert!(r - last < 0.01, "t {t}: a jump from {last} to {r}");
            // Never above the whole-pixel square that first holds more than t.
            let stepped = area_ratio(&m, h, w, t);
            assert!(r <= stepped + 1e-12, "t {t}");
            largest_step = largest_step.max(stepped - last_stepped);
            (last, last_stepped) = (r, stepped);
        }
        // Where the whole-pixel ratio jumps by whole squares (side 7 → 9 of 21 is 0.07).
        assert!(largest_step > 0.05, "{largest_step}");
        // All mass on the centre pixel: a square of side t holds share t.
        let mut point = vec![0.0; 81];
        point[40] = 1.0;
        let r = area_ratio_interpolated(&point, 9, 9, 0.5);
        assert!((r - 0.25 / 81.0).abs() < 1e-15, "{r}");
    }

    #[test]
    fn area_ratio_of_a_centred_blob() {
        // 9×9 map with all mass in the centre 3×3: t=0.5 needs the 3×3 square.
        let mut m = vec![0.0; 81];
        for y in 3..6 {
            for x in 3..6 {
                m[y * 9 + x] = 1.0;
            }
        }
        assert!((area_ratio(&m, 9, 9, 0.5) - 9.0 / 81.0).abs() < 1e-12);
        // Uniform map: 0.99 is never exceeded by a square smaller than the map.
        assert_eq!(area_ratio(&[1.0; 81], 9, 9, 0.99), 1.0);
    }
}
