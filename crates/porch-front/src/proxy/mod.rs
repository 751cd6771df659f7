//! Reverse proxy to upstream pools.
//!
//! Each `[upstream.NAME]` is a [`pool::Pool`] of servers (`HOST:PORT`, every address a
//! name resolves to, or `unix:PATH`) chosen round-robin or by least connections, with
//! keep-alive connections kept for reuse. A server that fails `max_fails` times in a row
//! is left out for `fail_timeout`; one that fails its active health check is left out
//! until it passes again. A request whose connection could not be made goes to the next
//! server; so does an idempotent request without a body whose exchange broke. Bodies
//! stream both ways: hyper reads the client's body only as fast as the upstream takes it,
//! and the upstream's response only as fast as the client takes it; the client's body is
//! held to `limit_request_body` and `body_timeout` as on the app route, and when it breaks
//! the client is answered (413/408/400) and the server is not blamed. An `Upgrade` to a
//! protocol the route allows (`websocket` unless set) becomes a byte tunnel once both sides
//! switched, closed after `tunnel_idle_timeout` without traffic; other `Upgrade`s are not
//! passed on.

mod body;
mod headers;
mod health;
mod metrics;
mod pool;
mod request_body;
mod respond;
mod tunnel;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::held::Connection;
use crate::reject::Rejection;
use crate::Peer;
pub use body::UpstreamBody;
use headers::{upgrade_offer, upstream_headers};
use pool::{Lease, Pool, Server};
use porch_config::{ProxyRoute, UpstreamConfig};
use request_body::ClientFault;
pub use request_body::{BodyRules, ReqBody};
use respond::{respond, ClientUpgrade};

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
            pools.insert(u.name.clone(), Arc::new(Pool::new(u)));
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

    /// Forwards `req` to a server of the route's pool and streams its answer back; the
    /// client's body is held to `rules` on the way.
    pub(crate) async fn forward(
        &self,
        route: &ProxyRoute,
        mut req: Request<Incoming>,
        peer: Peer,
        connection: &Connection,
        tls: bool,
        rules: BodyRules,
    ) -> Response<ResponseBody> {
        let name = route.upstream();
        let Some(pool) = self.pools.get(name) else {
            return Rejection::porch(StatusCode::BAD_GATEWAY, "no such upstream").response();
        };
        if req.method() == Method::CONNECT {
            return Rejection::client(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied")
                .response();
        }
        let upgrade = upgrade_offer(&req, route);
        let client_upgrade = upgrade.clone().map(|offered| ClientUpgrade {
            offered,
            on: hyper::upgrade::on(&mut req),
            hold: Some(connection.hold()),
        });
        let (parts, body) = req.into_parts();
        let verdict = connection.verdict();
        let headers = upstream_headers(&parts.headers, &parts.uri, peer, tls, upgrade.as_ref());
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
        // Set when the client's body is what broke an exchange.
        let fault = ClientFault::default();
        let mut body = Some(if bodiless {
            ReqBody::Empty
        } else {
            ReqBody::stream(body, verdict, rules, fault.clone())
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
            if let Some(r) = fault.get() {
                // The client's body broke (too large, too slow, malformed, cut off): its
                // answer, and no mark against the server.
                return r.response();
            }
            match outcome {
                Err(_) => {
                    server.failed(name, cfg, &"no response head within header_timeout");
                    return Rejection::upstream(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the upstream server did not answer in time",
                    )
                    .response();
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
                            return Rejection::upstream(
                                StatusCode::BAD_GATEWAY,
                                "the upstream server failed while handling the request",
                            )
                            .response()
                        }
                    };
                }
            }
        }
        tracing::warn!("upstream {name}: no server answered: {last}");
        Rejection::upstream(StatusCode::BAD_GATEWAY, "no upstream server answered").response()
    }
}
