//! The supervisor: starts worker processes, watches them, replaces the ones that die,
//! time out or reach `--max-requests`, and reloads them on SIGHUP.
//!
//! Each worker slot is a task that owns one worker at a time. A successor is always
//! booted (app imported) before its predecessor stops taking requests, so recycling and
//! reloading never leave the queue without a worker; a failed import on reload keeps the
//! old worker serving.

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};

use porch_config::Config;
use porch_front::dispatch::{Link, LinkConfig, LinkEnd, Queue, WorkerStats};
use porch_ipc::spawn::{self, WorkerSpec, EXIT_IMPORT_FAILED, EXIT_MISMATCH, SOCKET_FD, SPEC_ENV};
use porch_ipc::{Decoder, Kind};

use crate::interpreter::Interpreter;

/// A booted worker process: its app is imported and it waits for requests.
pub struct Worker {
    pub pid: u32,
    /// What it runs (WSGI or ASGI) and how many requests at once.
    ready: spawn::Ready,
    child: Child,
    link: Link,
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("the app could not be imported (traceback above)")]
    ImportFailed,
    #[error("the worker exited during start-up: {0}")]
    Exited(String),
    #[error("cannot start a worker process: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("the worker sent no ready message within {0:?}")]
    Slow(Duration),
    #[error("the worker is from another porch release: {0}")]
    Mismatch(String),
}

/// Everything the slots share.
pub struct Pool {
    /// Replaced on SIGHUP when the configuration changed what workers import.
    spec: std::sync::Mutex<WorkerSpec>,
    /// Replaced on SIGHUP with the spec (another `--venv` or `--python`).
    interpreter: std::sync::Mutex<Interpreter>,
    /// Gunicorn's front-side hooks (`pre_fork`, `child_exit`) from a Python configuration.
    hooks: std::sync::Mutex<Option<crate::hooks::FrontHooks>>,
    /// `-e KEY=VALUE` / `raw_env`, set in each new worker's environment.
    worker_env: std::sync::Mutex<Vec<(String, String)>>,
    link: LinkConfig,
    max_requests: u64,
    jitter: u64,
    boot_timeout: Duration,
    graceful_timeout: Duration,
    queue: Queue,
    requeue: async_channel::Sender<porch_front::dispatch::Job>,
    /// Bumped by SIGHUP: every slot boots a fresh worker.
    pub generation: watch::Sender<u64>,
    /// `--max-worker-memory` in bytes.
    max_memory: Option<u64>,
    pub stats: Arc<WorkerStats>,
}

impl Pool {
    pub fn new(
        cfg: &Config,
        app: &porch_config::AppSpec,
        interpreter: Interpreter,
        queue: Queue,
        queue_stats: Arc<porch_front::dispatch::QueueStats>,
    ) -> Arc<Pool> {
        // Requests given back by a worker, or left unstarted by a dead one: every link of
        // the pool serves them before the queue.
        let (requeue, returned) = async_channel::unbounded();
        Arc::new(Pool {
            spec: std::sync::Mutex::new(worker_spec(cfg, app)),
            hooks: std::sync::Mutex::new(crate::hooks::FrontHooks::new(cfg, &interpreter)),
            interpreter: std::sync::Mutex::new(interpreter),
            worker_env: std::sync::Mutex::new(cfg.process.worker_env.clone()),
            link: LinkConfig {
                threads: cfg.threads,
                prefetch: cfg.prefetch,
                timeout: cfg.timeout,
                queue_timeout: cfg.queue_timeout,
                max_requests: None,
                queue_stats: queue_stats.clone(),
                capacity: Arc::default(),
                returned: Some(returned),
                asgi: false,
                graceful: cfg.graceful_timeout,
            },
            max_requests: cfg.max_requests,
            jitter: cfg.max_requests_jitter,
            boot_timeout: cfg.boot_timeout,
            graceful_timeout: cfg.graceful_timeout,
            queue,
            requeue,
            generation: watch::channel(0).0,
            max_memory: cfg.max_worker_memory,
            stats: Arc::default(),
        })
    }

