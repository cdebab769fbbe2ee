//! INT8 post-training quantization of exported classifiers, written as QDQ
//! (QuantizeLinear → DequantizeLinear pairs) so ONNX Runtime fuses Conv / MatMul / Gemm into its
//! integer kernels. Weights: int8, symmetric, per output channel. Activations: per tensor,
//! uint8 (asymmetric) or int8 (symmetric), ranges calibrated by running the float model in ORT
//! with the intermediate tensors as extra outputs. LayerNorm, GELU, Softmax and residual Adds
//! stay float. An accuracy budget keeps the most sensitive layers float.
//!
//! Inputs arrive as preprocessed f32 NCHW batches; reading datasets is the caller's business
//! (this crate must not link libtorch).

pub mod activation;
pub mod calib;
pub mod qdq;

use std::collections::{BTreeMap, BTreeSet};

use lkd_models::preprocess::Preprocess;
pub use lkd_ort::Batch;
use onnx_protobuf::ModelProto;

pub use activation::{ActType, Ranges, WeightRange};
pub use calib::CalibMethod;
pub use qdq::Layer;

/// Metadata keys the quantized model gains on top of the float model's.
pub mod keys {
    pub const FORMAT: &str = "lkd.quant.format";
    pub const METHOD: &str = "lkd.quant.method";
    pub const ACTIVATION_TYPE: &str = "lkd.quant.activation_type";
    pub const WEIGHT_TYPE: &str = "lkd.quant.weight_type";
    pub const CALIB_SIZE: &str = "lkd.quant.calib_size";
    pub const CALIB_DATA: &str = "lkd.quant.calib_data"; // dataset and split, when known
    pub const FLOAT_LAYERS: &str = "lkd.quant.float_layers"; // JSON array of node names
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(
        "the model is already quantized ({0}); quantize the float model exported by `lkd export`"
    )]
    AlreadyQuantized(String),
    #[error("not an image classifier: {0}")]
    NotClassifier(String),
    #[error(
        "the model has no usable lkd preprocessing metadata; export it with `lkd export`, or give \
         --input-size, --channels, --mean and --std"
    )]
    NoPreprocess(#[source] lkd_models::PreprocessSpecError),
    #[error("the file is not a readable ONNX model (its protobuf does not parse)")]
    Decode(#[source] protobuf::Error),
    #[error("cannot serialize the quantized ONNX model")]
    Encode(#[source] protobuf::Error),
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("invalid quantization options: {0}")]
    Options(String),
    /// Environment, session building and runs through the shared ONNX Runtime core (its
    /// messages carry their own hints).
    #[error(transparent)]
    Ort(#[from] lkd_ort::OrtError),
    #[error("ONNX Runtime failed while {what}")]
    OrtCall {
        what: String,
        #[source]
        source: ort::Error,
    },
}

pub type Result<T, E = QuantizeError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub method: CalibMethod,
    pub activation_type: ActType,
    /// 7-bit by default: the same answers on every CPU (see [`WeightRange`]).
    pub weight_range: WeightRange,
    /// Node names to keep float whatever the budget says.
    pub float_layers: Vec<String>,
    /// ORT intra-op threads for calibration and evaluation.
    pub threads: Option<usize>,
    /// Where the calibration images came from (`fashion-mnist/train`), recorded as
    /// `lkd.quant.calib_data`.
    pub calib_data: Option<String>,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            method: CalibMethod::Percentile(99.99),
            activation_type: ActType::U8,
            weight_range: WeightRange::default(),
            float_layers: vec![],
            threads: None,
            calib_data: None,
        }
    }
}

/// Labelled, preprocessed images for measuring top-1.
#[derive(Clone, Debug, Default)]
pub struct EvalSet {
    pub batches: Vec<Batch>,
    /// One label per image, in batch order.
    pub labels: Vec<usize>,
}

impl EvalSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One step of the budget search: how many layers were float and the top-1 that gave.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchStep {
    pub float_layers: usize,
    pub top1: f64,
}

