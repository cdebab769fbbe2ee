//! `lkd-study`: the experiments, callable without the `lkd` binary.
//!
//! - [`runner`]: a study (teachers × students × methods × seeds) trained, resumed cell by cell,
//!   and reported with paired verdicts on the paper's claims (`results.md`, CSVs, chart).
//! - [`report`]: the demo's report (accuracy, export, latency, ERF figures).
//! - [`plots`]: the figures both draw (plotters), written atomically.
//!
//! ```no_run
//! use lkd_study::runner::{run_study, StudyOptions};
//!
//! let out = run_study(&StudyOptions {
//!     config: "configs/study-fmnist.toml".into(),
//!     report_only: true,
//!     ..Default::default()
//! })
//! .unwrap();
//! println!("tables in {}", out.join("results.md").display());
//! ```

pub mod plots;
pub mod report;
pub mod runner;

pub use runner::{run_study, StudyOptions};
