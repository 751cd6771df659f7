//! Start-up, signals and shutdown: wires the front, the queue and the worker pool.

use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use porch_config::cli::Args;
use porch_config::{effective_args, gunicorn, Config};
use porch_front::{self as front, Front, Listener};

use crate::interpreter::Interpreter;

/// Threads in tokio's blocking pool (its default is 512).
const BLOCKING_THREADS: usize = 16;
use crate::process::PidFile;
use crate::supervisor::Pool;

pub fn main() -> ExitCode {
    let argv = match effective_args(std::env::args_os()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("porch: {e}");
            return ExitCode::from(2);
        }
    };
    // Every refused or unknown option at once, each with what to do instead.
    let screened = match gunicorn::screen(argv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("porch: cannot start with these options:\n  {e}");
            return ExitCode::from(2);
        }
    };
    let mut args = match Args::try_parse_from(&screened.args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    args.notes = screened.notes;
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("porch: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(mask) = cfg.process.umask {
        crate::process::set_umask(mask);
    }
    if cfg.process.daemon && !args.check_config {
        if let Err(e) = crate::process::daemonize() {
            eprintln!("porch: cannot run in the background: {e}");
            return ExitCode::from(1);
        }
    }
    if let Err(e) = setup_logging(&cfg) {
        eprintln!("porch: cannot open the error log: {e}");
        return ExitCode::from(2);
    }
    for note in &cfg.notes {
        tracing::warn!("{note}");
    }
    raise_open_files_limit();
    // Before the runtime: its threads inherit the policy (workers are set back to normal
    // when they start).
    if cfg.process.batch_scheduling {
        if let Err(e) = crate::process::batch_scheduling() {
            tracing::warn!("batch_scheduling: cannot set SCHED_BATCH ({e}); the front runs under the normal policy");
        }
    }
    let cores = porch_config::available_cpus();
    // On one core (a pinned or small container) a single-threaded scheduler avoids the
    // work-stealing machinery's cross-thread wake-ups.
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cores.min(4));
        b
    };
    // The blocking pool reads static files that are not in the page cache, and writes
    // request bodies that spill to disk. Each of its threads costs a stack and may get
    // its own malloc arena, so it is kept small: more reads queue for a thread, as they
    // would queue for the disk anyway.
    builder.max_blocking_threads(BLOCKING_THREADS);
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("porch: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(cfg, &args));
    // Workers exit on their own when their socket closes; do not wait for stray tasks.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Every connection, upstream connection, static file being sent and worker socket is a
/// descriptor: the soft limit (1,024 under systemd by default) is raised to the hard one
/// at start, as nginx's `worker_rlimit_nofile` lets operators do, and the limit in effect
/// is logged so it can be checked against `limit_connections`.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit reads it. Raising the
    // soft limit up to the hard one needs no privilege.
    let (before, after) = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                lim.rlim_cur = before;
            }
        }
        (before, lim.rlim_cur)
    };
    if after > before {
        tracing::info!("open files limit: {after} (raised from {before})");
    } else {
        tracing::info!("open files limit: {after}");
    }
}

