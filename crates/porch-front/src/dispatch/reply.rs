//! The channel that carries one worker reply to the connection waiting for it.
//!
//! The link must read every frame a worker sends at once (a slow client never holds a
//! worker), so the channel cannot push back on it. It bounds memory instead: body bytes
//! beyond `per_response` for one reply, or beyond `total` across all replies in the
//! front, go to an unlinked temporary file and are read back in order, as nginx buffers
//! a proxied response to `proxy_temp_path`. A client that stops reading (an HTTP/2
//! stream with no flow-control credit, a socket nobody drains) then costs disk pages,
//! not the front's heap, until the send timeout closes its connection.
//!
//! Hand-written rather than `tokio::sync::mpsc` because the spill decision needs the
//! byte counts of what is queued, and the queue must interleave memory and file pieces.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::Reply;
use crate::memory_budget::MemoryBudget;

/// The front-wide budget of response bytes held in memory.
#[derive(Debug)]
pub struct ResponseMemory {
    per_response: usize,
    budget: MemoryBudget,
    spilled: AtomicU64,
    spill_dir: PathBuf,
}

impl ResponseMemory {
    pub fn new(per_response: usize, total: usize, spill_dir: PathBuf) -> Arc<Self> {
        Arc::new(ResponseMemory {
            per_response,
            budget: MemoryBudget::new(total),
            spilled: AtomicU64::new(0),
            spill_dir,
        })
    }

    /// Response bytes waiting in memory for their clients, across the front.
    pub fn in_memory(&self) -> usize {
        self.budget.used()
    }

    /// Response bytes ever written to temporary files (a counter).
    pub fn spilled(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }

    /// Reserves `len` bytes in memory if both bounds allow it.
    fn reserve(&self, held_here: usize, len: usize) -> bool {
        held_here + len <= self.per_response && self.budget.take(len)
    }

    fn release(&self, len: usize) {
        self.budget.give_back(len);
    }
}

/// A new channel for one reply.
pub fn reply_channel(memory: &Arc<ResponseMemory>) -> (ReplySender, ReplyReceiver) {
    let shared = Arc::new(Shared {
        memory: memory.clone(),
        state: Mutex::new(State::default()),
    });
    (
        ReplySender {
            shared: shared.clone(),
        },
        ReplyReceiver { shared },
    )
}

struct Shared {
    memory: Arc<ResponseMemory>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters and a queue behind: still
        // consistent enough to drain or drop.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Piece>,
    /// Body bytes of this reply held in memory.
    held: usize,
    spill: Option<Spill>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

enum Piece {
    Reply(Reply),
    /// A piece of this length, next in the spill file.
    Spilled(usize, Carried),
}

/// What a piece of bytes is: a body piece, or a WebSocket message (text or not). Both
/// count against the same bounds: a WebSocket client that stops reading is a slow reader.
#[derive(Debug, Clone, Copy)]
enum Carried {
    Body,
    Message { text: bool },
}

impl Carried {
    fn of(reply: Reply) -> Result<(Bytes, Carried), Reply> {
        match reply {
            Reply::Body(data) => Ok((data, Carried::Body)),
            Reply::Message(m) => Ok((m.data, Carried::Message { text: m.text })),
            other => Err(other),
        }
    }

    fn reply(self, data: Bytes) -> Reply {
        match self {
            Carried::Body => Reply::Body(data),
            Carried::Message { text } => Reply::Message(porch_ipc::WsMessage { text, data }),
        }
    }
}

struct Spill {
    file: File,
    written: u64,
    read: u64,
}

/// The link's end. Sending never waits.
pub struct ReplySender {
    shared: Arc<Shared>,
}

impl ReplySender {
    /// Queues a reply for the connection; false if nobody waits for it any more.
    pub fn send(&self, reply: Reply) -> bool {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return false;
        }
        let piece = match Carried::of(reply) {
            Ok((data, carried)) => self.data_piece(&mut state, data, carried),
            Err(other) => Piece::Reply(other),
        };
        state.queue.push_back(piece);
        if let Some(w) = state.waker.take() {
            w.wake();
        }
        true
    }

    /// True once the connection stopped waiting (the client left).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }

    fn data_piece(&self, state: &mut State, data: Bytes, carried: Carried) -> Piece {
        let memory = &self.shared.memory;
        // Once a reply spills, its later pieces follow it to the file: reading memory
        // first would not save a copy, and the file keeps memory flat for slow readers.
        if state.spill.is_none() && memory.reserve(state.held, data.len()) {
            state.held += data.len();
            return Piece::Reply(carried.reply(data));
        }
        match spill(state, &memory.spill_dir, &data) {
            Ok(()) => {
                memory
                    .spilled
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                Piece::Spilled(data.len(), carried)
            }
            Err(e) => {
                // No disk to spill to: keep the bytes in memory over the bound rather than
                // corrupt the response; the error log says why memory grew.
                tracing::error!("cannot write a response to a temporary file: {e}");
                memory.budget.take_over_bound(data.len());
                state.held += data.len();
                Piece::Reply(carried.reply(data))
            }
        }
    }
}

fn spill(state: &mut State, dir: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    if state.spill.is_none() {
        state.spill = Some(Spill {
            file: tempfile::tempfile_in(dir)?,
            written: 0,
            read: 0,
        });
    }
    let spill = state.spill.as_mut().expect("just set");
    spill.file.write_all(data)?;
    spill.written += data.len() as u64;
    Ok(())
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_gone = true;
        if let Some(w) = state.waker.take() {
            w.wake();
        }
    }
}

/// The connection's end.
pub struct ReplyReceiver {
    shared: Arc<Shared>,
}

