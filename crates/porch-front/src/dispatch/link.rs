//! The link: one task per worker in the front, feeding it from the queues and passing
//! its frames to the connections waiting for them (see the module's doc for the rules).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant as TokioInstant;

use super::outbox::Outbox;
use super::signal::{signal_give_back, signal_stack_dump, AskStack};
use super::uplink::{ToWorker, Uplink, UPLINK_DEPTH};
use super::{InFlight, Job, LinkConfig, LinkEnd, Queue, Reply};
use porch_ipc::{self as ipc, Decoder, Kind};
use std::sync::Arc;

/// How often a link to an ASGI worker looks for clients that left.
const GONE_SWEEP: Duration = Duration::from_secs(1);

/// Bytes waiting for the worker's socket past which WebSocket messages from clients
/// wait in their channel (and then in their sockets): the worker sets the pace.
const OUT_HIGH_WATER: usize = 1 << 20;

/// An open WebSocket of this link's worker: a request whose answer was a `101`. It no
/// longer counts against the worker's capacity and has no timeout; its worker's frames go
/// to its connection until the app's task ends.
struct Socket {
    reply: super::ReplySender,
    /// The app was told the client closed (`websocket.disconnect`).
    client_closed: bool,
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
    /// Requests whose client left while an ASGI worker streams their response: the
    /// worker is told (a `Disconnect` frame) so the app can stop.
    gone: Vec<u32>,
    sockets: HashMap<u32, Socket>,
    /// Sockets whose app must hear that they closed (their client left before the switch).
    closed_sockets: Vec<(u32, ipc::WsClose)>,
    /// What the sockets' connections send the worker.
    uplink: (mpsc::Sender<ToWorker>, mpsc::Receiver<ToWorker>),
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
            gone: Vec::new(),
            sockets: HashMap::new(),
            closed_sockets: Vec::new(),
            uplink: mpsc::channel(UPLINK_DEPTH),
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
        let mut out = Outbox::new();
        let mut retire_notified = false;
        let mut any_idle = cfg.capacity.watch();
        // ASGI: how often running requests are checked for clients that left before
        // their response sent anything (a long poll); a body piece that cannot be
        // delivered tells at once.
        let mut sweep = tokio::time::interval(GONE_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // A retiring worker's WebSockets stay open for the graceful time, then porch
        // closes them with 1012 (service restart): clients reconnect to another worker.
        let mut close_sockets_at: Option<TokioInstant> = None;
        let end = loop {
            if draining && self.inflight.is_empty() && self.sockets.is_empty() {
                break LinkEnd::Drained;
            }
            if draining && close_sockets_at.is_none() {
                close_sockets_at = Some(TokioInstant::now() + cfg.graceful);
            }
            self.count_idle(&cfg, draining);
            let accepting = !draining && self.room(&cfg);
            let now = TokioInstant::now();
            // Only the oldest request sent ahead is looked at (one lookup, not one per
            // request on every wake-up): the worker starts them in the order sent and
            // they were taken in order, so its wait ends first. A taken-back request that
            // is taken again may wait past its own deadline until the one before it is
            // due; it is still never run after a 503.
            let unstarted_deadline = if self.revoking {
                None
            } else {
                self.first_unstarted(&cfg).map(|f| f.deadline)
            };
            if unstarted_deadline.is_some() {
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
            let next_deadline = match (running_deadline, unstarted_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
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
                            if self.tell_gone(&mut out).is_err() {
                                break LinkEnd::WorkerGone;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break LinkEnd::WorkerGone,
                    }
                }
                ready = self.conn.writable(), if !out.is_empty() => {
                    if ready.is_err() || out.write_to(&self.conn).is_err() {
                        break LinkEnd::WorkerGone;
                    }
                }
                _ = sleep_until(next_deadline) => {
                    let now = TokioInstant::now();
                    if let Some((&id, _)) = self.inflight.iter().find(|(_, f)| f.started.is_some_and(|s| s + cfg.timeout <= now)) {
                        if let Some(line) = self.time_out(id, &cfg, &mut out).await {
                            break LinkEnd::TimedOut { line };
                        }
                        self.mark_started(&cfg);
                    }
                }
                job = recv_opt(cfg.returned.as_ref()), if accepting => {
                    if let Some(job) = job {
                        self.take(job, &cfg, &mut out);
                        self.mark_started(&cfg);
                        if out.write_to(&self.conn).is_err() {
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
                    // Take what else is queued while there is room: one write, one
                    // wake-up (what this sends ahead is taken back if a worker idles).
                    while self.room(&cfg) {
                        match queue.try_recv() {
                            Ok(job) => self.take(job, &cfg, &mut out),
                            Err(_) => break,
                        }
                    }
                    self.mark_started(&cfg);
                    if out.write_to(&self.conn).is_err() {
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
                msg = self.uplink.1.recv(), if out.len() < OUT_HIGH_WATER => {
                    if let Some(msg) = msg {
                        self.pass_to_worker(msg, &mut out);
                        if out.write_to(&self.conn).is_err() {
                            break LinkEnd::WorkerGone;
                        }
                    }
                }
                _ = sleep_until(close_sockets_at), if draining && !self.sockets.is_empty() => {
                    self.close_sockets(1012, "service restart", &mut out);
                    if out.write_to(&self.conn).is_err() {
                        break LinkEnd::WorkerGone;
                    }
                }
                _ = sweep.tick(), if cfg.asgi && !self.inflight.is_empty() => {
                    self.sweep_gone();
                    if self.tell_gone(&mut out).is_err() {
                        break LinkEnd::WorkerGone;
                    }
                }
            }
        };
        cfg.capacity.adjust(self.idle_counted, 0);
        self.idle_counted = 0;
        // Sockets of a worker that died or was killed close with 1011 (the app failed).
        self.close_sockets(1011, "the app's worker stopped", &mut out);
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

    /// Whether this worker takes another request: an idle thread here takes work; a busy
    /// worker is sent work ahead only while no thread of the pool idles.
    fn room(&self, cfg: &LinkConfig) -> bool {
        let here = self.inflight.len();
        here < cfg.threads || (here < cfg.threads + cfg.prefetch && cfg.capacity.idle() == 0)
    }

    /// The first request sent ahead to this worker and not started (as far as the link
    /// knows: the first `threads` unfinished ones are running, see [`Link::mark_started`]).
    fn first_unstarted(&self, cfg: &LinkConfig) -> Option<&InFlight> {
        self.order
            .get(cfg.threads)
            .and_then(|id| self.inflight.get(id))
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
    fn take(&mut self, job: Job, cfg: &LinkConfig, out: &mut Outbox) {
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

    fn start(&mut self, job: Job, wait_left: Duration, out: &mut Outbox) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        out.push_request(&job.request, id);
        self.order.push_back(id);
        self.inflight.insert(
            id,
            InFlight {
                reply: job.reply,
                started: None,
                line: job.line,
                head_sent: false,
                disconnect_sent: false,
                request: Some(job.request),
                queued_at: job.queued_at,
                deadline: TokioInstant::now() + wait_left,
                body_hold: job.body_hold,
                fate: job.fate,
                websocket: job.websocket,
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
            // A socket's frame, or a late one for a request already failed.
            return self.route_socket_frame(frame);
        };
        if cfg.asgi
            && matches!(frame.kind, Kind::Head | Kind::Body | Kind::Trailers)
            && f.started.is_some()
        {
            // An ASGI response in progress is progress: the timeout bounds the wait for
            // the head and each pause between body pieces (nginx's proxy_read_timeout),
            // so Server-Sent Events and long streams live as long as they keep sending.
            f.started = Some(TokioInstant::now());
        }
        match frame.kind {
            Kind::Head => {
                f.head_sent = true;
                f.request = None; // started for sure: nothing to give to another worker
                let head = ipc::Head::decode(&frame.payload)?;
                if head.status == 101 && f.websocket && cfg.asgi {
                    self.switch(frame.id, head, cfg);
                    self.served += 1;
                    return Ok(true);
                }
                let _ = f.reply.send(Reply::Head(head));
            }
            Kind::Body => {
                if !f.reply.send(Reply::Body(frame.payload)) && cfg.asgi && !f.disconnect_sent {
                    f.disconnect_sent = true;
                    self.gone.push(frame.id);
                }
            }
            Kind::End => {
                let ok = frame.payload.first() == Some(&1);
                let _ = f.reply.send(Reply::End(ok));
                self.forget(frame.id);
                self.mark_started(cfg);
                self.served += 1;
                return Ok(true);
            }
            Kind::Trailers => {
                let trailers = ipc::Trailers::decode(&frame.payload)?;
                let _ = f.reply.send(Reply::Trailers(trailers));
            }
            Kind::Stack => {}
            Kind::Returned => unreachable!("handled before"),
            other => return Err(ipc::DecodeError::Invalid(kind_name(other))),
        }
        Ok(false)
    }

    /// The app accepted WebSocket `id`: from now on it is a socket, not a request.
    fn switch(&mut self, id: u32, head: ipc::Head, cfg: &LinkConfig) {
        let Some(f) = self.inflight.remove(&id) else {
            return;
        };
        self.order.retain(|&x| x != id);
        self.mark_started(cfg);
        let uplink = Uplink::new(id, self.uplink.0.clone());
        if f.reply.send(Reply::Switched(head, uplink)) {
            self.sockets.insert(
                id,
                Socket {
                    reply: f.reply,
                    client_closed: false,
                },
            );
        } else {
            // The client left while the app decided: it hears of it as from any client.
            self.closed_sockets.push((
                id,
                ipc::WsClose {
                    code: 1006,
                    reason: String::new(),
                },
            ));
        }
    }

    /// A frame of an open socket.
    fn route_socket_frame(&mut self, frame: ipc::Frame) -> Result<bool, ipc::DecodeError> {
        let Some(socket) = self.sockets.get_mut(&frame.id) else {
            return Ok(false);
        };
        match frame.kind {
            Kind::WsMessage => {
                let m = ipc::WsMessage::decode(&frame.payload)?;
                let _ = socket.reply.send(Reply::Message(m));
            }
            Kind::WsClose => {
                let c = ipc::WsClose::decode(&frame.payload)?;
                let _ = socket.reply.send(Reply::Close(c));
            }
            Kind::End => {
                let ok = frame.payload.first() == Some(&1);
                let _ = socket.reply.send(Reply::End(ok));
                self.sockets.remove(&frame.id);
            }
            Kind::Stack => {}
            other => return Err(ipc::DecodeError::Invalid(kind_name(other))),
        }
        Ok(false)
    }

    /// Queues what a socket's connection sends its worker.
    fn pass_to_worker(&mut self, msg: ToWorker, out: &mut Outbox) {
        match msg {
            ToWorker::Message(id, m) => {
                if self.sockets.get(&id).is_some_and(|s| !s.client_closed) {
                    ipc::WsMessage::encode(out.buf(), id, m.text, &m.data);
                }
            }
            ToWorker::Closed(id, close) => {
                if let Some(s) = self.sockets.get_mut(&id) {
                    if !s.client_closed {
                        s.client_closed = true;
                        close.encode(out.buf(), id);
                    }
                }
            }
        }
    }

    /// Closes every open socket: the client gets a close frame with `code`, the app a
    /// `websocket.disconnect` with it. The app's task then ends on its own (or with its
    /// worker); the connections are done with it.
    fn close_sockets(&mut self, code: u16, reason: &str, out: &mut Outbox) {
        let close = ipc::WsClose {
            code,
            reason: reason.to_owned(),
        };
        for (id, s) in self.sockets.drain() {
            let _ = s.reply.send(Reply::Close(close.clone()));
            if !s.client_closed {
                close.encode(out.buf(), id);
            }
        }
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

    /// Notes the running requests whose client left (an ASGI worker is told).
    fn sweep_gone(&mut self) {
        for (&id, f) in self.inflight.iter_mut() {
            if f.started.is_some() && !f.disconnect_sent && f.reply.is_closed() {
                f.disconnect_sent = true;
                self.gone.push(id);
            }
        }
    }

    /// Queues a `Disconnect` frame for each request whose client left (a `WsClose` for
    /// a socket), and writes.
    fn tell_gone(&mut self, out: &mut Outbox) -> std::io::Result<()> {
        if self.gone.is_empty() && self.closed_sockets.is_empty() {
            return Ok(());
        }
        for id in self.gone.drain(..) {
            ipc::encode(out.buf(), Kind::Disconnect, id, |_| {});
        }
        for (id, close) in self.closed_sockets.drain(..) {
            close.encode(out.buf(), id);
        }
        out.write_to(&self.conn)
    }

    /// Answers the stuck request with 504 and logs its Python stack. Returns the request
    /// line when the worker must be killed: always for WSGI (a thread cannot be
    /// stopped); for ASGI only when its event loop is blocked, since a responsive loop
    /// cancels the request's task itself and the worker keeps its other requests.
    async fn time_out(&mut self, id: u32, cfg: &LinkConfig, out: &mut Outbox) -> Option<String> {
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
        let secs = cfg.timeout.as_secs_f64();
        if cfg.asgi {
            // The loop answers a `Cancel` frame with the task's stack, then cancels it.
            ipc::encode(out.buf(), Kind::Cancel, id, |_| {});
            if let Some(stack) = self.await_stack(id, cfg, out).await {
                tracing::error!(
                    "worker {} timed out ({secs}s) on request \"{}\"; its task was cancelled. Stack of the task:\n{stack}",
                    self.pid,
                    f.line,
                );
                return None;
            }
        }
        let stack = if (self.ask_stack)(self.pid) {
            self.await_stack(id, cfg, out).await
        } else {
            None
        };
        let what = if cfg.asgi {
            "the event loop is blocked; Python stack of its thread"
        } else {
            "Python stack of the request's thread"
        };
        tracing::error!(
            "worker {} timed out ({secs}s) on request \"{}\"; {what}:\n{}",
            self.pid,
            f.line,
            stack
                .as_deref()
                .unwrap_or("(the worker did not answer: stuck outside Python?)\n"),
        );
        Some(f.line)
    }

    /// Waits briefly for the worker's `Stack` frame for `id` (a thread stuck in C code
    /// holding the GIL, or a blocked event loop, cannot answer), writing `out` and
    /// passing other requests' frames on meanwhile.
    async fn await_stack(&mut self, id: u32, cfg: &LinkConfig, out: &mut Outbox) -> Option<String> {
        let wait = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return None,
                ready = self.conn.writable(), if !out.is_empty() => {
                    if ready.is_err() || out.write_to(&self.conn).is_err() {
                        return None;
                    }
                }
                ready = self.conn.readable() => {
                    if ready.is_err() { return None; }
                    match self.conn.try_read_buf(&mut self.buf) {
                        Ok(0) => return None,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => return None,
                    }
                    while let Ok(Some(frame)) = Decoder::next(&mut self.buf) {
                        if frame.kind == Kind::Stack && frame.id == id {
                            return Some(String::from_utf8_lossy(&frame.payload).into_owned());
                        }
                        // Keep other requests' frames flowing meanwhile.
                        if self.route_frame(frame, cfg).is_err() {
                            return None;
                        }
                    }
                }
            }
        }
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Request => "request",
        Kind::DumpStack => "dump-stack",
        Kind::Stop => "stop",
        Kind::Cancel => "cancel",
        Kind::Disconnect => "disconnect",
        Kind::WsMessage => "websocket message",
        Kind::WsClose => "websocket close",
        Kind::Ready => "ready",
        Kind::Head => "head",
        Kind::Body => "body",
        Kind::End => "end",
        Kind::Stack => "stack",
        Kind::Returned => "returned",
        Kind::Trailers => "trailers",
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
