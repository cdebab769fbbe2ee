//! Presets and model configs. One file per architecture family holds its typed config (and
//! validation) and its graph builder; this module holds the preset table, the overrides a
//! run's `config.toml` may give ([`ModelConfig`]), and the range checks the families share.
//!
//! Resolution: `ModelConfig` (preset name + optional overrides, as the user wrote it) →
//! [`ModelConfig::resolve`] → [`ModelSpec`] (the preset's typed family config with the
//! overrides applied, every field range-checked) → [`ModelSpec::build`] → [`Graph`].
//! Deserialising a `ModelConfig` resolves it, so a bad value is an error where the config is
//! read, before any work.

pub mod convnext;
pub mod resnet;
pub mod slak;
pub mod vit;

use self::FamilySpec::{ConvNext, ResNet, Slak, Vit};
use self::PresetInput::{FashionMnist, ImageNet};
use crate::graph::{Graph, GraphBuilder, GraphHeader, Init, NormAxis, ValueId};
use crate::layout::Layout;
use crate::preprocess::{
    Interpolation, Preprocess, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD,
    MAX_INPUT_SIDE,
};
use crate::ModelError;
use convnext::ConvNextConfig;
use resnet::ResNetConfig;
use serde::{Deserialize, Serialize};
use slak::SlakConfig;
use std::fmt::Debug;
use vit::VitConfig;

/// Upper bounds on user-settable sizes. They sit well above every published model (ConvNeXt-XL:
/// 36 blocks, width 2048; SLaK: 61×61 kernels; ImageNet-21k: 21 841 classes) and keep a
/// hostile config from asking for unbounded memory or time.
pub mod limits {
    pub const MAX_STAGES: usize = 8;
    pub const MAX_BLOCKS_PER_STAGE: usize = 64;
    pub const MAX_WIDTH: usize = 16_384;
    pub const MAX_KERNEL: usize = 127;
    pub const MAX_IN_CHANS: usize = 64;
    pub const MAX_CLASSES: usize = 100_000;
    // An input side's bound is the preprocessing's: `crate::preprocess::MAX_INPUT_SIDE`.
    /// Learned parameters plus buffers (8 GB as f32).
    pub const MAX_PARAMETERS: usize = 2_000_000_000;
}
use limits::*;

/// Settings every family shares.
#[derive(Clone, Debug, PartialEq)]
pub struct CommonConfig {
    pub preset: String,
    pub in_chans: usize,
    pub num_classes: usize,
    pub input_size: [usize; 2],
    pub drop_path: f64,
}

impl CommonConfig {
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

    fn validate(&self) -> Result<(), ModelError> {
        let c = Checker::new(&self.preset);
        c.range("in_chans", self.in_chans, 1, MAX_IN_CHANS)?;
        c.range("num_classes", self.num_classes, 1, MAX_CLASSES)?;
        c.range("input_size", self.input_size[0], 1, MAX_INPUT_SIDE)?;
        c.range("input_size", self.input_size[1], 1, MAX_INPUT_SIDE)?;
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(c.invalid("drop_path", self.drop_path, expected("drop_path")));
        }
        Ok(())
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
        interpolation: if large {
            Interpolation::Bicubic
        } else {
            Interpolation::Bilinear
        },
        mean,
        std,
    }
}

/// One family's typed config. Matches over it are exhaustive, so a new family must say how
/// it takes every override.
#[derive(Clone, Debug, PartialEq)]
pub enum FamilySpec {
    Slak(slak::SlakConfig),
    ConvNext(convnext::ConvNextConfig),
    ResNet(resnet::ResNetConfig),
    Vit(vit::VitConfig),
}

impl FamilySpec {
    pub fn family(&self) -> Family {
        match self {
            FamilySpec::Slak(_) => Family::Slak,
            FamilySpec::ConvNext(_) => Family::ConvNext,
            FamilySpec::ResNet(_) => Family::ResNet,
            FamilySpec::Vit(_) => Family::Vit,
        }
    }

    /// The family name graphs carry as `arch`.
    pub fn name(&self) -> &'static str {
        self.family().into()
    }
}

/// A network family, spelled as graphs carry it in `arch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Family {
    Slak,
    ConvNext,
    ResNet,
    Vit,
}

