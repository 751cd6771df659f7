//! The app route: the request is read whole, queued for a worker as an ipc request,
//! and the worker's reply becomes the response.

mod environ;
mod read;
mod reply;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::body::ResponseBody;
use crate::dispatch::{Job, Reply};
use crate::http_util::{header_str, protocol};
use crate::log::AccessRecord;
use crate::reject::{Rejection, Verdict};
use crate::{Front, Peer};
use reply::{accel_redirect, build_response, x_accel_redirect};

impl Front {
    pub(crate) async fn to_app(
        self: &Arc<Self>,
        listener: &porch_config::ListenerConfig,
        req: Request<Incoming>,
        peer: Peer,
        started: Instant,
    ) -> Response<ResponseBody> {
        let (parts, incoming) = req.into_parts();
        let body = match self.read_body(incoming).await {
            Ok(b) => b,
            Err(rejection) => return rejection.response(),
        };
        // The strict layer ended a malformed body early but well-formed: never dispatch it.
        if let Some(rejection) = Verdict::of(&parts.extensions) {
            return rejection.response();
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
                return Rejection::porch(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "all workers are busy and the queue is full",
                )
                .retry_after(1)
                .response();
            }
            Err(async_channel::TrySendError::Closed(_)) => {
                return Rejection::porch(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                    .response();
            }
        }
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        // A request waits for a worker up to `queue_timeout`, then runs at most `timeout`
        // (its link answers 504 past that): with no answer's head after both, no worker
        // is coming.
        let wait = self.cfg.queue_timeout.saturating_add(self.cfg.timeout);
        let first = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(first) => first,
            Err(_) => {
                self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
                return Rejection::porch(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no worker became free in time",
                )
                .retry_after(1)
                .response();
            }
        };
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let head = match first {
            Some(Reply::Head(h)) => h,
            Some(Reply::Fail(code)) => return Rejection::worker_failed(Some(code)).response(),
            _ => return Rejection::worker_failed(None).response(),
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
}