    /// Starts a worker process and waits until it has imported the app.
    pub async fn boot(&self) -> Result<Worker, BootError> {
        if let Some(h) = self.front_hooks() {
            h.run("pre_fork", serde_json::json!({})).await;
        }
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let theirs_fd = theirs.as_raw_fd();
        let interpreter = self.lock_interpreter().clone();
        let mut cmd = Command::new(&interpreter.path);
        cmd.args(["-m", spawn::WORKER_MODULE])
            .env(
                SPEC_ENV,
                self.spec
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .to_json(),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(venv) = &interpreter.venv {
            cmd.env("VIRTUAL_ENV", venv);
        }
        // systemd's sockets are porch's, not the workers'.
        for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            cmd.env_remove(var);
        }
        cmd.envs(
            self.worker_env
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        // SAFETY: the closure runs in the forked child before exec and only calls dup2,
        // fcntl and sched_setscheduler, which are async-signal-safe system calls; it
        // touches no memory shared with the parent (`param` is its own stack value).
        let reset_policy = crate::process::batch_set_by_porch();
        unsafe {
            cmd.pre_exec(move || {
                // porch put the front under SCHED_BATCH (`batch_scheduling`); a worker
                // runs under the normal policy, as it would anywhere else.
                let param = libc::sched_param { sched_priority: 0 };
                if reset_policy && libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if theirs_fd == SOCKET_FD {
                    if libc::fcntl(SOCKET_FD, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_fd, SOCKET_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        ours.set_nonblocking(true)?;
        let mut conn = UnixStream::from_std(ours)?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let ready = match await_ready(&mut conn, &mut buf, self.boot_timeout, child.wait()).await {
            Ok(ready) => ready,
            Err(e @ BootError::Slow(_)) => {
                let _ = child.start_kill();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if ready.asgi {
            tracing::info!(
                "booted worker {pid} (ASGI, {} requests at once)",
                ready.capacity
            );
        } else {
            tracing::info!("booted worker {pid}");
        }
        Ok(Worker {
            pid,
            ready,
            child,
            link: Link::new(pid, conn, buf, self.requeue.clone()),
        })
    }

    /// The link of one worker, sized by what the worker reported: its threads (WSGI) or
    /// tasks (ASGI) are the requests it is sent at once, as threads always were.
    fn link_config(&self, slot: usize, ready: &spawn::Ready) -> LinkConfig {
        let mut link = self.link.clone();
        if ready.capacity > 0 {
            link.threads = ready.capacity as usize;
        }
        link.asgi = ready.asgi;
        let noise = (std::process::id() as u64 * 31).wrapping_add(nanos());
        link.max_requests = max_requests_limit(self.max_requests, self.jitter, slot, noise);
        link
    }

    /// Runs one worker slot until shutdown, replacing its worker whenever needed.
    /// `stopping` turning true (or its sender going away) retires this slot: its worker
    /// finishes what it runs and exits.
    pub async fn run_slot(
        self: Arc<Self>,
        slot: usize,
        mut worker: Worker,
        mut stopping: watch::Receiver<bool>,
    ) {
        // `stats.alive` was counted by the caller when the slot was created.
        let mut generation = self.generation.subscribe();
        let mut memory_check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let (drain_tx, drain_rx) = watch::channel(*stopping.borrow());
            let retire = Arc::new(Notify::new());
            let pid = worker.pid;
            let mut serve = tokio::spawn(worker.link.serve(
                self.queue.clone(),
                self.link_config(slot, &worker.ready),
                drain_rx,
                retire.clone(),
            ));
            let mut child = worker.child;
            let mut successor: Option<tokio::task::JoinHandle<Result<Worker, BootError>>> = None;
            let mut next: Option<Worker> = None;
            let mut cause = "recycled";
            let mut boot_failures = 0u32;
            let (end, served, running) = loop {
                tokio::select! {
                    res = &mut serve => break res.expect("link task does not panic"),
                    _ = retire.notified(), if successor.is_none() && next.is_none() => {
                        tracing::info!("worker {pid} reached max requests; starting its successor");
                        cause = "recycled";
                        successor = Some(tokio::spawn(self.clone().boot_owned()));
                    }
                    _ = memory_check.tick(), if self.max_memory.is_some() && successor.is_none() && next.is_none() => {
                        let limit = self.max_memory.unwrap_or(u64::MAX);
                        if let Some(rss) = rss_bytes(pid).filter(|rss| *rss > limit) {
                            tracing::warn!(
                                "worker {pid} uses {} MiB, over --max-worker-memory {} MiB; replacing it after its current requests",
                                rss >> 20,
                                limit >> 20
                            );
                            cause = "memory";
                            successor = Some(tokio::spawn(self.clone().boot_owned()));
                        }
                    }
                    _ = generation.changed(), if successor.is_none() && next.is_none() => {
                        cause = "reloaded";
                        successor = Some(tokio::spawn(self.clone().boot_owned()));
                    }
                    res = async { successor.as_mut().unwrap().await }, if successor.is_some() => {
                        successor = None;
                        match res.expect("boot task does not panic") {
                            Ok(w) => {
                                next = Some(w);
                                let _ = drain_tx.send(true);
                            }
                            Err(e) => {
                                boot_failures += 1;
                                tracing::error!("replacement for worker {pid} failed to start: {e}; worker {pid} keeps serving");
                                if cause == "recycled" {
                                    // Try again after a pause, still serving with the old one.
                                    let retire = retire.clone();
                                    let delay = backoff(boot_failures);
                                    tokio::spawn(async move { tokio::time::sleep(delay).await; retire.notify_one(); });
                                }
                            }
                        }
                    }
                    changed = stopping.changed() => {
                        if changed.is_err() || *stopping.borrow() {
                            let _ = drain_tx.send(true);
                        }
                    }
                }
            };
            // The old worker is done taking requests; make it exit and say why it did.
            let why = match &end {
                LinkEnd::Drained => {
                    self.stop_child(&mut child, pid).await;
                    match cause {
                        _ if *stopping.borrow() => "stopped",
                        "reloaded" => {
                            self.stats.restarts_reloaded.fetch_add(1, Ordering::Relaxed);
                            "reloaded"
                        }
                        "memory" => {
                            self.stats.restarts_memory.fetch_add(1, Ordering::Relaxed);
                            "recycled over --max-worker-memory"
                        }
                        _ => {
                            self.stats.restarts_recycled.fetch_add(1, Ordering::Relaxed);
                            "recycled after max requests"
                        }
                    }
                }
                LinkEnd::TimedOut { .. } => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    self.stats.restarts_timeout.fetch_add(1, Ordering::Relaxed);
                    "killed after a request timed out"
                }
                LinkEnd::WorkerGone | LinkEnd::Corrupt(_) => {
                    if let LinkEnd::Corrupt(e) = &end {
                        tracing::error!("worker {pid} broke the protocol: {e}");
                        let _ = child.start_kill();
                    }
                    let status = child.wait().await;
                    self.stats.restarts_crashed.fetch_add(1, Ordering::Relaxed);
                    let during = if running.is_empty() {
                        "between requests".to_string()
                    } else {
                        format!(
                            "while running {}",
                            running
                                .iter()
                                .map(|l| format!("\"{l}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    tracing::error!(
                        "worker {pid} died: {} {during} (after {served} requests)",
                        status.map(describe_exit).unwrap_or_else(|e| e.to_string())
                    );
                    "died"
                }
            };
            tracing::info!("worker {pid} exited: {why}");
            if let Some(h) = self.front_hooks() {
                h.run("child_exit", serde_json::json!({ "worker_pid": pid }))
                    .await;
            }
            if *stopping.borrow() {
                if let Some(w) = next.take() {
                    self.stop_worker(w).await;
                }
                if let Some(s) = successor.take() {
                    if let Ok(Ok(w)) = s.await {
                        self.stop_worker(w).await;
                    }
                }
                self.stats.alive.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            // Without a ready successor this slot serves nobody until one boots: /healthz
            // and porch_workers_alive say so (a crash loop is not healthy).
            let gap = next.is_none();
            if gap {
                self.stats.alive.fetch_sub(1, Ordering::Relaxed);
            }
            let replacement = match (next.take(), successor.take()) {
                (Some(w), _) => Some(w),
                (None, Some(s)) => match s.await.expect("boot task does not panic") {
                    Ok(w) => Some(w),
                    Err(_) => self.boot_unless_stopping(&mut stopping).await,
                },
                (None, None) => self.boot_unless_stopping(&mut stopping).await,
            };
            let Some(w) = replacement else {
                // Told to stop while no worker could start: nothing is running here.
                if !gap {
                    self.stats.alive.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            };
            if gap {
                self.stats.alive.fetch_add(1, Ordering::Relaxed);
            }
            worker = w;
        }
    }

    /// [`Self::boot_with_backoff`], given up when the slot is told to stop (a worker
    /// half-way through its boot is killed when its handle drops).
    async fn boot_unless_stopping(&self, stopping: &mut watch::Receiver<bool>) -> Option<Worker> {
        tokio::select! {
            w = self.boot_with_backoff() => Some(w),
            _ = stopping.wait_for(|s| *s) => None,
        }
    }

    async fn boot_owned(self: Arc<Self>) -> Result<Worker, BootError> {
        self.boot().await
    }

    /// Keeps trying to start a worker, waiting longer after each failure so a broken app
    /// does not spin the machine.
    async fn boot_with_backoff(&self) -> Worker {
        let mut failures = 0;
        loop {
            let started = Instant::now();
            match self.boot().await {
                Ok(w) => return w,
                Err(e) => {
                    failures += 1;
                    let delay = backoff(failures);
                    tracing::error!(
                        "worker failed to start after {:.1}s: {e}; retrying in {:.1}s",
                        started.elapsed().as_secs_f64(),
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Stops a booted worker that never took a request.
    async fn stop_worker(&self, w: Worker) {
        let Worker {
            pid,
            mut child,
            link,
            ..
        } = w;
        drop(link); // closes its socket: the worker exits
        self.stop_child(&mut child, pid).await;
    }

    /// Asks a worker to exit after its running requests, then kills it after the
    /// graceful timeout.
    async fn stop_child(&self, child: &mut Child, pid: u32) {
        // The link is gone, so the socket is closed: the worker sees end of stream,
        // finishes its threads and exits.
        if tokio::time::timeout(self.graceful_timeout, child.wait())
            .await
            .is_err()
        {
            tracing::warn!("worker {pid} did not exit within the graceful timeout; killing it");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// The binary a worker runs: porch's own file, or, once that file has been replaced or
/// removed since porch started (an upgrade in place), the running binary itself through
/// /proc, so workers can still be started and never run a different version than the front.
/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// What a worker is told at exec time.
fn worker_spec(cfg: &Config, app: &porch_config::AppSpec) -> WorkerSpec {
    WorkerSpec {
        protocol: spawn::PROTOCOL,
        app: app.clone(),
        threads: cfg.threads,
        multiprocess: cfg.workers > 1,
        chdir: cfg.chdir.clone(),
        pythonpath: cfg.pythonpath.clone(),
        script_name: cfg.script_name.clone(),
        hooks: cfg
            .hooks
            .as_ref()
            .filter(|h| crate::hooks::WORKER_HOOKS.iter().any(|n| h.has(n)))
            .map(|h| spawn::WorkerHooks {
                source: h.source.clone(),
                info: crate::hooks::server_info(cfg).to_string(),
            }),
        interface: cfg.interface.interface,
        event_loop: cfg.interface.event_loop,
        asgi_concurrency: cfg.interface.asgi_concurrency,
    }
}

impl Pool {
    /// Takes the app settings of a re-read configuration for the next workers (the
    /// thread count stays: the links are sized for it). Returns what changed.
    /// The interpreter is resolved and checked by the caller, so a HUP naming a broken one
    /// changes nothing.
    pub fn update_spec(
        &self,
        cfg: &Config,
        app: &porch_config::AppSpec,
        interpreter: Interpreter,
    ) -> Vec<&'static str> {
        let mut new = worker_spec(cfg, app);
        let mut spec = self.spec.lock().unwrap_or_else(|e| e.into_inner());
        new.threads = spec.threads;
        new.multiprocess = spec.multiprocess;
        let mut changed = Vec::new();
        if new.app != spec.app {
            changed.push("app");
        }
        if new.chdir != spec.chdir {
            changed.push("chdir");
        }
        if new.pythonpath != spec.pythonpath {
            changed.push("pythonpath");
        }
        *self.hooks.lock().unwrap_or_else(|e| e.into_inner()) =
            crate::hooks::FrontHooks::new(cfg, &interpreter);
        let mut current = self.lock_interpreter();
        if *current != interpreter {
            changed.push("python");
            *current = interpreter;
        }
        if new.script_name != spec.script_name {
            changed.push("script_name");
        }
        if new.hooks != spec.hooks {
            changed.push("hooks");
        }
        let mut env = self.worker_env.lock().unwrap_or_else(|e| e.into_inner());
        if *env != cfg.process.worker_env {
            changed.push("raw_env");
            *env = cfg.process.worker_env.clone();
        }
        if (new.interface, new.event_loop, new.asgi_concurrency)
            != (spec.interface, spec.event_loop, spec.asgi_concurrency)
        {
            changed.push("interface");
        }
        *spec = new;
        changed
    }
}

impl Pool {
    /// `--check-config` boots a worker to import the app and runs no hooks.
    pub fn without_hooks(&self) {
        *self.hooks.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.spec.lock().unwrap_or_else(|e| e.into_inner()).hooks = None;
    }

    /// The front-side hooks of the current configuration, if it has any.
    pub fn front_hooks(&self) -> Option<crate::hooks::FrontHooks> {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock_interpreter(&self) -> std::sync::MutexGuard<'_, Interpreter> {
        self.interpreter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Waits for a just-started worker's `Ready` frame on `conn`, for at most `boot_timeout`.
/// `exited` is the worker's exit status, awaited only once it closed its socket, to say
/// why it did. Bytes after the `Ready` frame stay in `buf` for the link.
async fn await_ready(
    conn: &mut UnixStream,
    buf: &mut BytesMut,
    boot_timeout: Duration,
    exited: impl std::future::Future<Output = std::io::Result<ExitStatus>>,
) -> Result<spawn::Ready, BootError> {
    let ready = async {
        loop {
            if let Some(frame) = Decoder::next(buf).map_err(|e| BootError::Exited(e.to_string()))? {
                if frame.kind == Kind::Ready {
                    return match spawn::parse_ready(&frame.payload) {
                        Some(ready) if ready.protocol == spawn::PROTOCOL => Ok(ready),
                        other => Err(BootError::Mismatch(format!(
                            "it speaks protocol {:?}, this porch {}",
                            other.map(|r| r.protocol),
                            spawn::PROTOCOL
                        ))),
                    };
                }
                return Err(BootError::Exited(format!(
                    "unexpected {:?} frame",
                    frame.kind
                )));
            }
            match conn.read_buf(buf).await {
                Ok(0) | Err(_) => {
                    let status = exited.await?;
                    return Err(match status.code().map(|c| c as u8) {
                        Some(EXIT_IMPORT_FAILED) => BootError::ImportFailed,
                        Some(EXIT_MISMATCH) => BootError::Mismatch("see its message above".into()),
                        _ => BootError::Exited(describe_exit(status)),
                    });
                }
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(boot_timeout, ready).await {
        Ok(result) => result,
        Err(_) => Err(BootError::Slow(boot_timeout)),
    }
}

/// The requests after which the worker of `slot` is recycled: `--max-requests` plus up to
/// `--max-requests-jitter` more, spread by slot and `noise` so workers do not all restart
/// at once. `None` when recycling is off.
fn max_requests_limit(max_requests: u64, jitter: u64, slot: usize, noise: u64) -> Option<u64> {
    if max_requests == 0 {
        return None;
    }
    let spread = noise.wrapping_add(slot as u64 * 7919);
    let extra = match jitter.checked_add(1) {
        Some(n) => spread % n,
        None => spread, // any u64 is within 0..=u64::MAX
    };
    Some(max_requests.saturating_add(extra))
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(7)).min(10_000))
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// "exited with status 1", "killed by signal 9 (SIGKILL)", with a hint for the OOM killer.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => "SIGKILL",
            libc::SIGTERM => "SIGTERM",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGINT => "SIGINT",
            _ => "signal",
        };
        let hint = if sig == libc::SIGKILL {
            " (killed from outside, possibly by the out-of-memory killer)"
        } else if sig == libc::SIGSEGV || sig == libc::SIGABRT {
            " (crashed)"
        } else {
            ""
        };
        format!("killed by signal {sig} ({name}){hint}")
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
    }
}

#[cfg(test)]
mod tests;
