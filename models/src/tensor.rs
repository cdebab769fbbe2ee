//! Host-side tensors: what checkpoints hold before an executor (tch, ONNX) takes them.

use std::fmt;

/// Element storage of a [`HostTensor`]. Floating checkpoints are widened to f32 on load;
/// integer buffers (e.g. BatchNorm's `num_batches_tracked`) stay i64.
#[derive(Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} vs {} values",
            data.len()
        );
        Self {
            shape,
            data: HostData::F32(data),
        }
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} vs {} values",
            data.len()
        );
        Self {
            shape,
            data: HostData::I64(data),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            HostData::F32(_) => "f32",
            HostData::I64(_) => "i64",
        }
    }

    /// The values as f32 (integers converted), for consumers that only compute in float.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            HostData::F32(v) => Some(v),
            HostData::I64(_) => None,
        }
    }
}

impl fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostTensor({}, {:?})", self.dtype_name(), self.shape)
    }
}
