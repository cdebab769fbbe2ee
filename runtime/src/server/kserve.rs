//! The KServe v2 / open inference protocol over HTTP (what Triton's `tritonclient.http` speaks):
//! health, server and model metadata, readiness and `infer`, with the binary tensor data and
//! classification extensions.
//!
//! A model takes exactly one input per request, either
//! - `<model input name>`: FP32 `[N, C, H, W]`, already preprocessed, or
//! - [`ENCODED_INPUT`]: BYTES `[N]` (or `[N, 1]`), encoded images the server decodes and
//!   preprocesses as `/v1/classify` does. In JSON each element is a base64 string (JSON strings
//!   cannot carry arbitrary bytes); with the binary extension it is the raw file.
//!
//! It answers with the logits (FP32 `[N, classes]`); an output requested with the parameter
//! `classification: k` is instead BYTES `[N, k]` of `"<logit>:<index>:<label>"`, best first.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::api_error::ApiError;
use super::batcher::{ModelSlot, MAX_IMAGES_PER_REQUEST};
use super::AppState;

/// Name of the input that takes encoded images.
pub const ENCODED_INPUT: &str = "encoded_image";
/// Header of the binary tensor data extension: the length of the JSON part of the body.
const HEADER_LENGTH: &str = "inference-header-content-length";
/// The only model version served.
const VERSION: &str = "1";

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

fn param_bool(params: &Map<String, Value>, key: &str, at: &str) -> ApiResult<Option<bool>> {
    match params.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::bad_request(format!(
            "{at} parameter `{key}` must be a boolean, found {v}"
        ))),
    }
}

fn param_count(params: &Map<String, Value>, key: &str, at: &str) -> ApiResult<Option<u64>> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{at} parameter `{key}` must be a non-negative integer, found {v}"
            ))
        }),
    }
}

fn reject_shared_memory(params: &Map<String, Value>, at: &str) -> ApiResult<()> {
    if params.keys().any(|k| k.starts_with("shared_memory")) {
        return Err(ApiError::bad_request(format!(
            "{at} asks for shared memory, which this server does not support; send the data in the request"
        )));
    }
    Ok(())
}

fn model_version(state: &AppState, name: &str, version: Option<&str>) -> ApiResult<Arc<ModelSlot>> {
    let slot = state.model(name)?.clone();
    match version {
        Some(v) if v != VERSION => Err(ApiError::not_found(format!(
            "model `{name}` has no version `{v}`; it serves version {VERSION}"
        ))),
        _ => Ok(slot),
    }
}

pub(super) async fn server_metadata() -> Response {
    Json(json!({
        "name": "lkd",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification"],
    }))
    .into_response()
}

pub(super) async fn live() -> StatusCode {
    StatusCode::OK
}

pub(super) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return ApiError::unavailable("the server is shutting down").into_response();
    }
    StatusCode::OK.into_response()
}

fn metadata(slot: &ModelSlot) -> Value {
    let p = &slot.preprocess;
    json!({
        "name": slot.name,
        "versions": [VERSION],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": slot.info.input_name, "datatype": "FP32",
             "shape": [-1, p.channels, p.input_size[0], p.input_size[1]]},
            {"name": ENCODED_INPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": slot.info.output_name, "datatype": "FP32", "shape": [-1, slot.classes]},
        ],
    })
}

