//! `lkd-run`: the runtime on its own, for devices. It links no libtorch; its only shared
//! libraries are libc's and ONNX Runtime's, which it loads from `ORT_DYLIB_PATH` or, when that
//! is unset, from `libonnxruntime.so*` beside this executable (the `make edge` bundle).

use clap::{Parser, Subcommand};
use lkd_runtime::cli;

#[derive(Parser)]
#[command(
    name = "lkd-run",
    version,
    about = "Classify images with an exported LKD model on ONNX Runtime (no libtorch)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images with an ONNX model (preprocessing from its metadata or flags).
    Predict(cli::PredictArgs),
    /// Latency percentiles, throughput and GFLOP/s of an ONNX model; A/B with --vs.
    Bench(cli::BenchArgs),
    /// The model's metadata: input, preprocessing, labels, provenance.
    Info(cli::InfoArgs),
    /// Serve models over HTTP: /v1/classify and the KServe v2 protocol (as `lkd serve`).
    Serve(lkd_runtime::cli::ServeArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Predict(a) => cli::run_predict(a),
        Command::Bench(a) => cli::run_bench(a),
        Command::Info(a) => cli::run_info(a),
        Command::Serve(a) => lkd_runtime::cli::run_serve(&a).map_err(Into::into),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
