//! The WSGI bridge (PEP 3333): turns a decoded [`ipc::Request`] into an environ, calls the
//! app, and turns what it returns into head/body/end frames.
//!
//! Everything here runs on a worker thread that holds the GIL. The environ is a copy of a
//! per-thread template dict holding the constant keys, with interned key strings, so a
//! request costs one dict copy plus its own values.

mod input;
mod response;

use std::io::Write;

use bytes::Bytes;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, Py};

pub use input::Input;
use porch_ipc::{self as ipc, Kind};
pub use response::{FileWrapper, Output, Sink};

/// What a worker thread needs besides the request: the app and the per-thread constants.
pub struct App {
    pub callable: Py<PyAny>,
    pub script_name: String,
    pub multithread: bool,
    pub multiprocess: bool,
}

/// Builds environs from a template holding the keys that never change.
pub struct EnvironBuilder {
    template: Py<PyDict>,
}

impl EnvironBuilder {
    pub fn new(py: Python<'_>, app: &App) -> PyResult<Self> {
        let t = PyDict::new(py);
        t.set_item(intern!(py, "wsgi.version"), (1, 0))?;
        t.set_item(intern!(py, "wsgi.multithread"), app.multithread)?;
        t.set_item(intern!(py, "wsgi.multiprocess"), app.multiprocess)?;
        t.set_item(intern!(py, "wsgi.run_once"), false)?;
        t.set_item(intern!(py, "wsgi.input_terminated"), true)?;
        t.set_item(
            intern!(py, "wsgi.errors"),
            py.import("sys")?.getattr("stderr")?,
        )?;
        t.set_item(
            intern!(py, "wsgi.file_wrapper"),
            py.get_type::<FileWrapper>(),
        )?;
        t.set_item(intern!(py, "SCRIPT_NAME"), &app.script_name)?;
        t.set_item(
            intern!(py, "SERVER_SOFTWARE"),
            concat!("porch/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(EnvironBuilder {
            template: t.unbind(),
        })
    }

    pub fn build<'py>(
        &self,
        py: Python<'py>,
        app: &App,
        req: &ipc::Request,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.template.bind(py).copy()?;
        let (raw_path, query) = match req.target.iter().position(|&b| b == b'?') {
            Some(i) => (&req.target[..i], &req.target[i + 1..]),
            None => (&req.target[..], &[][..]),
        };
        let decoded: Vec<u8> = percent_encoding::percent_decode(raw_path).collect();
        let mut path = &decoded[..];
        if !app.script_name.is_empty() {
            let sn = app.script_name.as_bytes();
            if path.starts_with(sn) && (path.len() == sn.len() || path[sn.len()] == b'/') {
                path = &path[sn.len()..];
            }
        }
        env.set_item(intern!(py, "REQUEST_METHOD"), &req.method)?;
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, path))?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, query))?;
        env.set_item(intern!(py, "RAW_URI"), latin1(py, &req.target))?;
        env.set_item(intern!(py, "SERVER_PROTOCOL"), req.protocol)?;
        env.set_item(intern!(py, "SERVER_NAME"), &req.server_name)?;
        env.set_item(intern!(py, "SERVER_PORT"), req.server_port.to_string())?;
        env.set_item(intern!(py, "REMOTE_ADDR"), &req.remote_addr)?;
        env.set_item(intern!(py, "REMOTE_PORT"), req.remote_port.to_string())?;
        env.set_item(
            intern!(py, "wsgi.url_scheme"),
            if req.https {
                intern!(py, "https")
            } else {
                intern!(py, "http")
            },
        )?;
        let mut content_length_seen = false;
        for (name, value) in &req.headers {
            match &name[..] {
                b"content-type" => env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, value))?,
                b"content-length" => {
                    // The front has read the whole body: the length is the one it read,
                    // also for chunked uploads (so Django and others read the body).
                    content_length_seen = true;
                    env.set_item(intern!(py, "CONTENT_LENGTH"), req.body.len().to_string())?
                }
                _ => env.set_item(header_key(py, name), latin1(py, value))?,
            }
        }
        if !content_length_seen && !req.body.is_empty() {
            env.set_item(intern!(py, "CONTENT_LENGTH"), req.body.len().to_string())?;
        }
        env.set_item(
            intern!(py, "wsgi.input"),
            Bound::new(py, Input::new(req.body.clone())?)?,
        )?;
        Ok(env)
    }
}

