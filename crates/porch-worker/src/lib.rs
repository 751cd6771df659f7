//! `porch._worker`: the Python extension a porch worker process runs.
//!
//! The front (the `porch` executable, which links no Python) starts each worker as the
//! app's own interpreter running `python -m porch.worker`, which calls [`main`]. From there
//! on the worker is Rust: it reads request frames from the front's socket, runs the WSGI
//! app ([`wsgi`], PEP 3333) and writes the response frames back.
//!
//! Built against CPython's stable ABI (abi3, from 3.9), so one wheel serves every CPython
//! an app may use.

// Return types here follow PyO3's conventions.
#![allow(clippy::useless_conversion)]

mod asgi;
mod head;
mod inbox;
mod worker;
mod wsgi;

use pyo3::prelude::*;

/// Runs this process as a porch worker; returns its exit status. Only meaningful in a
/// process the porch front started (it reads the socket and spec the front set up).
#[pyfunction]
fn main(py: Python<'_>) -> u8 {
    worker::main(py)
}

/// Whether TERM or INT reached this worker (for Gunicorn's `worker_int` hook).
#[pyfunction]
fn interrupted() -> bool {
    worker::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

#[pymodule]
#[pyo3(name = "_worker")]
fn porch_worker(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("VERSION", porch_ipc::spawn::VERSION)?;
    m.add("PROTOCOL", porch_ipc::spawn::PROTOCOL)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(interrupted, m)?)?;
    Ok(())
}