impl Family {
    /// Checkpoint layouts the family loads besides its official names. SLaK checkpoints exist
    /// only in the official layout; ResNet's official names are torchvision's (and timm's),
    /// ViT's are timm's.
    pub fn foreign_layouts(self) -> &'static [Layout] {
        match self {
            Family::ConvNext => &[
                convnext::TIMM,
                convnext::TIMM_CONV_MLP,
                convnext::TORCHVISION,
            ],
            Family::Slak | Family::ResNet | Family::Vit => &[],
        }
    }
}

/// Foreign checkpoint layouts for a graph's `arch` (none for an arch no family names).
pub fn foreign_layouts(arch: &str) -> &'static [Layout] {
    arch.parse::<Family>().map_or(&[], Family::foreign_layouts)
}

/// The data a preset is sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresetInput {
    /// 1×28×28, 10 classes (the CPU-scale proxy).
    FashionMnist,
    /// 3×224×224, 1000 classes.
    ImageNet,
}

impl PresetInput {
    /// (in_chans, num_classes, input side).
    fn geometry(self) -> (usize, usize, usize) {
        match self {
            PresetInput::FashionMnist => (1, 10, 28),
            PresetInput::ImageNet => (3, 1000, 224),
        }
    }
}

/// A named model. Each entry builds its own complete config, so no second table can lack it.
pub struct Preset {
    pub name: &'static str,
    pub input: PresetInput,
    family: fn() -> FamilySpec,
}

impl Preset {
    pub fn spec(&self) -> ModelSpec {
        let (in_chans, num_classes, size) = self.input.geometry();
        ModelSpec {
            common: CommonConfig {
                preset: self.name.to_string(),
                in_chans,
                num_classes,
                input_size: [size, size],
                drop_path: 0.0,
            },
            family: (self.family)(),
        }
    }

    pub fn family_name(&self) -> &'static str {
        (self.family)().name()
    }
}

/// Every preset. The architecture values live in each family's constructor (e.g.
/// [`slak::SlakConfig::proxy`]), one function per preset.
#[rustfmt::skip]
pub const PRESETS: &[Preset] = &[
    preset("slak_proxy",            FashionMnist, || Slak(SlakConfig::proxy())),
    preset("slak_tiny",            ImageNet,     || Slak(SlakConfig::tiny())),
    preset("slak_small",           ImageNet,     || Slak(SlakConfig::small())),
    preset("slak_base",            ImageNet,     || Slak(SlakConfig::base())),
    preset("convnext_tiny_slak7",  ImageNet,     || Slak(SlakConfig::convnext_tiny_slak7())),
    preset("convnext_small_slak7", ImageNet,     || Slak(SlakConfig::convnext_small_slak7())),
    preset("convnext_proxy",        FashionMnist, || ConvNext(ConvNextConfig::proxy())),
    preset("convnext_atto",        ImageNet,     || ConvNext(ConvNextConfig::atto())),
    preset("convnext_femto",       ImageNet,     || ConvNext(ConvNextConfig::femto())),
    preset("convnext_pico",        ImageNet,     || ConvNext(ConvNextConfig::pico())),
    preset("convnext_nano",        ImageNet,     || ConvNext(ConvNextConfig::nano())),
    preset("convnext_tiny",        ImageNet,     || ConvNext(ConvNextConfig::tiny())),
    preset("convnext_small",       ImageNet,     || ConvNext(ConvNextConfig::small())),
    preset("convnext_base",        ImageNet,     || ConvNext(ConvNextConfig::base())),
    preset("resnet_proxy",          FashionMnist, || ResNet(ResNetConfig::proxy())),
    preset("resnet18",             ImageNet,     || ResNet(ResNetConfig::resnet18())),
    preset("resnet34",             ImageNet,     || ResNet(ResNetConfig::resnet34())),
    preset("resnet50",             ImageNet,     || ResNet(ResNetConfig::resnet50())),
    preset("vit_proxy",             FashionMnist, || Vit(VitConfig::proxy())),
    preset("vit_small",            ImageNet,     || Vit(VitConfig::small())),
];

