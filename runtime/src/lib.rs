//! `lkd-runtime`: runs exported LKD classifiers with ONNX Runtime (CPU or CUDA) or OpenVINO
//! (CPU, `lkd-openvino`) — prediction, benchmarking and an HTTP service with dynamic batching.
//!
//! It owns the classifier wrapper over a session, image decoding and the tensor layout, but not
//! the preprocessing values: those come from the model's ONNX metadata through
//! `lkd_models::preprocess` (or explicit flags). Environment, devices, session building and A/B
//! timing are the ONNX Runtime core's (`lkd-ort`, shared with the exporter). It must not depend
//! on libtorch: the `lkd-run` binary built from it needs only libc and libonnxruntime, which is
//! loaded at run time from `ORT_DYLIB_PATH` or from beside the executable (OpenVINO's C library
//! likewise, from `LKD_OPENVINO_LIB`, only when that engine is chosen).
//!
//! The front door: a [`Classifier`] loaded from an exported `.onnx` (its preprocessing and
//! labels come from the file), `classify` on encoded images, [`bench`] for latency and
//! [`serve`] for HTTP; `cli` holds the command lines of `lkd` and `lkd-run`.
//!
//! ```
//! use lkd_runtime::{Classifier, PreprocessOverrides, SessionConfig};
//!
//! # let graph = lkd_models::ModelConfig::preset("resnet_proxy").build()?;
//! # let weights = lkd_exporter::random_weights(&graph, 0);
//! # let opts = lkd_exporter::ExportOptions { check: false, ..Default::default() };
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("model.onnx");
//! # lkd_exporter::export(&graph, &weights, &opts, &path)?;
//! // `path`: a file written by `lkd export` (here a randomly initialised resnet_proxy).
//! let cfg = SessionConfig::cpu(Some(1));
//! let mut clf = Classifier::load(&path, &cfg, &PreprocessOverrides::default())?;
//! let mut png = Vec::new();
//! lkd_runtime::image::GrayImage::from_pixel(28, 28, lkd_runtime::image::Luma([128u8]))
//!     .write_to(&mut std::io::Cursor::new(&mut png), lkd_runtime::image::ImageFormat::Png)?;
//! let top = clf.classify(&[("grey.png".to_string(), png)], 3)?;
//! assert_eq!(top[0].len(), 3);
//! assert!(top[0][0].prob >= top[0][1].prob);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod predict;
pub mod preprocess;
pub mod server;
pub mod session;

pub use bench::{bench, bench_ab, bench_model, AbResult, BenchConfig, BenchReport, BenchResult};
pub use error::{error_chain, Result, RuntimeError};
/// The `image` version this crate decodes with, for callers that encode test inputs.
pub use image;
pub use lkd_models::preprocess::{Interpolation, Preprocess};
pub use lkd_ort::{OrtError, RatioSpread};
pub use predict::{softmax, top_k, Classifier, Prediction};
pub use preprocess::{
    decode, preprocess_batch, preprocess_into, resolve_preprocess, Batch, PreprocessOverrides,
};
pub use server::{bind, serve, serve_blocking, shutdown_signal, BoundServer, ServeConfig};
pub use session::{Engine, Logits, Model, ModelInfo, OptLevel, Precision, SessionConfig};
