//! The worker loop, inside the app's own interpreter (`python -m porch.worker`).
//!
//! The main thread reads frames from the front. `threads` Python threads each take the GIL
//! once and give it up only while waiting for the next request (so an idle worker costs
//! no GIL traffic and a busy one no hand-offs), run the WSGI call and write their own
//! response frames.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use porch_ipc::spawn::{self, WorkerSpec, EXIT_IMPORT_FAILED, EXIT_MISMATCH, SOCKET_FD, SPEC_ENV};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::asgi::{Channel, Running};
use crate::inbox::{Inbox, Next};
use crate::wsgi::{self, App, EnvironBuilder, Output, Sink};
use porch_ipc::spawn::{EventLoop, Interface};
use porch_ipc::{self as ipc, Kind};

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
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag on this process.
    unsafe {
        // If the front dies, its workers must not outlive it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    wait_for_the_front_on_term_and_int();
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
    block_front_signals();
    let app = match import_app(py, &spec) {
        Ok(app) => app,
        Err(()) => return Ok(EXIT_IMPORT_FAILED),
    };
    let asgi = match spec.interface {
        // Forced WSGI: an async callable would fail every request, so it fails here once.
        Interface::Wsgi => {
            let name = format!("{}:{}", spec.app.module, spec.app.callable);
            let checked = py
                .import("porch._app")
                .and_then(|m| m.call_method1("check_wsgi", (app.callable.bind(py), name)));
            if let Err(e) = checked {
                e.print(py);
                return Ok(EXIT_IMPORT_FAILED);
            }
            false
        }
        Interface::Asgi => true,
        Interface::Auto => match python_asgi(py)
            .and_then(|m| m.call_method1("is_asgi", (app.callable.bind(py),)))
            .and_then(|v| v.extract::<bool>())
        {
            Ok(asgi) => asgi,
            Err(e) => {
                e.print(py);
                return Ok(EXIT_IMPORT_FAILED);
            }
        },
    };
    if asgi {
        return serve_asgi(py, spec, stream, app);
    }
    // The rest runs without the GIL: the loop takes it per request, as threads do.
    py.detach(|| serve_all(spec, stream, app))
}

/// `porch._asgi`, the Python half of the ASGI worker.
fn python_asgi(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("porch._asgi")
}

/// Runs an ASGI app: the event loop (`porch._asgi.serve`) holds the GIL and this thread
/// until the front closes the socket; lifespan startup comes before `Ready`.
fn serve_asgi(
    py: Python<'_>,
    spec: WorkerSpec,
    stream: UnixStream,
    app: App,
) -> anyhow::Result<u8> {
    if spec.threads > 1 {
        eprintln!(
            "[porch] [INFO] [pid {}] --threads does not apply to an ASGI app: its event loop runs up to --asgi-concurrency ({}) requests at once",
            std::process::id(),
            spec.asgi_concurrency
        );
    }
    let sink = Arc::new(Sink::new(stream.try_clone()?, false));
    let running: Running = Arc::default();
    let inbox = Arc::new(Inbox::default());
    {
        let (sink, running, inbox) = (sink.clone(), running.clone(), inbox.clone());
        let stream = stream.try_clone()?;
        std::thread::spawn(move || on_signals(&sink, &running, &inbox, &stream));
    }
    let event_loop = match spec.event_loop {
        EventLoop::Auto => "auto",
        EventLoop::Asyncio => "asyncio",
        EventLoop::Uvloop => "uvloop",
    };
    let served = (|| -> PyResult<u8> {
        let channel = Bound::new(
            py,
            Channel::new(py, stream, inbox, sink, running, &spec.script_name)?,
        )?;
        python_asgi(py)?
            .call_method1(
                "serve",
                (
                    app.callable.bind(py),
                    channel,
                    event_loop,
                    spec.asgi_concurrency,
                ),
            )?
            .extract()
    })();
    Ok(served.unwrap_or_else(|e| {
        e.print(py);
        1
    }))
}

fn serve_all(spec: WorkerSpec, stream: UnixStream, app: App) -> anyhow::Result<u8> {
    let app = Arc::new(app);

    let sink = Arc::new(Sink::new(stream.try_clone()?, spec.threads > 1));
    let mut ready = Vec::new();
    ipc::encode_vec(
        &mut ready,
        Kind::Ready,
        0,
        &spawn::ready_payload(std::process::id(), false, spec.threads as u32),
    );
    (&stream).write_all(&ready)?;

    let running: Running = Arc::default();
    let inbox = Arc::new(Inbox::default());
    {
        let (sink, running, inbox) = (sink.clone(), running.clone(), inbox.clone());
        let stream = stream.try_clone()?;
        std::thread::spawn(move || on_signals(&sink, &running, &inbox, &stream));
    }
    if spec.threads == 1 {
        serve_inline(&stream, &app, &sink, &running, &inbox);
        return Ok(0);
    }

    let threads: Vec<_> = (0..spec.threads)
        .map(|_| {
            let (inbox, app, sink, running) =
                (inbox.clone(), app.clone(), sink.clone(), running.clone());
            std::thread::spawn(move || serve(&inbox, &app, &sink, &running))
        })
        .collect();
    while inbox.read_from(&stream) {}
    // Let running requests finish (the front bounds this with its graceful timeout).
    for t in threads {
        let _ = t.join();
    }
    Ok(0)
}

