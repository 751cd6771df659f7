//! The front: accepts connections, speaks HTTP with hyper, checks each request, and either
//! answers it itself (static files, health) or reads it whole and queues it for a worker.

// A rejected request is answered with a whole `Response` on a cold path; boxing it would
// only add an allocation.
#![allow(clippy::result_large_err)]

pub mod body;
pub mod dispatch;
pub mod listener;
pub mod log;
pub mod proxy;
pub mod static_files;
pub mod strict;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::dispatch::{Job, Reply};
use body::{ResponseBody, WorkerBody};
pub use listener::{Listener, Peer};
use log::{AccessLog, AccessRecord};
use porch_config::{Config, RouteAction};
use porch_ipc as ipc;

/// Counters the admin listener exposes.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_3xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub in_flight: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    /// Responses by route kind ([`ROUTES`]) and status class (1xx..5xx).
    by_route: [[AtomicU64; 5]; ROUTES.len()],
    /// Time to the response head, per route kind: cumulative histogram buckets.
    latency: [[AtomicU64; LATENCY_BUCKETS.len() + 1]; ROUTES.len()],
    latency_sum_us: [AtomicU64; ROUTES.len()],
    /// From "request fully read" to "a worker took it" (dispatch/): the autoscaling signal.
    pub queue: Arc<crate::dispatch::QueueStats>,
}