pub(super) async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    match model_version(&state, &name, None) {
        Ok(slot) => Json(metadata(&slot)).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn version_metadata(
    State(state): State<Arc<AppState>>,
    Path((name, v)): Path<(String, String)>,
) -> Response {
    match model_version(&state, &name, Some(&v)) {
        Ok(slot) => Json(metadata(&slot)).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    match model_version(&state, &name, None) {
        Ok(_) => ready(State(state)).await,
        Err(e) => e.into_response(),
    }
}

pub(super) async fn version_ready(
    State(state): State<Arc<AppState>>,
    Path((name, v)): Path<(String, String)>,
) -> Response {
    match model_version(&state, &name, Some(&v)) {
        Ok(_) => ready(State(state)).await,
        Err(e) => e.into_response(),
    }
}

pub(super) async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let slot = match model_version(&state, &name, None) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    run_infer(&state, &slot, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn version_infer(
    State(state): State<Arc<AppState>>,
    Path((name, v)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let slot = match model_version(&state, &name, Some(&v)) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    run_infer(&state, &slot, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Splits a binary-extension body into its JSON header and the binary tensor data.
fn split_body(headers: &HeaderMap, body: Bytes) -> ApiResult<(Bytes, Bytes)> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok((body, Bytes::new()));
    };
    let n = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "header `Inference-Header-Content-Length` must be a byte count, found {v:?}"
            ))
        })?;
    if n > body.len() {
        return Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        )));
    }
    let binary = body.slice(n..);
    Ok((body.slice(..n), binary))
}

/// Takes the next `size` bytes of binary data for `input`.
fn take_binary(binary: &mut Bytes, size: u64, input: &str) -> ApiResult<Bytes> {
    if size > binary.len() as u64 {
        return Err(ApiError::bad_request(format!(
            "input `{input}` declares binary_data_size {size} but only {} bytes of binary data remain",
            binary.len()
        )));
    }
    Ok(binary.split_to(size as usize))
}

/// Depth-first values of a flat or nested JSON array.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn batch_size(dim: i64, input: &str) -> ApiResult<usize> {
    if dim < 1 || dim as u64 > MAX_IMAGES_PER_REQUEST as u64 {
        return Err(ApiError::bad_request(format!(
            "input `{input}`: the batch dimension must be between 1 and {MAX_IMAGES_PER_REQUEST}, found {dim}"
        )));
    }
    Ok(dim as usize)
}

/// The preprocessed FP32 input, checked against the model's `[N, C, H, W]`.
fn fp32_input(
    slot: &ModelSlot,
    t: &InputTensor,
    binary: Option<Bytes>,
) -> ApiResult<(Vec<f32>, usize)> {
    let p = &slot.preprocess;
    let want = [
        p.channels as i64,
        p.input_size[0] as i64,
        p.input_size[1] as i64,
    ];
    if t.shape.len() != 4 || t.shape[1..] != want {
        return Err(ApiError::bad_request(format!(
            "input `{}` must have shape [N, {}, {}, {}] (preprocessed NCHW), found {:?}",
            t.name, want[0], want[1], want[2], t.shape
        )));
    }
    let n = batch_size(t.shape[0], &t.name)?;
    let count = n * want.iter().product::<i64>() as usize;
    let values: Vec<f32> = match (binary, &t.data) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has both `data` and binary_data_size",
                t.name
            )))
        }
        (Some(raw), None) => {
            if raw.len() != count * 4 {
                return Err(ApiError::bad_request(format!(
                    "input `{}`: shape {:?} needs {} bytes of FP32 data, found {}",
                    t.name,
                    t.shape,
                    count * 4,
                    raw.len()
                )));
            }
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }
        (None, Some(data)) => {
            let mut flat = Vec::with_capacity(count);
            flatten(data, &mut flat);
            if flat.len() != count {
                return Err(ApiError::bad_request(format!(
                    "input `{}`: shape {:?} needs {count} values, found {}",
                    t.name,
                    t.shape,
                    flat.len()
                )));
            }
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64().map(|x| x as f32).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "input `{}`: element {i} must be a number, found {v}",
                            t.name
                        ))
                    })
                })
                .collect::<ApiResult<_>>()?
        }
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has neither `data` nor binary_data_size",
                t.name
            )))
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::bad_request(format!(
            "input `{}`: element {i} is {}, expected a finite number",
            t.name, values[i]
        )));
    }
    Ok((values, n))
}

