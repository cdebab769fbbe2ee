//! One compiled model on OpenVINO's CPU plugin: load an exported `.onnx`, compile it with a
//! thread count and precision, run f32 NCHW batches, return the first output (the logits).

use std::fmt;
use std::path::{Path, PathBuf};

use openvino::{
    CompiledModel, Core, DeviceType, ElementType, InferRequest, Model, PartialShape, PropertyKey,
    RwPropertyKey, Shape, Tensor,
};

use crate::error::{OvError, Result};
use crate::library::load_library;

/// The arithmetic the CPU plugin computes in. OpenVINO's own default is bf16 on CPUs with
/// AVX512_BF16/AMX, which changes the logits; here f32 is the default and bf16 must be asked for.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub enum Precision {
    #[default]
    #[strum(to_string = "f32", serialize = "fp32")]
    F32,
    Bf16,
}

impl Precision {
    /// The value of OpenVINO's `INFERENCE_PRECISION_HINT`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// `s` (any case, surrounding spaces ignored) as a precision; the error lists the accepted
    /// names.
    pub fn parse(s: &str) -> Result<Self> {
        lkd_util::parse_named(s.trim()).map_err(|e| OvError::BadPrecision {
            found: s.to_string(),
            expected: e.expected,
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to compile a model.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// CPU threads for one inference; `None` lets OpenVINO pick (all cores).
    pub threads: Option<usize>,
    pub precision: Precision,
    /// Fix a dynamic batch axis to this size before compiling (static shapes compile to faster
    /// kernels); `None` keeps the model's shape, so any batch size runs.
    pub static_batch: Option<usize>,
}

/// What was compiled, read back from the compiled model (not just what was asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    pub library: PathBuf,
    pub version: String,
    pub device: String,
    pub precision: String,
    pub threads: String,
    pub input_name: String,
    /// The input shape; `-1` marks a dynamic dimension.
    pub input_shape: Vec<i64>,
    /// The first output's name (the one `run_f32` returns).
    pub output_name: String,
}

/// A compiled model and its one inference request. Fields drop in order: the request before the
/// compiled model before the core that owns the plugin.
pub struct Engine {
    request: InferRequest,
    input: Option<(Vec<usize>, Tensor)>,
    // Kept alive for the request; never read.
    _compiled: CompiledModel,
    _core: Core,
    info: EngineInfo,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("info", &self.info).finish()
    }
}

/// Largest input a run accepts, in elements (4 GiB of f32): bounds the copy before any work.
const MAX_INPUT_ELEMENTS: usize = 1 << 30;

impl Engine {
    /// Reads the ONNX file at `path` and compiles it for the CPU.
    pub fn from_file(path: &Path, cfg: &EngineConfig) -> Result<Self> {
        validate(cfg)?;
        let library = load_library()?;
        if !path.is_file() {
            return Err(OvError::ModelNotFound(path.to_path_buf()));
        }
        let path_str = path.to_str().ok_or_else(|| {
            OvError::Setting(format!(
                "model path `{}` is not valid UTF-8, which OpenVINO's C API requires",
                path.display()
            ))
        })?;
        let mut core = Core::new().map_err(|source| OvError::Init {
            source: source.into(),
        })?;
        let model = core
            .read_model_from_file(path_str, "")
            .map_err(|source| OvError::Load {
                path: path.to_path_buf(),
                source: source.into(),
            })?;
        Self::compile(core, model, cfg, library)
    }

    /// Reads ONNX bytes held in memory and compiles them for the CPU.
    pub fn from_memory(bytes: &[u8], cfg: &EngineConfig) -> Result<Self> {
        validate(cfg)?;
        let library = load_library()?;
        let mut core = Core::new().map_err(|source| OvError::Init {
            source: source.into(),
        })?;
        let model = core
            .read_model_from_buffer(bytes, None)
            .map_err(|source| OvError::Load {
                path: PathBuf::from("<memory>"),
                source: source.into(),
            })?;
        Self::compile(core, model, cfg, library)
    }

