//! The HTTP connection scope of ASGI 3 (spec 2.4), built from a request frame the way
//! the WSGI environ is: constant keys live in a template dict copied per request.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use porch_ipc as ipc;

pub struct ScopeBuilder {
    template: Py<PyDict>,
    /// `extensions` of a WebSocket scope.
    websocket_extensions: Py<PyDict>,
}

impl ScopeBuilder {
    pub fn new(py: Python<'_>, script_name: &str) -> PyResult<ScopeBuilder> {
        let t = PyDict::new(py);
        t.set_item(intern!(py, "type"), intern!(py, "http"))?;
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        t.set_item(intern!(py, "asgi"), asgi)?;
        t.set_item(intern!(py, "root_path"), script_name)?;
        let extensions = PyDict::new(py);
        extensions.set_item("http.response.pathsend", PyDict::new(py))?;
        extensions.set_item("http.response.trailers", PyDict::new(py))?;
        t.set_item(intern!(py, "extensions"), extensions)?;
        let websocket_extensions = PyDict::new(py);
        websocket_extensions.set_item("websocket.http.response", PyDict::new(py))?;
        Ok(ScopeBuilder {
            template: t.unbind(),
            websocket_extensions: websocket_extensions.unbind(),
        })
    }

    /// The scope of one request. `state` is the lifespan state, copied shallowly into
    /// each request as the spec asks.
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        req: &ipc::Request,
        state: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let scope = self.template.bind(py).copy()?;
        let (raw_path, query) = split_target(&req.target);
        let path = percent_encoding::percent_decode(raw_path).decode_utf8_lossy();
        scope.set_item(
            intern!(py, "http_version"),
            match req.protocol {
                "HTTP/1.0" => intern!(py, "1.0"),
                "HTTP/2" => intern!(py, "2"),
                _ => intern!(py, "1.1"),
            },
        )?;
        scope.set_item(intern!(py, "method"), &req.method)?;
        scope.set_item(
            intern!(py, "scheme"),
            if req.https {
                intern!(py, "https")
            } else {
                intern!(py, "http")
            },
        )?;
        // `path` is the full path, `root_path` the part the app is mounted under (as
        // Starlette and Django expect of ASGI servers).
        scope.set_item(intern!(py, "path"), path.as_ref())?;
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
        scope.set_item(intern!(py, "query_string"), PyBytes::new(py, query))?;
        let headers = PyList::empty(py);
        for (name, value) in &req.headers {
            headers.append(PyTuple::new(
                py,
                [PyBytes::new(py, name), PyBytes::new(py, value)],
            )?)?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;
        if req.remote_addr.is_empty() {
            scope.set_item(intern!(py, "client"), py.None())?;
        } else {
            scope.set_item(
                intern!(py, "client"),
                (req.remote_addr.as_str(), req.remote_port),
            )?;
        }
        scope.set_item(
            intern!(py, "server"),
            (req.server_name.as_str(), req.server_port),
        )?;
        if let Some(state) = state {
            scope.set_item(intern!(py, "state"), state.copy()?)?;
        }
        Ok(scope)
    }
}

impl ScopeBuilder {
    /// The scope of a WebSocket handshake: the HTTP one with `type`, `scheme` and
    /// `extensions` of its own, `subprotocols` from `Sec-WebSocket-Protocol`, no `method`.
    pub fn build_websocket<'py>(
        &self,
        py: Python<'py>,
        req: &ipc::Request,
        state: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let scope = self.build(py, req, state)?;
        scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
        scope.del_item(intern!(py, "method"))?;
        scope.set_item(
            intern!(py, "scheme"),
            if req.https {
                intern!(py, "wss")
            } else {
                intern!(py, "ws")
            },
        )?;
        let offered: Vec<&str> = req
            .headers
            .iter()
            .filter(|(k, _)| &k[..] == b"sec-websocket-protocol")
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        scope.set_item(intern!(py, "subprotocols"), offered)?;
        scope.set_item(
            intern!(py, "extensions"),
            self.websocket_extensions.bind(py).copy()?,
        )?;
        Ok(scope)
    }
}

/// Path and query string of a request target (the query without its `?`).
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[][..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_first_question_mark() {
        assert_eq!(split_target(b"/a?b=1?c"), (&b"/a"[..], &b"b=1?c"[..]));
        assert_eq!(split_target(b"/a"), (&b"/a"[..], &b""[..]));
    }
}