const fn preset(name: &'static str, input: PresetInput, family: fn() -> FamilySpec) -> Preset {
    Preset {
        name,
        input,
        family,
    }
}

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// Preset names retired because they meant two networks (`convnext_nano` is also timm's
/// 15.6 M-parameter ConvNeXt): the CPU-scale proxies are `*_proxy` now.
pub const RENAMED_PRESETS: &[(&str, &str)] = &[
    ("slak_nano", "slak_proxy"),
    ("resnet_nano", "resnet_proxy"),
    ("vit_nano", "vit_proxy"),
];

pub fn find_preset(name: &str) -> Result<&'static Preset, ModelError> {
    if let Some((_, new)) = RENAMED_PRESETS.iter().find(|(old, _)| *old == name) {
        return Err(ModelError::RenamedPreset {
            found: name.to_string(),
            new,
        });
    }
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ModelError::UnknownPreset {
            found: name.to_string(),
            known: preset_names().join(", "),
        })
}

/// A resolved model: the preset's typed config with overrides applied and every field checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub common: CommonConfig,
    pub family: FamilySpec,
}

impl ModelSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        self.common.validate()?;
        match &self.family {
            FamilySpec::Slak(c) => c.validate(&self.common),
            FamilySpec::ConvNext(c) => c.validate(&self.common),
            FamilySpec::ResNet(c) => c.validate(&self.common),
            FamilySpec::Vit(c) => c.validate(&self.common),
        }
    }

    /// Validates, builds the graph and bounds its size before anyone allocates it.
    pub fn build(&self) -> Result<Graph, ModelError> {
        self.validate()?;
        let graph = match &self.family {
            FamilySpec::Slak(c) => c.build(&self.common),
            FamilySpec::ConvNext(c) => c.build(&self.common),
            FamilySpec::ResNet(c) => c.build(&self.common),
            FamilySpec::Vit(c) => c.build(&self.common),
        }?;
        let total: usize = graph.params.iter().map(|p| p.numel()).sum();
        if total > MAX_PARAMETERS {
            return Err(ModelError::TooLarge {
                preset: self.common.preset.clone(),
                parameters: total,
                max: MAX_PARAMETERS,
            });
        }
        Ok(graph)
    }
}

/// A model as written in a run's `config.toml`: a preset plus optional overrides. Which
/// overrides apply depends on the preset's family; deserialising checks them all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawModelConfig")]
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
    /// Blocks per stage (ResNet: per layer; ViT: blocks between feature taps, all equal).
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
    /// SLaK: decompose each large kernel into k×s + s×k (upstream `--Decom`), or one k×k conv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decompose: Option<bool>,
}

/// Override fields and the family-independent range each accepts (family files add their own
/// constraints, such as one width per stage).
fn expected(field: &str) -> String {
    match field {
        "in_chans" => format!("a channel count in 1..={MAX_IN_CHANS}"),
        "num_classes" => format!("a class count in 1..={MAX_CLASSES}"),
        "input_size" => format!("an image side in 1..={MAX_INPUT_SIDE}"),
        "drop_path" => "a rate in [0, 1)".into(),
        "depths" => format!("1 to {MAX_STAGES} stages, each of 1..={MAX_BLOCKS_PER_STAGE} blocks"),
        "dims" => format!("one width per stage, each in 1..={MAX_WIDTH}"),
        "kernel_size" => format!("an odd kernel size in 1..={MAX_KERNEL}"),
        "kernels" => format!("one odd kernel size per stage, each in 1..={MAX_KERNEL}"),
        "small_kernel" => format!("an odd kernel size in 1..={MAX_KERNEL}"),
        other => format!("a valid `{other}`"),
    }
}

impl ModelConfig {
    pub fn preset(name: &str) -> Self {
        Self {
            preset: name.to_string(),
            ..Default::default()
        }
    }

