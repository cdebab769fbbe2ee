use super::{FormatError, StateDict};
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
    read_safetensors_bytes(&bytes).map_err(|e| e.at(path))
}

pub fn read_safetensors_bytes(bytes: &[u8]) -> Result<StateDict, FormatError> {
    let st = SafeTensors::deserialize(bytes).map_err(FormatError::Safetensors)?;
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
            other => {
                return Err(FormatError::Invalid(format!(
                    "tensor `{name}` has unsupported dtype {other:?}"
                )))
            }
        };
        out.insert(name, HostTensor { shape, data });
    }
    Ok(out)
}

pub fn write_safetensors_bytes(
    sd: &StateDict,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, FormatError> {
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
                .map_err(FormatError::Safetensors)
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, &metadata).map_err(FormatError::Safetensors)
}

/// Atomic write (temp file + rename).
pub fn write_safetensors(
    path: &Path,
    sd: &StateDict,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), ModelError> {
    let bytes = write_safetensors_bytes(sd, metadata).map_err(|e| e.at(path))?;
    Ok(lkd_util::write_atomic(path, &bytes)?)
}
