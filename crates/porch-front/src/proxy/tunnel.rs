//! A tunnel after `101 Switching Protocols`: bytes both ways until either side closes,
//! or until none has moved either way for the idle timeout (nginx closes WebSockets at
//! `proxy_read_timeout` alike), so silent tunnels do not hold connections for ever.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// One side closed and the other was told.
    Closed,
    /// Nothing moved either way for the idle timeout: both sides were dropped.
    Idle,
}

/// Copies between `a` and `b` until one closes or both stay silent for `idle`.
pub(super) async fn splice<A, B>(a: A, b: B, idle: Duration) -> io::Result<Ended>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = LastByte::new();
    let mut a = Watched {
        io: a,
        clock: clock.clone(),
    };
    let mut b = Watched {
        io: b,
        clock: clock.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            r = &mut copy => return r.map(|_| Ended::Closed),
            _ = tokio::time::sleep_until(clock.last() + idle) => {
                if clock.last() + idle <= Instant::now() {
                    return Ok(Ended::Idle);
                }
            }
        }
    }
}

/// When a byte last moved through the tunnel, either way.
#[derive(Clone)]
struct LastByte(Arc<(Instant, AtomicU64)>);

impl LastByte {
    fn new() -> LastByte {
        LastByte(Arc::new((Instant::now(), AtomicU64::new(0))))
    }

    fn touch(&self) {
        let ms = self.0 .0.elapsed().as_millis() as u64;
        self.0 .1.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.0 .0 + Duration::from_millis(self.0 .1.load(Ordering::Relaxed))
    }
}

/// One side of the tunnel, stamping the clock whenever bytes move.
struct Watched<T> {
    io: T,
    clock: LastByte,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            me.clock.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            me.clock.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn traffic_either_way_keeps_a_tunnel_open_and_silence_closes_it() {
        let (mut client, client_end) = tokio::io::duplex(1024);
        let (upstream_end, mut upstream) = tokio::io::duplex(1024);
        let started = Instant::now();
        let tunnel = tokio::spawn(splice(client_end, upstream_end, Duration::from_secs(60)));
        let mut buf = [0u8; 16];
        for round in 0..3 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            if round % 2 == 0 {
                client.write_all(b"ping").await.unwrap();
                assert_eq!(upstream.read(&mut buf).await.unwrap(), 4);
            } else {
                upstream.write_all(b"pong").await.unwrap();
                assert_eq!(client.read(&mut buf).await.unwrap(), 4);
            }
        }
        // 150 s in, open; then 60 s of silence closes both sides.
        assert_eq!(tunnel.await.unwrap().unwrap(), Ended::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(210));
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        assert_eq!(upstream.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_that_closes_ends_the_tunnel() {
        let (mut client, client_end) = tokio::io::duplex(1024);
        let (upstream_end, mut upstream) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(splice(client_end, upstream_end, Duration::from_secs(60)));
        client.write_all(b"bye").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        drop(upstream);
        assert_eq!(tunnel.await.unwrap().unwrap(), Ended::Closed);
    }
}
