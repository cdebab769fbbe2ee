//! SLaK — "More ConvNets in the 2020s: Scaling up Kernels Beyond 51×51 using Sparsity"
//! (Liu et al., ICLR 2023), the large-kernel teacher. Mirrors the official `SLaK.py`: a ConvNeXt
//! macro design whose depthwise conv is a decomposed large kernel (`Decom`): a k×s and an s×k
//! depthwise conv plus an s×s one, each followed by BatchNorm, summed. Parameter names equal the
//! released checkpoint keys (`stages.2.4.large_kernel.LoRA1.conv.weight`, ...).
//!
//! Without decomposition (`Decom=False` upstream) the large kernel is one k×k conv + BatchNorm
//! (`large_kernel.lkb_origin`), plus the small s×s branch when s < k. The authors' distillation
//! code (`main_KD.py`) builds its ConvNeXt students this way: the SLaK class with
//! `kernel_size=[7, 7, 7, 7, 100]`, `width_factor=1.0`, `Decom=False`, `bn=True`, so their
//! "ConvNeXt L2S" checkpoints hold `large_kernel.lkb_origin.{conv,bn}` instead of `dwconv`
//! ([`SlakConfig::convnext_tiny_slak7`]).

use super::{convnext_macro, is_odd_kernel, Checker, CommonConfig};
use crate::graph::{Graph, GraphBuilder, Init, ValueId};
use crate::ModelError;

