//! The framing state machine: which bytes of a client's stream are valid and complete
//! enough to hand to hyper. Line syntax is in `grammar`.

use super::grammar::{chunk_size, content_length_value, header, request_line};

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
    /// An Upgrade request ended: what follows is held, unread, until its answer says
    /// whether the connection switched protocols.
    AwaitingSwitch,
    /// The connection switched protocols (a `101` went out): the bytes are another
    /// protocol's, passed through.
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

pub(super) fn reject(status: u16, reason: &'static str) -> Reject {
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
    /// The message being read asked to switch protocols (an `Upgrade` header): once it
    /// ends, checking pauses until its answer is known.
    upgrade: bool,
}

impl Checker {
    pub fn new(limits: HeadLimits) -> Checker {
        Checker {
            state: NEW_HEAD,
            limits,
            held: 0,
            upgrade: false,
        }
    }

    /// Whether an Upgrade request ended and its answer is awaited: nothing after it may
    /// be released (nor checked: it may be another protocol's bytes) until then.
    pub fn awaiting_switch(&self) -> bool {
        self.state == State::AwaitingSwitch
    }

    /// The awaited answer came: `switched` (a `101`) passes every later byte through;
    /// otherwise the connection stays HTTP/1 and checking resumes with the next head.
    pub fn decided(&mut self, switched: bool) {
        if self.state == State::AwaitingSwitch {
            self.state = if switched {
                State::Passthrough
            } else {
                NEW_HEAD
            };
        }
    }

    /// The state after a message ended: the next head, or a pause for an upgrade's answer.
    fn message_end(&mut self) -> State {
        if std::mem::take(&mut self.upgrade) {
            State::AwaitingSwitch
        } else {
            NEW_HEAD
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
                let Some(nl) = memchr::memchr(b'\n', rest) else {
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
                State::AwaitingSwitch => return Ok(pos),
                State::Body(n) => {
                    let take = (rest.len() as u64).min(n);
                    pos += take as usize;
                    self.state = if n == take {
                        self.message_end()
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
                    let Some(nl) = memchr::memchr(b'\n', rest) else {
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

    /// How many of the next bytes pass without being looked at: the rest of a
    /// Content-Length body or of a chunk's data, or everything once the connection
    /// switched protocols. They may be read straight into hyper's buffer.
    pub(super) fn opaque_ahead(&self) -> u64 {
        match self.state {
            State::Body(n) | State::ChunkData(n) => n,
            State::Passthrough => u64::MAX,
            _ => 0,
        }
    }

    /// A head that ended, or had no request line yet.
    pub(super) fn is_fresh_head(&self) -> bool {
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
        if let Some(at) = memchr::memchr2(0, b'\r', line) {
            // NUL anywhere is answered as such, even after a bare CR.
            if line[at..].contains(&0) {
                return Err(reject(400, "NUL byte in request"));
            }
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
                    self.state = self.message_end();
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
        // An Upgrade request's own body is checked as any other; only after it does the
        // connection wait to learn whether it switched.
        self.upgrade = upgrade;
        self.state = if chunked {
            State::ChunkSize
        } else {
            match content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => self.message_end(),
            }
        };
        Ok(())
    }

    /// Whether a head is being read (rather than a body).
    pub(super) fn in_head(&self) -> bool {
        matches!(self.state, State::Head { .. })
    }

    /// After a violation mid-body: the bytes that end the message in well-formed framing,
    /// so hyper finishes the request it is reading. `None` in a head.
    pub(super) fn body_terminator(&self) -> Option<&'static str> {
        match self.state {
            State::Head { .. } => None,
            State::ChunkSize => Some("0\r\n\r\n"),
            State::ChunkDataEnd => Some("\r\n0\r\n\r\n"),
            _ => Some("\r\n"),
        }
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

    #[test]
    fn an_upgrade_request_pauses_checking_until_its_answer() {
        let upgrade = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        let smuggle = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = [&upgrade[..], smuggle].concat();

        let mut c = Checker::new(LIMITS);
        assert_eq!(c.advance(&stream), (upgrade.len(), None));
        assert!(c.awaiting_switch());
        // Nothing more is released while waiting, however often it is asked.
        assert_eq!(c.advance(&stream[upgrade.len()..]), (0, None));
        c.decided(false);
        assert!(!c.awaiting_switch());
        assert_eq!(
            c.advance(&stream[upgrade.len()..]).1.map(|r| r.status),
            Some(400)
        );

        let mut c = Checker::new(LIMITS);
        assert_eq!(c.advance(&stream).0, upgrade.len());
        c.decided(true);
        assert_eq!(c.advance(smuggle), (smuggle.len(), None));
    }

    #[test]
    fn an_upgrade_request_body_is_checked_before_the_pause() {
        let mut c = Checker::new(LIMITS);
        let req = b"POST / HTTP/1.1\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(c.advance(req).1.map(|r| r.status), Some(400));

        let mut c = Checker::new(LIMITS);
        let req = b"POST / HTTP/1.1\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(c.advance(req), (req.len(), None));
        assert!(c.awaiting_switch());
    }
}
