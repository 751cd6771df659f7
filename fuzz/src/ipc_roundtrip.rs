//! Requests and response heads built from the input are encoded into one stream, read
//! back in arbitrary pieces and must decode to exactly what was encoded.

use bytes::{Bytes, BytesMut};
use arbitrary::{Result, Unstructured};
use porch_ipc::{self as ipc, Decoder, Head, Kind, Request, RequestBody};

const PROTOCOLS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2"];

fn bytes(u: &mut Unstructured) -> Result<Bytes> {
    Ok(Bytes::from(u.arbitrary::<Vec<u8>>()?))
}

fn headers(u: &mut Unstructured) -> Result<Vec<(Bytes, Bytes)>> {
    let n = u.int_in_range(0..=8)?;
    (0..n).map(|_| Ok((bytes(u)?, bytes(u)?))).collect()
}

fn request(u: &mut Unstructured) -> Result<Request> {
    Ok(Request {
        method: u.arbitrary()?,
        target: bytes(u)?,
        protocol: *u.choose(&PROTOCOLS)?,
        https: u.arbitrary()?,
        remote_addr: u.arbitrary()?,
        remote_port: u.arbitrary()?,
        server_name: u.arbitrary()?,
        server_port: u.arbitrary()?,
        headers: headers(u)?,
        body: if u.arbitrary()? {
            RequestBody::File {
                path: u.arbitrary()?,
                len: u.arbitrary()?,
            }
        } else {
            RequestBody::Inline(bytes(u)?)
        },
    })
}

#[derive(Debug, PartialEq)]
enum Sent {
    Request(u32, Request),
    Head(u32, Head),
    Other(Kind, u32, Vec<u8>),
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut sent = Vec::new();
    let mut stream = BytesMut::new();
    let Ok(count) = u.int_in_range(1..=6) else {
        return;
    };
    for _ in 0..count {
        let Ok(id) = u.arbitrary::<u32>() else { break };
        let Ok(which) = u.int_in_range(0..=2u8) else { break };
        match which {
            0 => {
                let Ok(req) = request(&mut u) else { break };
                req.encode(&mut stream, id);
                sent.push(Sent::Request(id, req));
            }
            1 => {
                let (Ok(status), Ok(hs)) = (u.arbitrary::<u16>(), headers(&mut u)) else {
                    break;
                };
                let reason = Bytes::from(u.arbitrary::<Vec<u8>>().unwrap_or_default());
                let head = Head { status, headers: hs, reason };
                let mut payload = Vec::new();
                head.encode_payload(&mut payload);
                let mut framed = Vec::new();
                ipc::encode_vec(&mut framed, Kind::Head, id, &payload);
                // Both encoders frame the same payload identically.
                let mut other = BytesMut::new();
                ipc::encode(&mut other, Kind::Head, id, |o| o.extend_from_slice(&payload));
                assert_eq!(&framed[..], &other[..]);
                stream.extend_from_slice(&framed);
                sent.push(Sent::Head(id, head));
            }
            _ => {
                let kinds = [
                    Kind::DumpStack,
                    Kind::Stop,
                    Kind::Cancel,
                    Kind::Disconnect,
                    Kind::Ready,
                    Kind::Body,
                    Kind::End,
                    Kind::Stack,
                ];
                let (Ok(kind), Ok(payload)) = (u.choose(&kinds), u.arbitrary::<Vec<u8>>()) else {
                    break;
                };
                ipc::encode(&mut stream, *kind, id, |o| o.extend_from_slice(&payload));
                sent.push(Sent::Other(*kind, id, payload));
            }
        }
    }
    // Whatever input is left decides the sizes of the reads.
    let cuts: Vec<u8> = u.take_rest().to_vec();
    let stream = stream.freeze();

    let mut got = Vec::new();
    let mut buf = BytesMut::new();
    let (mut fed, mut i) = (0, 0);
    while fed < stream.len() {
        let n = cuts.get(i).map_or(stream.len(), |&c| c as usize + 1);
        i += 1;
        let end = (fed + n).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        while let Some(f) = Decoder::next(&mut buf).expect("a stream porch wrote decodes") {
            got.push(match f.kind {
                Kind::Request => Sent::Request(f.id, Request::decode(&f.payload).expect("request")),
                Kind::Head => Sent::Head(f.id, Head::decode(&f.payload).expect("head")),
                k => Sent::Other(k, f.id, f.payload.to_vec()),
            });
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    assert_eq!(got, sent);
}
