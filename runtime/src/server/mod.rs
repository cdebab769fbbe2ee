//! HTTP inference service: this project's `/v1/classify` and the KServe v2 / open inference
//! protocol (`/v2/...`, what `tritonclient.http` speaks), several models per process, dynamic
//! batching, bearer-token auth, and limits that hold against hostile clients.
//!
//! Where things live: `conn` accepts and polices connections (timeouts, connection cap,
//! shutdown); `auth` and `body` are the request middleware; `v1` and `kserve` are the two APIs
//! over `batcher` (one thread per model owning its session); its command line is
//! `crate::cli::serve`.

mod api_error;
mod auth;
mod batcher;
mod body;
mod conn;
pub mod kserve;
mod metrics;
mod v1;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{watch, Semaphore};

pub use auth::{BearerToken, MIN_TOKEN_LEN};
pub use batcher::MAX_IMAGES_PER_REQUEST;
pub use conn::{MAX_HEADERS, MAX_HEADER_BYTES};
pub use metrics::Metrics;
pub use v1::ClassifyResponse;

use crate::error::{Result, RuntimeError};
use crate::preprocess::PreprocessOverrides;
use crate::session::{Engine, SessionConfig};
use api_error::ApiError;
use batcher::{BatchSettings, ModelSlot};

/// One model to serve, under the name clients use in `/v2/models/{name}` and `?model=`.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub name: String,
    pub path: PathBuf,
}

impl ModelSpec {
    /// Named after the file stem, as `lkd serve model.onnx` does.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self { name, path }
    }
}

/// Checks a model name: it appears in URL paths, so letters, digits and `-_.` only.
pub fn validate_model_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Server(format!(
            "invalid model name `{name}`: use 1–128 letters, digits, `-`, `_` or `.` (not starting with `.`); \
             name a model explicitly with --model NAME=PATH"
        )))
    }
}

/// Bounds on what one client can make the server hold.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted request body; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Time from connection (or from the first byte of a later request) to complete headers.
    pub header_timeout: Duration,
    /// Time to receive a whole request body once its headers are in; 408 after that.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit between requests.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Images being decoded at once, across all requests.
    pub max_decodes: usize,
    /// After a shutdown signal, how long requests in progress may take before they are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_decodes: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub models: Vec<ModelSpec>,
    pub session: SessionConfig,
    /// ONNX Runtime (default) or OpenVINO; every model is served on it.
    pub engine: Engine,
    /// Applies to the model when there is exactly one (several models need their metadata).
    pub preprocess: PreprocessOverrides,
    /// `HOST:PORT`, host names resolved; loopback by default: exposing the service is an
    /// explicit choice, and a non-loopback address needs `auth` or `insecure_no_auth`.
    pub addr: String,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Requests waiting for a batcher, per model; beyond this the server answers 503.
    pub queue: usize,
    pub default_top_k: usize,
    pub limits: Limits,
    /// Required on every route but the health checks when set.
    pub auth: Option<BearerToken>,
    /// Allows a non-loopback address without `auth` (another layer authenticates).
    pub insecure_no_auth: bool,
}

impl ServeConfig {
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self::with_models(vec![ModelSpec::from_path(model)])
    }

    pub fn with_models(models: Vec<ModelSpec>) -> Self {
        Self {
            models,
            session: SessionConfig {
                warmup: 1,
                ..SessionConfig::default()
            },
            engine: Engine::Ort,
            preprocess: PreprocessOverrides::default(),
            addr: "127.0.0.1:8080".into(),
            max_batch: 8,
            max_wait: Duration::from_millis(5),
            queue: 64,
            default_top_k: 5,
            limits: Limits::default(),
            auth: None,
            insecure_no_auth: false,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RuntimeError::Server(m));
        if self.models.is_empty() {
            return bad("no model to serve: give a model path or --model NAME=PATH".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for m in &self.models {
            validate_model_name(&m.name)?;
            if !names.insert(&m.name) {
                return bad(format!(
                    "model name `{}` is given twice; names must be unique",
                    m.name
                ));
            }
        }
        if self.models.len() > 1 && !self.preprocess.is_empty() {
            return bad("preprocessing flags apply to a single model; with several models each needs its lkd metadata".into());
        }
        if self.max_batch == 0 || self.queue == 0 || self.default_top_k == 0 {
            return bad("--max-batch, --queue and --top-k must be at least 1".into());
        }
        let l = &self.limits;
        if l.max_connections == 0 || l.max_decodes == 0 || l.max_body_bytes == 0 {
            return bad(
                "--max-connections, --max-decodes and --max-body-bytes must be at least 1".into(),
            );
        }
        if [l.header_timeout, l.body_timeout, l.idle_timeout].contains(&Duration::ZERO) {
            return bad("timeouts must be at least 1 ms".into());
        }
        if self.auth.is_some() && self.insecure_no_auth {
            return bad(
                "--auth-token-file and --insecure-no-auth contradict each other; give one".into(),
            );
        }
        Ok(())
    }
}

/// Resolves `HOST:PORT` (names included) to the first address it names.
async fn resolve(addr: &str) -> Result<SocketAddr> {
    let mut found = tokio::net::lookup_host(addr).await.map_err(|e| {
        RuntimeError::Server(format!(
            "cannot resolve address `{addr}`: {e}. Expected HOST:PORT, e.g. 127.0.0.1:8080 or localhost:8080"
        ))
    })?;
    found
        .next()
        .ok_or_else(|| RuntimeError::Server(format!("address `{addr}` resolves to nothing")))
}

pub(super) struct AppState {
    models: BTreeMap<String, Arc<ModelSlot>>,
    default_model: String,
    metrics: Arc<Metrics>,
    decodes: Arc<Semaphore>,
    default_top_k: usize,
    auth: Option<BearerToken>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    draining: AtomicBool,
}

impl AppState {
    fn model(&self, name: &str) -> std::result::Result<&Arc<ModelSlot>, ApiError> {
        self.models.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            ApiError::not_found(format!(
                "unknown model `{name}`; this server serves: {}",
                known.join(", ")
            ))
        })
    }
}