    /// The preset's typed config with these overrides applied, every field range-checked.
    pub fn resolve(&self) -> Result<ModelSpec, ModelError> {
        let preset = find_preset(&self.preset)?;
        let mut spec = preset.spec();
        let common = &mut spec.common;
        if let Some(v) = self.in_chans {
            common.in_chans = v;
        }
        if let Some(v) = self.num_classes {
            common.num_classes = v;
        }
        if let Some(v) = self.input_size {
            common.input_size = [v, v];
        }
        if let Some(v) = self.drop_path {
            common.drop_path = v;
        }
        let unused =
            |field: &'static str, set: bool, accepted: &'static str| -> Result<(), ModelError> {
                if set {
                    Err(ModelError::FieldNotApplicable {
                        preset: preset.name.into(),
                        field,
                        family: preset.family_name(),
                        accepted,
                    })
                } else {
                    Ok(())
                }
            };
        let checker = Checker::new(preset.name);
        match &mut spec.family {
            FamilySpec::Slak(c) => {
                const ACCEPTED: &str = "in_chans, num_classes, input_size, drop_path, depths, dims, kernels, small_kernel, decompose";
                unused("kernel_size", self.kernel_size.is_some(), ACCEPTED)?;
                override_with(&mut c.depths, &self.depths);
                override_with(&mut c.dims, &self.dims);
                override_with(&mut c.kernels, &self.kernels);
                override_with(&mut c.decompose, &self.decompose);
                if let Some(s) = self.small_kernel {
                    c.small_kernel = Some(s);
                }
            }
            FamilySpec::ConvNext(c) => {
                const ACCEPTED: &str =
                    "in_chans, num_classes, input_size, drop_path, depths, dims, kernel_size";
                unused("kernels", self.kernels.is_some(), ACCEPTED)?;
                unused("small_kernel", self.small_kernel.is_some(), ACCEPTED)?;
                unused("decompose", self.decompose.is_some(), ACCEPTED)?;
                override_with(&mut c.depths, &self.depths);
                override_with(&mut c.dims, &self.dims);
                override_with(&mut c.kernel_size, &self.kernel_size);
            }
            FamilySpec::ResNet(c) => {
                const ACCEPTED: &str =
                    "in_chans, num_classes, input_size, depths (blocks per layer), dims (widths)";
                unused("kernel_size", self.kernel_size.is_some(), ACCEPTED)?;
                unused("kernels", self.kernels.is_some(), ACCEPTED)?;
                unused("small_kernel", self.small_kernel.is_some(), ACCEPTED)?;
                unused("decompose", self.decompose.is_some(), ACCEPTED)?;
                unused(
                    "drop_path",
                    self.drop_path.is_some_and(|d| d != 0.0),
                    ACCEPTED,
                )?;
                override_with(&mut c.layers, &self.depths);
                override_with(&mut c.widths, &self.dims);
            }
            FamilySpec::Vit(c) => {
                const ACCEPTED: &str = "in_chans, num_classes, input_size, drop_path, depths (blocks between feature taps), dims ([width])";
                unused("kernel_size", self.kernel_size.is_some(), ACCEPTED)?;
                unused("kernels", self.kernels.is_some(), ACCEPTED)?;
                unused("small_kernel", self.small_kernel.is_some(), ACCEPTED)?;
                unused("decompose", self.decompose.is_some(), ACCEPTED)?;
                if let Some(d) = &self.depths {
                    c.apply_depths(&checker, d)?;
                }
                if let Some(d) = &self.dims {
                    c.apply_dims(&checker, d)?;
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    pub fn build(&self) -> Result<Graph, ModelError> {
        self.resolve()?.build()
    }
}

fn override_with<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}

/// `ModelConfig` as it arrives from TOML/JSON: integers are signed here so that a negative
/// size gets the same clear message as any other out-of-range value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelConfig {
    preset: String,
    #[serde(default)]
    in_chans: Option<i64>,
    #[serde(default)]
    num_classes: Option<i64>,
    #[serde(default)]
    input_size: Option<i64>,
    #[serde(default)]
    drop_path: Option<f64>,
    #[serde(default)]
    depths: Option<Vec<i64>>,
    #[serde(default)]
    dims: Option<Vec<i64>>,
    #[serde(default)]
    kernel_size: Option<i64>,
    #[serde(default)]
    kernels: Option<Vec<i64>>,
    #[serde(default)]
    small_kernel: Option<i64>,
    #[serde(default)]
    decompose: Option<bool>,
}

impl TryFrom<RawModelConfig> for ModelConfig {
    type Error = ModelError;

    fn try_from(raw: RawModelConfig) -> Result<Self, ModelError> {
        let c = Checker::new(&raw.preset);
        let one = |field: &'static str, v: Option<i64>| -> Result<Option<usize>, ModelError> {
            v.map(|x| usize::try_from(x).map_err(|_| c.invalid(field, x, expected(field))))
                .transpose()
        };
        let list =
            |field: &'static str, v: Option<Vec<i64>>| -> Result<Option<Vec<usize>>, ModelError> {
                v.map(|xs| {
                    xs.iter()
                        .map(|&x| usize::try_from(x))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| c.invalid(field, &xs, expected(field)))
                })
                .transpose()
            };
        let cfg = ModelConfig {
            in_chans: one("in_chans", raw.in_chans)?,
            num_classes: one("num_classes", raw.num_classes)?,
            input_size: one("input_size", raw.input_size)?,
            drop_path: raw.drop_path,
            depths: list("depths", raw.depths)?,
            dims: list("dims", raw.dims)?,
            kernel_size: one("kernel_size", raw.kernel_size)?,
            kernels: list("kernels", raw.kernels)?,
            small_kernel: one("small_kernel", raw.small_kernel)?,
            decompose: raw.decompose,
            preset: raw.preset,
        };
        cfg.resolve()?;
        Ok(cfg)
    }
}

