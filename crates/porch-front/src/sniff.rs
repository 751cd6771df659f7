//! HTTP/2 prior knowledge or HTTP/1, told apart by a connection's first bytes on an `h2c`
//! listener. Sniffing here (rather than in hyper's automatic builder) lets HTTP/1 on such
//! a listener pass the same strict layer and clocks as on any other: the bytes read to
//! decide are handed back in front of the stream ([`Prefixed`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection with prior knowledge starts with (RFC 9113, 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Http2,
    Http1,
}

/// Reads until the bytes are the HTTP/2 preface or cannot become it (never past it), and
/// returns them with the verdict. `None`: the connection closed or failed first.
pub async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> Option<(Sniffed, Vec<u8>)> {
    let mut seen = Vec::with_capacity(PREFACE.len());
    let mut chunk = [0u8; PREFACE.len()];
    while seen.len() < PREFACE.len() {
        let want = PREFACE.len() - seen.len();
        match io.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
        if !PREFACE.starts_with(&seen) {
            return Some((Sniffed::Http1, seen));
        }
    }
    Some((Sniffed::Http2, seen))
}

/// A stream with bytes already read from it put back in front.
pub struct Prefixed<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: Vec<u8>, inner: I) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(sent: &[u8]) -> (Option<(Sniffed, Vec<u8>)>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(sent).await.unwrap();
        drop(client);
        let verdict = sniff(&mut server).await;
        let prefix = verdict.as_ref().map(|v| v.1.clone()).unwrap_or_default();
        let mut whole = Vec::new();
        Prefixed::new(prefix, server)
            .read_to_end(&mut whole)
            .await
            .unwrap();
        (verdict, whole)
    }

    #[tokio::test]
    async fn http1_is_told_at_the_first_differing_byte_and_nothing_is_lost() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (verdict, whole) = sniffed(req).await;
        assert_eq!(verdict.unwrap().0, Sniffed::Http1);
        assert_eq!(whole, req);
        // "POST" shares the preface's first byte.
        let (verdict, whole) = sniffed(b"POST / HTTP/1.1\r\n\r\n").await;
        assert_eq!(verdict.unwrap().0, Sniffed::Http1);
        assert_eq!(whole, b"POST / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn the_preface_is_http2_and_nothing_past_it_is_read() {
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        let (verdict, whole) = sniffed(&sent).await;
        let (kind, prefix) = verdict.unwrap();
        assert_eq!((kind, &prefix[..]), (Sniffed::Http2, PREFACE));
        assert_eq!(whole, sent);
    }

    #[tokio::test]
    async fn a_connection_closed_early_is_none() {
        assert!(sniffed(b"PRI * HT").await.0.is_none());
        assert!(sniffed(b"").await.0.is_none());
    }
}
