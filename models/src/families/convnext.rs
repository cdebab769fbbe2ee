//! ConvNeXt — "A ConvNet for the 2020s" (Liu et al., CVPR 2022), the small-kernel student.
//! Mirrors the official `convnext.py` (names `downsample_layers.*`, `stages.s.b.dwconv`,
//! `norm`, `pwconv1`, `pwconv2`, `gamma`, `head`) with a configurable depthwise kernel.
//! Checkpoints of the same network saved by timm and torchvision load through the key maps
//! [`TIMM`] and [`TORCHVISION`].

use super::{convnext_macro, Checker, CommonConfig};
use crate::graph::{Graph, Init};
use crate::layout::{reshaped, rule, Layout, ShapeRule};
use crate::ModelError;

/// timm `convnext.py` (`ConvNeXt`, `ConvNeXtStage`, `ConvNeXtBlock`, `NormMlpClassifierHead`):
/// the stem is `stem`, each later stage owns its `downsample`, blocks sit under `blocks`, the
/// MLP is `mlp.fc1`/`mlp.fc2` and the head holds the final norm. The inverse of timm's
/// `checkpoint_filter_fn` for official checkpoints.
pub const TIMM: Layout = Layout {
    name: "timm ConvNeXt",
    rules: &[
        rule("downsample_layers.0.{i}.{p}", "stem.{i}.{p}"),
        rule(
            "downsample_layers.{s}.{i}.{p}",
            "stages.{s}.downsample.{i}.{p}",
        ),
        rule(
            "stages.{s}.{b}.dwconv.{p}",
            "stages.{s}.blocks.{b}.conv_dw.{p}",
        ),
        rule("stages.{s}.{b}.norm.{p}", "stages.{s}.blocks.{b}.norm.{p}"),
        rule(
            "stages.{s}.{b}.pwconv1.{p}",
            "stages.{s}.blocks.{b}.mlp.fc1.{p}",
        ),
        rule(
            "stages.{s}.{b}.pwconv2.{p}",
            "stages.{s}.blocks.{b}.mlp.fc2.{p}",
        ),
        rule("stages.{s}.{b}.gamma", "stages.{s}.blocks.{b}.gamma"),
        rule("norm.{p}", "head.norm.{p}"),
        rule("head.{p}", "head.fc.{p}"),
    ],
};

/// timm `convnext.py` with `conv_mlp=True` (its atto / femto / pico / nano models): as [`TIMM`],
/// with the MLP weights as `[out, in, 1, 1]` 1x1 convolutions.
pub const TIMM_CONV_MLP: Layout = Layout {
    name: "timm ConvNeXt (conv_mlp)",
    rules: &[
        rule("downsample_layers.0.{i}.{p}", "stem.{i}.{p}"),
        rule(
            "downsample_layers.{s}.{i}.{p}",
            "stages.{s}.downsample.{i}.{p}",
        ),
        rule(
            "stages.{s}.{b}.dwconv.{p}",
            "stages.{s}.blocks.{b}.conv_dw.{p}",
        ),
        rule("stages.{s}.{b}.norm.{p}", "stages.{s}.blocks.{b}.norm.{p}"),
        reshaped(
            "stages.{s}.{b}.pwconv1.weight",
            "stages.{s}.blocks.{b}.mlp.fc1.weight",
            ShapeRule::TrailingOnes(2),
        ),
        rule(
            "stages.{s}.{b}.pwconv1.bias",
            "stages.{s}.blocks.{b}.mlp.fc1.bias",
        ),
        reshaped(
            "stages.{s}.{b}.pwconv2.weight",
            "stages.{s}.blocks.{b}.mlp.fc2.weight",
            ShapeRule::TrailingOnes(2),
        ),
        rule(
            "stages.{s}.{b}.pwconv2.bias",
            "stages.{s}.blocks.{b}.mlp.fc2.bias",
        ),
        rule("stages.{s}.{b}.gamma", "stages.{s}.blocks.{b}.gamma"),
        rule("norm.{p}", "head.norm.{p}"),
        rule("head.{p}", "head.fc.{p}"),
    ],
};

