//! Strict HTTP/1 framing checks in front of hyper.
//!
//! hyper (through httparse) is deliberately lenient: it accepts bare LF line endings,
//! quietly resolves `Content-Length` together with `Transfer-Encoding`, and closes the
//! connection without an answer on some malformed heads. Request smuggling lives in
//! exactly those gaps, and no crate offers a strict mode, so this wrapper checks every
//! byte a client sends before hyper sees it: heads line by line (CRLF only, no obs-fold,
//! token header names, no NUL or stray CR, sane and unambiguous framing headers, the
//! request-line and header limits) and bodies by their framing (exact `Content-Length`,
//! well-formed chunks). The first violation ends the connection with a specific 4xx;
//! nothing after it ever reaches hyper, so no smuggled request reaches the app.
//!
//! Bytes are only released to hyper once validated; a head's final empty line is released
//! only after the whole head passed, so hyper never dispatches a request this rejects.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The limits a head is checked against.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head.
    Head {
        first_line_done: bool,
        fields: usize,
        content_length: Option<u64>,
        transfer_encodings: usize,
        chunked: bool,
        upgrade: bool,
    },
    /// `n` body bytes left.
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    /// After an Upgrade request the bytes are another protocol's: pass them through.
    Passthrough,
}

const NEW_HEAD: State = State::Head {
    first_line_done: false,
    fields: 0,
    content_length: None,
    transfer_encodings: 0,
    chunked: false,
    upgrade: false,
};

/// A rejection: status line and reason for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

