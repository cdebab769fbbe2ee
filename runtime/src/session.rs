//! Model sessions: loading on ONNX Runtime (CPU/CUDA) or OpenVINO (CPU), execution-provider
//! selection and checked runs. The engine is the caller's choice and is never swapped silently:
//! one that cannot load is an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use lkd_models::preprocess::keys;
use lkd_ort::ort::value::{TensorElementType, ValueType};
pub use lkd_ort::{environment, ort_build_info, OptLevel, SessionConfig};
use lkd_ort::{OrtError, Session};
use lkd_util::Device;

use crate::error::{Result, RuntimeError};

pub use lkd_openvino::Precision;

/// Which inference engine runs a model. ONNX Runtime is the default; OpenVINO is CPU only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    #[default]
    Ort,
    OpenVino {
        precision: Precision,
    },
}

impl Engine {
    /// Short name as the `--engine` flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Ort => "ort",
            Engine::OpenVino { .. } => "openvino",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Ort => f.write_str("ONNX Runtime"),
            Engine::OpenVino { precision } => write!(f, "OpenVINO ({precision})"),
        }
    }
}

/// What runs the graph.
enum Backend {
    Ort(Session),
    OpenVino(Box<lkd_openvino::Engine>),
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
    /// Whether the session's idle threads spin (see [`SessionConfig::spin`]).
    pub spin: bool,
    pub engine: Engine,
    /// The engine library's version (ONNX Runtime's or OpenVINO's build number).
    pub engine_version: String,
}

impl ModelInfo {
    /// The batch size the graph is fixed to, if it is not dynamic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.input_shape
            .first()
            .copied()
            .filter(|&b| b > 0)
            .map(|b| b as usize)
    }

    /// Checks the metadata's class names against the `classes` the model outputs: none (then
    /// predictions say `class N`) or exactly one per class.
    pub fn check_labels(&self, classes: usize) -> Result<()> {
        if self.labels.is_empty() || self.labels.len() == classes {
            return Ok(());
        }
        Err(RuntimeError::LabelCount {
            model: self.name.clone(),
            labels: self.labels.len(),
            classes,
        })
    }

    /// Label of class `i`, or `class i` when the model carries no names.
    pub fn label(&self, i: usize) -> String {
        self.labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
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

    /// `Err` naming the first NaN or infinite logit of `model`'s output.
    pub fn check_finite(&self, model: &str) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(i) => Err(RuntimeError::NonFinite {
                model: model.to_string(),
                image: i / self.classes.max(1),
                class: i % self.classes.max(1),
                value: self.data[i],
            }),
        }
    }
}

/// A session with its checked input/output description.
pub struct Model {
    backend: Backend,
    info: ModelInfo,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

impl Model {
    /// Loads `path` on ONNX Runtime and checks that it is a single-input float image classifier.
    pub fn load(path: impl AsRef<Path>, cfg: &SessionConfig) -> Result<Self> {
        Self::load_with(path, cfg, Engine::Ort)
    }

    /// Loads `path` on `engine`. OpenVINO takes the thread count and warm-up from `cfg`; CUDA
    /// and spinning threads are ONNX Runtime settings and an error with it.
    pub fn load_with(path: impl AsRef<Path>, cfg: &SessionConfig, engine: Engine) -> Result<Self> {
        Self::load_for_batch(path.as_ref(), cfg, engine, None)
    }

