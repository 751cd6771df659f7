//! Frames on their way to a worker, written as its socket takes them. Small frames are
//! encoded into one buffer; a request's body is queued by reference and leaves with
//! `writev`, so a 1 MiB upload is not copied on its way from hyper to the socket.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use porch_ipc as ipc;
use tokio::net::UnixStream;

/// Bodies shorter than this are copied into the frame buffer: one write beats a
/// scatter list for them.
const BY_REFERENCE: usize = 16 * 1024;
/// Pieces gathered into one `writev`.
const MAX_SLICES: usize = 64;

pub struct Outbox {
    /// Written before `tail`, in order.
    pieces: VecDeque<Bytes>,
    pieces_len: usize,
    /// Frames encoded after the last queued piece.
    tail: BytesMut,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox {
            pieces: VecDeque::new(),
            pieces_len: 0,
            tail: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Bytes not yet taken by the socket.
    pub fn len(&self) -> usize {
        self.pieces_len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where a small frame is encoded (`ipc::encode` and the frames' own encoders).
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues a request frame; a large body goes by reference.
    pub fn push_request(&mut self, request: &ipc::Request, id: u32) {
        let Some(body) = request.encode_head(&mut self.tail, id) else {
            return;
        };
        if body.len() < BY_REFERENCE {
            self.tail.extend_from_slice(body);
            return;
        }
        let head = self.tail.split().freeze();
        self.push_piece(head);
        self.push_piece(body.clone());
    }

    fn push_piece(&mut self, piece: Bytes) {
        self.pieces_len += piece.len();
        self.pieces.push_back(piece);
    }

    /// Writes as much as the socket takes now; the rest waits for it to drain.
    pub fn write_to(&mut self, conn: &UnixStream) -> std::io::Result<()> {
        while !self.is_empty() {
            let written = if self.pieces.is_empty() {
                conn.try_write(&self.tail)
            } else {
                let mut slices = Vec::with_capacity(MAX_SLICES.min(self.pieces.len() + 1));
                slices.extend(
                    self.pieces
                        .iter()
                        .take(MAX_SLICES - 1)
                        .map(|p| IoSlice::new(p)),
                );
                if self.pieces.len() < MAX_SLICES && !self.tail.is_empty() {
                    slices.push(IoSlice::new(&self.tail));
                }
                conn.try_write_vectored(&slices)
            };
            match written {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else {
                self.tail.advance(n);
                return;
            };
            let step = n.min(front.len());
            front.advance(step);
            self.pieces_len -= step;
            n -= step;
            if front.is_empty() {
                self.pieces.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn request(body: Bytes) -> ipc::Request {
        ipc::Request {
            method: "POST".into(),
            target: Bytes::from_static(b"/up"),
            protocol: "HTTP/1.1",
            https: false,
            remote_addr: "127.0.0.1".into(),
            remote_port: 1,
            server_name: "localhost".into(),
            server_port: 8000,
            headers: vec![],
            body: ipc::RequestBody::Inline(body),
        }
    }

    /// Frames queued by reference and by copy arrive whole and in order, through a
    /// socket too small to take them at once.
    #[tokio::test]
    async fn frames_arrive_in_order_through_partial_writes() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let a = UnixStream::from_std(a).unwrap();
        let big: Bytes = (0..3 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let small = Bytes::from_static(b"tiny body");
        let mut out = Outbox::new();
        out.push_request(&request(big.clone()), 1);
        ipc::encode(out.buf(), ipc::Kind::Cancel, 9, |_| {});
        out.push_request(&request(small.clone()), 2);
        out.push_request(&request(big.clone()), 3);
        let total = out.len();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut b = b;
            let mut chunk = vec![0u8; 100_000];
            while all.len() < total {
                let n = b.read(&mut chunk).unwrap();
                assert!(n > 0);
                all.extend_from_slice(&chunk[..n]);
            }
            all
        });
        while !out.is_empty() {
            a.writable().await.unwrap();
            out.write_to(&a).unwrap();
        }
        let mut got = BytesMut::from(&reader.join().unwrap()[..]);
        let mut frames = vec![];
        while let Some(f) = ipc::Decoder::next(&mut got).unwrap() {
            frames.push(f);
        }
        assert!(got.is_empty());
        let ids: Vec<u32> = frames.iter().map(|f| f.id).collect();
        assert_eq!(ids, [1, 9, 2, 3]);
        for (f, want) in [(&frames[0], &big), (&frames[2], &small), (&frames[3], &big)] {
            let req = ipc::Request::decode(&f.payload).unwrap();
            assert_eq!(req.body, ipc::RequestBody::Inline(want.clone()));
        }
    }
}