impl ReplyReceiver {
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Reply>> {
        let mut state = self.shared.lock();
        match self.take(&mut state) {
            Some(r) => Poll::Ready(Some(r)),
            None if state.sender_gone => Poll::Ready(None),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    pub async fn recv(&mut self) -> Option<Reply> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next reply if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Reply> {
        let mut state = self.shared.lock();
        self.take(&mut state)
    }

    fn take(&self, state: &mut State) -> Option<Reply> {
        match state.queue.pop_front()? {
            Piece::Reply(reply) => match Carried::of(reply) {
                Ok((data, carried)) => {
                    state.held -= data.len();
                    self.shared.memory.release(data.len());
                    Some(carried.reply(data))
                }
                Err(other) => Some(other),
            },
            Piece::Spilled(len, carried) => Some(read_back(state, len, carried)),
        }
    }
}

/// The next spilled piece; a file that cannot be read back aborts the response (the
/// client sees a cut body, never wrong bytes).
fn read_back(state: &mut State, len: usize, carried: Carried) -> Reply {
    let spill = state.spill.as_mut().expect("spilled pieces have a file");
    let mut buf = vec![0; len];
    match spill.file.read_exact_at(&mut buf, spill.read) {
        Ok(()) => {
            spill.read += len as u64;
            if spill.read == spill.written {
                // Everything written was read back: start over at the front of the file
                // so a long stream does not grow it without end.
                let _ = spill.file.set_len(0);
                let _ = std::io::Seek::rewind(&mut spill.file);
                spill.read = 0;
                spill.written = 0;
            }
            carried.reply(Bytes::from(buf))
        }
        Err(e) => {
            tracing::error!("cannot read a response back from its temporary file: {e}");
            state.queue.clear();
            state.spill = None;
            Reply::End(false)
        }
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        state.queue.clear();
        self.shared.memory.release(state.held);
        state.held = 0;
        state.spill = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: Option<Reply>) -> Vec<u8> {
        match r {
            Some(Reply::Body(b)) => b.to_vec(),
            other => panic!("expected a body piece, got {other:?}"),
        }
    }

    #[test]
    fn pieces_past_the_bound_go_to_a_file_and_come_back_in_order() {
        let memory = ResponseMemory::new(10, 1 << 20, std::env::temp_dir());
        let (tx, mut rx) = reply_channel(&memory);
        for piece in [&b"aaaa"[..], b"bbbb", b"cccc", b"dd"] {
            assert!(tx.send(Reply::Body(Bytes::copy_from_slice(piece))));
        }
        assert_eq!(memory.in_memory(), 8, "the third piece would pass 10 bytes");
        assert_eq!(memory.spilled(), 6);
        assert_eq!(body(rx.try_recv()), b"aaaa");
        assert_eq!(body(rx.try_recv()), b"bbbb");
        assert_eq!(memory.in_memory(), 0);
        // Memory is free again, but the later pieces stay behind the spilled ones.
        assert!(tx.send(Reply::Body(Bytes::from_static(b"e"))));
        assert_eq!(body(rx.try_recv()), b"cccc");
        assert_eq!(body(rx.try_recv()), b"dd");
        assert_eq!(body(rx.try_recv()), b"e");
        assert!(tx.send(Reply::End(true)));
        drop(tx);
        assert!(matches!(rx.try_recv(), Some(Reply::End(true))));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn websocket_messages_spill_like_body_pieces_and_keep_their_kind() {
        let memory = ResponseMemory::new(4, 1 << 20, std::env::temp_dir());
        let (tx, mut rx) = reply_channel(&memory);
        let message = |text, data: &'static [u8]| {
            Reply::Message(porch_ipc::WsMessage {
                text,
                data: Bytes::from_static(data),
            })
        };
        assert!(tx.send(message(true, b"abc")));
        assert!(tx.send(message(false, b"\x00\x01")));
        assert!(tx.send(Reply::Close(porch_ipc::WsClose {
            code: 1000,
            reason: String::new(),
        })));
        assert_eq!(memory.spilled(), 2, "the second message passes 4 bytes");
        for (text, data) in [(true, &b"abc"[..]), (false, b"\x00\x01")] {
            match rx.try_recv() {
                Some(Reply::Message(m)) => assert_eq!((m.text, &m.data[..]), (text, data)),
                other => panic!("expected a message, got {other:?}"),
            }
        }
        assert!(matches!(rx.try_recv(), Some(Reply::Close(c)) if c.code == 1000));
        assert_eq!(memory.in_memory(), 0);
    }

    #[test]
    fn the_front_wide_bound_holds_across_replies() {
        let memory = ResponseMemory::new(100, 10, std::env::temp_dir());
        let (a, _ra) = reply_channel(&memory);
        let (b, mut rb) = reply_channel(&memory);
        assert!(a.send(Reply::Body(Bytes::from(vec![1; 8]))));
        assert!(b.send(Reply::Body(Bytes::from(vec![2; 8]))));
        assert_eq!(memory.in_memory(), 8);
        assert_eq!(memory.spilled(), 8);
        assert_eq!(body(rb.try_recv()), vec![2; 8]);
    }

    #[test]
    fn a_receiver_that_leaves_frees_its_memory_and_refuses_more() {
        let memory = ResponseMemory::new(100, 100, std::env::temp_dir());
        let (tx, rx) = reply_channel(&memory);
        assert!(tx.send(Reply::Body(Bytes::from(vec![0; 50]))));
        assert_eq!(memory.in_memory(), 50);
        drop(rx);
        assert_eq!(memory.in_memory(), 0);
        assert!(tx.is_closed());
        assert!(!tx.send(Reply::Body(Bytes::from(vec![0; 50]))));
        assert_eq!(memory.in_memory(), 0);
    }
}
