//! One WebSocket of an ASGI app (`porch._worker.WebSocket`), driven by the app's `send`.
//!
//! The front holds the client's handshake until the app answers: `websocket.accept`
//! becomes a `101` head (the front adds the RFC 6455 headers and switches), a close before
//! that becomes a plain `403`, and the `websocket.http.response` extension a response of
//! the app's own. After the switch, messages and the app's close travel as frames; the
//! task's end is an `End` frame, so a socket the app leaves open is closed by the front
//! (1000 after a clean return, 1011 after an error).

use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use porch_ipc::{self as ipc, Kind};

use super::response::{app_headers, Response};
use super::Shared;

/// The longest close reason RFC 6455 allows (a control frame carries 125 bytes, 2 of
/// them the code).
const MAX_REASON: usize = 123;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The handshake waits for the app's answer.
    Connecting,
    /// Switched: messages flow.
    Open,
    /// The app sent its close (after accepting).
    Closed,
    /// Answered with HTTP instead (a close before accepting, or the app's own response).
    Denied,
}

#[pyclass(module = "porch")]
pub struct WebSocket {
    id: u32,
    shared: Arc<Shared>,
    state: State,
    /// The app's own HTTP answer to the handshake, while it sends it.
    denial: Option<Response>,
    ended: bool,
}

impl WebSocket {
    pub fn new(id: u32, shared: Arc<Shared>) -> WebSocket {
        WebSocket {
            id,
            shared,
            state: State::Connecting,
            denial: None,
            ended: false,
        }
    }

    /// Appends frames to the out buffer; true when it was empty (the caller schedules a
    /// flush for the loop iteration).
    fn push(&self, frames: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut out = self.shared.out.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = out.is_empty();
        frames(&mut out);
        was_empty
    }

    fn expect_open(&self, what: &str) -> PyResult<()> {
        match self.state {
            State::Open => Ok(()),
            State::Connecting => Err(PyRuntimeError::new_err(format!(
                "{what} sent before websocket.accept"
            ))),
            State::Closed => Err(PyRuntimeError::new_err(format!(
                "{what} sent after websocket.close"
            ))),
            State::Denied => Err(PyRuntimeError::new_err(format!(
                "{what} sent on a WebSocket that was refused"
            ))),
        }
    }
}

#[pymethods]
impl WebSocket {
    /// `websocket.accept`: the `101` head, with the chosen subprotocol and the app's
    /// headers. Returns whether a flush must be scheduled.
    #[pyo3(signature = (subprotocol, headers))]
    fn accept(&mut self, subprotocol: Option<&str>, headers: &Bound<'_, PyAny>) -> PyResult<bool> {
        if self.state != State::Connecting || self.denial.is_some() {
            return Err(PyRuntimeError::new_err(
                "websocket.accept sent after the handshake was answered",
            ));
        }
        let mut headers = app_headers(headers)?;
        if let Some(p) = subprotocol {
            crate::head::check_field(b"sec-websocket-protocol", p.as_bytes())?;
            headers.push((
                "sec-websocket-protocol".into(),
                bytes::Bytes::copy_from_slice(p.as_bytes()),
            ));
        }
        let head = ipc::Head {
            status: 101,
            headers,
            reason: Default::default(),
        };
        let mut payload = Vec::with_capacity(128);
        head.encode_payload(&mut payload);
        self.state = State::Open;
        let id = self.id;
        Ok(self.push(|out| ipc::encode_vec(out, Kind::Head, id, &payload)))
    }

