//! `lkd`: the command line over the lkd crates, as a library so tests and benches call the
//! same functions the binary does. Each subcommand parses flags and calls a library function;
//! no model or training logic lives here. `src/main.rs` only parses and reports errors.

pub mod demo;
pub mod doctor;
pub mod export_cmd;
pub mod quantize_cmd;
pub mod runtime_cmds;
pub mod study_cmd;
pub mod train_cmds;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lkd",
    version,
    about = "Distil small-kernel ConvNets from large-kernel teachers; export to ONNX; serve with ONNX Runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// List every preset with parameters and GFLOPs, or show one preset's layer table.
    Models {
        /// Print the layer table of this preset.
        #[arg(long)]
        show: Option<String>,
    },
    /// Train a model with plain supervision (e.g. a teacher from scratch).
    Train(train_cmds::RunArgs),
    /// Distil a student from a teacher (run dir or official checkpoint).
    Distill(train_cmds::DistillArgs),
    /// Teacher-output cache: precompute a teacher's outputs for students to replay.
    #[command(subcommand)]
    TeacherCache(train_cmds::TeacherCacheCommand),
    /// Top-1/top-5 of a run dir or checkpoint on a validation split.
    Eval(train_cmds::EvalArgs),
    /// Effective receptive field (the paper's analysis): erf.json and a heatmap PNG.
    Erf(train_cmds::ErfArgs),
    /// INT8 post-training quantization (QDQ) with calibration, accuracy budget and A/B report.
    Quantize(quantize_cmd::QuantizeArgs),
    /// Classify images with an ONNX model (preprocessing from its metadata or flags).
    Predict(runtime_cmds::PredictArgs),
    /// Latency percentiles, throughput and GFLOP/s of an ONNX model; A/B with --vs.
    Bench(runtime_cmds::BenchArgs),
    /// HTTP classification server with dynamic batching.
    Serve(runtime_cmds::ServeArgs),
    /// Export a run dir or a checkpoint to ONNX with deploy rewrites and a parity check.
    Export(export_cmd::ExportArgs),
    /// The end-to-end job: teacher, distilled and baseline students, ONNX, latency, ERF, report.
    Demo(demo::DemoArgs),
    /// The paper's comparison at CPU scale: teachers x KD methods x students x seeds.
    Study(study_cmd::StudyArgs),
    /// Print libtorch / ONNX Runtime versions, CUDA availability, execution providers, dataset.
    Doctor,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models { show: None } => print!("{}", lkd_models::summary::preset_table()?),
        Command::Models { show: Some(preset) } => {
            let graph = lkd_models::ModelConfig::preset(&preset).build()?;
            print!("{}", lkd_models::summary::layer_table(&graph)?);
        }
        Command::Train(a) => train_cmds::run_train(a)?,
        Command::Distill(a) => train_cmds::run_distill(a)?,
        Command::TeacherCache(c) => train_cmds::run_teacher_cache(c)?,
        Command::Eval(a) => train_cmds::run_eval(a)?,
        Command::Erf(a) => train_cmds::run_erf(a)?,
        Command::Quantize(a) => quantize_cmd::run_quantize(a)?,
        Command::Predict(a) => runtime_cmds::run_predict(a)?,
        Command::Bench(a) => runtime_cmds::run_bench(a)?,
        Command::Serve(a) => runtime_cmds::run_serve(a)?,
        Command::Export(a) => export_cmd::run_export(a)?,
        Command::Demo(a) => demo::run_demo(a)?,
        Command::Study(a) => study_cmd::run_study(a)?,
        Command::Doctor => doctor::run()?,
    }
    Ok(())
}