fn router(state: Arc<AppState>) -> Router {
    use kserve::*;
    Router::new()
        .route("/v1/classify", post(v1::classify))
        .route("/healthz", get(v1::healthz))
        .route("/metrics", get(v1::metrics_text))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(version_infer),
        )
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see /v1/classify and /v2/...")
        })
        // Bodies are already whole and bounded by `buffer_body`; extractors must not re-limit them.
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            body::buffer_body,
        ))
        // Outermost: nothing (not even the body) is read for an unauthenticated request.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}

/// A server bound to its address, with its models loaded and their batchers running.
pub struct BoundServer {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    batchers: Vec<JoinHandle<()>>,
}

/// Loads the models, starts their batchers and binds the listener (port 0 picks a free port).
/// A non-loopback address is refused unless `cfg.auth` is set or `cfg.insecure_no_auth`.
pub async fn bind(cfg: ServeConfig) -> Result<BoundServer> {
    cfg.validate()?;
    let addr = resolve(&cfg.addr).await?;
    if !addr.ip().is_loopback() && cfg.auth.is_none() && !cfg.insecure_no_auth {
        return Err(RuntimeError::Server(format!(
            "`{}` ({addr}) is not a loopback address, so anyone who can reach it could use the models. \
             Pass --auth-token-file FILE (clients then send `Authorization: Bearer <token>`), or \
             --insecure-no-auth if another layer authenticates",
            cfg.addr
        )));
    }
    let metrics = Arc::new(Metrics::new());
    let settings = BatchSettings {
        max_batch: cfg.max_batch,
        max_wait: cfg.max_wait,
        queue: cfg.queue,
    };
    let mut models = BTreeMap::new();
    let mut batchers = Vec::new();
    for spec in &cfg.models {
        let (slot, handle) = batcher::start(
            &spec.name,
            &spec.path,
            &cfg.session,
            cfg.engine,
            &cfg.preprocess,
            &settings,
            metrics.clone(),
        )?;
        models.insert(spec.name.clone(), Arc::new(slot));
        batchers.push(handle);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| RuntimeError::Server(format!("cannot bind {addr}: {e}")))?;
    let (stop, shutdown) = watch::channel(false);
    let state = Arc::new(AppState {
        models,
        default_model: cfg.models[0].name.clone(),
        metrics,
        decodes: Arc::new(Semaphore::new(cfg.limits.max_decodes)),
        default_top_k: cfg.default_top_k,
        auth: cfg.auth.clone(),
        limits: cfg.limits.clone(),
        shutdown,
        draining: AtomicBool::new(false),
    });
    Ok(BoundServer {
        listener,
        state,
        stop,
        batchers,
    })
}

impl BoundServer {
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| RuntimeError::Server(e.to_string()))
    }

    /// `(name, provider)` of each model served.
    pub fn models(&self) -> Vec<(String, &'static str)> {
        self.state
            .models
            .values()
            .map(|m| (m.name.clone(), m.info.provider))
            .collect()
    }

    /// Serves until `shutdown` resolves, then lets requests in progress finish within the
    /// grace period, drops the rest, and stops the batchers.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Self {
            listener,
            state,
            stop,
            batchers,
        } = self;
        let grace = state.limits.shutdown_grace;
        let started = std::time::Instant::now();
        conn::serve(listener, router(state.clone()), state, stop, shutdown).await;
        // Every connection is gone, and with them the queues' senders, so the batchers end after
        // their current batch (queued requests whose clients are gone are skipped).
        let joined =
            tokio::task::spawn_blocking(move || batchers.into_iter().all(|b| b.join().is_ok()));
        let left = grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        match tokio::time::timeout(left, joined).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(RuntimeError::Server("a batcher thread panicked".into())),
            Err(_) => Err(RuntimeError::Server(
                "a batcher did not finish its batch within the grace period".into(),
            )),
        }
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn serve(
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
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

/// For the CLI: own runtime, logs the address, stops on Ctrl-C/SIGTERM within the grace period.
pub fn serve_blocking(cfg: ServeConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Server(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let server = bind(cfg.clone()).await?;
        let models: Vec<String> = server.models().iter().map(|(n, p)| format!("{n} ({p})")).collect();
        let auth = match (&cfg.auth, cfg.insecure_no_auth) {
            (Some(_), _) => "bearer token required",
            (None, true) => "NO AUTHENTICATION (--insecure-no-auth)",
            (None, false) => "loopback only, no token",
        };
        eprintln!(
            "serving {} on http://{} ({auth}; max batch {}, max wait {:?}, queue {}, max connections {})",
            models.join(", "),
            server.local_addr()?,
            cfg.max_batch,
            cfg.max_wait,
            cfg.queue,
            cfg.limits.max_connections
        );
        server.run(shutdown_signal()).await?;
        eprintln!("server stopped");
        Ok(())
    })
}
