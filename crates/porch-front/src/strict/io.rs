//! [`StrictIo`]: the wrapper that makes hyper read only bytes the [`Checker`] passed,
//! and runs the HTTP/1 read and write clocks.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::checker::{reject, Checker, HeadLimits};
use super::switch::Switch;
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
    /// Whether an Upgrade request switched protocols: until its answer, nothing after it
    /// is read.
    switch: Switch,
    timeouts: Timeouts,
    activity: Activity,
    /// Which clock runs: while the connection idles between requests (`keep_alive`) or
    /// while a head is arriving (`header`).
    read_timer: Option<ReadTimer>,
    /// Its sleep, kept for the connection's life and reset for each clock: one
    /// allocation per connection, not one per request.
    read_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Running while the client does not take what porch writes (`send`).
    write_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// After porch closed a connection mid-request (413, 400, 408): until when it still
    /// reads and drops what the client sends, and how much more it will drop.
    linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
}

/// How long porch keeps reading a closed connection's late bytes: a client that is still
/// sending a body when porch answers (413 before the end of a large upload) would
/// otherwise get a reset that can destroy the answer in its receive buffer before it
/// reads it (nginx's `lingering_close`, `lingering_time`).
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// The most porch drops while lingering.
const LINGER_BYTES: usize = 64 << 20;

