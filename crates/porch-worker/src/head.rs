//! What WSGI and ASGI responses share: the checks on an app's header fields, and the
//! plain-text answer a worker gives for the app (a 500 when it failed before its head).

use bytes::Bytes;
use porch_ipc::{self as ipc, Kind};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// A str's latin-1 bytes (a header name or value); a str with other characters is the
/// app's error. CPython encodes it in one call, as `str.encode("latin-1")`: the stable ABI
/// of 3.9 has no borrowed view of a str's bytes, and going through UTF-8 cost twice as
/// much per header.
pub fn latin1_bytes(s: &Bound<'_, PyString>, what: &str) -> PyResult<Bytes> {
    // SAFETY: `s` is a live str and the GIL is held (the `Bound`); the call returns a new
    // reference or NULL with an exception set, and `from_owned_ptr_or_err` takes either.
    let encoded = unsafe {
        Bound::from_owned_ptr_or_err(s.py(), pyo3::ffi::PyUnicode_AsLatin1String(s.as_ptr()))
    };
    match encoded {
        Ok(b) => Ok(Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes())),
        Err(_) => Err(PyValueError::new_err(format!(
            "{what} {:?} is not latin-1",
            s.to_string_lossy()
        ))),
    }
}

/// A field the front can put on the wire as is: a token name, a value without control
/// characters (so no app can split a response or add a field by accident).
pub fn check_field(name: &[u8], value: &[u8]) -> PyResult<()> {
    if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
        return Err(PyValueError::new_err(format!(
            "invalid header name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(PyValueError::new_err(format!(
            "invalid control character in header {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A whole plain-text response (head, body, end) for request `id`.
pub fn encode_plain(out: &mut Vec<u8>, id: u32, status: u16, body: &[u8]) {
    let head = ipc::Head {
        status,
        headers: vec![
            ("Content-Type".into(), "text/plain; charset=utf-8".into()),
            ("Content-Length".into(), body.len().to_string().into()),
        ],
        reason: Default::default(),
    };
    let mut payload = Vec::with_capacity(96);
    head.encode_payload(&mut payload);
    ipc::encode_vec(out, Kind::Head, id, &payload);
    ipc::encode_vec(out, Kind::Body, id, body);
    ipc::encode_vec(out, Kind::End, id, &[1]);
}
