//! Lowering of a [`Graph`] (after any deploy passes) to an ONNX model: one generic rule per op,
//! nothing per architecture. Nodes that do not reach `graph.output` are skipped.

use crate::proto::{attr, node, tensor_f, tensor_i64, value_info, Attr, Elem};
use crate::ExportError;
use lkd_models::checkpoint::StateDict;
use lkd_models::graph::{NormAxis, Op};
use lkd_models::Graph;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{GraphProto, ModelProto, NodeProto, TensorProto};
use std::collections::{BTreeMap, HashMap};

pub const INPUT_NAME: &str = "pixels";
pub const OUTPUT_NAME: &str = "logits";

/// How a channels-first LayerNorm (normalising dim 1 of NCHW) is written.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChannelsFirstNorm {
    /// Transpose → LayerNormalization(axis=-1) → Transpose: one fused LN kernel; measured
    /// fastest with the 1×1-conv form (convnext_tiny, ORT CPU, 1 thread: 131 vs 140 ms).
    #[default]
    Transpose,
    /// ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div over dim 1 (what torch.onnx.export writes).
    Reduce,
}

#[derive(Clone, Debug, Default)]
pub struct LowerOptions {
    pub fp16: bool,
    /// Fixed batch size; `None` writes a symbolic batch axis `N`.
    pub static_batch: Option<usize>,
    pub channels_first_norm: ChannelsFirstNorm,
    pub metadata: BTreeMap<String, String>,
}

/// Indices of nodes whose values reach `graph.output`.
pub fn live_nodes(graph: &Graph) -> Vec<bool> {
    let mut live = vec![false; graph.nodes.len()];
    live[graph.output] = true;
    for i in (0..graph.nodes.len()).rev() {
        if live[i] {
            for &v in &graph.nodes[i].inputs {
                live[v] = true;
            }
        }
    }
    live[0] = true;
    live
}

struct Lowerer<'a> {
    weights: &'a StateDict,
    elem: Elem,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    init_keys: HashMap<String, String>,
    counter: usize,
}

impl<'a> Lowerer<'a> {
    fn fresh(&mut self, base: &str, op: &str) -> String {
        self.counter += 1;
        format!("{base}/{op}_{}", self.counter)
    }

    fn emit(
        &mut self,
        op: &str,
        base: &str,
        inputs: &[&str],
        attrs: Vec<onnx_protobuf::AttributeProto>,
    ) -> String {
        let out = self.fresh(base, op);
        let name = out.clone();
        self.nodes.push(node(op, &name, inputs, &[&out], attrs));
        out
    }

    /// Adds parameter `name` as an initializer of shape `dims` (same element count), optionally
    /// transposed from `[a, b]` to `[b, a]`.
    fn param(
        &mut self,
        name: &str,
        dims: &[usize],
        transpose2d: bool,
    ) -> Result<String, ExportError> {
        let key = format!("{name}|{dims:?}|{transpose2d}");
        if let Some(n) = self.init_keys.get(&key) {
            return Ok(n.clone());
        }
        let t = self
            .weights
            .get(name)
            .ok_or_else(|| ExportError::MissingWeight(name.to_string()))?;
        let data = t.to_f32_vec();
        let numel: usize = dims.iter().product();
        if numel != data.len() {
            return Err(ExportError::Lowering(format!(
                "parameter {name} has {:?}, expected {numel} values for {dims:?}",
                t.shape
            )));
        }
        let data = if transpose2d {
            let (a, b) = (t.shape[0], t.shape[1]);
            let mut out = vec![0f32; data.len()];
            for i in 0..a {
                for j in 0..b {
                    out[j * a + i] = data[i * b + j];
                }
            }
            out
        } else {
            data
        };
        let iname = if self.init_keys.values().any(|v| v == name) {
            format!(
                "{name}{}",
                if transpose2d {
                    ".T".to_string()
                } else {
                    format!(".{}d", dims.len())
                }
            )
        } else {
            name.to_string()
        };
        self.inits.push(tensor_f(&iname, dims, &data, self.elem));
        self.init_keys.insert(key, iname.clone());
        Ok(iname)
    }