    fn compile(
        mut core: Core,
        mut model: Model,
        cfg: &EngineConfig,
        library: PathBuf,
    ) -> Result<Self> {
        let n_inputs = model
            .get_inputs_len()
            .map_err(OvError::run("count inputs"))?;
        let n_outputs = model
            .get_outputs_len()
            .map_err(OvError::run("count outputs"))?;
        if n_inputs != 1 || n_outputs == 0 {
            return Err(OvError::Model(format!(
                "expected one input and at least one output, found {n_inputs} input(s) and {n_outputs} output(s)"
            )));
        }
        let input = model
            .get_input_by_index(0)
            .map_err(OvError::run("read the input"))?;
        let input_name = input.get_name().map_err(OvError::run("read the input"))?;
        let element = input
            .get_element_type()
            .map_err(OvError::run("read the input"))?;
        if element != ElementType::F32 {
            return Err(OvError::Model(format!(
                "input `{input_name}` is {element}; this engine runs float32 inputs"
            )));
        }
        let dims = input
            .get_partial_shape()
            .map_err(OvError::run("read the input"))?
            .get_dimensions()
            .to_vec();
        if dims.len() != 4 {
            return Err(OvError::Model(format!(
                "input `{input_name}` has rank {}, expected NCHW (rank 4)",
                dims.len()
            )));
        }
        if let Some(n) = cfg.static_batch {
            if dims[1..].iter().any(|d| d.is_dynamic()) {
                return Err(OvError::Setting(format!(
                    "a static batch needs fixed C, H, W, but input `{input_name}` has dynamic ones"
                )));
            }
            // A graph exported with a fixed batch keeps it: compiling it for another would
            // run a model its exporter did not check.
            if !dims[0].is_dynamic() && dims[0].get_min() != n as i64 {
                return Err(OvError::Setting(format!(
                    "input `{input_name}` has a fixed batch of {}; it cannot be compiled for a batch of {n}",
                    dims[0].get_min()
                )));
            }
            let fixed: Vec<i64> = std::iter::once(n as i64)
                .chain(dims[1..].iter().map(|d| d.get_min()))
                .collect();
            let shape = PartialShape::new_static(4, &fixed).map_err(OvError::run("reshape"))?;
            model
                .reshape_single_input(&shape)
                .map_err(OvError::run("reshape"))?;
        }

        let cpu = DeviceType::CPU;
        let mut props: Vec<(RwPropertyKey, &'static str, String)> = vec![
            (
                RwPropertyKey::HintInferencePrecision,
                "INFERENCE_PRECISION_HINT",
                cfg.precision.as_str().into(),
            ),
            // Batch-1 latency: one stream, all threads on one request.
            (
                RwPropertyKey::HintPerformanceMode,
                "PERFORMANCE_HINT",
                "LATENCY".into(),
            ),
            (RwPropertyKey::NumStreams, "NUM_STREAMS", "1".into()),
        ];
        if let Some(n) = cfg.threads {
            props.push((
                RwPropertyKey::InferenceNumThreads,
                "INFERENCE_NUM_THREADS",
                n.to_string(),
            ));
        }
        for (key, name, value) in props {
            core.set_property(&cpu, &key, &value)
                .map_err(|source| OvError::Config {
                    key: name,
                    value,
                    source: source.into(),
                })?;
        }
        let compiled = core
            .compile_model(&model, DeviceType::CPU)
            .map_err(|source| OvError::Compile {
                source: source.into(),
            })?;
        let read = |key: RwPropertyKey| -> Result<String> {
            compiled
                .get_property(&PropertyKey::Rw(key))
                .map(|v| v.into_owned())
                .map_err(OvError::run("read a compiled property"))
        };
        let precision = read(RwPropertyKey::HintInferencePrecision)?;
        if precision != cfg.precision.as_str() {
            return Err(OvError::PrecisionUnavailable {
                requested: cfg.precision.as_str(),
                found: precision,
            });
        }
        let threads = read(RwPropertyKey::InferenceNumThreads)?;
        let device = core
            .get_property(&cpu, &PropertyKey::DeviceFullName)
            .unwrap_or_else(|_| "CPU".into());
        let input_shape = compiled
            .get_input()
            .and_then(|n| n.get_partial_shape())
            .map_err(OvError::run("read the compiled input"))?
            .get_dimensions()
            .iter()
            .map(|d| if d.is_dynamic() { -1 } else { d.get_min() })
            .collect();
        let output_name = compiled
            .get_output_by_index(0)
            .and_then(|n| n.get_name())
            .map_err(OvError::run("read the compiled output"))?;
        let mut compiled = compiled;
        let request = compiled
            .create_infer_request()
            .map_err(OvError::run("create an inference request"))?;
        let info = EngineInfo {
            library,
            version: openvino::version().build_number,
            device,
            precision,
            threads,
            input_name,
            input_shape,
            output_name,
        };
        Ok(Self {
            request,
            input: None,
            _compiled: compiled,
            _core: core,
            info,
        })
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// One forward pass of an f32 NCHW batch; returns the first output's shape and values (the
    /// same contract as `lkd_ort::run_f32`).
    pub fn run_f32(&mut self, input: &[f32], shape: &[usize]) -> Result<(Vec<i64>, Vec<f32>)> {
        self.check_input(input, shape)?;
        let reuse = matches!(&self.input, Some((s, _)) if s.as_slice() == shape);
        if !reuse {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let shape_ov = Shape::new(&dims).map_err(OvError::run("make the input shape"))?;
            let tensor = Tensor::new(ElementType::F32, &shape_ov)
                .map_err(OvError::run("allocate the input"))?;
            self.input = Some((shape.to_vec(), tensor));
        }
        let (_, tensor) = self.input.as_mut().expect("input tensor set above");
        tensor
            .get_data_mut::<f32>()
            .map_err(OvError::run("write the input"))?
            .copy_from_slice(input);
        self.request
            .set_input_tensor(tensor)
            .map_err(OvError::run("set the input"))?;
        self.request.infer().map_err(OvError::run("infer"))?;
        let out = self
            .request
            .get_output_tensor_by_index(0)
            .map_err(OvError::run("read the output"))?;
        let element = out
            .get_element_type()
            .map_err(OvError::run("read the output"))?;
        if element != ElementType::F32 {
            return Err(OvError::Output {
                expected: "a float32 tensor as the first output".into(),
                found: format!("{element}"),
            });
        }
        let oshape = out
            .get_shape()
            .map_err(OvError::run("read the output"))?
            .get_dimensions()
            .to_vec();
        let data = out
            .get_data::<f32>()
            .map_err(OvError::run("read the output"))?
            .to_vec();
        Ok((oshape, data))
    }

    fn check_input(&self, input: &[f32], shape: &[usize]) -> Result<()> {
        let want = &self.info.input_shape;
        if shape.len() != want.len() {
            return Err(OvError::Input(format!(
                "shape {shape:?} has rank {}, the model's input `{}` has {want:?}",
                shape.len(),
                self.info.input_name
            )));
        }
        if let Some(i) = (0..shape.len()).find(|&i| want[i] >= 0 && want[i] as usize != shape[i]) {
            return Err(OvError::Input(format!(
                "dimension {i} is {} but the model's input `{}` is {want:?} (-1: any)",
                shape[i], self.info.input_name
            )));
        }
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n > 0 && n <= MAX_INPUT_ELEMENTS)
            .ok_or_else(|| {
                OvError::Input(format!(
                    "shape {shape:?} is empty or larger than {MAX_INPUT_ELEMENTS} elements"
                ))
            })?;
        if n != input.len() {
            return Err(OvError::Input(format!(
                "shape {shape:?} holds {n} values but {} were given",
                input.len()
            )));
        }
        Ok(())
    }
}

fn validate(cfg: &EngineConfig) -> Result<()> {
    if cfg.threads == Some(0) {
        return Err(OvError::Setting("threads must be at least 1".into()));
    }
    if cfg.static_batch == Some(0) {
        return Err(OvError::Setting("static batch must be at least 1".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's batcher thread owns its model: the engine must move between threads.
    #[test]
    fn engine_is_send() {
        fn send<T: Send>() {}
        send::<Engine>();
    }

    #[test]
    fn precision_parses_and_rejects() {
        assert_eq!(Precision::parse("F32").unwrap(), Precision::F32);
        assert_eq!(Precision::parse("fp32").unwrap(), Precision::F32);
        assert_eq!(Precision::parse(" bf16 ").unwrap(), Precision::Bf16);
        assert_eq!(
            (Precision::F32.as_str(), Precision::Bf16.as_str()),
            ("f32", "bf16")
        );
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        assert_eq!(
            Precision::parse("int8").unwrap_err().to_string(),
            "unknown precision `int8`: expected f32 or bf16"
        );
        assert_eq!(Precision::default(), Precision::F32);
    }
}
