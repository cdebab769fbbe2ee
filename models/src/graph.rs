//! The network description every consumer reads: a list of ops in topological order, the
//! parameters they use (with upstream checkpoint names, shapes and init), and named taps.
//! Value `i` is the output of node `i`; node 0 is the input image batch `[N, C, H, W]`.

use crate::preprocess::Preprocess;
use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type ValueId = usize;

/// How a parameter is initialised (PyTorch semantics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Init {
    Zeros,
    Ones,
    Const(f32),
    /// Normal(0, std) truncated to [-2, 2] (absolute, as `timm.trunc_normal_`).
    TruncNormal {
        std: f32,
    },
    Normal {
        std: f32,
    },
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: std = sqrt(2 / fan_out).
    KaimingNormalFanOut,
    /// PyTorch's default for Conv/Linear weights: U(-b, b), b = 1/sqrt(fan_in).
    UniformFanIn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    F32,
    I64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamKind {
    /// Learned; `decay` says whether weight decay applies (not for norms, biases, layer
    /// scale, tokens).
    Trainable { decay: bool },
    /// Running statistics and counters: saved with the weights, never optimised.
    Buffer,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub kind: ParamKind,
    pub dtype: DType,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_trainable(&self) -> bool {
        matches!(self.kind, ParamKind::Trainable { .. })
    }
}

/// Which axis a LayerNorm normalises: dim 1 of an NCHW map, or the last dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormAxis {
    ChannelsFirst,
    Last,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Input,
    /// NCHW convolution; weight `[out, in/groups, kh, kw]`.
    Conv2d {
        weight: String,
        bias: Option<String>,
        stride: [usize; 2],
        padding: [usize; 2],
        groups: usize,
    },
    BatchNorm2d {
        weight: String,
        bias: String,
        running_mean: String,
        running_var: String,
        num_batches_tracked: String,
        eps: f64,
        momentum: f64,
    },
    LayerNorm {
        weight: String,
        bias: String,
        eps: f64,
        axis: NormAxis,
    },
    /// `x @ W^T + b` over the last dim; weight `[out, in]`.
    Linear {
        weight: String,
        bias: Option<String>,
    },
    /// Exact (erf) GELU.
    Gelu,
    Relu,
    /// Elementwise sum of the two inputs.
    Add,
    /// Elementwise product with a parameter broadcast over the last dim (layer scale).
    Scale {
        param: String,
    },
    Permute {
        perm: Vec<usize>,
    },
    /// Stochastic depth on a residual branch: identity at inference.
    DropPath {
        rate: f64,
    },
    /// `[N, C, H, W]` → `[N, C]` by averaging H and W.
    GlobalAvgPool,
    MaxPool2d {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// `[N, C, H, W]` → `[N, H*W, C]`.
    PatchTokens,
    /// Concatenates a learned `[1, 1, D]` token in front of `[N, L, D]`.
    PrependToken {
        param: String,
    },
    /// Adds a learned `[1, L, D]` parameter (position embedding).
    AddParam {
        param: String,
    },
    /// Multi-head self-attention over `[N, L, D]` (qkv packed as timm: q, k, v blocks of D).
    SelfAttention {
        qkv_weight: String,
        qkv_bias: Option<String>,
        proj_weight: String,
        proj_bias: Option<String>,
        heads: usize,
    },
    /// `[N, L, D]` → `[N, D]` taking token `index`.
    SelectToken {
        index: usize,
    },
    /// `[N, skip + H*W, D]` → `[N, D, H, W]` dropping the first `skip` tokens.
    TokensToMap {
        skip: usize,
        height: usize,
        width: usize,
    },
}