/// torchvision `convnext.py`: one `features` sequence alternating downsampling (even indices,
/// the stem at 0) and stages (odd indices); each `CNBlock` is a `block` sequence (0 depthwise
/// conv, 1 permute, 2 LayerNorm, 3 Linear, 4 GELU, 5 Linear, 6 permute) with a `[C, 1, 1]`
/// `layer_scale`; `classifier` is (0 LayerNorm2d, 1 flatten, 2 Linear).
pub const TORCHVISION: Layout = Layout {
    name: "torchvision ConvNeXt",
    rules: &[
        rule("downsample_layers.{s}.{i}.{p}", "features.{2s}.{i}.{p}"),
        rule(
            "stages.{s}.{b}.dwconv.{p}",
            "features.{2s+1}.{b}.block.0.{p}",
        ),
        rule("stages.{s}.{b}.norm.{p}", "features.{2s+1}.{b}.block.2.{p}"),
        rule(
            "stages.{s}.{b}.pwconv1.{p}",
            "features.{2s+1}.{b}.block.3.{p}",
        ),
        rule(
            "stages.{s}.{b}.pwconv2.{p}",
            "features.{2s+1}.{b}.block.5.{p}",
        ),
        reshaped(
            "stages.{s}.{b}.gamma",
            "features.{2s+1}.{b}.layer_scale",
            ShapeRule::TrailingOnes(2),
        ),
        rule("norm.{p}", "classifier.0.{p}"),
        rule("head.{p}", "classifier.2.{p}"),
    ],
};

#[derive(Clone, Debug, PartialEq)]
pub struct ConvNextConfig {
    pub depths: Vec<usize>,
    pub dims: Vec<usize>,
    /// Depthwise kernel size of every block (7 upstream; 3 for the CPU-scale student).
    pub kernel_size: usize,
    pub stem: usize,
    pub layer_scale_init: f32,
    pub head_init_scale: f32,
}

impl ConvNextConfig {
    fn layout(depths: &[usize], dims: &[usize]) -> Self {
        Self {
            depths: depths.to_vec(),
            dims: dims.to_vec(),
            kernel_size: 7,
            stem: 4,
            layer_scale_init: 1e-6,
            head_init_scale: 1.0,
        }
    }
    // timm's compact ConvNeXts (`convnext_atto` .. `convnext_nano`). timm builds their MLPs as
    // 1x1 convolutions (`conv_mlp=True`): the same arithmetic as the linear layers here, so only
    // the weights' shape differs, and the `TIMM_CONV_MLP` layout reads them.
    pub fn atto() -> Self {
        Self::layout(&[2, 2, 6, 2], &[40, 80, 160, 320])
    }
    pub fn femto() -> Self {
        Self::layout(&[2, 2, 6, 2], &[48, 96, 192, 384])
    }
    pub fn pico() -> Self {
        Self::layout(&[2, 2, 6, 2], &[64, 128, 256, 512])
    }
    pub fn nano() -> Self {
        Self::layout(&[2, 2, 8, 2], &[80, 160, 320, 640])
    }
    pub fn tiny() -> Self {
        Self::layout(&[3, 3, 9, 3], &[96, 192, 384, 768])
    }
    pub fn small() -> Self {
        Self::layout(&[3, 3, 27, 3], &[96, 192, 384, 768])
    }
    pub fn base() -> Self {
        Self::layout(&[3, 3, 27, 3], &[128, 256, 512, 1024])
    }
    /// CPU-scale student: the proxy teacher's stage layout with 3×3 kernels.
    pub fn proxy() -> Self {
        // Layer scale from 1 for CPU-length runs (see `SlakConfig::proxy`).
        Self {
            kernel_size: 3,
            stem: 2,
            layer_scale_init: 1.0,
            ..Self::layout(&[1, 1, 2], &[16, 32, 64])
        }
    }

    pub fn validate(&self, common: &CommonConfig) -> Result<(), ModelError> {
        let c = Checker::new(&common.preset);
        c.stages("depths", &self.depths)?;
        c.widths("dims", &self.dims, "depths", &self.depths)?;
        c.kernel("kernel_size", self.kernel_size)?;
        c.input_covers_strides(common, self.stem, self.depths.len())
    }

    pub(crate) fn build(&self, common: &CommonConfig) -> Result<Graph, ModelError> {
        let k = self.kernel_size;
        convnext_macro(
            common,
            super::Family::ConvNext.into(),
            &self.depths,
            &self.dims,
            self.stem,
            self.layer_scale_init,
            self.head_init_scale,
            |b, x, m, _, dim| {
                b.conv(
                    x,
                    &format!("{m}.dwconv"),
                    dim,
                    dim,
                    [k, k],
                    1,
                    [k / 2, k / 2],
                    dim,
                    Some(Init::Zeros),
                    Init::TruncNormal { std: 0.02 },
                )
            },
        )
    }
}