pub(crate) fn is_odd_kernel(k: usize) -> bool {
    k % 2 == 1 && k <= MAX_KERNEL
}

/// Builds range errors that name the preset, the field, the value and what is allowed.
pub(crate) struct Checker<'a> {
    preset: &'a str,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(preset: &'a str) -> Self {
        Self { preset }
    }

    pub(crate) fn invalid(
        &self,
        field: &'static str,
        value: impl Debug,
        expected: impl Into<String>,
    ) -> ModelError {
        ModelError::InvalidField {
            preset: self.preset.to_string(),
            field,
            value: format!("{value:?}"),
            expected: expected.into(),
        }
    }

    pub(crate) fn range(
        &self,
        field: &'static str,
        value: usize,
        lo: usize,
        hi: usize,
    ) -> Result<(), ModelError> {
        if (lo..=hi).contains(&value) {
            Ok(())
        } else {
            Err(self.invalid(field, value, expected(field)))
        }
    }

    /// Blocks per stage: 1..=MAX_STAGES entries, each 1..=MAX_BLOCKS_PER_STAGE.
    pub(crate) fn stages(&self, field: &'static str, depths: &[usize]) -> Result<(), ModelError> {
        if depths.is_empty()
            || depths.len() > MAX_STAGES
            || depths
                .iter()
                .any(|&d| !(1..=MAX_BLOCKS_PER_STAGE).contains(&d))
        {
            return Err(self.invalid(field, depths, expected("depths")));
        }
        Ok(())
    }

    /// One width per stage (`stages` of them), each 1..=MAX_WIDTH.
    pub(crate) fn widths(
        &self,
        field: &'static str,
        dims: &[usize],
        depths_field: &str,
        depths: &[usize],
    ) -> Result<(), ModelError> {
        if dims.len() != depths.len() || dims.iter().any(|&d| !(1..=MAX_WIDTH).contains(&d)) {
            let expected = format!(
                "{} widths, one per stage of {depths_field} = {depths:?}, each in 1..={MAX_WIDTH}",
                depths.len()
            );
            return Err(self.invalid(field, dims, expected));
        }
        Ok(())
    }

    /// An odd kernel size in 1..=MAX_KERNEL (centred padding `k / 2` keeps the map size).
    pub(crate) fn kernel(&self, field: &'static str, k: usize) -> Result<(), ModelError> {
        if is_odd_kernel(k) {
            Ok(())
        } else {
            Err(self.invalid(field, k, expected(field)))
        }
    }

    /// A patchify stem of stride `stem` followed by `stages - 1` 2×2/2 downsamplings needs an
    /// input of at least `stem * 2^(stages-1)` pixels a side.
    pub(crate) fn input_covers_strides(
        &self,
        common: &CommonConfig,
        stem: usize,
        stages: usize,
    ) -> Result<(), ModelError> {
        let min = stem << (stages - 1);
        if common.input_size.iter().any(|&s| s < min) {
            let expected = format!("at least {min} (the stem's stride {stem} times 2 per later stage, {stages} stages), at most {MAX_INPUT_SIDE}");
            return Err(self.invalid("input_size", common.input_size[0], expected));
        }
        Ok(())
    }
}

