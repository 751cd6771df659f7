//! The ASGI bridge (ASGI 3, spec 2.4): the event loop itself lives in Python
//! (`porch/_asgi.py`: asyncio or uvloop, tasks, lifespan); this side does what the loop
//! should not pay Python for: reading and decoding request frames, building scopes,
//! checking and encoding responses, and writing frames.
//!
//! The loop watches the front's socket (`loop.add_reader`): a wake-up reads everything
//! that arrived without waiting ([`Inbox::read_now`]) and starts up to the free number of
//! tasks, in the order the front sent them; the rest wait in the inbox, where the front
//! can take them back (SIGUSR2) exactly as from a threaded worker. Responses' frames
//! collect in one buffer written once per loop iteration, so the answers of many tasks
//! leave in one write.

mod response;
mod scope;
mod websocket;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use porch_ipc::{self as ipc, spawn, Kind};

use crate::inbox::Inbox;
use crate::wsgi::Sink;
pub use response::Response;
use scope::ScopeBuilder;
pub use websocket::WebSocket;

/// Request id → the Python thread id running it, for stack dumps of stuck requests.
pub type Running = Arc<Mutex<HashMap<u32, u64>>>;

/// What the channel and every response share.
pub struct Shared {
    /// Frames of this loop iteration, written by [`Shared::flush`].
    out: Mutex<Vec<u8>>,
    sink: Arc<Sink>,
    running: Running,
}

impl Shared {
    fn flush(&self, py: Python<'_>) {
        let buf = std::mem::take(&mut *self.out.lock().unwrap_or_else(|e| e.into_inner()));
        if !buf.is_empty() {
            self.sink.write(py, &buf);
        }
    }

    fn running_done(&self, id: u32) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// The worker's side of the front's socket, for the event loop (`porch._worker.Channel`).
#[pyclass(module = "porch")]
pub struct Channel {
    stream: UnixStream,
    inbox: Arc<Inbox>,
    shared: Arc<Shared>,
    scopes: ScopeBuilder,
    state: Option<Py<PyDict>>,
    thread_id: u64,
}

impl Channel {
    pub fn new(
        py: Python<'_>,
        stream: UnixStream,
        inbox: Arc<Inbox>,
        sink: Arc<Sink>,
        running: Running,
        script_name: &str,
    ) -> PyResult<Channel> {
        // SAFETY: pthread_self has no preconditions. Python's thread ids are pthread_self().
        let thread_id = unsafe { libc::pthread_self() } as u64;
        Ok(Channel {
            stream,
            inbox,
            shared: Arc::new(Shared {
                out: Mutex::new(Vec::new()),
                sink,
                running,
            }),
            scopes: ScopeBuilder::new(py, script_name)?,
            state: None,
            thread_id,
        })
    }

    /// The requests taken, as `(id, scope, body, body_file, response)` tuples (for a
    /// WebSocket handshake, `response` is a [`WebSocket`]), and the control frames, as
    /// `(kind, id, event)`: kind `"cancel"` or `"disconnect"` with no event, or `"event"`
    /// with a `websocket.receive` or `websocket.disconnect` event for the app.
    fn started<'py>(
        &self,
        py: Python<'py>,
        (jobs, controls, closed): (Vec<crate::inbox::Job>, Vec<ipc::Frame>, bool),
    ) -> PyResult<Bound<'py, PyTuple>> {
        let list = PyList::empty(py);
        let state = self.state.as_ref().map(|s| s.bind(py));
        for (id, req) in jobs {
            self.shared
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, self.thread_id);
            if req.is_websocket() {
                let scope = self.scopes.build_websocket(py, &req, state)?;
                let socket = Bound::new(py, WebSocket::new(id, self.shared.clone()))?;
                list.append((id, scope, py.None(), py.None(), socket))?;
                continue;
            }
            let scope = self.scopes.build(py, &req, state)?;
            let (body, file) = match &req.body {
                ipc::RequestBody::Inline(b) => (PyBytes::new(py, b).into_any(), py.None()),
                ipc::RequestBody::File { path, .. } => (
                    PyBytes::new(py, b"").into_any(),
                    path.into_pyobject(py)?.into_any().unbind(),
                ),
            };
            let response = Bound::new(py, Response::new(id, self.shared.clone()))?;
            list.append((id, scope, body, file, response))?;
        }
        let events = PyList::empty(py);
        for frame in controls {
            let (kind, event) = match frame.kind {
                Kind::Cancel => (intern!(py, "cancel"), py.None().into_bound(py)),
                Kind::Disconnect => (intern!(py, "disconnect"), py.None().into_bound(py)),
                _ => match websocket_event(py, &frame) {
                    Ok(event) => (intern!(py, "event"), event.into_any()),
                    Err(e) => {
                        eprintln!("porch worker: {e} from the front");
                        continue;
                    }
                },
            };
            events.append((kind, frame.id, event))?;
        }
        PyTuple::new(
            py,
            [
                list.into_any(),
                events.into_any(),
                closed.into_pyobject(py)?.to_owned().into_any(),
            ],
        )
    }
}

