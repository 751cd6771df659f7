//! The front-to-worker protocol.
//!
//! The front has already parsed and fully read every request, so a worker never parses
//! HTTP: it receives a compact binary frame with the pieces a WSGI environ needs, and
//! answers with a head frame, body frames and an end frame. One Unix stream socket per
//! worker carries both directions; frames carry a request id so a worker with several
//! threads can answer out of order.
//!
//! Frame layout (little endian): `len: u32` (bytes after this field), `kind: u8`,
//! `id: u32`, then `len - 5` bytes of payload. Strings are `u32` length + bytes.
//!
//! The decoder follows the check-then-parse shape: [`Decoder::next`] looks at the
//! buffered bytes and only slices out a frame once it is complete.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before a frame's payload: length, kind, id.
pub const HEADER_LEN: usize = 9;
/// Largest payload accepted from the other side; a bigger length means a corrupt stream.
pub const MAX_FRAME: usize = 64 << 20;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// front → worker: a request to run ([`Request`]).
    Request = 1,
    /// front → worker: print the Python stack of the thread running request `id`.
    DumpStack = 2,
    /// front → worker: finish what is running, then exit.
    Stop = 3,
    /// front → worker (ASGI): request `id` ran past the timeout and was answered 504:
    /// send its task's stack ([`Kind::Stack`]), then cancel the task.
    Cancel = 4,
    /// front → worker (ASGI): the client of request `id` went away (`http.disconnect`).
    Disconnect = 5,
    /// A WebSocket message ([`WsMessage`]): front → worker, from the client of socket
    /// `id`; worker → front, for it. A socket is a request whose head was a `101`.
    WsMessage = 6,
    /// The closing of a WebSocket ([`WsClose`]): front → worker, the client closed or went
    /// away (`websocket.disconnect`); worker → front, the app closes it.
    WsClose = 7,
    /// worker → front: the app is imported, the worker takes requests. Payload: pid.
    Ready = 10,
    /// worker → front: status and headers ([`Head`]).
    Head = 11,
    /// worker → front: a piece of the response body.
    Body = 12,
    /// worker → front: the response is complete (`1`) or was aborted (`0`).
    End = 13,
    /// worker → front: the formatted Python stack asked for by [`Kind::DumpStack`].
    Stack = 14,
    /// worker → front: request `id`, sent ahead, was not started and is given back (the
    /// answer to SIGUSR2, see `porch_front::dispatch`); `id` 0 ends one such answer.
    Returned = 15,
    /// worker → front: the trailer fields of a response ([`Trailers`]), after its body.
    Trailers = 16,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::DumpStack,
            3 => Kind::Stop,
            4 => Kind::Cancel,
            5 => Kind::Disconnect,
            6 => Kind::WsMessage,
            7 => Kind::WsClose,
            10 => Kind::Ready,
            11 => Kind::Head,
            12 => Kind::Body,
            13 => Kind::End,
            14 => Kind::Stack,
            15 => Kind::Returned,
            16 => Kind::Trailers,
            _ => return None,
        })
    }
}

/// One decoded frame; `payload` is a cheap slice of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub id: u32,
    pub payload: Bytes,
}

