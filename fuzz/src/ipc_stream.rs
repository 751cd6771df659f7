//! Arbitrary bytes as a front-to-worker stream: `Decoder::next`, then `Request::decode`,
//! `Head::decode` and the WebSocket frames' decoders on every frame's payload.
//!
//! Never panics; the frames and the final error do not depend on how the stream was cut
//! into reads; whatever decodes re-encodes to something that decodes to the same value.

use bytes::{Bytes, BytesMut};
use porch_ipc::{self as ipc, DecodeError, Decoder, Frame, Head, Kind, Request};

/// Frames and the error that stopped decoding, feeding `stream` in reads of the sizes
/// `cuts` gives (cycled), or all at once when `cuts` is empty.
fn decode_all(stream: &[u8], cuts: &[u8]) -> (Vec<Frame>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    while fed < stream.len() {
        let n = if cuts.is_empty() {
            stream.len()
        } else {
            (cuts[i % cuts.len()] as usize % 17) + 1
        };
        i += 1;
        let end = (fed + n).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            match Decoder::next(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn check_payload(payload: &Bytes) {
    if let Ok(req) = Request::decode(payload) {
        let mut out = BytesMut::new();
        req.encode(&mut out, 42);
        let frame = Decoder::next(&mut out)
            .expect("an encoded request decodes")
            .expect("an encoded request is a whole frame");
        assert!(out.is_empty(), "encoding left {} stray bytes", out.len());
        assert_eq!((frame.kind, frame.id), (Kind::Request, 42));
        assert_eq!(Request::decode(&frame.payload).as_ref(), Ok(&req));
    }
    if let Ok(head) = Head::decode(payload) {
        let mut out = Vec::new();
        head.encode_payload(&mut out);
        assert_eq!(Head::decode(&Bytes::from(out)).as_ref(), Ok(&head));
    }
    if let Ok(m) = ipc::WsMessage::decode(payload) {
        assert!(!m.text || std::str::from_utf8(&m.data).is_ok(), "text is UTF-8");
        let mut out = Vec::new();
        ipc::WsMessage::encode_vec(&mut out, 7, m.text, &m.data);
        let frame = Decoder::next(&mut BytesMut::from(&out[..]))
            .expect("an encoded message decodes")
            .expect("a whole frame");
        assert_eq!(ipc::WsMessage::decode(&frame.payload).as_ref(), Ok(&m));
    }
    if let Ok(c) = ipc::WsClose::decode(payload) {
        let mut out = Vec::new();
        c.encode_vec(&mut out, 7);
        let frame = Decoder::next(&mut BytesMut::from(&out[..]))
            .expect("an encoded close decodes")
            .expect("a whole frame");
        assert_eq!(ipc::WsClose::decode(&frame.payload).as_ref(), Ok(&c));
    }
}

pub fn run(data: &[u8]) {
    // The first byte says how many of the next bytes describe the read sizes.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize % 8).min(rest.len());
    let (cuts, stream) = rest.split_at(n);

    let whole = decode_all(stream, &[]);
    let split = decode_all(stream, cuts);
    assert_eq!(whole, split, "decoding depends on how the stream was read");
    for f in &whole.0 {
        assert!(f.payload.len() + ipc::HEADER_LEN <= ipc::MAX_FRAME + 4);
        check_payload(&f.payload);
    }
    // A payload on its own, not framed.
    check_payload(&Bytes::copy_from_slice(stream));
}