/// The ConvNeXt macro design shared by ConvNeXt and SLaK (official names): patchify stem +
/// channels-first LayerNorm, LayerNorm + 2×2/2 downsampling, blocks of a depthwise token mixer →
/// channels-last LayerNorm → Linear 4C → GELU → Linear C → layer scale `gamma` → residual with
/// drop path, then mean pool → LayerNorm → head. `mixer(builder, x, block_path, stage, dim)`
/// builds each block's depthwise part; the families differ only there. Callers validate first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn convnext_macro(
    common: &CommonConfig,
    arch: &str,
    depths: &[usize],
    dims: &[usize],
    stem: usize,
    layer_scale_init: f32,
    head_init_scale: f32,
    mut mixer: impl FnMut(&mut GraphBuilder, ValueId, &str, usize, usize) -> ValueId,
) -> Result<Graph, ModelError> {
    let (Some(&last), true) = (dims.last(), dims.len() == depths.len()) else {
        return Err(ModelError::Graph(format!(
            "{arch}: depths {depths:?} and dims {dims:?} do not describe the same stages"
        )));
    };
    let init = Init::TruncNormal { std: 0.02 };
    let bias = Some(Init::Zeros);
    let mut b = GraphBuilder::new();
    let rates = stochastic_depth(common.drop_path, depths);
    let mut block_index = 0;
    let mut x = GraphBuilder::INPUT;
    for (i, (&depth, &dim)) in depths.iter().zip(dims).enumerate() {
        let ds = format!("downsample_layers.{i}");
        x = if i == 0 {
            let y = b.conv(
                x,
                &format!("{ds}.0"),
                common.in_chans,
                dim,
                [stem; 2],
                stem,
                [0, 0],
                1,
                bias.clone(),
                init.clone(),
            );
            b.layer_norm(y, &format!("{ds}.1"), dim, 1e-6, NormAxis::ChannelsFirst)
        } else {
            let prev = dims[i - 1];
            let y = b.layer_norm(x, &format!("{ds}.0"), prev, 1e-6, NormAxis::ChannelsFirst);
            b.conv(
                y,
                &format!("{ds}.1"),
                prev,
                dim,
                [2, 2],
                2,
                [0, 0],
                1,
                bias.clone(),
                init.clone(),
            )
        };
        for j in 0..depth {
            let m = format!("stages.{i}.{j}");
            let y = mixer(&mut b, x, &m, i, dim);
            let y = b.permute(y, &m, &[0, 2, 3, 1]);
            let y = b.layer_norm(y, &format!("{m}.norm"), dim, 1e-6, NormAxis::Last);
            let y = b.linear(
                y,
                &format!("{m}.pwconv1"),
                dim,
                4 * dim,
                bias.clone(),
                init.clone(),
            );
            let y = b.gelu(y, &format!("{m}.act"));
            let y = b.linear(
                y,
                &format!("{m}.pwconv2"),
                4 * dim,
                dim,
                bias.clone(),
                init.clone(),
            );
            let y = if layer_scale_init > 0.0 {
                b.scale(y, &format!("{m}.gamma"), dim, layer_scale_init)
            } else {
                y
            };
            let y = b.permute(y, &m, &[0, 3, 1, 2]);
            let y = b.drop_path(y, &format!("{m}.drop_path"), rates[block_index]);
            block_index += 1;
            x = b.add(x, y, &m);
        }
        b.tap(&format!("stage{}", i + 1), x);
    }
    let pooled = b.global_avg_pool(x, "pool");
    let pre = b.layer_norm(pooled, "norm", last, 1e-6, NormAxis::Last);
    b.tap("pre_logits", pre);
    let logits = b.linear(
        pre,
        "head",
        last,
        common.num_classes,
        bias,
        Init::TruncNormal {
            std: 0.02 * head_init_scale,
        },
    );
    b.finish(common.header(arch), logits)
}

/// Linearly increasing drop-path rates over all blocks (as ConvNeXt/SLaK/timm).
pub(crate) fn stochastic_depth(max_rate: f64, depths: &[usize]) -> Vec<f64> {
    let total: usize = depths.iter().sum();
    (0..total)
        .map(|i| {
            if total > 1 {
                max_rate * i as f64 / (total - 1) as f64
            } else {
                0.0
            }
        })
        .collect()
}
