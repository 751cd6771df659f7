//! Reverse proxy to upstream pools.
//!
//! Each `[upstream.NAME]` is a [`pool::Pool`] of servers (`HOST:PORT`, every address a
//! name resolves to, or `unix:PATH`) chosen round-robin or by least connections, with
//! keep-alive connections kept for reuse. A server that fails `max_fails` times in a row
//! is left out for `fail_timeout`; one that fails its active health check is left out
//! until it passes again. A request whose connection could not be made goes to the next
//! server; so does an idempotent request without a body whose exchange broke. Bodies
//! stream both ways: hyper reads the client's body only as fast as the upstream takes it,
//! and the upstream's response only as fast as the client takes it. WebSocket (and any
//! `Upgrade`) requests become a byte tunnel once both sides have switched protocols.

mod health;
mod pool;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::body::{BodyError, ResponseBody};
use super::{error, Peer};
use pool::{Lease, Pool, Sender, Server};
use porch_config::UpstreamConfig;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Every upstream pool of the configuration, ready to forward requests.
pub struct Upstreams {
    pools: HashMap<String, Arc<Pool>>,
    /// Names in configuration order, for metrics.
    order: Vec<String>,
}

impl Upstreams {
    /// Builds the pools and resolves their names. Inside a tokio runtime this also starts
    /// each pool's background upkeep (re-resolution, idle connections closed, active
    /// health checks); outside one, call [`Upstreams::start`] from within a runtime.
    pub fn new(cfg: &[UpstreamConfig]) -> std::io::Result<Upstreams> {
        let mut pools = HashMap::new();
        for u in cfg {
            pools.insert(u.name.clone(), Arc::new(Pool::new(u)?));
        }
        let upstreams = Upstreams {
            pools,
            order: cfg.iter().map(|u| u.name.clone()).collect(),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            upstreams.start();
        }
        Ok(upstreams)
    }

    /// Starts the background upkeep of every pool (once; later calls do nothing).
    /// Must run inside a tokio runtime.
    pub fn start(&self) {
        for pool in self.pools.values() {
            if pool.started.swap(true, Ordering::Relaxed) {
                continue;
            }
            tokio::spawn(health::upkeep(Arc::downgrade(pool)));
            if pool.cfg.health_check.is_some() {
                tokio::spawn(health::checks(Arc::downgrade(pool)));
            }
        }
    }

