//! Accepting and policing connections, so that no client can hold the server hostage:
//! - a connection must deliver a request's headers within the header timeout (counted from
//!   accept, or from the first byte of a later request) and may sit idle between requests for
//!   at most the idle timeout; the body is bounded by `body::buffer_body`;
//! - at most `max_connections` are open: at the cap a new connection replaces the oldest one
//!   with no request in progress (an idle or half-sent one), or is answered 503 when every
//!   connection is busy;
//! - on shutdown, idle and half-sent connections close at once, requests in progress get the
//!   grace period, and then whatever is left is dropped.
//!
//! hyper serves HTTP/1.1 on each connection; the watchdog here owns the timing, so it does not
//! depend on when a hyper version starts its own header timer. hyper answers unparsable requests
//! itself (bodyless 400/414/431, no hook for a body); the stream wrapper gives those answers the
//! JSON error body on their way to the socket.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::api_error::{error_body, json_error};
use super::metrics::{route_label, Closed, Metrics};
use super::{AppState, Limits};

const IDLE: u8 = 0;
/// Bytes of a request have arrived (or the connection is new) but its headers are not complete.
const HEAD: u8 = 1;
/// A request is being handled (its body is read under the body timeout).
const BUSY: u8 = 2;

struct ConnState {
    phase: AtomicU8,
    /// When the current phase began, in milliseconds since the tracker's epoch.
    since_ms: AtomicU64,
    requests: AtomicUsize,
    evict: Notify,
}

struct Tracker {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

enum Admission {
    Admitted(u64, Arc<ConnState>),
    Full,
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit(&self, cap: usize, app: &AppState) -> Admission {
        let mut open = self.lock();
        if open.len() >= cap {
            // Oldest first: ids grow with accept order.
            let victim = open
                .iter()
                .find(|(_, c)| c.phase.load(Ordering::Acquire) != BUSY)
                .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    if let Some(c) = open.remove(&id) {
                        c.evict.notify_one();
                        app.metrics.record_closed(Closed::Evicted);
                    }
                }
                None => return Admission::Full,
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            phase: AtomicU8::new(HEAD),
            since_ms: AtomicU64::new(self.now_ms()),
            requests: AtomicUsize::new(0),
            evict: Notify::new(),
        });
        open.insert(id, state.clone());
        Admission::Admitted(id, state)
    }
}

/// Removes the connection from the tracker however its task ends (including abort).
struct Registered {
    id: u64,
    tracker: Arc<Tracker>,
    app: Arc<AppState>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.tracker.lock().remove(&self.id);
        self.app
            .metrics
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a request in progress until dropped.
struct Busy {
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
}

impl Busy {
    fn begin(state: Arc<ConnState>, tracker: Arc<Tracker>) -> Self {
        state.requests.fetch_add(1, Ordering::AcqRel);
        state.since_ms.store(tracker.now_ms(), Ordering::Release);
        state.phase.store(BUSY, Ordering::Release);
        Self { state, tracker }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.state.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state
                .since_ms
                .store(self.tracker.now_ms(), Ordering::Release);
            self.state.phase.store(IDLE, Ordering::Release);
        }
    }
}

/// The TCP stream, noting when the first byte of a new request arrives on an idle connection,
/// and giving hyper's own answers to unparsable requests the JSON error body.
struct WatchedStream {
    inner: TcpStream,
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
    /// A rewritten response accepted from hyper but not yet written to the socket.
    pending: Vec<u8>,
    metrics: Arc<Metrics>,
}

/// Request line plus headers; more is answered 431. Bounds what a half-sent request can make
/// the server hold (hyper's own default is its ~400 KB read buffer) at `max_connections` × 64 KiB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Headers per request; more are answered 431.
pub const MAX_HEADERS: usize = 100;

/// Longest head checked for being one of hyper's automatic error answers (they are ~100 bytes).
const MAX_AUTOMATIC_HEAD: usize = 1024;

