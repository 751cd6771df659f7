//! [`StrictIo`]: the wrapper that makes hyper read only bytes the [`Checker`] passed,
//! and runs the HTTP/1 read and write clocks.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::checker::{reject, Checker, HeadLimits};
use super::timeouts::{Activity, ReadTimer, Timeouts};
use crate::reject::{stand_in_request, Verdict};

/// An IO stream whose reads pass through a [`Checker`]. On a violation, reads end and
/// the rejection is written when hyper closes the connection (after any responses it
/// still owes for earlier pipelined requests).
pub struct StrictIo<T> {
    inner: T,
    checker: Checker,
    buf: BytesMut,
    ready: usize,
    failed: bool,
    verdict: Verdict,
    timeouts: Timeouts,
    activity: Activity,
    /// Running while the connection idles between requests (`keep_alive`) or while a
    /// head is arriving (`header`).
    read_timer: Option<(ReadTimer, Pin<Box<tokio::time::Sleep>>)>,
    /// Running while the client does not take what porch writes (`send`).
    write_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StrictIo<T> {
    pub fn new(
        inner: T,
        limits: HeadLimits,
        verdict: Verdict,
        timeouts: Timeouts,
        activity: Activity,
    ) -> Self {
        StrictIo {
            inner,
            checker: Checker::new(limits),
            buf: BytesMut::with_capacity(8 * 1024),
            ready: 0,
            failed: false,
            verdict,
            timeouts,
            activity,
            read_timer: None,
            write_timer: None,
        }
    }

    /// Which read timer should run now, if any.
    fn wanted_read_timer(&self) -> Option<ReadTimer> {
        if !self.checker.in_head() {
            return None; // bodies: the reader enforces its own gap timeout
        }
        if !self.buf.is_empty() {
            Some(ReadTimer::Head)
        } else if self.activity.is_idle() {
            Some(ReadTimer::Idle)
        } else {
            None
        }
    }

    /// Polls the read timers while a read is pending; `Ready` means one expired.
    fn poll_read_timer(&mut self, cx: &mut Context<'_>) -> Poll<ReadTimer> {
        let wanted = self.wanted_read_timer();
        if self.read_timer.as_ref().map(|(k, _)| *k) != wanted {
            self.read_timer = wanted.map(|kind| {
                let after = match kind {
                    ReadTimer::Idle => self.timeouts.keep_alive,
                    ReadTimer::Head => self.timeouts.header,
                };
                (kind, Box::pin(tokio::time::sleep(after)))
            });
        }
        match &mut self.read_timer {
            Some((kind, sleep)) => {
                let kind = *kind;
                ready!(sleep.as_mut().poll(cx));
                self.read_timer = None;
                Poll::Ready(kind)
            }
            None => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for StrictIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.ready > 0 {
                let n = me.ready.min(dst.remaining());
                dst.put_slice(&me.buf[..n]);
                me.buf.advance(n);
                me.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if me.failed {
                // Nothing more from this client. Not end-of-stream: hyper would drop the
                // connection before answering; it closes it after the `Connection: close`
                // answer instead.
                return Poll::Pending;
            }
            if me.buf.len() > 1 << 20 {
                // Unreleased bytes never grow past a head's limits; this is a safety net.
                me.failed = true;
                me.buf.clear();
                me.buf.extend_from_slice(
                    stand_in_request(reject(431, "request head too large")).as_bytes(),
                );
                me.ready = me.buf.len();
                continue;
            }
            me.buf.reserve(8 * 1024);
            let before = me.buf.len();
            let polled = {
                let spare = me.buf.spare_capacity_mut();
                let mut rb = ReadBuf::uninit(spare);
                Pin::new(&mut me.inner)
                    .poll_read(cx, &mut rb)
                    .map_ok(|()| rb.filled().len())
            };
            let n = match polled {
                Poll::Ready(r) => r?,
                Poll::Pending => {
                    return match me.poll_read_timer(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(ReadTimer::Idle) => Poll::Ready(Ok(())), // close quietly
                        Poll::Ready(ReadTimer::Head) => {
                            tracing::debug!("request head not received within the header timeout");
                            me.failed = true;
                            me.buf.clear();
                            me.buf.extend_from_slice(
                                stand_in_request(reject(408, "request head not received in time"))
                                    .as_bytes(),
                            );
                            me.ready = me.buf.len();
                            continue;
                        }
                    };
                }
            };
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            // SAFETY: `poll_read` initialised `n` bytes of the spare capacity.
            unsafe { me.buf.set_len(before + n) };
            // A new head restarts the header clock from its first byte.
            if before == 0 && matches!(me.read_timer, Some((ReadTimer::Idle, _))) {
                me.read_timer = None;
            }
            let (valid, violation) = me.checker.advance(&me.buf);
            me.ready = valid;
            if let Some(r) = violation {
                tracing::debug!("rejected request: {} {}", r.status, r.reason);
                me.failed = true;
                // Bytes before the violation (earlier pipelined requests) still go through.
                me.buf.truncate(valid);
                // For a head, a stand-in request carries the answer. Mid-body, the body is
                // ended in well-formed chunked framing and the verdict tells the reader.
                let tail = match me.checker.body_terminator() {
                    None => stand_in_request(r),
                    Some(end) => {
                        me.verdict.set(r);
                        end.to_string()
                    }
                };
                me.buf.extend_from_slice(tail.as_bytes());
                me.ready = me.buf.len();
            }
        }
    }
}

impl<T> StrictIo<T> {
    /// A write made progress (`Ready`) or is blocked by a client that does not read
    /// (`Pending`): past the send timeout that is an error, which drops the connection.
    fn send_clock<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let send = self.timeouts.send;
                let timer = self
                    .write_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
                ready!(timer.as_mut().poll(cx));
                tracing::debug!("client did not read the response within the send timeout");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "send timeout")))
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for StrictIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.inner).poll_write(cx, data);
        me.send_clock(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        me.send_clock(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.inner).poll_flush(cx);
        me.send_clock(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
