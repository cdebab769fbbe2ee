//! Running exported bytes in ONNX Runtime: for the parity check and for timing kernel forms.
//! The process-wide environment is the runtime crate's (ORT allows one per process).

use crate::ExportError;
use ort::session::builder::GraphOptimizationLevel;
pub use ort::session::Session;
use ort::value::TensorRef;
use std::time::Instant;

/// Where sessions run (and where `--reparam auto` times kernel forms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Target {
    #[default]
    Cpu,
    Cuda(i32),
}

fn ort_err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Ort(e.to_string())
}

pub fn session(bytes: &[u8], target: Target, threads: Option<usize>) -> Result<Session, ExportError> {
    let env = lkd_runtime::session::environment().map_err(ort_err)?;
    let mut b = Session::builder(&env).map_err(ort_err)?.with_optimization_level(GraphOptimizationLevel::All).map_err(ort_err)?;
    if let Some(n) = threads {
        b = b.with_intra_threads(n).map_err(ort_err)?;
    }
    b = register(b, target)?;
    b.commit_from_memory(bytes).map_err(ort_err)
}

#[cfg(feature = "cuda")]
fn register(b: ort::session::builder::SessionBuilder, target: Target) -> Result<ort::session::builder::SessionBuilder, ExportError> {
    match target {
        Target::Cpu => Ok(b),
        Target::Cuda(id) => {
            let ep = ort::ep::CUDA::default().with_device_id(id).build().error_on_failure();
            b.with_execution_providers([ep]).map_err(|e| ExportError::Ort(format!("CUDA execution provider: {e}")))
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn register(b: ort::session::builder::SessionBuilder, target: Target) -> Result<ort::session::builder::SessionBuilder, ExportError> {
    match target {
        Target::Cpu => Ok(b),
        Target::Cuda(_) => Err(ExportError::Ort("this build has no CUDA support; rebuild with the `cuda` feature".into())),
    }
}

/// One forward pass of a single-input, single-output f32 model.
pub fn run(s: &mut Session, input: &[f32], shape: &[usize]) -> Result<Vec<f32>, ExportError> {
    let t = TensorRef::from_array_view((shape.to_vec(), input)).map_err(ort_err)?;
    let out = s.run(ort::inputs![t]).map_err(ort_err)?;
    let (_, data) = out[0].try_extract_tensor::<f32>().map_err(ort_err)?;
    Ok(data.to_vec())
}

/// Median latency in ms: one warm-up run, then runs until `budget_ms` is spent (3..=50 runs).
/// With `give_up_above`, a warm-up slower than that returns at once (the form has lost).
pub fn median_ms(s: &mut Session, input: &[f32], shape: &[usize], budget_ms: f64, give_up_above: Option<f64>) -> Result<f64, ExportError> {
    let t = Instant::now();
    run(s, input, shape)?;
    let warm = t.elapsed().as_secs_f64() * 1e3;
    if give_up_above.is_some_and(|g| warm > g) {
        return Ok(warm);
    }
    let start = Instant::now();
    let mut times = vec![];
    while times.len() < 3 || (start.elapsed().as_secs_f64() * 1e3 < budget_ms && times.len() < 50) {
        let t = Instant::now();
        run(s, input, shape)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times[times.len() / 2])
}
