//! Times lowering variants of one preset in ORT CPU (batch 1, 2 threads), interleaved round by
//! round so load from other processes hits every variant alike:
//! `cargo run -p lkd-exporter --release --example measure_forms -- convnext_tiny [reparam]`
use lkd_exporter::*;
use lkd_models::checkpoint::StateDict;
use lkd_models::{HostTensor, ModelConfig};
use lkd_util::Device;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let preset = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "convnext_tiny".into());
    let g = ModelConfig::preset(&preset).build()?;
    let mut w = StateDict::new();
    for p in &g.params {
        let n = p.numel();
        let t = match p.dtype {
            lkd_models::graph::DType::I64 => HostTensor::i64(p.shape.clone(), vec![0; n]),
            _ => HostTensor::f32(
                p.shape.clone(),
                (0..n)
                    .map(|i| {
                        ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.05
                            + if p.name.ends_with("var") { 1.0 } else { 0.0 }
                    })
                    .collect(),
            ),
        };
        w.insert(p.name.clone(), t);
    }
    let x = random_input(&g, 1, 0);
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let reparam = match std::env::args().nth(2).as_deref() {
        Some("dense") => ReparamMode::Dense,
        Some("none") => ReparamMode::None,
        _ => ReparamMode::Decomposed,
    };
    let forms = [
        (
            "matmul+reduceLN",
            LinearForm::MatMul,
            ChannelsFirstNorm::Reduce,
        ),
        (
            "matmul+transposeLN",
            LinearForm::MatMul,
            ChannelsFirstNorm::Transpose,
        ),
        ("conv+reduceLN", LinearForm::Conv, ChannelsFirstNorm::Reduce),
        (
            "conv+transposeLN",
            LinearForm::Conv,
            ChannelsFirstNorm::Transpose,
        ),
    ];
    let mut sessions = vec![];
    for (name, lf, ln) in forms {
        let opts = ExportOptions {
            linear_form: lf,
            channels_first_norm: ln,
            check: false,
            reparam,
            ..Default::default()
        };
        let (bytes, rep) = export_bytes(&g, &w, &opts)?;
        if let Ok(d) = std::env::var("SAVE_DIR") {
            std::fs::write(format!("{d}/{preset}_{name}.onnx"), &bytes)?;
        }
        println!(
            "{name}: export {:.0} ms, {} nodes",
            rep.timings.total_ms, rep.onnx_nodes
        );
        let mut s = ortrun::session(&bytes, Device::Cpu, Some(threads))?;
        ortrun::run(&mut s, x.as_f32().unwrap(), &x.shape)?;
        sessions.push((name, s, vec![]));
    }
    // The torch.onnx.export baseline of the same weights, when a python is at hand.
    if let Ok(py) = std::env::var("LKD_PYTHON") {
        let dir = tempfile::tempdir()?;
        let wp = dir.path().join("w.safetensors");
        lkd_models::checkpoint::write_safetensors(&wp, &w, None)?;
        let out = dir.path().join("t.onnx");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/torch_export.py");
        let st = std::process::Command::new(py)
            .arg(script)
            .args(["--preset", &preset, "--weights"])
            .arg(&wp)
            .arg("--out")
            .arg(&out)
            .output()?;
        anyhow::ensure!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let mut s = ortrun::session(&std::fs::read(&out)?, Device::Cpu, Some(threads))?;
        ortrun::run(&mut s, x.as_f32().unwrap(), &x.shape)?;
        sessions.push(("torch.onnx.export", s, vec![]));
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    for _ in 0..rounds {
        for (_, s, times) in sessions.iter_mut() {
            let (t, c) = (Instant::now(), cpu_ns());
            ortrun::run(s, x.as_f32().unwrap(), &x.shape)?;
            // With one ORT thread the work runs on this thread: its CPU time ignores other load.
            times.push(if threads == 1 {
                (cpu_ns() - c) as f64 / 1e6
            } else {
                t.elapsed().as_secs_f64() * 1e3
            });
        }
    }
    for (name, _, mut t) in sessions {
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{preset} {name}: median {:.1} ms, min {:.1} ms",
            t[t.len() / 2],
            t[0]
        );
    }
    Ok(())
}

/// CPU time of the calling thread (ns) from /proc.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
