//! `wsgi.input`: the request body the front has already read in full, from memory or
//! from the temporary file the front spilled it to.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use porch_ipc::RequestBody;

enum Source {
    Memory {
        data: Bytes,
        pos: usize,
    },
    File {
        reader: BufReader<File>,
        remaining: u64,
    },
}

/// A file-like object with `read`, `readline`, `readlines` and iteration.
#[pyclass(module = "porch")]
pub struct Input {
    source: Source,
}

impl Input {
    pub fn new(body: RequestBody) -> PyResult<Input> {
        let source = match body {
            RequestBody::Inline(data) => Source::Memory { data, pos: 0 },
            RequestBody::File { path, len } => Source::File {
                reader: BufReader::with_capacity(64 * 1024, File::open(&path)?),
                remaining: len,
            },
        };
        Ok(Input { source })
    }

    fn remaining(&self) -> u64 {
        match &self.source {
            Source::Memory { data, pos } => (data.len() - pos) as u64,
            Source::File { remaining, .. } => *remaining,
        }
    }

    /// Up to `limit` bytes; stops after a newline when `line` is set.
    fn take(&mut self, limit: u64, line: bool) -> std::io::Result<Vec<u8>> {
        let limit = limit.min(self.remaining()) as usize;
        match &mut self.source {
            Source::Memory { data, pos } => {
                let avail = &data[*pos..*pos + limit];
                let n = if line {
                    memchr_newline(avail).map_or(avail.len(), |i| i + 1)
                } else {
                    avail.len()
                };
                let out = avail[..n].to_vec();
                *pos += n;
                Ok(out)
            }
            Source::File { reader, remaining } => {
                let mut out = Vec::with_capacity(if line { 128 } else { limit });
                let mut limited = reader.by_ref().take(limit as u64);
                if line {
                    limited.read_until(b'\n', &mut out)?;
                } else {
                    limited.read_to_end(&mut out)?;
                }
                *remaining -= out.len() as u64;
                Ok(out)
            }
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn limit(size: Option<i64>) -> u64 {
    match size {
        Some(n) if n >= 0 => n as u64,
        _ => u64::MAX,
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        // From memory, one copy straight into the bytes object.
        if let Source::Memory { data, pos } = &mut self.source {
            let n = (limit(size).min((data.len() - *pos) as u64)) as usize;
            let out = PyBytes::new(py, &data[*pos..*pos + n]);
            *pos += n;
            return Ok(out);
        }
        // From the spilled file, read straight into the bytes object too.
        let Source::File { reader, remaining } = &mut self.source else {
            unreachable!("memory is handled above");
        };
        let n = limit(size).min(*remaining) as usize;
        let out = PyBytes::new_with(py, n, |buf| reader.read_exact(buf).map_err(PyErr::from))?;
        *remaining -= n as u64;
        Ok(out)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.take(limit(size), true)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint.filter(|h| *h > 0));
        let lines = PyList::empty(py);
        let mut total = 0u64;
        while total < hint {
            let line = self.take(u64::MAX, true)?;
            if line.is_empty() {
                break;
            }
            total += line.len() as u64;
            lines.append(PyBytes::new(py, &line))?;
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.take(u64::MAX, true)?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