/// One thread, the Python one, reads the socket itself: no hand-off between threads.
/// Requests that arrived together are run back to back and their responses leave in one
/// write (bounded in size and delay), so a batch costs one wake-up on each side.
fn serve_inline(
    stream: &UnixStream,
    app: &App,
    sink: &Arc<Sink>,
    running: &Running,
    inbox: &Inbox,
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
        let mut held_since: Option<std::time::Instant> = None;
        loop {
            match inbox.next_or_read() {
                Next::Job((id, req), more) => {
                    // Hold this response if more requests wait, but not for long.
                    let hold = more
                        && held_since
                            .is_none_or(|t| t.elapsed() < std::time::Duration::from_millis(2));
                    sink.hold(hold);
                    if !hold {
                        sink.flush_held();
                        held_since = None;
                    } else if held_since.is_none() {
                        held_since = Some(std::time::Instant::now());
                    }
                    run_request(py, app, &builder, sink, running, thread_id, id, &req);
                }
                Next::Read => {
                    sink.hold(false);
                    sink.flush_held();
                    held_since = None;
                    py.detach(|| inbox.read_from(stream));
                }
                Next::Closed => {
                    sink.hold(false);
                    sink.flush_held();
                    return;
                }
            }
        }
    });
}

/// Puts the working directory and extra paths on `sys.path`, imports the app and resolves the callable.
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
        // Gunicorn's post_fork: after the paths are set, before the app is imported.
        let hooks = match &spec.hooks {
            Some(h) => {
                let m = py.import("porch.hooks")?;
                m.call_method1("worker_start", (h.source.as_str(), h.info.as_str()))?;
                Some(m)
            }
            None => None,
        };

        let spec_app = &spec.app;
        let module = py.import(spec_app.module.as_str())?;
        let mut callable = module.getattr(spec_app.callable.as_str()).map_err(|_| {
            pyo3::exceptions::PyAttributeError::new_err(format!(
                "module {:?} has no attribute {:?}",
                spec_app.module, spec_app.callable
            ))
        })?;
        if spec_app.factory {
            callable = match &spec_app.args {
                None => callable.call0()?,
                // Literal arguments only, parsed by Python's own `ast`, as Gunicorn does.
                Some(text) => py
                    .import("porch._app")?
                    .call_method1("call_factory", (callable, text.as_str()))?,
            };
        }
        if !callable.is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "{} is not callable",
                spec_app
            )));
        }
        // post_worker_init, and pre_request/post_request around the app.
        if let Some(m) = hooks {
            callable = m.call_method1("worker_ready", (callable,))?;
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
fn serve(inbox: &Inbox, app: &App, sink: &Arc<Sink>, running: &Running) {
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
            let Some((id, req)) = py.detach(|| inbox.wait_next()) else {
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

/// The front's two signals, answered by this thread while the others may be deep in a
/// view: SIGUSR2 (give back the requests not started, see [`Inbox::give_back`]) and
/// SIGUSR1 (a request timed out: send the Python stack of every running request; Python
/// hands the GIL to a waiting thread every few milliseconds, so this answers too).
fn on_signals(sink: &Sink, running: &Running, inbox: &Inbox, stream: &UnixStream) {
    let set = front_signals();
    loop {
        let mut sig = 0;
        // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        if sig == libc::SIGUSR2 {
            let mut frames = Vec::new();
            for id in inbox.give_back(stream) {
                ipc::encode_vec(&mut frames, Kind::Returned, id, &[]);
            }
            ipc::encode_vec(&mut frames, Kind::Returned, 0, &[]);
            sink.write_detached(&frames);
            continue;
        }
        // A request timed out: the front kills this worker next (Gunicorn's worker_abort).
        Python::attach(|py| {
            let hooks = py
                .import("sys")
                .and_then(|s| s.getattr("modules"))
                .and_then(|m| m.get_item("porch.hooks"));
            if let Ok(m) = hooks {
                let _ = m.call_method0("worker_abort");
            }
        });
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

/// TERM and INT sent to the whole process group (systemd's `KillMode=control-group`,
/// Ctrl-C in a terminal) reach the workers too. The front drains on them; a worker keeps
/// running what it has until the front closes its socket, instead of dying mid-request
/// (the default action) or raising KeyboardInterrupt in a view (Python's).
/// Set once TERM or INT reached this worker (Gunicorn's `worker_int` hook then runs as
/// the worker stops).
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn wait_for_the_front_on_term_and_int() {
    extern "C" fn ignore(_: libc::c_int) {
        INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: installs a handler that only sets a flag (async-signal-safe) for
    // two signals of this process. A handler, not SIG_IGN: a handler is reset to the
    // default action on exec, so programs the app starts still stop on TERM and INT.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

/// SIGUSR1 and SIGUSR2, the signals the front sends its workers.
fn front_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        set
    }
}

/// Blocks the front's signals in the calling thread; threads started afterwards inherit
/// the mask, so only [`on_signals`]'s sigwait receives them.
fn block_front_signals() {
    let set = front_signals();
    // SAFETY: pthread_sigmask on this thread with an initialised set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
