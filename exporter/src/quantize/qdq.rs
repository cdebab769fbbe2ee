//! The QDQ rewrite: which nodes are quantizable, checks on the input model, and inserting
//! QuantizeLinear/DequantizeLinear pairs plus int8 weights and int32 biases.
//!
//! ORT fuses `DQ → Conv → Q` into QLinearConv only when every Conv input comes from a DQ (bias
//! as int32 with scale x_scale·w_scale) and the Conv output feeds only a Q, so outputs of
//! quantized layers are quantized too and every consumer reads the dequantized tensor.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{type_proto, ModelProto, NodeProto, TensorProto};

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
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    if opset < 13 {
        return Err(QuantizeError::Options(format!("per-channel DequantizeLinear needs opset 13 or later, the model has {opset}; re-export it")));
    }
    let act = opts.activation_type;
    let qmax = opts.weight_range.qmax();
    let graph_outputs: BTreeSet<&str> = m.graph.output.iter().map(|o| o.name.as_str()).collect();
    let active: Vec<&Layer> = layers.iter().filter(|l| !float.contains(&l.name)).collect();

    // Activation tensors and their qparams.
    let mut act_q: BTreeMap<String, (f32, i32)> = BTreeMap::new();
    for l in &active {
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

    let mut out = m.clone();
    let g = out.graph.mut_or_insert_default();
    let inits: HashMap<String, TensorProto> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let mut new_inits: Vec<TensorProto> = vec![];
    let mut weight_nodes: Vec<NodeProto> = vec![];
    // Node name → replaced (weight, bias) inputs.
    let mut replaced: HashMap<String, (String, Option<String>)> = HashMap::new();
    for l in &active {
        let w = &inits[&l.weight];
        let values = floats(w).ok_or_else(|| {
            QuantizeError::Options(format!("weight `{}` is not float32", l.weight))
        })?;
        let (q, ws) = quantize_weight(&values, &w.dims, l.axis, qmax);
        let base = format!("{}/{}", l.name, l.weight);
        let (wq, wsn, wzp, wdq) = (
            format!("{base}_quantized"),
            format!("{base}_scale"),
            format!("{base}_zero_point"),
            format!("{base}_dequantized"),
        );
        let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
        new_inits.push(scalar(
            &wq,
            DataType::INT8 as i32,
            q.iter().map(|&v| v as u8).collect(),
            &dims,
        ));
        new_inits.push(scalar(
            &wsn,
            DataType::FLOAT as i32,
            ws.iter().flat_map(|s| s.to_le_bytes()).collect(),
            &[ws.len()],
        ));
        new_inits.push(scalar(
            &wzp,
            DataType::INT8 as i32,
            vec![0; ws.len()],
            &[ws.len()],
        ));
        weight_nodes.push(node(
            "DequantizeLinear",
            &format!("{base}/DequantizeLinear"),
            &[&wq, &wsn, &wzp],
            &[&wdq],
            vec![attr("axis", Attr::Int(l.axis as i64))],
        ));
        let bias = match &l.bias {
            None => None,
            Some(b) => {
                let bv = floats(&inits[b])
                    .ok_or_else(|| QuantizeError::Options(format!("bias `{b}` is not float32")))?;
                let sx = act_q[&l.input].0;
                let bs: Vec<f32> = ws.iter().map(|&s| sx * s).collect();
                let bq: Vec<i32> = bv
                    .iter()
                    .zip(&bs)
                    .map(|(&v, &s)| {
                        (v as f64 / s as f64)
                            .round()
                            .clamp(i32::MIN as f64, i32::MAX as f64) as i32
                    })
                    .collect();
                let bb = format!("{}/{b}", l.name);
                let (bqn, bsn, bzp, bdq) = (
                    format!("{bb}_quantized"),
                    format!("{bb}_scale"),
                    format!("{bb}_zero_point"),
                    format!("{bb}_dequantized"),
                );
                new_inits.push(scalar(
                    &bqn,
                    DataType::INT32 as i32,
                    bq.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    &[bq.len()],
                ));
                new_inits.push(scalar(
                    &bsn,
                    DataType::FLOAT as i32,
                    bs.iter().flat_map(|s| s.to_le_bytes()).collect(),
                    &[bs.len()],
                ));
                new_inits.push(scalar(
                    &bzp,
                    DataType::INT32 as i32,
                    vec![0; 4 * bs.len()],
                    &[bs.len()],
                ));
                weight_nodes.push(node(
                    "DequantizeLinear",
                    &format!("{bb}/DequantizeLinear"),
                    &[&bqn, &bsn, &bzp],
                    &[&bdq],
                    vec![attr("axis", Attr::Int(0))],
                ));
                Some(bdq)
            }
        };
        replaced.insert(l.name.clone(), (wdq, bias));
    }

    let qdq_pair =
        |t: &str, (scale, zp): (f32, i32), inits: &mut Vec<TensorProto>| -> [NodeProto; 2] {
            let (s, z, q, dq) = (
                format!("{t}_scale"),
                format!("{t}_zero_point"),
                format!("{t}_quantized"),
                format!("{t}_dequantized"),
            );
            inits.push(scalar(
                &s,
                DataType::FLOAT as i32,
                scale.to_le_bytes().to_vec(),
                &[],
            ));
            inits.push(zero_point(&z, act, zp));
            [
                node(
                    "QuantizeLinear",
                    &format!("{t}/QuantizeLinear"),
                    &[t, &s, &z],
                    &[&q],
                    vec![],
                ),
                node(
                    "DequantizeLinear",
                    &format!("{t}/DequantizeLinear"),
                    &[&q, &s, &z],
                    &[&dq],
                    vec![],
                ),
            ]
        };

    let old = std::mem::take(&mut g.node);
    let mut nodes = weight_nodes;
    let inputs: Vec<String> = g.input.iter().map(|i| i.name.clone()).collect();
    for i in inputs.iter().filter(|i| act_q.contains_key(*i)) {
        nodes.extend(qdq_pair(i, act_q[i], &mut new_inits));
    }
    for mut n in old {
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
            if act_q.contains_key(i.as_str()) {
                *i = format!("{i}_dequantized");
            }
        }
        let outs: Vec<String> = n
            .output
            .iter()
            .filter(|o| act_q.contains_key(*o))
            .cloned()
            .collect();
        nodes.push(n);
        for o in outs {
            nodes.extend(qdq_pair(&o, act_q[&o], &mut new_inits));
        }
    }
    // Float weights that no node reads any more are dropped.
    let used: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut kept: Vec<TensorProto> = std::mem::take(&mut g.initializer)
        .into_iter()
        .filter(|t| used.contains(t.name.as_str()))
        .collect();
    kept.extend(new_inits);
    g.initializer = kept;
    g.node = nodes;
    let kept_names: BTreeSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    g.input
        .retain(|i| !inits.contains_key(&i.name) || kept_names.contains(&i.name));
    Ok(out)
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
