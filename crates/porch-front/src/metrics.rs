//! Counters for the admin listener's `/metrics`, and their Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::{QueueStats, WorkerStats};
use crate::Front;
use porch_config::RouteAction;

/// Counters the admin listener exposes.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    /// `101 Switching Protocols`: WebSockets, to an app or through a proxy.
    pub responses_1xx: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_3xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub in_flight: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    /// App requests answered 503 because no worker took them within `queue_timeout`.
    pub queue_timeouts: AtomicU64,
    /// App requests whose client went away before the answer's head.
    pub client_gone: AtomicU64,
    /// Connections closed because a response waited longer than `send_timeout` for its
    /// client (HTTP/2 flow control).
    pub send_timeouts: AtomicU64,
    /// WebSockets of ASGI apps open now, and ever opened.
    pub websockets_open: AtomicU64,
    pub websockets: AtomicU64,
    /// Responses by route kind ([`ROUTES`]) and status class (1xx..5xx).
    by_route: [[AtomicU64; 5]; ROUTES.len()],
    /// Time to the response head, per route kind: cumulative histogram buckets.
    latency: [[AtomicU64; LATENCY_BUCKETS.len() + 1]; ROUTES.len()],
    latency_sum_us: [AtomicU64; ROUTES.len()],
    /// From "request fully read" to "a worker took it" (dispatch/): the autoscaling signal.
    pub queue: Arc<QueueStats>,
}

/// Route kinds as metric labels.
pub(crate) const ROUTES: [&str; 6] = ["app", "static", "proxy", "redirect", "return", "none"];
const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

pub(crate) fn route_index(action: Option<&RouteAction>) -> usize {
    match action {
        Some(RouteAction::App) => 0,
        Some(RouteAction::Static(_)) => 1,
        Some(RouteAction::Proxy(_)) => 2,
        Some(RouteAction::Redirect { .. }) => 3,
        Some(RouteAction::Return { .. }) => 4,
        None => 5,
    }
}

impl Metrics {
    pub(crate) fn new(queue: Arc<QueueStats>) -> Metrics {
        Metrics {
            queue,
            ..Metrics::default()
        }
    }

    pub(crate) fn observe(&self, route: usize, status: u16, took: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_route[route][class].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[route][bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us[route].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn render_routes(&self) -> String {
        use std::fmt::Write;
        let mut out = String::from("# TYPE porch_route_responses_total counter\n");
        for (r, name) in ROUTES.iter().enumerate() {
            for (c, n) in self.by_route[r].iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "porch_route_responses_total{{route=\"{name}\",class=\"{}xx\"}} {n}",
                        c + 1
                    );
                }
            }
        }
        out.push_str("# TYPE porch_response_seconds histogram\n");
        for (r, name) in ROUTES.iter().enumerate() {
            let mut cumulative = 0;
            for (i, count) in self.latency[r].iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "porch_response_seconds_bucket{{route=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = self.latency_sum_us[r].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "porch_response_seconds_sum{{route=\"{name}\"}} {sum}");
            let _ = writeln!(
                out,
                "porch_response_seconds_count{{route=\"{name}\"}} {cumulative}"
            );
        }
        let q = &self.queue;
        let _ = write!(
            out,
            "# TYPE porch_queue_wait_seconds summary\nporch_queue_wait_seconds_sum {}\nporch_queue_wait_seconds_count {}\n",
            q.wait_us.load(Ordering::Relaxed) as f64 / 1e6,
            q.taken.load(Ordering::Relaxed)
        );
        out
    }

