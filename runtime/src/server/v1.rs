//! This project's own API: `POST /v1/classify` (an encoded image in, top-k labels out),
//! `GET /healthz` and `GET /metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::api_error::ApiError;
use super::AppState;
use crate::predict::{softmax, top_k, Prediction};

#[derive(Debug, Serialize, Deserialize)]
pub struct ClassifyResponse {
    pub predictions: Vec<Prediction>,
    pub model: String,
    pub latency_ms: f64,
}

#[derive(Deserialize)]
pub(super) struct ClassifyQuery {
    top_k: Option<usize>,
    /// Which model to use when the server has several (default: the first one given).
    model: Option<String>,
}

async fn read_image(state: &Arc<AppState>, req: Request) -> Result<Bytes, Response> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let body = if is_multipart {
        let mut mp = Multipart::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let mut file = None;
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()).into_response())?
        {
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()).into_response())?;
            if file.replace(bytes).is_some() {
                return Err(ApiError::bad_request(
                    "expected exactly one file in the multipart body",
                )
                .into_response());
            }
        }
        file.ok_or_else(|| {
            ApiError::bad_request("the multipart body holds no file").into_response()
        })?
    } else {
        Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?
    };
    if body.is_empty() {
        return Err(
            ApiError::bad_request("empty body: send the image bytes or a multipart file")
                .into_response(),
        );
    }
    Ok(body)
}

pub(super) async fn classify(
    State(state): State<Arc<AppState>>,
    query: Query<ClassifyQuery>,
    req: Request,
) -> Response {
    let start = Instant::now();
    let slot = match state.model(query.model.as_deref().unwrap_or(&state.default_model)) {
        Ok(s) => s.clone(),
        Err(e) => return e.into_response(),
    };
    let k = query.top_k.unwrap_or(state.default_top_k);
    if k == 0 {
        return ApiError::bad_request("top_k must be at least 1").into_response();
    }
    let body = match read_image(&state, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let logits = match slot.prepare(vec![body], false, &state.decodes).await {
        Ok(input) => slot.infer(input, 1).await,
        Err(e) => Err(e),
    };
    match logits {
        Ok(logits) => Json(ClassifyResponse {
            predictions: top_k(&softmax(&logits), k, &slot.info),
            model: slot.name.clone(),
            latency_ms: start.elapsed().as_secs_f64() * 1e3,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let default = &state.models[&state.default_model];
    let models: Vec<_> = state
        .models
        .values()
        .map(|m| serde_json::json!({ "name": m.name, "provider": m.info.provider }))
        .collect();
    Json(serde_json::json!({
        "status": "ok",
        "model": default.name,
        "provider": default.info.provider,
        "models": models,
    }))
    .into_response()
}

pub(super) async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