/// The ASGI event of a WebSocket frame from the front.
fn websocket_event<'py>(
    py: Python<'py>,
    frame: &ipc::Frame,
) -> Result<Bound<'py, PyDict>, ipc::DecodeError> {
    let event = PyDict::new(py);
    let set = |k: &Bound<'py, pyo3::types::PyString>, v: Bound<'py, PyAny>| {
        event
            .set_item(k, v)
            .expect("setting a str key on a new dict")
    };
    if frame.kind == Kind::WsMessage {
        let m = ipc::WsMessage::decode(&frame.payload)?;
        set(
            intern!(py, "type"),
            intern!(py, "websocket.receive").clone().into_any(),
        );
        if m.text {
            // Checked UTF-8 by the decoder.
            let text = std::str::from_utf8(&m.data).unwrap_or_default();
            set(
                intern!(py, "text"),
                pyo3::types::PyString::new(py, text).into_any(),
            );
            set(intern!(py, "bytes"), py.None().into_bound(py));
        } else {
            set(intern!(py, "bytes"), PyBytes::new(py, &m.data).into_any());
            set(intern!(py, "text"), py.None().into_bound(py));
        }
    } else {
        let c = ipc::WsClose::decode(&frame.payload)?;
        set(
            intern!(py, "type"),
            intern!(py, "websocket.disconnect").clone().into_any(),
        );
        set(
            intern!(py, "code"),
            c.code.into_pyobject(py).expect("int").into_any(),
        );
        set(
            intern!(py, "reason"),
            pyo3::types::PyString::new(py, &c.reason).into_any(),
        );
    }
    Ok(event)
}

#[pymethods]
impl Channel {
    /// The socket's descriptor, for `loop.add_reader`.
    fn fileno(&self) -> i32 {
        spawn::SOCKET_FD
    }

    /// Reads what the front sent (without waiting) and takes up to `room` requests.
    /// Returns `(requests, controls, closed)`.
    fn poll<'py>(&self, py: Python<'py>, room: usize) -> PyResult<Bound<'py, PyTuple>> {
        self.inbox.read_now(&self.stream);
        self.started(py, self.inbox.take(room))
    }

    /// Takes up to `room` requests already read, without touching the socket.
    fn take<'py>(&self, py: Python<'py>, room: usize) -> PyResult<Bound<'py, PyTuple>> {
        self.started(py, self.inbox.take(room))
    }

    /// The lifespan state, copied into each request's scope from now on.
    fn set_state(&mut self, state: Py<PyDict>) {
        self.state = Some(state);
    }

    /// Tells the front the worker takes requests: ASGI, `capacity` at once.
    fn ready(&self, py: Python<'_>, capacity: u32) {
        let mut frame = Vec::new();
        ipc::encode_vec(
            &mut frame,
            Kind::Ready,
            0,
            &spawn::ready_payload(std::process::id(), true, capacity),
        );
        self.shared.sink.write(py, &frame);
    }

    /// The stack of request `id`'s task, for the front's timeout log.
    fn stack(&self, py: Python<'_>, id: u32, text: &str) {
        self.shared.flush(py);
        let mut frame = Vec::new();
        ipc::encode_vec(&mut frame, Kind::Stack, id, text.as_bytes());
        self.shared.sink.write(py, &frame);
    }

    /// Drops request `id` if it waits unstarted (it was cancelled before it began).
    fn discard(&self, id: u32) -> bool {
        self.inbox.discard(id)
    }

    /// Writes the frames of this loop iteration.
    fn flush(&self, py: Python<'_>) {
        self.shared.flush(py);
    }
}
