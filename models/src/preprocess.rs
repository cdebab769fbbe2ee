//! Preprocessing as data (defined once): the trainer normalizes with it, the exporter embeds it
//! in ONNX `metadata_props`, and the runtime reads it back. No other file holds mean/std values.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Fashion-MNIST training-set statistics (pixel / 255).
pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];
/// Largest model input side accepted from a config or metadata (bounds preprocessing work).
pub const MAX_INPUT_SIDE: usize = 4096;

/// Spelled the same in configs (serde), ONNX metadata and flags (strum, clap): lowercase names.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Interpolation {
    Nearest,
    Bilinear,
    Bicubic,
}

impl Interpolation {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// How an image becomes the model's input tensor: resize the shorter side to
/// `input_size / crop_pct` with `interpolation`, centre-crop `input_size`, convert to
/// `channels` (1 = luma, 3 = RGB), scale to [0,1], then `(x - mean) / std` per channel, NCHW.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub input_size: [usize; 2],
    pub channels: usize,
    pub crop_pct: f32,
    pub interpolation: Interpolation,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Keys of the preprocessing entries in ONNX `metadata_props`.
pub mod keys {
    pub const INPUT_SIZE: &str = "lkd.input_size"; // "H,W"
    pub const CHANNELS: &str = "lkd.channels";
    pub const CROP_PCT: &str = "lkd.crop_pct";
    pub const INTERPOLATION: &str = "lkd.interpolation";
    pub const MEAN: &str = "lkd.mean"; // comma separated
    pub const STD: &str = "lkd.std";
    pub const LABELS: &str = "lkd.labels"; // JSON array of strings
    pub const ARCH: &str = "lkd.arch";
    pub const PRESET: &str = "lkd.preset";
    pub const PARAMS: &str = "lkd.params";
    pub const GFLOPS: &str = "lkd.gflops";
}

impl Preprocess {
    pub fn imagenet(size: usize) -> Self {
        Self {
            input_size: [size, size],
            channels: 3,
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
        }
    }

    pub fn fashion_mnist() -> Self {
        Self {
            input_size: [28, 28],
            channels: 1,
            crop_pct: 1.0,
            interpolation: Interpolation::Bilinear,
            mean: FASHION_MNIST_MEAN.to_vec(),
            std: FASHION_MNIST_STD.to_vec(),
        }
    }

    /// The size the shorter side is resized to before the centre crop: timm's
    /// `math.floor(size / crop_pct)`, computed in f64 on the decimal `crop_pct` a config or
    /// metadata states (0.9, not the f32 0.899999976), as Python sees it.
    pub fn resize_size(&self) -> usize {
        let side = self.input_size[0].max(self.input_size[1]) as f64;
        let crop_pct: f64 = self
            .crop_pct
            .to_string()
            .parse()
            .unwrap_or(self.crop_pct as f64);
        (side / crop_pct).floor() as usize
    }

    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let join = |v: &[f32]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        BTreeMap::from([
            (
                keys::INPUT_SIZE.into(),
                format!("{},{}", self.input_size[0], self.input_size[1]),
            ),
            (keys::CHANNELS.into(), self.channels.to_string()),
            (keys::CROP_PCT.into(), self.crop_pct.to_string()),
            (
                keys::INTERPOLATION.into(),
                self.interpolation.as_str().into(),
            ),
            (keys::MEAN.into(), join(&self.mean)),
            (keys::STD.into(), join(&self.std)),
        ])
    }

    /// Reads preprocessing back from metadata; the error names the missing or malformed key.
    pub fn from_metadata(meta: &BTreeMap<String, String>) -> Result<Self, PreprocessSpecError> {
        let get = |key: &'static str| {
            meta.get(key)
                .map(String::as_str)
                .ok_or(PreprocessSpecError::MissingKey { key })
        };
        let malformed = |key: &'static str, value: &str, expected: &'static str| {
            PreprocessSpecError::MalformedKey {
                key,
                value: value.to_string(),
                expected,
            }
        };
        let floats = |key: &'static str| -> Result<Vec<f32>, PreprocessSpecError> {
            let value = get(key)?;
            value
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<f32>()
                        .map_err(|_| malformed(key, value, "comma-separated numbers"))
                })
                .collect()
        };
        let size = get(keys::INPUT_SIZE)?;
        let input_size = match size
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .as_deref()
        {
            Ok(&[h, w]) => [h, w],
            _ => return Err(malformed(keys::INPUT_SIZE, size, "`H,W` (two integers)")),
        };
        let channels = get(keys::CHANNELS)?;
        let channels = channels
            .trim()
            .parse()
            .map_err(|_| malformed(keys::CHANNELS, channels, "an integer"))?;
        let crop_pct = get(keys::CROP_PCT)?;
        let crop_pct = crop_pct
            .trim()
            .parse()
            .map_err(|_| malformed(keys::CROP_PCT, crop_pct, "a number"))?;
        let interp = get(keys::INTERPOLATION)?;
        let interpolation = Interpolation::parse(interp).ok_or_else(|| {
            malformed(keys::INTERPOLATION, interp, "nearest, bilinear or bicubic")
        })?;
        let p = Self {
            input_size,
            channels,
            crop_pct,
            interpolation,
            mean: floats(keys::MEAN)?,
            std: floats(keys::STD)?,
        };
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), PreprocessSpecError> {
        if self
            .input_size
            .iter()
            .any(|&s| s == 0 || s > MAX_INPUT_SIDE)
        {
            return Err(PreprocessSpecError::InputSize(self.input_size));
        }
        if self.mean.iter().chain(&self.std).any(|v| !v.is_finite()) {
            return Err(PreprocessSpecError::NotFinite);
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(PreprocessSpecError::Channels(self.channels));
        }
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return Err(PreprocessSpecError::MeanStdLength {
                channels: self.channels,
                mean: self.mean.len(),
                std: self.std.len(),
            });
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(PreprocessSpecError::CropPct(self.crop_pct));
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err(PreprocessSpecError::StdNotPositive);
        }
        Ok(())
    }
}

