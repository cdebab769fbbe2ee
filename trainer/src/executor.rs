//! Runs a [`Graph`] with libtorch: parameter creation from the graph's init specs, strict
//! loading from checkpoints, and a forward pass with autograd, train/eval semantics and taps.
//! Knows ops, never architectures.

use crate::TrainError;
use lkd_models::checkpoint::{check_state_dict, StateDict};
use lkd_models::graph::{DType, Init, Node, NormAxis, ParamKind};
use lkd_models::{Graph, HostData, HostTensor, Op, ValueId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use tch::{Device, Kind, TchError, Tensor};

/// FNV-1a of a name: stable across runs and platforms, unlike std's hasher.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// A standard normal draw for parameter init.
fn normal(rng: &mut StdRng) -> f32 {
    rng.sample(StandardNormal)
}

/// All parameters and buffers of one model, keyed by upstream name.
pub struct Params {
    pub tensors: BTreeMap<String, Tensor>,
    pub device: Device,
}

fn fan_in_out(shape: &[usize]) -> (f64, f64) {
    let receptive: usize = shape.iter().skip(2).product();
    let fan_in = shape.get(1).copied().unwrap_or(1) * receptive;
    let fan_out = shape.first().copied().unwrap_or(1) * receptive;
    (fan_in as f64, fan_out as f64)
}

pub fn host_to_tensor(t: &HostTensor, device: Device) -> Result<Tensor, TchError> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    let out = match &t.data {
        HostData::F32(v) => Tensor::f_from_slice(v)?,
        HostData::I64(v) => Tensor::f_from_slice(v)?,
    };
    out.f_reshape(&shape[..])?.f_to_device(device)
}

pub fn tensor_to_host(t: &Tensor) -> Result<HostTensor, TchError> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let flat = t
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?
        .f_reshape([-1])?;
    Ok(match t.kind() {
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 | Kind::Bool => {
            HostTensor::i64(shape, Vec::<i64>::try_from(flat.f_to_kind(Kind::Int64)?)?)
        }
        _ => HostTensor::f32(shape, Vec::<f32>::try_from(flat.f_to_kind(Kind::Float)?)?),
    })
}

impl Params {
    /// Fresh parameters drawn from the graph's init specs (PyTorch semantics). Values come from
    /// a per-parameter RNG seeded by (`seed`, name), so they never depend on libtorch's global
    /// generator or on what else the process is doing.
    pub fn init(graph: &Graph, device: Device, seed: u64) -> Result<Self, TchError> {
        let mut tensors = BTreeMap::new();
        for p in &graph.params {
            let shape: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
            let n = p.numel();
            let mut rng = StdRng::seed_from_u64(seed ^ name_hash(&p.name));
            let t = match p.dtype {
                DType::I64 => Tensor::f_zeros(&shape[..], (Kind::Int64, device))?,
                DType::F32 => {
                    let values: Vec<f32> = match &p.init {
                        Init::Zeros => vec![0.0; n],
                        Init::Ones => vec![1.0; n],
                        Init::Const(c) => vec![*c; n],
                        Init::Normal { std } => (0..n).map(|_| normal(&mut rng) * std).collect(),
                        Init::TruncNormal { std } => (0..n)
                            .map(|_| (normal(&mut rng) * std).clamp(-2.0, 2.0))
                            .collect(),
                        Init::KaimingNormalFanOut => {
                            let std = (2.0 / fan_in_out(&p.shape).1).sqrt() as f32;
                            (0..n).map(|_| normal(&mut rng) * std).collect()
                        }
                        Init::UniformFanIn => {
                            // A bias takes its bound from the weight it belongs to.
                            let fan_in = if p.shape.len() == 1 {
                                let w = p.name.strip_suffix("bias").map(|s| format!("{s}weight"));
                                w.and_then(|w| graph.param(&w))
                                    .map(|w| fan_in_out(&w.shape).0)
                                    .unwrap_or(p.shape[0] as f64)
                            } else {
                                fan_in_out(&p.shape).0
                            };
                            let bound = (1.0 / fan_in.sqrt()) as f32;
                            (0..n).map(|_| rng.gen_range(-bound..bound)).collect()
                        }
                    };
                    Tensor::f_from_slice(&values)?
                        .f_reshape(&shape[..])?
                        .f_to_device(device)?
                }
            };
            tensors.insert(p.name.clone(), t);
        }
        let mut params = Self { tensors, device };
        params.set_requires_grad(graph)?;
        Ok(params)
    }