/// Encoded images of a BYTES `[N]` / `[N, 1]` input.
fn encoded_input(t: &InputTensor, binary: Option<Bytes>) -> ApiResult<Vec<Bytes>> {
    let n = match t.shape.as_slice() {
        [n] | [n, 1] => batch_size(*n, &t.name)?,
        _ => {
            return Err(ApiError::bad_request(format!(
            "input `{}` must have shape [N] or [N, 1] (one encoded image per element), found {:?}",
            t.name, t.shape
        )))
        }
    };
    let images: Vec<Bytes> = match (binary, &t.data) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has both `data` and binary_data_size",
                t.name
            )))
        }
        (Some(mut raw), None) => {
            // The binary extension's BYTES layout: each element is a u32 little-endian length, then the bytes.
            let mut images = Vec::with_capacity(n);
            while !raw.is_empty() {
                if raw.len() < 4 {
                    return Err(ApiError::bad_request(format!(
                        "input `{}`: truncated element length",
                        t.name
                    )));
                }
                let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
                let _ = raw.split_to(4);
                if len > raw.len() {
                    return Err(ApiError::bad_request(format!(
                        "input `{}`: element {} declares {len} bytes but only {} remain",
                        t.name,
                        images.len(),
                        raw.len()
                    )));
                }
                images.push(raw.split_to(len));
            }
            images
        }
        (None, Some(data)) => {
            let mut flat = Vec::new();
            flatten(data, &mut flat);
            let engine = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    let s = v.as_str().ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "input `{}`: element {i} must be a base64 string, found {v}",
                            t.name
                        ))
                    })?;
                    engine.decode(s).map(Bytes::from).map_err(|e| {
                        ApiError::bad_request(format!(
                            "input `{}`: element {i} is not valid base64: {e}",
                            t.name
                        ))
                    })
                })
                .collect::<ApiResult<_>>()?
        }
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has neither `data` nor binary_data_size",
                t.name
            )))
        }
    };
    if images.len() != n {
        return Err(ApiError::bad_request(format!(
            "input `{}`: shape {:?} needs {n} elements, found {}",
            t.name,
            t.shape,
            images.len()
        )));
    }
    if let Some(i) = images.iter().position(|b| b.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "input `{}`: element {i} is empty",
            t.name
        )));
    }
    Ok(images)
}

struct OutputPlan {
    binary: bool,
    classification: Option<usize>,
}

fn plan_outputs(slot: &ModelSlot, req: &InferRequest) -> ApiResult<Vec<OutputPlan>> {
    let binary_default =
        param_bool(&req.parameters, "binary_data_output", "request")?.unwrap_or(false);
    if req.outputs.is_empty() {
        return Ok(vec![OutputPlan {
            binary: binary_default,
            classification: None,
        }]);
    }
    let mut seen = BTreeSet::new();
    req.outputs
        .iter()
        .map(|o| {
            if o.name != slot.info.output_name {
                return Err(ApiError::bad_request(format!(
                    "unknown output `{}`: model `{}` has one output, `{}`",
                    o.name, slot.name, slot.info.output_name
                )));
            }
            let at = format!("output `{}`", o.name);
            reject_shared_memory(&o.parameters, &at)?;
            let classification = match param_count(&o.parameters, "classification", &at)? {
                None => None,
                Some(k) if k >= 1 && k <= slot.classes as u64 => Some(k as usize),
                Some(k) => {
                    return Err(ApiError::bad_request(format!(
                        "{at}: classification must be between 1 and {} (the number of classes), found {k}",
                        slot.classes
                    )))
                }
            };
            // One name, one tensor in the response: clients look outputs up by name.
            if !seen.insert(&o.name) {
                return Err(ApiError::bad_request(format!("{at} is requested more than once")));
            }
            let binary = param_bool(&o.parameters, "binary_data", &at)?.unwrap_or(binary_default);
            Ok(OutputPlan { binary, classification })
        })
        .collect()
}

