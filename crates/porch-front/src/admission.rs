//! What a request must pass before it is routed: sane framing and sizes, and the
//! per-client rate limit.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Version};
use hyper::body::Incoming;

use crate::reject::Rejection;
use crate::{Front, Peer};

pub(crate) type RateLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

pub(crate) fn rate_limiter(limit: &porch_config::RateLimit) -> RateLimiter {
    let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
    let burst = std::num::NonZeroU32::new(limit.burst).unwrap_or(std::num::NonZeroU32::MIN);
    let quota = governor::Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(burst);
    governor::RateLimiter::keyed(quota)
}

impl Front {
    /// The per-client token bucket: over the rate, 429 with the seconds to wait.
    pub(crate) fn check_rate<B>(&self, req: &Request<B>, peer: Peer) -> Result<(), Rejection> {
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
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                Err(
                    Rejection::client(StatusCode::TOO_MANY_REQUESTS, "request rate limit exceeded")
                        .retry_after(secs),
                )
            }
        }
    }

    /// The client's address: the socket's peer, or, when that peer is a trusted proxy, the
    /// nearest untrusted address in `X-Forwarded-For`.
    pub(crate) fn client_ip<B>(&self, req: &Request<B>, peer: Peer) -> Option<std::net::IpAddr> {
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
    pub(crate) fn check(&self, req: &Request<Incoming>) -> Result<(), Rejection> {
        let limits = &self.cfg.limits;
        let target_len = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
        if target_len + req.method().as_str().len() + 10 > limits.request_line {
            return Err(Rejection::client(
                StatusCode::URI_TOO_LONG,
                "request line too long",
            ));
        }
        // HTTP/2's `:path` skips the strict layer, which checks every HTTP/1 target's
        // form and bytes (grammar.rs): the same rules here, so they hold on every protocol.
        let target_ok = req.version() != Version::HTTP_2 || target_fits(req);
        if !target_ok && req.method() != http::Method::CONNECT {
            return Err(Rejection::client(
                StatusCode::BAD_REQUEST,
                "invalid request target",
            ));
        }
        let hosts = req.headers().get_all(header::HOST).iter().count();
        if req.version() == Version::HTTP_11 && hosts != 1 {
            return Err(Rejection::client(
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
                return Err(Rejection::client(
                    StatusCode::BAD_REQUEST,
                    "invalid Host header",
                ));
            }
        }
        // The strict layer counts HTTP/1 fields before parsing; HTTP/2 and h2c come here
        // with theirs decoded, and are held to the same limit.
        if req.headers().len() > limits.request_fields {
            return Err(Rejection::client(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ));
        }
        for (name, value) in req.headers() {
            if name.as_str().len() + value.len() + 2 > limits.request_field_size {
                return Err(Rejection::client(
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
            return Err(Rejection::client(
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
            return Err(Rejection::client(
                StatusCode::BAD_REQUEST,
                "Transfer-Encoding must be exactly chunked",
            ));
        }
        if cls.len() > 1 && cls.iter().any(|v| *v != cls[0]) {
            return Err(Rejection::client(
                StatusCode::BAD_REQUEST,
                "conflicting Content-Length headers",
            ));
        }
        if let Some(cl) = cls.first() {
            match cl.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
                None => {
                    return Err(Rejection::client(
                        StatusCode::BAD_REQUEST,
                        "invalid Content-Length",
                    ))
                }
                Some(n) if n > limits.request_body => {
                    return Err(Rejection::client(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large",
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// A path from `/` (or `*` for OPTIONS), in visible ASCII.
fn target_fits<B>(req: &Request<B>) -> bool {
    let path = req.uri().path();
    let form = if path == "*" {
        req.method() == http::Method::OPTIONS
    } else {
        path.starts_with('/')
    };
    form && req
        .uri()
        .path_and_query()
        .is_none_or(|p| p.as_str().bytes().all(|b| (0x21..0x7f).contains(&b)))
}
