//! The link's lifecycle over a real socket pair, under paused tokio time. The test plays
//! the worker: it reads the Request frames the link writes and answers with real
//! Head/Body/End/Stack frames, exactly as `porch.worker` does.

use super::*;
use bytes::BytesMut;
use porch_ipc::{Decoder, Kind};
use std::sync::atomic::Ordering;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, Notify};

use tokio::task::JoinHandle;
use tokio::time::timeout;

pub(super) const TIMEOUT: Duration = Duration::from_secs(30);
/// Within the timer's resolution: without any wait in the link.
pub(super) const AT_ONCE: Duration = Duration::from_millis(1);
/// Never signalled: the tests' links record stack requests instead of calling kill(2).
pub(super) const PID: u32 = 4242;

pub(super) fn config(threads: usize, prefetch: usize) -> LinkConfig {
    LinkConfig {
        threads,
        prefetch,
        timeout: TIMEOUT,
        // Longer than any test: only the tests about the queue deadline set it.
        queue_timeout: Duration::from_secs(3600),
        max_requests: None,
        queue_stats: Arc::default(),
        capacity: Arc::default(),
        returned: None,
        asgi: false,
        graceful: Duration::from_secs(30),
    }
}

pub(super) fn request(target: &str, body: Bytes) -> ipc::Request {
    ipc::Request {
        method: "GET".into(),
        target: Bytes::copy_from_slice(target.as_bytes()),
        protocol: "HTTP/1.1",
        https: false,
        remote_addr: "127.0.0.1".into(),
        remote_port: 40000,
        server_name: "localhost".into(),
        server_port: 8000,
        headers: vec![(
            Bytes::from_static(b"host"),
            Bytes::from_static(b"localhost"),
        )],
        body: ipc::RequestBody::Inline(body),
    }
}

pub(super) fn line(target: &str) -> String {
    format!("GET {target} HTTP/1.1")
}

pub(super) fn job_with_body(target: &str, body: Bytes) -> (Job, ReplyReceiver) {
    let memory = ResponseMemory::new(1 << 20, 1 << 20, std::env::temp_dir());
    let (reply, rx) = reply_channel(&memory);
    let job = Job {
        request: request(target, body),
        line: line(target),
        reply,
        queued_at: Instant::now(),
        body_hold: None,
        fate: Arc::default(),
        websocket: false,
    };
    (job, rx)
}

pub(super) fn job(target: &str) -> (Job, ReplyReceiver) {
    job_with_body(target, Bytes::new())
}

/// A reply as a short comparable string.
pub(super) fn show(r: &Reply) -> String {
    match r {
        Reply::Head(h) => format!("head {}", h.status),
        Reply::Body(b) => format!("body {}", String::from_utf8_lossy(b)),
        Reply::End(ok) => format!("end {ok}"),
        Reply::Fail(code) => format!("fail {code}"),
        Reply::Switched(h, _) => format!("switched {}", h.status),
        Reply::Trailers(t) => format!("trailers {}", t.fields.len()),
        Reply::Message(m) => format!("message {}", String::from_utf8_lossy(&m.data)),
        Reply::Close(c) => format!("close {} {}", c.code, c.reason),
    }
}

/// Every reply that has arrived so far, without waiting.
pub(super) fn replies(rx: &mut ReplyReceiver) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv())
        .map(|r| show(&r))
        .collect()
}

/// The test's end of a worker's socket.
pub(super) struct FakeWorker {
    pub(super) conn: UnixStream,
    pub(super) buf: BytesMut,
}

impl FakeWorker {
    /// The next frame from the front; `None` once the front closed the socket.
    pub(super) async fn frame(&mut self) -> Option<ipc::Frame> {
        loop {
            if let Some(f) = Decoder::next(&mut self.buf).expect("the front sends valid frames") {
                return Some(f);
            }
            if self.conn.read_buf(&mut self.buf).await.expect("read") == 0 {
                return None;
            }
        }
    }

    /// The next frame, if one comes within `d` (of paused time).
    pub(super) async fn frame_within(&mut self, d: Duration) -> Option<ipc::Frame> {
        timeout(d, self.frame()).await.ok().flatten()
    }