#[derive(Clone, Debug, Default)]
pub struct QuantizeReport {
    pub layers_total: usize,
    pub layers_quantized: usize,
    /// Nodes left float: forced by the caller, then the most sensitive ones.
    pub float_layers: Vec<String>,
    /// Per-layer relative logit error when only that layer is quantized (budget search only).
    pub sensitivity: Vec<(String, f64)>,
    pub float_top1: Option<f64>,
    pub int8_top1: Option<f64>,
    pub eval_images: usize,
    pub search: Vec<SearchStep>,
    pub calib_images: usize,
    pub quantized_tensors: usize,
    pub float_bytes: usize,
    pub int8_bytes: usize,
}

/// A float model checked and analysed, ready to calibrate.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub model: ModelProto,
    pub layers: Vec<Layer>,
    pub bytes: usize,
}

/// Decodes `bytes` and checks that it is a float image classifier; `require_metadata` demands
/// lkd preprocessing metadata (callers that got preprocessing flags pass `false`).
pub fn prepare(bytes: &[u8], require_metadata: bool) -> Result<Prepared> {
    let model = crate::proto::decode(bytes).map_err(QuantizeError::Decode)?;
    qdq::check_float(&model)?;
    qdq::check_classifier(&model)?;
    if require_metadata {
        let meta: BTreeMap<String, String> = model
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        Preprocess::from_metadata(&meta).map_err(QuantizeError::NoPreprocess)?;
    }
    let layers = qdq::find_layers(&model)?;
    if layers.is_empty() {
        return Err(QuantizeError::NotClassifier(
            "no Conv, MatMul or Gemm with constant weights to quantize".into(),
        ));
    }
    Ok(Prepared {
        model,
        layers,
        bytes: bytes.len(),
    })
}

impl Prepared {
    /// Activation tensors that need a range: inputs and outputs of every quantizable layer.
    pub fn activation_tensors(&self) -> Vec<String> {
        let outputs: BTreeSet<&str> = self
            .model
            .graph
            .output
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        let mut t = BTreeSet::new();
        for l in &self.layers {
            t.insert(l.input.clone());
            if !outputs.contains(l.output.as_str()) {
                t.insert(l.output.clone());
            }
        }
        t.into_iter().collect()
    }

    /// Runs the float model over `batches` and derives one range per activation tensor.
    pub fn calibrate(&self, batches: &[Batch], opts: &QuantizeOptions) -> Result<Ranges> {
        calib::collect(
            &self.model,
            &self.activation_tensors(),
            batches,
            opts.method,
            opts.activation_type,
            opts.threads,
        )
    }

    /// The QDQ model with every layer quantized except `float` (node names).
    pub fn quantize(
        &self,
        ranges: &Ranges,
        float: &BTreeSet<String>,
        opts: &QuantizeOptions,
        calib_size: usize,
    ) -> Result<Vec<u8>> {
        let mut m = qdq::rewrite(&self.model, &self.layers, float, ranges, opts)?;
        let mut floats: Vec<&String> = self
            .layers
            .iter()
            .map(|l| &l.name)
            .filter(|n| float.contains(*n))
            .collect();
        floats.dedup();
        let weight = match opts.weight_range {
            WeightRange::Bits7 => "int8 symmetric per-channel, 7-bit range",
            WeightRange::Bits8 => "int8 symmetric per-channel",
        };
        let entries = [
            (keys::FORMAT, "QDQ".to_string()),
            (keys::METHOD, opts.method.to_string()),
            (
                keys::ACTIVATION_TYPE,
                opts.activation_type.as_str().to_string(),
            ),
            (keys::WEIGHT_TYPE, weight.to_string()),
            (keys::CALIB_SIZE, calib_size.to_string()),
            (
                keys::FLOAT_LAYERS,
                serde_json::to_string(&floats).expect("strings serialize"),
            ),
        ];
        let source = opts.calib_data.clone().map(|d| (keys::CALIB_DATA, d));
        m.metadata_props
            .retain(|e| !e.key.starts_with("lkd.quant."));
        for (k, v) in entries.into_iter().chain(source) {
            m.metadata_props
                .push(onnx_protobuf::StringStringEntryProto {
                    key: k.into(),
                    value: v,
                    ..Default::default()
                });
        }
        crate::proto::encode(&m).map_err(QuantizeError::Encode)
    }
}