fn setup_logging(cfg: &Config) -> std::io::Result<()> {
    if let Some(path) = cfg.error_log.as_deref().filter(|p| *p != "-") {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // Workers inherit stderr, so Python tracebacks land in the same file; with
        // --capture-output their stdout (print) too.
        let fds: &[i32] = if cfg.process.capture_output {
            &[1, 2]
        } else {
            &[2]
        };
        for &fd in fds {
            // SAFETY: both descriptors are open; dup2 atomically replaces `fd`.
            if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(cfg.log_level)
        .with_target(false)
        .with_ansi(false)
        .init();
    Ok(())
}

/// Sets the process's groups, group and user, in that order (the user last, since it
/// takes the right to change the others).
fn drop_privileges(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls on this process with valid arguments; the runtime's
    // threads share the credentials (glibc applies set*id to every thread).
    unsafe {
        if libc::setgroups(1, &gid) != 0 && libc::geteuid() == 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setgid(gid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setuid(uid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A running worker slot and the switch that retires it.
struct Slot {
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Slot {
    fn start(pool: &Arc<Pool>, index: usize, worker: crate::supervisor::Worker) -> Slot {
        // Counted before the task runs, so /healthz never sees a serving porch with no worker.
        pool.stats.alive.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        Slot {
            task: tokio::spawn(pool.clone().run_slot(index, worker, stopped)),
            stop,
        }
    }
}

async fn run(mut cfg: Config, args: &Args) -> ExitCode {
    let check_only = args.check_config;
    // systemd's sockets replace the configured addresses (never with --check-config,
    // which must leave them alone).
    let inherited = match crate::systemd::inherited().filter(|_| !check_only) {
        Some(fds) => match crate::systemd::adopt(&mut cfg, &fds) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("porch: cannot use the sockets systemd passed (LISTEN_FDS): {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let cfg = Arc::new(cfg);
    // Handlers first: a HUP arriving while the workers boot must not kill porch (the
    // default action), and a TTIN/TTOU must not be lost; they are acted on once serving.
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut quit = signal(SignalKind::quit()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN)).expect("signal handler");
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU)).expect("signal handler");
    let (queue_tx, queue_rx) = async_channel::bounded(cfg.limits.backlog);
    let queue_stats = Arc::new(porch_front::dispatch::QueueStats::default());
    // The workers' interpreter is checked before anything else starts: a missing or
    // mismatched worker extension is a configuration error with its fix, not a boot loop.
    let pool = match &cfg.app {
        None => None,
        Some(app) => match checked_interpreter(&cfg).await {
            Ok(interpreter) => Some(Pool::new(
                &cfg,
                app,
                interpreter,
                queue_rx,
                queue_stats.clone(),
            )),
            Err(e) => {
                eprintln!("porch: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
    };

    // Certificates are read before anything starts, so a bad one stops start-up (and
    // fails `--check-config`) with the file named.
    let mut tls = match front::tls::load_all(&cfg.listeners) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("porch: configuration error: {e}");
            return ExitCode::from(2);
        }
    };

    if check_only {
        let Some(pool) = &pool else {
            println!("porch: configuration OK (no app)");
            return ExitCode::SUCCESS;
        };
        let app = cfg.app.as_ref().map(|a| a.to_string()).unwrap_or_default();
        pool.without_hooks();
        return match pool.boot().await {
            Ok(w) => {
                drop(w);
                println!("porch: configuration OK; the app {app} imports");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("porch: the app {app} cannot start: {e}");
                ExitCode::from(1)
            }
        };
    }

    let mut listeners = Vec::new();
    // systemd's sockets stand in for the configured addresses, which a reload re-reads.
    let from_systemd = inherited.is_some();
    if let Some(inherited) = inherited {
        tracing::info!("using {} socket(s) passed by systemd", inherited.len());
        listeners = inherited;
    } else {
        for l in &cfg.listeners {
            match Listener::bind(&l.bind).await {
                Ok(sock) => listeners.push(sock),
                Err(e) => {
                    tracing::error!("cannot listen on {}: {e}", l.bind);
                    return ExitCode::from(1);
                }
            }
        }
    }
    let _pidfile = match &cfg.process.pidfile {
        Some(path) => match PidFile::write(path) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!("cannot write the pid file {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let admin = match cfg.admin_bind {
        Some(a) => match tokio::net::TcpListener::bind(a).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!("cannot listen on the admin address {a}: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };

    let front_hooks = pool.as_ref().and_then(|p| p.front_hooks());
    if let Some(h) = &front_hooks {
        h.run("on_starting", serde_json::json!({})).await;
    }

    // Ports below 1024 need root only to bind; everything after runs as --user/--group.
    if let Some((uid, gid)) = cfg.run_as {
        if let Err(e) = drop_privileges(uid, gid) {
            tracing::error!("cannot switch to uid {uid} gid {gid}: {e}");
            return ExitCode::from(1);
        }
        tracing::info!("running as uid {uid} gid {gid}");
    }

    // Import the app in every worker before taking the first request: an app that fails
    // to import stops start-up with its traceback instead of looping.
    let mut slots = Vec::new();
    if let Some(pool) = &pool {
        // The first worker boots alone: an app that fails to import prints one traceback,
        // not one interleaved copy per worker. The others then boot together.
        let boots = async {
            let first = pool.boot().await;
            if first.is_err() {
                return vec![first];
            }
            let rest = futures_util::future::join_all((1..cfg.workers).map(|_| pool.boot()));
            std::iter::once(first).chain(rest.await).collect()
        };
        // TERM/INT/QUIT during start-up stop at once; the booting workers are killed
        // when their handles drop.
        let boots = tokio::select! {
            b = boots => b,
            _ = term.recv() => return stopped_during_startup(),
            _ = int.recv() => return stopped_during_startup(),
            _ = quit.recv() => return stopped_during_startup(),
        };
        let mut workers = Vec::new();
        for b in boots {
            match b {
                Ok(w) => workers.push(w),
                Err(e) => {
                    tracing::error!("worker failed to boot: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        slots = workers
            .into_iter()
            .enumerate()
            .map(|(i, w)| Slot::start(pool, i, w))
            .collect();
    }

    if let (true, Some(pool)) = (cfg.process.reload, &pool) {
        let mut roots: Vec<std::path::PathBuf> = cfg
            .chdir
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .into_iter()
            .collect();
        roots.extend(cfg.pythonpath.iter().cloned());
        let pool = pool.clone();
        tokio::spawn(crate::reload::watch(
            roots,
            cfg.process.reload_extra_files.clone(),
            move || pool.generation.send_modify(|g| *g += 1),
        ));
    }
    let worker_stats = pool.as_ref().map(|p| p.stats.clone());
    let front = match Front::new(cfg.clone(), queue_tx, worker_stats, queue_stats) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot start the front: {e}");
            return ExitCode::from(1);
        }
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The admin listener outlives the drain, so probes see /healthz turn 503.
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let mut fronts = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let tls = tls[i].take();
        let bind = &cfg.listeners[i].bind;
        match (tls.is_some(), cfg.listeners[i].h2c, bind) {
            (true, _, porch_config::BindAddr::Tcp(a)) => {
                tracing::info!("listening on https://{a} (HTTP/2 and HTTP/1.1)")
            }
            (true, _, _) => tracing::info!("listening on {bind} with TLS (HTTP/2 and HTTP/1.1)"),
            (false, true, _) => {
                tracing::info!("listening on {bind} (HTTP/1.1 and cleartext HTTP/2)")
            }
            (false, false, _) => tracing::info!("listening on {bind}"),
        }
        fronts.push(tokio::spawn(front.clone().serve(
            i,
            l,
            tls,
            shutdown_rx.clone(),
        )));
    }
    if let Some(l) = admin {
        tracing::info!(
            "admin on http://{}",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        tokio::spawn(front::serve_admin(front.clone(), l, admin_stop_rx.clone()));
    }
    match &cfg.app {
        Some(app) => tracing::info!(
            "porch {} serving {} with {} worker(s) x {} thread(s)",
            env!("CARGO_PKG_VERSION"),
            app,
            cfg.workers,
            cfg.threads
        ),
        None => tracing::info!(
            "porch {} running as a front (no app)",
            env!("CARGO_PKG_VERSION")
        ),
    }
    if let Some(h) = &front_hooks {
        h.run("when_ready", serde_json::json!({})).await;
    }

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = quit.recv() => {
                tracing::info!("QUIT: stopping now");
                return ExitCode::SUCCESS;
            }
            _ = hup.recv() => {
                if let Some(pool) = &pool {
                    // Re-read flags, environment and porch.toml: a broken file keeps
                    // everything as it is.
                    match Config::from_args(args) {
                        Err(e) => {
                            tracing::error!("HUP: configuration error, nothing reloaded: {e}");
                            continue;
                        }
                        Ok(new) => match &new.app {
                            Some(app) => {
                                let interpreter = match checked_interpreter(&new).await {
                                    Ok(i) => i,
                                    Err(e) => {
                                        tracing::error!("HUP: {e}; nothing reloaded");
                                        continue;
                                    }
                                };
                                let changed = pool.update_spec(&new, app, interpreter);
                                if !changed.is_empty() {
                                    tracing::info!("HUP: new settings for workers: {}", changed.join(", "));
                                }
                                if (new.listeners != cfg.listeners && !from_systemd) || new.workers != cfg.workers || new.threads != cfg.threads {
                                    tracing::warn!("HUP: listeners, routes, workers and threads change on restart only");
                                }
                            }
                            None => tracing::warn!("HUP: the configuration has no app any more; keeping the current one"),
                        },
                    }
                    if let Some(h) = pool.front_hooks() {
                        h.run("on_reload", serde_json::json!({})).await;
                    }
                    tracing::info!("HUP: starting fresh workers with the app's current code");
                    pool.generation.send_modify(|g| *g += 1);
                }
            }
            _ = ttin.recv() => {
                if let Some(pool) = &pool {
                    let pool = pool.clone();
                    let index = slots.len();
                    tracing::info!("TTIN: adding worker slot {index}");
                    match pool.boot().await {
                        Ok(w) => {
                            slots.push(Slot::start(&pool, index, w));
                            if let Some(h) = pool.front_hooks() {
                                h.run("nworkers_changed", serde_json::json!({"new": index + 1, "old": index})).await;
                            }
                        }
                        Err(e) => tracing::error!("TTIN: the new worker failed to start: {e}"),
                    }
                }
            }
            _ = ttou.recv() => {
                if slots.len() > 1 {
                    let slot = slots.pop().expect("more than one slot");
                    tracing::info!("TTOU: retiring a worker ({} left)", slots.len());
                    let _ = slot.stop.send(true);
                    tokio::spawn(slot.task);
                    if let Some(h) = pool.as_ref().and_then(|p| p.front_hooks()) {
                        h.run("nworkers_changed", serde_json::json!({"new": slots.len(), "old": slots.len() + 1})).await;
                    }
                } else {
                    tracing::warn!("TTOU: keeping the last worker");
                }
            }
        }
    }

    front.ready.store(false, Ordering::Relaxed);
    if !cfg.shutdown_delay.is_zero() {
        // Load balancers see /healthz turn 503 and stop sending; what they still send
        // meanwhile is served. A second TERM/INT ends the wait, QUIT stops at once.
        tracing::info!(
            "stopping: /healthz answers 503; still serving for {:?} (shutdown_delay)",
            cfg.shutdown_delay
        );
        tokio::select! {
            _ = tokio::time::sleep(cfg.shutdown_delay) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = quit.recv() => return ExitCode::SUCCESS,
        }
    }
    tracing::info!(
        "shutting down: finishing accepted requests (up to {:?})",
        cfg.graceful_timeout
    );
    let _ = shutdown_tx.send(true);
    for f in fronts {
        let _ = f.await;
    }
    for slot in &slots {
        let _ = slot.stop.send(true);
    }
    // A worker with open WebSockets keeps them for the graceful time, closes them with
    // 1012, then has the graceful time again to end its tasks before it is killed.
    let _ = tokio::time::timeout(
        cfg.graceful_timeout * 2 + Duration::from_secs(1),
        futures_util::future::join_all(slots.into_iter().map(|s| s.task)),
    )
    .await;
    let _ = admin_stop_tx.send(true);
    if let Some(h) = pool.as_ref().and_then(|p| p.front_hooks()) {
        h.run("on_exit", serde_json::json!({})).await;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The interpreter the configuration names, once it proved it can run porch's workers.
async fn checked_interpreter(cfg: &Config) -> Result<Interpreter, String> {
    let interpreter = Interpreter::resolve(cfg)?;
    let found = interpreter.probe().await?;
    tracing::debug!(
        "workers run {} (Python {})",
        interpreter.path.display(),
        found.python_version
    );
    Ok(interpreter)
}

fn stopped_during_startup() -> ExitCode {
    tracing::info!("stopped while the workers were starting");
    ExitCode::SUCCESS
}