/// `HTTP_` + the name upper-cased with `-` as `_`; common names are interned.
fn header_key<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    match name {
        b"host" => intern!(py, "HTTP_HOST").clone(),
        b"user-agent" => intern!(py, "HTTP_USER_AGENT").clone(),
        b"accept" => intern!(py, "HTTP_ACCEPT").clone(),
        b"accept-encoding" => intern!(py, "HTTP_ACCEPT_ENCODING").clone(),
        b"accept-language" => intern!(py, "HTTP_ACCEPT_LANGUAGE").clone(),
        b"cookie" => intern!(py, "HTTP_COOKIE").clone(),
        b"connection" => intern!(py, "HTTP_CONNECTION").clone(),
        b"x-forwarded-for" => intern!(py, "HTTP_X_FORWARDED_FOR").clone(),
        _ => {
            let mut key = String::with_capacity(5 + name.len());
            key.push_str("HTTP_");
            key.extend(name.iter().map(|&b| match b {
                b'-' => '_',
                b => (b as char).to_ascii_uppercase(),
            }));
            PyString::new(py, &key)
        }
    }
}

/// PEP 3333 "native strings": bytes as latin-1 code points.
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(b) {
        Ok(s) if b.is_ascii() => PyString::new(py, s),
        _ => {
            let s: String = b.iter().map(|&c| c as char).collect();
            PyString::new(py, &s)
        }
    }
}

/// The state `start_response` and `write` share for one request.
#[pyclass(module = "porch")]
pub struct StartResponse {
    pub out: Output,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let mut me = slf.borrow_mut();
            if let Some(exc_info) = exc_info {
                if me.out.head_sent() {
                    // PEP 3333: too late to change the response, re-raise the app's error.
                    let tuple = exc_info.cast::<PyTuple>()?;
                    return Err(PyErr::from_value(tuple.get_item(1)?));
                }
            } else if me.out.has_head() {
                return Err(PyAssertionError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
            let head = parse_head(status, headers)?;
            me.out.set_head(head);
        }
        slf.getattr(intern!(py, "write"))
    }

    /// The legacy `write()` callable returned by `start_response`.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        if !self.out.has_head() {
            return Err(PyAssertionError::new_err(
                "write() called before start_response()",
            ));
        }
        self.out.body(py, bytes.as_bytes())?;
        self.out.flush(py)
    }
}

fn parse_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<ipc::Head> {
    let status: String = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("status must be a str such as '200 OK'"))?
        .to_string();
    let code = status
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..=999).contains(c) && (status.len() == 3 || status.as_bytes()[3] == b' '))
        .ok_or_else(|| {
            PyValueError::new_err(format!("invalid status {status:?}: expected '200 OK'"))
        })?;
    let list = headers
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err("headers must be a list of (name, value) tuples"))?;
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        let tuple = item
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
        if tuple.len() != 2 {
            return Err(PyTypeError::new_err(
                "each header must be a (name, value) tuple",
            ));
        }
        let name = native_bytes(&tuple.get_item(0)?, "header name")?;
        let value = native_bytes(&tuple.get_item(1)?, "header value")?;
        crate::head::check_field(&name, &value)?;
        out.push((name, value));
    }
    let reason = status.get(4..).unwrap_or("").as_bytes().to_vec().into();
    Ok(ipc::Head {
        status: code,
        headers: out,
        reason,
    })
}

/// A native string's latin-1 bytes; anything else is the app's error.
fn native_bytes(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    let s = v
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a str")))?;
    crate::head::latin1_bytes(s, what)
}