impl Op {
    /// Parameter names this op reads, in a stable order.
    pub fn param_names(&self) -> Vec<&str> {
        match self {
            Op::Conv2d { weight, bias, .. } | Op::Linear { weight, bias } => {
                std::iter::once(weight.as_str())
                    .chain(bias.as_deref())
                    .collect()
            }
            Op::BatchNorm2d {
                weight,
                bias,
                running_mean,
                running_var,
                num_batches_tracked,
                ..
            } => {
                vec![weight, bias, running_mean, running_var, num_batches_tracked]
            }
            Op::LayerNorm { weight, bias, .. } => vec![weight, bias],
            Op::Scale { param } | Op::PrependToken { param } | Op::AddParam { param } => {
                vec![param]
            }
            Op::SelfAttention {
                qkv_weight,
                qkv_bias,
                proj_weight,
                proj_bias,
                ..
            } => [
                Some(qkv_weight),
                qkv_bias.as_ref(),
                Some(proj_weight),
                proj_bias.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|s| s.as_str())
            .collect(),
            // Listed one by one (no `_` arm): an op that gains a parameter must say so here,
            // or passes that drop unread parameters would drop it.
            Op::Input
            | Op::Gelu
            | Op::Relu
            | Op::Add
            | Op::Permute { .. }
            | Op::DropPath { .. }
            | Op::GlobalAvgPool
            | Op::MaxPool2d { .. }
            | Op::PatchTokens
            | Op::SelectToken { .. }
            | Op::TokensToMap { .. } => vec![],
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Input => "Input",
            Op::Conv2d { .. } => "Conv2d",
            Op::BatchNorm2d { .. } => "BatchNorm2d",
            Op::LayerNorm { .. } => "LayerNorm",
            Op::Linear { .. } => "Linear",
            Op::Gelu => "GELU",
            Op::Relu => "ReLU",
            Op::Add => "Add",
            Op::Scale { .. } => "Scale",
            Op::Permute { .. } => "Permute",
            Op::DropPath { .. } => "DropPath",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::MaxPool2d { .. } => "MaxPool2d",
            Op::PatchTokens => "PatchTokens",
            Op::PrependToken { .. } => "PrependToken",
            Op::AddParam { .. } => "AddParam",
            Op::SelfAttention { .. } => "SelfAttention",
            Op::SelectToken { .. } => "SelectToken",
            Op::TokensToMap { .. } => "TokensToMap",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Module path of the op in the upstream model (e.g. `stages.2.4.large_kernel.LoRA1.conv`).
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// Family (`slak`, `convnext`, `resnet`, `vit`).
    pub arch: String,
    pub preset: String,
    pub in_chans: usize,
    pub input_size: [usize; 2],
    pub num_classes: usize,
    pub nodes: Vec<Node>,
    pub params: Vec<ParamSpec>,
    /// Named feature maps: `stage1`.. `stageN`, `pre_logits`, `logits`.
    pub taps: BTreeMap<String, ValueId>,
    pub output: ValueId,
    pub preprocess: Preprocess,
}

impl Graph {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Learned parameters (buffers excluded), the count papers report.
    pub fn num_parameters(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.is_trainable())
            .map(|p| p.numel())
            .sum()
    }

    /// Names of the `stageK` taps in order.
    pub fn stage_taps(&self) -> Vec<(String, ValueId)> {
        let mut v: Vec<_> = self
            .taps
            .iter()
            .filter(|(k, _)| k.starts_with("stage"))
            .map(|(k, &v)| (k.clone(), v))
            .collect();
        v.sort_by_key(|(k, _)| k[5..].parse::<usize>().unwrap_or(usize::MAX));
        v
    }

    /// Shapes of every value for a batch of `batch` images of `h`×`w`.
    pub fn infer_shapes(
        &self,
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<Vec<usize>>, ModelError> {
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        let pshape = |n: &str| {
            self.param(n)
                .map(|p| p.shape.clone())
                .ok_or_else(|| ModelError::Graph(format!("unknown parameter {n}")))
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let inp = |k: usize| -> Result<&Vec<usize>, ModelError> {
                node.inputs
                    .get(k)
                    .and_then(|&v| if v < i { shapes.get(v) } else { None })
                    .ok_or_else(|| {
                        ModelError::Graph(format!("node {i} ({}) has a bad input {k}", node.name))
                    })
            };
            let bad = |msg: String| ModelError::Graph(format!("node {i} ({}): {msg}", node.name));
            let s = match &node.op {
                Op::Input => vec![batch, self.in_chans, h, w],
                Op::Conv2d {
                    weight,
                    stride,
                    padding,
                    groups,
                    ..
                } => {
                    let x = inp(0)?;
                    let wt = pshape(weight)?;
                    if x.len() != 4 || x[1] != wt[1] * groups {
                        return Err(bad(format!(
                            "conv expects {} input channels, got shape {x:?}",
                            wt[1] * groups
                        )));
                    }
                    let oh = (x[2] + 2 * padding[0]).checked_sub(wt[2]).ok_or_else(|| {
                        bad(format!(
                            "kernel {}x{} larger than padded input {x:?}",
                            wt[2], wt[3]
                        ))
                    })? / stride[0]
                        + 1;
                    let ow = (x[3] + 2 * padding[1]).checked_sub(wt[3]).ok_or_else(|| {
                        bad(format!(
                            "kernel {}x{} larger than padded input {x:?}",
                            wt[2], wt[3]
                        ))
                    })? / stride[1]
                        + 1;
                    vec![x[0], wt[0], oh, ow]
                }
                Op::MaxPool2d {
                    kernel,
                    stride,
                    padding,
                } => {
                    let x = inp(0)?;
                    let o = |d: usize| (d + 2 * padding - kernel) / stride + 1;
                    vec![x[0], x[1], o(x[2]), o(x[3])]
                }
                Op::Linear { weight, .. } => {
                    let mut x = inp(0)?.clone();
                    let wt = pshape(weight)?;
                    if x.last() != Some(&wt[1]) {
                        return Err(bad(format!("linear expects last dim {}, got {x:?}", wt[1])));
                    }
                    *x.last_mut().unwrap() = wt[0];
                    x
                }
                Op::Add => {
                    let (a, b) = (inp(0)?, inp(1)?);
                    if a != b {
                        return Err(bad(format!("add of mismatched shapes {a:?} and {b:?}")));
                    }
                    a.clone()
                }
                Op::Permute { perm } => {
                    let x = inp(0)?;
                    perm.iter().map(|&p| x[p]).collect()
                }
                Op::GlobalAvgPool => {
                    let x = inp(0)?;
                    vec![x[0], x[1]]
                }
                Op::PatchTokens => {
                    let x = inp(0)?;
                    vec![x[0], x[2] * x[3], x[1]]
                }
                Op::PrependToken { .. } => {
                    let x = inp(0)?;
                    vec![x[0], x[1] + 1, x[2]]
                }
                Op::SelectToken { .. } => {
                    let x = inp(0)?;
                    vec![x[0], x[2]]
                }
                Op::TokensToMap {
                    skip,
                    height,
                    width,
                } => {
                    let x = inp(0)?;
                    if x[1] != skip + height * width {
                        return Err(bad(format!(
                            "{} tokens do not make a {height}x{width} map after {skip}",
                            x[1]
                        )));
                    }
                    vec![x[0], x[2], *height, *width]
                }
                Op::AddParam { param } => {
                    let x = inp(0)?;
                    let p = pshape(param)?;
                    if p[1..] != x[1..] {
                        return Err(bad(format!("parameter {param} {p:?} does not match {x:?}")));
                    }
                    x.clone()
                }
                Op::BatchNorm2d { .. }
                | Op::LayerNorm { .. }
                | Op::Gelu
                | Op::Relu
                | Op::Scale { .. }
                | Op::DropPath { .. }
                | Op::SelfAttention { .. } => inp(0)?.clone(),
            };
            shapes.push(s);
        }
        Ok(shapes)
    }

    /// Multiply-accumulate count per image at the graph's input size (the "GFLOPs" papers
    /// quote for ConvNeXt and SLaK count MACs); convolutions, linears and attention only.
    pub fn macs(&self) -> Result<u64, ModelError> {
        let [h, w] = self.input_size;
        let shapes = self.infer_shapes(1, h, w)?;
        let mut total: u64 = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            let out = &shapes[i];
            let numel = out.iter().product::<usize>() as u64;
            total += match &node.op {
                Op::Conv2d { weight, .. } => {
                    let wt = &self.param(weight).unwrap().shape;
                    numel * (wt[1] * wt[2] * wt[3]) as u64
                }
                Op::Linear { weight, .. } => numel * self.param(weight).unwrap().shape[1] as u64,
                Op::SelfAttention { .. } => {
                    let (l, d) = (out[1] as u64, out[2] as u64);
                    // qkv + proj projections, then q·k^T and attn·v.
                    4 * l * d * d + 2 * l * l * d
                }
                Op::Input
                | Op::BatchNorm2d { .. }
                | Op::LayerNorm { .. }
                | Op::Gelu
                | Op::Relu
                | Op::Add
                | Op::Scale { .. }
                | Op::Permute { .. }
                | Op::DropPath { .. }
                | Op::GlobalAvgPool
                | Op::MaxPool2d { .. }
                | Op::PatchTokens
                | Op::PrependToken { .. }
                | Op::AddParam { .. }
                | Op::SelectToken { .. }
                | Op::TokensToMap { .. } => 0,
            };
        }
        Ok(total)
    }

    pub fn gflops(&self) -> f64 {
        self.macs().map(|m| m as f64 / 1e9).unwrap_or(f64::NAN)
    }

    /// Checks internal consistency: every referenced parameter exists, names are unique,
    /// inputs point backwards, and shapes infer at the default input size.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.params {
            if !seen.insert(p.name.as_str()) {
                return Err(ModelError::Graph(format!("duplicate parameter {}", p.name)));
            }
        }
        for node in &self.nodes {
            for n in node.op.param_names() {
                if !seen.contains(n) {
                    return Err(ModelError::Graph(format!(
                        "node {} reads unknown parameter {n}",
                        node.name
                    )));
                }
            }
        }
        let [h, w] = self.input_size;
        self.infer_shapes(1, h, w).map(|_| ())
    }
}