    /// `websocket.send` with `text` (str) or `bytes`.
    fn send(&mut self, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.expect_open("websocket.send")?;
        let (text, bytes) = if let Ok(s) = data.cast::<PyString>() {
            (true, s.to_cow()?.as_bytes().to_vec())
        } else if let Ok(b) = data.cast::<PyBytes>() {
            (false, b.as_bytes().to_vec())
        } else {
            return Err(PyTypeError::new_err(
                "websocket.send needs `text` as str or `bytes` as bytes",
            ));
        };
        if bytes.len() > ipc::MAX_FRAME - 64 {
            return Err(PyValueError::new_err(format!(
                "a WebSocket message of {} bytes is larger than porch carries",
                bytes.len()
            )));
        }
        let id = self.id;
        Ok(self.push(|out| ipc::WsMessage::encode_vec(out, id, text, &bytes)))
    }

    /// `websocket.close`: before the handshake is answered, a `403` (as Uvicorn and
    /// Daphne do); after, the close frame with the app's code and reason.
    fn close(&mut self, code: u16, reason: &str) -> PyResult<bool> {
        let id = self.id;
        match self.state {
            State::Connecting if self.denial.is_none() => {
                self.state = State::Denied;
                Ok(self.push(|out| crate::head::encode_plain(out, id, 403, b"Forbidden\n")))
            }
            State::Open => {
                if reason.len() > MAX_REASON {
                    return Err(PyValueError::new_err(format!(
                        "a WebSocket close reason is at most {MAX_REASON} bytes of UTF-8, not {}",
                        reason.len()
                    )));
                }
                if !valid_close_code(code) {
                    return Err(PyValueError::new_err(format!(
                        "{code} is not a close code an endpoint may send (1000-1003, 1007-1014, 3000-4999)"
                    )));
                }
                self.state = State::Closed;
                let close = ipc::WsClose {
                    code,
                    reason: reason.to_owned(),
                };
                Ok(self.push(|out| close.encode_vec(out, id)))
            }
            // A second close, or one after a refusal, has nothing left to close.
            _ => Ok(false),
        }
    }

    /// `websocket.http.response.start` (the denial extension).
    fn http_start(&mut self, status: u16, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.state != State::Connecting || self.denial.is_some() {
            return Err(PyRuntimeError::new_err(
                "websocket.http.response.start sent after the handshake was answered",
            ));
        }
        let mut denial = Response::new(self.id, self.shared.clone());
        denial.start(status, headers, false)?;
        self.denial = Some(denial);
        Ok(())
    }

    /// `websocket.http.response.body`; returns whether a flush must be scheduled.
    fn http_body(&mut self, data: &Bound<'_, PyAny>, more: bool) -> PyResult<bool> {
        let Some(denial) = self.denial.as_mut() else {
            return Err(PyRuntimeError::new_err(
                "websocket.http.response.body sent before websocket.http.response.start",
            ));
        };
        let flush = denial.body(data, more)?;
        if denial.complete() {
            self.state = State::Denied;
        }
        Ok(flush)
    }

    /// The app's task ended (`ok`: it returned without an error). An unanswered
    /// handshake gets a 500; an open socket's end lets the front close it.
    fn end(&mut self, ok: bool) -> bool {
        if self.ended {
            return false;
        }
        self.ended = true;
        self.shared.running_done(self.id);
        let id = self.id;
        if let Some(denial) = self.denial.as_mut() {
            if !denial.complete() {
                return denial.fail();
            }
        }
        match self.state {
            State::Connecting => {
                self.push(|out| crate::head::encode_plain(out, id, 500, b"Internal Server Error\n"))
            }
            State::Open | State::Closed => {
                self.push(|out| ipc::encode_vec(out, Kind::End, id, &[ok as u8]))
            }
            State::Denied => false,
        }
    }

    /// The handshake is answered (accepted, refused, or the app's response started).
    #[getter]
    fn answered(&self) -> bool {
        self.state != State::Connecting || self.denial.is_some()
    }

    /// Messages may be sent.
    #[getter]
    fn open(&self) -> bool {
        self.state == State::Open
    }
}

/// Codes an endpoint may put in a close frame (RFC 6455 section 7.4; 1004-1006 and 1015
/// are reserved for reporting, never sent).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