    /// Forwards `req` to a server of pool `name` and streams its answer back.
    pub async fn forward(
        &self,
        name: &str,
        mut req: Request<Incoming>,
        peer: Peer,
        tls: bool,
    ) -> Response<ResponseBody> {
        let Some(pool) = self.pools.get(name) else {
            return error(StatusCode::BAD_GATEWAY, "no such upstream");
        };
        if req.method() == Method::CONNECT {
            return error(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied");
        }
        let upgrade = wants_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let verdict = parts.extensions.get::<crate::strict::Verdict>().cloned();
        let headers = upstream_headers(&parts.headers, &parts.uri, peer, tls, upgrade);
        let uri: Uri = parts
            .uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        let method = parts.method;
        // A request without a body can be sent again as it was; one with a body only while
        // none of it has gone out.
        let bodiless = body.is_end_stream();
        let replayable = bodiless
            && matches!(
                method,
                Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
            );
        let mut body = Some(if bodiless {
            ReqBody::Empty
        } else {
            ReqBody::Stream {
                body,
                done: None,
                verdict,
            }
        });
        let build = |b: ReqBody| {
            let mut r = Request::new(b);
            *r.method_mut() = method.clone();
            *r.uri_mut() = uri.clone();
            *r.headers_mut() = headers.clone();
            r
        };

        let cfg = &pool.cfg;
        let mut tried: Vec<Arc<Server>> = Vec::new();
        let mut last = String::from("no server of the pool is known (yet)");
        let attempts = pool.servers().len() * 2 + 2;
        for _ in 0..attempts {
            let Some(server) = pool.pick(&tried) else {
                break;
            };
            let Some(mut b) = body.take() else { break };
            let lease = Lease::new(server.clone());
            let (mut sender, reused) = match pool.checkout(&server).await {
                Ok(x) => x,
                Err(e) => {
                    server.failed(name, cfg, &format!("connect: {e}"));
                    last = format!("cannot connect to {}: {e}", server.target);
                    tried.push(server);
                    body = Some(b);
                    continue;
                }
            };
            server.requests.fetch_add(1, Ordering::Relaxed);
            let body_sent = b.watch_done();
            let exchange = sender.try_send_request(build(b));
            tokio::pin!(exchange);
            // The header timeout counts from the end of the request body: a large upload
            // may take longer than that to go out.
            let early = match body_sent {
                None => None,
                Some(sent) => tokio::select! {
                    r = &mut exchange => Some(r),
                    _ = sent => None,
                },
            };
            let outcome = match early {
                Some(r) => Ok(r),
                None => tokio::time::timeout(cfg.header_timeout, &mut exchange).await,
            };
            match outcome {
                Err(_) => {
                    server.failed(name, cfg, &"no response head within header_timeout");
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the upstream server did not answer in time",
                    );
                }
                Ok(Ok(resp)) => {
                    server.succeeded();
                    return respond(resp, sender, lease, client_upgrade, cfg);
                }
                Ok(Err(mut e)) => {
                    let unsent = e.take_message().map(Request::into_body);
                    let err = e.into_error();
                    last = format!("{} broke the exchange: {err}", server.target);
                    if reused {
                        // Most likely a kept connection the server was closing just then:
                        // not counted against it.
                        tracing::debug!(
                            "upstream {name}: kept connection to {} closed: {err}",
                            server.target
                        );
                    } else {
                        server.failed(name, cfg, &err);
                        tried.push(server);
                    }
                    body = match unsent {
                        Some(b) => Some(b),
                        None if replayable => Some(ReqBody::Empty),
                        None => {
                            return error(
                                StatusCode::BAD_GATEWAY,
                                "the upstream server failed while handling the request",
                            )
                        }
                    };
                }
            }
        }
        tracing::warn!("upstream {name}: no server answered: {last}");
        error(StatusCode::BAD_GATEWAY, "no upstream server answered")
    }

