//! ResNet — "Deep Residual Learning for Image Recognition" (He et al., CVPR 2016), torchvision
//! layout and names (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`), stride on
//! the 3×3 conv of bottlenecks (v1.5).

use super::{Checker, CommonConfig};
use crate::graph::{Graph, GraphBuilder, Init, ValueId};
use crate::ModelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    Basic,
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResNetConfig {
    pub block: Block,
    pub layers: Vec<usize>,
    pub widths: Vec<usize>,
    /// `None`: the ImageNet stem (7×7/2 conv + 3×3/2 max pool). `Some(s)`: one 3×3 conv of
    /// stride `s` and no pooling, for 28×28/32×32 inputs.
    pub small_stem_stride: Option<usize>,
}

impl ResNetConfig {
    pub fn resnet18() -> Self {
        Self {
            block: Block::Basic,
            layers: vec![2, 2, 2, 2],
            widths: vec![64, 128, 256, 512],
            small_stem_stride: None,
        }
    }
    pub fn resnet34() -> Self {
        Self {
            layers: vec![3, 4, 6, 3],
            ..Self::resnet18()
        }
    }
    pub fn resnet50() -> Self {
        Self {
            block: Block::Bottleneck,
            layers: vec![3, 4, 6, 3],
            widths: vec![64, 128, 256, 512],
            small_stem_stride: None,
        }
    }
    /// CPU-scale student with the proxy ConvNeXt's stage widths.
    pub fn proxy() -> Self {
        Self {
            block: Block::Basic,
            layers: vec![1, 1, 1],
            widths: vec![16, 32, 64],
            small_stem_stride: Some(2),
        }
    }

    pub fn validate(&self, common: &CommonConfig) -> Result<(), ModelError> {
        let c = Checker::new(&common.preset);
        c.stages("depths", &self.layers)?;
        c.widths("dims", &self.widths, "depths", &self.layers)
    }

    pub(crate) fn build(&self, common: &CommonConfig) -> Result<Graph, ModelError> {
        let Some(&stem_width) = self.widths.first() else {
            return Err(ModelError::Graph("resnet: no layers".into()));
        };
        let conv_init = Init::KaimingNormalFanOut;
        let mut b = GraphBuilder::new();
        let mut x = match self.small_stem_stride {
            None => b.conv(
                GraphBuilder::INPUT,
                "conv1",
                common.in_chans,
                stem_width,
                [7, 7],
                2,
                [3, 3],
                1,
                None,
                conv_init.clone(),
            ),
            Some(s) => b.conv(
                GraphBuilder::INPUT,
                "conv1",
                common.in_chans,
                stem_width,
                [3, 3],
                s,
                [1, 1],
                1,
                None,
                conv_init.clone(),
            ),
        };
        x = b.batch_norm(x, "bn1", stem_width, 1e-5);
        x = b.relu(x, "relu");
        if self.small_stem_stride.is_none() {
            x = b.max_pool(x, "maxpool", 3, 2, 1);
        }
        let mut in_ch = stem_width;
        for (i, (&n, &width)) in self.layers.iter().zip(&self.widths).enumerate() {
            for j in 0..n {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                let m = format!("layer{}.{j}", i + 1);
                x = self.block(&mut b, x, &m, in_ch, width, stride);
                in_ch = width * self.block.expansion();
            }
            b.tap(&format!("stage{}", i + 1), x);
        }
        let pooled = b.global_avg_pool(x, "avgpool");
        b.tap("pre_logits", pooled);
        let logits = b.linear(
            pooled,
            "fc",
            in_ch,
            common.num_classes,
            Some(Init::UniformFanIn),
            Init::UniformFanIn,
        );
        b.finish(common.header(super::Family::ResNet.into()), logits)
    }

    fn block(
        &self,
        b: &mut GraphBuilder,
        x: ValueId,
        m: &str,
        in_ch: usize,
        width: usize,
        stride: usize,
    ) -> ValueId {
        let init = Init::KaimingNormalFanOut;
        let out_ch = width * self.block.expansion();
        let conv_bn = |b: &mut GraphBuilder,
                       y: ValueId,
                       idx: usize,
                       cin: usize,
                       cout: usize,
                       k: usize,
                       s: usize| {
            let y = b.conv(
                y,
                &format!("{m}.conv{idx}"),
                cin,
                cout,
                [k, k],
                s,
                [k / 2, k / 2],
                1,
                None,
                init.clone(),
            );
            b.batch_norm(y, &format!("{m}.bn{idx}"), cout, 1e-5)
        };
        let y = match self.block {
            Block::Basic => {
                let y = conv_bn(b, x, 1, in_ch, width, 3, stride);
                let y = b.relu(y, m);
                conv_bn(b, y, 2, width, width, 3, 1)
            }
            Block::Bottleneck => {
                let y = conv_bn(b, x, 1, in_ch, width, 1, 1);
                let y = b.relu(y, m);
                let y = conv_bn(b, y, 2, width, width, 3, stride);
                let y = b.relu(y, m);
                conv_bn(b, y, 3, width, out_ch, 1, 1)
            }
        };
        let shortcut = if stride != 1 || in_ch != out_ch {
            let s = b.conv(
                x,
                &format!("{m}.downsample.0"),
                in_ch,
                out_ch,
                [1, 1],
                stride,
                [0, 0],
                1,
                None,
                init.clone(),
            );
            b.batch_norm(s, &format!("{m}.downsample.1"), out_ch, 1e-5)
        } else {
            x
        };
        let sum = b.add(shortcut, y, m);
        b.relu(sum, m)
    }
}
