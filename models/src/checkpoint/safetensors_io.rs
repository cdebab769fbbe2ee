use super::{write_atomic, StateDict};
use crate::tensor::{HostData, HostTensor};
use crate::ModelError;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

pub fn read_safetensors(path: &Path) -> Result<StateDict, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_safetensors_bytes(&bytes).map_err(|msg| ModelError::Checkpoint {
        path: path.display().to_string(),
        msg,
    })
}

pub fn read_safetensors_bytes(bytes: &[u8]) -> Result<StateDict, String> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a valid safetensors file ({e})"))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => HostData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F16 => HostData::F32(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => HostData::F32(
                raw.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::I64 => HostData::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            other => return Err(format!("tensor `{name}` has unsupported dtype {other:?}")),
        };
        out.insert(name, HostTensor { shape, data });
    }
    Ok(out)
}

pub fn write_safetensors_bytes(
    sd: &StateDict,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = sd
        .iter()
        .map(|(k, t)| match &t.data {
            HostData::F32(v) => (
                k.clone(),
                Dtype::F32,
                t.shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            HostData::I64(v) => (
                k.clone(),
                Dtype::I64,
                t.shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        })
        .collect();
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(k, dt, shape, b)| {
            TensorView::new(*dt, shape.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, &metadata).map_err(|e| e.to_string())
}

/// Atomic write (temp file + rename).
pub fn write_safetensors(
    path: &Path,
    sd: &StateDict,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), ModelError> {
    let bytes = write_safetensors_bytes(sd, metadata).map_err(|msg| ModelError::Checkpoint {
        path: path.display().to_string(),
        msg,
    })?;
    write_atomic(path, &bytes)
}