/// Runs one request through the app and writes every frame of its response.
/// Returns `false` when the response had to be aborted after its head was sent.
pub fn call_app(
    py: Python<'_>,
    app: &App,
    environ_builder: &EnvironBuilder,
    req: &ipc::Request,
    out: Output,
) -> bool {
    let start = match Bound::new(py, StartResponse { out }) {
        Ok(s) => s,
        Err(e) => {
            e.print(py);
            return false;
        }
    };
    let result = environ_builder
        .build(py, app, req)
        .and_then(|env| app.callable.bind(py).call1((env, start.clone())));
    let outcome = match result {
        Ok(iterable) => {
            let sent = send_iterable(py, &start, &iterable);
            // PEP 3333: close() is called whatever happened while iterating. Plain lists
            // and tuples (most apps' bodies) have none: skip the lookup, whose miss costs
            // an exception under the stable ABI.
            let plain = iterable.is_exact_instance_of::<PyList>()
                || iterable.is_exact_instance_of::<PyTuple>();
            let closed = match if plain {
                Ok(None)
            } else {
                iterable.getattr_opt(intern!(py, "close"))
            } {
                Ok(Some(close)) => close.call0().map(drop),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            sent.and(closed)
        }
        Err(e) => Err(e),
    };
    let mut me = start.borrow_mut();
    match outcome {
        Ok(()) => me.out.finish(py),
        Err(e) => {
            log_app_error(py, req, &e);
            me.out.fail(py)
        }
    }
}

fn send_iterable(
    py: Python<'_>,
    start: &Bound<'_, StartResponse>,
    iterable: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
        if let Some(file) = wrapper.borrow().native_file(py)? {
            let mut me = start.borrow_mut();
            if !me.out.has_head() {
                return Err(PyAssertionError::new_err(
                    "the app returned before calling start_response()",
                ));
            }
            return me.out.file(py, file);
        }
    }
    // A list or tuple (or an object iterating over one, like Django's HttpResponse) is
    // complete: buffer it and write once at the end. Other iterables may be slow
    // generators (streaming, server-sent events), so each piece leaves as it comes, the
    // last one too: a generator may work on after yielding its last piece, and the
    // client must not wait for that.
    let iter = iterable.try_iter()?;
    let streaming = !(iterable.is_instance_of::<PyList>()
        || iterable.is_instance_of::<PyTuple>()
        || is_sequence_iterator(py, iter.as_any())?);
    for item in iter {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "the app's response must yield bytes, not {}",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let mut me = start.borrow_mut();
        if !me.out.has_head() {
            return Err(PyAssertionError::new_err(
                "the app yielded body data before calling start_response()",
            ));
        }
        let data = bytes.as_bytes();
        if data.is_empty() {
            continue;
        }
        me.out.body(py, data)?;
        if streaming {
            me.out.flush(py)?;
        }
    }
    if !start.borrow().out.has_head() {
        return Err(PyAssertionError::new_err(
            "the app returned without calling start_response()",
        ));
    }
    Ok(())
}

/// Whether `it` iterates over a list or tuple (such iterators never block).
fn is_sequence_iterator(py: Python<'_>, it: &Bound<'_, PyAny>) -> PyResult<bool> {
    static TYPES: pyo3::sync::PyOnceLock<(Py<PyAny>, Py<PyAny>)> = pyo3::sync::PyOnceLock::new();
    let (list_iter, tuple_iter) = TYPES.get_or_try_init(py, || -> PyResult<_> {
        let list = PyList::empty(py).try_iter()?.get_type().into_any().unbind();
        let tuple = PyTuple::empty(py)
            .try_iter()?
            .get_type()
            .into_any()
            .unbind();
        Ok((list, tuple))
    })?;
    let t = it.get_type();
    Ok(t.is(list_iter.bind(py)) || t.is(tuple_iter.bind(py)))
}

/// The traceback and the request line go to the error log, like Gunicorn's
/// "Error handling request".
fn log_app_error(py: Python<'_>, req: &ipc::Request, e: &PyErr) {
    let _ = std::io::stderr().write_all(
        format!(
            "[porch] [ERROR] [pid {}] Error handling request {} {}\n",
            std::process::id(),
            req.method,
            String::from_utf8_lossy(&req.target)
        )
        .as_bytes(),
    );
    e.print(py);
    let _ = py
        .import("sys")
        .and_then(|s| s.getattr("stderr"))
        .and_then(|s| s.call_method0("flush"));
}

/// A frame with no payload but the status byte, for the end of a response.
pub fn end_frame(out: &mut Vec<u8>, id: u32, ok: bool) {
    ipc::encode_vec(out, Kind::End, id, &[ok as u8]);
}