    fn const_f(&mut self, v: f32) -> String {
        let key = format!("const_f|{}", v.to_bits());
        if let Some(n) = self.init_keys.get(&key) {
            return n.clone();
        }
        let name = format!("const/f{}", self.init_keys.len());
        self.inits.push(tensor_f(&name, &[], &[v], self.elem));
        self.init_keys.insert(key, name.clone());
        name
    }

    fn const_i64(&mut self, v: &[i64]) -> String {
        let key = format!("const_i|{v:?}");
        if let Some(n) = self.init_keys.get(&key) {
            return n.clone();
        }
        let name = format!("const/i{}", self.init_keys.len());
        self.inits.push(tensor_i64(&name, &[v.len()], v));
        self.init_keys.insert(key, name.clone());
        name
    }

    fn scalar_i64(&mut self, v: i64) -> String {
        let key = format!("scalar_i|{v}");
        if let Some(n) = self.init_keys.get(&key) {
            return n.clone();
        }
        let name = format!("const/s{}", self.init_keys.len());
        self.inits.push(tensor_i64(&name, &[], &[v]));
        self.init_keys.insert(key, name.clone());
        name
    }

    fn transpose(&mut self, x: &str, base: &str, perm: &[usize]) -> String {
        self.emit(
            "Transpose",
            base,
            &[x],
            vec![attr(
                "perm",
                Attr::Ints(perm.iter().map(|&p| p as i64).collect()),
            )],
        )
    }

    /// `x @ W^T + b` over the last dim: Gemm for 2-D inputs, MatMul + Add otherwise.
    fn linear(
        &mut self,
        x: &str,
        base: &str,
        weight: &str,
        bias: Option<&str>,
        rank: usize,
    ) -> Result<String, ExportError> {
        let shape = self
            .weights
            .get(weight)
            .ok_or_else(|| ExportError::MissingWeight(weight.to_string()))?
            .shape
            .clone();
        let (dout, din) = (shape[0], shape[1]);
        if rank == 2 {
            let w = self.param(weight, &[dout, din], false)?;
            let mut ins = vec![x.to_string(), w];
            if let Some(b) = bias {
                ins.push(self.param(b, &[dout], false)?);
            }
            let ins: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
            return Ok(self.emit("Gemm", base, &ins, vec![attr("transB", Attr::Int(1))]));
        }
        let wt = self.param(weight, &[din, dout], true)?;
        let y = self.emit("MatMul", base, &[x, &wt], vec![]);
        Ok(match bias {
            Some(b) => {
                let b = self.param(b, &[dout], false)?;
                self.emit("Add", base, &[&y, &b], vec![])
            }
            None => y,
        })
    }

    fn layer_norm_last(
        &mut self,
        x: &str,
        base: &str,
        weight: &str,
        bias: &str,
        eps: f64,
        ch: usize,
    ) -> Result<String, ExportError> {
        let w = self.param(weight, &[ch], false)?;
        let b = self.param(bias, &[ch], false)?;
        Ok(self.emit(
            "LayerNormalization",
            base,
            &[x, &w, &b],
            vec![
                attr("axis", Attr::Int(-1)),
                attr("epsilon", Attr::Float(eps as f32)),
            ],
        ))
    }
}

