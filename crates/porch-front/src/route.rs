//! The core of request handling: a request passes admission, is matched to a route of
//! its listener, and the route's action answers it; every answer is counted and logged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::held::Connection;
use crate::http_util::{protocol, request_host};
use crate::log::AccessRecord;
use crate::metrics::{route_index, ROUTES};
use crate::proxy::BodyRules;
use crate::reject::{self, Rejection};
use crate::route_path::{routing_path, BadPath};
use crate::{static_files, Front, Peer};
use porch_config::RouteAction;

impl Front {
    /// A connection porch answered before reading any request (429 past the per-IP
    /// limit, 503 out of descriptors): counted and logged like any other answer.
    pub(crate) fn log_refused(&self, peer: Peer, status: u16) {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.count_status(status);
        if let Some(log) = &self.access_log {
            let remote = peer.remote.map(|a| a.ip());
            let mut r = AccessRecord::new(log, remote, "-", "-", "HTTP/1.1", None, Instant::now());
            r.status = status;
            r.route = ROUTES[route_index(None)];
            r.emit();
        }
    }

    pub(crate) async fn handle(
        self: &Arc<Self>,
        index: usize,
        req: Request<Incoming>,
        peer: Peer,
        connection: &Connection,
    ) -> Response<ResponseBody> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let listener = &self.cfg.listeners[index];
        if let Some(rejection) = reject::carried_by(&req) {
            // The strict layer's own answer (400/408/413/414/431): logged like any other,
            // with no request line (the bytes never made one).
            self.metrics.count_status(rejection.status.as_u16());
            let resp = rejection.response();
            if let Some(log) = &self.access_log {
                let remote = peer.remote.map(|a| a.ip());
                let version = protocol(req.version());
                let mut r = AccessRecord::new(log, remote, "-", "-", version, None, started);
                r.status = rejection.status.as_u16();
                r.bytes = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
                r.route = ROUTES[route_index(None)];
                r.emit();
            }
            return resp;
        }
        let mut route = route_index(None);
        // App responses are logged by their body when it completes (the app route takes
        // the record); the rest here.
        let mut record = self.access_log.as_ref().map(|log| {
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let version = protocol(req.version());
            let remote = peer.remote.map(|a| a.ip());
            let headers = Some(req.headers());
            AccessRecord::new(
                log,
                remote,
                req.method().as_str(),
                target,
                version,
                headers,
                started,
            )
        });
        // Routes match the normalised path (every spelling of a prefix alike); the request
        // goes on as the client sent it.
        let routed = self
            .check(&req)
            .and_then(|()| self.check_rate(&req, peer))
            .and_then(|()| {
                let path = routing_path(req.uri().path())
                    .map_err(|BadPath(why)| Rejection::client(StatusCode::BAD_REQUEST, why))?;
                Ok(listener.route(request_host(&req), &path).map(|r| &r.action))
            });
        let resp = match routed {
            Err(rejection) => rejection.response(),
            Ok(action) => {
                route = route_index(action);
                match action {
                    None => {
                        Rejection::client(StatusCode::NOT_FOUND, "no route for this host and path")
                            .response()
                    }
                    Some(RouteAction::App) => {
                        self.to_app(listener, req, peer, connection, &mut record)
                            .await
                    }
                    Some(RouteAction::Static(mount)) => static_files::serve(mount, &req).await,
                    Some(RouteAction::Proxy(proxy)) => {
                        let rules =
                            BodyRules::new(self.cfg.limits.request_body, self.cfg.body_timeout);
                        self.upstreams
                            .forward(proxy, req, peer, connection, listener.tls.is_some(), rules)
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
        if let Some(mut record) = record {
            record.status = resp.status().as_u16();
            record.route = ROUTES[route];
            record.bytes = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            record.emit();
        }
        resp
    }
}
