//! A worker process: porch re-executed with `__worker`, embedding CPython.
//!
//! The main thread reads frames from the front. `threads` Python threads each take the GIL
//! once and give it up only while waiting for the next request (so an idle worker costs
//! no GIL traffic and a busy one no hand-offs), run the WSGI call and write their own
//! response frames.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde::{Deserialize, Serialize};

use crate::ipc::{self, Decoder, Kind};
use crate::wsgi::{self, App, EnvironBuilder, Output, Sink};

/// The environment variable carrying a [`WorkerSpec`] as JSON.
pub const SPEC_ENV: &str = "PORCH_WORKER_SPEC";
/// The descriptor number of the worker's socket to the front.
pub const SOCKET_FD: i32 = 3;
/// Exit status of a worker whose app could not be imported (Gunicorn uses 3 as well).
pub const EXIT_IMPORT_FAILED: u8 = 3;

/// What a worker needs to know, passed from the supervisor at exec time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub app: String,
    pub threads: usize,
    pub multiprocess: bool,
    pub chdir: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    pub venv: Option<PathBuf>,
    pub script_name: String,
}

/// Request id → the Python thread id running it, for stack dumps of stuck requests.
type Running = Arc<Mutex<HashMap<u32, u64>>>;

pub fn main() -> ExitCode {
    // If the front dies, its workers must not outlive it.
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let spec: WorkerSpec = match std::env::var(SPEC_ENV)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("porch worker: bad {SPEC_ENV}: {e}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: the supervisor placed our end of the socket pair on SOCKET_FD before exec
    // and nothing else in this process owns that descriptor.
    let stream = unsafe { UnixStream::from_raw_fd(SOCKET_FD) };
    match run(spec, stream) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("porch worker: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(spec: WorkerSpec, stream: UnixStream) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &spec.chdir {
        std::env::set_current_dir(dir)?;
    }
    block_dump_signal();
    Python::initialize();
    let app = match Python::attach(|py| import_app(py, &spec)) {
        Ok(app) => app,
        Err(()) => return Ok(ExitCode::from(EXIT_IMPORT_FAILED)),
    };
    let app = Arc::new(app);

    let sink = Arc::new(Sink::new(stream.try_clone()?, spec.threads > 1));
    let mut ready = Vec::new();
    ipc::encode_vec(
        &mut ready,
        Kind::Ready,
        0,
        &std::process::id().to_le_bytes(),
    );
    (&stream).write_all(&ready)?;

    let running: Running = Arc::default();
    {
        let (sink, running) = (sink.clone(), running.clone());
        std::thread::spawn(move || dump_on_signal(&sink, &running));
    }
    if spec.threads == 1 {
        serve_inline(stream, &app, &sink, &running);
        return Ok(ExitCode::SUCCESS);
    }

    let (tx, rx) = crossbeam_channel::unbounded::<(u32, ipc::Request)>();
    let threads: Vec<_> = (0..spec.threads)
        .map(|_| {
            let (rx, app, sink, running) = (rx.clone(), app.clone(), sink.clone(), running.clone());
            std::thread::spawn(move || serve(rx, &app, &sink, &running))
        })
        .collect();

    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match next_request(&mut buf) {
                Ok(Some(job)) => {
                    let _ = tx.send(job);
                }
                Ok(None) => break,
                Err(()) => break 'read,
            }
        }
    }
    // Let running requests finish (the front bounds this with its graceful timeout).
    drop(tx);
    for t in threads {
        let _ = t.join();
    }
    Ok(ExitCode::SUCCESS)
}

/// The next request frame in `buf`; `Err` when the stream ended the worker's work (a
/// stop frame or a corrupt stream).
fn next_request(buf: &mut BytesMut) -> Result<Option<(u32, ipc::Request)>, ()> {
    loop {
        let frame = match Decoder::next(buf) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => {
                eprintln!("porch worker: corrupt frame from the front: {e}");
                return Err(());
            }
        };
        match frame.kind {
            Kind::Request => {
                return match ipc::Request::decode(&frame.payload) {
                    Ok(req) => Ok(Some((frame.id, req))),
                    Err(e) => {
                        eprintln!("porch worker: corrupt request frame: {e}");
                        Err(())
                    }
                };
            }
            Kind::Stop => return Err(()),
            // Stacks are asked for by signal (see `dump_on_signal`).
            Kind::DumpStack => {}
            other => eprintln!("porch worker: unexpected {other:?} frame"),
        }
    }
}

