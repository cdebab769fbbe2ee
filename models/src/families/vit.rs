//! ViT — "An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR 2021), the Transformer teacher
//! of the paper's comparison. timm `vision_transformer.py` layout and names (`patch_embed.proj`,
//! `cls_token`, `pos_embed`, `blocks.i.attn.qkv`, `blocks.i.mlp.fc1`, `norm`, `head`), class
//! token pooling, pre-norm blocks, LayerNorm eps 1e-6.

use super::limits::MAX_WIDTH;
use super::{stochastic_depth, Checker, CommonConfig};
use crate::graph::{Graph, GraphBuilder, Init, NormAxis};
use crate::ModelError;

#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    /// Number of evenly spaced `stageK` taps (token maps) for feature distillation.
    pub stages: usize,
}

impl VitConfig {
    pub fn small() -> Self {
        Self {
            patch: 16,
            dim: 384,
            depth: 12,
            heads: 6,
            mlp_ratio: 4,
            stages: 4,
        }
    }
    /// CPU-scale Transformer teacher: 4×4 patches (7×7 tokens on 28×28).
    pub fn proxy() -> Self {
        Self {
            patch: 4,
            dim: 64,
            depth: 3,
            heads: 4,
            mlp_ratio: 4,
            stages: 3,
        }
    }

    /// The `depths` override: blocks between feature taps, one entry per tap, all equal
    /// (taps are evenly spaced).
    pub(crate) fn apply_depths(&mut self, c: &Checker, depths: &[usize]) -> Result<(), ModelError> {
        c.stages("depths", depths)?;
        if depths.iter().any(|&d| d != depths[0]) {
            return Err(c.invalid("depths", depths, "the same number of blocks between every feature tap (taps are evenly spaced), e.g. [1, 1, 1]"));
        }
        self.depth = depths.iter().sum();
        self.stages = depths.len();
        Ok(())
    }

    /// The `dims` override: `[width]`.
    pub(crate) fn apply_dims(&mut self, c: &Checker, dims: &[usize]) -> Result<(), ModelError> {
        match dims {
            [dim] => {
                self.dim = *dim;
                self.validate_dim(c, dims)
            }
            _ => Err(self.dim_error(c, dims)),
        }
    }

    fn dim_error(&self, c: &Checker, dims: &[usize]) -> ModelError {
        c.invalid(
            "dims",
            dims,
            format!(
                "one width, a multiple of the {} attention heads, in 1..={MAX_WIDTH}",
                self.heads
            ),
        )
    }

    fn validate_dim(&self, c: &Checker, dims: &[usize]) -> Result<(), ModelError> {
        if self.dim == 0 || self.dim > MAX_WIDTH || !self.dim.is_multiple_of(self.heads) {
            return Err(self.dim_error(c, dims));
        }
        Ok(())
    }

    pub fn validate(&self, common: &CommonConfig) -> Result<(), ModelError> {
        let c = Checker::new(&common.preset);
        let per_stage = if self.stages > 0 && self.depth.is_multiple_of(self.stages) {
            self.depth / self.stages
        } else {
            0
        };
        c.stages("depths", &vec![per_stage; self.stages])?;
        self.validate_dim(&c, &[self.dim])?;
        let [h, w] = common.input_size;
        if self.patch == 0 || !h.is_multiple_of(self.patch) || !w.is_multiple_of(self.patch) {
            return Err(c.invalid(
                "input_size",
                h,
                format!(
                    "a multiple of the patch size {} in {}..={}",
                    self.patch,
                    self.patch,
                    crate::preprocess::MAX_INPUT_SIDE
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn build(&self, common: &CommonConfig) -> Result<Graph, ModelError> {
        let [h, w] = common.input_size;
        let (gh, gw) = (h / self.patch, w / self.patch);
        let d = self.dim;
        let init = Init::TruncNormal { std: 0.02 };
        let mut b = GraphBuilder::new();
        let x = b.conv(
            GraphBuilder::INPUT,
            "patch_embed.proj",
            common.in_chans,
            d,
            [self.patch; 2],
            self.patch,
            [0, 0],
            1,
            Some(Init::UniformFanIn),
            Init::UniformFanIn,
        );
        let x = b.patch_tokens(x, "patch_embed");
        let x = b.prepend_token(x, "cls_token", d, Init::Normal { std: 1e-6 });
        let mut x = b.add_param_tensor(
            x,
            "pos_embed",
            vec![1, 1 + gh * gw, d],
            Init::TruncNormal { std: 0.02 },
        );
        let rates = stochastic_depth(common.drop_path, &[self.depth]);
        let per_stage = self.depth / self.stages;
        for (i, &rate) in rates.iter().enumerate() {
            let m = format!("blocks.{i}");
            let y = b.layer_norm(x, &format!("{m}.norm1"), d, 1e-6, NormAxis::Last);
            let y = b.self_attention(y, &format!("{m}.attn"), d, self.heads, true, init.clone());
            let y = b.drop_path(y, &format!("{m}.drop_path1"), rate);
            x = b.add(x, y, &m);
            let y = b.layer_norm(x, &format!("{m}.norm2"), d, 1e-6, NormAxis::Last);
            let y = b.linear(
                y,
                &format!("{m}.mlp.fc1"),
                d,
                d * self.mlp_ratio,
                Some(Init::Zeros),
                init.clone(),
            );
            let y = b.gelu(y, &format!("{m}.mlp.act"));
            let y = b.linear(
                y,
                &format!("{m}.mlp.fc2"),
                d * self.mlp_ratio,
                d,
                Some(Init::Zeros),
                init.clone(),
            );
            let y = b.drop_path(y, &format!("{m}.drop_path2"), rate);
            x = b.add(x, y, &m);
            if (i + 1).is_multiple_of(per_stage) {
                let map = b.tokens_to_map(x, &m, 1, gh, gw);
                b.tap(&format!("stage{}", (i + 1) / per_stage), map);
            }
        }
        let x = b.layer_norm(x, "norm", d, 1e-6, NormAxis::Last);
        let pre = b.select_token(x, "pool", 0);
        b.tap("pre_logits", pre);
        let logits = b.linear(pre, "head", d, common.num_classes, Some(Init::Zeros), init);
        b.finish(common.header(super::Family::Vit.into()), logits)
    }
}
