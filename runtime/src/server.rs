//! HTTP classification service with dynamic batching.
//!
//! Handlers decode and preprocess on the blocking pool, then put the tensor on a bounded queue.
//! One batcher thread owns the session: it takes up to `max_batch` queued requests, waiting at
//! most `max_wait` after the first, and runs them as one batch. A full queue answers 503 at once
//! instead of letting latency grow without bound.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lkd_models::preprocess::Preprocess;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::{Result, RuntimeError};
use crate::predict::{run_images, softmax, top_k, Prediction};
use crate::preprocess::{decode, image_len, preprocess_into, resolve_preprocess, PreprocessOverrides};
use crate::session::{Model, ModelInfo, SessionConfig};

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub model: PathBuf,
    pub session: SessionConfig,
    pub preprocess: PreprocessOverrides,
    /// Loopback by default: exposing the service is an explicit choice.
    pub addr: SocketAddr,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Requests waiting for the batcher; beyond this the server answers 503.
    pub queue: usize,
    pub max_body_bytes: usize,
    pub default_top_k: usize,
}

impl ServeConfig {
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            session: SessionConfig { warmup: 1, ..SessionConfig::default() },
            preprocess: PreprocessOverrides::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_batch: 8,
            max_wait: Duration::from_millis(5),
            queue: 64,
            max_body_bytes: 8 << 20,
            default_top_k: 5,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClassifyResponse {
    pub predictions: Vec<Prediction>,
    pub model: String,
    pub latency_ms: f64,
}

struct Job {
    input: Vec<f32>,
    top_k: usize,
    reply: oneshot::Sender<std::result::Result<Vec<Prediction>, String>>,
}

const LATENCY_BUCKETS_S: [f64; 12] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// Prometheus metrics, rendered by hand (a handful of series does not need a library).
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<Histogram>,
    batch: Mutex<Histogram>,
    queue_depth: AtomicI64,
}

impl Metrics {
    fn new() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Histogram::new(&LATENCY_BUCKETS_S)),
            batch: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
            queue_depth: AtomicI64::new(0),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        out.push_str("# HELP lkd_requests_total HTTP requests by path and status code.\n");
        out.push_str("# TYPE lkd_requests_total counter\n");
        for ((path, code), n) in Self::lock(&self.requests).iter() {
            let _ = writeln!(out, "lkd_requests_total{{path=\"{path}\",code=\"{code}\"}} {n}");
        }
        Self::lock(&self.latency).render(
            "lkd_request_duration_seconds",
            "Latency of /v1/classify requests.",
            &mut out,
        );
        Self::lock(&self.batch).render("lkd_batch_size", "Images per session run.", &mut out);
        let _ = writeln!(
            out,
            "# HELP lkd_queue_depth Requests waiting for the batcher.\n# TYPE lkd_queue_depth gauge\nlkd_queue_depth {}",
            self.queue_depth.load(Ordering::Relaxed)
        );
        out
    }
}

struct AppState {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
    info: ModelInfo,
    preprocess: Preprocess,
    default_top_k: usize,
}

#[derive(Deserialize)]
struct ClassifyQuery {
    top_k: Option<usize>,
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

async fn read_image(state: &Arc<AppState>, req: Request) -> std::result::Result<Bytes, Response> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let body = if is_multipart {
        let mut mp = Multipart::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        let mut file = None;
        while let Some(field) = mp.next_field().await.map_err(|e| error(e.status(), e.body_text()))? {
            let bytes = field.bytes().await.map_err(|e| error(e.status(), e.body_text()))?;
            if file.replace(bytes).is_some() {
                return Err(error(StatusCode::BAD_REQUEST, "expected exactly one file in the multipart body"));
            }
        }
        file.ok_or_else(|| error(StatusCode::BAD_REQUEST, "the multipart body holds no file"))?
    } else {
        Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?
    };
    if body.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "empty body: send the image bytes or a multipart file"));
    }
    Ok(body)
}

