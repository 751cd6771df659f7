//! App dispatch: the bounded queue of fully-read requests and the link that feeds one
//! worker process from it.
//!
//! Fair by construction: a link takes a request from the queue when its worker has an
//! idle thread; it sends requests ahead to a busy worker (batching: the worker finds its
//! next request without a round trip) only while no worker of the pool has an idle
//! thread ([`Capacity`]); and as soon as one has, links take back what they sent ahead
//! and the worker has not started (SIGUSR2, answered with `Returned` frames), so no
//! request waits behind a long one while a worker idles. Taken-back requests go to the
//! `returned` queue, which links serve first. Each request's [`Fate`] is decided by one
//! side only, so a request answered with an error never runs afterwards.
//!
//! Requests wait in one queue shared by every worker, so a worker that is being
//! recycled, reloaded or replaced after a crash simply stops pulling and the others
//! (or its successor) take the next request: clients never meet a closed socket.
//! A link reads every frame the worker sends as soon as it arrives and hands it to the
//! client's connection through an unbounded channel, so a slow reader never holds a
//! worker: the response waits in the front's memory instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, Notify};

use porch_ipc::{self as ipc, Decoder, Kind};

mod capacity;
mod fate;

pub use capacity::Capacity;
pub use fate::Fate;

/// One request waiting for, or running on, a worker.
pub struct Job {
    pub request: ipc::Request,
    /// `GET /path HTTP/1.1`, for the error log.
    pub line: String,
    pub reply: mpsc::UnboundedSender<Reply>,
    pub queued_at: Instant,
    /// The spilled body file, removed when the job is done.
    pub body_file: Option<tempfile::TempPath>,
    /// Shared with the connection waiting for the answer.
    pub fate: Arc<Fate>,
}

/// What the link tells the connection waiting for a response.
#[derive(Debug)]
pub enum Reply {
    Head(ipc::Head),
    Body(Bytes),
    /// `true`: complete; `false`: aborted after the head (the client must be able to tell).
    End(bool),
    /// No (complete) response will come: 502 when the worker died, 504 on timeout.
    Fail(u16),
}

pub type Queue = async_channel::Receiver<Job>;

/// Why a link stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// Asked to drain, and nothing is running any more.
    Drained,
    /// The worker closed its socket: it exited or was killed.
    WorkerGone,
    /// A request ran past the timeout; the worker must be killed.
    TimedOut { line: String },
    /// The worker broke the protocol.
    Corrupt(String),
}

struct InFlight {
    reply: mpsc::UnboundedSender<Reply>,
    /// When a worker thread took it; `None` while it waits in the worker's own queue.
    /// Tokio's clock, the one the timeout sleeps on (and that tests can pause).
    started: Option<TokioInstant>,
    line: String,
    head_sent: bool,
    /// Kept until the answer's head, so a request the worker never began can be given
    /// to another worker (this one died, or gave it back).
    request: Option<ipc::Request>,
    queued_at: Instant,
    /// When it stops waiting: `queued_at + queue_timeout`, on tokio's clock.
    deadline: TokioInstant,
    body_file: Option<tempfile::TempPath>,
    fate: Arc<Fate>,
}

impl InFlight {
    /// Back to a job for a queue (the worker did not start it).
    fn into_job(self) -> Option<Job> {
        Some(Job {
            request: self.request?,
            line: self.line,
            reply: self.reply,
            queued_at: self.queued_at,
            body_file: self.body_file,
            fate: self.fate,
        })
    }
}

/// The worker pool's counters, for /metrics, /healthz and the logs.
#[derive(Default)]
pub struct WorkerStats {
    pub restarts_crashed: std::sync::atomic::AtomicU64,
    pub restarts_timeout: std::sync::atomic::AtomicU64,
    pub restarts_recycled: std::sync::atomic::AtomicU64,
    pub restarts_reloaded: std::sync::atomic::AtomicU64,
    pub restarts_memory: std::sync::atomic::AtomicU64,
    pub alive: std::sync::atomic::AtomicU64,
}

/// How long requests waited in the queue before a worker took them.
#[derive(Default)]
pub struct QueueStats {
    pub wait_us: std::sync::atomic::AtomicU64,
    pub taken: std::sync::atomic::AtomicU64,
}