/// Why the byte stream could not be decoded: the peer is broken or not a porch process.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("truncated field in a {0} frame")]
    Truncated(&'static str),
    #[error("invalid value in a {0} frame")]
    Invalid(&'static str),
}

/// Splits a byte stream into frames.
#[derive(Default)]
pub struct Decoder;

impl Decoder {
    /// The next complete frame in `buf`, or `None` when more bytes are needed.
    pub fn next(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        if !(5..=MAX_FRAME).contains(&len) {
            return Err(DecodeError::TooLarge(len));
        }
        let kind = Kind::from_u8(buf[4]).ok_or(DecodeError::UnknownKind(buf[4]))?;
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        let id = u32::from_le_bytes(buf[5..9].try_into().unwrap());
        let mut frame = buf.split_to(4 + len);
        frame.advance(HEADER_LEN);
        Ok(Some(Frame {
            kind,
            id,
            payload: frame.freeze(),
        }))
    }
}

/// Appends a frame with the given payload writer to `out`.
pub fn encode(out: &mut BytesMut, kind: Kind, id: u32, payload: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u8(kind as u8);
    out.put_u32_le(id);
    payload(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Same as [`encode`] into a plain `Vec` (the worker side has no `BytesMut` needs).
pub fn encode_vec(out: &mut Vec<u8>, kind: Kind, id: u32, payload: &[u8]) {
    out.extend_from_slice(&((payload.len() + 5) as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
}

fn put_bytes(out: &mut impl BufMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

/// Header or trailer fields: their count, then each name and value.
fn put_fields(out: &mut impl BufMut, fields: &[(Bytes, Bytes)]) {
    out.put_u32_le(fields.len() as u32);
    for (k, v) in fields {
        put_bytes(out, k);
        put_bytes(out, v);
    }
}

/// A cursor over a payload that reports truncation instead of panicking.
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(DecodeError::Truncated(self.what))?;
        self.buf = rest;
        Ok(b)
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::Invalid(self.what))
    }
    pub fn rest(self) -> &'a [u8] {
        self.buf
    }
    /// Fields written by `put_fields`, as slices of `payload` (the buffer this reads).
    pub fn fields(&mut self, payload: &Bytes) -> Result<Vec<(Bytes, Bytes)>, DecodeError> {
        let n = self.u32()? as usize;
        let mut fields = Vec::with_capacity(n.min(256));
        for _ in 0..n {
            let k = payload.slice_ref(self.bytes()?);
            let v = payload.slice_ref(self.bytes()?);
            fields.push((k, v));
        }
        Ok(fields)
    }
}

/// Where a request body is: small bodies travel inside the frame, large ones were
/// spilled by the front to a temporary file the worker reads directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    Inline(Bytes),
    File { path: String, len: u64 },
}

impl RequestBody {
    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Inline(b) => b.len() as u64,
            RequestBody::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a worker needs to build a WSGI environ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query, still percent-encoded.
    pub target: Bytes,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    pub https: bool,
    pub remote_addr: String,
    pub remote_port: u16,
    pub server_name: String,
    pub server_port: u16,
    /// Lower-case names; duplicates already joined; names with `_` already dropped.
    pub headers: Vec<(Bytes, Bytes)>,
    pub body: RequestBody,
}

const PROTOCOLS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2"];

impl Request {
    /// A WebSocket handshake (the front sends one only once it checked it is valid).
    pub fn is_websocket(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, v)| &k[..] == b"upgrade" && v.eq_ignore_ascii_case(b"websocket"))
    }

    pub fn encode(&self, out: &mut BytesMut, id: u32) {
        if let Some(body) = self.encode_head(out, id) {
            out.extend_from_slice(body);
        }
    }

    /// Encodes the frame up to its inline body, which the caller sends right after it
    /// (by reference: a large body is written to the socket without being copied into
    /// `out`). The frame's length already counts the body.
    pub fn encode_head(&self, out: &mut BytesMut, id: u32) -> Option<&Bytes> {
        let start = out.len();
        let mut inline = None;
        encode(out, Kind::Request, id, |out| {
            put_bytes(out, self.method.as_bytes());
            put_bytes(out, &self.target);
            out.put_u8(
                PROTOCOLS
                    .iter()
                    .position(|p| *p == self.protocol)
                    .unwrap_or(1) as u8,
            );
            out.put_u8(self.https as u8);
            put_bytes(out, self.remote_addr.as_bytes());
            out.put_u16_le(self.remote_port);
            put_bytes(out, self.server_name.as_bytes());
            out.put_u16_le(self.server_port);
            put_fields(out, &self.headers);
            match &self.body {
                RequestBody::Inline(b) => {
                    out.put_u8(0);
                    out.put_u32_le(b.len() as u32);
                    inline = Some(b);
                }
                RequestBody::File { path, len } => {
                    out.put_u8(1);
                    put_bytes(out, path.as_bytes());
                    out.put_u64_le(*len);
                }
            }
        });
        if let Some(b) = inline {
            let len = u32::from_le_bytes(out[start..start + 4].try_into().unwrap());
            out[start..start + 4].copy_from_slice(&(len + b.len() as u32).to_le_bytes());
        }
        inline
    }

    pub fn decode(payload: &Bytes) -> Result<Request, DecodeError> {
        let mut r = Reader::new(payload, "request");
        let slice = |b: &[u8]| payload.slice_ref(b);
        let method = r.str()?.to_owned();
        let target = slice(r.bytes()?);
        let protocol = *PROTOCOLS
            .get(r.u8()? as usize)
            .ok_or(DecodeError::Invalid("request"))?;
        let https = r.u8()? != 0;
        let remote_addr = r.str()?.to_owned();
        let remote_port = r.u16()?;
        let server_name = r.str()?.to_owned();
        let server_port = r.u16()?;
        let headers = r.fields(payload)?;
        let body = match r.u8()? {
            0 => RequestBody::Inline(slice(r.bytes()?)),
            1 => RequestBody::File {
                path: r.str()?.to_owned(),
                len: r.u64()?,
            },
            _ => return Err(DecodeError::Invalid("request")),
        };
        Ok(Request {
            method,
            target,
            protocol,
            https,
            remote_addr,
            remote_port,
            server_name,
            server_port,
            headers,
            body,
        })
    }
}

