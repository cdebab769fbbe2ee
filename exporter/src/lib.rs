//! `lkd-exporter` turns a model description ([`lkd_models::Graph`]) and its weights into an ONNX
//! file for ONNX Runtime: deploy rewrites as Graph → Graph passes ([`passes`]), a generic
//! lowering of the op list ([`lower`]), metadata (preprocessing, labels, provenance) and a
//! built-in parity check that runs the result in ORT against the un-rewritten graph.
//!
//! It owns no architecture knowledge (passes match op patterns) and must not link libtorch.
//!
//! The front door: a graph and its weights to ONNX bytes ([`export_bytes`]) or a file
//! ([`export`]), with the deploy passes and the parity check chosen in [`ExportOptions`];
//! [`quantize`] turns the float file into INT8 QDQ.
//!
//! ```
//! use lkd_exporter::{export_bytes, proto, random_weights, ExportOptions, ReparamMode};
//! use lkd_models::ModelConfig;
//!
//! let graph = ModelConfig::preset("slak_proxy").build()?;
//! let weights = random_weights(&graph, 0);
//! let opts = ExportOptions {
//!     reparam: ReparamMode::Dense,
//!     check: false, // the ORT parity check; on by default
//!     ..ExportOptions::default()
//! };
//! let (bytes, report) = export_bytes(&graph, &weights, &opts)?;
//! let model = proto::decode(&bytes)?;
//! assert_eq!(model.graph.input[0].name, lkd_exporter::INPUT_NAME);
//! assert!(report.metadata.contains_key(lkd_models::preprocess::keys::MEAN));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod lower;
pub mod ortrun;
pub mod passes;
pub mod proto;
pub mod quantize;

use lkd_models::checkpoint::{check_state_dict, StateDict};
use lkd_models::graph::Op;
use lkd_models::preprocess::keys;
use lkd_models::{Graph, HostTensor, ModelError};
use lkd_util::Device;
pub use lower::{ChannelsFirstNorm, LowerOptions, INPUT_NAME, OUTPUT_NAME};
pub use passes::{KernelForm, KernelGroup, PassStat};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("weight `{0}` is missing from the state dict")]
    MissingWeight(String),
    #[error("cannot lower the graph: {0}")]
    Lowering(String),
    #[error("invalid export options: {0}")]
    Options(String),
    #[error(transparent)]
    Ort(#[from] lkd_ort::OrtError),
    #[error("parity check failed: {detail}; no file was written (export with --no-check to inspect it anyway)")]
    CheckFailed { detail: String, report: CheckReport },
    #[error("cannot write `{path}`: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error("cannot write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize the ONNX model")]
    Encode(#[source] protobuf::Error),
}

/// What `--reparam` asks for, applied to every [`KernelGroup`].
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReparamMode {
    /// Time decomposed and dense per distinct layer shape in ORT on the target; keep the faster.
    #[default]
    Auto,
    /// Two depthwise convs (k×s and s×k, the small kernel added into one of them).
    Decomposed,
    /// One k×k depthwise conv.
    Dense,
    /// Leave every branch as trained.
    None,
}

/// How channels-last pointwise runs (Permute → LayerNorm → Linear → GELU → Linear → Permute)
/// are written.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LinearForm {
    /// 1×1 convs and a channels-first LayerNorm (ORT CPU, convnext_tiny, 1 thread: 131 ms with a
    /// transposed LN vs 138 ms for MatMul; see `examples/measure_forms.rs`).
    #[default]
    Conv,
    /// MatMul over the last dim between the two transposes, as the graph states it.
    #[cfg_attr(feature = "clap", value(name = "matmul"))]
    MatMul,
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub reparam: ReparamMode,
    pub fp16: bool,
    pub static_batch: Option<usize>,
    pub check: bool,
    /// Extra check inputs `[N, C, H, W]` (e.g. real images) besides the random ones.
    pub check_inputs: Vec<HostTensor>,
    /// Class names; `None` writes `class 0`, `class 1`, ...
    pub labels: Option<Vec<String>>,
    /// Caller's provenance (config hash, dataset, KD method, teacher, eval top-1, ...).
    pub provenance: BTreeMap<String, String>,
    pub linear_form: LinearForm,
    pub channels_first_norm: ChannelsFirstNorm,
    /// Pass switches, for A/B tests.
    pub fold_batchnorm: bool,
    pub fold_layer_scale: bool,
    /// Where ORT runs the check and the `auto` timings.
    pub target: Device,
    /// ORT intra-op threads for timing and checking (`None`: ORT's default).
    pub threads: Option<usize>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            reparam: ReparamMode::Auto,
            fp16: false,
            static_batch: None,
            check: true,
            check_inputs: vec![],
            labels: None,
            provenance: BTreeMap::new(),
            linear_form: LinearForm::default(),
            channels_first_norm: ChannelsFirstNorm::default(),
            fold_batchnorm: true,
            fold_layer_scale: true,
            target: Device::Cpu,
            threads: None,
        }
    }
}

