//! The client's request body on its way upstream, held to the same rules as on the app
//! route (`limit_request_body` whatever the framing, `body_timeout` between pieces), and
//! the record of who broke it: a body that fails here is the client's fault, never the
//! upstream's.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::reject::{Rejection, Verdict};

/// What a client's body must keep to: its size limit, and the longest pause porch waits
/// for its next piece.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    limit: u64,
    gap: Duration,
}

impl BodyRules {
    pub fn new(limit: u64, gap: Duration) -> BodyRules {
        BodyRules { limit, gap }
    }
}

/// Set when the client's body broke a rule (or broke off): the answer the client gets,
/// instead of blaming the upstream for the exchange that failed with it.
#[derive(Clone, Default)]
pub(super) struct ClientFault(Arc<OnceLock<Rejection>>);

impl ClientFault {
    pub(super) fn get(&self) -> Option<&Rejection> {
        self.0.get()
    }
}

/// The body porch sends upstream: the client's, streamed, or nothing.
pub enum ReqBody {
    Stream(Box<ClientBody<Incoming>>),
    Empty,
}

impl ReqBody {
    pub(super) fn stream(
        body: Incoming,
        verdict: Verdict,
        rules: BodyRules,
        fault: ClientFault,
    ) -> ReqBody {
        ReqBody::Stream(Box::new(ClientBody::new(body, verdict, rules, fault)))
    }