/// Lowers the live part of `graph` with `weights` into an ONNX model (IR 8, opset 17).
pub fn lower(
    graph: &Graph,
    weights: &StateDict,
    opts: &LowerOptions,
) -> Result<ModelProto, ExportError> {
    let [h, w] = graph.input_size;
    let shapes = graph.infer_shapes(1, h, w)?;
    let live = live_nodes(graph);
    let elem = if opts.fp16 { Elem::F16 } else { Elem::F32 };
    let mut l = Lowerer {
        weights,
        elem,
        nodes: vec![],
        inits: vec![],
        init_keys: HashMap::new(),
        counter: 0,
    };
    let mut values: Vec<String> = Vec::with_capacity(graph.nodes.len());
    for (i, n) in graph.nodes.iter().enumerate() {
        if !live[i] {
            values.push(String::new());
            continue;
        }
        let base = if n.name.is_empty() {
            format!("n{i}")
        } else {
            n.name.clone()
        };
        let x = n
            .inputs
            .first()
            .map(|&v| values[v].clone())
            .unwrap_or_default();
        let in_shape = n
            .inputs
            .first()
            .map(|&v| shapes[v].clone())
            .unwrap_or_default();
        let out = match &n.op {
            Op::Input => {
                if opts.fp16 {
                    l.emit(
                        "Cast",
                        "input",
                        &[INPUT_NAME],
                        vec![attr("to", Attr::Int(DataType::FLOAT16 as i64))],
                    )
                } else {
                    INPUT_NAME.to_string()
                }
            }
            Op::Conv2d {
                weight,
                bias,
                stride,
                padding,
                groups,
            } => {
                let ws = weights
                    .get(weight)
                    .ok_or_else(|| ExportError::MissingWeight(weight.clone()))?
                    .shape
                    .clone();
                let wn = l.param(weight, &ws, false)?;
                let mut ins = vec![x.clone(), wn];
                if let Some(b) = bias {
                    ins.push(l.param(b, &[ws[0]], false)?);
                }
                let ins: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
                let (ph, pw) = (padding[0] as i64, padding[1] as i64);
                l.emit(
                    "Conv",
                    &base,
                    &ins,
                    vec![
                        attr("kernel_shape", Attr::Ints(vec![ws[2] as i64, ws[3] as i64])),
                        attr(
                            "strides",
                            Attr::Ints(stride.iter().map(|&s| s as i64).collect()),
                        ),
                        attr("pads", Attr::Ints(vec![ph, pw, ph, pw])),
                        attr("group", Attr::Int(*groups as i64)),
                    ],
                )
            }
            Op::BatchNorm2d {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
                ..
            } => {
                let c = in_shape[1];
                let ins: Vec<String> = [weight, bias, running_mean, running_var]
                    .iter()
                    .map(|p| l.param(p, &[c], false))
                    .collect::<Result<_, _>>()?;
                l.emit(
                    "BatchNormalization",
                    &base,
                    &[&x, &ins[0], &ins[1], &ins[2], &ins[3]],
                    vec![attr("epsilon", Attr::Float(*eps as f32))],
                )
            }
            Op::LayerNorm {
                weight,
                bias,
                eps,
                axis: NormAxis::Last,
            } => l.layer_norm_last(&x, &base, weight, bias, *eps, *in_shape.last().unwrap())?,
            Op::LayerNorm {
                weight,
                bias,
                eps,
                axis: NormAxis::ChannelsFirst,
            } => {
                let c = in_shape[1];
                match opts.channels_first_norm {
                    ChannelsFirstNorm::Transpose => {
                        let t = l.transpose(&x, &base, &[0, 2, 3, 1]);
                        let y = l.layer_norm_last(&t, &base, weight, bias, *eps, c)?;
                        l.transpose(&y, &base, &[0, 3, 1, 2])
                    }
                    ChannelsFirstNorm::Reduce => {
                        let axes = vec![
                            attr("axes", Attr::Ints(vec![1])),
                            attr("keepdims", Attr::Int(1)),
                        ];
                        let mean = l.emit("ReduceMean", &base, &[&x], axes);
                        let d = l.emit("Sub", &base, &[&x, &mean], vec![]);
                        let sq = l.emit("Mul", &base, &[&d, &d], vec![]);
                        let axes = vec![
                            attr("axes", Attr::Ints(vec![1])),
                            attr("keepdims", Attr::Int(1)),
                        ];
                        let var = l.emit("ReduceMean", &base, &[&sq], axes);
                        let e = l.const_f(*eps as f32);
                        let ve = l.emit("Add", &base, &[&var, &e], vec![]);
                        let sd = l.emit("Sqrt", &base, &[&ve], vec![]);
                        let y = l.emit("Div", &base, &[&d, &sd], vec![]);
                        let wn = l.param(weight, &[c, 1, 1], false)?;
                        let bn = l.param(bias, &[c, 1, 1], false)?;
                        let y = l.emit("Mul", &base, &[&y, &wn], vec![]);
                        l.emit("Add", &base, &[&y, &bn], vec![])
                    }
                }
            }
            Op::Linear { weight, bias } => {
                l.linear(&x, &base, weight, bias.as_deref(), in_shape.len())?
            }
            Op::Gelu => {
                // x * 0.5 * (1 + erf(x / sqrt 2)): the pattern ORT fuses into one Gelu kernel.
                let s2 = l.const_f(std::f32::consts::SQRT_2);
                let one = l.const_f(1.0);
                let half = l.const_f(0.5);
                let d = l.emit("Div", &base, &[&x, &s2], vec![]);
                let e = l.emit("Erf", &base, &[&d], vec![]);
                let a = l.emit("Add", &base, &[&e, &one], vec![]);
                let m = l.emit("Mul", &base, &[&x, &a], vec![]);
                l.emit("Mul", &base, &[&m, &half], vec![])
            }
            Op::Relu => l.emit("Relu", &base, &[&x], vec![]),
            Op::Add => {
                let y = values[n.inputs[1]].clone();
                l.emit("Add", &base, &[&x, &y], vec![])
            }
            Op::Scale { param } => {
                let c = *in_shape.last().unwrap();
                let p = l.param(param, &[c], false)?;
                l.emit("Mul", &base, &[&x, &p], vec![])
            }
            Op::Permute { perm } => l.transpose(&x, &base, perm),
            Op::DropPath { .. } => x.clone(),
            Op::GlobalAvgPool => {
                let p = l.emit("GlobalAveragePool", &base, &[&x], vec![]);
                l.emit("Flatten", &base, &[&p], vec![attr("axis", Attr::Int(1))])
            }
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
            } => {
                let (k, s, p) = (*kernel as i64, *stride as i64, *padding as i64);
                l.emit(
                    "MaxPool",
                    &base,
                    &[&x],
                    vec![
                        attr("kernel_shape", Attr::Ints(vec![k, k])),
                        attr("strides", Attr::Ints(vec![s, s])),
                        attr("pads", Attr::Ints(vec![p, p, p, p])),
                    ],
                )
            }
            Op::PatchTokens => {
                let shape = l.const_i64(&[0, in_shape[1] as i64, -1]);
                let r = l.emit("Reshape", &base, &[&x, &shape], vec![]);
                l.transpose(&r, &base, &[0, 2, 1])
            }
            Op::PrependToken { param } => {
                let d = *in_shape.last().unwrap();
                let tok = l.param(param, &[1, 1, d], false)?;
                let nb = l.emit(
                    "Shape",
                    &base,
                    &[&x],
                    vec![attr("start", Attr::Int(0)), attr("end", Attr::Int(1))],
                );
                let rest = l.const_i64(&[1, d as i64]);
                let target = l.emit(
                    "Concat",
                    &base,
                    &[&nb, &rest],
                    vec![attr("axis", Attr::Int(0))],
                );
                let toks = l.emit("Expand", &base, &[&tok, &target], vec![]);
                l.emit(
                    "Concat",
                    &base,
                    &[&toks, &x],
                    vec![attr("axis", Attr::Int(1))],
                )
            }
            Op::AddParam { param } => {
                let ps = weights
                    .get(param)
                    .ok_or_else(|| ExportError::MissingWeight(param.clone()))?
                    .shape
                    .clone();
                let p = l.param(param, &ps, false)?;
                l.emit("Add", &base, &[&x, &p], vec![])
            }
            Op::SelfAttention {
                qkv_weight,
                qkv_bias,
                proj_weight,
                proj_bias,
                heads,
            } => {
                let (len, d) = (in_shape[1], in_shape[2]);
                let dh = d / heads;
                let qkv = l.linear(&x, &base, qkv_weight, qkv_bias.as_deref(), 3)?;
                let shape = l.const_i64(&[0, len as i64, 3, *heads as i64, dh as i64]);
                let r = l.emit("Reshape", &base, &[&qkv, &shape], vec![]);
                // [3, N, heads, L, dh]
                let t = l.transpose(&r, &base, &[2, 0, 3, 1, 4]);
                let pick = |l: &mut Lowerer, k: i64| {
                    let idx = l.scalar_i64(k);
                    l.emit(
                        "Gather",
                        &base,
                        &[&t, &idx],
                        vec![attr("axis", Attr::Int(0))],
                    )
                };
                let q = pick(&mut l, 0);
                let k = pick(&mut l, 1);
                let v = pick(&mut l, 2);
                let scale = l.const_f((dh as f32).powf(-0.5));
                let q = l.emit("Mul", &base, &[&q, &scale], vec![]);
                let kt = l.transpose(&k, &base, &[0, 1, 3, 2]);
                let s = l.emit("MatMul", &base, &[&q, &kt], vec![]);
                let a = l.emit("Softmax", &base, &[&s], vec![attr("axis", Attr::Int(-1))]);
                let o = l.emit("MatMul", &base, &[&a, &v], vec![]);
                let o = l.transpose(&o, &base, &[0, 2, 1, 3]);
                let shape = l.const_i64(&[0, len as i64, d as i64]);
                let o = l.emit("Reshape", &base, &[&o, &shape], vec![]);
                l.linear(&o, &base, proj_weight, proj_bias.as_deref(), 3)?
            }
            Op::SelectToken { index } => {
                let idx = l.scalar_i64(*index as i64);
                l.emit(
                    "Gather",
                    &base,
                    &[&x, &idx],
                    vec![attr("axis", Attr::Int(1))],
                )
            }
            Op::TokensToMap {
                skip,
                height,
                width,
            } => {
                let (starts, ends, axes) = (
                    l.const_i64(&[*skip as i64]),
                    l.const_i64(&[i64::MAX]),
                    l.const_i64(&[1]),
                );
                let s = l.emit("Slice", &base, &[&x, &starts, &ends, &axes], vec![]);
                let t = l.transpose(&s, &base, &[0, 2, 1]);
                let shape = l.const_i64(&[0, in_shape[2] as i64, *height as i64, *width as i64]);
                l.emit("Reshape", &base, &[&t, &shape], vec![])
            }
        };
        values.push(out);
    }

    // The graph output gets its public name (through a Cast back to f32 under fp16).
    let last = values[graph.output].clone();
    let out_to = |l: &mut Lowerer, op: &str, attrs| {
        l.nodes
            .push(node(op, "output", &[&last], &[OUTPUT_NAME], attrs));
    };
    if opts.fp16 {
        out_to(
            &mut l,
            "Cast",
            vec![attr("to", Attr::Int(DataType::FLOAT as i64))],
        );
    } else {
        out_to(&mut l, "Identity", vec![]);
    }
    // Rename the producer's output instead of keeping an Identity when possible.
    if !opts.fp16 {
        if let Some(pos) = l
            .nodes
            .iter()
            .position(|nd| nd.output.first() == Some(&last))
        {
            l.nodes.pop();
            l.nodes[pos].output[0] = OUTPUT_NAME.to_string();
            for nd in &mut l.nodes {
                for i in nd.input.iter_mut() {
                    if *i == last {
                        *i = OUTPUT_NAME.to_string();
                    }
                }
            }
        }
    }

    let batch = match opts.static_batch {
        Some(b) => Ok(b),
        None => Err("N"),
    };
    let f32t = DataType::FLOAT as i32;
    let input = value_info(INPUT_NAME, f32t, &[batch, Ok(graph.in_chans), Ok(h), Ok(w)]);
    let out_shape = &shapes[graph.output];
    let mut odims = vec![batch];
    odims.extend(out_shape[1..].iter().map(|&d| Ok(d)));
    let output = value_info(OUTPUT_NAME, f32t, &odims);
    let g = GraphProto {
        name: format!("{}_{}", graph.arch, graph.preset),
        node: l.nodes,
        initializer: l.inits,
        input: vec![input],
        output: vec![output],
        ..Default::default()
    };
    Ok(crate::proto::model(g, &opts.metadata))
}
