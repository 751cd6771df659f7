//! Requests read from the front and not yet started.
//!
//! The front sends requests ahead to a busy worker only when every worker is busy, and
//! takes back the ones not started as soon as another worker is free (SIGUSR2): so a
//! request never waits behind a long one while a worker idles. The inbox is what makes
//! taking back possible while the Python thread is deep in a view: the signal thread
//! empties it under the same lock the Python thread pops from, so every request is
//! either started here or given back, never both.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex, MutexGuard};

use bytes::BytesMut;
use porch_ipc::{self as ipc, Decoder, Kind};

pub type Job = (u32, ipc::Request);

#[derive(Default)]
pub struct Inbox {
    state: Mutex<State>,
    arrived: Condvar,
}

#[derive(Default)]
struct State {
    /// Bytes read from the socket that do not make a whole frame yet.
    buf: BytesMut,
    backlog: VecDeque<Job>,
    /// A thread is in a blocking read of the socket: only it may read now.
    reading: bool,
    /// The front closed the socket or said stop: no more requests will come.
    closed: bool,
    /// Threads blocked in [`Inbox::wait_next`]: waking them costs a system call, spent
    /// only when one waits.
    sleepers: usize,
    /// `Cancel`, `Disconnect` and WebSocket frames for an ASGI worker's running requests.
    controls: Vec<ipc::Frame>,
}

/// What a thread that wants a request gets. (Not boxed: one per request, moved once.)
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// A request, and whether more wait behind it.
    Job(Job, bool),
    /// Nothing waits: the caller reads the socket ([`Inbox::read_from`]).
    Read,
    Closed,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For the one thread that both reads the socket and runs requests.
    pub fn next_or_read(&self) -> Next {
        let mut st = self.lock();
        if let Some(job) = st.backlog.pop_front() {
            let more = !st.backlog.is_empty();
            return Next::Job(job, more);
        }
        if st.closed {
            return Next::Closed;
        }
        st.reading = true;
        Next::Read
    }

    /// For threads that only run requests: waits for one; `None` once closed and empty.
    pub fn wait_next(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.backlog.pop_front() {
                return Some(job);
            }
            if st.closed {
                return None;
            }
            st.sleepers += 1;
            st = self.arrived.wait(st).unwrap_or_else(|e| e.into_inner());
            st.sleepers -= 1;
        }
    }

    /// Reads from the socket, blocking, and files what arrived. Only one thread reads
    /// at a time; a thread that reads without [`Inbox::next_or_read`] marks itself here.
    /// Returns `false` once the front closed the socket.
    pub fn read_from(&self, stream: &UnixStream) -> bool {
        // The buffer leaves the lock while the read waits: `give_back` does not touch it
        // while a thread reads, and the bytes land in it without a copy.
        let mut buf = {
            let mut st = self.lock();
            st.reading = true;
            std::mem::take(&mut st.buf)
        };
        buf.reserve(64 * 1024);
        let read = read_into_spare(stream, &mut buf);
        let mut st = self.lock();
        st.reading = false;
        st.buf = buf;
        match read {
            Some(0) | None => st.closed = true,
            Some(_) => st.file_frames(),
        }
        let open = !st.closed;
        let wake = st.sleepers > 0;
        drop(st);
        if wake {
            self.arrived.notify_all();
        }
        open
    }

    /// For an event loop that reads when the socket is readable: reads what is there
    /// without waiting, under the lock (so [`Inbox::give_back`] never reads at the same
    /// time), and files it.
    pub fn read_now(&self, stream: &UnixStream) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match recv_now(stream, &mut chunk) {
                Some(0) => {
                    st.closed = true;
                    break;
                }
                Some(n) => {
                    st.buf.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        break;
                    }
                }
                None => {
                    let e = std::io::Error::last_os_error().kind();
                    if e == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    if e != std::io::ErrorKind::WouldBlock {
                        st.closed = true;
                    }
                    break;
                }
            }
        }
        st.file_frames();
    }

    /// Up to `n` requests, in the order sent, without reading; and the control frames
    /// that arrived. `closed`: no request will come any more (the socket ended).
    pub fn take(&self, n: usize) -> (Vec<Job>, Vec<ipc::Frame>, bool) {
        let mut st = self.lock();
        let n = n.min(st.backlog.len());
        let jobs = st.backlog.drain(..n).collect();
        let controls = std::mem::take(&mut st.controls);
        (jobs, controls, st.closed)
    }

    /// Drops request `id` if it has not started: the front answered it already.
    pub fn discard(&self, id: u32) -> bool {
        let mut st = self.lock();
        let before = st.backlog.len();
        st.backlog.retain(|(j, _)| *j != id);
        st.backlog.len() != before
    }

    /// Takes back every request not started (the answer to SIGUSR2). What the front sent
    /// and no thread has read yet is read first, unless a thread is reading right now (it
    /// then has everything sent so far, or is waiting for more: nothing is behind it).
    pub fn give_back(&self, stream: &UnixStream) -> Vec<u32> {
        let mut st = self.lock();
        if !st.reading && !st.closed {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match recv_now(stream, &mut chunk) {
                    Some(0) => {
                        st.closed = true;
                        break;
                    }
                    Some(n) => st.buf.extend_from_slice(&chunk[..n]),
                    None => break,
                }
            }
            st.file_frames();
        }
        st.backlog.drain(..).map(|(id, _)| id).collect()
    }
}

