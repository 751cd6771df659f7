//! Reading file contents: small files in one `pread`, large ones streamed in chunks.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::CHUNK;

/// Reads up to `len` bytes at `offset` into one buffer (fewer only at end of file).
pub(super) fn read_at_most(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(len - filled);
        // SAFETY: pread writes at most `want` bytes into the spare capacity, and we only
        // extend the length by what it reports written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                want,
                (offset + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: see above.
        unsafe { buf.set_len(filled + n as usize) };
    }
    Ok(buf.freeze())
}

// ---------------------------------------------------------------------------------------
// Streaming body

/// Whether `preadv2(RWF_NOWAIT)` works here (false after the kernel or the file system
/// refused it once: every read then goes to the blocking pool).
static NOWAIT_WORKS: AtomicBool = AtomicBool::new(true);

/// What one attempt to read from the page cache without blocking gave.
enum Nowait {
    /// Bytes read (0: end of file).
    Read(usize),
    /// Not (all) in the page cache: reading would wait for the disk.
    WouldBlock,
}

/// One `preadv2(RWF_NOWAIT)` into `buf`'s spare capacity, at most `len` bytes: what the
/// page cache holds, without ever waiting for the disk.
fn read_nowait(file: &File, offset: u64, buf: &mut BytesMut, len: usize) -> io::Result<Nowait> {
    if !NOWAIT_WORKS.load(Ordering::Relaxed) {
        return Ok(Nowait::WouldBlock);
    }
    let filled = buf.len();
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(len);
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: want,
    };
    loop {
        // SAFETY: the one iovec points at `want` bytes of `buf`'s spare capacity, which
        // preadv2 may write; the length grows only by what it reports written.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                &iov,
                1,
                offset as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if n >= 0 {
            // SAFETY: see above.
            unsafe { buf.set_len(filled + n as usize) };
            return Ok(Nowait::Read(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Nowait::WouldBlock),
            // No `preadv2` or no `RWF_NOWAIT` (an old kernel, a file system without it).
            Some(libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                NOWAIT_WORKS.store(false, Ordering::Relaxed);
                return Ok(Nowait::WouldBlock);
            }
            _ => return Err(e),
        }
    }
}

/// A byte range of a file, sent in chunks of at most [`CHUNK`] bytes as hyper asks for
/// them. Each chunk is read from the page cache on the connection's own task
/// (`preadv2` with `RWF_NOWAIT`: a copy of some tens of microseconds, the way nginx
/// reads on its event loop); only a read that would wait for the disk goes to tokio's
/// blocking pool.
///
/// Memory: one buffer of [`CHUNK`] bytes per download, reused for every chunk once
/// hyper has written the previous one (it is allocated again only while hyper still
/// holds that chunk, as HTTP/2 may).
pub struct FileBody {
    file: Arc<File>,
    /// Where the next chunk starts.
    offset: u64,
    /// Bytes not yet handed to hyper.
    remaining: u64,
    /// The read buffer: its allocation comes back when hyper drops the last chunk.
    buf: BytesMut,
    /// A read on the blocking pool (the data was not in the page cache).
    pending: Option<JoinHandle<(BytesMut, io::Result<usize>)>>,
    /// Whether to try the page cache on the task first (tests turn it off).
    inline: bool,
}

impl FileBody {
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> FileBody {
        FileBody {
            file,
            offset,
            remaining: len,
            buf: BytesMut::new(),
            pending: None,
            inline: true,
        }
    }

    fn want(&self) -> usize {
        self.remaining.min(CHUNK as u64) as usize
    }

