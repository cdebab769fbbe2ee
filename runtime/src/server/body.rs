//! Reads each request body whole, under the size cap and the body timeout, before any handler
//! runs: a client that sends its body slowly (or never) is answered 408 instead of holding a
//! handler, and shutdown does not wait for it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::api_error::ApiError;
use super::AppState;

/// The rest of a refused body is never read, so the connection cannot carry another request.
fn closing(error: ApiError) -> Response {
    let mut resp = error.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

pub(super) async fn buffer_body(
    State(app): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let max = app.limits.max_body_bytes;
    let too_large = || {
        closing(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than the server's limit of {max} bytes (--max-body-bytes)")))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let mut shutdown = app.shutdown.clone();
    let timeout = app.limits.body_timeout;
    let read = tokio::time::timeout(timeout, http_body_util::Limited::new(body, max).collect());
    let bytes = tokio::select! {
        read = read => match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(),
            Ok(Err(e)) => return closing(ApiError::bad_request(format!("cannot read the request body: {e}"))),
            Err(_) => {
                return closing(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body did not arrive within {} ms (--body-timeout-ms)", timeout.as_millis()),
                ))
            }
        },
        _ = shutdown.wait_for(|stopping| *stopping) => {
            return ApiError::unavailable("the server is shutting down").into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
