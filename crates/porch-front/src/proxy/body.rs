//! An upstream's response body on its way to the client, with its timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::{Lease, Sender};
use crate::body::BodyError;

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
    pub(super) fn new(
        body: Incoming,
        sender: Sender,
        lease: Lease,
        cfg: &porch_config::UpstreamConfig,
    ) -> UpstreamBody {
        let mut this = UpstreamBody {
            body,
            conn: Some((sender, lease)),
            idle_timeout: cfg.idle_timeout,
            read_timeout: cfg.read_timeout,
            timer: None,
        };
        if this.body.is_end_stream() {
            this.release();
        }
        this
    }

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
