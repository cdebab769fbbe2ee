//! `lkd-runtime`: runs exported LKD classifiers with ONNX Runtime — prediction, benchmarking and
//! an HTTP service with dynamic batching, on CPU or CUDA.
//!
//! It owns sessions, image decoding and the tensor layout, but not the preprocessing values:
//! those come from the model's ONNX metadata through `lkd_models::preprocess` (or explicit
//! flags). It must not depend on libtorch; the ONNX Runtime library is loaded at run time from
//! `ORT_DYLIB_PATH`.

pub mod bench;
pub mod error;
pub mod predict;
pub mod preprocess;
pub mod server;
pub mod session;

/// The `image` version this crate decodes with, for callers that encode test inputs.
pub use image;
pub use bench::{bench, bench_ab, bench_model, AbResult, BenchConfig, BenchReport, BenchResult};
pub use error::{Result, RuntimeError};
pub use lkd_models::preprocess::{Interpolation, Preprocess};
pub use predict::{softmax, top_k, Classifier, Prediction};
pub use preprocess::{decode, preprocess_batch, preprocess_into, resolve_preprocess, Batch, PreprocessOverrides};
pub use server::{bind, serve, serve_blocking, shutdown_signal, BoundServer, ServeConfig};
pub use session::{Device, Logits, Model, ModelInfo, OptLevel, SessionConfig};