    pub(super) async fn request(&mut self) -> (u32, ipc::Request) {
        let f = self
            .frame_within(Duration::from_secs(1))
            .await
            .expect("a request frame");
        assert_eq!(f.kind, Kind::Request);
        (
            f.id,
            ipc::Request::decode(&f.payload).expect("a valid request"),
        )
    }

    pub(super) async fn send(&mut self, kind: Kind, id: u32, payload: &[u8]) {
        let mut out = Vec::new();
        ipc::encode_vec(&mut out, kind, id, payload);
        self.conn.write_all(&out).await.expect("write");
    }

    pub(super) async fn head(&mut self, id: u32, status: u16) {
        let mut payload = Vec::new();
        ipc::Head {
            status,
            headers: vec![(
                Bytes::from_static(b"content-type"),
                Bytes::from_static(b"text/plain"),
            )],
            reason: Bytes::new(),
        }
        .encode_payload(&mut payload);
        self.send(Kind::Head, id, &payload).await;
    }

    pub(super) async fn body(&mut self, id: u32, data: &[u8]) {
        self.send(Kind::Body, id, data).await;
    }

    pub(super) async fn end(&mut self, id: u32, ok: bool) {
        self.send(Kind::End, id, &[ok as u8]).await;
    }

    pub(super) async fn respond(&mut self, id: u32, body: &str) {
        self.head(id, 200).await;
        self.body(id, body.as_bytes()).await;
        self.end(id, true).await;
    }
}

pub(super) type Served = (LinkEnd, u64, Vec<String>);

/// One link serving a fake worker from a queue, as `run_slot` runs it.
pub(super) struct Setup {
    pub(super) queue: async_channel::Sender<Job>,
    pub(super) queue_rx: Queue,
    pub(super) worker: FakeWorker,
    pub(super) drain: watch::Sender<bool>,
    pub(super) retire: Arc<Notify>,
    /// The pids the link asked for stacks.
    pub(super) asked: mpsc::UnboundedReceiver<u32>,
    pub(super) link: JoinHandle<Served>,
    pub(super) stats: Arc<QueueStats>,
}

impl Setup {
    pub(super) fn new(cfg: LinkConfig) -> Setup {
        let (queue, queue_rx) = async_channel::bounded(64);
        Setup::on_queue(cfg, queue, queue_rx, true)
    }

    /// A link on an existing queue (the queue's own sender requeues, as in production).
    /// `answer_ask`: what asking for a stack reports (whether a signal went out).
    pub(super) fn on_queue(
        cfg: LinkConfig,
        queue: async_channel::Sender<Job>,
        queue_rx: Queue,
        answer_ask: bool,
    ) -> Setup {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let (asked_tx, asked) = mpsc::unbounded_channel();
        let link = Link::new(PID, ours, BytesMut::new(), queue.clone())
            .with_ask_stack(Box::new(move |pid| {
                let _ = asked_tx.send(pid);
                answer_ask
            }))
            .with_ask_return(Box::new(|_| panic!("a single link never gives back")));
        let (drain, drain_rx) = watch::channel(false);
        let retire = Arc::new(Notify::new());
        let stats = cfg.queue_stats.clone();
        let link = tokio::spawn(link.serve(queue_rx.clone(), cfg, drain_rx, retire.clone()));
        Setup {
            queue,
            queue_rx,
            worker: FakeWorker {
                conn: theirs,
                buf: BytesMut::new(),
            },
            drain,
            retire,
            asked,
            link,
            stats,
        }
    }

    pub(super) async fn push(&self, job: Job) {
        self.queue.send(job).await.expect("queue open");
    }

    /// The link's result, which must come within `d`.
    pub(super) async fn ended_within(&mut self, d: Duration) -> Served {
        ended_within(&mut self.link, d).await
    }
}

pub(super) async fn ended_within(link: &mut JoinHandle<Served>, d: Duration) -> Served {
    timeout(d, link)
        .await
        .expect("the link ended in time")
        .expect("the link task does not panic")
}

/// `elapsed` is `expected`, give or take the timer's millisecond rounding.
pub(super) fn assert_took(elapsed: Duration, expected: Duration) {
    let slack = Duration::from_millis(5);
    assert!(
        elapsed >= expected && elapsed <= expected + slack,
        "took {elapsed:?}, expected {expected:?}"
    );
}