    pub(crate) fn count_status(&self, status: u16) {
        let c = match status {
            100..=199 => &self.responses_1xx,
            200..=299 => &self.responses_2xx,
            300..=399 => &self.responses_3xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The whole `/metrics` page in Prometheus' text format.
pub(crate) fn render(front: &Front) -> String {
    let no_stats = WorkerStats::default();
    let s = front.workers.as_deref().unwrap_or(&no_stats);
    let m = &front.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let cache = crate::static_files::cache_stats();
    let text = format!(
        "# TYPE porch_requests_total counter\nporch_requests_total {}\n\
         # TYPE porch_responses_total counter\n\
         porch_responses_total{{class=\"1xx\"}} {}\n\
         porch_responses_total{{class=\"2xx\"}} {}\nporch_responses_total{{class=\"3xx\"}} {}\n\
         porch_responses_total{{class=\"4xx\"}} {}\nporch_responses_total{{class=\"5xx\"}} {}\n\
         # TYPE porch_app_in_flight gauge\nporch_app_in_flight {}\n\
         # TYPE porch_queue_depth gauge\nporch_queue_depth {}\n\
         # TYPE porch_queue_rejected_total counter\nporch_queue_rejected_total {}\n\
         # TYPE porch_workers_alive gauge\nporch_workers_alive {}\n\
         # TYPE porch_worker_restarts_total counter\n\
         porch_worker_restarts_total{{cause=\"crashed\"}} {}\nporch_worker_restarts_total{{cause=\"timeout\"}} {}\n\
         porch_worker_restarts_total{{cause=\"recycled\"}} {}\nporch_worker_restarts_total{{cause=\"reloaded\"}} {}\n",
        g(&m.requests),
        g(&m.responses_1xx),
        g(&m.responses_2xx),
        g(&m.responses_3xx),
        g(&m.responses_4xx),
        g(&m.responses_5xx),
        g(&m.in_flight),
        front.queue.len(),
        g(&m.rejected_queue_full),
        g(&s.alive),
        g(&s.restarts_crashed),
        g(&s.restarts_timeout),
        g(&s.restarts_recycled),
        g(&s.restarts_reloaded),
    );
    text + &format!(
        "porch_worker_restarts_total{{cause=\"memory\"}} {}\n\
         # TYPE porch_queue_timeouts_total counter\nporch_queue_timeouts_total {}\n\
         # TYPE porch_app_client_gone_total counter\nporch_app_client_gone_total {}\n\
         # TYPE porch_send_timeouts_total counter\nporch_send_timeouts_total {}\n\
         # TYPE porch_out_of_descriptors_total counter\n\
         porch_out_of_descriptors_total{{action=\"closed_idle\"}} {}\n\
         porch_out_of_descriptors_total{{action=\"refused_503\"}} {}\n\
         # TYPE porch_response_buffered_bytes gauge\nporch_response_buffered_bytes {}\n\
         # TYPE porch_response_spilled_bytes_total counter\nporch_response_spilled_bytes_total {}\n\
         # TYPE porch_request_body_buffered_bytes gauge\nporch_request_body_buffered_bytes {}\n\
         # TYPE porch_request_body_spilled_bytes_total counter\nporch_request_body_spilled_bytes_total {}\n\
         # TYPE porch_websockets_open gauge\nporch_websockets_open {}\n\
         # TYPE porch_websockets_total counter\nporch_websockets_total {}\n\
         # TYPE porch_static_cache_files gauge\nporch_static_cache_files {}\n\
         # TYPE porch_static_cache_bytes gauge\nporch_static_cache_bytes {}\n\
         # TYPE porch_static_cache_hits_total counter\nporch_static_cache_hits_total {}\n",
        g(&s.restarts_memory),
        g(&m.queue_timeouts),
        g(&m.client_gone),
        g(&m.send_timeouts),
        g(&front.descriptors.shed_idle),
        g(&front.descriptors.shed_new),
        front.response_memory.in_memory(),
        front.response_memory.spilled(),
        front.body_memory.in_memory(),
        front.body_memory.spilled(),
        g(&m.websockets_open),
        g(&m.websockets),
        cache.0,
        cache.1,
        cache.2,
    ) + &m.render_routes()
        + &front.upstreams.metrics()
}