impl<T> StrictIo<T> {
    pub fn new(
        inner: T,
        limits: HeadLimits,
        verdict: Verdict,
        switch: Switch,
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
            switch,
            timeouts,
            activity,
            read_timer: None,
            read_sleep: None,
            write_timer: None,
            linger: None,
        }
    }

    /// Whether the client may still be sending when porch closes: a rejection, a body not
    /// read to its end, or bytes of a next request. A connection closed between requests
    /// (keep-alive timeout, `Connection: close`) is not lingered on.
    fn client_may_be_sending(&self) -> bool {
        self.failed || !self.buf.is_empty() || !self.checker.is_fresh_head()
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
        if self.read_timer != wanted {
            self.read_timer = wanted;
            if let Some(kind) = wanted {
                let deadline = tokio::time::Instant::now()
                    + match kind {
                        ReadTimer::Idle => self.timeouts.keep_alive,
                        ReadTimer::Head => self.timeouts.header,
                    };
                match &mut self.read_sleep {
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => self.read_sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
        }
        let (Some(kind), Some(sleep)) = (self.read_timer, &mut self.read_sleep) else {
            return Poll::Pending;
        };
        ready!(sleep.as_mut().poll(cx));
        self.read_timer = None;
        Poll::Ready(kind)
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
            if me.checker.awaiting_switch() {
                // What follows an Upgrade request is HTTP/1 again (checked) or another
                // protocol (passed through): only its answer tells which.
                let switched = ready!(me.switch.poll_decision(cx));
                me.checker.decided(switched);
                me.check_buffered();
                continue;
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
            let opaque = me.checker.opaque_ahead();
            if me.buf.is_empty() && opaque > 0 && dst.remaining() > 0 {
                // Body data and switched-protocol bytes need no look: they go straight
                // into hyper's buffer, in reads as large as it offers, without the copy
                // out of ours (the checker still counts them).
                let limit = usize::try_from(opaque).unwrap_or(usize::MAX);
                let mut part = dst.take(limit);
                let polled = Pin::new(&mut me.inner).poll_read(cx, &mut part);
                let n = part.filled().len();
                return match polled {
                    Poll::Ready(Ok(())) => {
                        // SAFETY: `poll_read` initialised and filled the first `n`
                        // bytes of `dst`'s unfilled part.
                        unsafe { dst.assume_init(n) };
                        dst.advance(n);
                        let filled = dst.filled();
                        let (passed, violation) = me.checker.advance(&filled[filled.len() - n..]);
                        debug_assert!(passed == n && violation.is_none());
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    // Inside a body no read timer runs (the body reader has its own).
                    Poll::Pending => Poll::Pending,
                };
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
            // A new head restarts the header clock from its first byte: after the idle
            // wait, and also right after a previous head, whose clock may still run.
            if before == 0 && me.checker.is_fresh_head() {
                me.read_timer = None;
            }
            me.check_buffered();
        }
    }
}

impl<T> StrictIo<T> {
    /// Runs the checker over the unreleased bytes: what passed becomes readable; on a
    /// violation, its answer follows the bytes before it and nothing more is read.
    fn check_buffered(&mut self) {
        let (valid, violation) = self.checker.advance(&self.buf);
        self.ready = valid;
        if let Some(r) = violation {
            tracing::debug!("rejected request: {} {}", r.status, r.reason);
            self.failed = true;
            // Bytes before the violation (earlier pipelined requests) still go through.
            self.buf.truncate(valid);
            // For a head, a stand-in request carries the answer. Mid-body, the body is
            // ended in well-formed chunked framing and the verdict tells the reader.
            let tail = match self.checker.body_terminator() {
                None => stand_in_request(r),
                Some(end) => {
                    self.verdict.set(r);
                    end.to_string()
                }
            };
            self.buf.extend_from_slice(tail.as_bytes());
            self.ready = self.buf.len();
        }
    }

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
        let me = self.get_mut();
        if me.linger.is_none() {
            // The answer is out (and the FIN after it) before any lingering.
            ready!(Pin::new(&mut me.inner).poll_shutdown(cx))?;
            if !me.client_may_be_sending() {
                return Poll::Ready(Ok(()));
            }
            me.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), LINGER_BYTES));
        }
        let (deadline, left) = me.linger.as_mut().expect("set above");
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if *left == 0 || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => return Poll::Ready(Ok(())), // client done
                Ok(()) => *left = left.saturating_sub(rb.filled().len()),
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const UPGRADE: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n";

    fn strict(switch: &Switch) -> (StrictIo<DuplexStream>, DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let io = StrictIo::new(
            server,
            HeadLimits {
                request_line: 4094,
                fields: 100,
                field_size: 8190,
            },
            Verdict::default(),
            switch.clone(),
            Timeouts {
                keep_alive: Duration::from_secs(5),
                header: Duration::from_secs(30),
                send: Duration::from_secs(60),
            },
            Activity::default(),
        );
        (io, client)
    }

    /// What the strict layer releases within `wait` (an hour of paused time: longer than
    /// every clock).
    async fn released(io: &mut StrictIo<DuplexStream>, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0; 64 * 1024];
        let n = tokio::time::timeout(wait, io.read(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(buf[..n].to_vec())
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn an_upgrade_that_gets_no_101_leaves_the_connection_checked() {
        let switch = Switch::default();
        let (mut io, mut client) = strict(&switch);
        let smuggle = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        client
            .write_all(&[UPGRADE, smuggle].concat())
            .await
            .unwrap();
        assert_eq!(released(&mut io, HOUR).await.unwrap(), UPGRADE);
        // Held, neither released nor timed out, while the answer is awaited.
        assert_eq!(released(&mut io, HOUR).await, None);
        switch.decide(false);
        let next = released(&mut io, HOUR).await.unwrap();
        let text = String::from_utf8_lossy(&next);
        assert!(
            text.contains("x-porch-reject") && text.contains(" 400 "),
            "{text}"
        );
    }

    /// The read clock's one timer is reset for each clock, on every request of a
    /// connection: a head that starts late in the keep-alive wait gets the whole header
    /// time, and the keep-alive wait after it starts afresh too.
    #[tokio::test(start_paused = true)]
    async fn each_request_of_a_connection_gets_fresh_keep_alive_and_header_clocks() {
        let (mut io, mut client) = strict(&Switch::default());
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for _ in 0..2 {
            client.write_all(get).await.unwrap();
            assert_eq!(released(&mut io, HOUR).await.unwrap(), get);
            // 4 s into the 5 s keep-alive wait, half a head: the header clock (30 s) runs.
            assert_eq!(released(&mut io, Duration::from_secs(4)).await, None);
            client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            assert_eq!(released(&mut io, Duration::from_secs(29)).await, None);
            client.write_all(b"Host: a\r\n\r\n").await.unwrap();
            assert_eq!(
                released(&mut io, HOUR).await.unwrap(),
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
            );
        }
        // A third head that stops halfway gets its 408 at 30 s, not sooner.
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(released(&mut io, Duration::from_secs(29)).await, None);
        let answer = released(&mut io, Duration::from_secs(2)).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).contains(" 408 "));
        // And a connection left idle closes at 5 s, not sooner.
        let (mut io, mut client) = strict(&Switch::default());
        client.write_all(get).await.unwrap();
        assert_eq!(released(&mut io, HOUR).await.unwrap(), get);
        assert_eq!(released(&mut io, Duration::from_millis(4900)).await, None);
        assert_eq!(
            released(&mut io, Duration::from_millis(200)).await,
            Some(vec![])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_declined_upgrade_a_slow_head_still_gets_408() {
        let switch = Switch::default();
        let (mut io, mut client) = strict(&switch);
        client.write_all(UPGRADE).await.unwrap();
        assert_eq!(released(&mut io, HOUR).await.unwrap(), UPGRADE);
        switch.decide(false);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let next = released(&mut io, HOUR).await.unwrap();
        let text = String::from_utf8_lossy(&next);
        assert!(text.contains(" 408 "), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn bare_lf_after_a_declined_upgrade_is_rejected_and_a_second_upgrade_waits_again() {
        let switch = Switch::default();
        let (mut io, mut client) = strict(&switch);
        client
            .write_all(&[UPGRADE, UPGRADE].concat())
            .await
            .unwrap();
        assert_eq!(released(&mut io, HOUR).await.unwrap(), UPGRADE);
        switch.decide(false);
        assert_eq!(released(&mut io, HOUR).await.unwrap(), UPGRADE);
        // The first answer was used up: the second request waits for its own.
        assert_eq!(released(&mut io, HOUR).await, None);
        switch.decide(false);
        client
            .write_all(b"GET / HTTP/1.1\nHost: a\n\n")
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&released(&mut io, HOUR).await.unwrap()).into_owned();
        assert!(text.contains(" 400 "), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_101_bytes_pass_through_unchecked() {
        let switch = Switch::default();
        let (mut io, mut client) = strict(&switch);
        // A body on the Upgrade request is checked as any body is.
        let with_body =
            b"POST /ws HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nContent-Length: 3\r\n\r\nabc";
        client.write_all(with_body).await.unwrap();
        let mut got = Vec::new();
        while got.len() < with_body.len() {
            got.extend(released(&mut io, HOUR).await.unwrap());
        }
        assert_eq!(got, with_body);
        client
            .write_all(b"\x81\x05hello\nnot http\0")
            .await
            .unwrap();
        assert_eq!(released(&mut io, HOUR).await, None);
        switch.decide(true);
        assert_eq!(
            released(&mut io, HOUR).await.unwrap(),
            b"\x81\x05hello\nnot http\0"
        );
        // No clock runs on a tunnel's reads here (the proxy runs its own idle clock).
        assert_eq!(released(&mut io, HOUR).await, None);
        client.write_all(b"more").await.unwrap();
        assert_eq!(released(&mut io, HOUR).await.unwrap(), b"more");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_mid_body_reads_what_the_client_still_sends_then_ends() {
        let (mut io, mut client) = strict(&Switch::default());
        client
            .write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nxxxx")
            .await
            .unwrap();
        assert!(released(&mut io, HOUR).await.is_some());
        io.write_all(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let closing = tokio::spawn(async move { io.shutdown().await });
        // The client still sends; porch keeps draining instead of closing on it.
        for _ in 0..10 {
            client.write_all(&[b'x'; 8192]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !closing.is_finished(),
            "closed while the client was still sending"
        );
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 413"));
        drop(client);
        closing.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_ends_at_its_deadline_for_a_client_that_never_stops() {
        let (mut io, mut client) = strict(&Switch::default());
        client
            .write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nxx")
            .await
            .unwrap();
        assert!(released(&mut io, HOUR).await.is_some());
        let closing = tokio::spawn(async move { io.shutdown().await });
        tokio::time::sleep(LINGER_TIME + Duration::from_millis(10)).await;
        assert!(closing.is_finished());
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_between_requests_does_not_linger() {
        let (mut io, mut client) = strict(&Switch::default());
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert!(released(&mut io, HOUR).await.is_some());
        tokio::time::timeout(Duration::from_millis(1), io.shutdown())
            .await
            .expect("no lingering after a complete request")
            .unwrap();
    }
}
