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

use std::future::Future;
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

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_SIZE_LINE: usize = 1024;

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
    /// Bytes of the current head already checked but not yet released: a head is
    /// released whole, so hyper never holds part of a head this rejects.
    held: usize,
}

impl Checker {
    pub fn new(limits: HeadLimits) -> Checker {
        Checker {
            state: NEW_HEAD,
            limits,
            held: 0,
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
            if matches!(self.state, State::Head { .. }) {
                // Scan the head's lines beyond the part checked in earlier calls.
                let rest = &buf[pos + self.held..];
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    self.check_partial_line(rest)?;
                    return Ok(pos);
                };
                if nl == 0 || rest[nl - 1] != b'\r' {
                    return Err(reject(400, "line not ended by CRLF"));
                }
                self.line(&rest[..nl - 1])?;
                self.held += nl + 1;
                if !matches!(self.state, State::Head { .. }) || self.is_fresh_head() {
                    // The head is complete and valid (or was only empty lines): release it.
                    pos += self.held;
                    self.held = 0;
                }
                continue;
            }
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
                State::Head { .. } => unreachable!("heads are scanned above"),
                State::ChunkSize | State::Trailers => {
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

    /// A head that ended, or had no request line yet.
    fn is_fresh_head(&self) -> bool {
        self.state == NEW_HEAD
    }

    fn check_partial_line(&self, partial: &[u8]) -> Result<(), Reject> {
        if partial.contains(&0) {
            return Err(reject(400, "NUL byte in request"));
        }
        // A final CR may be the first half of the line's CRLF: it is not part of the line.
        let len = partial.len() - usize::from(partial.last() == Some(&b'\r'));
        match self.state {
            State::Head {
                first_line_done: false,
                ..
            } => {
                if len > self.limits.request_line {
                    return Err(reject(414, "request line too long"));
                }
                Ok(())
            }
            State::Head { .. } | State::Trailers if len > self.limits.field_size => {
                Err(reject(431, "header field too large"))
            }
            State::ChunkSize if len > MAX_CHUNK_SIZE_LINE => {
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
                if line.len() > MAX_CHUNK_SIZE_LINE {
                    return Err(reject(400, "chunk size line too long"));
                }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadTimer {
    Idle,
    Head,
}

/// The connection timeouts this layer enforces for HTTP/1.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Idle time between requests before porch closes the connection.
    pub keep_alive: std::time::Duration,
    /// Time from a head's first byte to its end; past it the client gets 408.
    pub header: std::time::Duration,
    /// Time a client may leave porch's writes unread before the connection is dropped.
    pub send: std::time::Duration,
}

/// How many requests of a connection are being answered. Zero means the connection is
/// idle, which is when the keep-alive timeout runs.
#[derive(Clone, Default)]
pub struct Activity(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Activity {
    /// Counts a request until the returned guard (kept with its response body) is dropped.
    pub fn start(&self) -> ActivityGuard {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ActivityGuard(self.clone())
    }
    fn is_idle(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == 0
    }
}

pub struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
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
        if !matches!(self.checker.state, State::Head { .. }) {
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

/// Shared between a connection's [`StrictIo`] and the requests it carries (as a request
/// extension): set when a body broke the framing rules. The body then ends early but
/// well-formed for hyper, so whoever reads it must check here before trusting it as
/// complete: the app route answers 400 instead of dispatching, the proxy aborts the
/// upstream request.
#[derive(Clone, Default)]
pub struct Verdict(std::sync::Arc<std::sync::Mutex<Option<Reject>>>);

impl Verdict {
    pub fn rejected(&self) -> Option<Reject> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn set(&self, r: Reject) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }
}

/// The header that carries a rejection to the front's handler, with this process's
/// random token so no client can forge it.
pub const REJECT_HEADER: &str = "x-porch-reject";

/// This process's token for [`REJECT_HEADER`].
pub fn reject_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut token = String::new();
        for _ in 0..2 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            token.push_str(&format!("{:016x}", h.finish()));
        }
        token
    })
}

/// Parses a [`REJECT_HEADER`] value made by [`synthetic_request`].
pub fn parse_reject(value: &[u8]) -> Option<(u16, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let mut parts = value.splitn(3, ' ');
    if parts.next()? != reject_token() {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((status, parts.next().unwrap_or("").to_string()))
}

/// A request standing in for a rejected head. hyper answers it in order, after any
/// responses it still owes for earlier pipelined requests; the handler sees the header
/// and answers with the rejection and `Connection: close`.
fn synthetic_request(r: Reject) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: porch\r\n{REJECT_HEADER}: {} {} {}\r\n\r\n",
        reject_token(),
        r.status,
        r.reason
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
                    synthetic_request(reject(431, "request head too large")).as_bytes(),
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
                                synthetic_request(reject(408, "request head not received in time"))
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
                let tail = match me.checker.state {
                    State::Head { .. } => synthetic_request(r),
                    State::ChunkSize => "0\r\n\r\n".to_string(),
                    State::ChunkDataEnd => "\r\n0\r\n\r\n".to_string(),
                    _ => "\r\n".to_string(),
                };
                if !matches!(me.checker.state, State::Head { .. }) {
                    me.verdict.set(r);
                }
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
