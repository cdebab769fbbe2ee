//! The QDQ rewrite: which nodes are quantizable, checks on the input model, and inserting
//! QuantizeLinear/DequantizeLinear pairs plus int8 weights and int32 biases.
//!
//! ORT fuses `DQ → Conv → Q` into QLinearConv only when every Conv input comes from a DQ (bias
//! as int32 with scale x_scale·w_scale) and the Conv output feeds only a Q, so outputs of
//! quantized layers are quantized too and every consumer reads the dequantized tensor.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{type_proto, GraphProto, ModelProto, NodeProto, TensorProto};

use super::activation::{act_qparams, ActType, Ranges};
use super::{QuantizeError, QuantizeOptions, Result};
use crate::proto::{attr, node, Attr};

/// A Conv, MatMul or Gemm whose weight is a float initializer.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Node name (or its output's name when the node has none).
    pub name: String,
    pub op: String,
    pub input: String,
    pub output: String,
    pub weight: String,
    pub bias: Option<String>,
    /// Output-channel axis of the weight: 0 for Conv and Gemm with transB, 1 for MatMul [K, N].
    pub axis: usize,
}

const QUANTIZED_OPS: [&str; 12] = [
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QGemm",
    "MatMulIntegerToFloat",
    "QLinearAdd",
    "QLinearMul",
    "MatMulNBits",
];

/// Refuses graphs that already hold quantization nodes or 8-bit initializers.
pub fn check_float(m: &ModelProto) -> Result<()> {
    if let Some(n) = m
        .graph
        .node
        .iter()
        .find(|n| QUANTIZED_OPS.contains(&n.op_type.as_str()))
    {
        return Err(QuantizeError::AlreadyQuantized(format!(
            "node `{}` is a {}",
            n.name, n.op_type
        )));
    }
    let eight_bit = [
        DataType::INT8 as i32,
        DataType::UINT8 as i32,
        DataType::INT4 as i32,
        DataType::UINT4 as i32,
    ];
    if let Some(t) = m
        .graph
        .initializer
        .iter()
        .find(|t| eight_bit.contains(&t.data_type))
    {
        return Err(QuantizeError::AlreadyQuantized(format!(
            "initializer `{}` holds 8-bit (or narrower) integers",
            t.name
        )));
    }
    if let Some(e) = m
        .metadata_props
        .iter()
        .find(|e| e.key.starts_with("lkd.quant."))
    {
        return Err(QuantizeError::AlreadyQuantized(format!(
            "metadata `{}` is set",
            e.key
        )));
    }
    Ok(())
}

fn dims(v: &onnx_protobuf::ValueInfoProto) -> Option<(i32, Vec<Option<i64>>)> {
    let Some(type_proto::Value::TensorType(t)) = &v.type_.value else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    let d = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(n)) => Some(*n),
            _ => None,
        })
        .collect();
    Some((t.elem_type, d))
}

