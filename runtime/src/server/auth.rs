//! Bearer-token authentication (RFC 6750). The token is kept only as its SHA-256 digest and
//! compared in constant time, so neither its bytes nor its length leak through timing.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::api_error::ApiError;
use super::AppState;
use crate::error::{Result, RuntimeError};

/// Shortest token accepted: 16 characters of a random token are ~96 bits.
pub const MIN_TOKEN_LEN: usize = 16;

/// Paths that answer without a token, so load balancers and orchestrators can probe them.
pub(super) fn is_open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/v2/health/live" | "/v2/health/ready")
}

#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

fn is_token_char(b: u8) -> bool {
    // RFC 6750 b64token characters.
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

impl BearerToken {
    pub fn new(token: &str) -> Result<Self> {
        let bad = |why: String| RuntimeError::Server(format!("invalid auth token: {why}"));
        if token.len() < MIN_TOKEN_LEN {
            return Err(bad(format!(
                "it has {} characters, expected at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                token.len()
            )));
        }
        if let Some(pos) = token.bytes().position(|b| !is_token_char(b)) {
            return Err(bad(format!(
                "character {} is not allowed in a bearer token; use letters, digits and -._~+/=",
                pos + 1
            )));
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Reads the token from a file; one trailing newline (as editors and `echo` write) is ignored.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        Self::new(token)
            .map_err(|e| RuntimeError::Server(format!("{} (in `{}`)", e, path.display())))
    }

    pub(super) fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"lkd\""),
    );
    r
}

pub(super) async fn require_token(
    State(app): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &app.auth else {
        return next.run(req).await;
    };
    if is_open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| rest.trim_ascii())
        });
    match presented {
        None => unauthorized("missing bearer token: send `Authorization: Bearer <token>`"),
        Some(t) if token.matches(t) => next.run(req).await,
        Some(_) => unauthorized("invalid bearer token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated_and_compared_whole() {
        let t = BearerToken::new("0123456789abcdef-XYZ").unwrap();
        assert!(t.matches(b"0123456789abcdef-XYZ"));
        assert!(!t.matches(b"0123456789abcdef-XY"));
        assert!(!t.matches(b"0123456789abcdef-XYZ "));
        assert!(!t.matches(b""));
        let short = BearerToken::new("short").unwrap_err().to_string();
        assert!(
            short.contains("it has 5 characters, expected at least 16"),
            "{short}"
        );
        let bad = BearerToken::new("0123456789abcdef\nxyz")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("character 17 is not allowed"), "{bad}");
        assert_eq!(format!("{t:?}"), "BearerToken(<redacted>)");
    }
}