    /// The next chunk; an error when the file ends early (it shrank while being sent),
    /// so the connection is closed rather than a short body passed off as whole.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let read = match self.pending.as_mut() {
            Some(handle) => {
                let result = match Pin::new(handle).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                self.pending = None;
                match result {
                    Ok((buf, read)) => {
                        self.buf = buf;
                        read
                    }
                    Err(join) => Err(io::Error::other(join)),
                }
            }
            None => {
                let want = self.want();
                // Reclaims the allocation once hyper dropped the previous chunk.
                self.buf.reserve(want);
                let first = if self.inline {
                    read_nowait(&self.file, self.offset, &mut self.buf, want)
                } else {
                    Ok(Nowait::WouldBlock)
                };
                match first {
                    Ok(Nowait::Read(n)) => Ok(n),
                    Ok(Nowait::WouldBlock) => {
                        let file = self.file.clone();
                        let offset = self.offset;
                        let mut buf = std::mem::take(&mut self.buf);
                        let mut handle = tokio::task::spawn_blocking(move || {
                            let r = read_into(&file, offset, &mut buf, want);
                            (buf, r)
                        });
                        // Polled once so the task is woken when the read is done.
                        match Pin::new(&mut handle).poll(cx) {
                            Poll::Pending => {
                                self.pending = Some(handle);
                                return Poll::Pending;
                            }
                            Poll::Ready(Ok((buf, read))) => {
                                self.buf = buf;
                                read
                            }
                            Poll::Ready(Err(join)) => Err(io::Error::other(join)),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let n = match read {
            Ok(0) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))));
            }
            Ok(n) => (n as u64).min(self.remaining),
            Err(e) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(e)));
            }
        };
        self.offset += n;
        self.remaining -= n;
        let data = self.buf.split_to(n as usize).freeze();
        self.buf.clear();
        Poll::Ready(Some(Ok(data)))
    }

    pub fn is_end(&self) -> bool {
        self.remaining == 0
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

/// A blocking `pread` of up to `len` bytes into `buf`'s spare capacity (on the blocking
/// pool): how many bytes were read, 0 at end of file.
fn read_into(file: &File, offset: u64, buf: &mut BytesMut, len: usize) -> io::Result<usize> {
    buf.reserve(len);
    let filled = buf.len();
    loop {
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(len);
        // SAFETY: pread writes at most `want` bytes into the spare capacity, and the
        // length grows only by what it reports written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                want,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: see above.
        unsafe { buf.set_len(filled + n as usize) };
        return Ok(n as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::super::serve_path;
    use super::*;
    use crate::body::ResponseBody;
    use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
    use porch_config::StaticMount;

    #[tokio::test]
    async fn large_files_stream_in_chunks() {
        let root = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(CHUNK * 3 + 123)).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.path().join("big.bin"), &data).unwrap();
        let mount = StaticMount::new("static", "/s/", root.path().to_str().unwrap()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=10-"));
        let r = serve_path(&mount, &Method::GET, &headers, "/s/big.bin", None);
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let ResponseBody::File(mut body) = r.into_body() else {
            panic!("a large file is streamed");
        };
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = std::future::poll_fn(|cx| body.poll_chunk(cx)).await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK);
            got.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert_eq!(got, &data[10..]);
        assert_eq!(chunks, 4);
        assert!(body.is_end());
    }

    async fn stream(inline: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(CHUNK * 2 + 77)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let mut body = FileBody::new(file, 5, data.len() as u64 - 5);
        body.inline = inline;
        let mut got = Vec::new();
        let mut previous = None;
        while let Some(chunk) = std::future::poll_fn(|cx| body.poll_chunk(cx)).await {
            let chunk = chunk.unwrap();
            // Once the previous chunk is gone, its buffer carries the next one.
            if let Some(p) = previous {
                assert_eq!(chunk.as_ptr(), p, "the read buffer is reused");
            }
            previous = Some(chunk.as_ptr());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, &data[5..]);

        // A file cut short while being sent ends the body with an error.
        let file = Arc::new(File::open(&path).unwrap());
        let mut body = FileBody::new(file, 0, data.len() as u64);
        body.inline = inline;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        let first = std::future::poll_fn(|cx| body.poll_chunk(cx)).await;
        assert_eq!(first.unwrap().unwrap().len(), 100);
        let second = std::future::poll_fn(|cx| body.poll_chunk(cx)).await;
        assert!(second.unwrap().is_err());
        assert!(body.is_end());
    }

    #[tokio::test]
    async fn chunks_from_the_page_cache_reuse_one_buffer() {
        stream(true).await;
    }

    #[tokio::test]
    async fn chunks_from_the_blocking_pool_reuse_one_buffer() {
        stream(false).await;
    }
}