    /// Strict load: the state dict must hold exactly the graph's parameters with their shapes.
    pub fn from_state_dict(
        graph: &Graph,
        sd: &StateDict,
        device: Device,
    ) -> Result<Self, TrainError> {
        check_state_dict(graph, sd)?;
        let mut tensors = BTreeMap::new();
        for p in &graph.params {
            let host = &sd[&p.name];
            let t = host_to_tensor(host, device)?;
            let t = match p.dtype {
                DType::F32 => t.f_to_kind(Kind::Float)?,
                DType::I64 => t.f_to_kind(Kind::Int64)?,
            };
            tensors.insert(p.name.clone(), t);
        }
        let mut params = Self { tensors, device };
        params.set_requires_grad(graph)?;
        Ok(params)
    }

    /// Stops gradients to `names` (fine-tuning's frozen parameters).
    pub fn freeze(&mut self, names: &std::collections::BTreeSet<String>) -> Result<(), TchError> {
        for name in names {
            if let Some(t) = self.tensors.get_mut(name) {
                *t = t.f_detach()?.f_set_requires_grad(false)?;
            }
        }
        Ok(())
    }

    fn set_requires_grad(&mut self, graph: &Graph) -> Result<(), TchError> {
        for p in &graph.params {
            if p.is_trainable() {
                if let Some(t) = self.tensors.get_mut(&p.name) {
                    *t = t.f_detach()?.f_set_requires_grad(true)?;
                }
            }
        }
        Ok(())
    }

    pub fn to_state_dict(&self) -> Result<StateDict, TchError> {
        self.tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), tensor_to_host(t)?)))
            .collect()
    }

    /// Trainable tensors with their weight-decay flag, in graph order.
    pub fn trainable<'a>(&'a self, graph: &'a Graph) -> Vec<(&'a str, &'a Tensor, bool)> {
        graph
            .params
            .iter()
            .filter_map(|p| match p.kind {
                ParamKind::Trainable { decay } => {
                    Some((p.name.as_str(), &self.tensors[&p.name], decay))
                }
                ParamKind::Buffer => None,
            })
            .collect()
    }

    /// Copies every tensor (a detached snapshot, e.g. for EMA).
    pub fn deep_copy(&self) -> Result<Self, tch::TchError> {
        let tensors = tch::no_grad(|| {
            self.tensors
                .iter()
                .map(|(k, t)| {
                    let mut copy = t.f_zeros_like()?;
                    copy.f_copy_(t)?;
                    Ok((k.clone(), copy))
                })
                .collect::<Result<_, tch::TchError>>()
        })?;
        Ok(Self {
            tensors,
            device: self.device,
        })
    }

    pub fn get(&self, name: &str) -> &Tensor {
        &self.tensors[name]
    }
}

/// Outputs of one forward pass: logits plus whichever taps were asked for.
pub struct Forward {
    pub logits: Tensor,
    pub taps: HashMap<String, Tensor>,
}

pub struct Executor {
    pub graph: Graph,
    /// Index of the last node reading each value, to free intermediates early.
    last_use: Vec<usize>,
    /// Seed of the drop-path masks of the next training forward pass (see `set_step_seed`).
    step_seed: Cell<u64>,
    /// BatchNorm layers (by weight name) kept in eval mode while training: frozen ones.
    frozen_norms: std::collections::BTreeSet<String>,
}

