//! The same weights through libtorch eager (our tch executor) and through our ONNX export in
//! ONNX Runtime, batch 1, interleaved in one loop so machine noise hits both alike.
//!
//! `cargo bench --bench eager_vs_ort -- [PRESET] [THREADS] [ITERS]` (default convnext_tiny 2 20).

use lkd_exporter::{export, ExportOptions};
use lkd_models::ModelConfig;
use lkd_runtime::session::{Model, SessionConfig};
use lkd_trainer::executor::{Executor, Params};
use lkd_trainer::tch::{self, Device, Kind, Tensor};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let preset = args.first().map(String::as_str).unwrap_or("convnext_tiny");
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    tch::set_num_threads(threads as i32);
    let graph = ModelConfig::preset(preset).build().unwrap();
    let params = Params::init(&graph, Device::Cpu, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("m.onnx");
    let opts = ExportOptions {
        check: false,
        ..Default::default()
    };
    export(&graph, &params.to_state_dict().unwrap(), &opts, &onnx).unwrap();
    let cfg = SessionConfig {
        intra_threads: Some(threads),
        inter_threads: Some(1),
        ..Default::default()
    };
    let mut model = Model::load(&onnx, &cfg).unwrap();
    let [h, w] = graph.input_size;
    let shape = [1, graph.in_chans, h, w];
    let x = Tensor::randn(
        [1, graph.in_chans as i64, h as i64, w as i64],
        (Kind::Float, Device::Cpu),
    );
    let host: Vec<f32> = Vec::try_from(x.reshape([-1])).unwrap();
    let exec = Executor::new(graph);
    let (mut eager, mut ort) = (vec![], vec![]);
    for i in 0..iters + 3 {
        let t = Instant::now();
        let _ = tch::no_grad(|| exec.forward(&params, &x, false, &[]).unwrap().logits);
        let te = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        model.run(&host, shape).unwrap();
        let to = t.elapsed().as_secs_f64() * 1e3;
        if i >= 3 {
            eager.push(te);
            ort.push(to);
        }
    }
    let (e, o) = (median(eager), median(ort));
    println!("eager_vs_ort_cpu/{preset}/b1/t{threads}: tch eager p50 {e:.2} ms, ORT p50 {o:.2} ms, ORT speedup {:.2}x ({iters} interleaved iterations)", e / o);
}
