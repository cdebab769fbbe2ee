//! Hostile clients against a live server on loopback: missing and wrong tokens, half-sent
//! requests, idle connections, a connection flood, and shutdown with requests left open.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use image::ImageFormat;
use lkd_runtime::server::BearerToken;
use lkd_runtime::server::MAX_IMAGES_PER_REQUEST;
use lkd_runtime::{bind, ServeConfig};

use crate::common::*;
use crate::serve_util::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn bind_error(cfg: ServeConfig) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(bind(cfg)) {
        Ok(_) => panic!("bind succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn non_loopback_needs_a_token_and_the_token_is_checked() {
    let mut cfg = config("gray28");
    cfg.addr = "0.0.0.0:0".into();
    let e = bind_error(cfg.clone());
    assert!(
        e.contains("`0.0.0.0:0` (0.0.0.0:0) is not a loopback address"),
        "{e}"
    );
    assert!(e.contains("--auth-token-file FILE"), "{e}");
    cfg.insecure_no_auth = true;
    cfg.auth = Some(BearerToken::new(TOKEN).unwrap());
    assert!(bind_error(cfg).contains("contradict each other"));
    let mut cfg = config("gray28");
    cfg.addr = "no-such-host.invalid:80".into();
    assert!(bind_error(cfg).contains("cannot resolve address `no-such-host.invalid:80`"));

    // Names resolve; the token comes from a file (one trailing newline ignored).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let mut cfg = config("gray28");
    cfg.addr = "localhost:0".into();
    cfg.auth = Some(BearerToken::from_file(&file).unwrap());
    let mut server = Running::start(cfg);
    let addr = server.addr;
    assert!(addr.ip().is_loopback());

    let png = encode(&photo(40, 40, 1), ImageFormat::Png);
    let none = request(addr, "POST", "/v1/classify", &[], &png);
    assert_eq!(
        (none.status, none.error()),
        (
            401,
            "missing bearer token: send `Authorization: Bearer <token>`".into()
        )
    );
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"lkd\"")
    );
    let wrong = format!("Bearer {TOKEN}x");
    let r = request(
        addr,
        "POST",
        "/v1/classify",
        &[("Authorization", &wrong)],
        &png,
    );
    assert_eq!((r.status, r.error()), (401, "invalid bearer token".into()));
    let r = request(
        addr,
        "GET",
        "/v2/models/gray28",
        &[("Authorization", "Basic dXNlcjpwYXNz")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(get(addr, "/metrics").status, 401);
    let right = format!("Bearer {TOKEN}");
    let ok = request(
        addr,
        "POST",
        "/v1/classify",
        &[("Authorization", &right)],
        &png,
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    for open in ["/healthz", "/v2/health/live", "/v2/health/ready"] {
        assert_eq!(get(addr, open).status, 200, "{open}");
    }
    server.stop();

    std::fs::write(&file, "short\n").unwrap();
    let e = BearerToken::from_file(&file).unwrap_err().to_string();
    assert!(
        e.contains("it has 5 characters, expected at least 16") && e.contains("token`"),
        "{e}"
    );
}

/// Sends `head` and keeps the connection open without finishing the request.
fn half_send(addr: std::net::SocketAddr, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let mut cfg = config("gray28");
    cfg.limits.header_timeout = Duration::from_millis(300);
    cfg.limits.body_timeout = Duration::from_millis(300);
    cfg.limits.idle_timeout = Duration::from_millis(600);
    let mut server = Running::start(cfg);
    let addr = server.addr;

    // Headers never finished: closed after the header timeout, with nothing sent.
    let mut s = half_send(addr, "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Le");
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    let closed = closed.expect("a half-sent header was not timed out");
    eprintln!("half-sent headers closed after {closed:?} (header timeout 300 ms)");
    assert!(
        raw.is_empty()
            && closed >= Duration::from_millis(250)
            && closed < Duration::from_millis(1500),
        "{closed:?}"
    );

    // A connection that sends nothing at all gets the same treatment.
    let mut s = TcpStream::connect(addr).unwrap();
    assert!(read_until_closed(&mut s, Duration::from_secs(5))
        .1
        .is_some());

    // Body never finished: 408 in the JSON error shape.
    let mut s = half_send(
        addr,
        "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
    );
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    let r = parse_reply(&raw);
    assert_eq!(
        (r.status, r.error()),
        (
            408,
            "the request body did not arrive within 300 ms (--body-timeout-ms)".into()
        )
    );
    assert!(closed.is_some());

    // Idle keep-alive: a served connection is closed after the idle timeout, not before.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert_eq!(parse_reply(&raw).status, 200);
    let closed = closed.expect("an idle keep-alive connection was not closed");
    assert!(
        closed >= Duration::from_millis(500) && start.elapsed() < Duration::from_secs(2),
        "{closed:?}"
    );

    // A request hyper cannot parse is refused by hyper itself (400, our JSON body), then closed;
    // serve_errors.rs covers the other cases.
    let mut s = half_send(addr, "GARBAGE\r\n\r\n");
    let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    let r = parse_reply(&raw);
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("malformed HTTP/1.1 request"));
    assert!(closed.is_some());

    let metrics = get(addr, "/metrics").text();
    for reason in ["header_timeout", "idle_timeout"] {
        let line = metrics
            .lines()
            .find(|l| l.contains(&format!("reason=\"{reason}\"")))
            .unwrap();
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1, "{line}");
    }
    server.stop();
}

