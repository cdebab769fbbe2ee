//! Running exported bytes in ONNX Runtime: for the parity check, calibration and timing kernel
//! forms. Sessions come from the shared ONNX Runtime core (`lkd-ort`), so environment, devices
//! and strict provider registration are the runtime's own.

use std::time::Instant;

pub use lkd_ort::{Session, SessionConfig};
use lkd_util::Device;

/// A session over ONNX `bytes` on `device` with `threads` intra-op threads (spinning off).
pub fn session(bytes: &[u8], device: Device, threads: Option<usize>) -> lkd_ort::Result<Session> {
    let cfg = SessionConfig {
        device,
        intra_threads: threads,
        ..SessionConfig::default()
    };
    Ok(lkd_ort::session_from_memory(bytes, &cfg)?.0)
}

/// One forward pass of a single-input f32 model: the first output's values.
pub fn run(s: &mut Session, input: &[f32], shape: &[usize]) -> lkd_ort::Result<Vec<f32>> {
    Ok(lkd_ort::run_f32(s, input, shape)?.1)
}

/// Median latency in ms: one warm-up run, then runs until `budget_ms` is spent (3..=50 runs).
/// With `give_up_above`, a warm-up slower than that returns at once (the form has lost).
pub fn median_ms(
    s: &mut Session,
    input: &[f32],
    shape: &[usize],
    budget_ms: f64,
    give_up_above: Option<f64>,
) -> lkd_ort::Result<f64> {
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
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
