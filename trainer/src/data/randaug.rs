//! RandAugment with timm's semantics (`timm/data/auto_augment.py`): a spec such as
//! `rand-m9-mstd0.5-inc1` picks `n` ops uniformly with replacement; each op runs with
//! probability `p` (0.5) at a magnitude drawn from N(m, mstd) clipped to [0, mmax].

use super::ops;
use super::{DataError, Image, Result};
use lkd_models::preprocess::Interpolation;
use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

/// timm `_RAND_INCREASING_TRANSFORMS` (`inc1`).
pub const INCREASING: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::PosterizeIncreasing,
    Op::SolarizeIncreasing,
    Op::SolarizeAdd,
    Op::ColorIncreasing,
    Op::ContrastIncreasing,
    Op::BrightnessIncreasing,
    Op::SharpnessIncreasing,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

/// timm `_RAND_TRANSFORMS` (default, `inc0`).
pub const STANDARD: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

const LEVEL_DENOM: f64 = 10.0;
const TRANSLATE_PCT: f64 = 0.45;

#[derive(Clone, Debug, PartialEq)]
pub struct RandAugment {
    pub ops: Vec<Op>,
    pub num_ops: usize,
    pub magnitude: f64,
    pub magnitude_std: f64,
    pub magnitude_max: f64,
    pub prob: f64,
    /// Fill for pixels uncovered by geometric ops: the dataset mean as u8, like timm's `img_mean`.
    pub fill: Vec<u8>,
    pub interpolation: Interpolation,
}

impl RandAugment {
    /// Parses a timm spec (`rand-m9-mstd0.5-inc1`, also `n`, `p`, `mmax`).
    pub fn parse(spec: &str, fill: Vec<u8>, interpolation: Interpolation) -> Result<Self> {
        let bad = |m: String| DataError::Config(format!("rand_augment `{spec}`: {m}"));
        let mut parts = spec.split('-');
        if parts.next() != Some("rand") {
            return Err(bad("must start with `rand`".into()));
        }
        let mut ra = Self {
            ops: STANDARD.to_vec(),
            num_ops: 2,
            magnitude: 10.0,
            magnitude_std: 0.0,
            magnitude_max: LEVEL_DENOM,
            prob: 0.5,
            fill,
            interpolation,
        };
        for p in parts {
            let split = p
                .find(|ch: char| !ch.is_ascii_alphabetic())
                .unwrap_or(p.len());
            let (key, val) = p.split_at(split);
            let num = || {
                val.parse::<f64>()
                    .map_err(|_| bad(format!("`{p}`: `{val}` is not a number")))
            };
            match key {
                "m" => ra.magnitude = num()?,
                "mstd" => ra.magnitude_std = num()?,
                "mmax" => ra.magnitude_max = num()?,
                "n" => {
                    let n = num()?;
                    if !(0.0..=16.0).contains(&n) || n.fract() != 0.0 {
                        return Err(bad(format!("`{p}`: n must be a whole number in 0..=16")));
                    }
                    ra.num_ops = n as usize
                }
                "p" => ra.prob = num()?,
                "inc" => {
                    ra.ops = if num()? != 0.0 {
                        INCREASING.to_vec()
                    } else {
                        STANDARD.to_vec()
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option `{p}` (supported: m, mstd, mmax, n, p, inc)"
                    )))
                }
            }
        }
        let within = |name: &str, v: f64, lo: f64, hi: f64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(bad(format!("{name} = {v} must be in [{lo}, {hi}]")))
            }
        };
        within("m", ra.magnitude, 0.0, 100.0)?;
        within("mstd", ra.magnitude_std, 0.0, 100.0)?;
        within("mmax", ra.magnitude_max, 1e-6, 100.0)?;
        within("p", ra.prob, 0.0, 1.0)?;
        Ok(ra)
    }

    pub fn apply<R: Rng + ?Sized>(&self, mut img: Image, rng: &mut R) -> Image {
        for _ in 0..self.num_ops {
            let op = self.ops[rng.gen_range(0..self.ops.len())];
            if self.prob < 1.0 && rng.gen::<f64>() > self.prob {
                continue;
            }
            let mut m = self.magnitude;
            if self.magnitude_std == f64::INFINITY {
                m = rng.gen_range(0.0..=m);
            } else if self.magnitude_std > 0.0 {
                m += self.magnitude_std * super::rng::normal(rng);
            }
            let m = m.clamp(0.0, self.magnitude_max);
            img = self.apply_op(op, img, m, rng);
        }
        img
    }

    /// One op at magnitude `m` (0..=10); `rng` only decides the sign of signed ops.
    pub fn apply_op<R: Rng + ?Sized>(&self, op: Op, mut img: Image, m: f64, rng: &mut R) -> Image {
        let lvl = m / LEVEL_DENOM;
        let mut signed = |v: f64| if rng.gen::<f64>() < 0.5 { -v } else { v };
        let fill = &self.fill;
        let interp = self.interpolation;
        match op {
            Op::AutoContrast => ops::autocontrast(&mut img),
            Op::Equalize => ops::equalize(&mut img),
            Op::Invert => ops::invert(&mut img),
            Op::Rotate => img = ops::rotate(&img, signed(lvl * 30.0), interp, fill),
            Op::Posterize => ops::posterize(&mut img, (lvl * 4.0) as u32),
            Op::PosterizeIncreasing => ops::posterize(&mut img, 4 - (lvl * 4.0) as u32),
            Op::Solarize => ops::solarize(&mut img, (lvl * 256.0) as u32),
            Op::SolarizeIncreasing => ops::solarize(&mut img, 256 - (lvl * 256.0) as u32),
            Op::SolarizeAdd => ops::solarize_add(&mut img, (lvl * 110.0) as i32, 128),
            Op::Color | Op::Contrast | Op::Brightness | Op::Sharpness => {
                let f = (lvl * 1.8 + 0.1) as f32;
                enhance(op, &mut img, f)
            }
            Op::ColorIncreasing
            | Op::ContrastIncreasing
            | Op::BrightnessIncreasing
            | Op::SharpnessIncreasing => {
                let f = (1.0 + signed(lvl * 0.9)).max(0.1) as f32;
                enhance(op, &mut img, f)
            }
            Op::ShearX => {
                img = ops::affine(
                    &img,
                    [1.0, signed(lvl * 0.3), 0.0, 0.0, 1.0, 0.0],
                    interp,
                    fill,
                )
            }
            Op::ShearY => {
                img = ops::affine(
                    &img,
                    [1.0, 0.0, 0.0, signed(lvl * 0.3), 1.0, 0.0],
                    interp,
                    fill,
                )
            }
            Op::TranslateXRel => {
                let px = signed(lvl * TRANSLATE_PCT) * img.width as f64;
                img = ops::affine(&img, [1.0, 0.0, px, 0.0, 1.0, 0.0], interp, fill)
            }
            Op::TranslateYRel => {
                let px = signed(lvl * TRANSLATE_PCT) * img.height as f64;
                img = ops::affine(&img, [1.0, 0.0, 0.0, 0.0, 1.0, px], interp, fill)
            }
        }
        img
    }
}

fn enhance(op: Op, img: &mut Image, f: f32) {
    match op {
        Op::Color | Op::ColorIncreasing => ops::enhance_color(img, f),
        Op::Contrast | Op::ContrastIncreasing => ops::enhance_contrast(img, f),
        Op::Brightness | Op::BrightnessIncreasing => ops::enhance_brightness(img, f),
        _ => ops::enhance_sharpness(img, f),
    }
}