/// Lets every task run until all wait (no time passes).
pub(super) async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn queued_job_reaches_the_worker_and_its_frames_come_back_in_order() {
    let mut s = Setup::new(config(1, 0));
    let (job, mut rx) = job_with_body("/hello?x=1", Bytes::from_static(b"ping"));
    s.push(job).await;

    let (id, req) = s.worker.request().await;
    assert_eq!(req, request("/hello?x=1", Bytes::from_static(b"ping")));
    assert_eq!(s.stats.taken.load(Ordering::Relaxed), 1);

    s.worker.head(id, 201).await;
    s.worker.body(id, b"hel").await;
    s.worker.body(id, b"lo").await;
    s.worker.end(id, true).await;
    settle().await;
    assert_eq!(
        replies(&mut rx),
        ["head 201", "body hel", "body lo", "end true"]
    );

    s.drain.send(true).unwrap();
    let (end, served, running) = s.ended_within(AT_ONCE).await;
    assert_eq!(end, LinkEnd::Drained);
    assert_eq!(served, 1);
    assert!(running.is_empty());
    // The finished request's channel is released: the connection sees the end.
    assert!(rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn frames_are_routed_by_id_when_a_threaded_worker_answers_out_of_order() {
    let mut s = Setup::new(config(2, 0));
    let (a, mut rx_a) = job("/a");
    let (b, mut rx_b) = job("/b");
    s.push(a).await;
    s.push(b).await;
    let (id_a, req_a) = s.worker.request().await;
    let (id_b, req_b) = s.worker.request().await;
    assert_eq!(
        (&req_a.target[..], &req_b.target[..]),
        (&b"/a"[..], &b"/b"[..])
    );
    assert_ne!(id_a, id_b);

    s.worker.head(id_b, 404).await;
    s.worker.head(id_a, 200).await;
    s.worker.body(id_b, b"bee").await;
    s.worker.body(id_a, b"ay").await;
    s.worker.end(id_b, true).await;
    s.worker.end(id_a, false).await;
    settle().await;
    assert_eq!(replies(&mut rx_a), ["head 200", "body ay", "end false"]);
    assert_eq!(replies(&mut rx_b), ["head 404", "body bee", "end true"]);
}

/// The link sends at most `threads + prefetch` requests ahead, and one more per response.
async fn outstanding_requests_are_bounded(threads: usize, prefetch: usize) {
    let limit = threads + prefetch;
    let mut s = Setup::new(config(threads, prefetch));
    let mut rxs = Vec::new();
    for i in 0..limit + 2 {
        let (j, rx) = job(&format!("/{i}"));
        rxs.push(rx);
        s.push(j).await;
    }
    let mut ids = Vec::new();
    for i in 0..limit {
        let (id, req) = s.worker.request().await;
        assert_eq!(&req.target[..], format!("/{i}").as_bytes());
        ids.push(id);
    }
    assert!(
        s.worker
            .frame_within(Duration::from_secs(1))
            .await
            .is_none(),
        "no more than threads + prefetch = {limit} requests on one worker"
    );
    assert_eq!(s.queue_rx.len(), 2, "the rest wait in the shared queue");

    s.worker.respond(ids[0], "done").await;
    let (_, req) = s.worker.request().await;
    assert_eq!(&req.target[..], format!("/{limit}").as_bytes());
    assert!(s
        .worker
        .frame_within(Duration::from_secs(1))
        .await
        .is_none());
    assert_eq!(s.queue_rx.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn prefetch_bounds_requests_sent_ahead_to_a_busy_worker() {
    outstanding_requests_are_bounded(1, 2).await;
}

#[tokio::test(start_paused = true)]
async fn threads_bound_requests_without_prefetch() {
    outstanding_requests_are_bounded(3, 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_client_left_while_queued_is_never_sent() {
    let mut s = Setup::new(config(1, 4));
    let (gone, rx_gone) = job("/gone");
    drop(rx_gone);
    let (kept, _rx_kept) = job("/kept");
    s.push(gone).await;
    s.push(kept).await;
    let (_, req) = s.worker.request().await;
    assert_eq!(&req.target[..], b"/kept");
    assert!(s
        .worker
        .frame_within(Duration::from_secs(1))
        .await
        .is_none());
    assert_eq!(s.stats.taken.load(Ordering::Relaxed), 1);
}
