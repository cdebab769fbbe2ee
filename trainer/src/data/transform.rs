//! Per-sample transforms. Train (timm order): random-resized-crop (or resize + centre crop, then
//! optional pad-and-crop), horizontal flip, RandAugment, normalize, random erasing. Eval:
//! `lkd_preprocess` (resize the shorter side to `Preprocess::resize_size()`, centre crop,
//! normalize), the same function `predict` and `serve` run.

use super::{ops, rng, DataError, Image, RandAugment, Result};
use lkd_models::preprocess::Preprocess;
use lkd_preprocess::PreprocessError;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// timm `RandomResizedCropAndInterpolation` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RrcConfig {
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
}

impl Default for RrcConfig {
    fn default() -> Self {
        Self {
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
        }
    }
}

/// Which training augmentations run; every one is optional. `Default` is none of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random-resized-crop; when absent the image is resized and centre-cropped as for eval.
    pub random_resized_crop: Option<RrcConfig>,
    /// Zero-pad by this many pixels, then crop `input_size` at random (CIFAR/MNIST style).
    pub crop_padding: usize,
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// timm RandAugment spec, e.g. `rand-m9-mstd0.5-inc1`.
    pub rand_augment: Option<String>,
    /// Probability of random erasing (per-pixel normal noise, in normalized space).
    pub random_erasing: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            random_resized_crop: None,
            crop_padding: 0,
            hflip: 0.0,
            rand_augment: None,
            random_erasing: 0.0,
        }
    }
}

impl AugmentConfig {
    /// The ConvNeXt/SLaK ImageNet recipe (Mixup/CutMix are separate: `MixupConfig::default()`).
    pub fn imagenet() -> Self {
        Self {
            random_resized_crop: Some(RrcConfig::default()),
            crop_padding: 0,
            hflip: 0.5,
            rand_augment: Some("rand-m9-mstd0.5-inc1".into()),
            random_erasing: 0.25,
        }
    }

    /// CPU-scale 28×28 recipe: pad-2 random crop and flip.
    pub fn proxy() -> Self {
        Self {
            crop_padding: 2,
            hflip: 0.5,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(DataError::Config(format!(
                    "augment.{name} must be a probability in [0, 1], found {p}"
                )))
            }
        };
        prob("hflip", self.hflip)?;
        prob("random_erasing", self.random_erasing)?;
        if let Some(r) = &self.random_resized_crop {
            if !(0.0 < r.scale[0]
                && r.scale[0] <= r.scale[1]
                && 0.0 < r.ratio[0]
                && r.ratio[0] <= r.ratio[1])
            {
                return Err(DataError::Config(format!(
                    "augment.random_resized_crop: bad scale/ratio {r:?}"
                )));
            }
        }
        Ok(())
    }
}

