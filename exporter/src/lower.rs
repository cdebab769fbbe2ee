//! Lowering of a [`Graph`] (after any deploy passes) to an ONNX model: one generic rule per op,
//! nothing per architecture. Nodes that do not reach `graph.output` are skipped.

use crate::proto::{attr, node, tensor_f, tensor_i64, value_info, Attr, Elem};
use crate::ExportError;
use lkd_models::checkpoint::StateDict;
use lkd_models::graph::{Node, NormAxis, Op};
use lkd_models::Graph;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
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
    opts: &'a LowerOptions,
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
        attrs: Vec<AttributeProto>,
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

    /// The stored shape of weight `name`.
    fn weight_shape(&self, name: &str) -> Result<Vec<usize>, ExportError> {
        let t = self
            .weights
            .get(name)
            .ok_or_else(|| ExportError::MissingWeight(name.to_string()))?;
        Ok(t.shape.clone())
    }

    /// `[x, weight, bias?]` for a Conv or Gemm; the bias has one value per output channel (dim 0).
    fn with_weight_and_bias(
        &mut self,
        x: &str,
        weight: &str,
        weight_dims: &[usize],
        bias: Option<&str>,
    ) -> Result<Vec<String>, ExportError> {
        let mut ins = vec![x.to_string(), self.param(weight, weight_dims, false)?];
        if let Some(b) = bias {
            ins.push(self.param(b, &[weight_dims[0]], false)?);
        }
        Ok(ins)
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
        let shape = self.weight_shape(weight)?;
        let (dout, din) = (shape[0], shape[1]);
        if rank == 2 {
            let ins = self.with_weight_and_bias(x, weight, &[dout, din], bias)?;
            let trans_b = vec![attr("transB", Attr::Int(1))];
            return Ok(self.emit("Gemm", base, &as_strs(&ins), trans_b));
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
    let mut l = Lowerer::new(weights, opts);
    let values = l.lower_live_nodes(graph, &shapes)?;
    l.name_output(&values[graph.output]);
    let (input, output) = signature(graph, &shapes[graph.output], opts.static_batch);
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

/// The model's f32 input and output declarations, with a fixed or symbolic (`N`) batch axis.
fn signature(
    graph: &Graph,
    out_shape: &[usize],
    static_batch: Option<usize>,
) -> (ValueInfoProto, ValueInfoProto) {
    let batch = match static_batch {
        Some(b) => Ok(b),
        None => Err("N"),
    };
    let [h, w] = graph.input_size;
    let f32t = DataType::FLOAT as i32;
    let input = value_info(INPUT_NAME, f32t, &[batch, Ok(graph.in_chans), Ok(h), Ok(w)]);
    let mut odims = vec![batch];
    odims.extend(out_shape[1..].iter().map(|&d| Ok(d)));
    (input, value_info(OUTPUT_NAME, f32t, &odims))
}

/// The steps of [`lower`], then the ops too long to lower inline.
impl<'a> Lowerer<'a> {
    /// An empty lowering; fp16 stores every initializer as f16.
    fn new(weights: &'a StateDict, opts: &'a LowerOptions) -> Self {
        Lowerer {
            weights,
            opts,
            elem: if opts.fp16 { Elem::F16 } else { Elem::F32 },
            nodes: vec![],
            inits: vec![],
            init_keys: HashMap::new(),
            counter: 0,
        }
    }

    /// Lowers the live nodes in graph order; returns each node's value name (empty if dead).
    fn lower_live_nodes(
        &mut self,
        graph: &Graph,
        shapes: &[Vec<usize>],
    ) -> Result<Vec<String>, ExportError> {
        let live = live_nodes(graph);
        let mut values: Vec<String> = Vec::with_capacity(graph.nodes.len());
        for (i, n) in graph.nodes.iter().enumerate() {
            let out = if live[i] {
                self.lower_node(i, n, &values, shapes)?
            } else {
                String::new()
            };
            values.push(out);
        }
        Ok(values)
    }

    /// Emits node `i` (names prefixed by its module path, or `n{i}`); returns its value name.
    fn lower_node(
        &mut self,
        i: usize,
        n: &Node,
        values: &[String],
        shapes: &[Vec<usize>],
    ) -> Result<String, ExportError> {
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
        let (x, base) = (x.as_str(), base.as_str());
        Ok(match &n.op {
            Op::Input => self.input(),
            Op::Conv2d {
                weight,
                bias,
                stride,
                padding,
                groups,
            } => {
                let ws = self.weight_shape(weight)?;
                let ins = self.with_weight_and_bias(x, weight, &ws, bias.as_deref())?;
                let attrs = conv_attrs(&ws, stride, padding, *groups);
                self.emit("Conv", base, &as_strs(&ins), attrs)
            }
            Op::BatchNorm2d {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
                ..
            } => {
                let params = [weight, bias, running_mean, running_var];
                self.batch_norm(x, base, params.map(String::as_str), *eps, in_shape[1])?
            }
            Op::LayerNorm {
                weight,
                bias,
                eps,
                axis: NormAxis::Last,
            } => self.layer_norm_last(x, base, weight, bias, *eps, *in_shape.last().unwrap())?,
            Op::LayerNorm {
                weight,
                bias,
                eps,
                axis: NormAxis::ChannelsFirst,
            } => self.layer_norm_channels_first(x, base, weight, bias, *eps, in_shape[1])?,
            Op::Linear { weight, bias } => {
                self.linear(x, base, weight, bias.as_deref(), in_shape.len())?
            }
            Op::Gelu => self.gelu(x, base),
            Op::Relu => self.emit("Relu", base, &[x], vec![]),
            Op::Add => self.emit("Add", base, &[x, &values[n.inputs[1]]], vec![]),
            Op::Scale { param } => {
                let p = self.param(param, &[*in_shape.last().unwrap()], false)?;
                self.emit("Mul", base, &[x, &p], vec![])
            }
            Op::Permute { perm } => self.transpose(x, base, perm),
            Op::DropPath { .. } => x.to_string(),
            Op::GlobalAvgPool => self.global_avg_pool(x, base),
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
            } => self.max_pool(x, base, *kernel, *stride, *padding),
            Op::PatchTokens => self.patch_tokens(x, base, in_shape[1]),
            Op::PrependToken { param } => {
                self.prepend_token(x, base, param, *in_shape.last().unwrap())?
            }
            Op::AddParam { param } => {
                let p = self.param(param, &self.weight_shape(param)?, false)?;
                self.emit("Add", base, &[x, &p], vec![])
            }
            Op::SelfAttention {
                qkv_weight,
                qkv_bias,
                proj_weight,
                proj_bias,
                heads,
            } => {
                let qkv = self.linear(x, base, qkv_weight, qkv_bias.as_deref(), 3)?;
                let o = self.multi_head_attention(&qkv, base, in_shape[1], in_shape[2], *heads);
                self.linear(&o, base, proj_weight, proj_bias.as_deref(), 3)?
            }
            Op::SelectToken { index } => self.gather(x, base, *index as i64, 1),
            Op::TokensToMap {
                skip,
                height,
                width,
            } => self.tokens_to_map(x, base, *skip, in_shape[2], *height, *width),
        })
    }

    /// Gives the graph output its public name: through a Cast back to f32 under fp16, else by
    /// renaming its producer's output (an Identity only when no node produces it).
    fn name_output(&mut self, last: &str) {
        let to_output = |op: &str, attrs| node(op, "output", &[last], &[OUTPUT_NAME], attrs);
        if self.opts.fp16 {
            let to_f32 = attr("to", Attr::Int(DataType::FLOAT as i64));
            self.nodes.push(to_output("Cast", vec![to_f32]));
        } else if let Some(pos) = self
            .nodes
            .iter()
            .position(|nd| nd.output.first().map(String::as_str) == Some(last))
        {
            self.rename_value(pos, last, OUTPUT_NAME);
        } else {
            self.nodes.push(to_output("Identity", vec![]));
        }
    }

    /// Renames value `from`, the first output of node `producer`, to `to` everywhere.
    fn rename_value(&mut self, producer: usize, from: &str, to: &str) {
        self.nodes[producer].output[0] = to.to_string();
        for nd in &mut self.nodes {
            for i in nd.input.iter_mut() {
                if *i == from {
                    *i = to.to_string();
                }
            }
        }
    }

    /// The image input, cast to f16 under fp16 (the model's declared input stays f32).
    fn input(&mut self) -> String {
        if self.opts.fp16 {
            self.emit(
                "Cast",
                "input",
                &[INPUT_NAME],
                vec![attr("to", Attr::Int(DataType::FLOAT16 as i64))],
            )
        } else {
            INPUT_NAME.to_string()
        }
    }

    /// Inference BatchNorm over dim 1 with `[weight, bias, mean, var]`, each of `ch` values.
    fn batch_norm(
        &mut self,
        x: &str,
        base: &str,
        [weight, bias, mean, var]: [&str; 4],
        eps: f64,
        ch: usize,
    ) -> Result<String, ExportError> {
        let ins: Vec<String> = [weight, bias, mean, var]
            .iter()
            .map(|p| self.param(p, &[ch], false))
            .collect::<Result<_, _>>()?;
        Ok(self.emit(
            "BatchNormalization",
            base,
            &[x, &ins[0], &ins[1], &ins[2], &ins[3]],
            vec![attr("epsilon", Attr::Float(eps as f32))],
        ))
    }

    /// LayerNorm over dim 1 of NCHW, in the form `opts.channels_first_norm` picks.
    fn layer_norm_channels_first(
        &mut self,
        x: &str,
        base: &str,
        weight: &str,
        bias: &str,
        eps: f64,
        ch: usize,
    ) -> Result<String, ExportError> {
        match self.opts.channels_first_norm {
            ChannelsFirstNorm::Transpose => {
                let t = self.transpose(x, base, &[0, 2, 3, 1]);
                let y = self.layer_norm_last(&t, base, weight, bias, eps, ch)?;
                Ok(self.transpose(&y, base, &[0, 3, 1, 2]))
            }
            ChannelsFirstNorm::Reduce => self.layer_norm_reduce(x, base, weight, bias, eps, ch),
        }
    }

    /// `(x - mean) / sqrt(var + eps) * w + b` over dim 1, one elementwise op at a time.
    fn layer_norm_reduce(
        &mut self,
        x: &str,
        base: &str,
        weight: &str,
        bias: &str,
        eps: f64,
        ch: usize,
    ) -> Result<String, ExportError> {
        let mean = self.mean_over_channels(x, base);
        let d = self.emit("Sub", base, &[x, &mean], vec![]);
        let sq = self.emit("Mul", base, &[&d, &d], vec![]);
        let var = self.mean_over_channels(&sq, base);
        let e = self.const_f(eps as f32);
        let ve = self.emit("Add", base, &[&var, &e], vec![]);
        let sd = self.emit("Sqrt", base, &[&ve], vec![]);
        let y = self.emit("Div", base, &[&d, &sd], vec![]);
        let wn = self.param(weight, &[ch, 1, 1], false)?;
        let bn = self.param(bias, &[ch, 1, 1], false)?;
        let y = self.emit("Mul", base, &[&y, &wn], vec![]);
        Ok(self.emit("Add", base, &[&y, &bn], vec![]))
    }

    /// ReduceMean over dim 1, keeping it.
    fn mean_over_channels(&mut self, x: &str, base: &str) -> String {
        let axes = vec![
            attr("axes", Attr::Ints(vec![1])),
            attr("keepdims", Attr::Int(1)),
        ];
        self.emit("ReduceMean", base, &[x], axes)
    }

    /// `x * 0.5 * (1 + erf(x / sqrt 2))`: the pattern ORT fuses into one Gelu kernel.
    fn gelu(&mut self, x: &str, base: &str) -> String {
        let s2 = self.const_f(std::f32::consts::SQRT_2);
        let one = self.const_f(1.0);
        let half = self.const_f(0.5);
        let d = self.emit("Div", base, &[x, &s2], vec![]);
        let e = self.emit("Erf", base, &[&d], vec![]);
        let a = self.emit("Add", base, &[&e, &one], vec![]);
        let m = self.emit("Mul", base, &[x, &a], vec![]);
        self.emit("Mul", base, &[&m, &half], vec![])
    }

    /// `[N, C, H, W]` → `[N, C]`.
    fn global_avg_pool(&mut self, x: &str, base: &str) -> String {
        let p = self.emit("GlobalAveragePool", base, &[x], vec![]);
        self.emit("Flatten", base, &[&p], vec![attr("axis", Attr::Int(1))])
    }

    /// Square MaxPool with the same kernel, stride and padding on both spatial dims.
    fn max_pool(
        &mut self,
        x: &str,
        base: &str,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> String {
        let (k, s, p) = (kernel as i64, stride as i64, padding as i64);
        self.emit(
            "MaxPool",
            base,
            &[x],
            vec![
                attr("kernel_shape", Attr::Ints(vec![k, k])),
                attr("strides", Attr::Ints(vec![s, s])),
                attr("pads", Attr::Ints(vec![p, p, p, p])),
            ],
        )
    }

    /// `[N, C, H, W]` → `[N, H*W, C]`.
    fn patch_tokens(&mut self, x: &str, base: &str, ch: usize) -> String {
        let shape = self.const_i64(&[0, ch as i64, -1]);
        let r = self.emit("Reshape", base, &[x, &shape], vec![]);
        self.transpose(&r, base, &[0, 2, 1])
    }

    /// Prepends the learned `[1, 1, D]` token `param`, expanded to the batch size at run time.
    fn prepend_token(
        &mut self,
        x: &str,
        base: &str,
        param: &str,
        d: usize,
    ) -> Result<String, ExportError> {
        let tok = self.param(param, &[1, 1, d], false)?;
        let nb = self.emit(
            "Shape",
            base,
            &[x],
            vec![attr("start", Attr::Int(0)), attr("end", Attr::Int(1))],
        );
        let rest = self.const_i64(&[1, d as i64]);
        let target = self.emit(
            "Concat",
            base,
            &[&nb, &rest],
            vec![attr("axis", Attr::Int(0))],
        );
        let toks = self.emit("Expand", base, &[&tok, &target], vec![]);
        Ok(self.emit(
            "Concat",
            base,
            &[&toks, x],
            vec![attr("axis", Attr::Int(1))],
        ))
    }

    /// Attention over packed `[N, L, 3·D]` qkv; returns `[N, L, D]` before the projection.
    fn multi_head_attention(
        &mut self,
        qkv: &str,
        base: &str,
        len: usize,
        d: usize,
        heads: usize,
    ) -> String {
        let dh = d / heads;
        let qkv = self.split_heads(qkv, base, len, heads, dh);
        let o = self.attend(&qkv, base, dh);
        self.merge_heads(&o, base, len, d)
    }

    /// Packed `[N, L, 3·D]` → q, k and v of `[N, heads, L, dh]` each.
    fn split_heads(
        &mut self,
        qkv: &str,
        base: &str,
        len: usize,
        heads: usize,
        dh: usize,
    ) -> [String; 3] {
        let shape = self.const_i64(&[0, len as i64, 3, heads as i64, dh as i64]);
        let r = self.emit("Reshape", base, &[qkv, &shape], vec![]);
        // [3, N, heads, L, dh]
        let t = self.transpose(&r, base, &[2, 0, 3, 1, 4]);
        [0, 1, 2].map(|k| self.gather(&t, base, k, 0))
    }

    /// `softmax(q·kᵀ / sqrt(dh))·v` per head.
    fn attend(&mut self, [q, k, v]: &[String; 3], base: &str, dh: usize) -> String {
        let scale = self.const_f((dh as f32).powf(-0.5));
        let q = self.emit("Mul", base, &[q, &scale], vec![]);
        let kt = self.transpose(k, base, &[0, 1, 3, 2]);
        let s = self.emit("MatMul", base, &[&q, &kt], vec![]);
        let a = self.emit("Softmax", base, &[&s], vec![attr("axis", Attr::Int(-1))]);
        self.emit("MatMul", base, &[&a, v], vec![])
    }

    /// `[N, heads, L, dh]` → `[N, L, D]`.
    fn merge_heads(&mut self, o: &str, base: &str, len: usize, d: usize) -> String {
        let o = self.transpose(o, base, &[0, 2, 1, 3]);
        let shape = self.const_i64(&[0, len as i64, d as i64]);
        self.emit("Reshape", base, &[&o, &shape], vec![])
    }

    /// Element `index` of `x` along `axis`, which is dropped.
    fn gather(&mut self, x: &str, base: &str, index: i64, axis: i64) -> String {
        let idx = self.scalar_i64(index);
        self.emit(
            "Gather",
            base,
            &[x, &idx],
            vec![attr("axis", Attr::Int(axis))],
        )
    }

    /// `[N, skip + H*W, D]` → `[N, D, H, W]`, dropping the first `skip` tokens.
    fn tokens_to_map(
        &mut self,
        x: &str,
        base: &str,
        skip: usize,
        d: usize,
        height: usize,
        width: usize,
    ) -> String {
        let (starts, ends, axes) = (
            self.const_i64(&[skip as i64]),
            self.const_i64(&[i64::MAX]),
            self.const_i64(&[1]),
        );
        let s = self.emit("Slice", base, &[x, &starts, &ends, &axes], vec![]);
        let t = self.transpose(&s, base, &[0, 2, 1]);
        let shape = self.const_i64(&[0, d as i64, height as i64, width as i64]);
        self.emit("Reshape", base, &[&t, &shape], vec![])
    }
}

/// Conv attributes; the kernel size comes from the weight `[out, in/groups, kh, kw]`.
fn conv_attrs(
    weight_shape: &[usize],
    stride: &[usize; 2],
    padding: &[usize; 2],
    groups: usize,
) -> Vec<AttributeProto> {
    let (ph, pw) = (padding[0] as i64, padding[1] as i64);
    vec![
        attr(
            "kernel_shape",
            Attr::Ints(vec![weight_shape[2] as i64, weight_shape[3] as i64]),
        ),
        attr(
            "strides",
            Attr::Ints(stride.iter().map(|&s| s as i64).collect()),
        ),
        attr("pads", Attr::Ints(vec![ph, pw, ph, pw])),
        attr("group", Attr::Int(groups as i64)),
    ]
}

/// Borrowed views, for [`Lowerer::emit`]'s inputs.
fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