/// Route kinds as metric labels.
const ROUTES: [&str; 6] = ["app", "static", "proxy", "redirect", "return", "none"];
const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn route_index(action: Option<&RouteAction>) -> usize {
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
    fn observe(&self, route: usize, status: u16, took: Duration) {
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

    fn count_status(&self, status: u16) {
        let c = match status {
            200..=299 => &self.responses_2xx,
            300..=399 => &self.responses_3xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// State every connection shares.
pub struct Front {
    pub cfg: Arc<Config>,
    pub queue: async_channel::Sender<Job>,
    pub access_log: Option<Arc<AccessLog>>,
    pub metrics: Metrics,
    /// False while draining: /healthz answers 503 so load balancers stop sending.
    pub ready: AtomicBool,
    pub workers: Option<Arc<dispatch::WorkerStats>>,
    pub upstreams: proxy::Upstreams,
    rate_limiter: Option<RateLimiter>,
    per_ip: Arc<listener::PerIp>,
    spill_dir: PathBuf,
}

type RateLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

fn rate_limiter(limit: &porch_config::RateLimit) -> RateLimiter {
    let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
    let burst = std::num::NonZeroU32::new(limit.burst).unwrap_or(std::num::NonZeroU32::MIN);
    let quota = governor::Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(burst);
    governor::RateLimiter::keyed(quota)
}

impl Front {
    pub fn new(
        cfg: Arc<Config>,
        queue: async_channel::Sender<Job>,
        workers: Option<Arc<dispatch::WorkerStats>>,
        queue_stats: Arc<crate::dispatch::QueueStats>,
    ) -> std::io::Result<Arc<Front>> {
        let access_log = match &cfg.access_log {
            Some(t) => Some(AccessLog::open(t, cfg.access_log_format)?),
            None => None,
        };
        let spill_dir = std::env::temp_dir();
        Ok(Arc::new(Front {
            cfg: cfg.clone(),
            queue,
            access_log,
            metrics: Metrics {
                queue: queue_stats,
                ..Metrics::default()
            },
            ready: AtomicBool::new(true),
            workers,
            upstreams: proxy::Upstreams::new(&cfg.upstreams)?,
            rate_limiter: cfg.rate_limit.as_ref().map(rate_limiter),
            per_ip: listener::PerIp::new(cfg.limits.connections_per_ip),
            spill_dir,
        }))
    }

    pub(crate) async fn handle(
        self: &Arc<Self>,
        index: usize,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ResponseBody> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let listener = &self.cfg.listeners[index];
        if let Some((status, reason)) = req
            .headers()
            .get(strict::REJECT_HEADER)
            .and_then(|v| strict::parse_reject(v.as_bytes()))
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = error(status, &reason);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            self.metrics.count_status(status.as_u16());
            return resp;
        }
        let mut route = route_index(None);
        // App responses are logged by their body when it completes; the rest here.
        let record = self.access_log.as_ref().map(|log| AccessRecord {
            log: log.clone(),
            remote: peer.remote.map(|a| a.ip()),
            method: req.method().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            protocol: protocol(req.version()),
            status: 0,
            bytes: 0,
            referer: header_str(req.headers(), header::REFERER),
            user_agent: header_str(req.headers(), header::USER_AGENT),
            route: "",
            started,
            queue_wait: None,
            aborted: false,
        });
        let resp = match self.check(&req).and_then(|()| self.check_rate(&req, peer)) {
            Err(resp) => resp,
            Ok(()) => {
                let action = listener
                    .route(request_host(&req), req.uri().path())
                    .map(|r| &r.action);
                route = route_index(action);
                match action {
                    None => error(StatusCode::NOT_FOUND, "no route for this host and path"),
                    Some(RouteAction::App) => self.to_app(listener, req, peer, started).await,
                    Some(RouteAction::Static(mount)) => static_files::serve(mount, &req).await,
                    Some(RouteAction::Proxy(name)) => {
                        self.upstreams
                            .forward(name, req, peer, listener.tls.is_some())
                            .await
                    }
                    Some(RouteAction::Redirect { to, status }) => {
                        let mut r = Response::new(ResponseBody::empty());
                        *r.status_mut() =
                            StatusCode::from_u16(*status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
                        if let Ok(v) = HeaderValue::from_str(to) {
                            r.headers_mut().insert(header::LOCATION, v);
                        }
                        r
                    }
                    Some(RouteAction::Return { status, body }) => {
                        let mut r = Response::new(ResponseBody::full(body.clone()));
                        *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                        r
                    }
                }
            }
        };
        self.metrics.count_status(resp.status().as_u16());
        self.metrics
            .observe(route, resp.status().as_u16(), started.elapsed());
        if let Some(mut record) = record.filter(|_| !matches!(resp.body(), ResponseBody::Worker(_)))
        {
            record.status = resp.status().as_u16();
            record.route = ROUTES[route];
            record.bytes = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            record.emit();
        }
        resp
    }

    /// The per-client token bucket: over the rate, 429 with the seconds to wait.
    fn check_rate<B>(&self, req: &Request<B>, peer: Peer) -> Result<(), Response<ResponseBody>> {
        let Some(limiter) = &self.rate_limiter else {
            return Ok(());
        };
        let Some(ip) = self.client_ip(req, peer) else {
            return Ok(());
        };
        // Forget clients whose buckets are full again, so memory follows active clients.
        if self
            .metrics
            .requests
            .load(Ordering::Relaxed)
            .is_multiple_of(4096)
        {
            limiter.retain_recent();
        }
        match limiter.check_key(&ip) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                use governor::clock::Clock;
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "request rate limit exceeded");
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                Err(r)
            }
        }
    }

    /// The client's address: the socket's peer, or, when that peer is a trusted proxy, the
    /// nearest untrusted address in `X-Forwarded-For`.
    pub fn client_ip<B>(&self, req: &Request<B>, peer: Peer) -> Option<std::net::IpAddr> {
        let ip = peer.remote?.ip();
        let trusted = &self.cfg.forwarded_allow_ips;
        if !trusted.trusts(ip) {
            return Some(ip);
        }
        let mut client = ip;
        for value in req.headers().get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else { break };
            for hop in value.rsplit(',') {
                match hop.trim().parse::<std::net::IpAddr>() {
                    Ok(addr) => {
                        client = addr;
                        if !trusted.trusts(addr) {
                            return Some(client);
                        }
                    }
                    Err(_) => return Some(client),
                }
            }
        }
        Some(client)
    }

    /// Refuses what no app should see: a missing or repeated Host on HTTP/1.1, an
    /// over-long target or header, a body over the limit, ambiguous framing.
    fn check(&self, req: &Request<Incoming>) -> Result<(), Response<ResponseBody>> {
        let limits = &self.cfg.limits;
        let target_len = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
        if target_len + req.method().as_str().len() + 10 > limits.request_line {
            return Err(error(StatusCode::URI_TOO_LONG, "request line too long"));
        }
        let hosts = req.headers().get_all(header::HOST).iter().count();
        if req.version() == Version::HTTP_11 && hosts != 1 {
            return Err(error(
                StatusCode::BAD_REQUEST,
                if hosts == 0 {
                    "missing Host header"
                } else {
                    "more than one Host header"
                },
            ));
        }
        if let Some(host) = req.headers().get(header::HOST) {
            if host.as_bytes().is_empty() && req.version() == Version::HTTP_11
                || host.to_str().map_or(true, |h| {
                    h.parse::<http::uri::Authority>().is_err() && !h.is_empty()
                })
            {
                return Err(error(StatusCode::BAD_REQUEST, "invalid Host header"));
            }
        }
        for (name, value) in req.headers() {
            if name.as_str().len() + value.len() + 2 > limits.request_field_size {
                return Err(error(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "header field too large",
                ));
            }
        }
        let te = req
            .headers()
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .count();
        let cls: Vec<&HeaderValue> = req
            .headers()
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .collect();
        if te > 0 && !cls.is_empty() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if te > 1
            || req
                .headers()
                .get(header::TRANSFER_ENCODING)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Transfer-Encoding must be exactly chunked",
            ));
        }
        if cls.len() > 1 && cls.iter().any(|v| *v != cls[0]) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "conflicting Content-Length headers",
            ));
        }
        if let Some(cl) = cls.first() {
            match cl.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
                None => return Err(error(StatusCode::BAD_REQUEST, "invalid Content-Length")),
                Some(n) if n > limits.request_body => {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large",
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    async fn to_app(
        self: &Arc<Self>,
        listener: &porch_config::ListenerConfig,
        req: Request<Incoming>,
        peer: Peer,
        started: Instant,
    ) -> Response<ResponseBody> {
        let (parts, incoming) = req.into_parts();
        let body = match self.read_body(incoming).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        if let Some(r) = parts
            .extensions
            .get::<strict::Verdict>()
            .and_then(|v| v.rejected())
        {
            let mut resp = error(
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
                r.reason,
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        let (request, body_file) = self.ipc_request(&parts, peer, body);
        let line = format!(
            "{} {} {:?}",
            parts.method,
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            parts.version
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let queued_at = Instant::now();
        let job = Job {
            request,
            line,
            reply: tx,
            queued_at,
            body_file,
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(async_channel::TrySendError::Full(_)) => {
                self.metrics
                    .rejected_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "all workers are busy and the queue is full",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            Err(async_channel::TrySendError::Closed(_)) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            }
        }
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        // A request waits for a worker at most `timeout` in the queue, then runs at most
        // `timeout` (the link answers 504 past that): past both, no worker is coming.
        let first = match tokio::time::timeout(self.cfg.timeout * 2, rx.recv()).await {
            Ok(first) => first,
            Err(_) => {
                self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no worker became free in time",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
        };
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let head = match first {
            Some(Reply::Head(h)) => h,
            Some(Reply::Fail(504)) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the app did not answer in time",
                )
            }
            _ => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "the worker running this request died",
                )
            }
        };
        let record = self.access_log.as_ref().map(|log| AccessRecord {
            log: log.clone(),
            remote: peer.remote.map(|a| a.ip()),
            method: parts.method.to_string(),
            target: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            protocol: protocol(parts.version),
            status: head.status,
            bytes: 0,
            referer: header_str(&parts.headers, header::REFERER),
            user_agent: header_str(&parts.headers, header::USER_AGENT),
            route: "app",
            started,
            queue_wait: None,
            aborted: false,
        });
        if let Some(target) = accel_redirect(&head) {
            return x_accel_redirect(listener, &parts, &head, &target);
        }
        build_response(head, rx, record, parts.method == Method::HEAD)
    }

    /// Reads the whole body: in memory up to the configured size, then into a temporary
    /// file. A body cut short by the client never reaches the app.
    async fn read_body(&self, mut incoming: Incoming) -> Result<Body, Response<ResponseBody>> {
        let limits = &self.cfg.limits;
        let mut mem = BytesMut::new();
        let mut file: Option<(tokio::fs::File, tempfile::TempPath)> = None;
        let mut total: u64 = 0;
        loop {
            let next = tokio::time::timeout(self.cfg.body_timeout, incoming.frame());
            let Ok(next) = next.await else {
                let mut r = error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body not received in time",
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Err(r);
            };
            let Some(frame) = next else { break };
            let frame = frame.map_err(|e| {
                tracing::debug!("request body not received in full: {e}");
                error(
                    StatusCode::BAD_REQUEST,
                    "request body incomplete or malformed",
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > limits.request_body {
                let mut r = error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Err(r);
            }
            if file.is_none() && mem.len() + data.len() > limits.body_memory {
                let spill = tempfile::Builder::new()
                    .prefix("porch-body-")
                    .tempfile_in(&self.spill_dir)
                    .map_err(|e| {
                        tracing::error!("cannot create a temporary file for a request body: {e}");
                        error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "cannot buffer the request body",
                        )
                    })?;
                let (f, path) = spill.into_parts();
                let mut f = tokio::fs::File::from_std(f);
                f.write_all(&mem).await.map_err(spill_error)?;
                mem.clear();
                file = Some((f, path));
            }
            match &mut file {
                Some((f, _)) => f.write_all(&data).await.map_err(spill_error)?,
                None => mem.extend_from_slice(&data),
            }
        }
        match file {
            Some((mut f, path)) => {
                f.flush().await.map_err(spill_error)?;
                Ok(Body::File(path, total))
            }
            None => Ok(Body::Memory(mem.freeze())),
        }
    }

    fn ipc_request(
        &self,
        parts: &http::request::Parts,
        peer: Peer,
        body: Body,
    ) -> (ipc::Request, Option<tempfile::TempPath>) {
        let mut headers: Vec<(Bytes, Bytes)> = Vec::with_capacity(parts.headers.keys_len());
        let mut forwarded_https = false;
        let trusted = peer
            .remote
            .is_none_or(|a| self.cfg.forwarded_allow_ips.trusts(a.ip()));
        for name in parts.headers.keys() {
            // Underscores would alias dashes in the environ (X_Auth vs X-Auth): drop them,
            // as nginx and Gunicorn do, so a client cannot spoof a header a proxy set.
            if name.as_str().contains('_') {
                continue;
            }
            let mut values = parts.headers.get_all(name).iter();
            let first = values.next().expect("a key has a value");
            let mut joined = Bytes::copy_from_slice(first.as_bytes());
            let sep: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
            for v in values {
                let mut b = BytesMut::from(&joined[..]);
                b.extend_from_slice(sep);
                b.extend_from_slice(v.as_bytes());
                joined = b.freeze();
            }
            if trusted && name.as_str() == "x-forwarded-proto" {
                forwarded_https = joined.eq_ignore_ascii_case(b"https");
            }
            headers.push((Bytes::copy_from_slice(name.as_str().as_bytes()), joined));
        }
        if !parts.headers.contains_key(header::HOST) {
            if let Some(auth) = parts.uri.authority() {
                headers.push((
                    Bytes::from_static(b"host"),
                    Bytes::copy_from_slice(auth.as_str().as_bytes()),
                ));
            }
        }
        let local = peer.local;
        let (server_name, server_port) = host_and_port(&parts.headers, &parts.uri, local);
        let (remote_addr, remote_port) = match peer.remote {
            Some(a) => (a.ip().to_string(), a.port()),
            None => (String::new(), 0),
        };
        let (body, file) = match body {
            Body::Memory(b) => (ipc::RequestBody::Inline(b), None),
            Body::File(path, len) => (
                ipc::RequestBody::File {
                    path: path.to_string_lossy().into_owned(),
                    len,
                },
                Some(path),
            ),
        };
        let target = parts
            .uri
            .path_and_query()
            .map_or(Bytes::from_static(b"/"), |p| {
                Bytes::copy_from_slice(p.as_str().as_bytes())
            });
        (
            ipc::Request {
                method: parts.method.to_string(),
                target,
                protocol: protocol(parts.version),
                https: peer.tls || forwarded_https,
                remote_addr,
                remote_port,
                server_name,
                server_port,
                headers,
                body,
            },
            file,
        )
    }
}

enum Body {
    Memory(Bytes),
    File(tempfile::TempPath, u64),
}

fn spill_error(e: std::io::Error) -> Response<ResponseBody> {
    tracing::error!("cannot write a request body to its temporary file: {e}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot buffer the request body",
    )
}

fn host_and_port(
    headers: &http::HeaderMap,
    uri: &http::Uri,
    local: Option<SocketAddr>,
) -> (String, u16) {
    let default_port = local.map_or(80, |a| a.port());
    // HTTP/2 carries the host in `:authority` (the URI) rather than a Host header.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = host.or_else(|| uri.authority().map(|a| a.as_str())) {
        if let Ok(auth) = host.parse::<http::uri::Authority>() {
            return (
                auth.host().trim_matches(['[', ']']).to_string(),
                auth.port_u16().unwrap_or(default_port),
            );
        }
    }
    (
        local.map_or("localhost".to_string(), |a| a.ip().to_string()),
        default_port,
    )
}

fn header_str(h: &http::HeaderMap, name: HeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 | Version::HTTP_09 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

/// The host a request is for: its Host header, or the authority of an HTTP/2 request.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
}

/// The path an app named in `X-Accel-Redirect`, if any.
fn accel_redirect(head: &ipc::Head) -> Option<String> {
    head.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(b"x-accel-redirect"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(|v| v.trim().to_string())
}

/// Serves the file an app named in `X-Accel-Redirect` from a static route (usually an
/// `internal = true` one), with ranges and conditional requests, so the Python worker
/// never streams the file. The app's body is dropped; the headers nginx keeps from such a
/// response (`Content-Disposition`, `Set-Cookie`, `Cache-Control`, `Expires`) are kept.
fn x_accel_redirect(
    listener: &porch_config::ListenerConfig,
    parts: &http::request::Parts,
    head: &ipc::Head,
    target: &str,
) -> Response<ResponseBody> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mount = listener.routes.iter().find_map(|r| match &r.action {
        RouteAction::Static(m) if path.starts_with(&m.prefix) => Some(m),
        _ => None,
    });
    let Some(mount) = mount else {
        tracing::error!("X-Accel-Redirect to {target:?} matches no static route");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "X-Accel-Redirect names no static route",
        );
    };
    let mut resp = static_files::serve_path(mount, &parts.method, &parts.headers, path, query);
    const KEPT: [&[u8]; 4] = [
        b"content-disposition",
        b"set-cookie",
        b"cache-control",
        b"expires",
    ];
    if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
        for (k, v) in &head.headers {
            if KEPT.iter().any(|h| k.eq_ignore_ascii_case(h)) {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
                    if n == header::CACHE_CONTROL || n == header::EXPIRES {
                        resp.headers_mut().insert(n, v);
                    } else {
                        resp.headers_mut().append(n, v);
                    }
                }
            }
        }
    }
    resp
}

