//! Response output: frames for one request, buffered so a small response leaves the
//! worker in a single write, and `wsgi.file_wrapper` files sent without a Python loop.

use std::fs::File;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::{intern, Py};

use porch_ipc::{self as ipc, Kind};

/// Flush buffered body frames once this much is pending.
const FLUSH_AT: usize = 256 * 1024;

/// The worker's end of the socket to the front, shared by its threads.
pub struct Sink {
    stream: Mutex<UnixStream>,
    /// Release the GIL while writing, so other Python threads of this worker run.
    detach: bool,
    /// Completed responses waiting to leave together (see [`Sink::hold`]).
    held: Mutex<Vec<u8>>,
    holding: std::sync::atomic::AtomicBool,
}

/// Held responses are written out once they reach this size.
const HOLD_MAX: usize = 256 * 1024;

impl Sink {
    pub fn new(stream: UnixStream, detach: bool) -> Sink {
        Sink {
            stream: Mutex::new(stream),
            detach,
            held: Mutex::new(Vec::new()),
            holding: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// While more requests wait in this worker, complete responses are kept and written
    /// together with the next ones: one write and one wake-up of the front for a batch.
    pub fn hold(&self, on: bool) {
        self.holding.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes whatever completed responses are held.
    pub fn flush_held(&self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.is_empty() {
            self.write_raw(&held);
            held.clear();
        }
    }

    /// Writes all of `buf`, waiting for room when the socket is full. The descriptor may
    /// be non-blocking: an event loop watching the socket (uvloop does) sets the flag on
    /// the open file, which every duplicate of it shares. A failed write means the front
    /// is gone, which the worker notices as end of stream.
    fn write_raw(&self, mut buf: &[u8]) {
        let mut s = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        while !buf.is_empty() {
            match s.write(buf) {
                Ok(0) => return,
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_writable(&s),
                Err(_) => return,
            }
        }
    }

    /// Writes whole frames now (after any held ones, keeping their order); a failed
    /// write means the front is gone, which the worker notices as end of stream and exits.
    pub fn write(&self, py: Python<'_>, buf: &[u8]) {
        let write = || {
            self.flush_held();
            self.write_raw(buf);
        };
        if self.detach {
            py.detach(write)
        } else {
            write()
        }
    }

    /// Writes the last frames of a response: held while [`Sink::hold`] is on.
    pub fn write_end(&self, py: Python<'_>, buf: &[u8]) {
        if self.holding.load(std::sync::atomic::Ordering::Relaxed) {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.extend_from_slice(buf);
            if held.len() < HOLD_MAX {
                return;
            }
            drop(held);
            self.flush_held();
            return;
        }
        self.write(py, buf)
    }

    /// Up to `len` bytes of `file` from `offset`, as body frames of request `id`, read in
    /// chunks of at most [`FLUSH_AT`] (for threads that do not hold the GIL: WSGI's
    /// `wsgi.file_wrapper` and ASGI's `http.response.pathsend`).
    pub fn send_file(
        &self,
        id: u32,
        file: &File,
        mut offset: u64,
        mut len: u64,
    ) -> std::io::Result<()> {
        let mut chunk = vec![0u8; FLUSH_AT.min(len as usize).max(1)];
        let mut frame = Vec::with_capacity(chunk.len() + ipc::HEADER_LEN + 4);
        while len > 0 {
            let want = chunk.len().min(len as usize);
            let n = file.read_at(&mut chunk[..want], offset)?;
            if n == 0 {
                break;
            }
            frame.clear();
            ipc::encode_vec(&mut frame, Kind::Body, id, &chunk[..n]);
            self.write_detached(&frame);
            offset += n as u64;
            len -= n as u64;
        }
        Ok(())
    }

    /// For threads that do not hold the GIL.
    pub fn write_detached(&self, buf: &[u8]) {
        self.flush_held();
        self.write_raw(buf);
    }
}

/// Blocks until the socket takes more bytes (or fails, which the next write reports).
fn wait_writable(s: &UnixStream) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd we own, for its length of 1; the descriptor stays open
    // for the call (the stream is borrowed).
    unsafe { libc::poll(&mut pfd, 1, -1) };
}

/// The frames of one response, in the order the front needs them.
pub struct Output {
    id: u32,
    sink: Arc<Sink>,
    buf: Vec<u8>,
    head: Option<ipc::Head>,
    committed: bool,
    content_length: Option<u64>,
    body_len: u64,
}

impl Output {
    pub fn new(id: u32, sink: Arc<Sink>) -> Output {
        Output {
            id,
            sink,
            buf: Vec::with_capacity(4096),
            head: None,
            committed: false,
            content_length: None,
            body_len: 0,
        }
    }

    pub fn has_head(&self) -> bool {
        self.committed || self.head.is_some()
    }

    /// Once the head is on its way it can no longer be replaced (PEP 3333's "sent").
    pub fn head_sent(&self) -> bool {
        self.committed
    }

    pub fn set_head(&mut self, head: ipc::Head) {
        debug_assert!(!self.committed);
        self.content_length = head
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse().ok());
        self.head = Some(head);
    }

    fn commit(&mut self) {
        if let Some(head) = self.head.take() {
            let mut payload = Vec::with_capacity(256);
            head.encode_payload(&mut payload);
            ipc::encode_vec(&mut self.buf, Kind::Head, self.id, &payload);
            self.committed = true;
        }
    }

    pub fn body(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.body_len += data.len() as u64;
        self.commit();
        ipc::encode_vec(&mut self.buf, Kind::Body, self.id, data);
        if self.buf.len() >= FLUSH_AT {
            self.flush(py)?;
        }
        Ok(())
    }

    pub fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        self.commit();
        if !self.buf.is_empty() {
            self.sink.write(py, &self.buf);
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends a file's bytes from its current offset, read in Rust without the GIL.
    pub fn file(&mut self, py: Python<'_>, (file, offset): (File, u64)) -> PyResult<()> {
        self.flush(py)?;
        let size = file.metadata()?.len();
        let mut left = size.saturating_sub(offset);
        if let Some(cl) = self.content_length {
            left = left.min(cl);
        }
        let (id, sink) = (self.id, self.sink.clone());
        py.detach(|| sink.send_file(id, &file, offset, left))?;
        Ok(())
    }

    /// The response is complete.
    pub fn finish(&mut self, py: Python<'_>) -> bool {
        self.commit();
        super::end_frame(&mut self.buf, self.id, true);
        self.end(py);
        true
    }

    fn end(&mut self, py: Python<'_>) {
        self.sink.write_end(py, &self.buf);
        self.buf.clear();
    }

    /// The app failed: a 500 if nothing was sent yet, else an abort the client can see.
    pub fn fail(&mut self, py: Python<'_>) -> bool {
        if self.committed {
            super::end_frame(&mut self.buf, self.id, false);
            self.end(py);
            return false;
        }
        self.buf.clear();
        self.head = None;
        self.committed = true;
        crate::head::encode_plain(&mut self.buf, self.id, 500, b"Internal Server Error\n");
        self.end(py);
        true
    }
}

/// `wsgi.file_wrapper`: files with a descriptor are sent by porch directly; other
/// file-likes are iterated in blocks as PEP 3333 describes.
#[pyclass(module = "porch")]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1(intern!(py, "read"), (self.blksize,))?;
        Ok((data.len()? > 0).then_some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(close) = self.filelike.bind(py).getattr_opt(intern!(py, "close"))? {
            close.call0()?;
        }
        Ok(())
    }
}

impl FileWrapper {
    /// A duplicate of the file's descriptor and its current offset, when it has one.
    pub fn native_file(&self, py: Python<'_>) -> PyResult<Option<(File, u64)>> {
        let f = self.filelike.bind(py);
        let Some(fileno) = f.getattr_opt(intern!(py, "fileno"))? else {
            return Ok(None);
        };
        let Ok(fd) = fileno.call0().and_then(|n| n.extract::<i32>()) else {
            return Ok(None);
        };
        let offset: u64 = match f.getattr_opt(intern!(py, "tell"))? {
            Some(tell) => tell.call0()?.extract()?,
            None => 0,
        };
        // SAFETY: `fd` came from the live Python file object's fileno() and we hold the
        // GIL, so no Python code can close it before we duplicate it here; afterwards
        // porch only uses its own duplicate.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let file = File::from(borrowed.try_clone_to_owned()?);
        if !file.metadata()?.is_file() {
            return Ok(None);
        }
        Ok(Some((file, offset)))
    }
}
