//! ConvNeXt — "A ConvNet for the 2020s" (Liu et al., CVPR 2022), the small-kernel student.
//! Mirrors the official `convnext.py` (names `downsample_layers.*`, `stages.s.b.dwconv`,
//! `norm`, `pwconv1`, `pwconv2`, `gamma`, `head`) with a configurable depthwise kernel.

use super::{stochastic_depth, FamilyConfig};
use crate::graph::{Graph, GraphBuilder, Init, NormAxis};
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
        Self { kernel_size: 3, stem: 2, ..Self::layout(&[1, 1, 2], &[16, 32, 64]) }
    }

    pub fn build(&self, common: &FamilyConfig) -> Result<Graph, ModelError> {
        if self.dims.len() != self.depths.len() {
            return Err(ModelError::Config(format!("convnext needs one dim per stage: depths {:?}, dims {:?}", self.depths, self.dims)));
        }
        if self.kernel_size % 2 == 0 {
            return Err(ModelError::Config(format!("convnext kernel_size must be odd, found {}", self.kernel_size)));
        }
        let init = Init::TruncNormal { std: 0.02 };
        let bias = Some(Init::Zeros);
        let k = self.kernel_size;
        let mut b = GraphBuilder::new();
        let rates = stochastic_depth(common.drop_path, &self.depths);
        let mut rate_iter = rates.iter();
        let mut x = GraphBuilder::INPUT;
        for (i, (&depth, &dim)) in self.depths.iter().zip(&self.dims).enumerate() {
            let ds = format!("downsample_layers.{i}");
            x = if i == 0 {
                let y = b.conv(x, &format!("{ds}.0"), common.in_chans, dim, [self.stem; 2], self.stem, [0, 0], 1, bias.clone(), init.clone());
                b.layer_norm(y, &format!("{ds}.1"), dim, 1e-6, NormAxis::ChannelsFirst)
            } else {
                let prev = self.dims[i - 1];
                let y = b.layer_norm(x, &format!("{ds}.0"), prev, 1e-6, NormAxis::ChannelsFirst);
                b.conv(y, &format!("{ds}.1"), prev, dim, [2, 2], 2, [0, 0], 1, bias.clone(), init.clone())
            };
            for j in 0..depth {
                let m = format!("stages.{i}.{j}");
                let y = b.conv(x, &format!("{m}.dwconv"), dim, dim, [k, k], 1, [k / 2, k / 2], dim, bias.clone(), init.clone());
                let y = b.permute(y, &m, &[0, 2, 3, 1]);
                let y = b.layer_norm(y, &format!("{m}.norm"), dim, 1e-6, NormAxis::Last);
                let y = b.linear(y, &format!("{m}.pwconv1"), dim, 4 * dim, bias.clone(), init.clone());
                let y = b.gelu(y, &format!("{m}.act"));
                let y = b.linear(y, &format!("{m}.pwconv2"), 4 * dim, dim, bias.clone(), init.clone());
                let y = if self.layer_scale_init > 0.0 { b.scale(y, &format!("{m}.gamma"), dim, self.layer_scale_init) } else { y };
                let y = b.permute(y, &m, &[0, 3, 1, 2]);
                let y = b.drop_path(y, &format!("{m}.drop_path"), *rate_iter.next().unwrap());
                x = b.add(x, y, &m);
            }
            b.tap(&format!("stage{}", i + 1), x);
        }
        let last = *self.dims.last().unwrap();
        let pooled = b.global_avg_pool(x, "pool");
        let pre = b.layer_norm(pooled, "norm", last, 1e-6, NormAxis::Last);
        b.tap("pre_logits", pre);
        let logits = b.linear(pre, "head", last, common.num_classes, bias, Init::TruncNormal { std: 0.02 * self.head_init_scale });
        b.finish(common.header("convnext"), logits)
    }
}
