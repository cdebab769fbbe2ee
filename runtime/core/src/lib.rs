//! `lkd-ort`: the one place LKD talks to ONNX Runtime. It owns the process-wide environment
//! (and where the library is found), session building on a device (`lkd_util::Device`) with
//! strict execution-provider registration (a provider that cannot register is an error, never a
//! silent CPU fallback), the NCHW batch type, and order-fair A/B timing of two sessions.
//!
//! Both the exporter (parity checks, `--reparam auto` timings, quantization) and the runtime
//! (predict, bench, serve, `lkd-run`) build their sessions here. It must stay small: no HTTP,
//! no image decoding, no libtorch — the exporter links it, and so does the edge binary.
//!
//! The front door: a [`SessionConfig`] on a device (`lkd_util::Device`), a session from a file
//! or bytes ([`session_from_file`], [`session_from_memory`]), f32 runs ([`run_f32`]) and A/B
//! timing ([`interleave`]). Settings parse by name:
//!
//! ```
//! use lkd_ort::{OptLevel, SessionConfig};
//!
//! let cfg = SessionConfig {
//!     device: "cpu".parse::<lkd_util::Device>()?,
//!     opt_level: OptLevel::parse("extended")?,
//!     ..SessionConfig::cpu(Some(1))
//! };
//! assert_eq!((cfg.intra_threads, cfg.opt_level.as_str()), (Some(1), "extended"));
//! assert_eq!(
//!     OptLevel::parse("fast").unwrap_err().to_string(),
//!     "unknown optimization level `fast`: expected disable, basic, extended or all"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod ab;
pub mod batch;
pub mod env;
pub mod error;
pub mod opt_level;
pub mod session;

pub use ab::{interleave, AbTimes, RatioSpread};
pub use batch::Batch;
pub use env::{environment, ort_build_info, ort_library_path};
pub use error::{OrtError, Result};
pub use opt_level::OptLevel;
pub use ort;
pub use session::{
    builder, run_f32, session_from_file, session_from_memory, Session, SessionConfig,
};
