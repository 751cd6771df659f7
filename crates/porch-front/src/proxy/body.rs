//! Bodies in flight through the proxy, both ways, with their timeouts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::pool::{Lease, Sender};
use crate::body::BodyError;
use crate::reject::Verdict;

/// The body porch sends upstream: the client's, streamed, or nothing.
pub enum ReqBody {
    /// `done` fires once the whole body went out: the header timeout starts then.
    Stream {
        body: Incoming,
        done: Option<oneshot::Sender<()>>,
        /// Set when the client's body broke the framing rules: never end it cleanly then.
        verdict: Option<Verdict>,
    },
    Empty,
}

impl ReqBody {
    /// A receiver that completes when the body has been sent in full (or given up on).
    pub(super) fn watch_done(&mut self) -> Option<oneshot::Receiver<()>> {
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
