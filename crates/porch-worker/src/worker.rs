//! The worker loop, inside the app's own interpreter (`python -m porch.worker`).
//!
//! The main thread reads frames from the front. `threads` Python threads each take the GIL
//! once and give it up only while waiting for the next request (so an idle worker costs
//! no GIL traffic and a busy one no hand-offs), run the WSGI call and write their own
//! response frames.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use porch_ipc::spawn::{self, WorkerSpec, EXIT_IMPORT_FAILED, EXIT_MISMATCH, SOCKET_FD, SPEC_ENV};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::wsgi::{self, App, EnvironBuilder, Output, Sink};
use porch_ipc::{self as ipc, Decoder, Kind};

/// Request id → the Python thread id running it, for stack dumps of stuck requests.
type Running = Arc<Mutex<HashMap<u32, u64>>>;

/// Runs the worker until the front closes its socket; returns the exit status.
/// Called from Python's main thread, with the GIL held.
pub fn main(py: Python<'_>) -> u8 {
    let spec = match std::env::var(SPEC_ENV)
        .map_err(|e| format!("{SPEC_ENV}: {e}"))
        .and_then(|s| WorkerSpec::from_json(&s))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("porch worker: cannot work with this porch: {e}");
            return EXIT_MISMATCH;
        }
    };
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag on this process; signal() with
    // SIG_DFL restores the default action of SIGINT, which Python replaced at start-up.
    unsafe {
        // If the front dies, its workers must not outlive it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Ctrl-C in a terminal reaches the whole process group: a worker stops like the
        // front does, instead of raising KeyboardInterrupt inside a view.
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
    // SAFETY: the supervisor placed our end of the socket pair on SOCKET_FD before exec
    // and nothing else in this process owns that descriptor.
    let stream = unsafe { UnixStream::from_raw_fd(SOCKET_FD) };
    match run(py, spec, stream) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("porch worker: {e:#}");
            1
        }
    }
}

fn run(py: Python<'_>, spec: WorkerSpec, stream: UnixStream) -> anyhow::Result<u8> {
    if let Some(dir) = &spec.chdir {
        std::env::set_current_dir(dir)?;
    }
    block_dump_signal();
    let app = match import_app(py, &spec) {
        Ok(app) => app,
        Err(()) => return Ok(EXIT_IMPORT_FAILED),
    };
    // The rest runs without the GIL: the loop takes it per request, as threads do.
    py.detach(|| serve_all(spec, stream, app))
}

fn serve_all(spec: WorkerSpec, stream: UnixStream, app: App) -> anyhow::Result<u8> {
    let app = Arc::new(app);

    let sink = Arc::new(Sink::new(stream.try_clone()?, spec.threads > 1));
    let mut ready = Vec::new();
    ipc::encode_vec(
        &mut ready,
        Kind::Ready,
        0,
        &spawn::ready_payload(std::process::id()),
    );
    (&stream).write_all(&ready)?;

    let running: Running = Arc::default();
    {
        let (sink, running) = (sink.clone(), running.clone());
        std::thread::spawn(move || dump_on_signal(&sink, &running));
    }
    if spec.threads == 1 {
        serve_inline(stream, &app, &sink, &running);
        return Ok(0);
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
    Ok(0)
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
        sys.setattr("argv", vec!["porch"])?;
        // Fatal errors (segfaults in C extensions) print the Python stack before dying.
        py.import("faulthandler")?.call_method0("enable")?;

        let spec_app = &spec.app;
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
                spec_app
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
