//! ONNX Runtime sessions: loading, execution-provider selection and checked runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use lkd_models::preprocess::keys;
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::error::{Result, RuntimeError};

/// Where the session runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(i32),
}

impl FromStr for Device {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|&n| n >= 0)
                .map(Device::Cuda)
                .ok_or_else(|| RuntimeError::BadDevice(s.to_string())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// ONNX Runtime graph optimization level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OptLevel {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

impl FromStr for OptLevel {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "disable" | "0" => Ok(Self::Disable),
            "basic" | "1" => Ok(Self::Basic),
            "extended" | "2" => Ok(Self::Extended),
            "all" | "3" => Ok(Self::All),
            _ => Err(RuntimeError::Bench(format!(
                "unknown optimization level `{s}`: expected disable, basic, extended or all"
            ))),
        }
    }
}

impl From<OptLevel> for GraphOptimizationLevel {
    fn from(l: OptLevel) -> Self {
        match l {
            OptLevel::Disable => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// How to build a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub device: Device,
    /// Threads inside one operator; `None` lets ONNX Runtime pick (all cores).
    pub intra_threads: Option<usize>,
    pub inter_threads: Option<usize>,
    pub opt_level: OptLevel,
    /// Where ONNX Runtime writes the optimized graph, for inspection or offline optimization.
    pub optimized_model_path: Option<PathBuf>,
    /// Runs at the model's input shape (batch 1) before the session is handed out, so the first
    /// real request does not pay for allocation and kernel selection.
    pub warmup: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            intra_threads: None,
            inter_threads: None,
            opt_level: OptLevel::All,
            optimized_model_path: None,
            warmup: 0,
        }
    }
}

static ENV: Mutex<Option<Environment>> = Mutex::new(None);

/// The process-wide ONNX Runtime environment, loading the library from `ORT_DYLIB_PATH` once.
pub fn environment() -> Result<Environment> {
    let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = env.as_ref() {
        return Ok(env.clone());
    }
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| RuntimeError::OrtLibrary { reason: "ORT_DYLIB_PATH is not set".into() })?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(RuntimeError::OrtLibrary {
            reason: format!("ORT_DYLIB_PATH=`{}` does not exist", path.display()),
        });
    }
    let built = ort::init_from(&path)
        .map_err(|e| RuntimeError::OrtLibrary { reason: e.to_string() })?
        .with_name("lkd")
        .build()
        .map_err(|e| RuntimeError::OrtInit(e.to_string()))?;
    *env = Some(built.clone());
    Ok(built)
}

/// What the runtime knows about a loaded model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// File stem, used in responses and reports.
    pub name: String,
    pub path: PathBuf,
    /// Custom `metadata_props` of the ONNX file.
    pub metadata: BTreeMap<String, String>,
    pub input_name: String,
    /// NCHW, `-1` for a dynamic dimension.
    pub input_shape: Vec<i64>,
    pub output_name: String,
    /// Class names from `lkd.labels`; empty when the model has none.
    pub labels: Vec<String>,
    /// GFLOPs per image from `lkd.gflops`.
    pub gflops: Option<f64>,
    /// The execution provider the session was built with, e.g. `CPUExecutionProvider`.
    pub provider: &'static str,
    pub device: Device,
}

impl ModelInfo {
    /// The batch size the graph is fixed to, if it is not dynamic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.input_shape.first().copied().filter(|&b| b > 0).map(|b| b as usize)
    }

    /// Label of class `i`, or `class i` when the model carries no names.
    pub fn label(&self, i: usize) -> String {
        self.labels.get(i).cloned().unwrap_or_else(|| format!("class {i}"))
    }
}

/// Logits of one batch, row-major `[batch, classes]`.
#[derive(Clone, Debug)]
pub struct Logits {
    pub data: Vec<f32>,
    pub batch: usize,
    pub classes: usize,
}

impl Logits {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.classes..(i + 1) * self.classes]
    }
}