fn reject(status: u16, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// Validates a byte stream incrementally. Separate from the IO wrapper so it can be
/// tested (and fuzzed) on plain byte slices.
pub struct Checker {
    state: State,
    limits: HeadLimits,
}

impl Checker {
    pub fn new(limits: HeadLimits) -> Checker {
        Checker {
            state: NEW_HEAD,
            limits,
        }
    }

    /// How many bytes at the start of `buf` are valid and complete enough to release,
    /// and the violation that stopped the check, if any. Call again with the unreleased
    /// rest plus new bytes.
    pub fn advance(&mut self, buf: &[u8]) -> (usize, Option<Reject>) {
        let mut pos = 0;
        match self.advance_from(buf, &mut pos) {
            Ok(n) => (n, None),
            Err(r) => (pos, Some(r)),
        }
    }

    fn advance_from(&mut self, buf: &[u8], pos_out: &mut usize) -> Result<usize, Reject> {
        let mut pos = 0;
        loop {
            *pos_out = pos;
            let rest = &buf[pos..];
            if rest.is_empty() {
                return Ok(pos);
            }
            match self.state {
                State::Passthrough => return Ok(buf.len()),
                State::Body(n) => {
                    let take = (rest.len() as u64).min(n);
                    pos += take as usize;
                    self.state = if n == take {
                        NEW_HEAD
                    } else {
                        State::Body(n - take)
                    };
                }
                State::ChunkData(n) => {
                    let take = (rest.len() as u64).min(n);
                    pos += take as usize;
                    self.state = if n == take {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                State::ChunkDataEnd => {
                    if rest.len() < 2 {
                        if rest[0] != b'\r' {
                            return Err(reject(400, "chunk data longer than its size"));
                        }
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(reject(400, "chunk data longer than its size"));
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::ChunkSize | State::Trailers | State::Head { .. } => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        self.check_partial_line(rest)?;
                        return Ok(pos);
                    };
                    if nl == 0 || rest[nl - 1] != b'\r' {
                        return Err(reject(400, "line not ended by CRLF"));
                    }
                    let line = &rest[..nl - 1];
                    self.line(line)?;
                    pos += nl + 1;
                }
            }
        }
    }

    fn check_partial_line(&self, partial: &[u8]) -> Result<(), Reject> {
        if partial.contains(&0) {
            return Err(reject(400, "NUL byte in request"));
        }
        match self.state {
            State::Head {
                first_line_done: false,
                ..
            } if partial.len() > self.limits.request_line => {
                Err(reject(414, "request line too long"))
            }
            State::Head { .. } | State::Trailers if partial.len() > self.limits.field_size => {
                Err(reject(431, "header field too large"))
            }
            State::ChunkSize if partial.len() > 1024 => {
                Err(reject(400, "chunk size line too long"))
            }
            _ => Ok(()),
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<(), Reject> {
        if line.contains(&0) {
            return Err(reject(400, "NUL byte in request"));
        }
        if line.contains(&b'\r') {
            return Err(reject(400, "bare CR in request"));
        }
        match &mut self.state {
            State::Head {
                first_line_done: first @ false,
                ..
            } => {
                if line.len() > self.limits.request_line {
                    return Err(reject(414, "request line too long"));
                }
                if line.is_empty() {
                    // RFC 9112 §2.2: ignore empty lines before a request line.
                    return Ok(());
                }
                request_line(line)?;
                *first = true;
                Ok(())
            }
            State::Head {
                fields,
                content_length,
                transfer_encodings,
                chunked,
                upgrade,
                ..
            } => {
                if line.is_empty() {
                    return self.end_of_head();
                }
                *fields += 1;
                if *fields > self.limits.fields {
                    return Err(reject(431, "too many header fields"));
                }
                if line.len() > self.limits.field_size {
                    return Err(reject(431, "header field too large"));
                }
                let (name, value) = header(line)?;
                if name.eq_ignore_ascii_case(b"content-length") {
                    let n = content_length_value(value)?;
                    if content_length.is_some_and(|m| m != n) {
                        return Err(reject(400, "conflicting Content-Length headers"));
                    }
                    *content_length = Some(n);
                } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    *transfer_encodings += 1;
                    *chunked = value.eq_ignore_ascii_case(b"chunked");
                    if !*chunked || *transfer_encodings > 1 {
                        return Err(reject(400, "Transfer-Encoding must be exactly chunked"));
                    }
                } else if name.eq_ignore_ascii_case(b"upgrade") {
                    *upgrade = true;
                }
                Ok(())
            }
            State::ChunkSize => {
                let size = chunk_size(line)?;
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok(())
            }
            State::Trailers => {
                if line.is_empty() {
                    self.state = NEW_HEAD;
                    return Ok(());
                }
                if line.len() > self.limits.field_size {
                    return Err(reject(431, "trailer field too large"));
                }
                header(line).map(drop)
            }
            _ => unreachable!("only line states reach here"),
        }
    }

    fn end_of_head(&mut self) -> Result<(), Reject> {
        let State::Head {
            content_length,
            chunked,
            upgrade,
            ..
        } = self.state
        else {
            unreachable!()
        };
        if chunked && content_length.is_some() {
            return Err(reject(400, "both Content-Length and Transfer-Encoding"));
        }
        self.state = if upgrade {
            State::Passthrough
        } else if chunked {
            State::ChunkSize
        } else {
            match content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => NEW_HEAD,
            }
        };
        Ok(())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn request_line(line: &[u8]) -> Result<(), Reject> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(400, "malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(reject(400, "invalid method"));
    }
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return Err(reject(400, "invalid request target"));
    }
    if !(version == b"HTTP/1.1" || version == b"HTTP/1.0") {
        return Err(reject(
            if version.starts_with(b"HTTP/") {
                505
            } else {
                400
            },
            "unsupported HTTP version",
        ));
    }
    Ok(())
}

fn header(line: &[u8]) -> Result<(&[u8], &[u8]), Reject> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(reject(400, "obsolete line folding in header"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(reject(400, "header line without a colon"))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(reject(400, "invalid header name"));
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(reject(400, "control character in header value"));
    }
    Ok((name, value))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn content_length_value(v: &[u8]) -> Result<u64, Reject> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(reject(400, "invalid Content-Length"));
    }
    Ok(std::str::from_utf8(v).unwrap().parse().unwrap())
}

fn chunk_size(line: &[u8]) -> Result<u64, Reject> {
    let hex_end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let hex = &line[..hex_end];
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(reject(400, "invalid chunk size"));
    }
    Ok(u64::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap())
}

/// An IO stream whose reads pass through a [`Checker`]. On a violation, reads end and
/// the rejection is written when hyper closes the connection (after any responses it
/// still owes for earlier pipelined requests).
pub struct StrictIo<T> {
    inner: T,
    checker: Checker,
    buf: BytesMut,
    ready: usize,
    /// Response bytes still to write for a rejected head.
    reject: Option<BytesMut>,
    failed: bool,
}

impl<T> StrictIo<T> {
    pub fn new(inner: T, limits: HeadLimits) -> Self {
        StrictIo {
            inner,
            checker: Checker::new(limits),
            buf: BytesMut::with_capacity(8 * 1024),
            ready: 0,
            reject: None,
            failed: false,
        }
    }
}

fn response(r: Reject) -> BytesMut {
    let reason = match r.status {
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Bad Request",
    };
    let body = format!("{} {reason}: {}\n", r.status, r.reason);
    BytesMut::from(
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            r.status,
            body.len()
        )
        .as_bytes(),
    )
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
                return Poll::Ready(Ok(())); // end of stream for hyper
            }
            if me.buf.len() > 1 << 20 {
                // Unreleased bytes never grow past a head's limits; this is a safety net.
                me.failed = true;
                me.reject = Some(response(reject(431, "request head too large")));
                continue;
            }
            me.buf.reserve(8 * 1024);
            let before = me.buf.len();
            let n = {
                let spare = me.buf.spare_capacity_mut();
                let mut rb = ReadBuf::uninit(spare);
                ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
                rb.filled().len()
            };
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            // SAFETY: `poll_read` initialised `n` bytes of the spare capacity.
            unsafe { me.buf.set_len(before + n) };
            let (valid, violation) = me.checker.advance(&me.buf);
            me.ready = valid;
            if let Some(r) = violation {
                tracing::debug!("rejected request: {} {}", r.status, r.reason);
                me.failed = true;
                // Mid-body, hyper answers the request itself (the body read fails);
                // for a head, nobody else will, so the rejection is ours to send.
                me.reject = matches!(me.checker.state, State::Head { .. }).then(|| response(r));
                // Bytes before the violation (earlier pipelined requests) still go through.
                me.buf.truncate(valid);
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
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        while let Some(pending) = me.reject.as_mut() {
            if pending.is_empty() {
                me.reject = None;
                break;
            }
            let n = ready!(Pin::new(&mut me.inner).poll_write(cx, pending))?;
            if n == 0 {
                me.reject = None;
                break;
            }
            pending.advance(n);
        }
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        request_line: 100,
        fields: 10,
        field_size: 200,
    };

    fn check(input: &[u8]) -> Result<usize, Reject> {
        match Checker::new(LIMITS).advance(input) {
            (n, None) => Ok(n),
            (_, Some(r)) => Err(r),
        }
    }

    #[test]
    fn valid_streams_are_released_whole() {
        let reqs: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
        ];
        for r in reqs {
            assert_eq!(check(r), Ok(r.len()), "{}", String::from_utf8_lossy(r));
        }
    }

    #[test]
    fn released_bytes_never_include_an_unchecked_head_end() {
        // Split anywhere: the final CRLF of a head is released only with the whole head.
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n";
        for split in 1..req.len() {
            let mut c = Checker::new(LIMITS);
            let (n, violation) = c.advance(&req[..split]);
            assert!(n <= split && n < req.len() - 2);
            if violation.is_none() {
                let (_, second) = c.advance(&req[n..]);
                assert!(second.is_some(), "split at {split}");
            }
        }
    }

    #[test]
    fn smuggling_and_malformed_heads_are_rejected() {
        let bad: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: a\n\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
            (b"GET /\0 HTTP/1.1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
        ];
        for (input, status) in bad {
            let got = check(input).map_err(|r| r.status);
            assert_eq!(got, Err(*status), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn limits_give_their_own_status() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
        assert_eq!(check(long.as_bytes()).unwrap_err().status, 414);
        let partial = format!("GET /{}", "a".repeat(200));
        assert_eq!(check(partial.as_bytes()).unwrap_err().status, 414);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(11));
        assert_eq!(check(many.as_bytes()).unwrap_err().status, 431);
        let big = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "v".repeat(300));
        assert_eq!(check(big.as_bytes()).unwrap_err().status, 431);
    }
}
