//! One file per architecture family; this module maps preset names and config overrides to them.

pub mod convnext;
pub mod resnet;
pub mod slak;
pub mod vit;

use crate::graph::{Graph, GraphBuilder, GraphHeader, Init, NormAxis, ValueId};
use crate::preprocess::{Interpolation, Preprocess, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD};
use crate::ModelError;
use serde::{Deserialize, Serialize};

/// Settings every family shares.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyConfig {
    pub preset: String,
    pub in_chans: usize,
    pub num_classes: usize,
    pub input_size: [usize; 2],
    pub drop_path: f64,
}

impl FamilyConfig {
    pub(crate) fn header(&self, arch: &str) -> GraphHeader {
        GraphHeader {
            arch: arch.into(),
            preset: self.preset.clone(),
            in_chans: self.in_chans,
            input_size: self.input_size,
            num_classes: self.num_classes,
            preprocess: default_preprocess(self.in_chans, self.input_size),
        }
    }
}

/// ImageNet-sized inputs get the timm defaults (bicubic, crop 0.875, ImageNet stats);
/// small inputs are used whole; single-channel inputs get Fashion-MNIST statistics.
pub fn default_preprocess(in_chans: usize, input_size: [usize; 2]) -> Preprocess {
    let large = input_size[0] >= 64;
    let (mean, std) = if in_chans == 1 {
        (FASHION_MNIST_MEAN.to_vec(), FASHION_MNIST_STD.to_vec())
    } else {
        (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec())
    };
    Preprocess {
        input_size,
        channels: in_chans,
        crop_pct: if large { 0.875 } else { 1.0 },
        interpolation: if large { Interpolation::Bicubic } else { Interpolation::Bilinear },
        mean,
        std,
    }
}

/// The ConvNeXt macro design shared by ConvNeXt and SLaK (official names): patchify stem +
/// channels-first LayerNorm, LayerNorm + 2×2/2 downsampling, blocks of a depthwise token mixer →
/// channels-last LayerNorm → Linear 4C → GELU → Linear C → layer scale `gamma` → residual with
/// drop path, then mean pool → LayerNorm → head. `mixer(builder, x, block_path, stage, dim)`
/// builds each block's depthwise part; the families differ only there.
#[allow(clippy::too_many_arguments)]
pub(crate) fn convnext_macro(
    common: &FamilyConfig,
    arch: &str,
    depths: &[usize],
    dims: &[usize],
    stem: usize,
    layer_scale_init: f32,
    head_init_scale: f32,
    mut mixer: impl FnMut(&mut GraphBuilder, ValueId, &str, usize, usize) -> ValueId,
) -> Result<Graph, ModelError> {
    let init = Init::TruncNormal { std: 0.02 };
    let bias = Some(Init::Zeros);
    let mut b = GraphBuilder::new();
    let rates = stochastic_depth(common.drop_path, depths);
    let mut rate_iter = rates.iter();
    let mut x = GraphBuilder::INPUT;
    for (i, (&depth, &dim)) in depths.iter().zip(dims).enumerate() {
        let ds = format!("downsample_layers.{i}");
        x = if i == 0 {
            let y = b.conv(x, &format!("{ds}.0"), common.in_chans, dim, [stem; 2], stem, [0, 0], 1, bias.clone(), init.clone());
            b.layer_norm(y, &format!("{ds}.1"), dim, 1e-6, NormAxis::ChannelsFirst)
        } else {
            let prev = dims[i - 1];
            let y = b.layer_norm(x, &format!("{ds}.0"), prev, 1e-6, NormAxis::ChannelsFirst);
            b.conv(y, &format!("{ds}.1"), prev, dim, [2, 2], 2, [0, 0], 1, bias.clone(), init.clone())
        };
        for j in 0..depth {
            let m = format!("stages.{i}.{j}");
            let y = mixer(&mut b, x, &m, i, dim);
            let y = b.permute(y, &m, &[0, 2, 3, 1]);
            let y = b.layer_norm(y, &format!("{m}.norm"), dim, 1e-6, NormAxis::Last);
            let y = b.linear(y, &format!("{m}.pwconv1"), dim, 4 * dim, bias.clone(), init.clone());
            let y = b.gelu(y, &format!("{m}.act"));
            let y = b.linear(y, &format!("{m}.pwconv2"), 4 * dim, dim, bias.clone(), init.clone());
            let y = if layer_scale_init > 0.0 { b.scale(y, &format!("{m}.gamma"), dim, layer_scale_init) } else { y };
            let y = b.permute(y, &m, &[0, 3, 1, 2]);
            let y = b.drop_path(y, &format!("{m}.drop_path"), *rate_iter.next().unwrap());
            x = b.add(x, y, &m);
        }
        b.tap(&format!("stage{}", i + 1), x);
    }
    let last = *dims.last().unwrap();
    let pooled = b.global_avg_pool(x, "pool");
    let pre = b.layer_norm(pooled, "norm", last, 1e-6, NormAxis::Last);
    b.tap("pre_logits", pre);
    let logits = b.linear(pre, "head", last, common.num_classes, bias, Init::TruncNormal { std: 0.02 * head_init_scale });
    b.finish(common.header(arch), logits)
}

/// Linearly increasing drop-path rates over all blocks (as ConvNeXt/SLaK/timm).
pub(crate) fn stochastic_depth(max_rate: f64, depths: &[usize]) -> Vec<f64> {
    let total: usize = depths.iter().sum();
    (0..total).map(|i| if total > 1 { max_rate * i as f64 / (total - 1) as f64 } else { 0.0 }).collect()
}