impl WatchedStream {
    /// Writes what is left of a rewritten response; Ready(Ok) once nothing is pending.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `head` as written when it is one of hyper's bodyless parse-error answers, queueing
    /// its JSON form instead.
    fn take_automatic_error(&mut self, head: &[u8]) -> bool {
        if head.len() > MAX_AUTOMATIC_HEAD || !head.starts_with(b"HTTP/1.") {
            return false;
        }
        match rewrite_automatic_error(head) {
            Some((status, json)) => {
                // Counted like routed requests, under the route label `malformed`.
                self.metrics
                    .record_request("malformed", status, Duration::ZERO);
                self.pending = json;
                true
            }
            None => false,
        }
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && self
                .state
                .phase
                .compare_exchange(IDLE, HEAD, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.state
                .since_ms
                .store(self.tracker.now_ms(), Ordering::Release);
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if self.take_automatic_error(buf) {
            // Accepted: the JSON form is written now or on the next poll.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let first = bufs.iter().find(|b| !b.is_empty());
        if total <= MAX_AUTOMATIC_HEAD && first.is_some_and(|b| b.starts_with(b"HTTP/1.")) {
            let head: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if self.take_automatic_error(&head) {
                let _ = self.poll_pending(cx)?;
                return Poll::Ready(Ok(total));
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How often a connection checks its deadlines: a quarter of the shorter timeout, within 10–500 ms.
fn watchdog_period(limits: &Limits) -> Duration {
    (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(500))
}

/// Whether the connection overstayed its phase's timeout, and which one.
fn overstayed(state: &ConnState, now_ms: u64, limits: &Limits) -> Option<Closed> {
    let since = state.since_ms.load(Ordering::Acquire);
    let waited = Duration::from_millis(now_ms.saturating_sub(since));
    match state.phase.load(Ordering::Acquire) {
        HEAD if waited > limits.header_timeout => Some(Closed::HeaderTimeout),
        IDLE if waited > limits.idle_timeout => Some(Closed::IdleTimeout),
        _ => None,
    }
}

/// One request through the router, counted in the metrics and with every error body in JSON.
async fn handle(
    req: hyper::Request<Incoming>,
    router: Router,
    app: Arc<AppState>,
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
) -> Result<axum::response::Response, Infallible> {
    let _busy = Busy::begin(state, tracker);
    let start = Instant::now();
    let label = route_label(req.uri().path());
    let resp = router.oneshot(req.map(Body::new)).await?;
    let resp = json_error(resp).await;
    app.metrics
        .record_request(label, resp.status().as_u16(), start.elapsed());
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    id: u64,
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
    router: Router,
    app: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = app.limits.clone();
    app.metrics.open_connections.fetch_add(1, Ordering::Relaxed);
    let _registered = Registered {
        id,
        tracker: tracker.clone(),
        app: app.clone(),
    };
    let io = WatchedStream {
        inner: stream,
        state: state.clone(),
        tracker: tracker.clone(),
        pending: Vec::new(),
        metrics: app.metrics.clone(),
    };
    let (svc_app, svc_state, svc_tracker) = (app.clone(), state.clone(), tracker.clone());
    let service = hyper::service::service_fn(move |req| {
        handle(
            req,
            router.clone(),
            svc_app.clone(),
            svc_state.clone(),
            svc_tracker.clone(),
        )
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let period = watchdog_period(&limits);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = state.evict.notified() => return,
            _ = tokio::time::sleep(period) => {
                if let Some(why) = overstayed(&state, tracker.now_ms(), &limits) {
                    app.metrics.record_closed(why);
                    return;
                }
            }
            _ = shutdown.wait_for(|stopping| *stopping), if !draining => {
                draining = true;
                if state.phase.load(Ordering::Acquire) != BUSY {
                    return;
                }
                // Finish the request in progress, then close.
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Answers a connection over the cap with 503 and closes it, spending at most a second on it.
async fn refuse(mut stream: TcpStream) {
    let body = error_body("too many open connections; retry shortly");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
}

/// Accepts until `shutdown` resolves, then drains within the grace period.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    app: Arc<AppState>,
    stop: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = app.limits.clone();
    let tracker = Arc::new(Tracker {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(BTreeMap::new()),
    });
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    match tracker.admit(limits.max_connections, &app) {
                        Admission::Admitted(id, state) => {
                            let rx = stop.subscribe();
                            tasks.spawn(serve_connection(stream, id, state, tracker.clone(), router.clone(), app.clone(), rx));
                        }
                        Admission::Full => {
                            app.metrics.record_closed(Closed::Refused);
                            tasks.spawn(refuse(stream));
                        }
                    }
                }
                // Out of file descriptors or a connection reset before accept: back off, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    app.draining.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
    let deadline = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
}

/// hyper answers a request it cannot parse (a bad request line or header, a URI or header block
/// over its limits) itself, before any handler runs, with a bodyless 400/414/431 and no hook to
/// supply a body. The connection's writer passes that head through here: it is recognised (a
/// 4xx head with `content-length: 0` and no content type; every response of ours carries JSON)
/// and replaced by the same status and headers with the JSON error body.
/// Returns the status and the rewritten response.
fn rewrite_automatic_error(head: &[u8]) -> Option<(u16, Vec<u8>)> {
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
