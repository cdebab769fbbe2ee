use std::sync::Arc;
use std::time::Duration;

use image::ImageFormat;
use lkd_runtime::server::ClassifyResponse;
use lkd_runtime::{Classifier, PreprocessOverrides, SessionConfig};

use crate::common::*;
use crate::serve_util::{config, request, Running};

#[test]
fn load_test_returns_only_correct_answers() {
    let mut cfg = config("rgb32");
    cfg.max_batch = 8;
    cfg.max_wait = Duration::from_millis(5);
    cfg.queue = 64;
    let mut server = Running::start(cfg);

    // Expected answers computed without the server.
    let images: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("{i}.jpg"),
                encode(&photo(70 + 20 * i, 60 + 7 * i, i), ImageFormat::Jpeg),
            )
        })
        .collect();
    let mut c = Classifier::load(
        model("rgb32"),
        &SessionConfig::default(),
        &PreprocessOverrides::default(),
    )
    .unwrap();
    let expected = Arc::new(c.classify(&images, 3).unwrap());
    let images = Arc::new(images);

    let addr = server.addr;
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let (images, expected) = (images.clone(), expected.clone());
            std::thread::spawn(move || {
                for r in 0..50 {
                    let i = (t + r) % images.len();
                    let resp = http(
                        addr,
                        "POST",
                        "/v1/classify?top_k=3",
                        Some("image/jpeg"),
                        &images[i].1,
                    );
                    assert_eq!(resp.status, 200, "client {t} request {r}: {}", resp.body);
                    let body: ClassifyResponse = serde_json::from_str(&resp.body).unwrap();
                    assert_eq!(body.model, "rgb32");
                    assert_eq!(body.predictions.len(), 3);
                    for (got, want) in body.predictions.iter().zip(&expected[i]) {
                        assert_eq!((got.index, &got.label), (want.index, &want.label));
                        assert!(
                            (got.prob - want.prob).abs() < 1e-4,
                            "{} vs {}",
                            got.prob,
                            want.prob
                        );
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }

    let metrics = http(addr, "GET", "/metrics", None, b"").body;
    assert!(
        metrics.contains("lkd_requests_total{path=\"/v1/classify\",code=\"200\"} 400"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lkd_request_duration_seconds_count 400"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lkd_batch_size_bucket{le=\"+Inf\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("lkd_queue_depth 0"), "{metrics}");
    assert!(!metrics.contains("code=\"5"), "{metrics}");
    server.stop();
}

#[test]
fn bad_requests_get_4xx_and_multipart_works() {
    let mut cfg = config("gray28");
    cfg.limits.max_body_bytes = 64 * 1024;
    let mut server = Running::start(cfg);
    let addr = server.addr;

    let health = http(addr, "GET", "/healthz", None, b"");
    assert_eq!(health.status, 200);
    assert!(health.body.contains("CPUExecutionProvider"));

    let big = vec![7u8; 200 * 1024];
    let too_big = request(
        addr,
        "POST",
        "/v1/classify",
        &[("Content-Type", "image/png")],
        &big,
    );
    assert_eq!(too_big.status, 413);
    assert!(
        too_big
            .error()
            .contains("larger than the server's limit of 65536 bytes"),
        "{}",
        too_big.text()
    );
    let (ct, body) = multipart("file", "big.png", &big);
    assert_eq!(
        http(addr, "POST", "/v1/classify", Some(&ct), &body).status,
        413
    );

    let garbage = http(
        addr,
        "POST",
        "/v1/classify",
        Some("image/png"),
        b"\x89PNG but not really",
    );
    assert_eq!(garbage.status, 400);
    assert!(
        garbage.body.contains("cannot decode image"),
        "{}",
        garbage.body
    );
    assert_eq!(http(addr, "POST", "/v1/classify", None, b"").status, 400);
    assert_eq!(
        http(addr, "POST", "/v1/classify?top_k=0", None, b"x").status,
        400
    );
    let bad_query = request(addr, "POST", "/v1/classify?top_k=abc", &[], b"x");
    assert_eq!(bad_query.status, 400);
    assert!(
        bad_query.error().contains("top_k: invalid digit"),
        "{}",
        bad_query.text()
    );
    let unknown = request(addr, "POST", "/v1/classify?model=nope", &[], b"x");
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.error(),
        "unknown model `nope`; this server serves: gray28"
    );

    let png = encode(&photo(56, 56, 3), ImageFormat::Png);
    let (ct, body) = multipart("file", "digit.png", &png);
    let ok = http(addr, "POST", "/v1/classify?top_k=2", Some(&ct), &body);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let r: ClassifyResponse = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(r.predictions.len(), 2);
    let digits = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    assert_eq!(r.predictions[0].label, digits[r.predictions[0].index]);
    let raw = http(
        addr,
        "POST",
        "/v1/classify?top_k=2",
        Some("image/png"),
        &png,
    );
    let r2: ClassifyResponse = serde_json::from_str(&raw.body).unwrap();
    assert_eq!(r.predictions, r2.predictions);

    let metrics = http(addr, "GET", "/metrics", None, b"").body;
    assert!(
        metrics.contains("code=\"413\"} 2") && metrics.contains("code=\"400\"} 4"),
        "{metrics}"
    );
    server.stop();
}

#[test]
fn full_queue_answers_503_and_shutdown_drains() {
    let mut cfg = config("slow");
    cfg.queue = 1;
    cfg.max_batch = 1;
    cfg.max_wait = Duration::from_millis(0);
    let mut server = Running::start(cfg);
    let addr = server.addr;
    let img = Arc::new(encode(&photo(128, 128, 1), ImageFormat::Png));

    let burst: Vec<_> = (0..24)
        .map(|_| {
            let img = img.clone();
            std::thread::spawn(move || {
                http(addr, "POST", "/v1/classify", Some("image/png"), &img).status
            })
        })
        .collect();
    let codes: Vec<u16> = burst.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(codes.iter().all(|&c| c == 200 || c == 503), "{codes:?}");
    assert!(
        codes.contains(&503),
        "a one-slot queue should overflow: {codes:?}"
    );
    assert!(codes.contains(&200), "{codes:?}");
    server.stop();

    // Graceful shutdown: a request held by the batcher (long max_wait) still gets its answer.
    let mut cfg = config("slow");
    cfg.max_wait = Duration::from_millis(400);
    let mut server = Running::start(cfg);
    let addr = server.addr;
    let client = std::thread::spawn(move || {
        http(addr, "POST", "/v1/classify", Some("image/png"), &img).status
    });
    std::thread::sleep(Duration::from_millis(150));
    server.stop();
    assert_eq!(client.join().unwrap(), 200);
}
