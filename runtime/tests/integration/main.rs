//! Integration tests of lkd-runtime against small ONNX models written by
//! `tests/fixtures/make_models.py` (run through `$LKD_PYTHON`). One binary, so the models are
//! generated once.

mod bench;
mod common;
mod edge;
mod hostile_images;
mod openvino;
mod predict;
mod serve;
mod serve_errors;
mod serve_hardening;
mod serve_kserve;
mod serve_process;
mod serve_util;
