//! Reading a request body whole before any worker is involved: in memory, or spilled
//! to a temporary file past the configured size.

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use crate::body_memory::MemoryHold;
use crate::reject::Rejection;
use crate::Front;

impl Front {
    /// Reads the whole body: in memory while both `body_memory` (this body) and
    /// `body_memory_total` (all bodies in the front) allow, then into a temporary file.
    /// A body cut short by the client never reaches the app.
    pub(super) async fn read_body(&self, mut incoming: Incoming) -> Result<Body, Rejection> {
        let limits = &self.cfg.limits;
        // A body that arrives as one piece is kept as it came from hyper; more pieces
        // are joined in a buffer sized once from Content-Length.
        let expected = usize::try_from(http_body::Body::size_hint(&incoming).lower())
            .unwrap_or(usize::MAX)
            .min(limits.body_memory);
        let mut first: Option<Bytes> = None;
        let mut mem = BytesMut::new();
        let mut hold = self.body_memory.hold();
        let mut file: Option<(tokio::fs::File, tempfile::TempPath)> = None;
        let mut total: u64 = 0;
        loop {
            let next = tokio::time::timeout(self.cfg.body_timeout, incoming.frame());
            let Ok(next) = next.await else {
                return Err(Rejection::body_timed_out());
            };
            let Some(frame) = next else { break };
            let frame = frame.map_err(|e| {
                tracing::debug!("request body not received in full: {e}");
                Rejection::body_incomplete()
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > limits.request_body {
                return Err(Rejection::body_too_large());
            }
            if file.is_none() && !hold.grow(data.len()) {
                let spill = tempfile::Builder::new()
                    .prefix("porch-body-")
                    .tempfile_in(&self.spill_dir)
                    .map_err(|e| {
                        tracing::error!("cannot create a temporary file for a request body: {e}");
                        Rejection::porch(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "cannot buffer the request body",
                        )
                    })?;
                let (f, path) = spill.into_parts();
                let mut f = tokio::fs::File::from_std(f);
                if let Some(b) = first.take() {
                    f.write_all(&b).await.map_err(spill_error)?;
                }
                f.write_all(&mem).await.map_err(spill_error)?;
                self.body_memory.count_spilled(total as usize - data.len());
                mem = BytesMut::new();
                hold.release();
                file = Some((f, path));
            }
            match &mut file {
                Some((f, _)) => {
                    f.write_all(&data).await.map_err(spill_error)?;
                    self.body_memory.count_spilled(data.len());
                }
                None if first.is_none() && mem.is_empty() => first = Some(data),
                None => {
                    if let Some(b) = first.take() {
                        mem.reserve(expected.max(b.len() + data.len()));
                        mem.extend_from_slice(&b);
                    }
                    mem.extend_from_slice(&data);
                }
            }
        }
        match file {
            Some((mut f, path)) => {
                f.flush().await.map_err(spill_error)?;
                Ok(Body::File(path, total))
            }
            None => Ok(Body::Memory(first.unwrap_or_else(|| mem.freeze()), hold)),
        }
    }
}

/// A body read whole, with what keeps it accounted for until its job is done.
pub(super) enum Body {
    Memory(Bytes, MemoryHold),
    /// Removed when the job holding it is dropped.
    File(tempfile::TempPath, u64),
}

fn spill_error(e: std::io::Error) -> Rejection {
    tracing::error!("cannot write a request body to its temporary file: {e}");
    Rejection::porch(
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot buffer the request body",
    )
}
