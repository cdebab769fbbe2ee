//! SLaK — "More ConvNets in the 2020s: Scaling up Kernels Beyond 51×51 using Sparsity"
//! (Liu et al., ICLR 2023), the large-kernel teacher. Mirrors the official `SLaK.py`: a ConvNeXt
//! macro design whose depthwise conv is a decomposed large kernel (`Decom`): a k×s and an s×k
//! depthwise conv plus an s×s one, each followed by BatchNorm, summed. Parameter names equal the
//! released checkpoint keys (`stages.2.4.large_kernel.LoRA1.conv.weight`, ...).

use super::{convnext_macro, FamilyConfig};
use crate::graph::{Graph, GraphBuilder, Init, ValueId};
use crate::ModelError;

#[derive(Clone, Debug, PartialEq)]
pub struct SlakConfig {
    pub depths: Vec<usize>,
    pub dims: Vec<usize>,
    /// Long side of each stage's decomposed kernel.
    pub kernels: Vec<usize>,
    pub small_kernel: usize,
    /// Stem patchify conv: kernel = stride (4 for ImageNet, 2 for 28×28 inputs).
    pub stem: usize,
    pub layer_scale_init: f32,
    pub head_init_scale: f32,
}

/// Official width scaling: every dim ×1.3, truncated.
fn widen(dims: [usize; 4]) -> Vec<usize> {
    dims.iter().map(|&d| (d as f64 * 1.3) as usize).collect()
}

impl SlakConfig {
    pub fn tiny() -> Self {
        Self { depths: vec![3, 3, 9, 3], dims: widen([96, 192, 384, 768]), ..Self::base_layout() }
    }
    pub fn small() -> Self {
        Self { depths: vec![3, 3, 27, 3], dims: widen([96, 192, 384, 768]), ..Self::base_layout() }
    }
    pub fn base() -> Self {
        Self { depths: vec![3, 3, 27, 3], dims: widen([128, 256, 512, 1024]), ..Self::base_layout() }
    }
    fn base_layout() -> Self {
        Self {
            depths: vec![],
            dims: vec![],
            kernels: vec![51, 49, 47, 13],
            small_kernel: 5,
            stem: 4,
            layer_scale_init: 1e-6,
            head_init_scale: 1.0,
        }
    }
    /// CPU-scale teacher for 28×28/32×32 inputs: maps 14/7/3, kernels 13/7/5 (as large as or
    /// larger than the maps they see), 3×3 small kernel. Layer scale starts at 1, not 1e-6: in a
    /// run of ~2 000 steps the 1e-6 start (meant for 300 ImageNet epochs) cost 2 points of top-1
    /// (Fashion-MNIST, 2 epochs: 82.6 % vs 84.6 % for convnext_nano).
    pub fn nano() -> Self {
        Self {
            depths: vec![1, 1, 2],
            dims: vec![24, 48, 96],
            kernels: vec![13, 7, 5],
            small_kernel: 3,
            stem: 2,
            layer_scale_init: 1.0,
            head_init_scale: 1.0,
        }
    }

    /// Depthwise large-kernel unit: k×s + s×k + s×s convs, each with BatchNorm, summed.
    fn large_kernel(b: &mut GraphBuilder, x: ValueId, module: &str, dim: usize, k: usize, s: usize) -> ValueId {
        let init = Init::TruncNormal { std: 0.02 };
        let branch = |b: &mut GraphBuilder, name: &str, kh: usize, kw: usize| {
            let m = format!("{module}.{name}");
            let y = b.conv(x, &format!("{m}.conv"), dim, dim, [kh, kw], 1, [kh / 2, kw / 2], dim, None, init.clone());
            b.batch_norm(y, &format!("{m}.bn"), dim, 1e-5)
        };
        let a = branch(b, "LoRA1", k, s);
        let c = branch(b, "LoRA2", s, k);
        let ac = b.add(a, c, module);
        // Upstream adds the small kernel only when it is strictly smaller than the large one.
        if s < k {
            let small = branch(b, "small_conv", s, s);
            b.add(ac, small, module)
        } else {
            ac
        }
    }

    pub fn build(&self, common: &FamilyConfig) -> Result<Graph, ModelError> {
        let n = self.depths.len();
        if self.dims.len() != n || self.kernels.len() != n {
            return Err(ModelError::Config(format!(
                "slak needs one dim and one kernel per stage: depths {:?}, dims {:?}, kernels {:?}",
                self.depths, self.dims, self.kernels
            )));
        }
        if self.small_kernel % 2 == 0 || self.kernels.iter().any(|k| k % 2 == 0 || *k < self.small_kernel) {
            return Err(ModelError::Config(format!(
                "slak kernels must be odd and at least the small kernel {}: {:?}",
                self.small_kernel, self.kernels
            )));
        }
        let (kernels, small) = (&self.kernels, self.small_kernel);
        convnext_macro(common, "slak", &self.depths, &self.dims, self.stem, self.layer_scale_init, self.head_init_scale, |b, x, m, stage, dim| {
            Self::large_kernel(b, x, &format!("{m}.large_kernel"), dim, kernels[stage], small)
        })
    }
}
