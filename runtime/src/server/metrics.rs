//! Prometheus metrics, rendered by hand (a handful of series does not need a library).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
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
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// Why the server closed a connection on its own.
#[derive(Clone, Copy, Debug)]
pub(super) enum Closed {
    HeaderTimeout,
    IdleTimeout,
    /// Made room for a new connection at the connection cap.
    Evicted,
    /// Refused with 503: the cap was reached and every connection had a request in progress.
    Refused,
}

pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<Histogram>,
    batch: Mutex<Histogram>,
    pub(super) queue_depth: AtomicI64,
    pub(super) open_connections: AtomicI64,
    closed: [AtomicU64; 4],
    decodes_waiting: AtomicI64,
    decodes_running: AtomicI64,
    /// The most decodes ever running at once (at most `--max-decodes`).
    decodes_running_max: AtomicI64,
}

/// A request's place in the decode gate, counted in the gauges while it is held.
pub(super) struct DecodeStage {
    metrics: Arc<Metrics>,
    running: bool,
}

impl DecodeStage {
    /// Waiting for a decode slot.
    pub(super) fn waiting(metrics: &Arc<Metrics>) -> Self {
        metrics.decodes_waiting.fetch_add(1, Ordering::Relaxed);
        Self {
            metrics: metrics.clone(),
            running: false,
        }
    }

    /// Holding a slot: decoding.
    pub(super) fn running(self) -> Self {
        let m = self.metrics.clone();
        drop(self);
        let now = m.decodes_running.fetch_add(1, Ordering::Relaxed) + 1;
        m.decodes_running_max.fetch_max(now, Ordering::Relaxed);
        Self {
            metrics: m,
            running: true,
        }
    }
}

impl Drop for DecodeStage {
    fn drop(&mut self) {
        let gauge = if self.running {
            &self.metrics.decodes_running
        } else {
            &self.metrics.decodes_waiting
        };
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The metrics label of a request path: the route pattern, so model names do not multiply series.
pub(super) fn route_label(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["v1", "classify"] => "/v1/classify",
        ["healthz"] => "/healthz",
        ["metrics"] => "/metrics",
        ["v2"] => "/v2",
        ["v2", "health", "live"] => "/v2/health/live",
        ["v2", "health", "ready"] => "/v2/health/ready",
        ["v2", "models", _] | ["v2", "models", _, "versions", _] => "/v2/models/{name}",
        ["v2", "models", _, "ready"] | ["v2", "models", _, "versions", _, "ready"] => {
            "/v2/models/{name}/ready"
        }
        ["v2", "models", _, "infer"] | ["v2", "models", _, "versions", _, "infer"] => {
            "/v2/models/{name}/infer"
        }
        _ => "other",
    }
}

impl Metrics {
    pub(super) fn new() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Histogram::new(&LATENCY_BUCKETS_S)),
            batch: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
            queue_depth: AtomicI64::new(0),
            open_connections: AtomicI64::new(0),
            closed: Default::default(),
            decodes_waiting: AtomicI64::new(0),
            decodes_running: AtomicI64::new(0),
            decodes_running_max: AtomicI64::new(0),
        }
    }

    pub(super) fn record_request(&self, label: &'static str, code: u16, elapsed: Duration) {
        *lock(&self.requests).entry((label, code)).or_insert(0) += 1;
        if matches!(label, "/v1/classify" | "/v2/models/{name}/infer") {
            lock(&self.latency).observe(elapsed.as_secs_f64());
        }
    }

    pub(super) fn record_batch(&self, images: usize) {
        lock(&self.batch).observe(images as f64);
    }

    pub(super) fn record_closed(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP lkd_requests_total HTTP requests by route and status code (route `malformed`: requests that could not be parsed).\n");
        out.push_str("# TYPE lkd_requests_total counter\n");
        for ((path, code), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "lkd_requests_total{{path=\"{path}\",code=\"{code}\"}} {n}"
            );
        }
        lock(&self.latency).render(
            "lkd_request_duration_seconds",
            "Latency of inference requests (/v1/classify and /v2/models/{name}/infer).",
            &mut out,
        );
        lock(&self.batch).render("lkd_batch_size", "Images per session run.", &mut out);
        let _ = writeln!(
            out,
            "# HELP lkd_queue_depth Requests waiting for a batcher.\n# TYPE lkd_queue_depth gauge\nlkd_queue_depth {}",
            self.queue_depth.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP lkd_open_connections Open client connections.\n# TYPE lkd_open_connections gauge\n\
             lkd_open_connections {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        for (name, help, gauge) in [
            (
                "lkd_decodes_running",
                "Requests decoding images now (at most --max-decodes).",
                &self.decodes_running,
            ),
            (
                "lkd_decodes_running_max",
                "The most requests ever decoding images at once.",
                &self.decodes_running_max,
            ),
            (
                "lkd_decodes_waiting",
                "Requests waiting for a decode slot.",
                &self.decodes_waiting,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                gauge.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP lkd_connections_closed_total Connections the server closed, by reason.\n",
        );
        out.push_str("# TYPE lkd_connections_closed_total counter\n");
        let reasons = [
            Closed::HeaderTimeout,
            Closed::IdleTimeout,
            Closed::Evicted,
            Closed::Refused,
        ];
        for why in reasons {
            let name = match why {
                Closed::HeaderTimeout => "header_timeout",
                Closed::IdleTimeout => "idle_timeout",
                Closed::Evicted => "evicted",
                Closed::Refused => "refused",
            };
            let n = self.closed[why as usize].load(Ordering::Relaxed);
            let _ = writeln!(out, "lkd_connections_closed_total{{reason=\"{name}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn routes_are_labelled_by_pattern() {
        assert_eq!(
            route_label("/v2/models/resnet/infer"),
            "/v2/models/{name}/infer"
        );
        assert_eq!(
            route_label("/v2/models/resnet/versions/1/infer"),
            "/v2/models/{name}/infer"
        );
        assert_eq!(route_label("/v2/models/resnet"), "/v2/models/{name}");
        assert_eq!(route_label("/v1/classify"), "/v1/classify");
        assert_eq!(route_label("/v2/models/a/b/c/d/e/f"), "other");
        assert_eq!(route_label("/"), "other");
    }
}