#[derive(Clone, Debug, PartialEq)]
pub struct SlakConfig {
    pub depths: Vec<usize>,
    pub dims: Vec<usize>,
    /// Long side of each stage's decomposed kernel.
    pub kernels: Vec<usize>,
    /// Side of the small parallel kernel; `None`: no small branch.
    pub small_kernel: Option<usize>,
    /// k×s + s×k branches (`LoRA1`, `LoRA2`) instead of one k×k conv (`lkb_origin`).
    pub decompose: bool,
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
        Self {
            depths: vec![3, 3, 9, 3],
            dims: widen([96, 192, 384, 768]),
            ..Self::base_layout()
        }
    }
    pub fn small() -> Self {
        Self {
            depths: vec![3, 3, 27, 3],
            dims: widen([96, 192, 384, 768]),
            ..Self::base_layout()
        }
    }
    pub fn base() -> Self {
        Self {
            depths: vec![3, 3, 27, 3],
            dims: widen([128, 256, 512, 1024]),
            ..Self::base_layout()
        }
    }
    fn base_layout() -> Self {
        Self {
            depths: vec![],
            dims: vec![],
            kernels: vec![51, 49, 47, 13],
            small_kernel: Some(5),
            decompose: true,
            stem: 4,
            layer_scale_init: 1e-6,
            head_init_scale: 1.0,
        }
    }
    /// ConvNeXt-T as the SLaK distillation code builds its students: 7×7 depthwise conv
    /// without bias + BatchNorm, no small branch, ConvNeXt widths.
    pub fn convnext_tiny_slak7() -> Self {
        Self {
            depths: vec![3, 3, 9, 3],
            ..Self::slak7_student()
        }
    }
    /// ConvNeXt-S built the same way (the README's SLaK-S → ConvNeXt-S command).
    pub fn convnext_small_slak7() -> Self {
        Self {
            depths: vec![3, 3, 27, 3],
            ..Self::slak7_student()
        }
    }
    fn slak7_student() -> Self {
        Self {
            dims: vec![96, 192, 384, 768],
            kernels: vec![7; 4],
            small_kernel: None,
            decompose: false,
            ..Self::base_layout()
        }
    }
    /// CPU-scale teacher for 28×28/32×32 inputs: maps 14/7/3, kernels 13/7/5 (as large as or
    /// larger than the maps they see), 3×3 small kernel. Layer scale starts at 1, not 1e-6: in a
    /// run of ~2 000 steps the 1e-6 start (meant for 300 ImageNet epochs) cost 2 points of top-1
    /// (Fashion-MNIST, 2 epochs: 82.6 % vs 84.6 % for convnext_proxy).
    pub fn proxy() -> Self {
        Self {
            depths: vec![1, 1, 2],
            dims: vec![24, 48, 96],
            kernels: vec![13, 7, 5],
            small_kernel: Some(3),
            decompose: true,
            stem: 2,
            layer_scale_init: 1.0,
            head_init_scale: 1.0,
        }
    }

    /// Depthwise large-kernel unit: k×s + s×k (decomposed) or k×k, plus s×s when s < k, each
    /// conv followed by BatchNorm, summed.
    fn large_kernel(
        &self,
        b: &mut GraphBuilder,
        x: ValueId,
        module: &str,
        dim: usize,
        k: usize,
    ) -> ValueId {
        let init = Init::TruncNormal { std: 0.02 };
        let branch = |b: &mut GraphBuilder, name: &str, kh: usize, kw: usize| {
            let m = format!("{module}.{name}");
            let y = b.conv(
                x,
                &format!("{m}.conv"),
                dim,
                dim,
                [kh, kw],
                1,
                [kh / 2, kw / 2],
                dim,
                None,
                init.clone(),
            );
            b.batch_norm(y, &format!("{m}.bn"), dim, 1e-5)
        };
        let large = match (self.decompose, self.small_kernel) {
            (true, Some(s)) => {
                let a = branch(b, "LoRA1", k, s);
                let c = branch(b, "LoRA2", s, k);
                b.add(a, c, module)
            }
            // Rejected by `validate`; a k×k conv is what upstream builds without decomposition.
            (true, None) | (false, _) => branch(b, "lkb_origin", k, k),
        };
        // Upstream adds the small kernel only when it is strictly smaller than the large one.
        match self.small_kernel {
            Some(s) if s < k => {
                let small = branch(b, "small_conv", s, s);
                b.add(large, small, module)
            }
            Some(_) | None => large,
        }
    }

    pub fn validate(&self, common: &CommonConfig) -> Result<(), ModelError> {
        let c = Checker::new(&common.preset);
        c.stages("depths", &self.depths)?;
        c.widths("dims", &self.dims, "depths", &self.depths)?;
        if self.kernels.len() != self.depths.len()
            || !self.kernels.iter().all(|&k| is_odd_kernel(k))
        {
            let expected = format!(
                "{} odd kernel sizes, one per stage of depths = {:?}, each in 1..={}",
                self.depths.len(),
                self.depths,
                super::limits::MAX_KERNEL
            );
            return Err(c.invalid("kernels", &self.kernels, expected));
        }
        match self.small_kernel {
            Some(s) => {
                c.kernel("small_kernel", s)?;
                // Decomposed branches are k×s: s may equal k (then no small branch, as upstream).
                // Undecomposed, a small kernel at least as large as k would be dropped silently.
                let fits = if self.decompose {
                    self.kernels.iter().all(|&k| s <= k)
                } else {
                    self.kernels.iter().all(|&k| s < k)
                };
                if !fits {
                    let bound = if self.decompose {
                        "at most"
                    } else {
                        "smaller than"
                    };
                    return Err(c.invalid(
                        "small_kernel",
                        s,
                        format!(
                            "an odd kernel size {bound} every stage's kernel (kernels = {:?})",
                            self.kernels
                        ),
                    ));
                }
            }
            None if self.decompose => {
                return Err(c.invalid("decompose", true, "false when the preset has no small kernel (a decomposed kernel is k×s + s×k); set small_kernel too"));
            }
            None => {}
        }
        c.input_covers_strides(common, self.stem, self.depths.len())
    }

    pub(crate) fn build(&self, common: &CommonConfig) -> Result<Graph, ModelError> {
        convnext_macro(
            common,
            super::Family::Slak.into(),
            &self.depths,
            &self.dims,
            self.stem,
            self.layer_scale_init,
            self.head_init_scale,
            |b, x, m, stage, dim| {
                self.large_kernel(b, x, &format!("{m}.large_kernel"), dim, self.kernels[stage])
            },
        )
    }
}
