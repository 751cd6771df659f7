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
//! client's connection through a channel that never pushes back ([`reply_channel`]), so a
//! slow reader never holds a worker: the response waits in the front's memory, bounded,
//! and past the bound in a temporary file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

use bytes::Bytes;

use crate::body_memory::BodyHold;
use porch_ipc as ipc;

mod capacity;
mod fate;
mod link;
mod outbox;
mod reply;
mod signal;
mod uplink;

pub use capacity::Capacity;
pub use fate::Fate;
pub use link::Link;
pub use reply::{reply_channel, ReplyReceiver, ReplySender, ResponseMemory};
pub use signal::{signal_give_back, signal_stack_dump, AskStack};
pub use uplink::{ToWorker, Uplink};

/// One request waiting for, or running on, a worker.
pub struct Job {
    pub request: ipc::Request,
    /// `GET /path HTTP/1.1`, for the error log.
    pub line: String,
    pub reply: ReplySender,
    pub queued_at: Instant,
    /// The body's place in memory, or its temporary file: given back when the job is
    /// done.
    pub body_hold: Option<BodyHold>,
    /// Shared with the connection waiting for the answer.
    pub fate: Arc<Fate>,
    /// A checked WebSocket handshake: a `101` answer makes it a socket.
    pub websocket: bool,
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
    /// The app accepted a WebSocket: its `101` head, and the way to send the worker what
    /// the client says. Then come `Message`s and `Close`, and `End` when the app's task
    /// ends.
    Switched(ipc::Head, Uplink),
    /// The response's trailer fields, after its body.
    Trailers(ipc::Trailers),
    /// A WebSocket message for the client.
    Message(ipc::WsMessage),
    /// The app (or porch, for a worker that retires or dies) closes the WebSocket.
    Close(ipc::WsClose),
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
    reply: ReplySender,
    /// When a worker thread took it; `None` while it waits in the worker's own queue.
    /// For an ASGI worker, moved on by each head or body frame (the timeout bounds pauses).
    /// Tokio's clock, the one the timeout sleeps on (and that tests can pause).
    started: Option<TokioInstant>,
    line: String,
    head_sent: bool,
    /// The worker was told that this request's client left.
    disconnect_sent: bool,
    /// Kept until the answer's head, so a request the worker never began can be given
    /// to another worker (this one died, or gave it back).
    request: Option<ipc::Request>,
    queued_at: Instant,
    /// When it stops waiting: `queued_at + queue_timeout`, on tokio's clock.
    deadline: TokioInstant,
    body_hold: Option<BodyHold>,
    fate: Arc<Fate>,
    /// A WebSocket handshake: a `101` answer makes it a socket.
    websocket: bool,
}

impl InFlight {
    /// Back to a job for a queue (the worker did not start it).
    fn into_job(self) -> Option<Job> {
        Some(Job {
            request: self.request?,
            line: self.line,
            reply: self.reply,
            queued_at: self.queued_at,
            body_hold: self.body_hold,
            fate: self.fate,
            websocket: self.websocket,
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
    /// The worker runs an ASGI app: a request past the timeout is cancelled in its event
    /// loop (the worker lives on) unless the loop is blocked; a client that leaves is
    /// reported to it (`http.disconnect`).
    pub asgi: bool,
    /// How long the WebSockets of a retiring worker stay open before porch closes them
    /// with 1012 (service restart): the graceful timeout.
    pub graceful: Duration,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_asgi;
#[cfg(test)]
mod tests_fair;
#[cfg(test)]
mod tests_timeout;
#[cfg(test)]
mod tests_websocket;
#[cfg(test)]
mod tests_worker_end;