/// Hop-by-hop headers belong to one connection; an app's are dropped (PEP 3333 forbids
/// them, and hyper does its own framing).
fn is_hop_by_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"te",
        b"trailer",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn build_response(
    head: ipc::Head,
    rx: mpsc::UnboundedReceiver<Reply>,
    record: Option<AccessRecord>,
    is_head: bool,
) -> Response<ResponseBody> {
    let mut declared = None;
    let mut builder = Response::builder().status(head.status);
    let headers = builder.headers_mut().expect("fresh builder");
    for (name, value) in head.headers {
        if is_hop_by_hop(&name) {
            continue;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) else {
            continue; // the worker validated these; nothing invalid reaches here
        };
        if n == header::CONTENT_LENGTH {
            declared = v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
        }
        headers.append(n, v);
    }
    let body = WorkerBody {
        rx,
        declared: if is_head { None } else { declared },
        sent: 0,
        record,
        failed: false,
    };
    builder
        .body(ResponseBody::Worker(body))
        .unwrap_or_else(|_| error(StatusCode::BAD_GATEWAY, "invalid status from the app"))
}

/// A short plain-text answer from porch itself.
pub fn error(status: StatusCode, why: &str) -> Response<ResponseBody> {
    let text = format!(
        "{} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut r = Response::new(ResponseBody::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::BAD_REQUEST {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The admin listener: `/healthz` for load balancers and container health checks,
/// `/metrics` in Prometheus' text format.
pub async fn serve_admin(
    front: Arc<Front>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
        };
        let front = front.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let front = front.clone();
                async move { Ok::<_, Infallible>(admin(&front, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn admin(front: &Front, req: Request<Incoming>) -> Response<ResponseBody> {
    let no_stats = dispatch::WorkerStats::default();
    let stats = front.workers.as_deref().unwrap_or(&no_stats);
    match req.uri().path() {
        "/healthz" => {
            let has_workers = front.workers.is_none() || stats.alive.load(Ordering::Relaxed) > 0;
            if front.ready.load(Ordering::Relaxed) && has_workers {
                Response::new(ResponseBody::full("ok\n"))
            } else {
                error(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }
        }
        "/metrics" => {
            let m = &front.metrics;
            let s = stats;
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let text = format!(
                "# TYPE porch_requests_total counter\nporch_requests_total {}\n\
                 # TYPE porch_responses_total counter\n\
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
            let text =
                text + &format!(
                    "porch_worker_restarts_total{{cause=\"memory\"}} {}\n",
                    g(&s.restarts_memory)
                ) + &m.render_routes()
                    + &front.upstreams.metrics();
            let mut r = Response::new(ResponseBody::full(text));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => error(StatusCode::NOT_FOUND, "admin endpoints: /healthz, /metrics"),
    }
}