    /// Prometheus text for every pool's servers: up, active, requests, failures, idle
    /// connections.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        if self.pools.is_empty() {
            return out;
        }
        let now = std::time::Instant::now();
        let mut sections: [(&str, &str, String); 5] = [
            ("porch_upstream_up", "gauge", String::new()),
            ("porch_upstream_active", "gauge", String::new()),
            ("porch_upstream_requests_total", "counter", String::new()),
            ("porch_upstream_failures_total", "counter", String::new()),
            ("porch_upstream_idle_connections", "gauge", String::new()),
        ];
        for name in &self.order {
            let Some(pool) = self.pools.get(name) else {
                continue;
            };
            for s in pool.servers().iter() {
                let labels = format!(
                    "upstream=\"{}\",server=\"{}\"",
                    escape_label(name),
                    escape_label(&s.target.to_string())
                );
                let values = [
                    u64::from(s.available(now)),
                    s.active.load(Ordering::Relaxed) as u64,
                    s.requests.load(Ordering::Relaxed),
                    s.failures.load(Ordering::Relaxed),
                    s.idle_count() as u64,
                ];
                for ((metric, _, text), v) in sections.iter_mut().zip(values) {
                    let _ = writeln!(text, "{metric}{{{labels}}} {v}");
                }
            }
        }
        for (metric, kind, text) in sections {
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            out.push_str(&text);
        }
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` + `Upgrade`).
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && has_token(req.headers(), "upgrade")
}

fn has_token(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Headers of one connection, never forwarded (RFC 9110 7.6.1), plus any the
/// `Connection` header names (except the ones framing or routing depend on).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| {
            *n != header::HOST && *n != header::CONTENT_LENGTH && *n != header::CONTENT_TYPE
        })
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

/// The headers the upstream gets: the client's without hop-by-hop ones, `Host` as the
/// client sent it, and `X-Forwarded-For` (the peer appended), `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `X-Real-IP` set by porch.
fn upstream_headers(
    client: &HeaderMap,
    uri: &Uri,
    peer: Peer,
    tls: bool,
    upgrade: bool,
) -> HeaderMap {
    let mut h = client.clone();
    let upgrade_to = client.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut h);
    // porch already answered `100 Continue` when it started reading the body.
    h.remove(header::EXPECT);
    if upgrade {
        if let Some(u) = upgrade_to {
            h.insert(header::UPGRADE, u);
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
    if !h.contains_key(header::HOST) {
        // HTTP/2 carries the host in the request target.
        if let Some(v) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            h.insert(header::HOST, v);
        }
    }
    match h.get(header::HOST).cloned() {
        Some(host) => {
            h.insert(X_FORWARDED_HOST.clone(), host);
        }
        None => {
            h.remove(&X_FORWARDED_HOST);
        }
    }
    if let Some(ip) = peer.remote.map(|a| a.ip().to_canonical()) {
        let ip = ip.to_string();
        let prior: Vec<&str> = client
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let xff = if prior.is_empty() {
            ip.clone()
        } else {
            format!("{}, {ip}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&ip) {
            h.insert(X_REAL_IP.clone(), v);
        }
    }
    h.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    h
}

/// The client's answer: the upstream's status and headers (hop-by-hop ones removed) and
/// its body streamed; or, for `101 Switching Protocols`, a tunnel between both sides.
fn respond(
    mut resp: Response<Incoming>,
    sender: Sender,
    lease: Lease,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    cfg: &UpstreamConfig,
) -> Response<ResponseBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return error(
                StatusCode::BAD_GATEWAY,
                "the upstream server switched protocols unasked",
            );
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let target = lease.server.target.to_string();
        tokio::spawn(async move {
            // The lease keeps the WebSocket counted as an active request until it closes.
            let _lease = lease;
            let _sender = sender;
            match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(client), Ok(upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!("tunnel to {target} ended: {e}");
                    }
                }
                (Err(e), _) => tracing::warn!("client connection could not switch protocols: {e}"),
                (_, Err(e)) => tracing::warn!("upstream {target} could not switch protocols: {e}"),
            }
        });
        let (mut parts, _) = resp.into_parts();
        let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(u) = upgrade_to {
            parts.headers.insert(header::UPGRADE, u);
        }
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return Response::from_parts(parts, ResponseBody::empty());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let mut body = UpstreamBody {
        body,
        conn: Some((sender, lease)),
        idle_timeout: cfg.idle_timeout,
        read_timeout: cfg.read_timeout,
        timer: None,
    };
    if body.body.is_end_stream() {
        body.release();
    }
    Response::from_parts(parts, ResponseBody::Upstream(body))
}

/// The body porch sends upstream: the client's, streamed, or nothing.
pub enum ReqBody {
    /// `done` fires once the whole body went out: the header timeout starts then.
    Stream {
        body: Incoming,
        done: Option<oneshot::Sender<()>>,
        /// Set when the client's body broke the framing rules: never end it cleanly then.
        verdict: Option<crate::strict::Verdict>,
    },
    Empty,
}

