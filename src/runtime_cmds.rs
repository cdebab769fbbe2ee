//! `lkd predict`, `lkd bench` and `lkd serve`: thin wrappers over `lkd-runtime`. The
//! arguments and actions are the runtime's own (`lkd_runtime::cli`),
//! shared with `lkd-run`.

pub use lkd_runtime::cli::{run_bench, run_predict, BenchArgs, PredictArgs, ServeArgs};

/// `lkd serve`: the runtime crate's implementation, shared with `lkd-run serve`.
pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    lkd_runtime::cli::run_serve(&args)?;
    Ok(())
}