fn classify_latencies(addr: std::net::SocketAddr, png: &[u8], n: usize) -> Vec<f64> {
    let mut ms: Vec<f64> = (0..n)
        .map(|i| {
            let start = Instant::now();
            let r = request(
                addr,
                "POST",
                "/v1/classify",
                &[("Content-Type", "image/png")],
                png,
            );
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

#[test]
fn a_connection_flood_does_not_stop_a_normal_client() {
    let mut cfg = config("gray28");
    cfg.limits.max_connections = 64;
    let mut server = Running::start(cfg);
    let addr = server.addr;
    let png = encode(&photo(40, 40, 2), ImageFormat::Png);
    let before = classify_latencies(addr, &png, 20);

    // 300 connections that each send half a request and then hold it.
    let flood: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            // An evicted connection may refuse the write; the flood goes on regardless.
            let _ = s.write_all(b"GET /v2/health/live HTTP/1.1\r\n");
            s
        })
        .collect();
    let during = classify_latencies(addr, &png, 20);
    let (p50b, p50d, maxd) = (
        lkd_util::quantile(&before, 0.5),
        lkd_util::quantile(&during, 0.5),
        during[during.len() - 1],
    );
    eprintln!(
        "normal client, 20 requests: p50 {p50b:.2} ms before the flood, p50 {p50d:.2} ms / max {maxd:.2} ms \
         with 300 half-sent connections held (cap 64)"
    );
    assert!(maxd < 2000.0, "a request took {maxd} ms during the flood");
    let metrics = get(addr, "/metrics").text();
    let evicted: u64 = metrics
        .lines()
        .find(|l| l.contains("reason=\"evicted\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(evicted >= 300 - 64, "{metrics}");
    let open: i64 = metrics
        .lines()
        .find(|l| l.starts_with("lkd_open_connections "))
        .unwrap()[21..]
        .parse()
        .unwrap();
    assert!(open <= 64, "{open} connections open, cap 64");
    drop(flood);
    server.stop();
}

#[test]
fn shutdown_is_bounded_whatever_clients_do() {
    let mut cfg = config("slow");
    cfg.limits.shutdown_grace = Duration::from_millis(1500);
    cfg.limits.header_timeout = Duration::from_secs(60);
    cfg.limits.body_timeout = Duration::from_secs(60);
    cfg.max_wait = Duration::from_millis(300);
    let mut server = Running::start(cfg);
    let addr = server.addr;
    let img = Arc::new(encode(&photo(128, 128, 1), ImageFormat::Png));

    // A request in progress (held by the batcher's max_wait) still gets its answer.
    let in_flight = {
        let img = img.clone();
        std::thread::spawn(move || request(addr, "POST", "/v1/classify", &[], &img).status)
    };
    // Half-sent headers and a half-sent body do not hold the server.
    let mut head = half_send(addr, "POST /v1/classify HTTP/1.1\r\nHost: x\r\n");
    let mut body = half_send(
        addr,
        "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nPNG",
    );
    std::thread::sleep(Duration::from_millis(100));
    let took = server.stop();
    eprintln!("shutdown with a half-sent header, a half-sent body and one request in flight: {took:?} (grace 1.5 s)");
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    assert_eq!(in_flight.join().unwrap(), 200);
    assert!(read_until_closed(&mut head, Duration::from_secs(1))
        .1
        .is_some());
    let (raw, _) = read_until_closed(&mut body, Duration::from_secs(1));
    let r = parse_reply(&raw);
    assert_eq!(
        (r.status, r.error()),
        (503, "the server is shutting down".into())
    );
}

/// A gauge or counter from `/metrics` (unlabelled series only).
fn metric(addr: std::net::SocketAddr, name: &str) -> i64 {
    let text = get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in {text}"))
}

/// Polls until `done()` or until `gave_up` has finished; true when `done()` was seen first.
fn seen_before(done: impl Fn() -> bool, gave_up: &std::thread::JoinHandle<u16>) -> bool {
    loop {
        if done() {
            return true;
        }
        if gave_up.is_finished() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn decodes_beyond_the_cap_wait_for_a_slot() {
    let mut cfg = config("gray28");
    cfg.limits.max_decodes = 1;
    cfg.limits.max_body_bytes = 256 << 20;
    let mut server = Running::start(cfg);
    let addr = server.addr;
    let small = encode(&photo(40, 40, 1), ImageFormat::Png);

    // A occupies the only decode slot with a long decode (many large images in one request);
    // B arrives while A decodes and must wait for the slot, then both are answered. Nothing is
    // timed: the gauges are read while A is known to hold the slot. If A finished before B was
    // seen waiting (a very fast machine), the round proves nothing and is repeated with more work.
    let big = base64::engine::general_purpose::STANDARD
        .encode(encode(&photo(1536, 1536, 3), ImageFormat::Png));
    let mut images = 8;
    loop {
        assert!(
            images <= MAX_IMAGES_PER_REQUEST,
            "B was never seen waiting for the decode slot while A held it"
        );
        let body = serde_json::json!({"inputs": [{
            "name": "encoded_image", "shape": [images], "datatype": "BYTES",
            "data": vec![big.clone(); images],
        }]})
        .to_string();
        let a = std::thread::spawn(move || {
            request(
                addr,
                "POST",
                "/v2/models/gray28/infer",
                &[],
                body.as_bytes(),
            )
            .status
        });
        if !seen_before(|| metric(addr, "lkd_decodes_running") == 1, &a) {
            assert_eq!(a.join().unwrap(), 200);
            images *= 4;
            continue;
        }
        let small = small.clone();
        let b =
            std::thread::spawn(move || request(addr, "POST", "/v1/classify", &[], &small).status);
        let b_waited = seen_before(|| metric(addr, "lkd_decodes_waiting") == 1, &a);
        if b_waited {
            // While B waits, A still holds the only slot and B has no answer.
            assert_eq!(metric(addr, "lkd_decodes_running"), 1);
            assert!(!b.is_finished());
        }
        assert_eq!((a.join().unwrap(), b.join().unwrap()), (200, 200));
        if b_waited {
            break;
        }
        images *= 4;
    }
    // Never more than one decode at once, and nothing left waiting.
    assert_eq!(metric(addr, "lkd_decodes_running_max"), 1);
    assert_eq!(metric(addr, "lkd_decodes_waiting"), 0);
    assert_eq!(metric(addr, "lkd_decodes_running"), 0);
    server.stop();
}
