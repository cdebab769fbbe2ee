//! `lkd-openvino`: a second CPU engine for LKD's exported `.onnx` files, over OpenVINO's runtime
//! (the `openvino` crate, with the C library opened at run time from the PyPI wheel). On
//! large depthwise kernels — what LKD's teachers are made of — its CPU plugin can be much faster
//! than ONNX Runtime; the choice is the caller's, measured side by side (`benches/engines.rs`).
//!
//! The contract mirrors `lkd-ort`: strict loading (a runtime that cannot be found or loaded is an
//! error naming what was looked for, never a fallback to another engine), a thread count, f32
//! NCHW in, the first output's shape and values out. f32 is pinned by default so logits match
//! ONNX Runtime; bf16 is an explicit choice and an error where the CPU cannot do it. The file's
//! `metadata_props` (preprocessing, labels) are read by a small scan that never loads the graph.
//! It must stay small: no libtorch, no ONNX Runtime, no HTTP.
//!
//! The front door: [`Engine::from_file`] or [`Engine::from_memory`] with an [`EngineConfig`]
//! (threads, [`Precision`]), then [`Engine::run_f32`] on f32 NCHW input; [`onnx_metadata`]
//! reads a file's preprocessing and labels without OpenVINO at all:
//!
//! ```
//! use lkd_openvino::{onnx_metadata_from_bytes, Precision};
//!
//! let graph = lkd_models::ModelConfig::preset("resnet_proxy").build()?;
//! let opts = lkd_exporter::ExportOptions { check: false, ..Default::default() };
//! let weights = lkd_exporter::random_weights(&graph, 0);
//! let (bytes, _) = lkd_exporter::export_bytes(&graph, &weights, &opts)?;
//! let metadata = onnx_metadata_from_bytes(&bytes)?;
//! assert!(metadata.contains_key(lkd_models::preprocess::keys::MEAN));
//! assert_eq!(Precision::parse(" BF16 ")?, Precision::Bf16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod engine;
pub mod error;
pub mod library;
pub mod metadata;

pub use engine::{Engine, EngineConfig, EngineInfo, Precision};
pub use error::{OvError, Result, INSTALL_HINT};
pub use library::{load_library, openvino_library_path, openvino_version, LIBRARY_ENV};
pub use metadata::{onnx_metadata, onnx_metadata_from_bytes};