/// Top-1 (percent) and the logits of `bytes` on `eval`.
pub fn evaluate(bytes: &[u8], eval: &EvalSet, threads: Option<usize>) -> Result<(f64, Vec<f32>)> {
    let mut s = crate::ortrun::session(bytes, crate::Device::Cpu, threads)?;
    let mut logits = Vec::new();
    for b in &eval.batches {
        logits.extend(crate::ortrun::run(&mut s, &b.data, &b.shape)?);
    }
    if eval.is_empty() || logits.len() % eval.len() != 0 {
        return Err(QuantizeError::Options(format!(
            "{} logits for {} eval labels",
            logits.len(),
            eval.len()
        )));
    }
    let classes = logits.len() / eval.len();
    let correct = logits
        .chunks(classes)
        .zip(&eval.labels)
        .filter(|(row, &l)| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                == Some(l)
        })
        .count();
    Ok((100.0 * correct as f64 / eval.len() as f64, logits))
}

fn relative_error(out: &[f32], reference: &[f32]) -> f64 {
    let err: f64 = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let norm: f64 = reference.iter().map(|b| (*b as f64).powi(2)).sum();
    err / norm.max(1e-30)
}

/// Calibrates, quantizes and, with `eval`, keeps the most sensitive layers float until the
/// top-1 drop on `eval` is at most `budget` points.
pub fn quantize(
    bytes: &[u8],
    calib: &[Batch],
    eval: Option<(&EvalSet, Option<f64>)>,
    opts: &QuantizeOptions,
    require_metadata: bool,
) -> Result<(Vec<u8>, QuantizeReport)> {
    let prepared = prepare(bytes, require_metadata)?;
    let calib_size: usize = calib.iter().map(|b| b.shape[0]).sum();
    if calib_size == 0 {
        return Err(QuantizeError::Calibration("no calibration images".into()));
    }
    let ranges = prepared.calibrate(calib, opts)?;
    let names: BTreeSet<&str> = prepared.layers.iter().map(|l| l.name.as_str()).collect();
    for f in &opts.float_layers {
        if !names.contains(f.as_str()) {
            return Err(QuantizeError::Options(format!(
                "--float-layer `{f}` is not a quantizable node; candidates: {}",
                names.iter().copied().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut float: BTreeSet<String> = opts.float_layers.iter().cloned().collect();
    let mut report = QuantizeReport {
        layers_total: prepared.layers.len(),
        calib_images: calib_size,
        quantized_tensors: ranges.len(),
        float_bytes: bytes.len(),
        ..Default::default()
    };
    let mut out = prepared.quantize(&ranges, &float, opts, calib_size)?;
    if let Some((eval, budget)) = eval {
        let (f_top1, f_logits) = evaluate(bytes, eval, opts.threads)?;
        let (mut q_top1, _) = evaluate(&out, eval, opts.threads)?;
        report.float_top1 = Some(f_top1);
        report.eval_images = eval.len();
        report.search.push(SearchStep {
            float_layers: float.len(),
            top1: q_top1,
        });
        if let Some(budget) = budget.filter(|&b| f_top1 - q_top1 > b) {
            // Sensitivity: logit error with only that layer quantized.
            let mut sens = vec![];
            for l in prepared.layers.iter().filter(|l| !float.contains(&l.name)) {
                let others: BTreeSet<String> = prepared
                    .layers
                    .iter()
                    .map(|o| o.name.clone())
                    .filter(|n| n != &l.name)
                    .collect();
                let one = prepared.quantize(&ranges, &others, opts, calib_size)?;
                let (_, lg) = evaluate(&one, eval, opts.threads)?;
                sens.push((l.name.clone(), relative_error(&lg, &f_logits)));
            }
            sens.sort_by(|a, b| b.1.total_cmp(&a.1));
            report.sensitivity = sens.clone();
            for (name, _) in sens {
                float.insert(name);
                out = prepared.quantize(&ranges, &float, opts, calib_size)?;
                q_top1 = evaluate(&out, eval, opts.threads)?.0;
                report.search.push(SearchStep {
                    float_layers: float.len(),
                    top1: q_top1,
                });
                if f_top1 - q_top1 <= budget {
                    break;
                }
            }
        }
        report.int8_top1 = Some(q_top1);
    }
    report.float_layers = prepared
        .layers
        .iter()
        .map(|l| l.name.clone())
        .filter(|n| float.contains(n))
        .collect();
    report.layers_quantized = report.layers_total - report.float_layers.len();
    report.int8_bytes = out.len();
    Ok((out, report))
}