/// One float NCHW input, one `[N, classes]` output.
pub fn check_classifier(m: &ModelProto) -> Result<()> {
    let inits: BTreeSet<&str> = m
        .graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let inputs: Vec<_> = m
        .graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(QuantizeError::NotClassifier(format!(
            "expected one image input, found {}",
            inputs.len()
        )));
    };
    match dims(input) {
        Some((t, d)) if t == DataType::FLOAT as i32 && d.len() == 4 => {}
        other => {
            return Err(QuantizeError::NotClassifier(format!(
                "expected a float32 NCHW input, found `{}` with {}",
                input.name,
                other.map_or("no shape".into(), |(t, d)| format!(
                    "type {t} and rank {}",
                    d.len()
                ))
            )))
        }
    }
    let [output] = m.graph.output.as_slice() else {
        return Err(QuantizeError::NotClassifier(format!(
            "expected one logits output, found {}",
            m.graph.output.len()
        )));
    };
    match dims(output) {
        Some((t, d)) if t == DataType::FLOAT as i32 && d.len() == 2 => Ok(()),
        other => Err(QuantizeError::NotClassifier(format!(
            "expected float32 logits [N, classes], found output `{}` with {}",
            output.name,
            other.map_or("no shape".into(), |(_, d)| format!(
                "shape [{}]",
                d.iter()
                    .map(|x| x.map_or("?".into(), |n| n.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        ))),
    }
}

/// f32 values of a float initializer.
pub fn floats(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::FLOAT as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        return Some(
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    Some(t.float_data.clone())
}

fn int_attr(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn float_attr(n: &NodeProto, name: &str) -> Option<f32> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// Quantizable layers in graph order.
pub fn find_layers(m: &ModelProto) -> Result<Vec<Layer>> {
    let inits: HashMap<&str, &TensorProto> = m
        .graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let float_init = |name: &str| {
        inits
            .get(name)
            .filter(|t| t.data_type == DataType::FLOAT as i32)
            .copied()
    };
    let mut layers = vec![];
    for n in &m.graph.node {
        if !n.domain.is_empty() || n.input.len() < 2 || inits.contains_key(n.input[0].as_str()) {
            continue;
        }
        let Some(w) = float_init(&n.input[1]) else {
            continue;
        };
        let bias = n.input.get(2).filter(|b| !b.is_empty()).cloned();
        let axis = match n.op_type.as_str() {
            "Conv" if w.dims.len() >= 3 => 0,
            "MatMul" if w.dims.len() == 2 => 1,
            "Gemm" if w.dims.len() == 2 => {
                let plain = int_attr(n, "transA").unwrap_or(0) == 0
                    && float_attr(n, "alpha").unwrap_or(1.0) == 1.0
                    && float_attr(n, "beta").unwrap_or(1.0) == 1.0;
                if !plain {
                    continue;
                }
                if int_attr(n, "transB").unwrap_or(0) == 1 {
                    0
                } else {
                    1
                }
            }
            _ => continue,
        };
        // A bias must be a 1-D float constant with one value per output channel.
        if let Some(b) = &bias {
            match float_init(b) {
                Some(t) if t.dims.len() == 1 && t.dims[0] == w.dims[axis] => {}
                _ => continue,
            }
        }
        let name = if n.name.is_empty() {
            n.output[0].clone()
        } else {
            n.name.clone()
        };
        layers.push(Layer {
            name,
            op: n.op_type.clone(),
            input: n.input[0].clone(),
            output: n.output[0].clone(),
            weight: n.input[1].clone(),
            bias,
            axis,
        });
    }
    Ok(layers)
}

/// Symmetric per-channel int8: (values, scale per channel).
pub fn quantize_weight(w: &[f32], dims: &[i64], axis: usize, qmax: f32) -> (Vec<i8>, Vec<f32>) {
    let d: Vec<usize> = dims.iter().map(|&x| x as usize).collect();
    let channels = d[axis];
    let inner: usize = d[axis + 1..].iter().product();
    let ch = |i: usize| (i / inner) % channels;
    let mut amax = vec![0f32; channels];
    for (i, &x) in w.iter().enumerate() {
        amax[ch(i)] = amax[ch(i)].max(x.abs());
    }
    // An all-zero channel quantizes to zeros with any positive scale.
    let scale: Vec<f32> = amax
        .iter()
        .map(|&a| if a > 0.0 { a / qmax } else { 1.0 })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &x)| (x / scale[ch(i)]).round().clamp(-qmax, qmax) as i8)
        .collect();
    (q, scale)
}

fn scalar(name: &str, data_type: i32, raw: Vec<u8>, dims: &[usize]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type,
        raw_data: raw,
        ..Default::default()
    }
}

fn zero_point(name: &str, act: ActType, zp: i32) -> TensorProto {
    let byte = match act {
        ActType::U8 => zp as u8,
        ActType::I8 => zp as i8 as u8,
    };
    scalar(name, act.data_type(), vec![byte], &[])
}

/// The QDQ model: every layer not in `float` gets int8 weights and quantized input/output.
pub fn rewrite(
    m: &ModelProto,
    layers: &[Layer],
    float: &BTreeSet<String>,
    ranges: &Ranges,
    opts: &QuantizeOptions,
) -> Result<ModelProto> {
    check_opset(m)?;
    let active: Vec<&Layer> = layers.iter().filter(|l| !float.contains(&l.name)).collect();
    let act_q = activation_params(m, &active, ranges, opts.activation_type)?;
    let mut q = Qdq::new(m, act_q, opts);
    let replaced = q.dequantized_weights(&active)?;
    let mut out = m.clone();
    let g = out.graph.mut_or_insert_default();
    q.quantize_inputs(&g.input);
    q.rewire(std::mem::take(&mut g.node), &replaced);
    q.install(g);
    Ok(out)
}

/// Per-channel DequantizeLinear (its `axis` attribute) needs opset 13.
fn check_opset(m: &ModelProto) -> Result<()> {
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    if opset < 13 {
        return Err(QuantizeError::Options(format!("per-channel DequantizeLinear needs opset 13 or later, the model has {opset}; re-export it")));
    }
    Ok(())
}

/// (scale, zero point) of every input and output of `layers`; graph outputs stay float.
fn activation_params(
    m: &ModelProto,
    layers: &[&Layer],
    ranges: &Ranges,
    act: ActType,
) -> Result<BTreeMap<String, (f32, i32)>> {
    let graph_outputs: BTreeSet<&str> = m.graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut act_q = BTreeMap::new();
    for l in layers {
        for t in [&l.input, &l.output] {
            if graph_outputs.contains(t.as_str()) {
                continue;
            }
            let &(lo, hi) = ranges.get(t).ok_or_else(|| {
                QuantizeError::Calibration(format!("no range was calibrated for tensor `{t}`"))
            })?;
            act_q.insert(t.clone(), act_qparams(lo, hi, act));
        }
    }
    Ok(act_q)
}

/// Int32 bias at scale `x_scale·w_scale` per channel, the form QLinearConv fusion needs.
fn quantize_bias(values: &[f32], scales: &[f32]) -> Vec<i32> {
    values
        .iter()
        .zip(scales)
        .map(|(&v, &s)| {
            (v as f64 / s as f64)
                .round()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect()
}

/// Node → its replaced (weight, bias) inputs, by node name.
type Replaced = HashMap<String, (String, Option<String>)>;

/// The rewrite's state: what is quantized, and the nodes and initializers it writes.
struct Qdq<'a> {
    act: ActType,
    qmax: f32,
    /// Activation tensor → (scale, zero point).
    act_q: BTreeMap<String, (f32, i32)>,
    /// The input model's initializers.
    inits: HashMap<&'a str, &'a TensorProto>,
    new_inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
}

impl<'a> Qdq<'a> {
    fn new(m: &'a ModelProto, act_q: BTreeMap<String, (f32, i32)>, opts: &QuantizeOptions) -> Self {
        Qdq {
            act: opts.activation_type,
            qmax: opts.weight_range.qmax(),
            act_q,
            inits: m
                .graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
            new_inits: vec![],
            nodes: vec![],
        }
    }

    /// Int8 weights (and int32 biases) of `layers` behind DequantizeLinear nodes, which open the
    /// graph; returns the inputs that replace each layer's float weight and bias.
    fn dequantized_weights(&mut self, layers: &[&Layer]) -> Result<Replaced> {
        let mut replaced = HashMap::new();
        for l in layers {
            let (weight, scales) = self.dequantized_weight(l)?;
            let bias = match &l.bias {
                None => None,
                Some(b) => Some(self.dequantized_bias(l, b, &scales)?),
            };
            replaced.insert(l.name.clone(), (weight, bias));
        }
        Ok(replaced)
    }

    /// Layer `l`'s weight, symmetric per output channel; returns its name and channel scales.
    fn dequantized_weight(&mut self, l: &Layer) -> Result<(String, Vec<f32>)> {
        let w = self.inits[l.weight.as_str()];
        let values = floats(w).ok_or_else(|| {
            QuantizeError::Options(format!("weight `{}` is not float32", l.weight))
        })?;
        let (q, scales) = quantize_weight(&values, &w.dims, l.axis, self.qmax);
        let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
        let name = self.push_dequantize(
            &format!("{}/{}", l.name, l.weight),
            DataType::INT8,
            q.iter().map(|&v| v as u8).collect(),
            &dims,
            &scales,
            l.axis,
        );
        Ok((name, scales))
    }

    /// Layer `l`'s bias `b` as int32 at the scales of its input times `weight_scales`.
    fn dequantized_bias(&mut self, l: &Layer, b: &str, weight_scales: &[f32]) -> Result<String> {
        let values = floats(self.inits[b])
            .ok_or_else(|| QuantizeError::Options(format!("bias `{b}` is not float32")))?;
        let sx = self.act_q[&l.input].0;
        let scales: Vec<f32> = weight_scales.iter().map(|&s| sx * s).collect();
        let q = quantize_bias(&values, &scales);
        Ok(self.push_dequantize(
            &format!("{}/{b}", l.name),
            DataType::INT32,
            q.iter().flat_map(|v| v.to_le_bytes()).collect(),
            &[q.len()],
            &scales,
            0,
        ))
    }

    /// Adds `{base}_quantized` (`raw` values of `dims`), its per-channel `_scale` and zero
    /// `_zero_point`, and the DequantizeLinear along `axis` over them; returns `{base}_dequantized`.
    fn push_dequantize(
        &mut self,
        base: &str,
        data_type: DataType,
        raw: Vec<u8>,
        dims: &[usize],
        scales: &[f32],
        axis: usize,
    ) -> String {
        let (q, s, zp, dq) = (
            format!("{base}_quantized"),
            format!("{base}_scale"),
            format!("{base}_zero_point"),
            format!("{base}_dequantized"),
        );
        // int8 weights or int32 biases
        let value_bytes = if data_type == DataType::INT32 { 4 } else { 1 };
        let n = scales.len();
        self.new_inits.push(scalar(&q, data_type as i32, raw, dims));
        self.new_inits.push(scalar(
            &s,
            DataType::FLOAT as i32,
            scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            &[n],
        ));
        self.new_inits.push(scalar(
            &zp,
            data_type as i32,
            vec![0; value_bytes * n],
            &[n],
        ));
        self.nodes.push(node(
            "DequantizeLinear",
            &format!("{base}/DequantizeLinear"),
            &[&q, &s, &zp],
            &[&dq],
            vec![attr("axis", Attr::Int(axis as i64))],
        ));
        dq
    }

    /// QDQ pairs right after the graph inputs that feed quantized layers.
    fn quantize_inputs(&mut self, inputs: &[onnx_protobuf::ValueInfoProto]) {
        for i in inputs {
            if self.act_q.contains_key(&i.name) {
                self.push_qdq_pair(&i.name);
            }
        }
    }

    /// The original nodes in order, reading the dequantized weights and activations, each
    /// quantized output followed by its QDQ pair.
    fn rewire(&mut self, old: Vec<NodeProto>, replaced: &Replaced) {
        for mut n in old {
            self.read_dequantized(&mut n, replaced);
            let outs: Vec<String> = n
                .output
                .iter()
                .filter(|o| self.act_q.contains_key(*o))
                .cloned()
                .collect();
            self.nodes.push(n);
            for o in outs {
                self.push_qdq_pair(&o);
            }
        }
    }

    /// Points `n`'s weight, bias and quantized activation inputs at their dequantized tensors.
    fn read_dequantized(&self, n: &mut NodeProto, replaced: &Replaced) {
        let name = if n.name.is_empty() {
            n.output.first().cloned().unwrap_or_default()
        } else {
            n.name.clone()
        };
        if let Some((w, b)) = replaced.get(&name) {
            n.input[1] = w.clone();
            if let Some(b) = b {
                n.input[2] = b.clone();
            }
        }
        for i in n.input.iter_mut() {
            if self.act_q.contains_key(i.as_str()) {
                *i = format!("{i}_dequantized");
            }
        }
    }

    /// Adds QuantizeLinear → DequantizeLinear after activation `t`, with its scale and zero point.
    fn push_qdq_pair(&mut self, t: &str) {
        let (scale, zp) = self.act_q[t];
        let (s, z, q, dq) = (
            format!("{t}_scale"),
            format!("{t}_zero_point"),
            format!("{t}_quantized"),
            format!("{t}_dequantized"),
        );
        self.new_inits.push(scalar(
            &s,
            DataType::FLOAT as i32,
            scale.to_le_bytes().to_vec(),
            &[],
        ));
        self.new_inits.push(zero_point(&z, self.act, zp));
        self.nodes.push(node(
            "QuantizeLinear",
            &format!("{t}/QuantizeLinear"),
            &[t, &s, &z],
            &[&q],
            vec![],
        ));
        self.nodes.push(node(
            "DequantizeLinear",
            &format!("{t}/DequantizeLinear"),
            &[&q, &s, &z],
            &[&dq],
            vec![],
        ));
    }

    /// Puts the new nodes and initializers into `g`, dropping float initializers no node reads
    /// any more and the graph inputs that declared them.
    fn install(self, g: &mut GraphProto) {
        let used: BTreeSet<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        let mut kept: Vec<TensorProto> = std::mem::take(&mut g.initializer)
            .into_iter()
            .filter(|t| used.contains(t.name.as_str()))
            .collect();
        kept.extend(self.new_inits);
        g.initializer = kept;
        g.node = self.nodes;
        let kept_names: BTreeSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        g.input
            .retain(|i| !self.inits.contains_key(i.name.as_str()) || kept_names.contains(&i.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_weights_round_trip() {
        // [2 out, 1, 1, 2]: channel 1 is ten times larger.
        let w = [0.1, -0.2, 1.0, 2.0];
        let (q, s) = quantize_weight(&w, &[2, 1, 1, 2], 0, 127.0);
        assert_eq!(q, vec![64, -127, 64, 127]);
        assert!((s[0] - 0.2 / 127.0).abs() < 1e-9 && (s[1] - 2.0 / 127.0).abs() < 1e-9);
        // MatMul [K=2, N=2] per column.
        let (_, s) = quantize_weight(&w, &[2, 2], 1, 127.0);
        assert!((s[0] - 1.0 / 127.0).abs() < 1e-9 && (s[1] - 2.0 / 127.0).abs() < 1e-9);
    }
}
