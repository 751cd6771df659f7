//! Response bodies the front sends: fixed bytes, a worker's frames as they arrive, or a
//! static file read in chunks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::log::AccessRecord;
use crate::dispatch::{Reply, ReplyReceiver};

/// Why a response body stopped early; hyper then closes the connection, so the client
/// sees a truncated response rather than a complete-looking one.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the app failed while sending the body")]
    Aborted,
    #[error("the app sent {sent} bytes but declared Content-Length {declared}")]
    LengthMismatch { sent: u64, declared: u64 },
    #[error("reading a static file failed: {0}")]
    File(std::io::Error),
    #[error("the upstream server's body broke off: {0}")]
    Upstream(String),
}

pub enum ResponseBody {
    Full(Option<Bytes>),
    Worker(WorkerBody),
    /// A static file (or a range of it), read in chunks as hyper asks for them.
    File(super::static_files::FileBody),
    /// An upstream server's body, streamed as the client takes it (see `proxy`).
    Upstream(super::proxy::UpstreamBody),
}

impl ResponseBody {
    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }
    pub fn full(b: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(b.into()))
    }
}

/// Streams a worker's body frames. When the app declared a Content-Length, exactly that
/// many bytes go out or the connection is aborted: a short or long body never corrupts
/// the next response on a keep-alive connection.
pub struct WorkerBody {
    pub rx: ReplyReceiver,
    pub declared: Option<u64>,
    pub sent: u64,
    /// Boxed: the response is moved several times per request, and most servers run
    /// without an access log.
    pub record: Option<Box<AccessRecord>>,
    pub failed: bool,
}

impl WorkerBody {
    fn finish(&mut self, ok: bool) {
        if let Some(mut r) = self.record.take() {
            r.bytes = self.sent;
            r.aborted = !ok;
            r.emit();
        }
    }
}

impl Drop for WorkerBody {
    fn drop(&mut self) {
        // hyper stops polling once the declared length went out: that body is complete.
        if !self.failed && self.declared.is_some_and(|d| d == self.sent) {
            self.finish(true);
            return;
        }
        // The client went away before the end: still log what was sent, as 499 (nginx's
        // "client closed the request"), with the app's status beside it.
        if let Some(r) = self.record.as_mut() {
            r.app_status = Some(r.status);
            r.status = 499;
        }
        self.finish(false);
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(u) => http_body::Body::poll_frame(Pin::new(u), cx),
            ResponseBody::File(f) => f
                .poll_chunk(cx)
                .map(|chunk| chunk.map(|r| r.map(Frame::data).map_err(BodyError::File))),
            ResponseBody::Worker(w) => {
                if w.failed {
                    return Poll::Ready(None);
                }
                loop {
                    let reply = match w.rx.poll_recv(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r,
                    };
                    match reply {
                        Some(Reply::Body(data)) => {
                            if data.is_empty() {
                                continue;
                            }
                            if let Some(declared) = w.declared {
                                let room = declared - w.sent;
                                if data.len() as u64 > room {
                                    // More than declared: the client gets exactly the
                                    // declared bytes, a complete response by its own
                                    // framing (as Gunicorn sends), and the rest is dropped.
                                    tracing::warn!(
                                        "app sent more than its Content-Length {declared}; the rest was dropped"
                                    );
                                    w.failed = true;
                                    w.sent = declared;
                                    w.finish(true);
                                    if room == 0 {
                                        return Poll::Ready(None);
                                    }
                                    let data = data.slice(..room as usize);
                                    return Poll::Ready(Some(Ok(Frame::data(data))));
                                }
                            }
                            w.sent += data.len() as u64;
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Some(Reply::Trailers(t)) => {
                            // Sent by hyper over HTTP/2, and over HTTP/1.1 when the client
                            // said `TE: trailers` (chunked); dropped otherwise, as RFC 9110
                            // allows.
                            let mut map = http::HeaderMap::with_capacity(t.fields.len());
                            for (k, v) in t.fields {
                                if let (Ok(n), Ok(v)) = (
                                    http::header::HeaderName::from_bytes(&k),
                                    http::HeaderValue::from_maybe_shared(v),
                                ) {
                                    map.append(n, v);
                                }
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(map))));
                        }
                        Some(Reply::End(true)) => {
                            if let Some(declared) = w.declared {
                                if w.sent != declared {
                                    w.failed = true;
                                    w.finish(false);
                                    tracing::error!(
                                        "app sent {} bytes but declared Content-Length {declared}; connection closed",
                                        w.sent
                                    );
                                    return Poll::Ready(Some(Err(BodyError::LengthMismatch {
                                        sent: w.sent,
                                        declared,
                                    })));
                                }
                            }
                            w.finish(true);
                            return Poll::Ready(None);
                        }
                        // WebSocket replies never follow an HTTP head.
                        Some(Reply::End(false))
                        | Some(Reply::Fail(_))
                        | None
                        | Some(Reply::Head(_))
                        | Some(Reply::Switched(..))
                        | Some(Reply::Message(_))
                        | Some(Reply::Close(_)) => {
                            w.failed = true;
                            w.finish(false);
                            return Poll::Ready(Some(Err(BodyError::Aborted)));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::File(f) => f.is_end(),
            ResponseBody::Upstream(u) => http_body::Body::is_end_stream(u),
            ResponseBody::Worker(w) => w.declared == Some(0) && w.failed,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::File(f) => SizeHint::with_exact(f.remaining()),
            ResponseBody::Upstream(u) => http_body::Body::size_hint(u),
            ResponseBody::Worker(w) => match w.declared {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}