/// Why a preprocessing description (config or ONNX metadata) is unusable.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PreprocessSpecError {
    #[error("metadata key `{key}` is missing")]
    MissingKey { key: &'static str },
    #[error("metadata key `{key}` = `{value}` is malformed: expected {expected}")]
    MalformedKey {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("input_size sides must be in 1..={MAX_INPUT_SIDE}, found {0:?}")]
    InputSize([usize; 2]),
    #[error("mean/std values must be finite")]
    NotFinite,
    #[error("channels must be 1 or 3, found {0}")]
    Channels(usize),
    #[error("mean/std need {channels} values each, found {mean} and {std}")]
    MeanStdLength {
        channels: usize,
        mean: usize,
        std: usize,
    },
    #[error("crop_pct must be in (0, 1], found {0}")]
    CropPct(f32),
    #[error("std values must be positive")]
    StdNotPositive,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip() {
        let p = Preprocess::imagenet(224);
        assert_eq!(Preprocess::from_metadata(&p.to_metadata()).unwrap(), p);
        assert_eq!(p.resize_size(), 256);
    }

    #[test]
    fn interpolation_spellings_agree_across_serde_and_metadata() {
        use strum::VariantNames;
        for &name in Interpolation::VARIANTS {
            let i = Interpolation::parse(name).unwrap();
            assert_eq!(i.as_str(), name);
            assert_eq!(serde_json::to_value(i).unwrap(), name);
        }
        assert_eq!(Interpolation::parse("Bilinear"), None);
    }

    #[test]
    fn resize_size_uses_the_decimal_crop_pct() {
        // Python: math.floor(18 / 0.9) == 20; in f32 arithmetic 18 / 0.9f32 is 20.0000005.
        let p = Preprocess {
            input_size: [18, 18],
            crop_pct: 0.9,
            ..Preprocess::fashion_mnist()
        };
        assert_eq!(p.resize_size(), 20);
        let p = Preprocess {
            input_size: [224, 224],
            crop_pct: 0.95,
            ..Preprocess::imagenet(224)
        };
        assert_eq!(p.resize_size(), 235);
    }

    #[test]
    fn sizes_and_values_are_validated() {
        let bad = Preprocess {
            input_size: [0, 28],
            ..Preprocess::fashion_mnist()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "input_size sides must be in 1..=4096, found [0, 28]"
        );
        let bad = Preprocess {
            mean: vec![f32::NAN],
            ..Preprocess::fashion_mnist()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "mean/std values must be finite"
        );
    }

    #[test]
    fn missing_and_malformed_keys_are_named() {
        let good = Preprocess::fashion_mnist().to_metadata();
        let mut m = good.clone();
        m.remove(keys::STD);
        assert_eq!(
            Preprocess::from_metadata(&m).unwrap_err().to_string(),
            "metadata key `lkd.std` is missing"
        );
        let with = |key: &str, value: &str| {
            let mut m = good.clone();
            m.insert(key.into(), value.into());
            Preprocess::from_metadata(&m).unwrap_err().to_string()
        };
        assert_eq!(
            with(keys::INPUT_SIZE, "28"),
            "metadata key `lkd.input_size` = `28` is malformed: expected `H,W` (two integers)"
        );
        assert_eq!(
            with(keys::INPUT_SIZE, "28.5,28"),
            "metadata key `lkd.input_size` = `28.5,28` is malformed: expected `H,W` (two integers)"
        );
        assert_eq!(
            with(keys::MEAN, "0.5,x"),
            "metadata key `lkd.mean` = `0.5,x` is malformed: expected comma-separated numbers"
        );
        assert_eq!(
            with(keys::INTERPOLATION, "lanczos"),
            "metadata key `lkd.interpolation` = `lanczos` is malformed: expected nearest, bilinear or bicubic"
        );
        assert_eq!(
            with(keys::CHANNELS, "2"),
            "channels must be 1 or 3, found 2"
        );
        assert_eq!(
            with(keys::CROP_PCT, "1.5"),
            "crop_pct must be in (0, 1], found 1.5"
        );
    }
}
