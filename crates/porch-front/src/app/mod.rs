//! The app route: the request is read whole, queued for a worker as an ipc request,
//! and the worker's reply becomes the response.

mod environ;
mod read;
mod reply;
mod websocket;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::dispatch::{reply_channel, Fate, Job, Reply};
use crate::held::Connection;
use crate::log::AccessRecord;
use crate::reject::Rejection;
use crate::{Front, Peer};
use reply::{accel_redirect, build_response, x_accel_redirect};

impl Front {
    pub(crate) async fn to_app(
        self: &Arc<Self>,
        listener: &porch_config::ListenerConfig,
        mut req: Request<Incoming>,
        peer: Peer,
        connection: &Connection,
        // Taken when a worker's answer carries the line to the access log; left in place
        // for the caller to write when porch answers itself.
        record: &mut Option<AccessRecord>,
    ) -> Response<ResponseBody> {
        let handshake = match websocket::handshake(&req) {
            Ok(h) => h,
            Err(rejection) => return rejection.response(),
        };
        let upgrade = handshake.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let hold = handshake.as_ref().map(|_| connection.hold());
        let (parts, incoming) = req.into_parts();
        let body = match self.read_body(incoming).await {
            Ok(b) => b,
            Err(rejection) => return rejection.response(),
        };
        // The strict layer ended a malformed body early but well-formed: never dispatch it.
        if let Some(rejection) = connection.body_rejected() {
            return rejection.response();
        }
        let (request, body_hold) = self.ipc_request(&parts, peer, body);
        // Built by hand: `format!` with `{:?}` cost more than the rest of this function.
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let version = crate::http_util::protocol(parts.version);
        let mut line = String::with_capacity(parts.method.as_str().len() + target.len() + 10);
        for piece in [parts.method.as_str(), " ", target, " ", version] {
            line.push_str(piece);
        }
        let (tx, mut rx) = reply_channel(&self.response_memory);
        let fate = Arc::new(Fate::default());
        let job = Job {
            request,
            line,
            reply: tx,
            queued_at: Instant::now(),
            body_hold: Some(body_hold),
            fate: fate.clone(),
            websocket: handshake.is_some(),
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
        let mut waiting = Waiting::new(self, fate.clone(), record.take());
        // Until `queue_timeout` the request may be cancelled here if no worker took it;
        // once one has, only its link answers (it runs it, or gives it back and fails it
        // when its wait is over): an answered request never runs afterwards.
        let first = tokio::select! {
            first = rx.recv() => first,
            _ = tokio::time::sleep(self.cfg.queue_timeout) => {
                if fate.cancel() {
                    self.metrics.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                    *record = waiting.answered();
                    return Rejection::worker_failed(Some(503)).response();
                }
                rx.recv().await
            }
        };
        *record = waiting.answered();
        let head = match first {
            Some(Reply::Head(h)) => h,
            Some(Reply::Switched(head, uplink)) => {
                let (Some(handshake), Some(upgrade)) = (handshake, upgrade) else {
                    return Rejection::app(
                        StatusCode::BAD_GATEWAY,
                        "the app switched protocols unasked",
                    )
                    .response();
                };
                let session = websocket::Session {
                    replies: rx,
                    uplink,
                    cfg: self.cfg.interface.websocket,
                    send_timeout: self.cfg.send_timeout,
                    front: self.clone(),
                    hold,
                };
                tokio::spawn(session.run(upgrade));
                return websocket::switching(head, &handshake);
            }
            Some(Reply::Fail(code)) => return Rejection::worker_failed(Some(code)).response(),
            _ => return Rejection::worker_failed(None).response(),
        };
        if let Some(target) = accel_redirect(&head) {
            return x_accel_redirect(listener, &parts, &head, &target);
        }
        let record = record.take().map(|mut r| {
            r.status = head.status;
            r
        });
        build_response(head, rx, record, parts.method == Method::HEAD)
    }
}

/// A request waiting for its answer's head. Dropped before that (the client went away),
/// it cancels the request if no worker took it, keeps the in-flight gauge true, and
/// writes the access-log line with nginx's 499.
struct Waiting<'a> {
    front: &'a Front,
    fate: Arc<Fate>,
    record: Option<AccessRecord>,
    done: bool,
}

impl<'a> Waiting<'a> {
    fn new(front: &'a Front, fate: Arc<Fate>, record: Option<AccessRecord>) -> Self {
        front.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Waiting {
            front,
            fate,
            record,
            done: false,
        }
    }

    /// The wait is over with an answer; the record goes to whoever writes the line.
    fn answered(&mut self) -> Option<AccessRecord> {
        if !self.done {
            self.done = true;
            self.front.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        self.record.take()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.front.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = self.fate.cancel();
        self.front
            .metrics
            .client_gone
            .fetch_add(1, Ordering::Relaxed);
        if let Some(mut r) = self.record.take() {
            r.status = 499;
            r.aborted = true;
            r.emit();
        }
    }
}