/// Incremental construction of a [`Graph`] with upstream-style dotted names.
pub struct GraphBuilder {
    nodes: Vec<Node>,
    params: Vec<ParamSpec>,
    taps: BTreeMap<String, ValueId>,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl Default for GraphBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self {
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input,
                inputs: vec![],
            }],
            params: vec![],
            taps: BTreeMap::new(),
        }
    }

    pub const INPUT: ValueId = 0;

    fn push(&mut self, name: &str, op: Op, inputs: Vec<ValueId>) -> ValueId {
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
        });
        self.nodes.len() - 1
    }

    pub fn add_param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        init: Init,
        kind: ParamKind,
    ) -> String {
        self.params.push(ParamSpec {
            name: name.clone(),
            shape,
            init,
            kind,
            dtype: DType::F32,
        });
        name
    }

    fn weight(&mut self, module: &str, shape: Vec<usize>, init: Init) -> String {
        self.add_param(
            join(module, "weight"),
            shape,
            init,
            ParamKind::Trainable { decay: true },
        )
    }

    fn no_decay(&mut self, module: &str, leaf: &str, shape: Vec<usize>, init: Init) -> String {
        self.add_param(
            join(module, leaf),
            shape,
            init,
            ParamKind::Trainable { decay: false },
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: ValueId,
        module: &str,
        in_ch: usize,
        out_ch: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
        groups: usize,
        bias: Option<Init>,
        init: Init,
    ) -> ValueId {
        let weight = self.weight(
            module,
            vec![out_ch, in_ch / groups, kernel[0], kernel[1]],
            init,
        );
        let bias = bias.map(|b| self.no_decay(module, "bias", vec![out_ch], b));
        self.push(
            module,
            Op::Conv2d {
                weight,
                bias,
                stride: [stride, stride],
                padding,
                groups,
            },
            vec![x],
        )
    }

    pub fn batch_norm(&mut self, x: ValueId, module: &str, ch: usize, eps: f64) -> ValueId {
        let weight = self.no_decay(module, "weight", vec![ch], Init::Ones);
        let bias = self.no_decay(module, "bias", vec![ch], Init::Zeros);
        let running_mean = self.add_param(
            join(module, "running_mean"),
            vec![ch],
            Init::Zeros,
            ParamKind::Buffer,
        );
        let running_var = self.add_param(
            join(module, "running_var"),
            vec![ch],
            Init::Ones,
            ParamKind::Buffer,
        );
        let nbt = join(module, "num_batches_tracked");
        self.params.push(ParamSpec {
            name: nbt.clone(),
            shape: vec![],
            init: Init::Zeros,
            kind: ParamKind::Buffer,
            dtype: DType::I64,
        });
        self.push(
            module,
            Op::BatchNorm2d {
                weight,
                bias,
                running_mean,
                running_var,
                num_batches_tracked: nbt,
                eps,
                momentum: 0.1,
            },
            vec![x],
        )
    }

    pub fn layer_norm(
        &mut self,
        x: ValueId,
        module: &str,
        ch: usize,
        eps: f64,
        axis: NormAxis,
    ) -> ValueId {
        let weight = self.no_decay(module, "weight", vec![ch], Init::Ones);
        let bias = self.no_decay(module, "bias", vec![ch], Init::Zeros);
        self.push(
            module,
            Op::LayerNorm {
                weight,
                bias,
                eps,
                axis,
            },
            vec![x],
        )
    }

    pub fn linear(
        &mut self,
        x: ValueId,
        module: &str,
        din: usize,
        dout: usize,
        bias: Option<Init>,
        init: Init,
    ) -> ValueId {
        let weight = self.weight(module, vec![dout, din], init);
        let bias = bias.map(|b| self.no_decay(module, "bias", vec![dout], b));
        self.push(module, Op::Linear { weight, bias }, vec![x])
    }

    pub fn gelu(&mut self, x: ValueId, module: &str) -> ValueId {
        self.push(module, Op::Gelu, vec![x])
    }

    pub fn relu(&mut self, x: ValueId, module: &str) -> ValueId {
        self.push(module, Op::Relu, vec![x])
    }

    pub fn add(&mut self, a: ValueId, b: ValueId, module: &str) -> ValueId {
        self.push(module, Op::Add, vec![a, b])
    }

    /// Layer scale: a learned per-channel multiplier named exactly `name` (e.g. `stages.0.1.gamma`).
    pub fn scale(&mut self, x: ValueId, name: &str, ch: usize, init_value: f32) -> ValueId {
        let param = self.add_param(
            name.to_string(),
            vec![ch],
            Init::Const(init_value),
            ParamKind::Trainable { decay: false },
        );
        self.push(name, Op::Scale { param }, vec![x])
    }

    pub fn permute(&mut self, x: ValueId, module: &str, perm: &[usize]) -> ValueId {
        self.push(
            module,
            Op::Permute {
                perm: perm.to_vec(),
            },
            vec![x],
        )
    }

    /// Adds drop path only when the rate is positive (zero-rate nodes would be dead weight).
    pub fn drop_path(&mut self, x: ValueId, module: &str, rate: f64) -> ValueId {
        if rate > 0.0 {
            self.push(module, Op::DropPath { rate }, vec![x])
        } else {
            x
        }
    }

    pub fn global_avg_pool(&mut self, x: ValueId, module: &str) -> ValueId {
        self.push(module, Op::GlobalAvgPool, vec![x])
    }

    pub fn max_pool(
        &mut self,
        x: ValueId,
        module: &str,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> ValueId {
        self.push(
            module,
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
            },
            vec![x],
        )
    }

    pub fn patch_tokens(&mut self, x: ValueId, module: &str) -> ValueId {
        self.push(module, Op::PatchTokens, vec![x])
    }

    pub fn prepend_token(&mut self, x: ValueId, name: &str, dim: usize, init: Init) -> ValueId {
        let param = self.add_param(
            name.to_string(),
            vec![1, 1, dim],
            init,
            ParamKind::Trainable { decay: false },
        );
        self.push(name, Op::PrependToken { param }, vec![x])
    }

    pub fn add_param_tensor(
        &mut self,
        x: ValueId,
        name: &str,
        shape: Vec<usize>,
        init: Init,
    ) -> ValueId {
        let param = self.add_param(
            name.to_string(),
            shape,
            init,
            ParamKind::Trainable { decay: false },
        );
        self.push(name, Op::AddParam { param }, vec![x])
    }

    #[allow(clippy::too_many_arguments)]
    pub fn self_attention(
        &mut self,
        x: ValueId,
        module: &str,
        dim: usize,
        heads: usize,
        qkv_bias: bool,
        init: Init,
    ) -> ValueId {
        let qkv = join(module, "qkv");
        let proj = join(module, "proj");
        let qkv_weight = self.weight(&qkv, vec![3 * dim, dim], init.clone());
        let qkv_bias = qkv_bias.then(|| self.no_decay(&qkv, "bias", vec![3 * dim], Init::Zeros));
        let proj_weight = self.weight(&proj, vec![dim, dim], init);
        let proj_bias = Some(self.no_decay(&proj, "bias", vec![dim], Init::Zeros));
        self.push(
            module,
            Op::SelfAttention {
                qkv_weight,
                qkv_bias,
                proj_weight,
                proj_bias,
                heads,
            },
            vec![x],
        )
    }

    pub fn select_token(&mut self, x: ValueId, module: &str, index: usize) -> ValueId {
        self.push(module, Op::SelectToken { index }, vec![x])
    }

    pub fn tokens_to_map(
        &mut self,
        x: ValueId,
        module: &str,
        skip: usize,
        height: usize,
        width: usize,
    ) -> ValueId {
        self.push(
            module,
            Op::TokensToMap {
                skip,
                height,
                width,
            },
            vec![x],
        )
    }

    pub fn tap(&mut self, name: &str, x: ValueId) {
        self.taps.insert(name.to_string(), x);
    }

    pub fn finish(mut self, header: GraphHeader, output: ValueId) -> Result<Graph, ModelError> {
        self.taps.insert("logits".into(), output);
        let g = Graph {
            arch: header.arch,
            preset: header.preset,
            in_chans: header.in_chans,
            input_size: header.input_size,
            num_classes: header.num_classes,
            nodes: self.nodes,
            params: self.params,
            taps: self.taps,
            output,
            preprocess: header.preprocess,
        };
        g.validate()?;
        Ok(g)
    }
}

/// The non-structural facts a family file states about its graph.
pub struct GraphHeader {
    pub arch: String,
    pub preset: String,
    pub in_chans: usize,
    pub input_size: [usize; 2],
    pub num_classes: usize,
    pub preprocess: Preprocess,
}