async fn run_infer(
    state: &AppState,
    slot: &ModelSlot,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (header, mut binary) = split_body(headers, body)?;
    let req: InferRequest = serde_json::from_slice(&header).map_err(|e| {
        ApiError::bad_request(format!(
            "the inference request is not valid JSON for the v2 protocol: {e}"
        ))
    })?;
    reject_shared_memory(&req.parameters, "the request")?;
    let [input] = req.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "model `{}` takes exactly one input, `{}` (FP32 [N, C, H, W], preprocessed) or `{ENCODED_INPUT}` \
             (BYTES [N], encoded images); found {}",
            slot.name,
            slot.info.input_name,
            req.inputs.len()
        )));
    };
    let at = format!("input `{}`", input.name);
    reject_shared_memory(&input.parameters, &at)?;
    let input_binary = match param_count(&input.parameters, "binary_data_size", &at)? {
        Some(size) => Some(take_binary(&mut binary, size, &input.name)?),
        None => None,
    };
    if !binary.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data follow the JSON but no input claims them (binary_data_size)",
            binary.len()
        )));
    }
    let plans = plan_outputs(slot, &req)?;
    let (values, n) = match (input.datatype.as_str(), input.name.as_str()) {
        ("FP32", name) if name == slot.info.input_name => fp32_input(slot, input, input_binary)?,
        ("BYTES", ENCODED_INPUT) => {
            let images = encoded_input(input, input_binary)?;
            let n = images.len();
            (slot.prepare(images, true, &state.decodes).await?, n)
        }
        (dtype, name) => {
            return Err(ApiError::bad_request(format!(
            "input `{name}` of datatype {dtype} is not accepted: model `{}` takes `{}` (FP32) or \
                 `{ENCODED_INPUT}` (BYTES)",
            slot.name, slot.info.input_name
        )))
        }
    };
    let logits = slot.infer(values, n).await?;
    Ok(respond(slot, req.id, &plans, &logits, n))
}

fn respond(
    slot: &ModelSlot,
    id: Option<String>,
    plans: &[OutputPlan],
    logits: &[f32],
    n: usize,
) -> Response {
    let classes = slot.classes;
    let mut binary: Vec<u8> = Vec::new();
    let outputs: Vec<Value> = plans
        .iter()
        .map(|plan| {
            let mut out = json!({ "name": slot.info.output_name });
            let start = binary.len();
            match plan.classification {
                None => {
                    out["datatype"] = json!("FP32");
                    out["shape"] = json!([n, classes]);
                    if plan.binary {
                        binary.extend(logits.iter().flat_map(|v| v.to_le_bytes()));
                    } else {
                        out["data"] = json!(logits);
                    }
                }
                Some(k) => {
                    let labels = classify(slot, logits, k);
                    out["datatype"] = json!("BYTES");
                    out["shape"] = json!([n, k]);
                    if plan.binary {
                        for l in &labels {
                            binary.extend_from_slice(&(l.len() as u32).to_le_bytes());
                            binary.extend_from_slice(l.as_bytes());
                        }
                    } else {
                        out["data"] = json!(labels);
                    }
                }
            }
            if plan.binary {
                out["parameters"] = json!({ "binary_data_size": binary.len() - start });
            }
            out
        })
        .collect();
    let mut doc = json!({ "model_name": slot.name, "model_version": VERSION, "outputs": outputs });
    if let Some(id) = id {
        doc["id"] = json!(id);
    }
    let mut body = serde_json::to_vec(&doc).unwrap_or_default();
    let json_len = body.len();
    let mut r = Response::new(Body::empty());
    if plans.iter().any(|p| p.binary) {
        body.extend_from_slice(&binary);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r.headers_mut()
            .insert(HEADER_LENGTH, HeaderValue::from(json_len));
    } else {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    *r.body_mut() = Body::from(body);
    r
}

/// Top-k per image as `"<logit>:<index>:<label>"`, the classification extension's format.
fn classify(slot: &ModelSlot, logits: &[f32], k: usize) -> Vec<String> {
    logits
        .chunks(slot.classes)
        .flat_map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            idx.into_iter()
                .take(k)
                .map(move |i| format!("{}:{}:{}", row[i], i, slot.info.label(i)))
        })
        .collect()
}