    /// [`Model::load_with`], with OpenVINO compiling the graph for exactly `openvino_batch`
    /// images (static shapes run faster; the benchmark measures one batch size per model).
    /// ONNX Runtime keeps the graph's own shape.
    pub(crate) fn load_for_batch(
        path: &Path,
        cfg: &SessionConfig,
        engine: Engine,
        openvino_batch: Option<usize>,
    ) -> Result<Self> {
        std::fs::metadata(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut model = match engine {
            Engine::Ort => {
                let (session, provider) =
                    lkd_ort::session_from_file(path, cfg).map_err(|e| match e {
                        OrtError::Load { source } => {
                            RuntimeError::from_ort_load(path, &source.to_string())
                        }
                        other => other.into(),
                    })?;
                Self::wrap(session, path, provider, cfg.device, cfg.spin)?
            }
            Engine::OpenVino { precision } => {
                Self::load_openvino(path, cfg, precision, openvino_batch)?
            }
        };
        model.warm_up(cfg.warmup)?;
        Ok(model)
    }

    fn load_openvino(
        path: &Path,
        cfg: &SessionConfig,
        precision: Precision,
        static_batch: Option<usize>,
    ) -> Result<Self> {
        if cfg.device != Device::Cpu {
            return Err(RuntimeError::EngineSetting(format!(
                "the OpenVINO engine runs on the CPU only, but device {} was asked for; use \
                 --engine ort for CUDA",
                cfg.device
            )));
        }
        if cfg.spin {
            return Err(RuntimeError::EngineSetting(
                "--spin on is an ONNX Runtime setting; the OpenVINO engine has no spinning \
                 thread pool to turn on (drop --spin or use --engine ort)"
                    .into(),
            ));
        }
        // Parse the metadata first: a file that is not ONNX gets the same error as on ORT.
        let metadata = lkd_openvino::onnx_metadata(path).map_err(|e| RuntimeError::BadModel {
            path: path.to_path_buf(),
            reason: crate::error::error_chain(&e),
        })?;
        let ov_cfg = lkd_openvino::EngineConfig {
            threads: cfg.intra_threads,
            precision,
            static_batch,
        };
        let engine = lkd_openvino::Engine::from_file(path, &ov_cfg)?;
        let ov = engine.info().clone();
        if ov.input_shape.len() != 4 {
            return Err(RuntimeError::Input {
                expected: "a rank-4 NCHW input".into(),
                found: format!("rank {} shape {:?}", ov.input_shape.len(), ov.input_shape),
                hint: "Export the classifier with an image input [N, C, H, W]".into(),
            });
        }
        let provider = match precision {
            Precision::F32 => "OpenVINO CPU (f32)",
            Precision::Bf16 => "OpenVINO CPU (bf16)",
        };
        let mut info = describe(
            path,
            metadata,
            ov.input_name,
            ov.input_shape,
            ov.output_name,
        )?;
        info.provider = provider;
        info.device = Device::Cpu;
        info.engine = Engine::OpenVino { precision };
        info.engine_version = ov.version;
        Ok(Self {
            backend: Backend::OpenVino(Box::new(engine)),
            info,
        })
    }

    fn wrap(
        session: Session,
        path: &Path,
        provider: &'static str,
        device: Device,
        spin: bool,
    ) -> Result<Self> {
        let bad = |reason: String| RuntimeError::BadModel {
            path: path.to_path_buf(),
            reason,
        };
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
        let input_shape =
            match input.dtype() {
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    shape,
                    ..
                } => shape.to_vec(),
                ValueType::Tensor { ty, .. } => return Err(RuntimeError::Input {
                    expected: "input of type float32".into(),
                    found: format!("input `{}` of type {ty}", input.name()),
                    hint: "Export the model with a float32 input (cast inside the graph if needed)"
                        .into(),
                }),
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
        let output_name = outputs
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| RuntimeError::Output {
                expected: "at least one output".into(),
                found: "none".into(),
            })?;
        let mut info = describe(
            path,
            metadata,
            input.name().to_string(),
            input_shape,
            output_name,
        )?;
        info.provider = provider;
        info.device = device;
        info.spin = spin;
        let build = ort_build_info()?.0;
        info.engine_version = build
            .strip_prefix("ORT Build Info: ")
            .unwrap_or(&build)
            .to_string();
        Ok(Self {
            backend: Backend::Ort(session),
            info,
        })
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
        let shape = [
            self.info.fixed_batch().unwrap_or(1),
            s[1] as usize,
            s[2] as usize,
            s[3] as usize,
        ];
        let zeros = vec![0f32; shape.iter().product()];
        for _ in 0..n {
            self.run(&zeros, shape)?;
        }
        Ok(())
    }

    /// Checks an NCHW shape against the session's input before anything runs.
    pub fn check_input(&self, shape: [usize; 4]) -> Result<()> {
        let expected = &self.info.input_shape;
        let ok = expected
            .iter()
            .zip(shape.iter())
            .all(|(&e, &g)| e <= 0 || e as usize == g);
        if ok {
            return Ok(());
        }
        let fmt_dim = |d: &i64| {
            if *d <= 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        };
        let exp = expected.iter().map(fmt_dim).collect::<Vec<_>>().join(", ");
        let hint = if expected[0] > 0 && expected[0] as usize != shape[0] {
            format!(
                "The graph has a fixed batch of {}; re-export it with a dynamic batch axis",
                expected[0]
            )
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
        let (dims, data) = match &mut self.backend {
            Backend::Ort(session) => {
                lkd_ort::run_f32(session, input, &shape).map_err(|e| match e {
                    OrtError::Output { expected, found } => {
                        RuntimeError::Output { expected, found }
                    }
                    OrtError::Run { source } => RuntimeError::Run(source.to_string()),
                    other => other.into(),
                })?
            }
            Backend::OpenVino(engine) => engine.run_f32(input, &shape).map_err(|e| match e {
                lkd_openvino::OvError::Output { expected, found } => {
                    RuntimeError::Output { expected, found }
                }
                other => RuntimeError::Run(crate::error::error_chain(&other)),
            })?,
        };
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
        Ok(Logits {
            data,
            batch: shape[0],
            classes,
        })
    }
}

/// The engine-independent part of [`ModelInfo`]: name, metadata, labels and FLOPs, with the
/// input/output as the engine reported them. The engine fields are filled in by the caller.
fn describe(
    path: &Path,
    metadata: BTreeMap<String, String>,
    input_name: String,
    input_shape: Vec<i64>,
    output_name: String,
) -> Result<ModelInfo> {
    let labels = match metadata.get(keys::LABELS) {
        Some(s) => serde_json::from_str::<Vec<String>>(s).map_err(|e| RuntimeError::BadModel {
            path: path.to_path_buf(),
            reason: format!(
                "metadata `{}` must be a JSON array of strings: {e}",
                keys::LABELS
            ),
        })?,
        None => Vec::new(),
    };
    let gflops = metadata
        .get(keys::GFLOPS)
        .and_then(|s| s.trim().parse::<f64>().ok());
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Ok(ModelInfo {
        name,
        path: path.to_path_buf(),
        metadata,
        input_name,
        input_shape,
        output_name,
        labels,
        gflops,
        provider: "",
        device: Device::Cpu,
        spin: false,
        engine: Engine::Ort,
        engine_version: String::new(),
    })
}