    /// A receiver that completes when the body has been sent in full (or given up on).
    pub(super) fn watch_done(&mut self) -> Option<oneshot::Receiver<()>> {
        match self {
            ReqBody::Stream(b) => {
                let (tx, rx) = oneshot::channel();
                b.done = Some(tx);
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
            ReqBody::Stream(b) => Pin::new(&mut **b).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Stream(b) => b.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Stream(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A client's body checked as it streams through.
pub struct ClientBody<B> {
    body: B,
    /// Fires once the whole body went out: the upstream's header timeout starts then.
    done: Option<oneshot::Sender<()>>,
    /// Set by the strict layer when the body broke the framing rules; it then ends
    /// well-formed, and must not be passed on as complete.
    verdict: Verdict,
    rules: BodyRules,
    received: u64,
    /// Runs while porch waits for the client's next piece (not while the upstream is slow
    /// to take the last one: then this body is not polled). Made once, reset per wait.
    gap: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
    fault: ClientFault,
}

impl<B> ClientBody<B> {
    pub(super) fn new(
        body: B,
        verdict: Verdict,
        rules: BodyRules,
        fault: ClientFault,
    ) -> ClientBody<B> {
        ClientBody {
            body,
            done: None,
            verdict,
            rules,
            received: 0,
            gap: None,
            waiting: false,
            fault,
        }
    }

    /// Records the client's fault and ends the upstream request with an error, so the
    /// upstream never takes a broken body for a whole one.
    fn fail<T>(
        &mut self,
        r: Rejection,
    ) -> Poll<Option<Result<T, Box<dyn std::error::Error + Send + Sync>>>> {
        tracing::debug!("client request body refused: {}", r.reason);
        let reason = r.reason.to_string();
        let _ = self.fault.0.set(r);
        self.done = None;
        Poll::Ready(Some(Err(format!("client request body: {reason}").into())))
    }

    fn finished(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.rules.gap;
                let timer = this
                    .gap
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !std::mem::replace(&mut this.waiting, true) {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return this.fail(Rejection::body_timed_out());
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.waiting = false;
                if let Some(r) = this.verdict.rejected() {
                    return this.fail(Rejection::from(r));
                }
                this.finished();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!("client request body broke off: {e}");
                this.fail(Rejection::body_incomplete())
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.rules.limit {
                        return this.fail(Rejection::body_too_large());
                    }
                }
                if this.body.is_end_stream() && this.verdict_ok() {
                    this.finished();
                }
                Poll::Ready(Some(Ok(frame)))
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

impl<B> ClientBody<B> {
    fn verdict_ok(&self) -> bool {
        self.verdict.rejected().is_none()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    use super::*;

    /// A client's body as the test sends it.
    struct Sent(mpsc::Receiver<Result<Bytes, std::io::Error>>);

    impl Body for Sent {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|piece| piece.map(|r| r.map(Frame::data)))
        }
    }

    struct Client(mpsc::Sender<Result<Bytes, std::io::Error>>);

    impl Client {
        async fn send_data(&mut self, b: Bytes) -> Result<(), ()> {
            self.0.send(Ok(b)).await.map_err(drop)
        }
        fn abort(self, e: std::io::Error) {
            self.0.try_send(Err(e)).unwrap();
        }
    }

    fn channel() -> (Client, Sent) {
        let (tx, rx) = mpsc::channel(4);
        (Client(tx), Sent(rx))
    }

    fn body(limit: u64) -> (Client, ClientBody<Sent>, ClientFault) {
        let (tx, rx) = channel();
        let fault = ClientFault::default();
        let rules = BodyRules::new(limit, Duration::from_secs(60));
        (
            tx,
            ClientBody::new(rx, Verdict::default(), rules, fault.clone()),
            fault,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_the_limit_is_the_clients_413_whatever_its_framing() {
        let (mut tx, mut b, fault) = body(10);
        tx.send_data(Bytes::from_static(b"123456")).await.unwrap();
        assert!(b.frame().await.unwrap().is_ok());
        tx.send_data(Bytes::from_static(b"789012")).await.unwrap();
        assert!(b.frame().await.unwrap().is_err());
        let r = fault.get().unwrap();
        assert_eq!(
            (r.status.as_u16(), r.fault),
            (413, crate::reject::Fault::Client)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_the_clients_408_after_body_timeout() {
        let (mut tx, mut b, fault) = body(1 << 20);
        tx.send_data(Bytes::from_static(b"abc")).await.unwrap();
        assert!(b.frame().await.unwrap().is_ok());
        let started = tokio::time::Instant::now();
        assert!(b.frame().await.unwrap().is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert_eq!(fault.get().unwrap().status.as_u16(), 408);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_restarts_with_each_piece() {
        let (mut tx, mut b, fault) = body(1 << 20);
        let client = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                tx.send_data(Bytes::from_static(b"abc")).await.unwrap();
            }
        });
        for _ in 0..4 {
            assert!(b.frame().await.unwrap().is_ok());
        }
        client.await.unwrap();
        assert!(b.frame().await.is_none());
        assert!(fault.get().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_upstream_takes_is_not_the_clients() {
        let (mut tx, mut b, fault) = body(1 << 20);
        tx.send_data(Bytes::from_static(b"abc")).await.unwrap();
        assert!(b.frame().await.unwrap().is_ok());
        // porch does not ask for the next piece for longer than body_timeout (a slow
        // upstream); the client's clock starts only when porch asks.
        tokio::time::sleep(Duration::from_secs(300)).await;
        tx.send_data(Bytes::from_static(b"def")).await.unwrap();
        assert!(b.frame().await.unwrap().is_ok());
        drop(tx);
        assert!(b.frame().await.is_none());
        assert!(fault.get().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_cut_off_or_broken_is_the_clients_fault() {
        let (tx, mut b, fault) = body(1 << 20);
        tx.abort(std::io::Error::other("connection reset"));
        assert!(b.frame().await.unwrap().is_err());
        assert_eq!(fault.get().unwrap().status.as_u16(), 400);

        // The strict layer ended a malformed chunked body well-formed: not passed on as
        // complete.
        let (tx, rx) = channel();
        let verdict = Verdict::default();
        verdict.set(crate::strict::Reject {
            status: 400,
            reason: "invalid chunk size",
        });
        let fault = ClientFault::default();
        let rules = BodyRules::new(1 << 20, Duration::from_secs(60));
        let mut b = ClientBody::new(rx, verdict, rules, fault.clone());
        drop(tx);
        assert!(b.frame().await.unwrap().is_err());
        let r = fault.get().unwrap();
        assert_eq!(
            (r.status.as_u16(), r.reason.as_ref()),
            (400, "invalid chunk size")
        );
    }
}