impl Executor {
    pub fn new(graph: Graph) -> Self {
        let mut last_use: Vec<usize> = (0..graph.nodes.len()).collect();
        for (i, node) in graph.nodes.iter().enumerate() {
            for &v in &node.inputs {
                last_use[v] = last_use[v].max(i);
            }
        }
        Self {
            graph,
            last_use,
            step_seed: Cell::new(0),
            frozen_norms: Default::default(),
        }
    }

    /// Keeps the BatchNorm layers whose weight is in `frozen` in eval mode (running statistics
    /// used and not updated), as frozen layers are in PyTorch fine-tuning recipes.
    pub fn freeze_norms(&mut self, frozen: &std::collections::BTreeSet<String>) {
        self.frozen_norms = self
            .graph
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::BatchNorm2d { weight, .. } if frozen.contains(weight) => Some(weight.clone()),
                _ => None,
            })
            .collect();
    }

    /// Seeds the stochastic parts (drop path) of the next training forward pass; masks then
    /// depend only on this seed and the node, so a resumed run draws the same masks.
    pub fn set_step_seed(&self, seed: u64) {
        self.step_seed.set(seed);
    }

    /// Checks the input batch against the graph: rank 4, channels, and (for position
    /// embeddings) spatial size.
    pub fn check_input(&self, x: &Tensor) -> Result<(), TrainError> {
        let s = x.size();
        let g = &self.graph;
        let fixed_size = g.nodes.iter().any(|n| matches!(n.op, Op::AddParam { .. }));
        let ok = s.len() == 4
            && s[1] as usize == g.in_chans
            && (!fixed_size
                || (s[2] as usize == g.input_size[0] && s[3] as usize == g.input_size[1]));
        if ok {
            g.infer_shapes(s[0] as usize, s[2] as usize, s[3] as usize)
                .map(|_| ())
                .map_err(TrainError::from)
        } else {
            Err(TrainError::Input(format!(
                "{} expects input [N, {}, {}, {}]{}, found {:?}",
                g.preset,
                g.in_chans,
                g.input_size[0],
                g.input_size[1],
                if fixed_size { "" } else { " (any H, W)" },
                s
            )))
        }
    }

    /// Runs the graph. `train` switches BatchNorm to batch statistics (updating running
    /// stats) and enables drop path. `taps` names the feature maps to return. Every libtorch
    /// call is the fallible one: a failure (e.g. device out of memory) is an error, not a panic.
    pub fn forward(
        &self,
        params: &Params,
        x: &Tensor,
        train: bool,
        taps: &[&str],
    ) -> Result<Forward, TrainError> {
        self.check_input(x)?;
        let wanted = self.resolve_taps(taps)?;
        let mut values: Vec<Option<Tensor>> = Vec::with_capacity(self.graph.nodes.len());
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let out = self.run_node(i, node, &values, params, x, train)?;
            values.push(Some(out));
            self.free_dead_inputs(i, node, &wanted, &mut values);
        }
        let taps = wanted
            .into_iter()
            .map(|(name, v)| (name, values[v].as_ref().unwrap().shallow_clone()))
            .collect();
        let logits = values[self.graph.output].take().unwrap();
        Ok(Forward { logits, taps })
    }

    /// The value of each tap asked for, or an error listing the graph's taps.
    fn resolve_taps(&self, taps: &[&str]) -> Result<Vec<(String, ValueId)>, TrainError> {
        let g = &self.graph;
        taps.iter()
            .map(|t| {
                g.taps.get(*t).map(|&v| (t.to_string(), v)).ok_or_else(|| {
                    TrainError::Input(format!(
                        "model {} has no tap `{t}`; taps: {:?}",
                        g.preset,
                        g.taps.keys().collect::<Vec<_>>()
                    ))
                })
            })
            .collect()
    }

    /// Drops the inputs node `i` was the last reader of, unless they are the output or a tap.
    fn free_dead_inputs(
        &self,
        i: usize,
        node: &Node,
        wanted: &[(String, ValueId)],
        values: &mut [Option<Tensor>],
    ) {
        let keep = |v: ValueId| v == self.graph.output || wanted.iter().any(|(_, w)| *w == v);
        for &v in &node.inputs {
            if self.last_use[v] == i && !keep(v) {
                values[v] = None;
            }
        }
    }

    /// One node's output from the values computed so far; node `i` of the graph.
    fn run_node(
        &self,
        i: usize,
        node: &Node,
        values: &[Option<Tensor>],
        params: &Params,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor, TrainError> {
        let input = |k: usize| {
            values[node.inputs[k]]
                .as_ref()
                .expect("value freed before last use")
        };
        let p = |name: &str| params.get(name);
        Ok(match &node.op {
            Op::Input => x.shallow_clone(),
            Op::Conv2d {
                weight,
                bias,
                stride,
                padding,
                groups,
            } => conv2d(
                input(0),
                p(weight),
                bias.as_deref().map(p),
                *stride,
                *padding,
                *groups,
            )?,
            Op::BatchNorm2d {
                weight,
                bias,
                running_mean,
                running_var,
                num_batches_tracked,
                eps,
                momentum,
            } => {
                // Frozen layers stay in eval mode while the rest trains.
                let train = train && !self.frozen_norms.contains(weight);
                if train {
                    count_batch(p(num_batches_tracked))?;
                }
                let stats = [weight, bias, running_mean, running_var].map(|n| p(n));
                batch_norm(input(0), stats, *eps, *momentum, train)?
            }
            Op::LayerNorm {
                weight,
                bias,
                eps,
                axis,
            } => layer_norm(input(0), p(weight), p(bias), *eps, *axis)?,
            Op::Linear { weight, bias } => input(0).f_linear(p(weight), bias.as_deref().map(p))?,
            Op::Gelu => input(0).f_gelu("none")?,
            Op::Relu => input(0).f_relu()?,
            Op::Add => input(0).f_add(input(1))?,
            Op::Scale { param } => input(0).f_mul(p(param))?,
            Op::Permute { perm } => {
                input(0).f_permute(perm.iter().map(|&d| d as i64).collect::<Vec<_>>())?
            }
            Op::DropPath { rate } => self.drop_path(input(0), *rate, i, train)?,
            Op::GlobalAvgPool => input(0).f_mean_dim([-2i64, -1].as_slice(), false, Kind::Float)?,
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
            } => max_pool2d(input(0), *kernel, *stride, *padding)?,
            Op::PatchTokens => input(0).f_flatten(2, -1)?.f_transpose(1, 2)?,
            Op::PrependToken { param } => prepend_token(input(0), p(param))?,
            Op::AddParam { param } => input(0).f_add(p(param))?,
            Op::SelfAttention {
                qkv_weight,
                qkv_bias,
                proj_weight,
                proj_bias,
                heads,
            } => self_attention(
                input(0),
                (p(qkv_weight), qkv_bias.as_deref().map(p)),
                (p(proj_weight), proj_bias.as_deref().map(p)),
                *heads,
            )?,
            Op::SelectToken { index } => input(0).f_select(1, *index as i64)?,
            Op::TokensToMap {
                skip,
                height,
                width,
            } => tokens_to_map(input(0), *skip, *height, *width)?,
        })
    }

    /// Stochastic depth: each sample's branch is kept with probability `1 - rate` (and scaled
    /// up), from a mask seeded by the step seed and node `i` so a resumed run draws the same.
    fn drop_path(&self, x: &Tensor, rate: f64, i: usize, train: bool) -> Result<Tensor, TchError> {
        if !(train && rate > 0.0) {
            return Ok(x.shallow_clone());
        }
        let keep_prob = 1.0 - rate;
        let mut shape = vec![x.size()[0]];
        shape.extend(std::iter::repeat_n(1, x.dim() - 1));
        let mut rng = StdRng::seed_from_u64(
            self.step_seed.get() ^ (i as u64).wrapping_mul(0x9e3779b97f4a7c15),
        );
        let keep: Vec<f32> = (0..shape[0])
            .map(|_| {
                if rng.gen::<f64>() < keep_prob {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::f_from_slice(&keep)?
            .f_reshape(&shape[..])?
            .f_to_device(x.device())?
            .f_to_kind(x.kind())?;
        x.f_mul(&mask)?.f_div_scalar(keep_prob)
    }
}

fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: [usize; 2],
    padding: [usize; 2],
    groups: usize,
) -> Result<Tensor, TchError> {
    x.f_conv2d(
        weight,
        bias,
        [stride[0] as i64, stride[1] as i64],
        [padding[0] as i64, padding[1] as i64],
        [1, 1],
        groups as i64,
    )
}

/// Counts one training batch in a BatchNorm's `num_batches_tracked`, as PyTorch does.
fn count_batch(num_batches_tracked: &Tensor) -> Result<(), TchError> {
    tch::no_grad(|| {
        num_batches_tracked
            .shallow_clone()
            .f_add_scalar_(1)
            .map(drop)
    })
}

/// `stats` holds weight, bias, running mean and running variance, in that order.
fn batch_norm(
    x: &Tensor,
    stats: [&Tensor; 4],
    eps: f64,
    momentum: f64,
    train: bool,
) -> Result<Tensor, TchError> {
    let [weight, bias, running_mean, running_var] = stats;
    x.f_batch_norm(
        Some(weight),
        Some(bias),
        Some(running_mean),
        Some(running_var),
        train,
        momentum,
        eps,
        true,
    )
}

fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    axis: NormAxis,
) -> Result<Tensor, TchError> {
    match axis {
        NormAxis::Last => {
            let c = weight.size()[0];
            x.f_layer_norm([c], Some(weight), Some(bias), eps, true)
        }
        NormAxis::ChannelsFirst => {
            // Same arithmetic as the upstream channels-first LayerNorm.
            let u = x.f_mean_dim([1i64].as_slice(), true, Kind::Float)?;
            let d = x.f_sub(&u)?;
            let s = d
                .f_square()?
                .f_mean_dim([1i64].as_slice(), true, Kind::Float)?;
            let y = d.f_div(&s.f_add_scalar(eps)?.f_sqrt()?)?;
            y.f_mul(&weight.f_view([-1, 1, 1])?)?
                .f_add(&bias.f_view([-1, 1, 1])?)
        }
    }
}

fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor, TchError> {
    let (k, s, pd) = (kernel as i64, stride as i64, padding as i64);
    x.f_max_pool2d([k, k], [s, s], [pd, pd], [1, 1], false)
}

fn prepend_token(x: &Tensor, token: &Tensor) -> Result<Tensor, TchError> {
    let tok = token.f_expand([x.size()[0], -1, -1], false)?;
    Tensor::f_cat(&[tok, x.shallow_clone()], 1)
}

/// `qkv` and `proj` are (weight, bias) of the packed input projection and the output one.
fn self_attention(
    x: &Tensor,
    qkv: (&Tensor, Option<&Tensor>),
    proj: (&Tensor, Option<&Tensor>),
    heads: usize,
) -> Result<Tensor, TchError> {
    let s = x.size();
    let (n, l, d) = (s[0], s[1], s[2]);
    let h = heads as i64;
    let qkv = x
        .f_linear(qkv.0, qkv.1)?
        .f_reshape([n, l, 3, h, d / h])?
        .f_permute([2, 0, 3, 1, 4])?;
    let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
    let o = Tensor::f_scaled_dot_product_attention(
        &q,
        &k,
        &v,
        None::<Tensor>,
        0.0,
        false,
        None,
        false,
    )?;
    o.f_transpose(1, 2)?
        .f_reshape([n, l, d])?
        .f_linear(proj.0, proj.1)
}

fn tokens_to_map(x: &Tensor, skip: usize, height: usize, width: usize) -> Result<Tensor, TchError> {
    let (n, d) = (x.size()[0], x.size()[2]);
    x.f_narrow(1, skip as i64, (height * width) as i64)?
        .f_transpose(1, 2)?
        .f_reshape([n, d, height as i64, width as i64])
}