/// timm `RandomResizedCropAndInterpolation.get_params`: returns (x, y, w, h).
pub fn rrc_params<R: Rng + ?Sized>(
    w: usize,
    h: usize,
    cfg: &RrcConfig,
    rng: &mut R,
) -> (usize, usize, usize, usize) {
    let area = (w * h) as f64;
    let (lr0, lr1) = (cfg.ratio[0].ln(), cfg.ratio[1].ln());
    for _ in 0..10 {
        let target = rng.gen_range(cfg.scale[0]..=cfg.scale[1]) * area;
        let aspect = rng.gen_range(lr0..=lr1).exp();
        let tw = rng::round_half_even((target * aspect).sqrt()) as usize;
        let th = rng::round_half_even((target / aspect).sqrt()) as usize;
        if tw >= 1 && th >= 1 && tw <= w && th <= h {
            let y = rng.gen_range(0..=h - th);
            let x = rng.gen_range(0..=w - tw);
            return (x, y, tw, th);
        }
    }
    // Fallback: the largest centred crop within the ratio range.
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < cfg.ratio[0] {
        (
            w,
            (rng::round_half_even(w as f64 / cfg.ratio[0]) as usize).max(1),
        )
    } else if in_ratio > cfg.ratio[1] {
        (
            (rng::round_half_even(h as f64 * cfg.ratio[1]) as usize).max(1),
            h,
        )
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

/// The decode a sample needs (see [`Transform::plan`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodePlan {
    /// Random-resized crop (x, y, w, h) in full-size pixels.
    pub crop: Option<(usize, usize, usize, usize)>,
    /// Share of the full resolution the transform needs, in (0, 1].
    pub min_scale: f64,
}

/// A box drawn on a `full`-size image, moved onto the same image decoded at `got` pixels
/// (unchanged when the sizes agree); it stays inside the image and at least 1×1.
fn scale_box(
    (x, y, w, h): (usize, usize, usize, usize),
    full: [usize; 2],
    got: [usize; 2],
) -> (usize, usize, usize, usize) {
    if full == got {
        return (x, y, w, h);
    }
    let axis = |start: usize, len: usize, full: usize, got: usize| {
        let f = got as f64 / full as f64;
        let s = ((start as f64 * f).round() as usize).min(got - 1);
        let l = ((len as f64 * f).round() as usize).clamp(1, got - s);
        (s, l)
    };
    let (x, w) = axis(x, w, full[0], got[0]);
    let (y, h) = axis(y, h, full[1], got[1]);
    (x, y, w, h)
}

/// timm `RandomErasing(mode='pixel', max_count=1)` on one normalized C×H×W image.
pub fn random_erase<R: Rng + ?Sized>(
    x: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    prob: f64,
    rng: &mut R,
) -> bool {
    if rng.gen::<f64>() > prob {
        return false;
    }
    let area = (h * w) as f64;
    let (min_area, max_area) = (0.02, 1.0 / 3.0);
    let (la0, la1) = (0.3f64.ln(), (1.0f64 / 0.3).ln());
    for _ in 0..10 {
        let target = rng.gen_range(min_area..max_area) * area;
        let aspect = rng.gen_range(la0..la1).exp();
        let eh = rng::round_half_even((target * aspect).sqrt()) as usize;
        let ew = rng::round_half_even((target / aspect).sqrt()) as usize;
        if ew < w && eh < h {
            let top = rng.gen_range(0..=h - eh);
            let left = rng.gen_range(0..=w - ew);
            for k in 0..c {
                for y in top..top + eh {
                    let row = k * h * w + y * w;
                    for v in &mut x[row + left..row + left + ew] {
                        *v = rng::normal(rng) as f32;
                    }
                }
            }
            return true;
        }
    }
    false
}

/// A per-sample transform for one model's `Preprocess`. Construction never fails;
/// `validate` (run by `Loader::new`) reports a bad `Preprocess` or augmentation config.
#[derive(Clone, Debug)]
pub struct Transform {
    pre: Preprocess,
    aug: Option<AugmentConfig>,
    rand_augment: Option<RandAugment>,
    /// Why `aug.rand_augment` did not parse (reported by `validate`).
    rand_augment_error: Option<String>,
}

impl Transform {
    pub fn eval(pre: &Preprocess) -> Self {
        Self {
            pre: pre.clone(),
            aug: None,
            rand_augment: None,
            rand_augment_error: None,
        }
    }

    pub fn train(aug: &AugmentConfig, pre: &Preprocess) -> Self {
        let mut rand_augment_error = None;
        let rand_augment = aug.rand_augment.as_ref().and_then(|spec| {
            // timm fills uncovered pixels with the dataset mean in u8.
            let fill = pre
                .mean
                .iter()
                .map(|m| (m * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect();
            RandAugment::parse(spec, fill, pre.interpolation)
                .map_err(|e| {
                    rand_augment_error = Some(match e {
                        DataError::Config(m) => m,
                        other => other.to_string(),
                    })
                })
                .ok()
        });
        Self {
            pre: pre.clone(),
            aug: Some(aug.clone()),
            rand_augment,
            rand_augment_error,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.pre.validate()?;
        if let Some(aug) = &self.aug {
            aug.validate()?;
        }
        match &self.rand_augment_error {
            Some(m) => Err(DataError::Config(m.clone())),
            None => Ok(()),
        }
    }

    pub fn is_train(&self) -> bool {
        self.aug.is_some()
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.pre
    }

    /// [C, H, W] of the output.
    pub fn output_shape(&self) -> [usize; 3] {
        [
            self.pre.channels,
            self.pre.input_size[0],
            self.pre.input_size[1],
        ]
    }

    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    /// The eval geometry serving uses too (`lkd_preprocess::eval_geometry`): channels, resize
    /// of the shorter side to `resize_size()`, centre crop `input_size`. Datasets yield
    /// non-empty images and `validate` checks the `Preprocess`, so this fails only on an image
    /// no dataset produces; it is still an error for the caller, never a loader panic.
    pub fn eval_geometry(&self, img: Image) -> Result<Image, PreprocessError> {
        let out = lkd_preprocess::eval_geometry(ops::to_pixels(img), &self.pre)?;
        Ok(ops::from_pixels(out))
    }

    /// What to decode for an image of `width`×`height`: the random-resized crop (drawn first,
    /// as [`Transform::apply_u8`] draws it) and the smallest share of the full resolution that
    /// still gives the crop at least `input_size` pixels — a JPEG decoder may scale down to it.
    pub fn plan<R: Rng + ?Sized>(&self, width: usize, height: usize, rng: &mut R) -> DecodePlan {
        let rrc = self
            .aug
            .as_ref()
            .and_then(|a| a.random_resized_crop.as_ref());
        let Some(cfg) = rrc else {
            // Eval geometry stays exactly what `predict` and `serve` compute.
            return DecodePlan {
                crop: None,
                min_scale: 1.0,
            };
        };
        let crop = rrc_params(width, height, cfg, rng);
        let [h, w] = self.pre.input_size;
        let min_scale = (w as f64 / crop.2 as f64).max(h as f64 / crop.3 as f64);
        DecodePlan {
            crop: Some(crop),
            min_scale: min_scale.min(1.0),
        }
    }

    /// Everything before normalization, as u8 HWC with `pre.channels` channels.
    pub fn apply_u8<R: Rng + ?Sized>(
        &self,
        img: Image,
        rng: &mut R,
    ) -> Result<Image, PreprocessError> {
        let full = [img.width, img.height];
        let plan = self.plan(img.width, img.height, rng);
        self.apply_planned_u8(img, full, &plan, rng)
    }

    /// [`Transform::apply_u8`] with the crop already drawn by [`Transform::plan`] on the
    /// full-size `[width, height]`; `img` may be decoded smaller, and the crop is scaled to it.
    pub fn apply_planned_u8<R: Rng + ?Sized>(
        &self,
        img: Image,
        full: [usize; 2],
        plan: &DecodePlan,
        rng: &mut R,
    ) -> Result<Image, PreprocessError> {
        let img = ops::to_channels(img, self.pre.channels);
        let [h, w] = self.pre.input_size;
        let Some(aug) = &self.aug else {
            return self.eval_geometry(img);
        };
        let mut out = match plan.crop {
            Some((x, y, cw, ch)) => {
                let (x, y, cw, ch) = scale_box((x, y, cw, ch), full, [img.width, img.height]);
                let c = ops::crop(&img, x as isize, y as isize, cw, ch);
                ops::resize(&c, w, h, self.pre.interpolation)
            }
            None => self.eval_geometry(img)?,
        };
        if aug.crop_padding > 0 {
            let p = aug.crop_padding;
            let x = rng.gen_range(0..=2 * p) as isize - p as isize;
            let y = rng.gen_range(0..=2 * p) as isize - p as isize;
            out = ops::crop(&out, x, y, w, h);
        }
        if aug.hflip > 0.0 && rng.gen::<f64>() < aug.hflip {
            ops::hflip(&mut out);
        }
        if let Some(ra) = &self.rand_augment {
            out = ra.apply(out, rng);
        }
        Ok(out)
    }

    /// The full transform into `out` (C×H×W floats, normalized with the `Preprocess`).
    pub fn apply<R: Rng + ?Sized>(
        &self,
        img: Image,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let full = [img.width, img.height];
        let plan = self.plan(img.width, img.height, rng);
        self.apply_planned(img, full, &plan, rng, out)
    }

    /// [`Transform::apply`] after [`Transform::plan`] (see [`Transform::apply_planned_u8`]).
    pub fn apply_planned<R: Rng + ?Sized>(
        &self,
        img: Image,
        full: [usize; 2],
        plan: &DecodePlan,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let u = self.apply_planned_u8(img, full, plan, rng)?;
        ops::to_chw_normalized(&u, &self.pre.mean, &self.pre.std, out);
        if let Some(aug) = &self.aug {
            if aug.random_erasing > 0.0 {
                let [c, h, w] = self.output_shape();
                random_erase(out, c, h, w, aug.random_erasing, rng);
            }
        }
        Ok(())
    }
}
