//! `lkd study`: flags parsed here, the study run by [`lkd_study::run_study`].

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct StudyArgs {
    /// Study TOML (see configs/study-fmnist.toml).
    config: PathBuf,
    /// Output directory (default runs/study-<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override training subset sizes for a fast look: train and val images.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    val_limit: Option<usize>,
    /// Train the teachers again instead of reusing those kept for the same recipes.
    #[arg(long)]
    retrain_teachers: bool,
    /// Train nothing: write the tables from the cells finished so far (for a look at a study
    /// still running, or one stopped part-way), stating how many are missing.
    #[arg(long, conflicts_with = "retrain_teachers")]
    report_only: bool,
}

pub fn run_study(a: StudyArgs) -> Result<()> {
    lkd_study::run_study(&lkd_study::StudyOptions {
        config: a.config,
        out: a.out,
        limit: a.limit,
        val_limit: a.val_limit,
        retrain_teachers: a.retrain_teachers,
        report_only: a.report_only,
    })?;
    Ok(())
}
