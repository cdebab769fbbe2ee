//! Thin helpers over onnx-protobuf so the lowering reads like the graph it writes.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::{
    type_proto, AttributeProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, Message, MessageField};

/// IR 8 + opset 17: what ORT 1.31 and the onnx checker accept, with LayerNormalization as one op.
pub const IR_VERSION: i64 = 8;
pub const OPSET: i64 = 17;

/// Element type of float tensors in the exported graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
}

impl Elem {
    pub fn data_type(self) -> i32 {
        match self {
            Elem::F32 => DataType::FLOAT as i32,
            Elem::F16 => DataType::FLOAT16 as i32,
        }
    }
}

pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

pub fn attr(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.type_ = EnumOrUnknown::new(AttributeType::INT);
            a.i = i;
        }
        Attr::Ints(v) => {
            a.type_ = EnumOrUnknown::new(AttributeType::INTS);
            a.ints = v;
        }
        Attr::Float(f) => {
            a.type_ = EnumOrUnknown::new(AttributeType::FLOAT);
            a.f = f;
        }
    }
    a
}

pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// Float tensor stored as `raw_data` in the requested element type.
pub fn tensor_f(name: &str, dims: &[usize], data: &[f32], elem: Elem) -> TensorProto {
    let raw_data = match elem {
        Elem::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Elem::F16 => data
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
    };
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: elem.data_type(),
        raw_data,
        ..Default::default()
    }
}

pub fn tensor_i64(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::INT64 as i32,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A tensor value description; `None` dims are symbolic (`dim_param`).
pub fn value_info(name: &str, data_type: i32, dims: &[Result<usize, &str>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Ok(n) => dimension::Value::DimValue(*n as i64),
                Err(p) => dimension::Value::DimParam(p.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: data_type,
        shape: MessageField::some(TensorShapeProto {
            dim,
            ..Default::default()
        }),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_string(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn model(
    graph: onnx_protobuf::GraphProto,
    metadata: &std::collections::BTreeMap<String, String>,
) -> ModelProto {
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
            ..Default::default()
        }],
        producer_name: "lkd".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: MessageField::some(graph),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn encode(m: &ModelProto) -> Result<Vec<u8>, protobuf::Error> {
    m.write_to_bytes()
}

/// Parses ONNX bytes, refusing a truncated file as ONNX Runtime does. rust-protobuf 3.4 reads a
/// top-level message field whose length runs past the end of the input up to the end and
/// accepts it (protobuf's C++ parser, ONNX Runtime's, refuses it), so the top level's framing
/// is checked first; nested fields are bounded by their parent, which rust-protobuf enforces.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, protobuf::Error> {
    check_top_level_lengths(bytes).map_err(|reason| {
        protobuf::Error::from(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            reason,
        ))
    })?;
    ModelProto::parse_from_bytes(bytes)
}

/// Every length-delimited top-level field fits in `bytes`. Other malformations (a cut varint,
/// a bad wire type) are left to the parser, which refuses them itself.
fn check_top_level_lengths(bytes: &[u8]) -> Result<(), String> {
    let mut pos = 0usize;
    let varint = |pos: &mut usize| -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *bytes.get(*pos)?;
            *pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    while pos < bytes.len() {
        let Some(tag) = varint(&mut pos) else {
            return Ok(());
        };
        let skip = match tag & 7 {
            0 => match varint(&mut pos) {
                Some(_) => 0,
                None => return Ok(()),
            },
            1 => 8,
            5 => 4,
            2 => match varint(&mut pos) {
                Some(size) => size,
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let left = (bytes.len() - pos) as u64;
        if skip > left {
            return Err(format!(
                "field {} at byte {pos} claims {skip} bytes but only {left} remain (truncated file?)",
                tag >> 3
            ));
        }
        pos += skip as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz corpus's `found-truncated-entry` (`72 6c`: field 14, 108 bytes, then nothing),
    /// and a real model cut short by one byte: both refused, as ONNX Runtime refuses them.
    #[test]
    fn a_truncated_last_message_is_refused() {
        let err = decode(&[0x72, 0x6c]).unwrap_err().to_string();
        assert!(
            err.contains("field 14 at byte 2 claims 108 bytes but only 0 remain (truncated file?)"),
            "{err}"
        );
        let metadata = std::collections::BTreeMap::from([("k".to_string(), "v".to_string())]);
        let bytes = encode(&model(onnx_protobuf::GraphProto::default(), &metadata)).unwrap();
        assert_eq!(decode(&bytes).unwrap().metadata_props[0].value, "v");
        let err = decode(&bytes[..bytes.len() - 1]).unwrap_err().to_string();
        assert!(err.contains("truncated file?"), "{err}");
        assert!(decode(&[]).is_ok());
    }
}