async fn classify(State(state): State<Arc<AppState>>, query: Query<ClassifyQuery>, req: Request) -> Response {
    let start = Instant::now();
    let k = query.top_k.unwrap_or(state.default_top_k);
    if k == 0 {
        return error(StatusCode::BAD_REQUEST, "top_k must be at least 1");
    }
    let body = match read_image(&state, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let p = state.preprocess.clone();
    let prepared = tokio::task::spawn_blocking(move || -> Result<Vec<f32>> {
        let img = decode(&body, None)?;
        let mut input = vec![0f32; image_len(&p)];
        preprocess_into(&img, &p, &mut input)?;
        Ok(input)
    })
    .await;
    let input = match prepared {
        Ok(Ok(x)) => x,
        Ok(Err(e)) if e.is_too_large() => return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("preprocessing task failed: {e}")),
    };
    let (reply, rx) = oneshot::channel();
    state.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = state.tx.try_send(Job { input, top_k: k, reply }) {
        state.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        let msg = match e {
            TrySendError::Full(_) => "the request queue is full; retry shortly",
            TrySendError::Disconnected(_) => "the server is shutting down",
        };
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, msg);
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    match rx.await {
        Ok(Ok(predictions)) => Json(ClassifyResponse {
            predictions,
            model: state.info.name.clone(),
            latency_ms: start.elapsed().as_secs_f64() * 1e3,
        })
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the batcher stopped"),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "model": state.info.name,
        "provider": state.info.provider,
    }))
    .into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let known = matches!(path.as_str(), "/v1/classify" | "/healthz" | "/metrics");
    let label = if known { path.as_str() } else { "other" };
    *Metrics::lock(&state.metrics.requests).entry((label.to_string(), resp.status().as_u16())).or_insert(0) += 1;
    if path == "/v1/classify" {
        Metrics::lock(&state.metrics.latency).observe(start.elapsed().as_secs_f64());
    }
    resp
}

fn batcher(mut model: Model, p: Preprocess, rx: Receiver<Job>, max_batch: usize, max_wait: Duration, metrics: Arc<Metrics>) {
    let len = image_len(&p);
    let mut data = Vec::with_capacity(max_batch * len);
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    // Ends when every sender is gone, i.e. after the HTTP server has drained.
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        let deadline = Instant::now() + max_wait;
        while jobs.len() < max_batch {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        metrics.queue_depth.fetch_sub(jobs.len() as i64, Ordering::Relaxed);
        Metrics::lock(&metrics.batch).observe(jobs.len() as f64);
        data.clear();
        for j in &jobs {
            data.extend_from_slice(&j.input);
        }
        match run_images(&mut model, &p, &data, jobs.len()) {
            Ok(logits) => {
                for (i, j) in jobs.drain(..).enumerate() {
                    let preds = top_k(&softmax(logits.row(i)), j.top_k, model.info());
                    let _ = j.reply.send(Ok(preds));
                }
            }
            Err(e) => {
                for j in jobs.drain(..) {
                    let _ = j.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// A server bound to its address, with the model loaded and the batcher running.
pub struct BoundServer {
    listener: tokio::net::TcpListener,
    router: Router,
    batcher: std::thread::JoinHandle<()>,
    info: ModelInfo,
}

/// Loads the model, starts the batcher and binds the listener (port 0 picks a free port).
pub async fn bind(cfg: ServeConfig) -> Result<BoundServer> {
    if cfg.max_batch == 0 || cfg.queue == 0 {
        return Err(RuntimeError::Server("--max-batch and --queue must be at least 1".into()));
    }
    let model = Model::load(&cfg.model, &cfg.session)?;
    let preprocess = resolve_preprocess(model.info(), &cfg.preprocess)?;
    let info = model.info().clone();
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = sync_channel(cfg.queue);
    let (p, m, wait, max_batch) = (preprocess.clone(), metrics.clone(), cfg.max_wait, cfg.max_batch);
    let batcher = std::thread::Builder::new()
        .name("lkd-batcher".into())
        .spawn(move || batcher(model, p, rx, max_batch, wait, m))
        .map_err(|e| RuntimeError::Server(format!("cannot start the batcher thread: {e}")))?;
    let state = Arc::new(AppState { tx, metrics, info: info.clone(), preprocess, default_top_k: cfg.default_top_k });
    let router = Router::new()
        .route("/v1/classify", post(classify))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| RuntimeError::Server(format!("cannot bind {}: {e}", cfg.addr)))?;
    Ok(BoundServer { listener, router, batcher, info })
}

impl BoundServer {
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| RuntimeError::Server(e.to_string()))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and stops the batcher.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let served = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await;
        // The router (and with it the queue's sender) is gone now, so the batcher drains and ends.
        let joined = tokio::task::spawn_blocking(move || self.batcher.join()).await;
        served.map_err(|e| RuntimeError::Server(e.to_string()))?;
        match joined {
            Ok(Ok(())) => Ok(()),
            _ => Err(RuntimeError::Server("the batcher thread panicked".into())),
        }
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn serve(cfg: ServeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    bind(cfg).await?.run(shutdown).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// For the CLI: own runtime, logs the address, stops gracefully on Ctrl-C/SIGTERM.
pub fn serve_blocking(cfg: ServeConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Server(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let server = bind(cfg.clone()).await?;
        let info = server.info();
        eprintln!(
            "serving {} on http://{} ({}, max batch {}, max wait {:?}, queue {})",
            info.name,
            server.local_addr()?,
            info.provider,
            cfg.max_batch,
            cfg.max_wait,
            cfg.queue
        );
        server.run(shutdown_signal()).await?;
        eprintln!("server stopped");
        Ok(())
    })
}