/// Settings of a link.
#[derive(Clone)]
pub struct LinkConfig {
    pub threads: usize,
    /// Requests sent ahead to a busy worker, so it finds its next request without a
    /// round trip and one wake-up carries several requests.
    pub prefetch: usize,
    pub timeout: Duration,
    /// How long a request may wait for a worker to start it (503 after).
    pub queue_timeout: Duration,
    /// Requests after which `retire` is notified (the worker keeps serving until drained).
    pub max_requests: Option<u64>,
    pub queue_stats: Arc<QueueStats>,
    /// Idle worker threads of the whole pool.
    pub capacity: Arc<Capacity>,
    /// Requests given back by a worker or left by a dead one: served before the queue.
    pub returned: Option<Queue>,
}

/// Feeds one worker from the queue until told to drain or the worker goes away.
pub struct Link {
    pub pid: u32,
    conn: UnixStream,
    buf: BytesMut,
    inflight: HashMap<u32, InFlight>,
    /// Ids not yet ended, in the order sent. The worker's threads take requests in this
    /// order, so the first `threads` of them are the ones running.
    order: VecDeque<u32>,
    requeue: async_channel::Sender<Job>,
    next_id: u32,
    served: u64,
    /// Asks the worker for the stack of a stuck request; whether the asking went out.
    ask_stack: AskStack,
    /// Asks the worker to give back the requests it has not started.
    ask_return: AskStack,
    /// A give-back was asked for and its answer has not ended yet.
    revoking: bool,
    /// This link's share of [`Capacity`]: its worker's idle threads.
    idle_counted: usize,
}

/// How a link asks its worker for the Python stacks of its running requests: SIGUSR1
/// to the worker process ([`signal_stack_dump`]); tests watch the asking instead.
pub type AskStack = Box<dyn Fn(u32) -> bool + Send>;

/// Sends SIGUSR1 to worker `pid`, which answers with a [`Kind::Stack`] frame for each
/// running request. Returns whether the signal was sent.
pub fn signal_stack_dump(pid: u32) -> bool {
    signal(pid, libc::SIGUSR1)
}

/// Sends SIGUSR2 to worker `pid`, which answers with a [`Kind::Returned`] frame for each
/// request it has not started, then one with id 0.
pub fn signal_give_back(pid: u32) -> bool {
    signal(pid, libc::SIGUSR2)
}

fn signal(pid: u32, sig: libc::c_int) -> bool {
    let Some(pid) = one_process(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a pid this link started; a stale pid at worst signals
    // nothing (the worker is ours until its link reaps it).
    unsafe { libc::kill(pid, sig) == 0 }
}

/// `pid` as a kill(2) target naming one process: not 0 (our own process group, as an
/// unknown pid is reported) nor one that wraps to -1 (every process) or to -n (a group).
fn one_process(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)
}

impl Link {
    pub fn new(
        pid: u32,
        conn: UnixStream,
        leftover: BytesMut,
        requeue: async_channel::Sender<Job>,
    ) -> Link {
        Link {
            pid,
            conn,
            buf: leftover,
            inflight: HashMap::new(),
            order: VecDeque::new(),
            requeue,
            next_id: 1,
            served: 0,
            ask_stack: Box::new(signal_stack_dump),
            ask_return: Box::new(signal_give_back),
            revoking: false,
            idle_counted: 0,
        }
    }

    /// Replaces how this link asks its worker for stacks (see [`AskStack`]).
    #[cfg(test)]
    pub(crate) fn with_ask_stack(mut self, ask_stack: AskStack) -> Link {
        self.ask_stack = ask_stack;
        self
    }

    /// Replaces how this link asks its worker to give back unstarted requests.
    #[cfg(test)]
    pub(crate) fn with_ask_return(mut self, ask_return: AskStack) -> Link {
        self.ask_return = ask_return;
        self
    }