/// One thread, the Python one, reads the socket itself: no hand-off between threads.
/// Requests that arrived together are run back to back and their responses leave in one
/// write (bounded in size and delay), so a batch costs one wake-up on each side.
fn serve_inline(stream: UnixStream, app: &App, sink: &Arc<Sink>, running: &Running) {
    // SAFETY: pthread_self has no preconditions. Python's thread ids are pthread_self().
    let thread_id = unsafe { libc::pthread_self() } as u64;
    let mut stream = stream;
    Python::attach(|py| {
        let builder = match EnvironBuilder::new(py, app) {
            Ok(b) => b,
            Err(e) => {
                e.print(py);
                return;
            }
        };
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut queue = std::collections::VecDeque::new();
        let mut held_since: Option<std::time::Instant> = None;
        loop {
            loop {
                match next_request(&mut buf) {
                    Ok(Some(job)) => queue.push_back(job),
                    Ok(None) => break,
                    Err(()) => {
                        sink.flush_held();
                        return;
                    }
                }
            }
            if let Some((id, req)) = queue.pop_front() {
                // Hold this response if more requests wait, but not for long.
                let hold = !queue.is_empty()
                    && held_since.is_none_or(|t| t.elapsed() < std::time::Duration::from_millis(2));
                sink.hold(hold);
                if !hold {
                    sink.flush_held();
                    held_since = None;
                } else if held_since.is_none() {
                    held_since = Some(std::time::Instant::now());
                }
                run_request(py, app, &builder, sink, running, thread_id, id, &req);
                continue;
            }
            sink.hold(false);
            sink.flush_held();
            held_since = None;
            buf.reserve(64 * 1024);
            let read = py.detach(|| {
                let spare = buf.spare_capacity_mut();
                // SAFETY: reading into spare capacity: `read` only writes initialised
                // bytes and reports how many; the length is set from that count below.
                let spare =
                    unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
                stream.read(spare)
            });
            match read {
                Ok(0) | Err(_) => return,
                // SAFETY: `read` initialised `n` bytes of the spare capacity.
                Ok(n) => unsafe { buf.set_len(buf.len() + n) },
            }
        }
    });
}

/// Puts the venv and extra paths on `sys.path`, imports the app and resolves the callable.
/// On failure the traceback goes to stderr (the error log).
fn import_app(py: Python<'_>, spec: &WorkerSpec) -> Result<App, ()> {
    let result = (|| -> PyResult<App> {
        let sys = py.import("sys")?;
        let path = sys.getattr("path")?.cast_into::<PyList>()?;
        // Like Gunicorn: the working directory comes first, then --pythonpath entries.
        let cwd = std::env::current_dir()?;
        path.insert(0, cwd.to_string_lossy().as_ref())?;
        for (i, p) in spec.pythonpath.iter().enumerate() {
            path.insert(i + 1, p.to_string_lossy().as_ref())?;
        }
        if let Some(venv) = &spec.venv {
            let site = py.import("site")?;
            let version = sys.getattr("version_info")?;
            let (major, minor): (u32, u32) = (
                version.getattr("major")?.extract()?,
                version.getattr("minor")?.extract()?,
            );
            let site_packages = venv.join(format!("lib/python{major}.{minor}/site-packages"));
            if !site_packages.is_dir() {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "virtualenv {} has no {} (was it made with Python {major}.{minor}?)",
                    venv.display(),
                    site_packages.display()
                )));
            }
            site.call_method1("addsitedir", (site_packages.to_string_lossy().as_ref(),))?;
            // Packages from the venv must win over the system's.
            let n = path.len();
            let added = path.get_item(n - 1)?;
            if n > 0 && added.extract::<String>()? == site_packages.to_string_lossy() {
                path.del_item(n - 1)?;
                path.insert(1 + spec.pythonpath.len(), added)?;
            }
            std::env::set_var("VIRTUAL_ENV", venv);
        }
        sys.setattr("argv", vec!["porch"])?;
        // Fatal errors (segfaults in C extensions) print the Python stack before dying.
        py.import("faulthandler")?.call_method0("enable")?;

        let spec_app = crate::config::AppSpec::parse(&spec.app)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let module = py.import(spec_app.module.as_str())?;
        let mut callable = module.getattr(spec_app.callable.as_str()).map_err(|_| {
            pyo3::exceptions::PyAttributeError::new_err(format!(
                "module {:?} has no attribute {:?}",
                spec_app.module, spec_app.callable
            ))
        })?;
        if spec_app.factory {
            callable = callable.call0()?;
        }
        if !callable.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "{} is not callable",
                spec_app.to_arg()
            )));
        }
        Ok(App {
            callable: callable.unbind(),
            script_name: spec.script_name.clone(),
            multithread: spec.threads > 1,
            multiprocess: spec.multiprocess,
        })
    })();
    result.map_err(|e| {
        eprintln!(
            "[porch] [ERROR] [pid {}] Failed to import the app {}:",
            std::process::id(),
            spec.app
        );
        e.print(py);
        let _ = py
            .import("sys")
            .and_then(|s| s.getattr("stderr"))
            .and_then(|s| s.call_method0("flush"));
    })
}

