//! Reading file contents: small files in one `pread`, large ones streamed in chunks.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
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

/// A byte range of a file, read in [`CHUNK`]s on the blocking pool with one chunk read
/// ahead while the previous one is being written to the client.
pub struct FileBody {
    file: Arc<File>,
    /// Where the next chunk starts.
    offset: u64,
    /// Bytes not yet handed to hyper.
    remaining: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> FileBody {
        FileBody {
            file,
            offset,
            remaining: len,
            pending: None,
        }
    }

    fn start_read(&mut self) {
        let file = self.file.clone();
        let (offset, len) = (self.offset, (self.remaining.min(CHUNK as u64)) as usize);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            read_at_most(&file, offset, len)
        }));
    }

    /// The next chunk; an error when the file ends early (it shrank while being sent),
    /// so the connection is closed rather than a short body passed off as whole.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.pending.is_none() {
            self.start_read();
        }
        let handle = self.pending.as_mut().expect("read started");
        let result = match Pin::new(handle).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        self.pending = None;
        let data = match result {
            Ok(Ok(data)) if !data.is_empty() => data,
            Ok(Ok(_)) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))));
            }
            Ok(Err(e)) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(e)));
            }
            Err(join) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(io::Error::other(join))));
            }
        };
        let n = (data.len() as u64).min(self.remaining);
        self.offset += n;
        self.remaining -= n;
        if self.remaining > 0 {
            self.start_read();
        }
        Poll::Ready(Some(Ok(data.slice(..n as usize))))
    }

    pub fn is_end(&self) -> bool {
        self.remaining == 0
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
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
}