    /// Runs until drained (after `drain` turns true), the worker dies, or a timeout.
    /// `retire` is notified once `max_requests` have been served so the supervisor can
    /// start a successor first.
    pub async fn serve(
        mut self,
        queue: Queue,
        cfg: LinkConfig,
        mut drain: watch::Receiver<bool>,
        retire: Arc<Notify>,
    ) -> (LinkEnd, u64, Vec<String>) {
        let mut draining = *drain.borrow();
        // Request frames not yet taken by the socket. They are written as it takes them
        // while the worker's frames keep being read: a one-thread worker writing a long
        // response reads nothing meanwhile, so a link blocked in writing a long request
        // to it would never read that response, and both would wait for ever.
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut retire_notified = false;
        let mut any_idle = cfg.capacity.watch();
        let end = loop {
            if draining && self.inflight.is_empty() {
                break LinkEnd::Drained;
            }
            self.count_idle(&cfg, draining);
            let here = self.inflight.len();
            // An idle thread here takes work; a busy worker is sent work ahead only while
            // no thread of the pool idles.
            let accepting = !draining
                && (here < cfg.threads
                    || (here < cfg.threads + cfg.prefetch && cfg.capacity.idle() == 0));
            let now = TokioInstant::now();
            let unstarted_deadline = self.unstarted().map(|f| f.deadline).min();
            if !self.revoking && unstarted_deadline.is_some() {
                let someone_idles = cfg.capacity.idle() > 0
                    && queue.is_empty()
                    && cfg.returned.as_ref().is_none_or(|r| r.is_empty());
                if someone_idles || unstarted_deadline.is_some_and(|d| d <= now) {
                    // Asked once; the answer's end (or the worker's) allows the next.
                    self.revoking = true;
                    (self.ask_return)(self.pid);
                }
            }
            let running_deadline = self
                .inflight
                .values()
                .filter_map(|f| f.started)
                .min()
                .map(|s| s + cfg.timeout);
            let next_deadline = match (
                running_deadline,
                unstarted_deadline.filter(|_| !self.revoking),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let returned = cfg.returned.clone();
            tokio::select! {
                biased;
                ready = self.conn.readable() => {
                    if ready.is_err() {
                        break LinkEnd::WorkerGone;
                    }
                    match self.conn.try_read_buf(&mut self.buf) {
                        Ok(0) => break LinkEnd::WorkerGone,
                        Ok(_) => {
                            if let Err(e) = self.route_frames(&cfg, &retire, &mut retire_notified) {
                                break LinkEnd::Corrupt(e.to_string());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break LinkEnd::WorkerGone,
                    }
                }
                ready = self.conn.writable(), if !out.is_empty() => {
                    if ready.is_err() || self.write_some(&mut out).is_err() {
                        break LinkEnd::WorkerGone;
                    }
                }
                _ = sleep_until(next_deadline) => {
                    let now = TokioInstant::now();
                    if let Some((&id, _)) = self.inflight.iter().find(|(_, f)| f.started.is_some_and(|s| s + cfg.timeout <= now)) {
                        let line = self.time_out(id, &cfg).await;
                        break LinkEnd::TimedOut { line };
                    }
                }
                job = recv_opt(returned.as_ref()), if accepting => {
                    if let Some(job) = job {
                        self.take(job, &cfg, &mut out);
                        self.mark_started(&cfg);
                        if self.write_some(&mut out).is_err() {
                            break LinkEnd::WorkerGone;
                        }
                    }
                }
                job = queue.recv(), if accepting => {
                    let Ok(job) = job else {
                        draining = true;
                        continue;
                    };
                    self.take(job, &cfg, &mut out);
                    // Take what else is queued while threads here idle: one write, one
                    // wake-up. Beyond them, one request at a time, so links share.
                    while self.inflight.len() < cfg.threads {
                        match queue.try_recv() {
                            Ok(job) => self.take(job, &cfg, &mut out),
                            Err(_) => break,
                        }
                    }
                    self.mark_started(&cfg);
                    if self.write_some(&mut out).is_err() {
                        break LinkEnd::WorkerGone;
                    }
                }
                changed = any_idle.changed() => {
                    if changed.is_err() {
                        // The pool's capacity is gone with the pool: nothing to watch.
                        any_idle = watch::channel(false).1;
                    }
                }
                changed = drain.changed(), if !draining => {
                    draining = changed.is_err() || *drain.borrow();
                }
            }
        };
        cfg.capacity.adjust(self.idle_counted, 0);
        self.idle_counted = 0;
        // Requests that were running will not complete; those still waiting in the
        // worker's queue never reached the app and go back to the shared queue.
        let mut running = Vec::new();
        let order: Vec<u32> = self.order.drain(..).collect();
        let mut left: Vec<InFlight> = order
            .iter()
            .filter_map(|id| self.inflight.remove(id))
            .collect();
        left.extend(self.inflight.drain().map(|(_, f)| f));
        for f in left {
            if f.started.is_some() {
                running.push(f.line.clone());
            }
            if f.started.is_none() && f.request.is_some() && end != LinkEnd::Drained {
                self.give_back(f);
                continue;
            }
            let _ = f.reply.send(if f.head_sent {
                Reply::End(false)
            } else {
                Reply::Fail(502)
            });
        }
        (end, self.served, running)
    }

    /// Writes as much of `out` as the socket takes now; the rest waits for it to drain.
    fn write_some(&self, out: &mut BytesMut) -> std::io::Result<()> {
        match self.conn.try_write(out) {
            Ok(n) => {
                out.advance(n);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Puts a request this worker did not start back in a queue, or fails it when its
    /// wait is over.
    fn give_back(&self, f: InFlight) {
        let expired = f.deadline <= TokioInstant::now();
        let Some(job) = f.into_job() else {
            return;
        };
        if expired || job.reply.is_closed() {
            let _ = job.reply.send(Reply::Fail(503));
            return;
        }
        job.fate.release();
        if let Err(e) = self.requeue.try_send(job) {
            let job = e.into_inner();
            if job.fate.take() {
                let _ = job.reply.send(Reply::Fail(502));
            }
        }
    }

    /// Requests sent ahead to this worker and not started (as far as the link knows).
    fn unstarted(&self) -> impl Iterator<Item = &InFlight> {
        self.order
            .iter()
            .filter_map(|id| self.inflight.get(id))
            .filter(|f| f.started.is_none())
    }

    /// Publishes this worker's idle threads to the pool.
    fn count_idle(&mut self, cfg: &LinkConfig, draining: bool) {
        let idle = if draining {
            0
        } else {
            cfg.threads.saturating_sub(self.inflight.len())
        };
        cfg.capacity.adjust(self.idle_counted, idle);
        self.idle_counted = idle;
    }

    /// Takes a job from a queue: it runs here unless its connection gave up on it or its
    /// wait is already over.
    fn take(&mut self, job: Job, cfg: &LinkConfig, out: &mut BytesMut) {
        if job.reply.is_closed() {
            let _ = job.fate.cancel(); // the client went away while the request was queued
            return;
        }
        if !job.fate.take() {
            return; // the connection answered it already (queue deadline)
        }
        let waited = job.queued_at.elapsed();
        if waited >= cfg.queue_timeout {
            let _ = job.reply.send(Reply::Fail(503));
            return;
        }
        self.start(job, cfg.queue_timeout - waited, out);
    }

    fn start(&mut self, job: Job, wait_left: Duration, out: &mut BytesMut) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        job.request.encode(out, id);
        self.order.push_back(id);
        self.inflight.insert(
            id,
            InFlight {
                reply: job.reply,
                started: None,
                line: job.line,
                head_sent: false,
                request: Some(job.request),
                queued_at: job.queued_at,
                deadline: TokioInstant::now() + wait_left,
                body_file: job.body_file,
                fate: job.fate,
            },
        );
    }

    /// The first `threads` unfinished requests are running: start their clocks, and
    /// count the wait they had before (in every queue, and in this worker's).
    fn mark_started(&mut self, cfg: &LinkConfig) {
        let now = TokioInstant::now();
        for id in self.order.iter().take(cfg.threads) {
            if let Some(f) = self.inflight.get_mut(id) {
                if f.started.is_none() {
                    f.started = Some(now);
                    let stats = &cfg.queue_stats;
                    let waited = f.queued_at.elapsed().as_micros() as u64;
                    stats
                        .wait_us
                        .fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
                    stats
                        .taken
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    fn forget(&mut self, id: u32) {
        self.inflight.remove(&id);
        if let Some(pos) = self.order.iter().position(|&x| x == id) {
            self.order.remove(pos);
        }
    }

    fn route_frames(
        &mut self,
        cfg: &LinkConfig,
        retire: &Notify,
        retire_notified: &mut bool,
    ) -> Result<(), ipc::DecodeError> {
        while let Some(frame) = Decoder::next(&mut self.buf)? {
            if self.route_frame(frame, cfg)? {
                if let Some(max) = cfg.max_requests {
                    if self.served >= max && !*retire_notified {
                        *retire_notified = true;
                        retire.notify_one();
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands one frame from the worker to the connection waiting for it. Returns whether
    /// it ended a response.
    fn route_frame(
        &mut self,
        frame: ipc::Frame,
        cfg: &LinkConfig,
    ) -> Result<bool, ipc::DecodeError> {
        if frame.kind == Kind::Returned {
            self.returned(frame.id, cfg);
            return Ok(false);
        }
        let Some(f) = self.inflight.get_mut(&frame.id) else {
            return Ok(false); // a late frame for a request already failed
        };
        match frame.kind {
            Kind::Head => {
                f.head_sent = true;
                f.request = None; // started for sure: nothing to give to another worker
                let head = ipc::Head::decode(&frame.payload)?;
                let _ = f.reply.send(Reply::Head(head));
            }
            Kind::Body => {
                let _ = f.reply.send(Reply::Body(frame.payload));
            }
            Kind::End => {
                let ok = frame.payload.first() == Some(&1);
                let _ = f.reply.send(Reply::End(ok));
                self.forget(frame.id);
                self.mark_started(cfg);
                self.served += 1;
                return Ok(true);
            }
            Kind::Stack => {}
            Kind::Returned => unreachable!("handled before"),
            other => return Err(ipc::DecodeError::Invalid(kind_name(other))),
        }
        Ok(false)
    }

    /// The worker gave back request `id` unstarted (0: its answer is complete).
    fn returned(&mut self, id: u32, cfg: &LinkConfig) {
        if id == 0 {
            self.revoking = false;
            return;
        }
        let Some(f) = self.inflight.remove(&id) else {
            return;
        };
        self.order.retain(|&x| x != id);
        self.give_back(f);
        self.mark_started(cfg);
    }

    /// Answers the stuck request with 504 and logs its Python stack, asked from the worker
    /// and waited for briefly (a thread stuck in C code holding the GIL cannot answer).
    async fn time_out(&mut self, id: u32, cfg: &LinkConfig) -> String {
        let f = self
            .inflight
            .remove(&id)
            .expect("timed-out request is in flight");
        self.order.retain(|&x| x != id);
        let _ = f.reply.send(if f.head_sent {
            Reply::End(false)
        } else {
            Reply::Fail(504)
        });
        let mut stack = None;
        let asked = (self.ask_stack)(self.pid);
        if asked {
            let wait = tokio::time::sleep(Duration::from_secs(2));
            tokio::pin!(wait);
            'wait: loop {
                tokio::select! {
                    _ = &mut wait => break,
                    read = self.conn.read_buf(&mut self.buf) => {
                        if !matches!(read, Ok(n) if n > 0) { break; }
                        while let Ok(Some(frame)) = Decoder::next(&mut self.buf) {
                            if frame.kind == Kind::Stack && frame.id == id {
                                stack = Some(String::from_utf8_lossy(&frame.payload).into_owned());
                                break 'wait;
                            }
                            // Keep other requests' frames flowing meanwhile.
                            if self.route_frame(frame, cfg).is_err() {
                                break 'wait;
                            }
                        }
                    }
                }
            }
        }
        tracing::error!(
            "worker {} timed out ({}s) on request \"{}\"; Python stack of the request's thread:\n{}",
            self.pid,
            cfg.timeout.as_secs_f64(),
            f.line,
            stack.as_deref().unwrap_or("(the worker did not answer: stuck outside Python?)\n"),
        );
        f.line
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Request => "request",
        Kind::DumpStack => "dump-stack",
        Kind::Stop => "stop",
        Kind::Ready => "ready",
        Kind::Head => "head",
        Kind::Body => "body",
        Kind::End => "end",
        Kind::Stack => "stack",
        Kind::Returned => "returned",
    }
}

async fn recv_opt(queue: Option<&Queue>) -> Option<Job> {
    match queue {
        Some(q) => q.recv().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<TokioInstant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fair;