/// One WebSocket message; `text` ones hold UTF-8 (checked by whoever encodes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsMessage {
    pub text: bool,
    pub data: Bytes,
}

impl WsMessage {
    pub fn encode(out: &mut BytesMut, id: u32, text: bool, data: &[u8]) {
        encode(out, Kind::WsMessage, id, |out| {
            out.put_u8(text as u8);
            out.put_slice(data);
        });
    }

    /// The payload of a worker's frame, into `out` (see [`encode_vec`]).
    pub fn encode_vec(out: &mut Vec<u8>, id: u32, text: bool, data: &[u8]) {
        out.extend_from_slice(&((data.len() + 6) as u32).to_le_bytes());
        out.push(Kind::WsMessage as u8);
        out.extend_from_slice(&id.to_le_bytes());
        out.push(text as u8);
        out.extend_from_slice(data);
    }

    pub fn decode(payload: &Bytes) -> Result<WsMessage, DecodeError> {
        let (&kind, data) = payload
            .split_first()
            .ok_or(DecodeError::Truncated("websocket message"))?;
        if kind > 1 || (kind == 1 && std::str::from_utf8(data).is_err()) {
            return Err(DecodeError::Invalid("websocket message"));
        }
        Ok(WsMessage {
            text: kind == 1,
            data: payload.slice(1..),
        })
    }
}

/// A WebSocket close: RFC 6455's code and reason (at most 123 bytes of UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsClose {
    pub code: u16,
    pub reason: String,
}

impl WsClose {
    pub fn encode(&self, out: &mut BytesMut, id: u32) {
        encode(out, Kind::WsClose, id, |out| {
            out.put_u16_le(self.code);
            out.put_slice(self.reason.as_bytes());
        });
    }

    pub fn encode_vec(&self, out: &mut Vec<u8>, id: u32) {
        let mut payload = Vec::with_capacity(2 + self.reason.len());
        payload.extend_from_slice(&self.code.to_le_bytes());
        payload.extend_from_slice(self.reason.as_bytes());
        encode_vec(out, Kind::WsClose, id, &payload);
    }

    pub fn decode(payload: &[u8]) -> Result<WsClose, DecodeError> {
        let mut r = Reader::new(payload, "websocket close");
        let code = r.u16()?;
        let reason = std::str::from_utf8(r.rest())
            .map_err(|_| DecodeError::Invalid("websocket close"))?
            .to_owned();
        Ok(WsClose { code, reason })
    }
}

/// The trailer fields of a response (ASGI's `http.response.trailers`), already validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trailers {
    pub fields: Vec<(Bytes, Bytes)>,
}

impl Trailers {
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        put_fields(out, &self.fields);
    }

    pub fn decode(payload: &Bytes) -> Result<Trailers, DecodeError> {
        let mut r = Reader::new(payload, "trailers");
        Ok(Trailers {
            fields: r.fields(payload)?,
        })
    }
}