impl ReqBody {
    /// A receiver that completes when the body has been sent in full (or given up on).
    fn watch_done(&mut self) -> Option<oneshot::Receiver<()>> {
        match self {
            ReqBody::Stream { done, .. } => {
                let (tx, rx) = oneshot::channel();
                *done = Some(tx);
                Some(rx)
            }
            ReqBody::Empty => None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ReqBody::Stream {
                body,
                done,
                verdict,
            } => {
                let frame = Pin::new(&mut *body).poll_frame(cx).map_err(Into::into);
                if matches!(frame, Poll::Ready(None)) {
                    if let Some(r) = verdict.as_ref().and_then(|v| v.rejected()) {
                        return Poll::Ready(Some(Err(format!(
                            "client body rejected: {}",
                            r.reason
                        )
                        .into())));
                    }
                }
                if matches!(frame, Poll::Ready(None)) || body.is_end_stream() {
                    if let Some(tx) = done.take() {
                        let _ = tx.send(());
                    }
                }
                frame
            }
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Stream { body, .. } => body.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Stream { body, .. } => body.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// An upstream's response body on its way to the client. When it ends cleanly the
/// connection goes back to the pool; a pause longer than `read_timeout` aborts it.
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<(Sender, Lease)>,
    idle_timeout: Duration,
    read_timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some((sender, lease)) = self.conn.take() {
            lease.server.put_idle(sender, self.idle_timeout);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => {
                let timeout = this.read_timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BodyError::Upstream(
                        "no data from the upstream server within read_timeout".into(),
                    ))));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.read_timeout);
                }
                match frame {
                    None => {
                        this.release();
                        Poll::Ready(None)
                    }
                    Some(Ok(f)) => {
                        if this.body.is_end_stream() {
                            this.release();
                        }
                        Poll::Ready(Some(Ok(f)))
                    }
                    Some(Err(e)) => {
                        this.conn = None;
                        Poll::Ready(Some(Err(BodyError::Upstream(e.to_string()))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Peer {
        Peer {
            remote: Some(format!("{ip}:5555").parse().unwrap()),
            local: None,
            tls: false,
        }
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com:8080"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        let out = upstream_headers(
            &h,
            &Uri::from_static("/p?q"),
            peer("192.0.2.7"),
            false,
            false,
        );
        assert_eq!(out[header::HOST], "example.com:8080");
        assert_eq!(out[&X_FORWARDED_HOST], "example.com:8080");
        assert_eq!(out[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(out.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(out[&X_REAL_IP], "192.0.2.7");
        assert_eq!(out[&X_FORWARDED_PROTO], "http");
        assert_eq!(out["x-app"], "kept");
        for gone in ["connection", "x-secret", "keep-alive", "te", "expect"] {
            assert!(!out.contains_key(gone), "{gone} must not be forwarded");
        }
    }

    #[test]
    fn http2_authority_becomes_host_and_mapped_addresses_are_plain() {
        let out = upstream_headers(
            &HeaderMap::new(),
            &Uri::from_static("https://example.org/x"),
            peer("[::ffff:192.0.2.9]"),
            true,
            false,
        );
        assert_eq!(out[header::HOST], "example.org");
        assert_eq!(out[&X_FORWARDED_FOR], "192.0.2.9");
        assert_eq!(out[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let out = upstream_headers(&h, &Uri::from_static("/ws"), peer("127.0.0.1"), false, true);
        assert_eq!(out[header::UPGRADE], "websocket");
        assert_eq!(out[header::CONNECTION], "upgrade");
        let out = upstream_headers(
            &h,
            &Uri::from_static("/ws"),
            peer("127.0.0.1"),
            false,
            false,
        );
        assert!(!out.contains_key(header::UPGRADE));
    }

    #[test]
    fn metrics_name_each_server() {
        let cfg = UpstreamConfig {
            name: "web".into(),
            servers: vec!["127.0.0.1:1".into(), "unix:/tmp/x.sock".into()],
            balance: porch_config::Balance::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            health_check: None,
            resolve_interval: Duration::from_secs(10),
        };
        let u = Upstreams::new(&[cfg]).unwrap();
        let m = u.metrics();
        assert!(m.contains("# TYPE porch_upstream_up gauge\n"), "{m}");
        assert!(
            m.contains("porch_upstream_up{upstream=\"web\",server=\"127.0.0.1:1\"} 1\n"),
            "{m}"
        );
        assert!(m.contains(
            "porch_upstream_requests_total{upstream=\"web\",server=\"unix:/tmp/x.sock\"} 0\n"
        ));
        assert!(Upstreams::new(&[]).unwrap().metrics().is_empty());
    }
}
