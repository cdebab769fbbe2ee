//! `lkd predict`, `lkd bench` and `lkd serve`: thin wrappers over `lkd-runtime`. The predict and
//! bench arguments and actions are the runtime's own (`lkd_runtime::cli`), shared with `lkd-run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lkd_runtime::cli::{parse_device, PreprocessArgs};
pub use lkd_runtime::cli::{run_bench, run_predict, BenchArgs, PredictArgs};
use lkd_runtime::{Device, ServeConfig, SessionConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    pub model: PathBuf,
    /// Listen address; loopback unless you mean to expose the service.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Most requests per session run.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// How long the batcher waits for more requests after the first.
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,
    /// Requests that may wait for the batcher; more are answered 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Largest accepted request body; larger ones are answered 413.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Predictions per response unless the request sets `?top_k=`.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = ServeConfig::new(args.model);
    cfg.session = SessionConfig { device: args.device, intra_threads: args.threads, warmup: 2, ..SessionConfig::default() };
    cfg.preprocess = args.preprocess.overrides();
    cfg.addr = args.addr;
    cfg.max_batch = args.max_batch;
    cfg.max_wait = Duration::from_millis(args.max_wait_ms);
    cfg.queue = args.queue;
    cfg.max_body_bytes = args.max_body_bytes;
    cfg.default_top_k = args.top_k.max(1);
    lkd_runtime::serve_blocking(cfg)?;
    Ok(())
}
