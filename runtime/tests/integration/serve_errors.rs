//! Every answer the HTTP layer gives on its own (hyper's parse errors, the body limit, axum's
//! path and method rejections) has the server's one error shape `{"error": "..."}`, checked
//! byte for byte from a raw TCP client against a live server.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::serve_util::*;

/// Sends `bytes` as they are and returns whatever comes back before the server closes.
fn raw(addr: SocketAddr, what: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    // The server may answer and close before it has read everything (e.g. at the header limit).
    let _ = s.write_all(bytes);
    let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(
        closed.is_some(),
        "{what}: the server kept the connection open"
    );
    reply
}

#[test]
fn every_http_layer_error_is_json() {
    let mut cfg = config("gray28");
    cfg.limits.max_body_bytes = 4096;
    let mut server = Running::start(cfg);
    let addr = server.addr;

    let malformed = "malformed HTTP/1.1 request: the request line or a header could not be parsed \
                     (expected `METHOD /path HTTP/1.1`, `Name: value` headers and a valid \
                     Content-Length or Transfer-Encoding)";
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let many_headers = format!(
        "GET /v2/health/live HTTP/1.1\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect::<String>()
    );
    let mut chunked_over_limit =
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked_over_limit.extend_from_slice(b"800\r\n");
        chunked_over_limit.extend_from_slice(&[b'x'; 0x800]);
        chunked_over_limit.extend_from_slice(b"\r\n");
    }
    chunked_over_limit.extend_from_slice(b"0\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        // hyper's own answers (no handler runs): rewritten with the JSON body.
        ("not HTTP", b"GARBAGE\r\n\r\n".to_vec(), 400, malformed),
        (
            "TLS client hello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
            malformed,
        ),
        (
            "header without a colon",
            b"GET /v2/health/live HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
            400,
            malformed,
        ),
        (
            "content-length not a number",
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
            malformed,
        ),
        (
            "unknown transfer coding",
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
            malformed,
        ),
        (
            "URI of 70 000 bytes (over the 64 KiB head limit)",
            long_uri.into_bytes(),
            431,
            "the request line and headers exceed the server's limits (64 KiB, 100 headers)",
        ),
        (
            "100 KB header",
            format!("GET /v2/health/live HTTP/1.1\r\nX-Big: {}\r\n\r\n", "y".repeat(100_000))
                .into_bytes(),
            431,
            "the request line and headers exceed the server's limits (64 KiB, 100 headers)",
        ),
        (
            "200 headers",
            many_headers.into_bytes(),
            431,
            "the request line and headers exceed the server's limits (64 KiB, 100 headers)",
        ),
        // Body and routing errors from the middleware and axum.
        (
            "chunked body over --max-body-bytes",
            chunked_over_limit,
            413,
            "the request body is larger than the server's limit of 4096 bytes (--max-body-bytes)",
        ),
        (
            "broken chunked framing",
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                .to_vec(),
            400,
            "cannot read the request body: error reading a body from connection",
        ),
        (
            "path parameter not UTF-8",
            b"GET /v2/models/%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            400,
            "Invalid URL: Invalid UTF-8 in `name`",
        ),
        (
            "multipart without a boundary",
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data\r\nContent-Length: 3\r\n\r\nabc"
                .to_vec(),
            400,
            "Invalid `boundary` for `multipart/form-data` request",
        ),
        (
            "query not a number",
            b"POST /v1/classify?top_k=%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            400,
            "Failed to deserialize query string: top_k: invalid digit found in string",
        ),
        (
            "Expect: 100-continue with a body over the limit",
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n"
                .to_vec(),
            413,
            "the request body is larger than the server's limit of 4096 bytes (--max-body-bytes)",
        ),
        (
            "wrong method",
            b"DELETE /v1/classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            405,
            "Method Not Allowed",
        ),
        (
            "unknown route",
            b"GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            404,
            "no such endpoint; see /v1/classify and /v2/...",
        ),
        (
            "v2 body not JSON",
            b"POST /v2/models/gray28/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\n{bad}"
                .to_vec(),
            400,
            "the inference request is not valid JSON for the v2 protocol: key must be a string at line 1 column 2",
        ),
    ];
    for (what, bytes, status, message) in cases {
        let bytes = raw(addr, what, &bytes);
        assert!(!bytes.is_empty(), "{what}: no answer");
        let reply = parse_reply(&bytes);
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert_eq!(reply.error(), message, "{what}");
    }

    // hyper's own answers are counted too.
    let metrics = get(addr, "/metrics").text();
    for (code, n) in [(400, 5), (431, 3)] {
        let series = format!("lkd_requests_total{{path=\"malformed\",code=\"{code}\"}} {n}");
        assert!(metrics.contains(&series), "no `{series}` in {metrics}");
    }

    // An HTTP/2 prior-knowledge preface is closed without an answer: such a client cannot read
    // an HTTP/1.1 response, and hyper (HTTP/1 only here) writes none.
    assert!(raw(addr, "HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").is_empty());
    // The server is unharmed.
    assert_eq!(get(addr, "/v2/health/ready").status, 200);
    server.stop();
}