/// The form picked for one kernel group, with the timings behind an `auto` choice.
#[derive(Clone, Debug, PartialEq)]
pub struct ReparamChoice {
    pub layer: String,
    pub shape: String,
    pub form: KernelForm,
    pub dense_ms: Option<f64>,
    pub decomposed_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// Batches compared (random, then caller-given).
    pub batches: usize,
    pub max_abs_err: f64,
    /// `max |a − b| / max |reference|`.
    pub max_rel_err: f64,
    /// "abs ≤ 1e-4" or "rel ≤ 1e-2".
    pub tolerance: String,
    pub passed: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timings {
    pub passes_ms: f64,
    /// Part of `passes_ms` spent timing kernel forms (`--reparam auto`).
    pub tune_ms: f64,
    pub lower_ms: f64,
    pub encode_ms: f64,
    pub check_ms: f64,
    pub write_ms: f64,
    pub total_ms: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportReport {
    pub passes: Vec<PassStat>,
    pub reparam: Vec<ReparamChoice>,
    pub check: Option<CheckReport>,
    pub timings: Timings,
    pub onnx_nodes: usize,
    pub bytes: usize,
    pub metadata: BTreeMap<String, String>,
}

impl ExportReport {
    /// One line: size, node count, check result and time.
    pub fn summary(&self) -> String {
        let check = match &self.check {
            Some(c) => format!(
                "check {} (max abs {:.2e}, rel {:.2e}, {})",
                if c.passed { "ok" } else { "FAILED" },
                c.max_abs_err,
                c.max_rel_err,
                c.tolerance
            ),
            None => "check skipped".into(),
        };
        format!(
            "{} ONNX nodes, {:.1} MB, {check}, {:.2} s",
            self.onnx_nodes,
            self.bytes as f64 / 1e6,
            self.timings.total_ms / 1e3
        )
    }
}

/// The metadata written into `metadata_props`.
pub fn metadata(
    graph: &Graph,
    opts: &ExportOptions,
    deploy: &str,
) -> Result<BTreeMap<String, String>, ExportError> {
    let mut m = graph.preprocess.to_metadata();
    let labels = match &opts.labels {
        Some(l) if l.len() != graph.num_classes => {
            return Err(ExportError::Options(format!(
                "{} labels given for a model with {} classes",
                l.len(),
                graph.num_classes
            )))
        }
        Some(l) => l.clone(),
        None => (0..graph.num_classes)
            .map(|i| format!("class {i}"))
            .collect(),
    };
    m.insert(
        keys::LABELS.into(),
        serde_json::to_string(&labels).expect("strings serialize"),
    );
    m.insert(keys::ARCH.into(), graph.arch.clone());
    m.insert(keys::PRESET.into(), graph.preset.clone());
    m.insert(keys::PARAMS.into(), graph.num_parameters().to_string());
    m.insert(keys::GFLOPS.into(), format!("{:.4}", graph.gflops()));
    m.insert("lkd.deploy".into(), deploy.to_string());
    for (k, v) in &opts.provenance {
        if m.contains_key(k) {
            return Err(ExportError::Options(format!(
                "provenance key `{k}` collides with a reserved metadata key"
            )));
        }
        m.insert(k.clone(), v.clone());
    }
    Ok(m)
}

/// A graph after the deploy passes, with what each pass did.
pub struct Deployed {
    pub graph: Graph,
    pub weights: StateDict,
    pub stats: Vec<PassStat>,
    pub reparam_choices: Vec<ReparamChoice>,
    /// Time spent timing kernel forms for `--reparam auto`.
    pub tune_ms: f64,
}

/// Runs the deploy passes selected by `opts` on copies of `graph` and `weights`.
pub fn apply_passes(
    graph: &Graph,
    weights: &StateDict,
    opts: &ExportOptions,
) -> Result<Deployed, ExportError> {
    let (mut g, mut w) = (graph.clone(), weights.clone());
    let mut stats = vec![
        passes::prune(&mut g, &mut w),
        passes::drop_identities(&mut g, &mut w),
    ];
    if opts.fold_batchnorm {
        stats.push(passes::fold_batchnorm(&mut g, &mut w)?);
    }
    if opts.fold_layer_scale {
        stats.push(passes::fold_layer_scale(&mut g, &mut w)?);
    }
    let mut choices = vec![];
    let mut tune_ms = 0.0;
    if opts.reparam != ReparamMode::None {
        let mut cache: HashMap<String, (KernelForm, f64, f64)> = HashMap::new();
        let mut plan = |grp: &KernelGroup| -> Result<KernelForm, ExportError> {
            let (form, dense, dec) = match opts.reparam {
                ReparamMode::Dense => (KernelForm::Dense, None, None),
                ReparamMode::Decomposed => (KernelForm::Decomposed, None, None),
                ReparamMode::None => (KernelForm::Unchanged, None, None),
                ReparamMode::Auto => {
                    let key = grp.shape_key();
                    let (form, d, c) = match cache.get(&key) {
                        Some(v) => *v,
                        None => {
                            let t = Instant::now();
                            // Decomposed first: a dense warm-up 2× slower than it settles the choice.
                            let c = time_kernel_form(grp, KernelForm::Decomposed, opts, None)?;
                            let d = time_kernel_form(grp, KernelForm::Dense, opts, Some(2.0 * c))?;
                            tune_ms += t.elapsed().as_secs_f64() * 1e3;
                            let v = (
                                if d < c {
                                    KernelForm::Dense
                                } else {
                                    KernelForm::Decomposed
                                },
                                d,
                                c,
                            );
                            cache.insert(key, v);
                            v
                        }
                    };
                    (form, Some(d), Some(c))
                }
            };
            choices.push(ReparamChoice {
                layer: grp.name.clone(),
                shape: grp.shape_key(),
                form,
                dense_ms: dense,
                decomposed_ms: dec,
            });
            Ok(form)
        };
        let (s, _) = passes::merge_kernels(&mut g, &mut w, &mut plan)?;
        stats.push(s);
    }
    if opts.linear_form == LinearForm::Conv {
        stats.push(passes::pointwise_to_conv(&mut g, &mut w));
    }
    g.validate()?;
    Ok(Deployed {
        graph: g,
        weights: w,
        stats,
        reparam_choices: choices,
        tune_ms,
    })
}

/// Micro model of one kernel group in `form`, timed in ORT on the target.
fn time_kernel_form(
    grp: &KernelGroup,
    form: KernelForm,
    opts: &ExportOptions,
    give_up_above: Option<f64>,
) -> Result<f64, ExportError> {
    use proto::{attr, node, tensor_f, value_info, Attr, Elem};
    let elem = if opts.fp16 { Elem::F16 } else { Elem::F32 };
    let batch = opts.static_batch.unwrap_or(1);
    let [h, w] = grp.input_hw;
    let c = grp.channels;
    let kernels: Vec<[usize; 2]> = match form {
        KernelForm::Dense => vec![grp.dense_kernel()],
        _ => {
            let mut t = grp.decomposed_targets();
            t.sort();
            t.dedup();
            t.iter().map(|&i| grp.kernels[i]).collect()
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut nodes, mut inits) = (vec![], vec![]);
    let x = if opts.fp16 {
        nodes.push(node(
            "Cast",
            "cast_in",
            &["x"],
            &["xh"],
            vec![attr("to", Attr::Int(elem.data_type() as i64))],
        ));
        "xh"
    } else {
        "x"
    };
    let mut outs = vec![];
    for (i, k) in kernels.iter().enumerate() {
        let wv: Vec<f32> = (0..c * k[0] * k[1])
            .map(|_| rng.gen_range(-0.1..0.1))
            .collect();
        inits.push(tensor_f(&format!("w{i}"), &[c, 1, k[0], k[1]], &wv, elem));
        inits.push(tensor_f(&format!("b{i}"), &[c], &vec![0.0; c], elem));
        let (ph, pw) = ((k[0] / 2) as i64, (k[1] / 2) as i64);
        let o = format!("c{i}");
        nodes.push(node(
            "Conv",
            &o,
            &[x, &format!("w{i}"), &format!("b{i}")],
            &[&o],
            vec![
                attr("kernel_shape", Attr::Ints(vec![k[0] as i64, k[1] as i64])),
                attr(
                    "strides",
                    Attr::Ints(grp.stride.iter().map(|&s| s as i64).collect()),
                ),
                attr("pads", Attr::Ints(vec![ph, pw, ph, pw])),
                attr("group", Attr::Int(c as i64)),
            ],
        ));
        outs.push(o);
    }
    let mut acc = outs[0].clone();
    for (i, o) in outs[1..].iter().enumerate() {
        let s = format!("s{i}");
        nodes.push(node("Add", &s, &[&acc, o], &[&s], vec![]));
        acc = s;
    }
    let fdt = onnx_protobuf::tensor_proto::DataType::FLOAT as i32;
    nodes.push(node(
        if opts.fp16 { "Cast" } else { "Identity" },
        "out",
        &[&acc],
        &["y"],
        if opts.fp16 {
            vec![attr("to", Attr::Int(fdt as i64))]
        } else {
            vec![]
        },
    ));
    let (oh, ow) = (
        (h + 2 * (kernels[0][0] / 2) - kernels[0][0]) / grp.stride[0] + 1,
        (w + 2 * (kernels[0][1] / 2) - kernels[0][1]) / grp.stride[1] + 1,
    );
    let g = onnx_protobuf::GraphProto {
        name: "kernel_form".into(),
        node: nodes,
        initializer: inits,
        input: vec![value_info("x", fdt, &[Ok(batch), Ok(c), Ok(h), Ok(w)])],
        output: vec![value_info("y", fdt, &[Ok(batch), Ok(c), Ok(oh), Ok(ow)])],
        ..Default::default()
    };
    let bytes = proto::encode(&proto::model(g, &BTreeMap::new())).map_err(ExportError::Encode)?;
    let mut s = ortrun::session(&bytes, opts.target, opts.threads)?;
    let input: Vec<f32> = (0..batch * c * h * w)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    Ok(ortrun::median_ms(
        &mut s,
        &input,
        &[batch, c, h, w],
        150.0,
        give_up_above,
    )?)
}

fn deploy_summary(opts: &ExportOptions, choices: &[ReparamChoice]) -> String {
    let mut forms: Vec<String> = choices
        .iter()
        .map(|c| format!("{}={}", c.layer, c.form.as_str()))
        .collect();
    forms.dedup();
    format!(
        "fold_batchnorm={} fold_layer_scale={} linear_form={:?} fp16={} reparam={:?}{}",
        opts.fold_batchnorm,
        opts.fold_layer_scale,
        opts.linear_form,
        opts.fp16,
        opts.reparam,
        if forms.is_empty() {
            String::new()
        } else {
            format!(" [{}]", forms.join(", "))
        }
    )
}

/// Passes + lowering + check, returning the ONNX bytes without writing them.
pub fn export_bytes(
    graph: &Graph,
    weights: &StateDict,
    opts: &ExportOptions,
) -> Result<(Vec<u8>, ExportReport), ExportError> {
    let t0 = Instant::now();
    graph.validate()?;
    check_state_dict(graph, weights)?;
    if opts.static_batch == Some(0) {
        return Err(ExportError::Options(
            "--static-batch must be at least 1".into(),
        ));
    }
    let mut report = ExportReport::default();
    let t = Instant::now();
    let Deployed {
        graph: g,
        weights: w,
        stats,
        reparam_choices: choices,
        tune_ms,
    } = apply_passes(graph, weights, opts)?;
    report.timings.passes_ms = t.elapsed().as_secs_f64() * 1e3;
    report.timings.tune_ms = tune_ms;
    report.passes = stats;
    report.metadata = metadata(graph, opts, &deploy_summary(opts, &choices))?;
    report.reparam = choices;

    let t = Instant::now();
    let lopts = LowerOptions {
        fp16: opts.fp16,
        static_batch: opts.static_batch,
        channels_first_norm: opts.channels_first_norm,
        metadata: report.metadata.clone(),
    };
    let model = lower::lower(&g, &w, &lopts)?;
    report.onnx_nodes = model.graph.node.len();
    report.timings.lower_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let bytes = proto::encode(&model).map_err(ExportError::Encode)?;
    drop(model);
    report.bytes = bytes.len();
    report.timings.encode_ms = t.elapsed().as_secs_f64() * 1e3;

    if opts.check {
        let t = Instant::now();
        let c = check(graph, weights, &bytes, opts)?;
        report.timings.check_ms = t.elapsed().as_secs_f64() * 1e3;
        if !c.passed {
            let detail = format!(
                "max abs error {:.3e}, max rel error {:.3e}, allowed {}",
                c.max_abs_err, c.max_rel_err, c.tolerance
            );
            return Err(ExportError::CheckFailed { detail, report: c });
        }
        report.check = Some(c);
    }
    report.timings.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok((bytes, report))
}

/// Exports to `out` atomically (temp file + rename): on any error no file is left there.
pub fn export(
    graph: &Graph,
    weights: &StateDict,
    opts: &ExportOptions,
    out: &Path,
) -> Result<ExportReport, ExportError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(ExportError::Output {
            path: out.to_path_buf(),
            reason: format!("directory `{}` does not exist", dir.display()),
        });
    }
    if out.is_dir() {
        return Err(ExportError::Output {
            path: out.to_path_buf(),
            reason: "it is a directory; give a file name like model.onnx".into(),
        });
    }
    let t0 = Instant::now();
    let (bytes, mut report) = export_bytes(graph, weights, opts)?;
    let t = Instant::now();
    lkd_util::write_atomic(out, &bytes).map_err(|e| ExportError::Write {
        path: e.path,
        source: e.source,
    })?;
    report.timings.write_ms = t.elapsed().as_secs_f64() * 1e3;
    report.timings.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Lowers the graph with no rewrites (fp32, MatMul form): the check's reference.
pub fn reference_bytes(
    graph: &Graph,
    weights: &StateDict,
    static_batch: Option<usize>,
) -> Result<Vec<u8>, ExportError> {
    let lopts = LowerOptions {
        static_batch,
        ..Default::default()
    };
    proto::encode(&lower::lower(graph, weights, &lopts)?).map_err(ExportError::Encode)
}

/// Seeded random weights for `graph` that make exports worth checking and timing: matrices
/// uniform in ±sqrt(3/fan_in), norm scales, layer scales and BatchNorm variances in [0.5, 1.5),
/// everything else (biases, means, tokens) in ±0.2, so folding or reparameterization errors
/// show in the logits.
pub fn random_weights(graph: &Graph, seed: u64) -> StateDict {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sd = StateDict::new();
    for p in &graph.params {
        let n = p.numel();
        let t = match p.dtype {
            lkd_models::graph::DType::I64 => HostTensor::i64(p.shape.clone(), vec![0; n]),
            lkd_models::graph::DType::F32 => {
                let data: Vec<f32> = if p.shape.len() >= 2
                    && !p.name.contains("token")
                    && !p.name.contains("pos_embed")
                {
                    let fan_in: usize = p.shape[1..].iter().product();
                    let b = (3.0 / fan_in as f32).sqrt();
                    (0..n).map(|_| rng.gen_range(-b..b)).collect()
                } else if p.name.ends_with("running_var")
                    || p.name.ends_with(".weight")
                    || p.name.ends_with("gamma")
                {
                    (0..n).map(|_| rng.gen_range(0.5..1.5)).collect()
                } else {
                    (0..n).map(|_| rng.gen_range(-0.2..0.2)).collect()
                };
                HostTensor::f32(p.shape.clone(), data)
            }
        };
        sd.insert(p.name.clone(), t);
    }
    sd
}

/// Seeded standard-normal inputs `[batch, C, H, W]` at the graph's input size.
pub fn random_input(graph: &Graph, batch: usize, seed: u64) -> HostTensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let [h, w] = graph.input_size;
    let n = batch * graph.in_chans * h * w;
    let data = (0..n)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    HostTensor::f32(vec![batch, graph.in_chans, h, w], data)
}

/// Largest absolute and relative (to the reference's largest magnitude) differences.
pub fn compare(out: &[f32], reference: &[f32]) -> (f64, f64) {
    let abs = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    let scale = reference
        .iter()
        .map(|x| (*x as f64).abs())
        .fold(0.0, f64::max)
        .max(1e-12);
    let nan = out.iter().any(|x| !x.is_finite());
    if nan {
        (f64::INFINITY, f64::INFINITY)
    } else {
        (abs, abs / scale)
    }
}

/// Runs `bytes` and the un-rewritten graph in ORT on the same inputs.
pub fn check(
    graph: &Graph,
    weights: &StateDict,
    bytes: &[u8],
    opts: &ExportOptions,
) -> Result<CheckReport, ExportError> {
    let batch = opts.static_batch.unwrap_or(2);
    let mut inputs = vec![random_input(graph, batch, 0), random_input(graph, batch, 1)];
    let [h, w] = graph.input_size;
    for t in &opts.check_inputs {
        let expected = [
            opts.static_batch.unwrap_or(t.shape[0]),
            graph.in_chans,
            h,
            w,
        ];
        if t.shape != expected {
            return Err(ExportError::Options(format!(
                "check input has shape {:?}, expected {expected:?}",
                t.shape
            )));
        }
        inputs.push(t.clone());
    }
    let reference = reference_bytes(graph, weights, opts.static_batch)?;
    let mut rs = ortrun::session(&reference, opts.target, opts.threads)?;
    let mut es = ortrun::session(bytes, opts.target, opts.threads)?;
    let (mut max_abs, mut max_rel) = (0f64, 0f64);
    for x in &inputs {
        let data = x
            .as_f32()
            .ok_or_else(|| ExportError::Options("check inputs must be f32".into()))?;
        let r = ortrun::run(&mut rs, data, &x.shape)?;
        let e = ortrun::run(&mut es, data, &x.shape)?;
        let (a, rel) = compare(&e, &r);
        max_abs = max_abs.max(a);
        max_rel = max_rel.max(rel);
    }
    let (tolerance, passed) = if opts.fp16 {
        ("rel ≤ 1e-2".to_string(), max_rel <= 1e-2)
    } else {
        ("abs ≤ 1e-4".to_string(), max_abs <= 1e-4)
    };
    Ok(CheckReport {
        batches: inputs.len(),
        max_abs_err: max_abs,
        max_rel_err: max_rel,
        tolerance,
        passed,
    })
}

/// Names of ops that survive into the exported graph, for reports and tests.
pub fn op_histogram(graph: &Graph) -> BTreeMap<&'static str, usize> {
    let live = lower::live_nodes(graph);
    let mut h = BTreeMap::new();
    for (n, l) in graph.nodes.iter().zip(live) {
        if l && !matches!(n.op, Op::Input) {
            *h.entry(n.op.kind_name()).or_insert(0) += 1;
        }
    }
    h
}
