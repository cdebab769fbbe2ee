//! Activation ranges: the float model runs in ORT with every tensor to quantize added as a graph
//! output; each tensor's values go into a histogram that widens as new extremes arrive.

use std::collections::BTreeMap;

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{type_proto, ModelProto, TypeProto, ValueInfoProto};
use ort::value::TensorRef;
use protobuf::MessageField;

use super::activation::{ActType, Ranges};
use super::{Batch, QuantizeError, Result};

#[derive(Clone, Copy, Debug, PartialEq, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum CalibMethod {
    MinMax,
    /// Clip both tails at this percentile (e.g. 99.99).
    Percentile(f64),
    /// TensorRT-style: the |x| threshold minimizing KL(P‖Q) against 128 quantized bins.
    Entropy,
}

impl CalibMethod {
    /// The method's name, without its parameter.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The name and its parameter, as `lkd.quant.method` records it: `minmax`, `percentile 99.99`.
impl std::fmt::Display for CalibMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())?;
        if let CalibMethod::Percentile(p) = self {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

const BINS: usize = 4096;
const ENTROPY_BINS: usize = 2048;
const QUANT_BINS: usize = 128;

/// A histogram over [lo, hi] with running min/max.
#[derive(Clone, Debug)]
pub struct Histogram {
    pub lo: f32,
    pub hi: f32,
    pub bins: Vec<u64>,
    pub min: f32,
    pub max: f32,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            lo: 0.0,
            hi: 0.0,
            bins: vec![],
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }

    fn width(&self) -> f32 {
        (self.hi - self.lo) / self.bins.len() as f32
    }

    pub fn add(&mut self, data: &[f32], with_bins: bool) {
        let (mut mn, mut mx) = (f32::INFINITY, f32::NEG_INFINITY);
        for &x in data.iter().filter(|x| x.is_finite()) {
            mn = mn.min(x);
            mx = mx.max(x);
        }
        if mn > mx {
            return;
        }
        self.min = self.min.min(mn);
        self.max = self.max.max(mx);
        if !with_bins {
            return;
        }
        if self.bins.is_empty() {
            self.lo = mn;
            // A constant tensor still needs a non-empty span.
            self.hi = if mx > mn {
                mx
            } else {
                mn + mn.abs().max(1e-6) * 1e-3
            };
            self.bins = vec![0; BINS];
        } else if mn < self.lo || mx > self.hi {
            self.rebin(self.lo.min(mn), self.hi.max(mx));
        }
        let (lo, w, n) = (self.lo, self.width(), self.bins.len());
        for &x in data.iter().filter(|x| x.is_finite()) {
            let i = (((x - lo) / w) as usize).min(n - 1);
            self.bins[i] += 1;
        }
    }

    /// Moves every old bin's count to the new bin holding its centre.
    fn rebin(&mut self, lo: f32, hi: f32) {
        let (olo, ow) = (self.lo, self.width());
        let n = self.bins.len();
        let nw = (hi - lo) / n as f32;
        let mut bins = vec![0u64; n];
        for (i, &c) in self.bins.iter().enumerate().filter(|(_, &c)| c > 0) {
            let centre = olo + (i as f32 + 0.5) * ow;
            bins[(((centre - lo) / nw).max(0.0) as usize).min(n - 1)] += c;
        }
        (self.lo, self.hi, self.bins) = (lo, hi, bins);
    }

    /// The value below which fraction `q` of the samples lie.
    fn quantile(&self, q: f64) -> f32 {
        let total: u64 = self.bins.iter().sum();
        let target = (q * total as f64).ceil() as u64;
        let mut acc = 0u64;
        for (i, &c) in self.bins.iter().enumerate() {
            acc += c;
            if acc >= target {
                return self.lo + (i as f32 + 1.0) * self.width();
            }
        }
        self.hi
    }

    /// |x| folded into `n` bins over [0, max|x|].
    fn abs_bins(&self, n: usize) -> (Vec<f64>, f32) {
        let amax = self.lo.abs().max(self.hi.abs());
        let mut out = vec![0f64; n];
        let w = self.width();
        for (i, &c) in self.bins.iter().enumerate() {
            let centre = (self.lo + (i as f32 + 0.5) * w).abs();
            out[((centre / amax * n as f32) as usize).min(n - 1)] += c as f64;
        }
        (out, amax)
    }

    /// The range `method` picks for activations of type `act`.
    pub fn range(&self, method: CalibMethod, act: ActType) -> (f32, f32) {
        let (lo, hi) = match method {
            CalibMethod::MinMax => (self.min, self.max),
            CalibMethod::Percentile(p) => match act {
                ActType::U8 => (
                    self.quantile(1.0 - p / 100.0) - self.width(),
                    self.quantile(p / 100.0),
                ),
                ActType::I8 => {
                    let (bins, amax) = self.abs_bins(BINS);
                    let total: f64 = bins.iter().sum();
                    let target = p / 100.0 * total;
                    let mut acc = 0.0;
                    let i = bins.iter().position(|&c| {
                        acc += c;
                        acc >= target
                    });
                    let t = (i.unwrap_or(BINS - 1) + 1) as f32 * amax / BINS as f32;
                    (-t, t)
                }
            },
            CalibMethod::Entropy => {
                let (bins, amax) = self.abs_bins(ENTROPY_BINS);
                let t = kl_threshold(&bins, QUANT_BINS) as f32 * amax / ENTROPY_BINS as f32;
                (-t, t)
            }
        };
        // Never wider than what was seen.
        (lo.max(self.min), hi.min(self.max))
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Number of leading bins whose clipped distribution loses least information (KL divergence)
/// when quantized to `nq` levels (TensorRT's entropy calibration).
pub fn kl_threshold(hist: &[f64], nq: usize) -> usize {
    let n = hist.len();
    if n <= nq {
        return n;
    }
    let mut best = (f64::INFINITY, n);
    let mut tail: f64 = hist[nq..].iter().sum();
    for i in nq..=n {
        let mut p = hist[..i].to_vec();
        p[i - 1] += tail;
        if i < n {
            tail -= hist[i];
        }
        let merged = i / nq;
        let mut q = vec![0f64; i];
        for j in 0..nq {
            let start = j * merged;
            let stop = if j == nq - 1 { i } else { start + merged };
            let slice = &hist[start..stop];
            let nonzero = slice.iter().filter(|&&c| c > 0.0).count();
            if nonzero > 0 {
                let v = slice.iter().sum::<f64>() / nonzero as f64;
                for k in start..stop {
                    if hist[k] > 0.0 {
                        q[k] = v;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if ps <= 0.0 || qs <= 0.0 {
            continue;
        }
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(&a, _)| a > 0.0)
            .map(|(&a, &b)| {
                let (a, b) = (a / ps, (b / qs).max(1e-12));
                a * (a / b).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1
}

fn float_output(name: &str) -> ValueInfoProto {
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
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

fn ort<R>(what: impl Into<String>) -> impl FnOnce(ort::Error<R>) -> QuantizeError
where
    ort::Error<()>: From<ort::Error<R>>,
{
    let what = what.into();
    move |e| QuantizeError::OrtCall {
        what,
        source: e.into(),
    }
}

/// Histograms of `tensors` over all `batches` of the float `model`.
pub fn histograms(
    model: &ModelProto,
    tensors: &[String],
    batches: &[Batch],
    with_bins: bool,
    threads: Option<usize>,
) -> Result<BTreeMap<String, Histogram>> {
    let mut m = model.clone();
    let existing: Vec<String> = m.graph.output.iter().map(|o| o.name.clone()).collect();
    for t in tensors.iter().filter(|t| !existing.contains(t)) {
        m.graph.mut_or_insert_default().output.push(float_output(t));
    }
    let bytes = crate::proto::encode(&m).map_err(QuantizeError::Encode)?;
    drop(m);
    let mut s = crate::ortrun::session(&bytes, crate::Device::Cpu, threads)?;
    let mut hists: BTreeMap<String, Histogram> = tensors
        .iter()
        .map(|t| (t.clone(), Histogram::new()))
        .collect();
    for b in batches {
        let x = TensorRef::from_array_view((b.shape.to_vec(), b.data.as_slice()))
            .map_err(ort("building a calibration input"))?;
        let out = s
            .run(ort::inputs![x])
            .map_err(ort("running the calibration model"))?;
        for (name, h) in hists.iter_mut() {
            let v = out.get(name.as_str()).ok_or_else(|| {
                QuantizeError::Calibration(format!("ORT returned no tensor `{name}`"))
            })?;
            let (_, data) = v
                .try_extract_tensor::<f32>()
                .map_err(ort(format!("reading tensor `{name}` as float32")))?;
            h.add(data, with_bins);
        }
    }
    Ok(hists)
}

/// One range per tensor from `method`.
pub fn collect(
    model: &ModelProto,
    tensors: &[String],
    batches: &[Batch],
    method: CalibMethod,
    act: ActType,
    threads: Option<usize>,
) -> Result<Ranges> {
    if let CalibMethod::Percentile(p) = method {
        if !(50.0..=100.0).contains(&p) {
            return Err(QuantizeError::Options(format!(
                "percentile must be in [50, 100], found {p}"
            )));
        }
    }
    let hists = histograms(
        model,
        tensors,
        batches,
        method != CalibMethod::MinMax,
        threads,
    )?;
    let mut ranges = Ranges::new();
    for (name, h) in hists {
        if h.min > h.max {
            return Err(QuantizeError::Calibration(format!(
                "tensor `{name}` had no finite values over the calibration set"
            )));
        }
        ranges.insert(name, h.range(method, act));
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_keep_their_recorded_names() {
        use strum::VariantNames;
        assert_eq!(CalibMethod::VARIANTS, ["minmax", "percentile", "entropy"]);
        assert_eq!(CalibMethod::MinMax.to_string(), "minmax");
        assert_eq!(CalibMethod::Entropy.to_string(), "entropy");
        assert_eq!(CalibMethod::Percentile(99.99).as_str(), "percentile");
        assert_eq!(
            CalibMethod::Percentile(99.99).to_string(),
            "percentile 99.99"
        );
    }

    #[test]
    fn rebinning_keeps_counts_and_quantiles() {
        let mut h = Histogram::new();
        h.add(
            &(0..1000).map(|i| i as f32 / 1000.0).collect::<Vec<_>>(),
            true,
        );
        h.add(
            &(0..1000)
                .map(|i| -1.0 + i as f32 / 1000.0)
                .collect::<Vec<_>>(),
            true,
        );
        assert_eq!(h.bins.iter().sum::<u64>(), 2000);
        assert!((h.quantile(0.5) - 0.0).abs() < 0.01, "{}", h.quantile(0.5));
        let (lo, hi) = h.range(CalibMethod::MinMax, ActType::U8);
        assert_eq!((lo, hi), (-1.0, 0.999));
    }

    #[test]
    fn percentile_and_entropy_clip_outliers() {
        let mut h = Histogram::new();
        let mut v: Vec<f32> = (0..100_000)
            .map(|i| ((i % 2001) as f32 - 1000.0) / 1000.0)
            .collect();
        v.push(50.0);
        h.add(&v, true);
        let (_, hi) = h.range(CalibMethod::Percentile(99.9), ActType::U8);
        assert!(hi < 1.1, "{hi}");
        // At least 128 of 2048 bins are kept, so with max|x| = 50 the floor is 3.125.
        let (lo, hi) = h.range(CalibMethod::Entropy, ActType::I8);
        assert!(hi < 3.2 && lo == -1.0, "{lo} {hi}");
        let (lo, hi) = h.range(CalibMethod::Percentile(99.9), ActType::I8);
        assert!(hi < 1.1 && lo == -hi.min(1.0), "{lo} {hi}");
    }
}