/// A session with its checked input/output description.
pub struct Model {
    session: Session,
    info: ModelInfo,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

fn builder(cfg: &SessionConfig) -> Result<(SessionBuilder, &'static str)> {
    let env = environment()?;
    let ort_err = |e: ort::Error<SessionBuilder>| RuntimeError::OrtInit(e.to_string());
    let mut b = Session::builder(&env)
        .map_err(|e| RuntimeError::OrtInit(e.to_string()))?
        .with_optimization_level(cfg.opt_level.into())
        .map_err(ort_err)?;
    if let Some(n) = cfg.intra_threads {
        b = b.with_intra_threads(n).map_err(ort_err)?;
    }
    if let Some(n) = cfg.inter_threads {
        b = b.with_inter_threads(n).map_err(ort_err)?.with_parallel_execution(n > 1).map_err(ort_err)?;
    }
    if let Some(p) = &cfg.optimized_model_path {
        b = b.with_optimized_model_path(p).map_err(ort_err)?;
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
    let hint = "Install onnxruntime-gpu 1.31.1, point ORT_DYLIB_PATH at its libonnxruntime.so, and make \
                sure a GPU plus the CUDA 13 / cuDNN 9 libraries are visible (LD_LIBRARY_PATH)";
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err(RuntimeError::Provider {
            device,
            reason: "the loaded ONNX Runtime library was built without the CUDA execution provider".into(),
            hint,
        });
    }
    let ep = ort::ep::CUDA::default().with_device_id(id).build().error_on_failure();
    b.with_execution_providers([ep]).map_err(|e| RuntimeError::Provider { device, reason: e.to_string(), hint })
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(_b: SessionBuilder, id: i32) -> Result<SessionBuilder> {
    Err(RuntimeError::Provider {
        device: format!("cuda:{id}"),
        reason: "this binary was built without the `cuda` feature".into(),
        hint: "Rebuild with `cargo build --release --features cuda`",
    })
}

impl Model {
    /// Loads `path` and checks that it is a single-input float image classifier.
    pub fn load(path: impl AsRef<Path>, cfg: &SessionConfig) -> Result<Self> {
        let path = path.as_ref();
        std::fs::metadata(path).map_err(|source| RuntimeError::Io { path: path.to_path_buf(), source })?;
        let (mut b, provider) = builder(cfg)?;
        let session = b
            .commit_from_file(path)
            .map_err(|e| RuntimeError::BadModel { path: path.to_path_buf(), reason: e.to_string() })?;
        let mut model = Self::wrap(session, path, provider, cfg.device)?;
        model.warm_up(cfg.warmup)?;
        Ok(model)
    }

    fn wrap(session: Session, path: &Path, provider: &'static str, device: Device) -> Result<Self> {
        let bad = |reason: String| RuntimeError::BadModel { path: path.to_path_buf(), reason };
        let meta = session.metadata().map_err(|e| bad(e.to_string()))?;
        let mut metadata = BTreeMap::new();
        for k in meta.custom_keys().map_err(|e| bad(e.to_string()))? {
            if let Some(v) = meta.custom(&k) {
                metadata.insert(k, v);
            }
        }
        drop(meta);

        let inputs = session.inputs();
        if inputs.len() != 1 {
            return Err(RuntimeError::Input {
                expected: "exactly one input (an NCHW image batch)".into(),
                found: format!("{} inputs", inputs.len()),
                hint: "Export the classifier with a single image input".into(),
            });
        }
        let input = &inputs[0];
        let input_shape = match input.dtype() {
            ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => shape.to_vec(),
            ValueType::Tensor { ty, .. } => {
                return Err(RuntimeError::Input {
                    expected: "input of type float32".into(),
                    found: format!("input `{}` of type {ty}", input.name()),
                    hint: "Export the model with a float32 input (cast inside the graph if needed)".into(),
                })
            }
            other => {
                return Err(RuntimeError::Input {
                    expected: "a tensor input".into(),
                    found: format!("{other:?}"),
                    hint: "Export the model with a float32 NCHW input".into(),
                })
            }
        };
        if input_shape.len() != 4 {
            return Err(RuntimeError::Input {
                expected: "a rank-4 NCHW input".into(),
                found: format!("rank {} shape {:?}", input_shape.len(), input_shape),
                hint: "Export the classifier with an image input [N, C, H, W]".into(),
            });
        }
        let outputs = session.outputs();
        let output_name = outputs.first().map(|o| o.name().to_string()).ok_or_else(|| RuntimeError::Output {
            expected: "at least one output".into(),
            found: "none".into(),
        })?;
        let labels = match metadata.get(keys::LABELS) {
            Some(s) => serde_json::from_str::<Vec<String>>(s).map_err(|e| {
                bad(format!("metadata `{}` must be a JSON array of strings: {e}", keys::LABELS))
            })?,
            None => Vec::new(),
        };
        let gflops = metadata.get(keys::GFLOPS).and_then(|s| s.trim().parse::<f64>().ok());
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let info = ModelInfo {
            name,
            path: path.to_path_buf(),
            metadata,
            input_name: input.name().to_string(),
            input_shape,
            output_name,
            labels,
            gflops,
            provider,
            device,
        };
        Ok(Self { session, info })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Runs `n` passes on a zero input at batch 1 (or the fixed batch).
    pub fn warm_up(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let s = &self.info.input_shape;
        if s[1..].iter().any(|&d| d <= 0) {
            // Without a static C/H/W the caller warms up with real inputs.
            return Ok(());
        }
        let shape = [self.info.fixed_batch().unwrap_or(1), s[1] as usize, s[2] as usize, s[3] as usize];
        let zeros = vec![0f32; shape.iter().product()];
        for _ in 0..n {
            self.run(&zeros, shape)?;
        }
        Ok(())
    }

    /// Checks an NCHW shape against the session's input before anything runs.
    pub fn check_input(&self, shape: [usize; 4]) -> Result<()> {
        let expected = &self.info.input_shape;
        let ok = expected.iter().zip(shape.iter()).all(|(&e, &g)| e <= 0 || e as usize == g);
        if ok {
            return Ok(());
        }
        let fmt_dim = |d: &i64| if *d <= 0 { "?".to_string() } else { d.to_string() };
        let exp = expected.iter().map(fmt_dim).collect::<Vec<_>>().join(", ");
        let hint = if expected[0] > 0 && expected[0] as usize != shape[0] {
            format!("The graph has a fixed batch of {}; re-export it with a dynamic batch axis", expected[0])
        } else {
            "Check the preprocessing (--input-size, --channels) against the model".to_string()
        };
        Err(RuntimeError::Input {
            expected: format!("input `{}` of shape [{exp}]", self.info.input_name),
            found: format!("{shape:?}"),
            hint,
        })
    }

    /// Runs one batch. `input` is NCHW f32 of `shape`; it is borrowed, not copied.
    pub fn run(&mut self, input: &[f32], shape: [usize; 4]) -> Result<Logits> {
        self.check_input(shape)?;
        let n: usize = shape.iter().product();
        if input.len() != n {
            return Err(RuntimeError::Input {
                expected: format!("{n} values for shape {shape:?}"),
                found: format!("{} values", input.len()),
                hint: "This is a bug in the caller's batch assembly".into(),
            });
        }
        let tensor = TensorRef::from_array_view((shape, input)).map_err(|e| RuntimeError::Run(e.to_string()))?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| RuntimeError::Run(e.to_string()))?;
        let out = &outputs[0];
        let (oshape, data) = out.try_extract_tensor::<f32>().map_err(|e| RuntimeError::Output {
            expected: "a float32 logits tensor".into(),
            found: e.to_string(),
        })?;
        let dims: Vec<i64> = oshape.to_vec();
        let classes = match dims.as_slice() {
            [b, c] if *b as usize == shape[0] => *c as usize,
            [b, c, 1, 1] if *b as usize == shape[0] => *c as usize,
            _ => {
                return Err(RuntimeError::Output {
                    expected: format!("logits of shape [{}, classes]", shape[0]),
                    found: format!("{dims:?}"),
                })
            }
        };
        Ok(Logits { data: data.to_vec(), batch: shape[0], classes })
    }
}

/// ONNX Runtime's build string (version, commit) and its compiled-in execution providers.
pub fn ort_build_info() -> Result<(String, Vec<String>)> {
    environment()?;
    let api = ort::api();
    let mut providers: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: the C API fills an array of `count` NUL-terminated strings that we copy and
    // hand back to ReleaseAvailableProviders.
    let names = unsafe {
        let status = (api.GetAvailableProviders)(&mut providers, &mut count);
        if !status.0.is_null() || providers.is_null() {
            Vec::new()
        } else {
            let names = (0..count as isize)
                .map(|i| std::ffi::CStr::from_ptr(*providers.offset(i)).to_string_lossy().into_owned())
                .collect();
            let _ = (api.ReleaseAvailableProviders)(providers, count);
            names
        }
    };
    Ok((ort::info().to_string(), names))
}
