//! ConvNeXt — "A ConvNet for the 2020s" (Liu et al., CVPR 2022), the small-kernel student.
//! Mirrors the official `convnext.py` (names `downsample_layers.*`, `stages.s.b.dwconv`,
//! `norm`, `pwconv1`, `pwconv2`, `gamma`, `head`) with a configurable depthwise kernel.

use super::{convnext_macro, FamilyConfig};
use crate::graph::{Graph, Init};
use crate::ModelError;

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
        Self { depths: depths.to_vec(), dims: dims.to_vec(), kernel_size: 7, stem: 4, layer_scale_init: 1e-6, head_init_scale: 1.0 }
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
    /// CPU-scale student: the nano teacher's stage layout with 3×3 kernels.
    pub fn nano() -> Self {
        // Layer scale from 1 for CPU-length runs (see `SlakConfig::nano`).
        Self { kernel_size: 3, stem: 2, layer_scale_init: 1.0, ..Self::layout(&[1, 1, 2], &[16, 32, 64]) }
    }

    pub fn build(&self, common: &FamilyConfig) -> Result<Graph, ModelError> {
        if self.dims.len() != self.depths.len() {
            return Err(ModelError::Config(format!("convnext needs one dim per stage: depths {:?}, dims {:?}", self.depths, self.dims)));
        }
        if self.kernel_size % 2 == 0 {
            return Err(ModelError::Config(format!("convnext kernel_size must be odd, found {}", self.kernel_size)));
        }
        let k = self.kernel_size;
        convnext_macro(common, "convnext", &self.depths, &self.dims, self.stem, self.layer_scale_init, self.head_init_scale, |b, x, m, _, dim| {
            b.conv(x, &format!("{m}.dwconv"), dim, dim, [k, k], 1, [k / 2, k / 2], dim, Some(Init::Zeros), Init::TruncNormal { std: 0.02 })
        })
    }
}