/// Status and headers of a response, as the app gave them (already validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(Bytes, Bytes)>,
    /// The app's reason phrase (`"200 Custom"` → `Custom`); empty for none.
    pub reason: Bytes,
}

impl Head {
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.status.to_le_bytes());
        put_fields(out, &self.headers);
        put_bytes(out, &self.reason);
    }

    pub fn decode(payload: &Bytes) -> Result<Head, DecodeError> {
        let mut r = Reader::new(payload, "head");
        let status = r.u16()?;
        let headers = r.fields(payload)?;
        let reason = payload.slice_ref(r.bytes()?);
        Ok(Head {
            status,
            headers,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Request {
        Request {
            method: "POST".into(),
            target: Bytes::from_static(b"/a%20b?x=1"),
            protocol: "HTTP/1.1",
            https: true,
            remote_addr: "127.0.0.1".into(),
            remote_port: 4242,
            server_name: "example.com".into(),
            server_port: 443,
            headers: vec![(
                Bytes::from_static(b"host"),
                Bytes::from_static(b"example.com"),
            )],
            body: RequestBody::Inline(Bytes::from_static(b"hello")),
        }
    }

    #[test]
    fn request_round_trips_through_split_reads() {
        let mut out = BytesMut::new();
        sample().encode(&mut out, 7);
        let mut file = sample();
        file.body = RequestBody::File {
            path: "/tmp/x".into(),
            len: 1 << 33,
        };
        file.encode(&mut out, 8);
        let all = out.freeze();
        // Feed one byte at a time: the decoder must never yield a partial frame.
        let mut buf = BytesMut::new();
        let mut frames = vec![];
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(f) = Decoder::next(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].id, 7);
        assert_eq!(Request::decode(&frames[0].payload).unwrap(), sample());
        assert_eq!(Request::decode(&frames[1].payload).unwrap(), file);
    }

    #[test]
    fn head_round_trips() {
        let head = Head {
            status: 201,
            headers: vec![(
                Bytes::from_static(b"Content-Type"),
                Bytes::from_static(b"text/plain"),
            )],
            reason: Bytes::from_static(b"Made It"),
        };
        let mut payload = vec![];
        head.encode_payload(&mut payload);
        assert_eq!(Head::decode(&Bytes::from(payload)).unwrap(), head);
    }

    #[test]
    fn websocket_frames_round_trip() {
        let mut out = BytesMut::new();
        WsMessage::encode(&mut out, 3, true, "héllo".as_bytes());
        let mut worker = Vec::new();
        WsMessage::encode_vec(&mut worker, 4, false, &[0, 255]);
        WsClose {
            code: 1012,
            reason: "service restart".into(),
        }
        .encode_vec(&mut worker, 4);
        out.extend_from_slice(&worker);
        let mut frames = vec![];
        while let Some(f) = Decoder::next(&mut out).unwrap() {
            frames.push(f);
        }
        let m = WsMessage::decode(&frames[0].payload).unwrap();
        assert!(m.text && &m.data[..] == "héllo".as_bytes());
        let m = WsMessage::decode(&frames[1].payload).unwrap();
        assert!(!m.text && m.data[..] == [0, 255]);
        assert_eq!(frames[1].id, 4);
        let c = WsClose::decode(&frames[2].payload).unwrap();
        assert_eq!((c.code, c.reason.as_str()), (1012, "service restart"));
        // A text message that is not UTF-8 is refused, never passed on.
        assert!(WsMessage::decode(&Bytes::from_static(b"\x01\xff")).is_err());
    }

    #[test]
    fn corrupt_streams_are_errors_not_panics() {
        let mut buf = BytesMut::from(&[255u8, 255, 255, 255, 1, 0, 0, 0, 0][..]);
        assert!(matches!(
            Decoder::next(&mut buf),
            Err(DecodeError::TooLarge(_))
        ));
        let mut buf = BytesMut::from(&[5u8, 0, 0, 0, 99, 0, 0, 0, 0][..]);
        assert_eq!(Decoder::next(&mut buf), Err(DecodeError::UnknownKind(99)));
        assert!(Request::decode(&Bytes::from_static(b"\x05\x00\x00")).is_err());
    }
}
