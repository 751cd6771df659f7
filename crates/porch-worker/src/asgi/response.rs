//! One ASGI request's response, as frames: the head waits for the first body piece (so
//! an error between `http.response.start` and the body still becomes a clean 500), and
//! frames collect in the channel's out buffer, written once per loop iteration.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use porch_ipc::{self as ipc, Kind};

use super::Shared;

/// The response of one request (`porch._worker.Response`), driven by the app's `send`.
#[pyclass(module = "porch")]
pub struct Response {
    id: u32,
    shared: Arc<Shared>,
    head: Option<ipc::Head>,
    started: bool,
    complete: bool,
    /// The app announced trailers (`"trailers": True` in its start): the body's end waits
    /// for them.
    trailers: bool,
    /// The body ended; only trailers may follow.
    body_done: bool,
    trailer_fields: Vec<(bytes::Bytes, bytes::Bytes)>,
}

impl Response {
    pub fn new(id: u32, shared: Arc<Shared>) -> Response {
        Response {
            id,
            shared,
            head: None,
            started: false,
            complete: false,
            trailers: false,
            body_done: false,
            trailer_fields: Vec::new(),
        }
    }

    /// Appends frames to the out buffer; true when the buffer was empty (the caller
    /// schedules one flush for the loop iteration).
    fn push(&mut self, frames: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut out = self.shared.out.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = out.is_empty();
        if let Some(head) = self.head.take() {
            let mut payload = Vec::with_capacity(256);
            head.encode_payload(&mut payload);
            ipc::encode_vec(&mut out, Kind::Head, self.id, &payload);
        }
        frames(&mut out);
        was_empty
    }

    fn finish(&mut self) {
        self.complete = true;
        self.shared.running_done(self.id);
    }

    fn check_body(&self, what: &str) -> PyResult<()> {
        if !self.started {
            return Err(PyRuntimeError::new_err(format!(
                "{what} sent before http.response.start"
            )));
        }
        if self.complete || self.body_done {
            return Err(PyRuntimeError::new_err(format!(
                "{what} sent after the response was complete"
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl Response {
    /// `http.response.start`; `trailers`: trailer fields follow the body.
    #[pyo3(signature = (status, headers, trailers = false))]
    pub(super) fn start(
        &mut self,
        status: u16,
        headers: &Bound<'_, PyAny>,
        trailers: bool,
    ) -> PyResult<()> {
        if self.started {
            return Err(PyRuntimeError::new_err(
                "http.response.start sent a second time",
            ));
        }
        if !(100..=999).contains(&status) {
            return Err(PyValueError::new_err(format!("invalid status {status}")));
        }
        self.head = Some(ipc::Head {
            status,
            headers: app_headers(headers)?,
            reason: Default::default(),
        });
        self.started = true;
        self.trailers = trailers;
        Ok(())
    }

    /// `http.response.body`; returns whether the caller must schedule a flush.
    pub(super) fn body(&mut self, data: &Bound<'_, PyAny>, more: bool) -> PyResult<bool> {
        self.check_body("http.response.body")?;
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("http.response.body's body must be bytes"))?
            .as_bytes();
        let id = self.id;
        let end = !more && !self.trailers;
        let flush = self.push(|out| {
            if !data.is_empty() {
                ipc::encode_vec(out, Kind::Body, id, data);
            }
            if end {
                ipc::encode_vec(out, Kind::End, id, &[1]);
            }
        });
        if end {
            self.finish();
        } else if !more {
            self.body_done = true;
        }
        Ok(flush)
    }

    /// `http.response.trailers`; the last one (`more` false) completes the response.
    fn trailers(&mut self, headers: &Bound<'_, PyAny>, more: bool) -> PyResult<bool> {
        if !self.trailers {
            return Err(PyRuntimeError::new_err(
                "http.response.trailers sent without \"trailers\": True in http.response.start",
            ));
        }
        if !self.body_done || self.complete {
            return Err(PyRuntimeError::new_err(
                "http.response.trailers sent before the body's end or after the trailers' end",
            ));
        }
        self.trailer_fields.extend(app_headers(headers)?);
        if more {
            return Ok(false);
        }
        let trailers = ipc::Trailers {
            fields: std::mem::take(&mut self.trailer_fields),
        };
        let mut payload = Vec::new();
        trailers.encode_payload(&mut payload);
        let id = self.id;
        let flush = self.push(|out| {
            ipc::encode_vec(out, Kind::Trailers, id, &payload);
            ipc::encode_vec(out, Kind::End, id, &[1]);
        });
        self.finish();
        Ok(flush)
    }

    /// `http.response.pathsend`: the file's bytes, read by Rust without the GIL.
    fn pathsend(&mut self, py: Python<'_>, path: &str) -> PyResult<()> {
        self.check_body("http.response.pathsend")?;
        let file = std::fs::File::open(path)?;
        self.push(|_| {});
        self.shared.flush(py);
        let (id, shared) = (self.id, self.shared.clone());
        let len = file.metadata()?.len();
        py.detach(|| shared.sink.send_file(id, &file, 0, len))?;
        let id = self.id;
        self.push(|out| ipc::encode_vec(out, Kind::End, id, &[1]));
        self.finish();
        self.shared.flush(py);
        Ok(())
    }

    /// The app failed or returned early: a 500 if nothing was sent yet, else an abort
    /// the client can see. Returns whether a flush must be scheduled.
    pub(super) fn fail(&mut self) -> bool {
        if self.complete {
            return false;
        }
        let id = self.id;
        let committed = self.started && self.head.is_none();
        self.head = None;
        let flush = self.push(|out| {
            if committed {
                ipc::encode_vec(out, Kind::End, id, &[0]);
                return;
            }
            crate::head::encode_plain(out, id, 500, b"Internal Server Error\n");
        });
        self.finish();
        flush
    }

    #[getter]
    fn started(&self) -> bool {
        self.started
    }

    #[getter]
    pub(super) fn complete(&self) -> bool {
        self.complete
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        if !self.complete {
            self.shared.running_done(self.id);
        }
    }
}

/// An ASGI message's `headers`: an iterable of `[name, value]` pairs, each checked.
pub(super) fn app_headers(
    headers: &Bound<'_, PyAny>,
) -> PyResult<Vec<(bytes::Bytes, bytes::Bytes)>> {
    let mut out = Vec::new();
    for item in headers.try_iter()? {
        let item = item?;
        let mut pair = item.try_iter()?;
        let (Some(name), Some(value), None) = (pair.next(), pair.next(), pair.next()) else {
            return Err(PyTypeError::new_err(
                "each header must be a [name, value] pair",
            ));
        };
        let name = header_bytes(&name?, "header name")?;
        let value = header_bytes(&value?, "header value")?;
        crate::head::check_field(&name, &value)?;
        out.push((name, value));
    }
    Ok(out)
}

/// ASGI header names and values are bytes; str is accepted as latin-1.
fn header_bytes(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    let s = v
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be bytes")))?;
    crate::head::latin1_bytes(s, what)
}