/// One Python thread: holds the GIL except while waiting for the next request.
fn serve(
    rx: crossbeam_channel::Receiver<(u32, ipc::Request)>,
    app: &App,
    sink: &Arc<Sink>,
    running: &Running,
) {
    // SAFETY: pthread_self has no preconditions. Python's thread ids are pthread_self().
    let thread_id = unsafe { libc::pthread_self() } as u64;
    Python::attach(|py| {
        let builder = match EnvironBuilder::new(py, app) {
            Ok(b) => b,
            Err(e) => {
                e.print(py);
                return;
            }
        };
        loop {
            let Ok((id, req)) = py.detach(|| rx.recv()) else {
                return;
            };
            run_request(py, app, &builder, sink, running, thread_id, id, &req);
        }
    });
}

/// Runs one request, registered as running on this thread for stack dumps.
#[allow(clippy::too_many_arguments)]
fn run_request(
    py: Python<'_>,
    app: &App,
    builder: &EnvironBuilder,
    sink: &Arc<Sink>,
    running: &Running,
    thread_id: u64,
    id: u32,
    req: &ipc::Request,
) {
    let lock = || running.lock().unwrap_or_else(|e| e.into_inner());
    lock().insert(id, thread_id);
    wsgi::call_app(py, app, builder, req, Output::new(id, sink.clone()));
    lock().remove(&id);
}

/// Waits for SIGUSR1 from the front (a request timed out) and sends the Python stack of
/// every running request. A separate thread, so a worker busy in Python still answers:
/// Python hands the GIL to waiting threads every few milliseconds.
fn dump_on_signal(sink: &Sink, running: &Running) {
    // SAFETY: sigset operations on a local set; SIGUSR1 was blocked in every thread by
    // `block_dump_signal` before any thread started, so sigwait receives it here.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
    }
    loop {
        let mut sig = 0;
        // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        let jobs: Vec<(u32, u64)> = running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, t)| (*id, *t))
            .collect();
        for (id, thread) in jobs {
            let text = Python::attach(|py| {
                let format = || -> PyResult<String> {
                    let frames = py.import("sys")?.call_method0("_current_frames")?;
                    let frames = frames.cast_into::<PyDict>()?;
                    let Some(frame) = frames.get_item(thread)? else {
                        return Ok("(no Python frame for the thread)\n".into());
                    };
                    let lines = py
                        .import("traceback")?
                        .call_method1("format_stack", (frame,))?;
                    Ok(lines.extract::<Vec<String>>()?.concat())
                };
                format().unwrap_or_else(|e| format!("(stack unavailable: {e})\n"))
            });
            let mut frame = Vec::new();
            ipc::encode_vec(&mut frame, Kind::Stack, id, text.as_bytes());
            sink.write_detached(&frame);
        }
    }
}

/// Blocks SIGUSR1 in the calling thread; threads started afterwards inherit the mask.
fn block_dump_signal() {
    // SAFETY: sigset operations on a local set and pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
