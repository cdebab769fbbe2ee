//! One error shape for every response the server sends: `{"error": "..."}` (the KServe v2 /
//! open inference protocol's error object, used by `/v1` too).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::conn::{MAX_HEADERS, MAX_HEADER_BYTES};

#[derive(Debug)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

pub(super) fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_else(|_| b"{}".to_vec())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(error_body(&self.message)));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// Rewrites an error response that is not JSON (axum's extractor rejections, 404/405 from the
/// router) into `{"error": <its text>}`, keeping the status and headers such as Retry-After.
pub(super) async fn json_error(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Rejection texts are short; anything longer is cut rather than buffered.
    let text = match http_body_util::Limited::new(body, 16 * 1024)
        .collect()
        .await
    {
        Ok(c) => String::from_utf8_lossy(&c.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(error_body(&message)))
}

/// hyper answers a request it cannot parse (a bad request line or header, a URI or header block
/// over its limits) itself, before any handler runs, with a bodyless 400/414/431 and no hook to
/// supply a body. The connection's writer passes that head through here: it is recognised (a
/// 4xx head with `content-length: 0` and no content type; every response of ours carries JSON)
/// and replaced by the same status and headers with the JSON error body.
/// Returns the status and the rewritten response.
pub(super) fn rewrite_automatic_error(head: &[u8]) -> Option<(u16, Vec<u8>)> {
    let text = std::str::from_utf8(head).ok()?;
    let text = text.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line
        .strip_prefix("HTTP/1.")?
        .get(2..)?
        .split(' ')
        .next()?;
    let message = match code {
        "400" => "malformed HTTP/1.1 request: the request line or a header could not be parsed \
                  (expected `METHOD /path HTTP/1.1`, `Name: value` headers and a valid \
                  Content-Length or Transfer-Encoding)"
            .to_string(),
        "414" => "the request URI is too long".to_string(),
        "431" => format!(
            "the request line and headers exceed the server's limits ({} KiB, {} headers)",
            MAX_HEADER_BYTES / 1024,
            MAX_HEADERS
        ),
        _ => return None,
    };
    let mut kept = Vec::new();
    let mut empty_body = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "content-type" | "transfer-encoding" => return None,
            "content-length" if value.trim() == "0" => empty_body = true,
            "content-length" => return None,
            _ => kept.push(line),
        }
    }
    if !empty_body {
        return None;
    }
    let body = error_body(&message);
    let mut out = format!("{status_line}\r\n");
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some((code.parse().ok()?, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_automatic_answers_get_a_json_body_and_nothing_else_changes() {
        let hyper_400 =
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let (status, out) = rewrite_automatic_error(hyper_400).unwrap();
        assert_eq!(status, 400);
        let out = String::from_utf8(out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ndate: x\r\n\
                 content-type: application/json\r\ncontent-length: {}",
                body.len()
            )
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed HTTP/1.1 request"));
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite_automatic_error(hyper_431).is_some());
        // Ours (JSON, or with a body), success heads, and partial heads pass through.
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert_eq!(rewrite_automatic_error(head), None, "{head:?}");
        }
    }
}