/// A model as written in a run's `config.toml`: a preset plus optional overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub preset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_chans: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_path: Option<f64>,
    /// Blocks per stage (ResNet: per layer; ViT: `[depth]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depths: Option<Vec<usize>>,
    /// Channels per stage (ViT: `[dim]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dims: Option<Vec<usize>>,
    /// ConvNeXt depthwise kernel size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_size: Option<usize>,
    /// SLaK long kernel side per stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<usize>>,
    /// SLaK small kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small_kernel: Option<usize>,
}

/// Every preset: (name, family, in_chans, num_classes, input size).
pub const PRESETS: &[(&str, &str, usize, usize, usize)] = &[
    ("slak_nano", "slak", 1, 10, 28),
    ("slak_tiny", "slak", 3, 1000, 224),
    ("slak_small", "slak", 3, 1000, 224),
    ("slak_base", "slak", 3, 1000, 224),
    ("convnext_nano", "convnext", 1, 10, 28),
    ("convnext_tiny", "convnext", 3, 1000, 224),
    ("convnext_small", "convnext", 3, 1000, 224),
    ("convnext_base", "convnext", 3, 1000, 224),
    ("resnet_nano", "resnet", 1, 10, 28),
    ("resnet18", "resnet", 3, 1000, 224),
    ("resnet50", "resnet", 3, 1000, 224),
    ("vit_nano", "vit", 1, 10, 28),
    ("vit_small", "vit", 3, 1000, 224),
];

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.0).collect()
}

impl ModelConfig {
    pub fn preset(name: &str) -> Self {
        Self { preset: name.to_string(), ..Default::default() }
    }

    pub fn build(&self) -> Result<Graph, ModelError> {
        let &(name, family, in_chans, num_classes, size) = PRESETS
            .iter()
            .find(|p| p.0 == self.preset)
            .ok_or_else(|| ModelError::UnknownPreset { found: self.preset.clone(), known: preset_names().join(", ") })?;
        let size = self.input_size.unwrap_or(size);
        let common = FamilyConfig {
            preset: name.to_string(),
            in_chans: self.in_chans.unwrap_or(in_chans),
            num_classes: self.num_classes.unwrap_or(num_classes),
            input_size: [size, size],
            drop_path: self.drop_path.unwrap_or(0.0),
        };
        if common.in_chans == 0 || common.num_classes == 0 || size == 0 {
            return Err(ModelError::Config("in_chans, num_classes and input_size must be positive".into()));
        }
        if !(0.0..1.0).contains(&common.drop_path) {
            return Err(ModelError::Config(format!("drop_path must be in [0, 1), found {}", common.drop_path)));
        }
        let unused = |field: &str, set: bool| -> Result<(), ModelError> {
            if set {
                Err(ModelError::Config(format!("`{field}` does not apply to the {family} family ({name})")))
            } else {
                Ok(())
            }
        };
        match family {
            "slak" => {
                let mut c = match name {
                    "slak_nano" => slak::SlakConfig::nano(),
                    "slak_tiny" => slak::SlakConfig::tiny(),
                    "slak_small" => slak::SlakConfig::small(),
                    _ => slak::SlakConfig::base(),
                };
                unused("kernel_size", self.kernel_size.is_some())?;
                override_vec(&mut c.depths, &self.depths);
                override_vec(&mut c.dims, &self.dims);
                override_vec(&mut c.kernels, &self.kernels);
                if let Some(s) = self.small_kernel {
                    c.small_kernel = s;
                }
                c.build(&common)
            }
            "convnext" => {
                let mut c = match name {
                    "convnext_nano" => convnext::ConvNextConfig::nano(),
                    "convnext_tiny" => convnext::ConvNextConfig::tiny(),
                    "convnext_small" => convnext::ConvNextConfig::small(),
                    _ => convnext::ConvNextConfig::base(),
                };
                unused("kernels", self.kernels.is_some())?;
                unused("small_kernel", self.small_kernel.is_some())?;
                override_vec(&mut c.depths, &self.depths);
                override_vec(&mut c.dims, &self.dims);
                if let Some(k) = self.kernel_size {
                    c.kernel_size = k;
                }
                c.build(&common)
            }
            "resnet" => {
                let mut c = match name {
                    "resnet_nano" => resnet::ResNetConfig::nano(),
                    "resnet18" => resnet::ResNetConfig::resnet18(),
                    _ => resnet::ResNetConfig::resnet50(),
                };
                unused("kernel_size", self.kernel_size.is_some())?;
                unused("kernels", self.kernels.is_some())?;
                unused("small_kernel", self.small_kernel.is_some())?;
                unused("drop_path", self.drop_path.is_some_and(|d| d > 0.0))?;
                override_vec(&mut c.layers, &self.depths);
                override_vec(&mut c.widths, &self.dims);
                c.build(&common)
            }
            _ => {
                let mut c = if name == "vit_nano" { vit::VitConfig::nano() } else { vit::VitConfig::small() };
                unused("kernel_size", self.kernel_size.is_some())?;
                unused("kernels", self.kernels.is_some())?;
                unused("small_kernel", self.small_kernel.is_some())?;
                if let Some(d) = &self.depths {
                    c.depth = d.iter().sum();
                    c.stages = d.len();
                }
                if let Some(d) = &self.dims {
                    c.dim = *d.first().ok_or_else(|| ModelError::Config("vit dims needs one value".into()))?;
                }
                c.build(&common)
            }
        }
    }
}

fn override_vec(target: &mut Vec<usize>, value: &Option<Vec<usize>>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}
