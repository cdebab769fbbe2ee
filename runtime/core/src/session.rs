//! Building sessions: thread pools, spinning, optimization level and strict provider
//! registration, from a file or from bytes.

use std::path::{Path, PathBuf};

use ort::session::builder::SessionBuilder;
pub use ort::session::Session;
use ort::value::TensorRef;

use crate::env::environment;
use crate::error::{OrtError, Result};
use crate::opt_level::OptLevel;
use lkd_util::Device;

/// How to build a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub device: Device,
    /// Threads inside one operator; `None` lets ONNX Runtime pick (all cores).
    pub intra_threads: Option<usize>,
    pub inter_threads: Option<usize>,
    /// Whether idle pool threads spin waiting for work. Spinning trades CPU for a little
    /// latency; on a small shared machine it burns the cores other sessions and processes need
    /// (and biases any A/B in one process), so it is off unless asked for.
    pub spin: bool,
    pub opt_level: OptLevel,
    /// Where ONNX Runtime writes the optimized graph, for inspection or offline optimization.
    pub optimized_model_path: Option<PathBuf>,
    /// Runs at the model's input shape before the session is handed out (applied by wrappers
    /// such as the runtime's `Model`), so the first real request does not pay for allocation.
    pub warmup: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            intra_threads: None,
            inter_threads: None,
            spin: false,
            opt_level: OptLevel::All,
            optimized_model_path: None,
            warmup: 0,
        }
    }
}

impl SessionConfig {
    /// CPU with `threads` intra-op threads and everything else default.
    pub fn cpu(threads: Option<usize>) -> Self {
        Self {
            intra_threads: threads,
            ..Self::default()
        }
    }
}

/// A session builder configured from `cfg`, with its execution provider registered, and the
/// provider's name. Registration is strict: a device the loaded library cannot serve is an error.
pub fn builder(cfg: &SessionConfig) -> Result<(SessionBuilder, &'static str)> {
    let env = environment()?;
    let mut b = Session::builder(&env)
        .map_err(OrtError::config("session builder"))?
        .with_optimization_level(cfg.opt_level.into())
        .map_err(OrtError::config("optimization level"))?
        .with_intra_op_spinning(cfg.spin)
        .map_err(OrtError::config("intra-op spinning"))?
        .with_inter_op_spinning(cfg.spin)
        .map_err(OrtError::config("inter-op spinning"))?;
    if let Some(n) = cfg.intra_threads {
        b = b
            .with_intra_threads(n)
            .map_err(OrtError::config("intra-op threads"))?;
    }
    if let Some(n) = cfg.inter_threads {
        b = b
            .with_inter_threads(n)
            .map_err(OrtError::config("inter-op threads"))?
            .with_parallel_execution(n > 1)
            .map_err(OrtError::config("parallel execution"))?;
    }
    if let Some(p) = &cfg.optimized_model_path {
        b = b
            .with_optimized_model_path(p)
            .map_err(OrtError::config("optimized model path"))?;
    }
    let provider = match cfg.device {
        Device::Cpu => "CPUExecutionProvider",
        Device::Cuda(id) => {
            b = register_cuda(b, id)?;
            "CUDAExecutionProvider"
        }
    };
    Ok((b, provider))
}

#[cfg(feature = "cuda")]
fn register_cuda(b: SessionBuilder, id: i32) -> Result<SessionBuilder> {
    use ort::ep::ExecutionProvider;
    let device = format!("cuda:{id}");
    let hint =
        "Install onnxruntime-gpu 1.31.1, point ORT_DYLIB_PATH at its libonnxruntime.so, and make \
                sure a GPU plus the CUDA 13 / cuDNN 9 libraries are visible (LD_LIBRARY_PATH)";
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err(OrtError::Provider {
            device,
            reason: "the loaded ONNX Runtime library was built without the CUDA execution provider"
                .into(),
            hint,
        });
    }
    let ep = ort::ep::CUDA::default()
        .with_device_id(id)
        .build()
        .error_on_failure();
    b.with_execution_providers([ep])
        .map_err(|e| OrtError::Provider {
            device,
            reason: e.to_string(),
            hint,
        })
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(_b: SessionBuilder, id: i32) -> Result<SessionBuilder> {
    Err(OrtError::Provider {
        device: format!("cuda:{id}"),
        reason: "this binary was built without the `cuda` feature".into(),
        hint: "Rebuild with `cargo build --release --features cuda`",
    })
}

/// A session over the ONNX file at `path`, and its provider's name.
pub fn session_from_file(path: &Path, cfg: &SessionConfig) -> Result<(Session, &'static str)> {
    let (mut b, provider) = builder(cfg)?;
    let s = b
        .commit_from_file(path)
        .map_err(|source| OrtError::Load { source })?;
    Ok((s, provider))
}

/// A session over ONNX bytes held in memory, and its provider's name.
pub fn session_from_memory(bytes: &[u8], cfg: &SessionConfig) -> Result<(Session, &'static str)> {
    let (mut b, provider) = builder(cfg)?;
    let s = b
        .commit_from_memory(bytes)
        .map_err(|source| OrtError::Load { source })?;
    Ok((s, provider))
}

/// One forward pass of a single-input f32 model; returns the first output's shape and values.
pub fn run_f32(
    session: &mut Session,
    input: &[f32],
    shape: &[usize],
) -> Result<(Vec<i64>, Vec<f32>)> {
    let tensor = TensorRef::from_array_view((shape.to_vec(), input))
        .map_err(|source| OrtError::Run { source })?;
    let outputs = session
        .run(ort::inputs![tensor])
        .map_err(|source| OrtError::Run { source })?;
    let (oshape, data) = outputs[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| OrtError::Output {
            expected: "a float32 tensor as the first output".into(),
            found: e.to_string(),
        })?;
    Ok((oshape.to_vec(), data.to_vec()))
}