impl State {
    /// Moves every whole request frame from `buf` to the backlog; a stop frame or a
    /// corrupt stream closes the inbox.
    fn file_frames(&mut self) {
        loop {
            let frame = match Decoder::next(&mut self.buf) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("porch worker: corrupt frame from the front: {e}");
                    self.closed = true;
                    return;
                }
            };
            match frame.kind {
                Kind::Request => match ipc::Request::decode(&frame.payload) {
                    Ok(req) => self.backlog.push_back((frame.id, req)),
                    Err(e) => {
                        eprintln!("porch worker: corrupt request frame: {e}");
                        self.closed = true;
                        return;
                    }
                },
                Kind::Stop => {
                    self.closed = true;
                    return;
                }
                // Stacks are asked for by signal (see `worker::on_signals`).
                Kind::DumpStack => {}
                Kind::Cancel | Kind::Disconnect | Kind::WsMessage | Kind::WsClose => {
                    self.controls.push(frame)
                }
                other => eprintln!("porch worker: unexpected {other:?} frame"),
            }
        }
    }
}

/// One blocking read appended to `buf`'s spare capacity; `None` on an error.
fn read_into_spare(stream: &UnixStream, buf: &mut BytesMut) -> Option<usize> {
    loop {
        let spare = buf.spare_capacity_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into memory `buf` owns and
        // reports how many; only those are then marked initialised.
        let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        match usize::try_from(n) {
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Some(n);
            }
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            Err(_) => return None,
        }
    }
}

/// One read that does not wait: `None` when nothing is there (or on an error, which the
/// reading thread will meet too).
fn recv_now(stream: &UnixStream, chunk: &mut [u8]) -> Option<usize> {
    // SAFETY: recv(2) into a buffer we own, with its length; MSG_DONTWAIT makes this one
    // call non-blocking without changing the descriptor the other thread reads blocking.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            chunk.as_mut_ptr().cast(),
            chunk.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn request_frame(id: u32) -> Vec<u8> {
        let req = ipc::Request {
            method: "GET".into(),
            target: bytes::Bytes::from_static(b"/"),
            protocol: "HTTP/1.1",
            https: false,
            remote_addr: String::new(),
            remote_port: 0,
            server_name: "localhost".into(),
            server_port: 80,
            headers: vec![],
            body: ipc::RequestBody::Inline(bytes::Bytes::new()),
        };
        let mut out = BytesMut::new();
        req.encode(&mut out, id);
        out.to_vec()
    }

    #[test]
    fn what_no_thread_started_is_given_back_including_unread_requests() {
        let (front, worker) = UnixStream::pair().unwrap();
        let inbox = Inbox::default();
        (&front).write_all(&request_frame(1)).unwrap();
        assert!(inbox.read_from(&worker));
        // Request 1 starts; 2 and 3 arrive while it runs, unread.
        assert!(matches!(inbox.next_or_read(), Next::Job((1, _), false)));
        (&front).write_all(&request_frame(2)).unwrap();
        (&front).write_all(&request_frame(3)).unwrap();
        assert_eq!(inbox.give_back(&worker), vec![2, 3]);
        // Nothing is left to run twice, and nothing more to give back.
        assert!(matches!(inbox.next_or_read(), Next::Read));
        assert_eq!(inbox.give_back(&worker), Vec::<u32>::new());
    }

    #[test]
    fn a_thread_reading_keeps_the_socket_to_itself() {
        let (front, worker) = UnixStream::pair().unwrap();
        let inbox = Inbox::default();
        assert!(matches!(inbox.next_or_read(), Next::Read)); // now "reading"
        (&front).write_all(&request_frame(7)).unwrap();
        assert_eq!(inbox.give_back(&worker), Vec::<u32>::new());
        assert!(inbox.read_from(&worker));
        assert!(matches!(inbox.next_or_read(), Next::Job((7, _), false)));
    }

    #[test]
    fn an_event_loop_reads_without_waiting_and_takes_what_it_has_room_for() {
        let (front, worker) = UnixStream::pair().unwrap();
        let inbox = Inbox::default();
        inbox.read_now(&worker); // nothing there: no wait, nothing taken
        assert!(matches!(inbox.take(4), (j, c, false) if j.is_empty() && c.is_empty()));
        for id in 1..=3 {
            (&front).write_all(&request_frame(id)).unwrap();
        }
        let mut cancel = Vec::new();
        ipc::encode_vec(&mut cancel, Kind::Cancel, 1, &[]);
        ipc::encode_vec(&mut cancel, Kind::Disconnect, 2, &[]);
        (&front).write_all(&cancel).unwrap();
        inbox.read_now(&worker);
        let (jobs, controls, closed) = inbox.take(2);
        assert_eq!(jobs.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2]);
        let controls: Vec<_> = controls.iter().map(|f| (f.kind, f.id)).collect();
        assert_eq!(controls, [(Kind::Cancel, 1), (Kind::Disconnect, 2)]);
        assert!(!closed);
        // The third waits unstarted: the front may take it back, or it may be dropped.
        assert!(inbox.discard(3));
        assert!(!inbox.discard(3));
        drop(front);
        inbox.read_now(&worker);
        assert!(matches!(inbox.take(4), (j, _, true) if j.is_empty()));
    }

    #[test]
    fn a_closed_socket_or_a_stop_frame_closes_the_inbox() {
        let (front, worker) = UnixStream::pair().unwrap();
        let inbox = Inbox::default();
        let mut stop = Vec::new();
        ipc::encode_vec(&mut stop, Kind::Stop, 0, &[]);
        (&front).write_all(&request_frame(1)).unwrap();
        (&front).write_all(&stop).unwrap();
        assert!(!inbox.read_from(&worker));
        assert!(matches!(inbox.next_or_read(), Next::Job((1, _), false)));
        assert!(matches!(inbox.next_or_read(), Next::Closed));
        assert!(inbox.wait_next().is_none());
        drop(front);
    }
}
